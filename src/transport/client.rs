//! Outgoing connections: a non-blocking TCP connect, optionally with TLS as the client.
//!
//! [`Connector::connect`] starts the connect and returns at once with a [`Transport`] to
//! register with a `mio::Poll` (WRITABLE announces the end of the connect;
//! [`Transport::connect_finished`] says whether it worked). With TLS the ClientHello waits in
//! rustls until the socket is connected, and the handshake then runs inside reads and writes
//! like the server side's.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::crypto::ring as provider;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use super::pem::{load_certs, load_key};
use super::tls::TlsError;
use super::{TlsStream, Transport};

/// TLS as a client: whom to trust and who we are.
#[derive(Debug, Clone)]
pub struct ClientTlsSettings {
    /// The name the server's certificate must carry (a DNS name or an IP address).
    pub server_name: String,
    /// CA certificates (PEM) that the server's chain must end in.
    pub cafile: PathBuf,
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
}

impl Connector {
    /// Plain TCP.
    pub fn plain() -> Connector {
        Connector { tls: None }
    }

    /// TLS with these settings; reads the files now, with errors that name them.
    pub fn tls(s: &ClientTlsSettings) -> Result<Connector, TlsError> {
        let name = ServerName::try_from(s.server_name.clone())
            .map_err(|e| TlsError::Config(format!("server name {:?}: {e}", s.server_name)))?;
        let mut roots = RootCertStore::empty();
        for cert in load_certs("cafile", &s.cafile)? {
            roots.add(cert).map_err(|e| TlsError::File {
                option: "cafile",
                path: s.cafile.clone(),
                problem: format!("not a usable CA certificate: {e}"),
            })?;
        }
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
        })
    }

    /// Starts a non-blocking connect to `addr` (never waits).
    pub fn connect(&self, addr: SocketAddr) -> io::Result<Transport> {
        let sock = TcpStream::connect(addr)?;
        let _ = sock.set_nodelay(true);
        match &self.tls {
            None => Ok(Transport::from(sock)),
            Some((config, name)) => {
                let conn = ClientConnection::new(config.clone(), name.clone())
                    .map_err(|e| io::Error::other(format!("TLS: {e}")))?;
                Ok(Transport::tls(TlsStream::client(sock, conn)))
            }
        }
    }
}
