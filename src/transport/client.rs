//! Outgoing connections: a non-blocking TCP connect, optionally with TLS as the client.
//!
//! [`Connector::connect`] starts the connect and returns at once with a [`Transport`] to
//! register with a `mio::Poll` (WRITABLE announces the end of the connect;
//! [`Transport::connect_finished`] says whether it worked). With TLS the ClientHello waits in
//! rustls until the socket is connected, and the handshake then runs inside reads and writes
//! like the server side's.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::client::UnbufferedClientConnection;
use rustls::crypto::ring as provider;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};

use super::pem::{load_certs, load_key, load_roots};
use super::tls::TlsError;
use super::{TlsStream, Transport};

/// TLS as a client: whom to trust and who we are.
#[derive(Debug, Clone)]
pub struct ClientTlsSettings {
    /// The name the server's certificate must carry (a DNS name or an IP address).
    pub server_name: String,
    /// CA certificates (PEM) that the server's chain must end in: a file, a directory of
    /// files, or both (at least one).
    pub cafile: Option<PathBuf>,
    pub capath: Option<PathBuf>,
    /// Our certificate and key (PEM), for servers that require one.
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    /// Refuse TLS 1.2 (a bridge's `bridge_tls_version tlsv1.3`).
    pub tls13_only: bool,
    /// Protocols offered by ALPN (a bridge's `bridge_alpn`); empty = no ALPN.
    pub alpn: Vec<String>,
}

/// Makes outgoing connections: plain, or TLS with a config built once from its files.
#[derive(Debug, Clone)]
pub struct Connector {
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    /// The local address to connect from (a bridge's `bridge_bind_address`).
    bind: Option<IpAddr>,
}

impl Connector {
    /// Plain TCP.
    pub fn plain() -> Connector {
        Connector {
            tls: None,
            bind: None,
        }
    }

    /// TLS with these settings; reads the files now, with errors that name them.
    pub fn tls(s: &ClientTlsSettings) -> Result<Connector, TlsError> {
        let name = ServerName::try_from(s.server_name.clone())
            .map_err(|e| TlsError::Config(format!("server name {:?}: {e}", s.server_name)))?;
        let cas = crate::config::TlsSettings {
            cafile: s.cafile.clone(),
            capath: s.capath.clone(),
            ..Default::default()
        };
        let roots: RootCertStore = load_roots(&cas)?
            .ok_or_else(|| TlsError::Config("a CA file or directory is needed".into()))?;
        let builder = ClientConfig::builder_with_provider(Arc::new(provider::default_provider()));
        let builder = match s.tls13_only {
            true => builder.with_protocol_versions(&[&rustls::version::TLS13]),
            false => builder.with_safe_default_protocol_versions(),
        }
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots);
        let mut config = match (&s.certfile, &s.keyfile) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(load_certs("certfile", cert)?, load_key(key)?)
                .map_err(|e| TlsError::File {
                    option: "keyfile",
                    path: key.clone(),
                    problem: format!("cannot be used with certfile {}: {e}", cert.display()),
                })?,
            (None, None) => builder.with_no_client_auth(),
            _ => return Err(TlsError::Config("certfile and keyfile go together".into())),
        };
        config.alpn_protocols = s.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Ok(Connector {
            tls: Some((Arc::new(config), name)),
            bind: None,
        })
    }

    /// Connects from `ip` (any port) instead of the address the routing table picks.
    pub fn bind_to(mut self, ip: IpAddr) -> Connector {
        self.bind = Some(ip);
        self
    }

    /// Starts a non-blocking connect to `addr` (never waits).
    pub fn connect(&self, addr: SocketAddr) -> io::Result<Transport> {
        let sock = match self.bind {
            None => TcpStream::connect(addr)?,
            Some(ip) => {
                use socket2::{Domain, Socket, Type};
                let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
                s.set_nonblocking(true)?;
                s.bind(&SocketAddr::new(ip, 0).into())?;
                match s.connect(&addr.into()) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                    Err(e) => return Err(e),
                }
                TcpStream::from_std(s.into())
            }
        };
        let _ = sock.set_nodelay(true);
        match &self.tls {
            None => Ok(Transport::from(sock)),
            Some((config, name)) => {
                let conn = UnbufferedClientConnection::new(config.clone(), name.clone())
                    .map_err(|e| io::Error::other(format!("TLS: {e}")))?;
                Ok(Transport::tls(TlsStream::client(sock, conn)))
            }
        }
    }
}
