//! SCRAM-SHA-256 / SCRAM-SHA-512, server side (RFC 5802, RFC 7677): the messages of one
//! exchange, parsed and answered, with no I/O. The MQTT 5 AUTH flow carries them
//! (`plugin::builtin::scram`); the password file stores the [`Verifier`].
//!
//! ```text
//! client-first  n,,n=USER,r=CNONCE
//! server-first  r=CNONCE+SNONCE,s=SALT,i=ITERATIONS
//! client-final  c=biws,r=CNONCE+SNONCE,p=PROOF
//! server-final  v=SERVER_SIGNATURE        (or e=ERROR)
//! ```
//!
//! The server never holds the password: a [`Verifier`] is (salt, iterations, StoredKey,
//! ServerKey), and checking a proof costs two HMACs and one hash, cheap enough for a shard.
//! Only making a verifier (`midge passwd -S`, or checking a plain password against one for
//! basic auth) runs PBKDF2.
//!
//! Limits of this implementation, on purpose: no channel binding (`p=` is refused with
//! `e=channel-binding-not-supported`; `n` and `y` are accepted), no authorization identity
//! other than the user itself, and no SASLprep: user names and passwords are compared as
//! their UTF-8 / raw bytes, which is SASLprep's result for ASCII.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

/// Iterations `midge passwd -S` writes by default (RFC 7677's minimum recommendation).
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// Salt length of the verifiers `midge passwd -S` writes.
pub const SALT_LEN: usize = 16;
/// The longest client message accepted (a user name, a nonce and the proof fit many times).
pub const MAX_MESSAGE_LEN: usize = 4096;
/// Random bytes of a server nonce (base64: 24 printable characters).
const SERVER_NONCE_BYTES: usize = 18;

/// The hash of a SCRAM mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mechanism {
    Sha256,
    Sha512,
}

impl Mechanism {
    /// Both, in the order they are offered.
    pub const ALL: [Mechanism; 2] = [Mechanism::Sha256, Mechanism::Sha512];

    /// The SASL / MQTT Authentication Method name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism of an Authentication Method (exact, as SASL names are upper case).
    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The tag of a password-file verifier: `$scram-sha-256$...`.
    pub fn file_tag(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "scram-sha-256",
            Mechanism::Sha512 => "scram-sha-512",
        }
    }

    /// Length of the hash (and of StoredKey, ServerKey, a proof).
    pub fn key_len(self) -> usize {
        match self {
            Mechanism::Sha256 => 32,
            Mechanism::Sha512 => 64,
        }
    }

    fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        fn run<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
            let mut mac = <M as KeyInit>::new_from_slice(key).expect("HMAC takes any key");
            for p in parts {
                mac.update(p);
            }
            mac.finalize().into_bytes().to_vec()
        }
        match self {
            Mechanism::Sha256 => run::<Hmac<Sha256>>(key, parts),
            Mechanism::Sha512 => run::<Hmac<Sha512>>(key, parts),
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => Sha256::digest(data).to_vec(),
            Mechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// Hi(password, salt, i): PBKDF2 with this mechanism's HMAC. Slow on purpose.
    fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.key_len()];
        match self {
            Mechanism::Sha256 => {
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out)
            }
            Mechanism::Sha512 => {
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out)
            }
        }
        out
    }
}

#[path = "scram_verifier.rs"]
mod verifier;
pub use verifier::Verifier;

/// Why an exchange failed: the `e=` value of RFC 5802 (sent in server-final where the
/// transport can carry it, logged in any case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramError {
    InvalidEncoding,
    ExtensionsNotSupported,
    InvalidProof,
    ChannelBindingsDontMatch,
    ChannelBindingNotSupported,
    UnsupportedChannelBindingType,
    InvalidUsernameEncoding,
    /// An authorization identity other than the user.
    OtherError,
}

impl ScramError {
    /// The RFC 5802 `server-error-value`.
    pub fn value(self) -> &'static str {
        match self {
            ScramError::InvalidEncoding => "invalid-encoding",
            ScramError::ExtensionsNotSupported => "extensions-not-supported",
            ScramError::InvalidProof => "invalid-proof",
            ScramError::ChannelBindingsDontMatch => "channel-bindings-dont-match",
            ScramError::ChannelBindingNotSupported => "channel-binding-not-supported",
            ScramError::UnsupportedChannelBindingType => "unsupported-channel-binding-type",
            ScramError::InvalidUsernameEncoding => "invalid-username-encoding",
            ScramError::OtherError => "other-error",
        }
    }

    /// The server-final message that reports it: `e=VALUE`.
    pub fn server_final(self) -> String {
        format!("e={}", self.value())
    }
}

