//! The byte stream under one connection, behind one type the shard never inspects.
//!
//! - [`Listener`]: one configured listener's socket (on one shard) and the layers its
//!   connections get; [`Listener::wrap`] turns an accepted socket into a [`Transport`].
//! - [`Transport`]: plain TCP, TLS over TCP, or WebSocket over either ([`ws`]: its inner
//!   transport is one of the other two). The shard reads and writes *plaintext* and asks the
//!   transport what it needs to know ([`Transport::short_read_drains`],
//!   [`Transport::has_buffered_input`], [`Transport::is_layer_error`],
//!   [`Transport::tls_identity`]) instead of asking which kind it has.
//! - [`Connector`]: outgoing connections (non-blocking connect, TLS as the client), for
//!   [`crate::link`].
//! - [`tls`]: rustls (ring provider) server and client sides; [`pem`]: reading their files;
//!   [`tls_buf`]: their record and plaintext buffers.
//! - [`ws`]: MQTT over WebSocket (handshake, frames, `http_dir`), the same kind of
//!   transformer as TLS: plaintext in and out for the shard, frames on the inner transport.
//! - [`proxy`]: the PROXY protocol header on listeners that opt in, read off the socket
//!   before any other layer reads; [`Transport::client_addr`] tells the shard the client it
//!   names.
//!
//! TLS is a transformer between socket bytes and plaintext: a read pulls TLS records from the
//! socket, has rustls decrypt them and hands out plaintext; a write has rustls encrypt plaintext
//! into records and pushes them to the socket. rustls' unbuffered API is used, so the stream
//! owns its buffers and they are pooled per thread ([`tls_buf`]): an idle TLS connection holds
//! none.
//! A server handshake is driven first, off the shard, by [`Transport::drive_handshake`] on a
//! handshake thread (`shard::handshakes`); a client handshake (outgoing links) happens inside
//! the reads and writes, non-blocking.
//!
//! # Why an enum, not a trait object
//! Every read and write of every connection goes through here. A `match` on a private enum is
//! inlined and predicted, costs no allocation for plain TCP (the common case; TLS is boxed
//! because a rustls connection is large), and keeps `Transport` `Send` and movable between
//! shards without a vtable. The set of layers is closed and known to the crate, which is what
//! an enum says.
//!
//! # Contract with the shard
//! - `read` returns `Ok(0)` at end of stream, `WouldBlock` when the socket is drained (TLS
//!   and WebSocket: also while the handshake waits for the peer), and an `InvalidData` error
//!   naming the layer when the peer broke its protocol (a plain-TCP client on a TLS port, an
//!   untrusted client certificate, a bad upgrade or frame, ...): [`Transport::is_layer_error`]
//!   says so. The layer has queued its answer then (a TLS alert, a 400, a close frame), which
//!   `read` (TLS) or `shutdown` (WebSocket) sends.
//! - After every event the shard recomputes socket interest from buffer state: WRITABLE when
//!   its own write buffer is non-empty *or* [`Transport::wants_write`] (records waiting, e.g.
//!   the handshake's answer), and calls `flush` to push those records.
//! - [`Transport::has_buffered_input`]: plaintext already decoded and held by a layer, which no
//!   socket readiness event will announce again; the shard must not stop reading on its
//!   fairness budget while it is true.
//! - A `Transport` is `Send` and moves whole between shards (a connection migrating to the
//!   home shard of its client id keeps its TLS session).

mod certs;
pub mod client;
mod listener;
pub mod pem;
pub mod proxy;
pub mod tls;
mod tls_buf;
pub mod ws;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;

use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

pub use client::{ClientTlsSettings, Connector};
pub use listener::Listener;
pub use proxy::ProxyStream;
pub use tls::{TlsListener, TlsStream};
pub use ws::{WsConfig, WsStream};

/// One connection's byte stream. Shard thread only (moves between shards whole).
#[derive(Debug)]
pub struct Transport(Layers);

/// What is layered over the TCP socket.
#[derive(Debug)]
enum Layers {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS over TCP (boxed: a rustls connection is large and most connections are plain).
    Tls(Box<TlsStream>),
    /// WebSocket over plain TCP or TLS (the inner transport).
    Ws(Box<WsStream>),
    /// A PROXY protocol header, then one of the others. Outermost in the type although first
    /// on the wire: it reads its header off the socket before the layers it wraps read.
    Proxy(Box<ProxyStream>),
}

/// Who the client of a connection is, as its layers know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAddr {
    /// A layer that may name the client has not read far enough yet (a PROXY header, a
    /// WebSocket upgrade whose `X-Forwarded-For` the listener trusts).
    Pending,
    /// The socket's peer is the client (no proxy named another).
    Socket,
    /// A proxy named the client: this address replaces the socket's peer.
    Named(SocketAddr),
}

impl Transport {
    /// A TLS stream (server or client side) as a transport.
    pub fn tls(stream: TlsStream) -> Transport {
        Transport(Layers::Tls(Box::new(stream)))
    }

