//! [`Verifier`]: what the password file keeps of a SCRAM password (`midge passwd -S`), and its
//! file form `scram-sha-256$ITER$SALT$STOREDKEY$SERVERKEY`.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use subtle::ConstantTimeEq;

use super::{Mechanism, SALT_LEN};

/// What the server keeps of a password: enough to check a proof and prove itself, not
/// enough to log in as the user.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    pub mechanism: Mechanism,
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl fmt::Debug for Verifier {
    /// Keys stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("mechanism", &self.mechanism)
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// The verifier of `password` with a fresh random salt.
    pub fn new(password: &[u8], mechanism: Mechanism, iterations: u32) -> Result<Verifier, String> {
        let mut salt = vec![0u8; SALT_LEN];
        getrandom::fill(&mut salt).map_err(|e| format!("cannot get random bytes: {e}"))?;
        Ok(Verifier::with_salt(password, mechanism, iterations, salt))
    }

    /// The verifier of `password` with this salt (tests, known vectors).
    pub fn with_salt(
        password: &[u8],
        mechanism: Mechanism,
        iterations: u32,
        salt: Vec<u8>,
    ) -> Verifier {
        let salted = mechanism.salted_password(password, &salt, iterations);
        let client_key = mechanism.hmac(&salted, &[b"Client Key"]);
        let server_key = mechanism.hmac(&salted, &[b"Server Key"]);
        Verifier {
            mechanism,
            iterations,
            salt,
            stored_key: mechanism.hash(&client_key),
            server_key,
        }
    }

    /// Whether `password` made this verifier (basic auth against a SCRAM line): recomputes
    /// StoredKey, so it costs the PBKDF2 iterations. Constant-time comparison.
    pub fn verify_password(&self, password: &[u8]) -> bool {
        let again =
            Verifier::with_salt(password, self.mechanism, self.iterations, self.salt.clone());
        again.stored_key.ct_eq(&self.stored_key).into()
    }

    /// The password-file form after `$`: `scram-sha-256$ITER$SALT$STOREDKEY$SERVERKEY`.
    pub fn to_file_form(&self) -> String {
        format!(
            "{}${}${}${}${}",
            self.mechanism.file_tag(),
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(&self.stored_key),
            STANDARD.encode(&self.server_key)
        )
    }

    /// Parses what follows `$scram-sha-256$` (or -512): `ITER$SALT$STOREDKEY$SERVERKEY`.
    pub fn parse_fields(mechanism: Mechanism, rest: &str) -> Result<Verifier, String> {
        let parts: Vec<&str> = rest.split('$').collect();
        let [iterations, salt, stored, server] = parts[..] else {
            return Err(format!(
                "expected ${}$ITERATIONS$SALT$STOREDKEY$SERVERKEY",
                mechanism.file_tag()
            ));
        };
        let iterations = match iterations.parse::<u32>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(format!(
                    "bad iteration count '{iterations}' (expected a whole number from 1)"
                ))
            }
        };
        let decode = |what: &str, b64: &str| {
            base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT
                .decode(b64)
                .map_err(|_| format!("the {what} is not valid base64"))
        };
        let salt = decode("salt", salt)?;
        if salt.is_empty() {
            return Err("empty salt".into());
        }
        let len = mechanism.key_len();
        let key = |what: &str, b64: &str| {
            let k = decode(what, b64)?;
            if k.len() != len {
                return Err(format!("the {what} is {} bytes, expected {len}", k.len()));
            }
            Ok(k)
        };
        Ok(Verifier {
            mechanism,
            iterations,
            salt,
            stored_key: key("stored key", stored)?,
            server_key: key("server key", server)?,
        })
    }
}
