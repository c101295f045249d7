//! TLS listeners and connections (rustls with the `ring` provider).
//!
//! - [`TlsListener`]: one listener's TLS settings and the `rustls::ServerConfig` built from
//!   them (certificate, key, client CAs, versions, cipher suites). Built once at start-up, where
//!   a bad file stops the broker with an error naming it ([`TlsError`]), and rebuilt by
//!   [`TlsListener::reload`] (SIGHUP) without touching open connections: new handshakes use the
//!   new config, established sessions keep the one they started with.
//! - [`TlsStream`]: a non-blocking socket plus a rustls connection (server side for accepted
//!   clients, client side for outgoing links, [`crate::link`]); see [`super::Transport`] for
//!   the contract with the shard.
//! - The client certificate identity (`use_identity_as_username`, `use_subject_as_username`),
//!   read from the verified end-entity certificate by [`crate::auth::x509`].
//!
//! Why rustls with `ring`: rustls keeps TLS memory-safe and is the usual Rust choice; `ring`
//! builds with a plain C compiler, while the default `aws-lc-rs` provider needs cmake and a
//! longer build (ARCHITECTURE.md §9: a light build).

use std::fmt;
use std::io::{self, BufRead, Read, Write};
use std::net::Shutdown;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use mio::net::TcpStream;
use rustls::crypto::{ring as provider, CryptoProvider};
use rustls::pki_types::CertificateDer;
use rustls::server::{ProducesTickets, ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::{ClientConnection, Connection, ServerConfig, ServerConnection, SupportedCipherSuite};

use super::certs;
use super::pem::{load_certs, load_crls, load_key, load_roots};
use crate::auth::x509;
use crate::config::{TlsSettings, TlsVersion};

/// TLS 1.2 session ids the server remembers per listener (TLS 1.3 resumes with stateless
/// tickets instead). About 300 bytes each: a reconnecting fleet of this many clients resumes
/// without a full handshake while the cache stays bounded at a few MB.
const SESSION_CACHE_ENTRIES: usize = 8192;

/// The ring suite with this IANA name.
fn suite(iana: &str) -> Option<SupportedCipherSuite> {
    use provider::cipher_suite as cs;
    Some(match iana {
        "TLS_AES_256_GCM_SHA384" => cs::TLS13_AES_256_GCM_SHA384,
        "TLS_AES_128_GCM_SHA256" => cs::TLS13_AES_128_GCM_SHA256,
        "TLS_CHACHA20_POLY1305_SHA256" => cs::TLS13_CHACHA20_POLY1305_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => {
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => {
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        _ => return None,
    })
}

/// Why a listener's TLS configuration could not be built. `Display` names the option and the
/// file, e.g. `keyfile /etc/midge/server.key: no private key found`.
#[derive(Debug)]
pub enum TlsError {
    /// A file named by `option` (certfile, keyfile, cafile, capath) is unreadable or wrong.
    File {
        option: &'static str,
        path: PathBuf,
        problem: String,
    },
    /// The files are fine one by one but do not make a TLS configuration.
    Config(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::File {
                option,
                path,
                problem,
            } => write!(f, "{option} {}: {problem}", path.display()),
            TlsError::Config(message) => write!(f, "TLS configuration: {message}"),
        }
    }
}

impl std::error::Error for TlsError {}

impl From<TlsError> for io::Error {
    fn from(e: TlsError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, e.to_string())
    }
}

/// What `tls_identity` holds for a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityMode {
    /// Neither option: no identity is derived.
    None,
    /// `use_identity_as_username`: the subject's first Common Name.
    CommonName,
    /// `use_subject_as_username`: the whole subject, RFC 2253 form.
    Subject,
}

/// One TLS listener: its settings and the config that new handshakes use. Shared by the
/// shards (one `Arc` per listener); the config is swapped whole on reload.
#[derive(Debug)]
pub struct TlsListener {
    settings: TlsSettings,
    /// Session resumption state, kept across reloads so a SIGHUP does not force every
    /// reconnecting client into a full handshake: TLS 1.3 tickets (ring's ticketer, whose
    /// keys rotate every 6 hours) and the TLS 1.2 session-id cache.
    resumption: Resumption,
    /// Read once per accepted connection (never per message); written on reload.
    config: RwLock<Arc<ServerConfig>>,
}

impl TlsListener {
    /// Loads the listener's files and builds its config.
    pub fn load(settings: TlsSettings) -> Result<TlsListener, TlsError> {
        let resumption = Resumption::new()?;
        let config = build_config(&settings, &resumption)?;
        Ok(TlsListener {
            settings,
            resumption,
            config: RwLock::new(Arc::new(config)),
        })
    }

    /// Re-reads the certificate, key and CA files (SIGHUP). On error the old config stays in
    /// force and the error is returned for the log.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = Arc::new(build_config(&self.settings, &self.resumption)?);
        match self.config.write() {
            Ok(mut c) => *c = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
        Ok(())
    }

