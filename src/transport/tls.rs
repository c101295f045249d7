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
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use mio::net::TcpStream;
use rustls::client::UnbufferedClientConnection;
use rustls::crypto::{ring as provider, CryptoProvider};
use rustls::pki_types::CertificateDer;
use rustls::server::{
    ProducesTickets, ServerSessionMemoryCache, UnbufferedServerConnection, WebPkiClientVerifier,
};
use rustls::unbuffered::{ConnectionState, EncodeError, EncodeTlsData, EncryptError, WriteTraffic};
use rustls::{CommonState, ServerConfig, SupportedCipherSuite};

use super::certs;
use super::pem::{load_certs, load_crls, load_key, load_roots};
use super::tls_buf::TlsBuf;
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
        let conn = UnbufferedServerConnection::new(config)?;
        Ok(TlsStream::new(
            sock,
            Side::Server(conn),
            self.identity_mode(),
        ))
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

/// Ciphertext a stream holds for the socket before it takes no more plaintext (its `write`
/// says `WouldBlock`): rustls' own default for its send buffer.
const SEND_LIMIT: usize = 64 * 1024;
/// Received bytes a stream holds at most. A record is at most about 18 KiB; more is only held
/// while rustls joins a handshake message split across records (at most 64 KiB), so a peer
/// that sends more without completing one is refused.
const MAX_INCOMING: usize = 128 * 1024;
/// A read from the socket is not attempted into less room than this.
const MIN_READ: usize = 4096;

/// The two sides of rustls' unbuffered connection.
enum Side {
    Server(UnbufferedServerConnection),
    Client(UnbufferedClientConnection),
}

/// A TLS connection over a non-blocking socket. Shard thread only; `Send`, moves whole.
///
/// Built on rustls' unbuffered API: the stream owns the buffers (see [`super::tls_buf`]), so
/// an idle connection holds none and records are encrypted straight into a pooled buffer.
pub struct TlsStream {
    sock: TcpStream,
    /// Server side for accepted clients, client side for outgoing links: one stream type, so
    /// the byte-moving code below serves both.
    conn: Side,
    /// Bytes from the socket that rustls has not consumed (a partial record, or a handshake
    /// message being joined).
    incoming: TlsBuf,
    /// Records to send, in order.
    outgoing: TlsBuf,
    /// Decrypted plaintext not yet read (what did not fit the reader's buffer).
    plain: TlsBuf,
    /// Plaintext written before the handshake allowed sending it (a link's CONNECT).
    early: TlsBuf,
    mode: IdentityMode,
    /// Worked out once, when the handshake finishes.
    identity: Option<String>,
    /// The handshake has finished.
    established: bool,
    /// The peer sent close_notify: reads return end of stream.
    peer_closed: bool,
    /// A TLS error ended the connection. rustls is not called again: its unbuffered state
    /// machine would process the offending bytes again and queue a second alert.
    failed: bool,
}

impl fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsStream")
            .field("sock", &self.sock)
            .field("server", &matches!(self.conn, Side::Server(_)))
            .field("incoming", &self.incoming.len())
            .field("outgoing", &self.outgoing.len())
            .field("plain", &self.plain.len())
            .field("established", &self.established)
            .finish()
    }
}

/// Where processing the received records stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// More bytes from the peer are needed (the handshake waits, or every record is read).
    NeedInput,
    /// Both sides have sent close_notify.
    Closed,
}

/// `$body` with `$c` bound to the connection of either side (their types differ, so a
/// closure cannot serve both).
macro_rules! on_side {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            Side::Server($c) => $body,
            Side::Client($c) => $body,
        }
    };
}

/// What one [`TlsStream::advance`] works with: the buffers it fills and the request it serves.
struct Work<'a> {
    outgoing: &'a mut TlsBuf,
    plain: &'a mut TlsBuf,
    early: &'a mut TlsBuf,
    /// The reader's buffer, filled first; plaintext beyond it goes to `plain`.
    out: &'a mut [u8],
    read: usize,
    /// Plaintext to encrypt once sending is allowed.
    write: &'a [u8],
    wrote: bool,
    /// Queue close_notify once sending is allowed.
    close: bool,
    peer_closed: bool,
}