    /// A WebSocket connection over `inner` (its handshake starts with the client's request).
    pub fn websocket(inner: Transport, config: Arc<WsConfig>) -> Transport {
        Transport(Layers::Ws(Box::new(WsStream::new(inner, config))))
    }

    /// A connection whose PROXY protocol header (of these versions) comes before `inner`.
    pub fn proxied(inner: Transport, accept: proxy::ProxyProtocol) -> Transport {
        Transport(Layers::Proxy(Box::new(ProxyStream::new(inner, accept))))
    }

    /// Who the client is: see [`ClientAddr`]. A trusted `X-Forwarded-For` is nearer to the
    /// client than the PROXY header of the hop in front of midge, so it wins.
    pub fn client_addr(&self) -> ClientAddr {
        match &self.0 {
            Layers::Tcp(_) | Layers::Tls(_) => ClientAddr::Socket,
            Layers::Ws(w) => w.client_addr(),
            Layers::Proxy(p) => match (p.header(), p.inner().client_addr()) {
                (None, _) | (_, ClientAddr::Pending) => ClientAddr::Pending,
                (Some(_), ClientAddr::Named(a)) => ClientAddr::Named(a),
                (Some(h), ClientAddr::Socket) => {
                    h.source.map_or(ClientAddr::Socket, ClientAddr::Named)
                }
            },
        }
    }

    /// Whether a read that returned less than it was offered took everything the connection
    /// held, so that the next bytes will raise a new readiness edge. True for plain TCP, and
    /// for WebSocket over TCP when its socket read was short; not for TLS, which may hold more
    /// plaintext or socket bytes than one read returned.
    #[inline]
    pub fn short_read_drains(&self) -> bool {
        match &self.0 {
            Layers::Tcp(_) => true,
            Layers::Tls(_) => false,
            Layers::Ws(w) => w.short_read_drains(),
            Layers::Proxy(p) => p.header().is_some() && p.inner().short_read_drains(),
        }
    }

    /// Whether this read error is the layer's protocol failing (a bad TLS handshake, an
    /// alert, a record that does not decrypt; a refused WebSocket upgrade, a bad frame)
    /// rather than the socket's.
    pub fn is_layer_error(&self, e: &io::Error) -> bool {
        e.kind() == io::ErrorKind::InvalidData && !matches!(self.0, Layers::Tcp(_))
    }

    /// Whether records are waiting to be written to the socket (never for plain TCP).
    #[inline]
    pub fn wants_write(&self) -> bool {
        match &self.0 {
            Layers::Tcp(_) => false,
            Layers::Tls(t) => t.wants_write(),
            Layers::Ws(w) => w.wants_write(),
            Layers::Proxy(p) => p.inner().wants_write(),
        }
    }

    /// Whether decoded plaintext is waiting inside a layer (never for plain TCP).
    #[inline]
    pub fn has_buffered_input(&mut self) -> bool {
        match &mut self.0 {
            Layers::Tcp(_) => false,
            Layers::Tls(t) => t.has_buffered_input(),
            Layers::Ws(w) => w.has_buffered_input(),
            Layers::Proxy(p) => p.inner_mut().has_buffered_input(),
        }
    }

    /// Whether a server-side TLS handshake is still to be done on this connection (the
    /// shard hands such connections to its handshake thread first: `shard::handshakes`).
    pub fn server_handshake_pending(&self) -> bool {
        match &self.0 {
            Layers::Tcp(_) => false,
            Layers::Tls(t) => t.server_handshake_pending(),
            Layers::Ws(w) => w.inner().server_handshake_pending(),
            Layers::Proxy(p) => p.inner().server_handshake_pending(),
        }
    }

    /// Drives what comes before the shard's part of a new connection: a PROXY header, then
    /// the TLS handshake; never the WebSocket upgrade or any MQTT byte. `Ok(true)` when done,
    /// `Ok(false)` while waiting for the peer (or for room to write), the error when the peer
    /// broke either protocol (a TLS alert is sent first).
    pub fn drive_handshake(&mut self) -> io::Result<bool> {
        match &mut self.0 {
            Layers::Tcp(_) => Ok(true),
            Layers::Tls(t) => t.drive_handshake(),
            Layers::Ws(w) => w.inner_mut().drive_handshake(),
            Layers::Proxy(p) => match p.read_header_only()? {
                true => p.inner_mut().drive_handshake(),
                false => Ok(false),
            },
        }
    }

    /// Whether the connection's own handshake (TLS) has finished; always true for plain TCP.
    pub fn is_established(&self) -> bool {
        match &self.0 {
            Layers::Tcp(_) => true,
            Layers::Tls(t) => t.is_established(),
            Layers::Ws(w) => w.is_established(),
            Layers::Proxy(p) => p.header().is_some() && p.inner().is_established(),
        }
    }

    /// The username the listener derives from the client certificate
    /// (`use_identity_as_username`: the subject's first CN; `use_subject_as_username`: the
    /// whole subject in RFC 2253 form, as mosquitto prints it). `None` for plain TCP, before
    /// the handshake has finished, when the client sent no certificate, or when the listener
    /// uses neither option.
    #[inline]
    pub fn tls_identity(&self) -> Option<&str> {
        match &self.0 {
            Layers::Tcp(_) => None,
            Layers::Tls(t) => t.identity(),
            Layers::Ws(w) => w.inner().tls_identity(),
            Layers::Proxy(p) => p.inner().tls_identity(),
        }
    }