    /// The settings this listener was built from.
    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }

    /// What identity connections of this listener carry.
    pub fn identity_mode(&self) -> IdentityMode {
        if self.settings.use_identity_as_username {
            IdentityMode::CommonName
        } else if self.settings.use_subject_as_username {
            IdentityMode::Subject
        } else {
            IdentityMode::None
        }
    }

    /// Starts the server side of TLS on an accepted socket (no I/O happens here).
    pub fn accept(&self, sock: TcpStream) -> Result<TlsStream, rustls::Error> {
        let config = match self.config.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let conn = ServerConnection::new(config)?;
        Ok(TlsStream {
            sock,
            conn: conn.into(),
            mode: self.identity_mode(),
            identity: None,
            established: false,
        })
    }
}

/// A listener's session resumption state (see [`TlsListener`]).
#[derive(Debug, Clone)]
struct Resumption {
    tickets: Arc<dyn ProducesTickets>,
    cache: Arc<ServerSessionMemoryCache>,
}

impl Resumption {
    fn new() -> Result<Resumption, TlsError> {
        Ok(Resumption {
            tickets: provider::Ticketer::new()
                .map_err(|e| TlsError::Config(format!("session ticket keys: {e}")))?,
            cache: ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES),
        })
    }
}

/// Builds a `ServerConfig` from the settings, reading every file. Session resumption is on:
/// tickets for TLS 1.3 (and 1.2 clients that ask), session ids for TLS 1.2.
fn build_config(s: &TlsSettings, resumption: &Resumption) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(crypto_provider(s)?);
    let versions: &[&rustls::SupportedProtocolVersion] = match s.min_version {
        TlsVersion::V12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Config(format!("{e} (check tls_version and ciphers)")))?;
    // CA files are read whenever they are named, so a broken one is found at start-up even
    // when require_certificate is off (and then, as mosquitto's SSL_VERIFY_NONE, no client
    // certificate is asked for).
    let roots = load_roots(s)?;
    let verifier: Arc<dyn rustls::server::danger::ClientCertVerifier> = match roots {
        Some(roots) if s.require_certificate => {
            let roots = Arc::new(roots);
            let mut builder =
                WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
            if let Some(crlfile) = &s.crlfile {
                // As OpenSSL's X509_V_FLAG_CRL_CHECK: the client's own certificate, and a
                // CRL of its issuer must be there (unknown status is refused).
                builder = builder
                    .with_crls(load_crls(crlfile)?)
                    .only_check_end_entity_revocation();
            }
            let inner = builder
                .build()
                .map_err(|e| TlsError::Config(format!("client certificate verifier: {e}")))?;
            // v1 client certificates (mosquitto-tls(7)'s recipe) are verified by `certs`.
            Arc::new(certs::ClientVerifier {
                inner,
                roots,
                algs: provider.signature_verification_algorithms,
                crls: s.crlfile.is_some(),
            })
        }
        _ => WebPkiClientVerifier::no_client_auth(),
    };
    let mut chain = load_certs("certfile", &s.certfile)?;
    if let Some(cafile) = &s.cafile {
        // The intermediates of cafile complete the chain, as OpenSSL does for mosquitto.
        chain = certs::complete_chain(chain, &load_certs("cafile", cafile)?);
    }
    let key = load_key(&s.keyfile)?;
    let certified =
        certs::certified_key(chain, key, &provider).map_err(|problem| TlsError::File {
            option: "keyfile",
            path: s.keyfile.clone(),
            problem: format!(
                "cannot be used with certfile {}: {problem}",
                s.certfile.display()
            ),
        })?;
    let mut config = builder
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(certs::SingleCert(Arc::new(certified))));
    config.ticketer = resumption.tickets.clone();
    config.session_storage = resumption.cache.clone();
    Ok(config)
}

/// ring's provider restricted to the configured suites (`ciphers` for TLS 1.2,
/// `ciphers_tls1.3` for TLS 1.3; a version without its option keeps ring's defaults).
fn crypto_provider(s: &TlsSettings) -> Result<CryptoProvider, TlsError> {
    let mut p = provider::default_provider();
    if s.ciphers.is_none() && s.ciphers_tls13.is_none() {
        return Ok(p);
    }
    let pick = |names: &Option<Vec<String>>, tls13: bool| -> Vec<SupportedCipherSuite> {
        match names {
            Some(names) => names.iter().filter_map(|n| suite(n)).collect(),
            None => p
                .cipher_suites
                .iter()
                .filter(|c| matches!(c, SupportedCipherSuite::Tls13(_)) == tls13)
                .copied()
                .collect(),
        }
    };
    let mut suites = pick(&s.ciphers_tls13, true);
    suites.extend(pick(&s.ciphers, false));
    if suites.is_empty() {
        return Err(TlsError::Config("no cipher suite left".into()));
    }
    p.cipher_suites = suites;
    Ok(p)
}

/// A TLS connection over a non-blocking socket. Shard thread only; `Send`, moves whole.
#[derive(Debug)]
pub struct TlsStream {
    sock: TcpStream,
    /// Server side for accepted clients, client side for outgoing links: one stream type, so
    /// the byte-moving code below serves both.
    conn: Connection,
    mode: IdentityMode,
    /// Worked out once, when the handshake finishes.
    identity: Option<String>,
    /// The handshake has finished.
    established: bool,
}