impl<'a> Work<'a> {
    fn new(
        outgoing: &'a mut TlsBuf,
        plain: &'a mut TlsBuf,
        early: &'a mut TlsBuf,
        out: &'a mut [u8],
        write: &'a [u8],
        close: bool,
    ) -> Work<'a> {
        Work {
            outgoing,
            plain,
            early,
            out,
            read: 0,
            write,
            wrote: false,
            close,
            peer_closed: false,
        }
    }

    /// Processes `incoming` up to rustls' next state and handles that: the bytes to discard
    /// from `incoming`, and what [`Work::handle`] says.
    fn step(
        &mut self,
        conn: &mut Side,
        incoming: &mut [u8],
    ) -> (usize, Result<Option<Stop>, rustls::Error>) {
        on_side!(conn, c => {
            let status = c.process_tls_records(incoming);
            let mut discard = status.discard;
            let step = status.state.and_then(|s| self.handle(s, &mut discard));
            (discard, step)
        })
    }

    /// Handles one state of the connection; `Ok(None)` asks for the next one.
    fn handle<Data>(
        &mut self,
        state: ConnectionState<'_, '_, Data>,
        discard: &mut usize,
    ) -> Result<Option<Stop>, rustls::Error> {
        match state {
            ConnectionState::ReadTraffic(mut records) => {
                while let Some(record) = records.next_record() {
                    let record = record?;
                    *discard += record.discard;
                    // What does not fit goes to `plain`, and once anything has, all after it.
                    let n = if self.plain.is_empty() {
                        record.payload.len().min(self.out.len() - self.read)
                    } else {
                        0
                    };
                    self.out[self.read..self.read + n].copy_from_slice(&record.payload[..n]);
                    self.read += n;
                    self.plain.extend(&record.payload[n..]);
                }
                Ok(None)
            }
            ConnectionState::EncodeTlsData(mut data) => {
                encode(&mut data, self.outgoing);
                Ok(None)
            }
            // The records are in `outgoing`, sent in order by `flush_records`.
            ConnectionState::TransmitTlsData(data) => {
                data.done();
                Ok(None)
            }
            ConnectionState::BlockedHandshake => Ok(Some(Stop::NeedInput)),
            ConnectionState::WriteTraffic(mut traffic) => {
                if !self.early.is_empty() {
                    encrypt(&mut traffic, self.early.bytes(), self.outgoing)?;
                    self.early.consume(self.early.len());
                }
                if !self.write.is_empty() {
                    encrypt(&mut traffic, self.write, self.outgoing)?;
                    self.write = &[];
                    self.wrote = true;
                }
                if std::mem::take(&mut self.close) {
                    queue_close_notify(&mut traffic, self.outgoing)?;
                }
                Ok(Some(Stop::NeedInput))
            }
            // Reported once; the next state says whether sending is still allowed.
            ConnectionState::PeerClosed => {
                self.peer_closed = true;
                Ok(None)
            }
            ConnectionState::Closed => Ok(Some(Stop::Closed)),
            // Early data (0-RTT) is never enabled, so nothing else is expected.
            _ => Err(rustls::Error::General("unexpected TLS state".into())),
        }
    }
}

/// Why [`put`] could not write: too little room (it needs this much), or an error.
enum Short<E> {
    Need(usize),
    Fail(E),
}

/// Has `write` (one of rustls' "encode into this buffer" calls) write into `out`'s free room,
/// giving it more room while it says it needs more.
fn put<E>(
    out: &mut TlsBuf,
    mut need: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, Short<E>>,
) -> Result<(), E> {
    loop {
        match write(out.room(need)) {
            Ok(n) => {
                out.commit(n);
                return Ok(());
            }
            Err(Short::Need(n)) => need = n,
            Err(Short::Fail(e)) => return Err(e),
        }
    }
}

/// A handshake (or alert) record rustls made, into `out`.
fn encode<Data>(data: &mut EncodeTlsData<'_, Data>, out: &mut TlsBuf) {
    let _ = put(out, MIN_READ, |room| {
        data.encode(room).map_err(|e| match e {
            EncodeError::InsufficientSize(e) => Short::Need(e.required_size),
            EncodeError::AlreadyEncoded => Short::Fail(()),
        })
    });
}

fn encrypt_error(e: EncryptError) -> Short<rustls::Error> {
    match e {
        EncryptError::InsufficientSize(e) => Short::Need(e.required_size),
        e => Short::Fail(rustls::Error::General(e.to_string())),
    }
}

/// Encrypts `data` into `out` (one or more records).
fn encrypt<Data>(
    traffic: &mut WriteTraffic<'_, Data>,
    data: &[u8],
    out: &mut TlsBuf,
) -> Result<(), rustls::Error> {
    // A record's overhead is at most 29 bytes (TLS 1.2 AES-GCM); asking for 64 per record
    // makes the first attempt fit.
    let need = data.len() + (data.len() / 16_384 + 1) * 64;
    put(out, need, |room| {
        traffic.encrypt(data, room).map_err(encrypt_error)
    })
}