    /// Whether the listener derives the username from the client certificate
    /// (`use_identity_as_username` or `use_subject_as_username`).
    pub fn tls_identity_required(&self) -> bool {
        match &self.0 {
            Layers::Tcp(_) => false,
            Layers::Tls(t) => t.identity_required(),
            Layers::Ws(w) => w.inner().tls_identity_required(),
            Layers::Proxy(p) => p.inner().tls_identity_required(),
        }
    }

    /// The peer's certificate chain (end entity first), once the TLS handshake is done.
    pub fn peer_certificates(&self) -> Option<&[rustls::pki_types::CertificateDer<'static>]> {
        match &self.0 {
            Layers::Tcp(_) => None,
            Layers::Tls(t) => t.peer_certificates(),
            Layers::Ws(w) => w.inner().peer_certificates(),
            Layers::Proxy(p) => p.inner().peer_certificates(),
        }
    }

    /// For an outgoing connection after a readiness event: `Ok(true)` once the TCP connect
    /// has completed, `Ok(false)` while it is still under way, the error if it failed.
    pub fn connect_finished(&self) -> io::Result<bool> {
        let sock = self.tcp();
        if let Some(e) = sock.take_error()? {
            return Err(e);
        }
        match sock.peer_addr() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// TCP_NODELAY on the socket.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.tcp().set_nodelay(nodelay)
    }

    /// Best-effort close: TLS sends `close_notify` (and anything still queued) first.
    pub fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        match &mut self.0 {
            Layers::Tcp(s) => s.shutdown(how),
            Layers::Tls(t) => t.shutdown(how),
            Layers::Ws(w) => w.shutdown(how),
            Layers::Proxy(p) => p.inner_mut().shutdown(how),
        }
    }

    /// The socket, when what the shard writes goes to it unchanged (plain TCP): it may then
    /// be written with other connections' output in one system call.
    pub fn plain_fd(&self) -> Option<std::os::fd::RawFd> {
        match &self.0 {
            Layers::Tcp(s) => Some(std::os::fd::AsRawFd::as_raw_fd(s)),
            _ => None,
        }
    }

    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match &self.0 {
            Layers::Tcp(s) => s,
            Layers::Tls(t) => t.tcp(),
            Layers::Ws(w) => w.inner().tcp(),
            Layers::Proxy(p) => p.inner().tcp(),
        }
    }

    fn tcp_mut(&mut self) -> &mut TcpStream {
        match &mut self.0 {
            Layers::Tcp(s) => s,
            Layers::Tls(t) => t.tcp_mut(),
            Layers::Ws(w) => w.inner_mut().tcp_mut(),
            Layers::Proxy(p) => p.inner_mut().tcp_mut(),
        }
    }
}

impl Read for Transport {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.0 {
            Layers::Tcp(s) => s.read(buf),
            Layers::Tls(t) => t.read(buf),
            Layers::Ws(w) => w.read(buf),
            Layers::Proxy(p) => p.read(buf),
        }
    }
}

impl Write for Transport {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.0 {
            Layers::Tcp(s) => s.write(buf),
            Layers::Tls(t) => t.write(buf),
            Layers::Ws(w) => w.write(buf),
            Layers::Proxy(p) => p.inner_mut().write(buf),
        }
    }

    #[inline]
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match &mut self.0 {
            Layers::Tcp(s) => s.write_vectored(bufs),
            Layers::Tls(t) => t.write_vectored(bufs),
            // One frame per call: the first non-empty buffer (the shard writes one slice).
            Layers::Ws(w) => w.write(bufs.iter().find(|b| !b.is_empty()).map_or(&[], |b| b)),
            Layers::Proxy(p) => p.inner_mut().write_vectored(bufs),
        }
    }

    /// Plain TCP: nothing to do. TLS: writes queued records until done or `WouldBlock`
    /// (which is not an error here: [`Transport::wants_write`] stays true).
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.0 {
            Layers::Tcp(_) => Ok(()),
            Layers::Tls(t) => t.flush_records(),
            Layers::Ws(w) => w.flush(),
            Layers::Proxy(p) => p.inner_mut().flush(),
        }
    }
}

impl From<TcpStream> for Transport {
    fn from(s: TcpStream) -> Transport {
        Transport(Layers::Tcp(s))
    }
}

/// Registration is always of the TCP socket: layers have no descriptor of their own.
impl std::os::fd::AsRawFd for Transport {
    /// The TCP socket under every layer: what the shard's reactor watches.
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.tcp().as_raw_fd()
    }
}

impl Source for Transport {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.tcp_mut().register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.tcp_mut().reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.tcp_mut().deregister(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_is_send() {
        // Connections migrate between shards whole (inbox `Migrating`).
        fn assert_send<T: Send>() {}
        assert_send::<Transport>();
    }
}
