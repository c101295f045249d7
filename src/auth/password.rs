//! mosquitto password files: parse, verify, write.
//!
//! One user per line, as `mosquitto_passwd` writes them:
//! - `user:$6$<base64 salt>$<base64 hash>`: hash = SHA-512(password || salt) (mosquitto 1.x);
//! - `user:$7$<iterations>$<base64 salt>$<base64 hash>`: hash = PBKDF2-HMAC-SHA512 with a
//!   64-byte output (mosquitto 2.0's default, 101 iterations);
//! - `user:$scram-sha-256$<iterations>$<salt>$<StoredKey>$<ServerKey>` (and `$scram-sha-512$`):
//!   a SCRAM verifier (RFC 5802, see [`super::scram`]), written by `midge passwd -S`. midge's
//!   own format (mosquitto skips such a line). It serves the MQTT 5 enhanced authentication
//!   method of its hash (SCRAM-SHA-256 or -512) and basic auth as well: a plain password is
//!   checked by recomputing StoredKey (PBKDF2, off the loop like `$7$`). One line per user:
//!   a user has either a mosquitto hash or one SCRAM verifier.
//!
//! Salts are 12 random bytes, base64 is the standard alphabet with padding. This is not
//! crypt(3): `$6$` here is *not* SHA-crypt. Blank lines and lines starting with `#` are skipped.
//! A line that is not a valid `USER:HASH` is skipped and logged as `FILE:LINE: problem`, and a
//! user defined twice keeps its first line, as mosquitto does: a file mosquitto accepts starts
//! midge too. Skipping fails closed: the user of a bad line cannot log in.
//!
//! Verification compares in constant time (`subtle`), and a lookup of an unknown user still
//! spends the time of one PBKDF2 so that response times do not tell which users exist.
//! [`PasswordHash::verify`] of a `$7$` hash is slow on purpose: call it off the event loop
//! (see [`super::worker::AuthWorker`]).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use base64::engine::general_purpose::{STANDARD, STANDARD_PAD_INDIFFERENT};
use base64::Engine;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use super::scram::{self, Mechanism, Verifier};
use super::AuthError;

/// Salt length written by `mosquitto_passwd` (and by `midge passwd`).
pub const SALT_LEN: usize = 12;
/// Length of a SHA-512 / PBKDF2-HMAC-SHA512 output.
pub const HASH_LEN: usize = 64;
/// PBKDF2 iterations written by default, as mosquitto 2.0's `mosquitto_passwd`.
pub const DEFAULT_ITERATIONS: u32 = 101;

/// How a password is hashed (`midge passwd -H`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlgorithm {
    /// `$6$`: one salted SHA-512 (`-H sha512`, mosquitto 1.x's default).
    Sha512,
    /// `$7$`: PBKDF2-HMAC-SHA512 with this many iterations (`-H sha512-pbkdf2`, the default).
    Sha512Pbkdf2 { iterations: u32 },
    /// `$scram-sha-256$` / `$scram-sha-512$`: a SCRAM verifier (`midge passwd -S`).
    Scram {
        mechanism: Mechanism,
        iterations: u32,
    },
}

impl HashAlgorithm {
    /// The PBKDF2 iteration count of a verification (0 for one plain SHA-512).
    pub fn iterations(self) -> u32 {
        match self {
            HashAlgorithm::Sha512 => 0,
            HashAlgorithm::Sha512Pbkdf2 { iterations }
            | HashAlgorithm::Scram { iterations, .. } => iterations,
        }
    }
}

impl Default for HashAlgorithm {
    fn default() -> HashAlgorithm {
        HashAlgorithm::Sha512Pbkdf2 {
            iterations: DEFAULT_ITERATIONS,
        }
    }
}

/// One hashed password, as stored after `user:` in a password file.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    algorithm: HashAlgorithm,
    salt: Vec<u8>,
    hash: [u8; HASH_LEN],
    /// The verifier of a `Scram` entry (then `salt` is empty and `hash` unused): boxed, as
    /// most files have none.
    scram: Option<Box<Verifier>>,
}

impl fmt::Debug for PasswordHash {
    /// Shows the algorithm only: hashes stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordHash")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl PasswordHash {
    /// Hashes `password` with a fresh random 12-byte salt.
    pub fn new(password: &[u8], algorithm: HashAlgorithm) -> Result<PasswordHash, AuthError> {
        let len = match algorithm {
            HashAlgorithm::Scram { .. } => scram::SALT_LEN,
            _ => SALT_LEN,
        };
        let mut salt = vec![0u8; len];
        getrandom::fill(&mut salt)
            .map_err(|e| AuthError::Other(format!("cannot get random bytes for a salt: {e}")))?;
        Ok(PasswordHash::with_salt(password, algorithm, salt))
    }