impl fmt::Display for ScramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScramError::ChannelBindingNotSupported => {
                f.write_str("channel binding (p=) is not supported; use n or y")
            }
            other => f.write_str(other.value()),
        }
    }
}

/// A parsed client-first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// The GS2 header (`n,,` or `y,,`), echoed base64 in client-final's `c=`.
    pub gs2_header: String,
    /// The user name, `=2C` / `=3D` decoded.
    pub username: String,
    pub client_nonce: String,
    /// client-first-message-bare, for the AuthMessage.
    pub bare: String,
}

/// Parses client-first: `gs2-header client-first-message-bare`.
pub fn parse_client_first(data: &[u8]) -> Result<ClientFirst, ScramError> {
    if data.len() > MAX_MESSAGE_LEN {
        return Err(ScramError::OtherError);
    }
    let text = std::str::from_utf8(data).map_err(|_| ScramError::InvalidEncoding)?;
    let (flag, rest) = text.split_once(',').ok_or(ScramError::InvalidEncoding)?;
    match flag {
        "n" | "y" => {}
        f if f.starts_with("p=") => return Err(ScramError::ChannelBindingNotSupported),
        _ => return Err(ScramError::InvalidEncoding),
    }
    let (authzid, bare) = rest.split_once(',').ok_or(ScramError::InvalidEncoding)?;
    let gs2_header = format!("{flag},{authzid},");
    let mut fields = bare.split(',');
    let first = fields.next().unwrap_or("");
    if first.starts_with("m=") {
        return Err(ScramError::ExtensionsNotSupported);
    }
    let username = first
        .strip_prefix("n=")
        .ok_or(ScramError::InvalidEncoding)
        .and_then(decode_saslname)?;
    let client_nonce = fields
        .next()
        .and_then(|f| f.strip_prefix("r="))
        .filter(|n| valid_nonce(n))
        .ok_or(ScramError::InvalidEncoding)?;
    if !authzid.is_empty() {
        let id = authzid
            .strip_prefix("a=")
            .ok_or(ScramError::InvalidEncoding)
            .and_then(decode_saslname)?;
        if id != username {
            return Err(ScramError::OtherError);
        }
    }
    Ok(ClientFirst {
        gs2_header,
        username,
        client_nonce: client_nonce.to_owned(),
        bare: bare.to_owned(),
    })
}

/// `saslname`: `=2C` is `,`, `=3D` is `=`, any other `=` is an error; not empty.
fn decode_saslname(s: &str) -> Result<String, ScramError> {
    if s.is_empty() {
        return Err(ScramError::InvalidUsernameEncoding);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::InvalidUsernameEncoding),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `printable` of RFC 5802: %x21-2B / %x2D-7E (no comma), at least one.
fn valid_nonce(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// A fresh server nonce: random bytes, base64 (printable, no comma).
pub fn random_nonce() -> Result<String, String> {
    let mut bytes = [0u8; SERVER_NONCE_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| format!("cannot get random bytes: {e}"))?;
    Ok(STANDARD.encode(bytes))
}

/// An exchange after server-first: what client-final is checked against.
#[derive(Clone)]
pub struct Exchange {
    verifier: Verifier,
    gs2_header: String,
    nonce: String,
    /// client-first-message-bare "," server-first-message ",": the head of the AuthMessage.
    auth_head: String,
}

impl fmt::Debug for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exchange")
            .field("mechanism", &self.verifier.mechanism)
            .finish_non_exhaustive()
    }
}