impl TlsStream {
    /// The client side of TLS on a socket that is connecting or connected (no I/O happens
    /// here; the handshake is driven by reads and writes like the server's).
    pub fn client(sock: TcpStream, conn: ClientConnection) -> TlsStream {
        TlsStream {
            sock,
            conn: conn.into(),
            mode: IdentityMode::None,
            identity: None,
            established: false,
        }
    }

    pub(crate) fn tcp(&self) -> &TcpStream {
        &self.sock
    }

    pub(crate) fn tcp_mut(&mut self) -> &mut TcpStream {
        &mut self.sock
    }

    /// Records are waiting to be written.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Decrypted plaintext is waiting in rustls.
    pub fn has_buffered_input(&mut self) -> bool {
        matches!(self.conn.reader().fill_buf(), Ok(b) if !b.is_empty())
    }

    /// Whether the handshake has finished.
    pub fn is_established(&self) -> bool {
        self.established
    }

    /// See [`super::Transport::tls_identity`].
    pub fn identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }

    /// Whether the listener derives the username from the client certificate.
    pub fn identity_required(&self) -> bool {
        self.mode != IdentityMode::None
    }

    /// The client's certificate chain, once the handshake is done.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.conn.peer_certificates()
    }

    /// Plaintext from the peer: decrypted data first, then TLS records from the socket until
    /// there is some, the socket would block, or it ends. Drives the handshake.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                // Data, or 0 after the peer's close_notify.
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // TCP EOF without close_notify: most MQTT clients close that way; MQTT has its
                // own DISCONNECT, so there is no truncation to worry about.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            match self.conn.read_tls(&mut self.sock) {
                Ok(0) => return Ok(0),
                Ok(_) => {
                    if let Err(e) = self.conn.process_new_packets() {
                        let handshaking = self.conn.is_handshaking();
                        // rustls queued an alert that says why: send it while we can.
                        let _ = self.flush_records();
                        return Err(tls_error(e, handshaking));
                    }
                    if !self.established && !self.conn.is_handshaking() {
                        self.established = true;
                        self.identity = self.work_out_identity();
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether this is the server side of a handshake that has not finished: the work a
    /// handshake thread takes off the shard (see `shard::handshakes`).
    pub fn server_handshake_pending(&self) -> bool {
        matches!(self.conn, Connection::Server(_)) && !self.established
    }

    /// Drives the handshake only: sends what rustls queued, reads and processes records
    /// while the handshake lasts, and never reads past its end (plaintext that came with the
    /// client's last flight stays decrypted in rustls for the shard, see
    /// [`TlsStream::has_buffered_input`]). `Ok(true)` once established, `Ok(false)` while it
    /// waits for the peer or for room in the socket; the error (with the alert sent) when it
    /// failed.
    pub fn drive_handshake(&mut self) -> io::Result<bool> {
        loop {
            self.flush_records()?;
            if !self.conn.is_handshaking() {
                if !self.established {
                    self.established = true;
                    self.identity = self.work_out_identity();
                }
                return Ok(true);
            }
            match self.conn.read_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => {
                    if let Err(e) = self.conn.process_new_packets() {
                        let _ = self.flush_records();
                        return Err(tls_error(e, true));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Hands plaintext to rustls and pushes the records it makes to the socket. Returns
    /// `WouldBlock` when rustls' send buffer is full and the socket takes nothing.
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.flush_records()?;
        let n = self.conn.writer().write(buf)?;
        self.flush_records()?;
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    /// Vectored [`TlsStream::write`].
    pub fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.flush_records()?;
        let n = self.conn.writer().write_vectored(bufs)?;
        self.flush_records()?;
        if n == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    /// Writes queued records until there are none or the socket would block (not an error:
    /// `wants_write` stays true and the shard asks for WRITABLE).
    pub fn flush_records(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sends close_notify (best effort) and shuts the socket down.
    pub fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        if self.established {
            self.conn.send_close_notify();
        }
        let _ = self.flush_records();
        self.sock.shutdown(how)
    }

    fn work_out_identity(&self) -> Option<String> {
        let cert = self.conn.peer_certificates()?.first()?;
        match self.mode {
            IdentityMode::None => None,
            IdentityMode::CommonName => x509::common_name(cert),
            IdentityMode::Subject => x509::subject_rfc2253(cert),
        }
    }
}

/// The error a failed TLS read reports: it says TLS, and for a client that is not speaking
/// TLS at all (a plain MQTT CONNECT on a TLS port), says that too.
fn tls_error(e: rustls::Error, handshaking: bool) -> io::Error {
    let hint = match &e {
        rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)
        | rustls::Error::InvalidMessage(rustls::InvalidMessage::UnknownProtocolVersion)
            if handshaking =>
        {
            " (the client does not speak TLS: plain MQTT on a TLS listener?)"
        }
        _ => "",
    };
    let what = if handshaking {
        "TLS handshake failed"
    } else {
        "TLS error"
    };
    io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {e}{hint}"))
}
