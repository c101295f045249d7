//! TLS listeners and connections (rustls with the `ring` provider).
//!
//! - [`TlsListener`]: one listener's TLS settings and the `rustls::ServerConfig` built from
//!   them (certificate, key, client CAs, versions, cipher suites). Built once at start-up, where
//!   a bad file stops the broker with an error naming it ([`TlsError`]), and rebuilt by
//!   [`TlsListener::reload`] (SIGHUP) without touching open connections: new handshakes use the
//!   new config, established sessions keep the one they started with.
//! - [`TlsStream`]: a non-blocking socket plus a `rustls::ServerConnection`; see
//!   [`super::Transport`] for the contract with the shard.
//! - The client certificate identity (`use_identity_as_username`, `use_subject_as_username`),
//!   read from the verified end-entity certificate with a small DER reader ([`x509`]).
//!
//! Why rustls with `ring`: rustls keeps TLS memory-safe and is the usual Rust choice; `ring`
//! builds with a plain C compiler, while the default `aws-lc-rs` provider needs cmake and a
//! longer build (ARCHITECTURE.md §9: a light build).

use std::fmt;
use std::io::{self, BufRead, Read, Write};
use std::net::Shutdown;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use mio::net::TcpStream;
use rustls::crypto::{ring as provider, CryptoProvider};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection, SupportedCipherSuite};

use crate::config::{TlsSettings, TlsVersion};

/// TLS 1.2 cipher suites midge (rustls + ring) offers: (IANA name, OpenSSL name).
/// `ciphers` accepts either spelling.
pub const TLS12_CIPHERS: &[(&str, &str)] = &[
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ),
];

/// TLS 1.3 cipher suites midge offers (OpenSSL uses the IANA names for these too).
pub const TLS13_CIPHERS: &[&str] = &[
    "TLS_AES_256_GCM_SHA384",
    "TLS_AES_128_GCM_SHA256",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// The IANA name of a TLS 1.2 suite given by its IANA or OpenSSL name.
pub fn tls12_cipher(name: &str) -> Option<&'static str> {
    TLS12_CIPHERS
        .iter()
        .find(|(iana, openssl)| name.eq_ignore_ascii_case(iana) || name == *openssl)
        .map(|(iana, _)| *iana)
}

/// The IANA name of a TLS 1.3 suite.
pub fn tls13_cipher(name: &str) -> Option<&'static str> {
    TLS13_CIPHERS
        .iter()
        .find(|iana| name.eq_ignore_ascii_case(iana))
        .copied()
}

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
    /// Read once per accepted connection (never per message); written on reload.
    config: RwLock<Arc<ServerConfig>>,
}

impl TlsListener {
    /// Loads the listener's files and builds its config.
    pub fn load(settings: TlsSettings) -> Result<TlsListener, TlsError> {
        let config = build_config(&settings)?;
        Ok(TlsListener {
            settings,
            config: RwLock::new(Arc::new(config)),
        })
    }

    /// Re-reads the certificate, key and CA files (SIGHUP). On error the old config stays in
    /// force and the error is returned for the log.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = Arc::new(build_config(&self.settings)?);
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
            conn,
            mode: self.identity_mode(),
            identity: None,
            established: false,
        })
    }
}

/// Builds a `ServerConfig` from the settings, reading every file.
fn build_config(s: &TlsSettings) -> Result<ServerConfig, TlsError> {
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
    let verifier = match roots {
        Some(roots) if s.require_certificate => {
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Config(format!("client certificate verifier: {e}")))?
        }
        _ => WebPkiClientVerifier::no_client_auth(),
    };
    let certs = load_certs("certfile", &s.certfile)?;
    let key = load_key(&s.keyfile)?;
    builder
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::File {
            option: "keyfile",
            path: s.keyfile.clone(),
            problem: format!("cannot be used with certfile {}: {e}", s.certfile.display()),
        })
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

fn pem_problem(e: pem::Error, what: &str) -> String {
    match e {
        pem::Error::Io(e) => format!("cannot read: {e}"),
        pem::Error::NoItemsFound => format!("no {what} found (a PEM file is expected)"),
        other => format!("not a valid PEM file: {other}"),
    }
}