    /// Hashes `password` with the given salt (tests, known vectors).
    pub fn with_salt(password: &[u8], algorithm: HashAlgorithm, salt: Vec<u8>) -> PasswordHash {
        if let HashAlgorithm::Scram {
            mechanism,
            iterations,
        } = algorithm
        {
            return PasswordHash::from_verifier(Verifier::with_salt(
                password, mechanism, iterations, salt,
            ));
        }
        let hash = digest(password, algorithm, &salt);
        PasswordHash {
            algorithm,
            salt,
            hash,
            scram: None,
        }
    }

    /// The entry of a SCRAM verifier.
    pub fn from_verifier(verifier: Verifier) -> PasswordHash {
        PasswordHash {
            algorithm: HashAlgorithm::Scram {
                mechanism: verifier.mechanism,
                iterations: verifier.iterations,
            },
            salt: Vec::new(),
            hash: [0; HASH_LEN],
            scram: Some(Box::new(verifier)),
        }
    }

    /// The SCRAM verifier of this entry, if it is one.
    pub fn scram(&self) -> Option<&Verifier> {
        self.scram.as_deref()
    }

    /// Parses `$6$SALT$HASH` or `$7$ITERATIONS$SALT$HASH`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<PasswordHash, String> {
        let decode = |what: &str, b64: &str| {
            STANDARD_PAD_INDIFFERENT
                .decode(b64)
                .map_err(|_| format!("the {what} is not valid base64"))
        };
        let mut parts = text.split('$');
        if parts.next() != Some("") {
            return Err(
                "the password is not hashed (expected $6$ or $7$ or $scram-...$; \
                        `midge passwd -U FILE` hashes a plain-text file)"
                    .into(),
            );
        }
        let algorithm = match parts.next() {
            Some("6") => HashAlgorithm::Sha512,
            Some("7") => {
                let iterations = parts.next().unwrap_or("");
                match iterations.parse::<u32>() {
                    Ok(n) if n > 0 => HashAlgorithm::Sha512Pbkdf2 { iterations: n },
                    _ => {
                        return Err(format!(
                            "bad iteration count '{iterations}' (expected a whole number from 1)"
                        ))
                    }
                }
            }
            Some(tag) if tag.starts_with("scram-") => {
                let Some(mechanism) = Mechanism::ALL.into_iter().find(|m| m.file_tag() == tag)
                else {
                    return Err(format!(
                        "unknown SCRAM mechanism '${tag}$' (expected $scram-sha-256$ or $scram-sha-512$)"
                    ));
                };
                let rest = text[1 + tag.len()..].strip_prefix('$').unwrap_or("");
                return Verifier::parse_fields(mechanism, rest).map(PasswordHash::from_verifier);
            }
            Some(other) => {
                return Err(format!(
                    "unknown hash type '${other}$' (expected $6$, $7$ or $scram-sha-256$)"
                ))
            }
            None => return Err("empty hash".into()),
        };
        let (Some(salt), Some(hash), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err("expected $6$SALT$HASH or $7$ITERATIONS$SALT$HASH".into());
        };
        let salt = decode("salt", salt)?;
        if salt.is_empty() {
            return Err("empty salt".into());
        }
        let hash = decode("hash", hash)?;
        let hash: [u8; HASH_LEN] = hash
            .try_into()
            .map_err(|h: Vec<u8>| format!("the hash is {} bytes, expected {HASH_LEN}", h.len()))?;
        Ok(PasswordHash {
            algorithm,
            salt,
            hash,
            scram: None,
        })
    }

    /// The algorithm (and iteration count) of this hash.
    pub fn algorithm(&self) -> HashAlgorithm {
        self.algorithm
    }

    /// True if `password` is the one this hash was made from. Constant time in the comparison;
    /// a `$7$` hash costs its iteration count in HMACs (slow on purpose: call it off the event
    /// loop).
    pub fn verify(&self, password: &[u8]) -> bool {
        if let Some(verifier) = &self.scram {
            return verifier.verify_password(password);
        }
        let candidate = digest(password, self.algorithm, &self.salt);
        candidate.ct_eq(&self.hash).into()
    }
}

impl fmt::Display for PasswordHash {
    /// The file form: `$6$SALT$HASH` or `$7$ITERATIONS$SALT$HASH`, standard base64.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.algorithm {
            HashAlgorithm::Sha512 => write!(f, "$6$")?,
            HashAlgorithm::Sha512Pbkdf2 { iterations } => write!(f, "$7${iterations}$")?,
            HashAlgorithm::Scram { .. } => {
                let v = self.scram.as_ref().expect("a Scram entry has its verifier");
                return write!(f, "${}", v.to_file_form());
            }
        }
        write!(
            f,
            "{}${}",
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.hash)
        )
    }
}

/// The raw hash: SHA-512(password || salt), or PBKDF2-HMAC-SHA512(password, salt, n, 64).
fn digest(password: &[u8], algorithm: HashAlgorithm, salt: &[u8]) -> [u8; HASH_LEN] {
    let mut out = [0u8; HASH_LEN];
    match algorithm {
        HashAlgorithm::Sha512 => {
            let mut h = Sha512::new();
            h.update(password);
            h.update(salt);
            out.copy_from_slice(&h.finalize());
        }
        HashAlgorithm::Sha512Pbkdf2 { iterations } => {
            pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
        }
        HashAlgorithm::Scram { .. } => unreachable!("SCRAM entries verify through their verifier"),
    }
    out
}