impl Exchange {
    /// Answers `first` with server-first, the client's nonce followed by `server_nonce` (use
    /// [`random_nonce`]; a fixed one only in tests). Returns the exchange and the message.
    pub fn start(
        first: &ClientFirst,
        verifier: Verifier,
        server_nonce: &str,
    ) -> (Exchange, String) {
        let nonce = format!("{}{server_nonce}", first.client_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&verifier.salt),
            verifier.iterations
        );
        let exchange = Exchange {
            auth_head: format!("{},{server_first},", first.bare),
            gs2_header: first.gs2_header.clone(),
            nonce,
            verifier,
        };
        (exchange, server_first)
    }

    /// The mechanism of this exchange.
    pub fn mechanism(&self) -> Mechanism {
        self.verifier.mechanism
    }

    /// Checks client-final; on success returns server-final (`v=SIGNATURE`).
    pub fn finish(&self, data: &[u8]) -> Result<String, ScramError> {
        if data.len() > MAX_MESSAGE_LEN {
            return Err(ScramError::OtherError);
        }
        let text = std::str::from_utf8(data).map_err(|_| ScramError::InvalidEncoding)?;
        let (without_proof, proof) = text.rsplit_once(",p=").ok_or(ScramError::InvalidEncoding)?;
        let mut fields = without_proof.split(',');
        let binding = fields
            .next()
            .and_then(|f| f.strip_prefix("c="))
            .ok_or(ScramError::InvalidEncoding)?;
        let binding = STANDARD
            .decode(binding)
            .map_err(|_| ScramError::InvalidEncoding)?;
        if binding != self.gs2_header.as_bytes() {
            return Err(ScramError::ChannelBindingsDontMatch);
        }
        let nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .ok_or(ScramError::InvalidEncoding)?;
        if !bool::from(nonce.as_bytes().ct_eq(self.nonce.as_bytes())) {
            return Err(ScramError::InvalidProof);
        }
        let proof = STANDARD
            .decode(proof)
            .map_err(|_| ScramError::InvalidEncoding)?;
        let v = &self.verifier;
        let m = v.mechanism;
        if proof.len() != m.key_len() {
            return Err(ScramError::InvalidProof);
        }
        let auth_message = [self.auth_head.as_bytes(), without_proof.as_bytes()];
        let client_signature = m.hmac(&v.stored_key, &auth_message);
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        if !bool::from(m.hash(&client_key).ct_eq(&v.stored_key)) {
            return Err(ScramError::InvalidProof);
        }
        let server_signature = m.hmac(&v.server_key, &auth_message);
        Ok(format!("v={}", STANDARD.encode(server_signature)))
    }
}

/// A verifier for a user that does not exist: the exchange runs its course with a salt that
/// is stable per user name (derived from `secret`) and fails at the proof, so that the
/// answer does not tell which users exist (RFC 5802 §5.1, "unknown-user" is not revealed).
pub fn decoy_verifier(mechanism: Mechanism, username: &str, secret: &[u8]) -> Verifier {
    let salt = mechanism.hmac(secret, &[b"salt", username.as_bytes()])[..SALT_LEN].to_vec();
    let key = mechanism.hmac(secret, &[b"key", username.as_bytes()]);
    Verifier {
        mechanism,
        iterations: DEFAULT_ITERATIONS,
        salt,
        stored_key: key.clone(),
        server_key: key,
    }
}

/// The client side (tests, and a client of midge such as a bridge): client-final for
/// `password` given server-first, and the server-final a genuine server answers.
/// `client_first_bare` and `gs2_header` are what the client sent in client-first.
pub fn client_final(
    mechanism: Mechanism,
    password: &[u8],
    client_first_bare: &str,
    server_first: &str,
    gs2_header: &str,
) -> Result<(String, String), ScramError> {
    let (mut nonce, mut salt, mut iterations) = (None, None, None);
    for field in server_first.split(',') {
        if let Some(r) = field.strip_prefix("r=") {
            nonce = Some(r);
        } else if let Some(s) = field.strip_prefix("s=") {
            salt = STANDARD.decode(s).ok();
        } else if let Some(i) = field.strip_prefix("i=") {
            iterations = i.parse::<u32>().ok().filter(|&i| i > 0);
        }
    }
    let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
        return Err(ScramError::InvalidEncoding);
    };
    let m = mechanism;
    let salted = m.salted_password(password, &salt, iterations);
    let client_key = m.hmac(&salted, &[b"Client Key"]);
    let stored_key = m.hash(&client_key);
    let without_proof = format!("c={},r={nonce}", STANDARD.encode(gs2_header));
    let auth = format!("{client_first_bare},{server_first},{without_proof}");
    let signature = m.hmac(&stored_key, &[auth.as_bytes()]);
    let proof: Vec<u8> = client_key
        .iter()
        .zip(&signature)
        .map(|(a, b)| a ^ b)
        .collect();
    let server_key = m.hmac(&salted, &[b"Server Key"]);
    let expected = m.hmac(&server_key, &[auth.as_bytes()]);
    Ok((
        format!("{without_proof},p={}", STANDARD.encode(proof)),
        format!("v={}", STANDARD.encode(expected)),
    ))
}

#[cfg(test)]
#[path = "scram_tests.rs"]
mod tests;
