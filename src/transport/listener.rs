//! One configured listener as one shard holds it: the socket, the layers its connections get,
//! and the policy that comes with them.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use mio::event::Source;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use super::proxy::ProxyProtocol;
use super::{TlsListener, Transport, WsConfig};
use crate::auth::Auth;

/// A listening socket (each shard binds its own with SO_REUSEPORT, ARCHITECTURE.md §2) and
/// what a connection accepted on it is: plain TCP or TLS with this listener's config.
/// Shard thread only; the TLS config is shared by the shards through its `Arc`.
#[derive(Debug)]
pub struct Listener {
    socket: TcpListener,
    tls: Option<Arc<TlsListener>>,
    /// WebSocket over the connection (over TLS when `tls` is set too).
    ws: Option<Arc<WsConfig>>,
    /// A PROXY protocol header (of these versions) comes first on every connection.
    proxy: Option<ProxyProtocol>,
    /// `allow_anonymous` as it applies to this listener.
    pub allow_anonymous: bool,
    /// The password and ACL files that apply to this listener's clients.
    pub auth: Auth,
}

impl Listener {
    /// A listener over a bound socket; `tls`: `None` for plain TCP.
    pub fn new(
        socket: TcpListener,
        tls: Option<Arc<TlsListener>>,
        allow_anonymous: bool,
        auth: Auth,
    ) -> Listener {
        Listener {
            socket,
            tls,
            ws: None,
            proxy: None,
            allow_anonymous,
            auth,
        }
    }

    /// This listener speaks MQTT over WebSocket (`protocol websockets`); `None`: straight.
    pub fn with_websocket(mut self, ws: Option<Arc<WsConfig>>) -> Listener {
        self.ws = ws;
        self
    }

    /// Every connection starts with a PROXY protocol header of these versions
    /// (`proxy_protocol`); `None`: none may.
    pub fn with_proxy_protocol(mut self, proxy: Option<ProxyProtocol>) -> Listener {
        self.proxy = proxy;
        self
    }

    /// Whether a connection's client is known only once its layers have read a proxy's word
    /// for it ([`Transport::client_addr`]): the shard counts it per address then, not at
    /// accept, where it would count the proxy.
    pub fn defers_client_addr(&self) -> bool {
        self.proxy.is_some() || self.ws.as_ref().is_some_and(|w| w.trust_x_forwarded_for)
    }

    /// The next pending connection, or `WouldBlock` (readiness is edge-triggered: accept until
    /// then). The socket is not wrapped yet, so that a connection refused by a limit costs no
    /// TLS state.
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        self.socket.accept()
    }

    /// The transport of a connection accepted here. TLS and WebSocket start but no I/O
    /// happens yet: their handshakes are driven by the connection's readiness events like any other input.
    pub fn wrap(&self, stream: TcpStream) -> Result<Transport, rustls::Error> {
        let inner = match &self.tls {
            None => Transport::from(stream),
            Some(tls) => tls.accept(stream).map(Transport::tls)?,
        };
        let outer = match &self.ws {
            None => inner,
            Some(ws) => Transport::websocket(inner, ws.clone()),
        };
        Ok(match self.proxy {
            None => outer,
            Some(versions) => Transport::proxied(outer, versions),
        })
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

impl std::os::fd::AsRawFd for Listener {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.socket.as_raw_fd()
    }
}

impl Source for Listener {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.socket.register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.socket.reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.socket.deregister(registry)
    }
}