fn queue_close_notify<Data>(
    traffic: &mut WriteTraffic<'_, Data>,
    out: &mut TlsBuf,
) -> Result<(), rustls::Error> {
    put(out, 64, |room| {
        traffic.queue_close_notify(room).map_err(encrypt_error)
    })
}

/// What [`TlsStream::advance`] did.
struct Advanced {
    stop: Stop,
    /// Plaintext bytes put in the reader's buffer.
    read: usize,
    /// The plaintext to write was encrypted.
    wrote: bool,
}

impl TlsStream {
    fn new(sock: TcpStream, conn: Side, mode: IdentityMode) -> TlsStream {
        TlsStream {
            sock,
            conn,
            incoming: TlsBuf::default(),
            outgoing: TlsBuf::default(),
            plain: TlsBuf::default(),
            early: TlsBuf::default(),
            mode,
            identity: None,
            established: false,
            peer_closed: false,
            failed: false,
        }
    }

    /// The client side of TLS on a socket that is connecting or connected (no I/O happens
    /// here: the ClientHello is queued, [`TlsStream::wants_write`] says so, and the handshake
    /// is driven by reads and writes like the server's).
    pub fn client(sock: TcpStream, conn: UnbufferedClientConnection) -> TlsStream {
        let mut stream = TlsStream::new(sock, Side::Client(conn), IdentityMode::None);
        // An error stays in rustls' state and is reported by the first read.
        let _ = stream.advance(&mut [], &[], false);
        stream
    }

    pub(crate) fn tcp(&self) -> &TcpStream {
        &self.sock
    }

    pub(crate) fn tcp_mut(&mut self) -> &mut TcpStream {
        &mut self.sock
    }

    fn common(&self) -> &CommonState {
        on_side!(&self.conn, c => c)
    }