/// A loaded password file: user name -> hash.
#[derive(Debug, Clone, Default)]
pub struct PasswordFile {
    users: HashMap<String, PasswordHash>,
    /// The lines skipped, each as `FILE:LINE: problem` (never with the hash).
    skipped: Vec<String>,
    /// Hash spent on unknown users so that they take as long as known ones.
    decoy: Option<PasswordHash>,
}

impl PasswordFile {
    /// Reads and parses the password file at `path`; an unreadable file is an error, and
    /// each skipped line is logged as a warning that names the file and the line.
    pub fn load(path: impl AsRef<Path>) -> Result<PasswordFile, AuthError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| AuthError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let file = PasswordFile::parse(&text, &path.display().to_string())?;
        for skipped in &file.skipped {
            log::warn!("Password file {skipped}.");
        }
        Ok(file)
    }

    /// Parses password-file text; `source_name` names it in the skipped lines'
    /// messages (`NAME:LINE: problem`).
    pub fn parse(text: &str, source_name: &str) -> Result<PasswordFile, AuthError> {
        let mut users: HashMap<String, PasswordHash> = HashMap::new();
        let mut first_line: HashMap<String, usize> = HashMap::new();
        let mut skipped = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let mut skip = |message: &str| {
                skipped.push(format!("{source_name}:{line_no}: {message}; line skipped"));
            };
            let (user, hash) = match split_line(raw) {
                Ok(Some(entry)) => entry,
                Ok(None) => continue,
                Err(m) => {
                    skip(m);
                    continue;
                }
            };
            if let Some(first) = first_line.get(user) {
                // As mosquitto: the first definition stays.
                skip(&format!("user '{user}' is already defined at line {first}"));
                continue;
            }
            // The user name is the line's own; never echo the hash.
            match PasswordHash::parse(hash) {
                Ok(hash) => {
                    first_line.insert(user.to_owned(), line_no);
                    users.insert(user.to_owned(), hash);
                }
                Err(m) => skip(&format!("user '{user}': {m}")),
            }
        }
        // The decoy costs what the most expensive entry costs (the default if none is slow).
        let decoy_algorithm = users
            .values()
            .map(|h| h.algorithm)
            .max_by_key(|a| a.iterations())
            .unwrap_or_default();
        let decoy = Some(PasswordHash::with_salt(
            b"",
            decoy_algorithm,
            vec![0u8; SALT_LEN],
        ));
        Ok(PasswordFile {
            users,
            skipped,
            decoy,
        })
    }

    /// The lines skipped, each as `FILE:LINE: problem; line skipped`.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    /// True if `username` is in the file and `password` is its password. An unknown user costs
    /// as much as a known one. Slow for `$7$` entries: call it off the event loop.
    ///
    /// An empty password never matches, as in mosquitto (whose CONNECT decoder reads an empty
    /// password as none, and refuses a known user without one): an entry made from an empty
    /// password does not open the door to clients that send none.
    pub fn verify(&self, username: &str, password: &[u8]) -> bool {
        match self.users.get(username) {
            Some(hash) if !password.is_empty() => hash.verify(password),
            Some(_) => false,
            None => {
                if let Some(decoy) = &self.decoy {
                    let _ = decoy.verify(password);
                }
                false
            }
        }
    }

    /// The hash stored for `username`.
    pub fn get(&self, username: &str) -> Option<&PasswordHash> {
        self.users.get(username)
    }

    /// The SCRAM verifier of `username` for `mechanism`, if its line is one (a user with a
    /// SCRAM-SHA-256 verifier has none for SCRAM-SHA-512).
    pub fn scram_verifier(&self, username: &str, mechanism: Mechanism) -> Option<&Verifier> {
        self.users
            .get(username)
            .and_then(|h| h.scram())
            .filter(|v| v.mechanism == mechanism)
    }

    /// True if `username` has an entry.
    pub fn contains(&self, username: &str) -> bool {
        self.users.contains_key(username)
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True if the file has no user.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// Splits one password-file line into `(user, rest)`; `Ok(None)` for blank and comment lines.
/// As mosquitto: the user name and the password are trimmed of blanks, and the password ends at
/// the next `:` if there is one.
pub(crate) fn split_line(raw: &str) -> Result<Option<(&str, &str)>, &'static str> {
    let line = raw.trim_end_matches(['\r', '\n']);
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    let Some((user, rest)) = line.split_once(':') else {
        return Err("expected USER:PASSWORD_HASH");
    };
    let user = user.trim();
    if user.is_empty() {
        return Err("empty user name");
    }
    if user.len() > 65535 {
        return Err("user name longer than 65535 bytes");
    }
    let password = rest.split(':').next().unwrap_or("").trim();
    if password.is_empty() {
        return Err("empty password hash");
    }
    Ok(Some((user, password)))
}

#[cfg(test)]
#[path = "password_tests.rs"]
mod tests;