/// Every certificate of a PEM file (at least one).
fn load_certs(option: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |problem: String| TlsError::File {
        option,
        path: path.to_path_buf(),
        problem,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(pem_problem(e, "certificate")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(pem_problem(e, "certificate")))?;
    if certs.is_empty() {
        return Err(err("no certificate found (a PEM file is expected)".into()));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1; not encrypted).
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        option: "keyfile",
        path: path.to_path_buf(),
        problem: pem_problem(e, "unencrypted private key (PKCS#8, PKCS#1 or SEC1)"),
    })
}

/// The client CAs of `cafile` and `capath`, or `None` when neither is set.
fn load_roots(s: &TlsSettings) -> Result<Option<RootCertStore>, TlsError> {
    if s.cafile.is_none() && s.capath.is_none() {
        return Ok(None);
    }
    let mut roots = RootCertStore::empty();
    let mut add = |option: &'static str, path: &Path, certs: Vec<CertificateDer<'static>>| {
        for cert in certs {
            roots.add(cert).map_err(|e| TlsError::File {
                option,
                path: path.to_path_buf(),
                problem: format!("not a usable CA certificate: {e}"),
            })?;
        }
        Ok::<(), TlsError>(())
    };
    if let Some(cafile) = &s.cafile {
        add("cafile", cafile, load_certs("cafile", cafile)?)?;
    }
    if let Some(capath) = &s.capath {
        let err = |problem: String| TlsError::File {
            option: "capath",
            path: capath.clone(),
            problem,
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(capath)
            .map_err(|e| err(format!("cannot read: {e}")))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        let mut found = 0;
        for file in files {
            // Like OpenSSL's hashed directories, files that hold no certificate are skipped.
            match load_certs("capath", &file) {
                Ok(certs) => {
                    found += certs.len();
                    add("capath", &file, certs)?;
                }
                Err(_) => continue,
            }
        }
        if found == 0 {
            return Err(err("no CA certificate found in this directory".into()));
        }
    }
    Ok(Some(roots))
}

/// A TLS connection over a non-blocking socket. Shard thread only; `Send`, moves whole.
#[derive(Debug)]
pub struct TlsStream {
    sock: TcpStream,
    conn: ServerConnection,
    mode: IdentityMode,
    /// Worked out once, when the handshake finishes.
    identity: Option<String>,
    /// The handshake has finished.
    established: bool,
}

impl TlsStream {
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

/// Just enough DER to read a certificate's subject: the identity of a client whose chain
/// rustls has already verified. Every length is checked; anything unexpected gives `None`.
pub mod x509 {
    use std::fmt::Write as _;

    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const OID: u8 = 0x06;
    const VERSION: u8 = 0xa0;

    /// id-at-commonName, 2.5.4.3.
    const CN: &[u8] = &[0x55, 0x04, 0x03];

    /// OpenSSL's short names (what `-nameopt RFC2253` prints) for the usual attributes.
    const SHORT_NAMES: &[(&[u8], &str)] = &[
        (CN, "CN"),
        (&[0x55, 0x04, 0x04], "SN"),
        (&[0x55, 0x04, 0x05], "serialNumber"),
        (&[0x55, 0x04, 0x06], "C"),
        (&[0x55, 0x04, 0x07], "L"),
        (&[0x55, 0x04, 0x08], "ST"),
        (&[0x55, 0x04, 0x09], "street"),
        (&[0x55, 0x04, 0x0a], "O"),
        (&[0x55, 0x04, 0x0b], "OU"),
        (&[0x55, 0x04, 0x0c], "title"),
        (&[0x55, 0x04, 0x0f], "businessCategory"),
        (&[0x55, 0x04, 0x11], "postalCode"),
        (&[0x55, 0x04, 0x29], "name"),
        (&[0x55, 0x04, 0x2a], "GN"),
        (&[0x55, 0x04, 0x2b], "initials"),
        (&[0x55, 0x04, 0x2c], "generationQualifier"),
        (&[0x55, 0x04, 0x2e], "dnQualifier"),
        (&[0x55, 0x04, 0x41], "pseudonym"),
        (&[0x55, 0x04, 0x61], "organizationIdentifier"),
        (
            &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01],
            "emailAddress",
        ),
        (
            &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19],
            "DC",
        ),
        (
            &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01],
            "UID",
        ),
    ];

    /// One DER element: (tag, contents, what follows). Single-byte tags, definite lengths.
    fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        if tag & 0x1f == 0x1f {
            return None;
        }
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, &rest[n..])
        };
        if rest.len() < len {
            return None;
        }
        Some((tag, &rest[..len], &rest[len..]))
    }

    /// One attribute of the subject.
    #[derive(Debug)]
    struct Ava<'a> {
        /// Index of its relative distinguished name (several attributes may share one).
        rdn: usize,
        oid: &'a [u8],
        tag: u8,
        value: &'a [u8],
        /// The value's whole DER element (for `#hex` dumps).
        der: &'a [u8],
    }

    /// The subject's attributes in certificate (DER) order.
    fn subject(cert: &[u8]) -> Option<Vec<Ava<'_>>> {
        let (tag, cert, _) = tlv(cert)?;
        if tag != SEQUENCE {
            return None;
        }
        let (tag, tbs, _) = tlv(cert)?;
        if tag != SEQUENCE {
            return None;
        }
        let mut rest = tbs;
        if tlv(rest)?.0 == VERSION {
            rest = tlv(rest)?.2;
        }
        // serialNumber, signature, issuer, validity.
        for _ in 0..4 {
            rest = tlv(rest)?.2;
        }
        let (tag, mut rdns, _) = tlv(rest)?;
        if tag != SEQUENCE {
            return None;
        }
        let mut avas = Vec::new();
        let mut rdn = 0;
        while !rdns.is_empty() {
            let (tag, mut set, next) = tlv(rdns)?;
            if tag != SET {
                return None;
            }
            rdns = next;
            while !set.is_empty() {
                let (tag, atv, next) = tlv(set)?;
                if tag != SEQUENCE {
                    return None;
                }
                set = next;
                let (tag, oid, after_oid) = tlv(atv)?;
                if tag != OID {
                    return None;
                }
                let (vtag, value, after_value) = tlv(after_oid)?;
                let der = &after_oid[..after_oid.len() - after_value.len()];
                avas.push(Ava {
                    rdn,
                    oid,
                    tag: vtag,
                    value,
                    der,
                });
            }
            rdn += 1;
        }
        Some(avas)
    }

    /// A directory string as text (UTF8String, PrintableString, IA5String, TeletexString as
    /// Latin-1, BMPString, UniversalString, ...); `None` for other types.
    fn text(tag: u8, value: &[u8]) -> Option<String> {
        match tag {
            0x0c => String::from_utf8(value.to_vec()).ok(),
            // Numeric, Printable, T61/Teletex, IA5, Visible: one byte per character.
            0x12 | 0x13 | 0x14 | 0x16 | 0x1a => {
                Some(value.iter().map(|&b| char::from(b)).collect())
            }
            0x1e => {
                if !value.len().is_multiple_of(2) {
                    return None;
                }
                let units = value.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]]));
                char::decode_utf16(units)
                    .collect::<Result<String, _>>()
                    .ok()
            }
            0x1c => {
                if !value.len().is_multiple_of(4) {
                    return None;
                }
                value
                    .chunks(4)
                    .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                    .collect()
            }
            _ => None,
        }
    }

    /// The subject's first Common Name (as OpenSSL's `X509_NAME_get_index_by_NID` finds it),
    /// for `use_identity_as_username`. `None` without one, or if it holds a NUL.
    pub fn common_name(cert: &[u8]) -> Option<String> {
        let avas = subject(cert)?;
        let cn = avas.iter().find(|a| a.oid == CN)?;
        text(cn.tag, cn.value).filter(|s| !s.is_empty() && !s.contains('\0'))
    }

    /// The subject as OpenSSL prints it with `XN_FLAG_RFC2253` (what mosquitto uses for
    /// `use_subject_as_username`): attributes in reverse order, `,` between RDNs and `+`
    /// within one, RFC 2253 escapes, bytes above 0x7f and control characters as `\XX` of
    /// their UTF-8 encoding, unknown attributes as `OID=#HEX` of the DER value.
    pub fn subject_rfc2253(cert: &[u8]) -> Option<String> {
        let avas = subject(cert)?;
        let mut out = String::new();
        let mut previous: Option<usize> = None;
        for ava in avas.iter().rev() {
            if let Some(p) = previous {
                out.push(if p == ava.rdn { '+' } else { ',' });
            }
            previous = Some(ava.rdn);
            let name = SHORT_NAMES.iter().find(|(oid, _)| *oid == ava.oid);
            match name {
                Some((_, short)) => out.push_str(short),
                None => out.push_str(&dotted(ava.oid)?),
            }
            out.push('=');
            match (name, text(ava.tag, ava.value)) {
                (Some(_), Some(value)) => escape_into(&mut out, &value),
                _ => {
                    out.push('#');
                    for b in ava.der {
                        let _ = write!(out, "{b:02X}");
                    }
                }
            }
        }
        Some(out)
    }

    fn escape_into(out: &mut String, value: &str) {
        let bytes = value.as_bytes();
        for (i, &b) in bytes.iter().enumerate() {
            let first = i == 0;
            let last = i + 1 == bytes.len();
            match b {
                b',' | b'+' | b'"' | b'\\' | b'<' | b'>' | b';' => {
                    out.push('\\');
                    out.push(char::from(b));
                }
                b'#' if first => out.push_str("\\#"),
                b' ' if first || last => out.push_str("\\ "),
                0..=0x1f | 0x7f..=0xff => {
                    let _ = write!(out, "\\{b:02X}");
                }
                _ => out.push(char::from(b)),
            }
        }
    }

    /// An OID in dotted form.
    fn dotted(oid: &[u8]) -> Option<String> {
        let (&first, rest) = oid.split_first()?;
        let mut out = format!("{}.{}", first / 40, first % 40);
        let mut v: u64 = 0;
        for &b in rest {
            v = v.checked_mul(128)? | u64::from(b & 0x7f);
            if b & 0x80 == 0 {
                let _ = write!(out, ".{v}");
                v = 0;
            }
        }
        Some(out)
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::CertificateDer;

        /// `openssl req -utf8 -multivalue-rdn -x509 ... -subj
        /// "/C=GB/ST=Some, State/O=Midge \+ Co/OU=unit+UID=42/CN=client-één/emailAddress=a@b.c"`
        const RICH: &str = "-----BEGIN CERTIFICATE-----
MIICZjCCAgugAwIBAgIUXCC0/TT4PYopHw8yE0N48e8yoagwCgYIKoZIzj0EAwIw
gYYxCzAJBgNVBAYTAkdCMRQwEgYDVQQIDAtTb21lLCBTdGF0ZTETMBEGA1UECgwK
TWlkZ2UgKyBDbzEfMAsGA1UECwwEdW5pdDAQBgoJkiaJk/IsZAEBDAI0MjEVMBMG
A1UEAwwMY2xpZW50LcOpw6luMRQwEgYJKoZIhvcNAQkBFgVhQGIuYzAgFw0yNjEx
MjUwOTAzMjZaGA8yMTI2MTEwMTA5MDMyNlowgYYxCzAJBgNVBAYTAkdCMRQwEgYD
VQQIDAtTb21lLCBTdGF0ZTETMBEGA1UECgwKTWlkZ2UgKyBDbzEfMAsGA1UECwwE
dW5pdDAQBgoJkiaJk/IsZAEBDAI0MjEVMBMGA1UEAwwMY2xpZW50LcOpw6luMRQw
EgYJKoZIhvcNAQkBFgVhQGIuYzBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABMB9
i+ESbz+7wjvf4pP72sNH3fo6dqGRCUy8VPznyisz1kaquv1ovn0txzcNaq8x+Zxm
tti3E/2mN6O2fqTSpESjUzBRMB0GA1UdDgQWBBTCfrklOBVauBcY/zCNeG1WEDd3
sDAfBgNVHSMEGDAWgBTCfrklOBVauBcY/zCNeG1WEDd3sDAPBgNVHRMBAf8EBTAD
AQH/MAoGCCqGSM49BAMCA0kAMEYCIQD9bpSvCil6y0AGJ1tPXNyHqPqKRwiGWtGP
1PXXw71a0AIhALRJQaZOFI6ITEdM7wOBBxop74BOEOufpTID5YbnhzWg
-----END CERTIFICATE-----";

        /// `-subj "/O=NoCN"`.
        const NO_CN: &str = "-----BEGIN CERTIFICATE-----
MIIBdTCCARugAwIBAgIUGQEagiO/guZUvLenMtNlthlhuKswCgYIKoZIzj0EAwIw
DzENMAsGA1UECgwETm9DTjAgFw0yNjExMjUwOTAzMjdaGA8yMTI2MTEwMTA5MDMy
N1owDzENMAsGA1UECgwETm9DTjBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABAUI
8PALfB8aRVz47WdFwSy8zAKk23TjVSRo/wZHhENBHnt3betnTDZnGcgpoJP6zYQI
cg/elHP2FSVhXIjJYhCjUzBRMB0GA1UdDgQWBBSwpnBkoUGeDaAxfu3SB5xSvRzG
tDAfBgNVHSMEGDAWgBSwpnBkoUGeDaAxfu3SB5xSvRzGtDAPBgNVHRMBAf8EBTAD
AQH/MAoGCCqGSM49BAMCA0gAMEUCIQDNsSU06Jc1nybxN2oL8HYtyNp2idmpnGq9
imZ8HNDvbAIgGX6o1sI1NA8F1SsY9uA0F9zEXTQg65ZMYglz2//Spq0=
-----END CERTIFICATE-----";

        fn der(pem: &str) -> Vec<u8> {
            CertificateDer::from_pem_slice(pem.as_bytes())
                .expect("test certificate")
                .to_vec()
        }

        #[test]
        fn common_name_is_the_subjects_cn_decoded_as_utf8() {
            assert_eq!(common_name(&der(RICH)).as_deref(), Some("client-één"));
        }

        #[test]
        fn common_name_is_none_without_a_cn() {
            assert_eq!(common_name(&der(NO_CN)), None);
        }

        #[test]
        fn subject_matches_openssl_rfc2253_output() {
            // `openssl x509 -noout -subject -nameopt RFC2253` prints exactly this.
            assert_eq!(
                subject_rfc2253(&der(RICH)).as_deref(),
                Some(
                    "emailAddress=a@b.c,CN=client-\\C3\\A9\\C3\\A9n,UID=42+OU=unit,\
                     O=Midge \\+ Co,ST=Some\\, State,C=GB"
                )
            );
            assert_eq!(subject_rfc2253(&der(NO_CN)).as_deref(), Some("O=NoCN"));
        }

        #[test]
        fn garbage_and_truncated_input_give_none() {
            let cert = der(RICH);
            for cut in [0, 1, 2, 10, 100, cert.len() / 2] {
                assert_eq!(common_name(&cert[..cut]), None, "cut at {cut}");
            }
            assert_eq!(subject_rfc2253(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
            assert_eq!(common_name(&[0x1f, 0x00]), None);
        }

        #[test]
        fn escapes_follow_rfc2253() {
            let mut s = String::new();
            escape_into(&mut s, "#a,b+c\"d\\e<f>g;h ");
            assert_eq!(s, "\\#a\\,b\\+c\\\"d\\\\e\\<f\\>g\\;h\\ ");
            let mut s = String::new();
            escape_into(&mut s, " x\u{1}");
            assert_eq!(s, "\\ x\\01");
        }

        #[test]
        fn unknown_oids_are_dotted() {
            assert_eq!(
                dotted(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01]).as_deref(),
                Some("1.2.840.113549.1.9.1")
            );
        }
    }
}
