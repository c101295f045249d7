//! TLS on loadgen's side: the client configuration (`--tls`), the stream a connection runs
//! over, the TLS facts a result records, and the certificates loadgen makes for the brokers it
//! starts.
//!
//! - [`ClientTls`]: a rustls `ClientConfig` (CA file, optional client certificate and key) and
//!   the server name to verify, shared by every connection of a run.
//! - [`stream::Stream`]: plain TCP or TLS over a non-blocking mio socket; the engine and the
//!   storm read and write plaintext through it.
//! - [`probe`]: one blocking handshake before a run, which fails the run early with a clear
//!   error (wrong CA, refused certificate) and yields the [`TlsInfo`] the results record.
//! - [`certs`]: a CA, a server certificate and a client certificate made with the `openssl`
//!   command for managed brokers ([`BrokerTls`]).
//! - [`sessions`]: a client session store large enough for a storm of resumed handshakes.
//!
//! rustls with the `ring` provider, as the broker crate uses it: no new crates in the tree
//! and a build that needs only a C compiler (ARCHITECTURE.md §9).

pub mod certs;
pub mod probe;
pub mod sessions;
pub mod stream;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde::{Deserialize, Serialize};

pub use certs::BrokerTls;

/// What `--tls` and its options ask for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// CA file (PEM) to verify the broker with; `None`: the CA loadgen generated.
    pub cafile: Option<PathBuf>,
    /// Client certificate and key (PEM), both or neither.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The name the broker's certificate must carry (default `localhost`).
    pub server_name: Option<String>,
}

/// Session resumption on the client side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientResumption {
    /// Every handshake is a full one.
    Off,
    /// rustls' default in-memory store (a few tickets per server).
    Default,
    /// [`sessions::TicketPool`] with room for this many tickets: a storm of N connections
    /// can resume N times after a first pass filled it.
    Pool(usize),
}

/// A TLS client configuration and the server name to verify.
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub config: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
    /// The session store, with [`ClientResumption::Pool`].
    pub pool: Option<Arc<sessions::TicketPool>>,
}

impl ClientTls {
    /// Builds the client side from `opts`, with `default_ca` when `opts` names no CA file.
    pub fn new(
        opts: &TlsOptions,
        default_ca: Option<&Path>,
        resumption: ClientResumption,
    ) -> Result<ClientTls, String> {
        let ca = opts
            .cafile
            .as_deref()
            .or(default_ca)
            .ok_or("--tls needs --cafile for a broker loadgen did not start")?;
        let mut roots = RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(ca)
            .map_err(|e| format!("--cafile {}: {e}", ca.display()))?;
        for c in certs {
            let c = c.map_err(|e| format!("--cafile {}: {e}", ca.display()))?;
            roots
                .add(c)
                .map_err(|e| format!("--cafile {}: {e}", ca.display()))?;
        }
        if roots.is_empty() {
            return Err(format!("--cafile {}: no certificate in it", ca.display()));
        }
        let builder = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let mut config = match (&opts.cert, &opts.key) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("--cert {}: {e}", cert.display()))?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("--key {}: {e}", key.display()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("--cert/--key: {e}"))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err("--cert and --key go together".into()),
        };
        let mut pool = None;
        config.resumption = match resumption {
            ClientResumption::Off => Resumption::disabled(),
            ClientResumption::Default => Resumption::default(),
            ClientResumption::Pool(n) => {
                let p = Arc::new(sessions::TicketPool::new(n));
                pool = Some(p.clone());
                Resumption::store(p)
            }
        };
        let name = opts.server_name.as_deref().unwrap_or("localhost");
        let server_name = ServerName::try_from(name.to_string())
            .map_err(|e| format!("--server-name {name:?}: {e}"))?;
        Ok(ClientTls {
            config: Arc::new(config),
            server_name,
            pool,
        })
    }
}

/// What a TLS handshake negotiated, as the results record it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsInfo {
    /// e.g. `TLSv1_3`.
    pub version: String,
    /// IANA name, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher_suite: String,
    /// Whether the broker was asked for (and accepted) a client certificate.
    pub client_certificate: bool,
}

impl TlsInfo {
    /// What `conn` negotiated, once its handshake is done.
    pub fn of(conn: &rustls::ClientConnection, client_certificate: bool) -> TlsInfo {
        TlsInfo {
            version: conn
                .protocol_version()
                .map(|v| format!("{v:?}"))
                .unwrap_or_default(),
            cipher_suite: conn
                .negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()))
                .unwrap_or_default(),
            client_certificate,
        }
    }

    /// One line for Markdown and HTML reports, e.g. `TLSv1_3 TLS13_AES_256_GCM_SHA384`.
    pub fn summary(&self) -> String {
        let cert = if self.client_certificate {
            ", client certificate"
        } else {
            ""
        };
        format!("{} {}{cert}", self.version, self.cipher_suite)
    }
}

/// TLS for every run of this loadgen process, from the command line (`--tls` and its
/// options): one setting per process, like the broker binaries, so the suite and runner
/// signatures stay as they are.
#[derive(Debug)]
pub struct RunTls {
    pub opts: TlsOptions,
    /// Certificates for the brokers loadgen starts.
    pub certs: BrokerTls,
}

static RUN_TLS: std::sync::Mutex<Option<Arc<RunTls>>> = std::sync::Mutex::new(None);

/// Sets this process's TLS setting; `None` clears it (and removes the generated files).
pub fn set_run_tls(t: Option<RunTls>) {
    *RUN_TLS.lock().unwrap_or_else(|p| p.into_inner()) = t.map(Arc::new);
}

/// This process's TLS setting, if `--tls` was given.
pub fn run_tls() -> Option<Arc<RunTls>> {
    RUN_TLS.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

impl RunTls {
    /// The options with the generated files filled in where the command line named none:
    /// the generated CA, and the generated client certificate when the broker requires one.
    pub fn effective_options(&self) -> TlsOptions {
        let mut o = self.opts.clone();
        if o.cafile.is_none() {
            o.cafile = Some(self.certs.path("ca.pem"));
        }
        if self.certs.require_certificate && o.cert.is_none() && o.key.is_none() {
            o.cert = Some(self.certs.path("client.pem"));
            o.key = Some(self.certs.path("client.key"));
        }
        o
    }

    /// The client side for a run against `addr`, proven by a probe connection, and what the
    /// probe negotiated.
    pub fn connect(&self, addr: std::net::SocketAddr) -> Result<(ClientTls, TlsInfo), String> {
        let o = self.effective_options();
        let client = ClientTls::new(&o, None, ClientResumption::Default)?;
        let info = probe::probe(addr, &client, o.cert.is_some())?;
        Ok((client, info))
    }
}