    /// Records are waiting to be written.
    pub fn wants_write(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// Input is held that no socket readiness will announce: decrypted plaintext, or a whole
    /// record not yet processed.
    pub fn has_buffered_input(&mut self) -> bool {
        if !self.plain.is_empty() {
            return true;
        }
        let held = self.incoming.bytes();
        held.len() >= 5 && held.len() >= 5 + usize::from(u16::from_be_bytes([held[3], held[4]]))
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
        self.common().peer_certificates()
    }

    /// Storage the stream's buffers hold (for tests: an idle stream holds none).
    pub fn buffered_capacity(&self) -> usize {
        self.incoming.capacity()
            + self.outgoing.capacity()
            + self.plain.capacity()
            + self.early.capacity()
    }

    /// Processes the records received so far until rustls needs more input: handshake records
    /// to send go to `outgoing`, plaintext to `out` and then `plain`; once sending is allowed,
    /// plaintext written early, then `write`, is encrypted, and close_notify is queued if
    /// `close`. On a TLS error the alert rustls queued is sent and the error returned.
    fn advance(&mut self, out: &mut [u8], write: &[u8], close: bool) -> io::Result<Advanced> {
        if self.failed {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "TLS error: the connection has failed",
            ));
        }
        let mut work = Work::new(
            &mut self.outgoing,
            &mut self.plain,
            &mut self.early,
            out,
            write,
            close,
        );
        let stopped = loop {
            let (discard, step) = work.step(&mut self.conn, self.incoming.bytes_mut());
            self.incoming.consume(discard);
            match step {
                Ok(None) => {}
                Ok(Some(stop)) => break Ok(stop),
                Err(e) => break Err(e),
            }
        };
        let (read, wrote) = (work.read, work.wrote);
        self.peer_closed |= work.peer_closed;
        match stopped {
            Ok(stop) => {
                if !self.established && !self.common().is_handshaking() {
                    self.established = true;
                    self.identity = self.work_out_identity();
                }
                Ok(Advanced { stop, read, wrote })
            }
            Err(e) => {
                self.failed = true;
                let handshaking = self.common().is_handshaking();
                self.queue_alert();
                let _ = self.flush_records();
                Err(tls_error(e, handshaking))
            }
        }
    }

    /// After an error: moves the alert rustls queued (if any) to `outgoing`. rustls hands out
    /// queued records before it looks at the input again, so while it has some this never
    /// processes the offending bytes a second time.
    fn queue_alert(&mut self) {
        let mut work = Work::new(
            &mut self.outgoing,
            &mut self.plain,
            &mut self.early,
            &mut [],
            &[],
            false,
        );
        for _ in 0..4 {
            if !on_side!(&self.conn, c => c.wants_write()) {
                return;
            }
            let (discard, step) = work.step(&mut self.conn, self.incoming.bytes_mut());
            self.incoming.consume(discard);
            if !matches!(step, Ok(None)) {
                return;
            }
        }
    }

    /// Reads from the socket into `incoming`. `Ok(0)` at end of stream.
    fn fill(&mut self) -> io::Result<usize> {
        if self.incoming.len() >= MAX_INCOMING {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "TLS error: a handshake message larger than 64 KiB",
            ));
        }
        loop {
            match self.sock.read(self.incoming.room(MIN_READ)) {
                Ok(n) => {
                    self.incoming.commit(n);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Gives the buffer back if nothing is held.
                    self.incoming.commit(0);
                    return Err(e);
                }
            }
        }
    }

    /// Plaintext from the peer: decrypted data first, then TLS records from the socket until
    /// there is some, the socket would block, or it ends. Drives the handshake.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.plain.is_empty() {
                return Ok(self.plain.read_into(buf));
            }
            if self.peer_closed {
                return Ok(0);
            }
            let done = self.advance(buf, &[], false)?;
            if done.read > 0 {
                return Ok(done.read);
            }
            if !self.plain.is_empty() || self.peer_closed {
                continue;
            }
            if done.stop == Stop::Closed {
                return Ok(0);
            }
            // TCP EOF without close_notify: most MQTT clients close that way; MQTT has its
            // own DISCONNECT, so there is no truncation to worry about.
            if self.fill()? == 0 {
                return Ok(0);
            }
        }
    }

    /// Whether this is the server side of a handshake that has not finished: the work a
    /// handshake thread takes off the shard (see `shard::handshakes`).
    pub fn server_handshake_pending(&self) -> bool {
        matches!(self.conn, Side::Server(_)) && !self.established
    }

    /// Drives the handshake only: sends its records, reads and processes the peer's while
    /// the handshake lasts. Plaintext that came with the client's last flight stays in the
    /// stream for the shard (see [`TlsStream::has_buffered_input`]). `Ok(true)` once
    /// established, `Ok(false)` while it waits for the peer or for room in the socket; the
    /// error (with the alert sent) when it failed.
    pub fn drive_handshake(&mut self) -> io::Result<bool> {
        loop {
            self.flush_records()?;
            if self.established {
                return Ok(true);
            }
            if !self.outgoing.is_empty() {
                // The socket is full: wait for room.
                return Ok(false);
            }
            let done = self.advance(&mut [], &[], false)?;
            if self.established || !self.outgoing.is_empty() {
                continue;
            }
            if done.stop == Stop::Closed || self.peer_closed {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            match self.fill() {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }

    /// Encrypts plaintext and pushes the records to the socket. Returns `WouldBlock` when
    /// [`SEND_LIMIT`] bytes wait for the socket and it takes nothing. Before the handshake
    /// lets data be sent, the plaintext is kept and sent when it does.
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.flush_records()?;
        let held = self.outgoing.len() + self.early.len();
        if held >= SEND_LIMIT {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let take = &buf[..buf.len().min(SEND_LIMIT - held)];
        if !self.advance(&mut [], take, false)?.wrote {
            self.early.extend(take);
        }
        self.flush_records()?;
        Ok(take.len())
    }

    /// Vectored [`TlsStream::write`].
    pub fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let mut total = 0;
        for b in bufs.iter().filter(|b| !b.is_empty()) {
            match self.write(b) {
                Ok(n) => {
                    total += n;
                    if n < b.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && total > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    /// Writes queued records until there are none or the socket would block (not an error:
    /// `wants_write` stays true and the shard asks for WRITABLE).
    pub fn flush_records(&mut self) -> io::Result<()> {
        while !self.outgoing.is_empty() {
            match self.sock.write(self.outgoing.bytes()) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.outgoing.consume(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sends close_notify (best effort) and shuts the socket down.
    pub fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        if self.established && !self.failed {
            let _ = self.advance(&mut [], &[], true);
        }
        let _ = self.flush_records();
        self.sock.shutdown(how)
    }

    fn work_out_identity(&self) -> Option<String> {
        let cert = self.common().peer_certificates()?.first()?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::{Duration, Instant};

    use rustls::{ClientConfig, RootCertStore};

    /// A CA and a server certificate for `localhost`, made with the openssl command.
    fn certs(dir: &std::path::Path) {
        let script = "set -e
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
                -subj /CN=test-ca -keyout ca.key -out ca.pem 2>/dev/null
            openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
                -subj /CN=localhost -keyout server.key -out server.csr 2>/dev/null
            printf 'subjectAltName=DNS:localhost\\nbasicConstraints=CA:FALSE\\n' > ext
            openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
                -days 2 -extfile ext -out server.pem 2>/dev/null";
        let ok = Command::new("sh")
            .args(["-c", script])
            .current_dir(dir)
            .status()
            .expect("sh runs");
        assert!(ok.success(), "openssl could not make the test certificates");
    }

    /// A server stream and a client stream connected over loopback, handshake not started.
    fn pair(dir: &std::path::Path) -> (TlsStream, TlsStream) {
        certs(dir);
        let listener = TlsListener::load(TlsSettings {
            certfile: dir.join("server.pem"),
            keyfile: dir.join("server.key"),
            ..Default::default()
        })
        .expect("server config");
        let mut roots = RootCertStore::empty();
        for cert in load_certs("cafile", &dir.join("ca.pem")).expect("CA") {
            roots.add(cert).expect("CA added");
        }
        let config = ClientConfig::builder_with_provider(Arc::new(provider::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client_sock = TcpStream::connect(tcp.local_addr().expect("addr")).expect("connect");
        let (server_sock, _) = tcp.accept().expect("accept");
        server_sock.set_nonblocking(true).expect("non-blocking");
        let server = listener
            .accept(TcpStream::from_std(server_sock))
            .expect("server side");
        let conn = UnbufferedClientConnection::new(Arc::new(config), name).expect("client side");
        (server, TlsStream::client(client_sock, conn))
    }

    /// Drives both sides until both are established, bounded in time; the client reads
    /// nothing but the handshake meanwhile.
    fn handshake(server: &mut TlsStream, client: &mut TlsStream) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(server.is_established() && client.is_established()) {
            assert!(Instant::now() < deadline, "handshake stalled");
            client.flush_records().expect("client flush");
            server.drive_handshake().expect("server handshake");
            let r = client.read(&mut [0u8; 64]);
            assert!(would_block(&r), "no data yet: {r:?}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn would_block(r: &io::Result<usize>) -> bool {
        matches!(r, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Moves `data` from `from` to `to` through loopback, the two driven in turn, bounded in
    /// time; returns what `to` read.
    fn transfer(from: &mut TlsStream, to: &mut TlsStream, data: &[u8]) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let (mut sent, mut got) = (0, Vec::new());
        let mut buf = [0u8; 1500];
        while got.len() < data.len() {
            assert!(
                Instant::now() < deadline,
                "transfer stalled at {}",
                got.len()
            );
            if sent < data.len() {
                match from.write(&data[sent..]) {
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("write: {e}"),
                }
            }
            from.flush_records().expect("flush");
            loop {
                let r = to.read(&mut buf);
                if would_block(&r) {
                    break;
                }
                let n = r.expect("read");
                assert!(n > 0, "end of stream in the middle of the transfer");
                got.extend_from_slice(&buf[..n]);
            }
            to.flush_records().expect("flush");
        }
        got
    }

    #[test]
    fn streams_carry_large_data_both_ways_and_hold_no_buffers_when_idle() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut server, mut client) = pair(dir.path());
        assert!(client.wants_write(), "the ClientHello is queued at once");
        handshake(&mut server, &mut client);
        // Several records each way (16 KiB of plaintext per record), read in pieces smaller
        // than a record: what does not fit the reader's buffer is kept for the next read.
        let up: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let down: Vec<u8> = (0..150_000u32).map(|i| (i % 241) as u8).collect();
        assert!(
            transfer(&mut client, &mut server, &up) == up,
            "client to server intact"
        );
        assert!(
            transfer(&mut server, &mut client, &down) == down,
            "server to client intact"
        );
        // The session tickets the server sent after the handshake are read by now too.
        let r = client.read(&mut [0u8; 64]);
        assert!(would_block(&r), "nothing left to read: {r:?}");
        assert!(!server.wants_write() && !client.wants_write());
        assert!(!server.has_buffered_input() && !client.has_buffered_input());
        assert_eq!(
            server.buffered_capacity(),
            0,
            "an idle server stream holds no buffer"
        );
        assert_eq!(
            client.buffered_capacity(),
            0,
            "an idle client stream holds no buffer"
        );
        // close_notify ends the peer's stream.
        server.shutdown(Shutdown::Write).expect("shutdown");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match client.read(&mut [0u8; 64]) {
                Ok(0) => break,
                Ok(n) => panic!("{n} bytes after close_notify"),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "close_notify not seen");
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// A tiny deterministic generator (xorshift), so a failing case can be replayed.
    fn next(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    /// Feeds `bytes` to the server side as if from its peer and drives it as the handshake
    /// thread and then the shard would, bounded; whatever it decides, it must not panic, and
    /// after an error every later call fails too (rustls is not asked again).
    fn feed_server(server: &mut TlsStream, raw: &mut TcpStream, bytes: &[u8]) {
        raw.write_all(bytes).expect("send");
        let deadline = Instant::now() + Duration::from_millis(200);
        let failed = loop {
            let step = if server.is_established() {
                server.read(&mut [0u8; 512]).map(|_| ())
            } else {
                server.drive_handshake().map(|_| ())
            };
            match step {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => break true,
                _ if Instant::now() > deadline => break false,
                _ => std::thread::sleep(Duration::from_millis(1)),
            }
        };
        if failed {
            assert!(server.drive_handshake().is_err() || server.is_established());
            assert!(server.read(&mut [0u8; 16]).is_err());
            assert!(server.write(b"x").is_err());
        }
        let _ = server.shutdown(Shutdown::Both);
    }

    #[test]
    fn mangled_client_flights_and_records_never_panic_the_server() {
        let dir = tempfile::tempdir().expect("temp dir");
        certs(dir.path());
        // A real ClientHello, captured from the client side.
        let (_, mut client) = pair(dir.path());
        let hello = client.outgoing.bytes().to_vec();
        assert!(hello.len() > 100 && hello[0] == 22, "a handshake record");
        client.outgoing.consume(client.outgoing.len());
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for case in 0..60 {
            let (mut server, client) = pair(dir.path());
            let mut raw = client.sock;
            let mut bytes = hello.clone();
            match case % 4 {
                // Flip a few bytes anywhere, the record header included.
                0 | 1 => {
                    for _ in 0..1 + next(&mut seed) % 4 {
                        let i = (next(&mut seed) as usize) % bytes.len();
                        bytes[i] ^= 1 + (next(&mut seed) % 255) as u8;
                    }
                }
                // Cut it short, then close the socket.
                2 => bytes.truncate((next(&mut seed) as usize) % bytes.len()),
                // The hello, then a record of garbage.
                _ => {
                    let len = 1 + (next(&mut seed) % 300) as usize;
                    bytes.extend_from_slice(&[23, 3, 3, (len >> 8) as u8, len as u8]);
                    bytes.extend((0..len).map(|_| next(&mut seed) as u8));
                }
            }
            feed_server(&mut server, &mut raw, &bytes);
            if case % 4 == 2 {
                drop(raw);
            }
        }
        // After an established handshake: application records with a bad tag, a bad header.
        for case in 0..8 {
            let (mut server, mut client) = pair(dir.path());
            handshake(&mut server, &mut client);
            let len = 20 + (next(&mut seed) % 200) as usize;
            let mut record = vec![23, 3, 3, (len >> 8) as u8, len as u8];
            if case % 2 == 1 {
                record[1] = 9; // no such version
            }
            record.extend((0..len).map(|_| next(&mut seed) as u8));
            let mut raw = client.sock;
            feed_server(&mut server, &mut raw, &record);
        }
    }

    #[test]
    fn a_peer_that_is_not_speaking_tls_gets_an_error_and_no_second_try() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut server, client) = pair(dir.path());
        // An MQTT CONNECT where a ClientHello belongs.
        let mut raw = client.sock;
        raw.write_all(b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04abcd")
            .expect("send");
        let deadline = Instant::now() + Duration::from_secs(5);
        let err = loop {
            match server.drive_handshake() {
                Ok(false) => {
                    assert!(Instant::now() < deadline, "no error");
                    std::thread::sleep(Duration::from_millis(1));
                }
                Ok(true) => panic!("handshake with a non-TLS peer"),
                Err(e) => break e,
            }
        };
        assert!(err.to_string().contains("does not speak TLS"), "{err}");
        // Later calls (the shard closing it) fail again without touching rustls.
        assert!(server.read(&mut [0u8; 16]).is_err());
        server.shutdown(Shutdown::Both).ok();
    }
}
