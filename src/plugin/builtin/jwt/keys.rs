//! The keys a JWT is checked against: an HS256 secret file, a PEM public key (RSA or P-256),
//! or a JWKS file (keys chosen by `kid`). Verification is `ring`'s, already in the tree for
//! rustls; the only parsing done here is the SubjectPublicKeyInfo wrapper of a PEM key (a
//! few DER headers) and the JWKS JSON.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::SubjectPublicKeyInfoDer;
use serde_json::Value;

/// rsaEncryption, id-ecPublicKey and prime256v1 (DER contents of the OIDs).
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// One verification key.
pub enum Key {
    /// HS256.
    Hmac(ring::hmac::Key),
    /// RS256: PKCS#1 RSAPublicKey DER (from a PEM file) ...
    RsaDer(Vec<u8>),
    /// ... or the modulus and exponent (from a JWKS).
    RsaParts { n: Vec<u8>, e: Vec<u8> },
    /// ES256: the uncompressed P-256 point.
    P256(Vec<u8>),
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Key::Hmac(_) => "Key::Hmac",
            Key::RsaDer(_) | Key::RsaParts { .. } => "Key::Rsa",
            Key::P256(_) => "Key::P256",
        })
    }
}

impl Key {
    /// The JWT `alg` this key verifies.
    pub fn alg(&self) -> &'static str {
        match self {
            Key::Hmac(_) => "HS256",
            Key::RsaDer(_) | Key::RsaParts { .. } => "RS256",
            Key::P256(_) => "ES256",
        }
    }

    /// Whether `sig` signs `msg` under this key.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        match self {
            Key::Hmac(k) => ring::hmac::verify(k, msg, sig).is_ok(),
            Key::RsaDer(der) => UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, der)
                .verify(msg, sig)
                .is_ok(),
            Key::RsaParts { n, e } => RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, msg, sig)
                .is_ok(),
            Key::P256(point) => UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                .verify(msg, sig)
                .is_ok(),
        }
    }
}

/// `jwt_key_file`: a PEM public key (`-----BEGIN PUBLIC KEY-----`) or else an HS256 secret
/// (the file's bytes, without a final line break).
pub fn load_key_file(path: &Path) -> Result<Key, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.starts_with(b"-----BEGIN") {
        let der = SubjectPublicKeyInfoDer::from_pem_slice(&bytes).map_err(|e| {
            format!(
                "{}: not a PEM public key (BEGIN PUBLIC KEY): {e}",
                path.display()
            )
        })?;
        return spki(der.as_ref()).map_err(|e| format!("{}: {e}", path.display()));
    }
    let mut secret = bytes.as_slice();
    while let Some(rest) = secret.strip_suffix(b"\n") {
        secret = rest.strip_suffix(b"\r").unwrap_or(rest);
    }
    if secret.len() < 16 {
        return Err(format!(
            "{}: an HS256 secret of {} bytes is too short (at least 16)",
            path.display(),
            secret.len()
        ));
    }
    Ok(Key::Hmac(ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        secret,
    )))
}

/// One DER element: (tag, contents, rest).
fn der(input: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    let bad = || "bad DER in the public key".to_string();
    let (&tag, rest) = input.split_first().ok_or_else(bad)?;
    let (&first, mut rest) = rest.split_first().ok_or_else(bad)?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 3 || rest.len() < n {
            return Err(bad());
        }
        let len = rest[..n].iter().fold(0usize, |a, b| (a << 8) | *b as usize);
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return Err(bad());
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

/// SubjectPublicKeyInfo ::= SEQUENCE { SEQUENCE { OID, params }, BIT STRING }.
fn spki(input: &[u8]) -> Result<Key, String> {
    let (tag, spki, _) = der(input)?;
    let (tag2, alg, rest) = der(spki)?;
    let (tag3, oid, params) = der(alg)?;
    let (tag4, bits, _) = der(rest)?;
    if tag != 0x30 || tag2 != 0x30 || tag3 != 0x06 || tag4 != 0x03 || bits.first() != Some(&0) {
        return Err("not a SubjectPublicKeyInfo".into());
    }
    let key = bits[1..].to_vec();
    if oid == OID_RSA {
        Ok(Key::RsaDer(key))
    } else if oid == OID_EC {
        match der(params) {
            Ok((0x06, curve, _)) if curve == OID_P256 => Ok(Key::P256(key)),
            _ => Err("an EC key must be on P-256 (ES256)".into()),
        }
    } else {
        Err("the public key is neither RSA nor EC P-256".into())
    }
}

fn b64(v: &Value, field: &str) -> Result<Vec<u8>, String> {
    let text = v
        .get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("a key without {field:?}"))?;
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|e| format!("{field:?}: {e}"))
}

/// `jwt_jwks_file`: `{"keys": [...]}` with `kty` `oct` (HS256), `RSA` or `EC` (`crv` P-256);
/// returns (kid, key) pairs. Keys of other types are skipped with a warning.
pub fn load_jwks(path: &Path) -> Result<Vec<(Option<String>, Key)>, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let json: Value =
        serde_json::from_slice(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    let keys = json
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{}: no \"keys\" array", path.display()))?;
    let mut out = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let kid = k.get("kid").and_then(Value::as_str).map(str::to_string);
        let key = match k.get("kty").and_then(Value::as_str) {
            Some("oct") => {
                b64(k, "k").map(|s| Key::Hmac(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &s)))
            }
            Some("RSA") => b64(k, "n").and_then(|n| Ok(Key::RsaParts { n, e: b64(k, "e")? })),
            Some("EC") if k.get("crv").and_then(Value::as_str) == Some("P-256") => b64(k, "x")
                .and_then(|x| {
                    let y = b64(k, "y")?;
                    if x.len() != 32 || y.len() != 32 {
                        return Err("x and y must be 32 bytes".into());
                    }
                    Ok(Key::P256([&[4u8][..], &x, &y].concat()))
                }),
            other => Err(format!("unsupported kty {other:?}")),
        };
        match key {
            Ok(key) => out.push((kid, key)),
            Err(e) => log::warn!("plugin jwt: {}: key {i} skipped: {e}", path.display()),
        }
    }
    if out.is_empty() {
        return Err(format!("{}: no usable key", path.display()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_and_spki_errors() {
        assert!(der(&[0x30]).is_err());
        assert!(der(&[0x30, 0x05, 0x01]).is_err());
        assert_eq!(
            der(&[0x02, 0x01, 0x07, 0xff]).unwrap(),
            (0x02, &[7u8][..], &[0xffu8][..])
        );
        assert!(spki(&[0x30, 0x00]).is_err());
    }

    #[test]
    fn secret_files_and_jwks() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "abc\n").unwrap();
        assert!(load_key_file(&short).unwrap_err().contains("too short"));
        let ok = dir.path().join("ok");
        std::fs::write(&ok, "0123456789abcdef0123\n").unwrap();
        assert_eq!(load_key_file(&ok).unwrap().alg(), "HS256");
        let jwks = dir.path().join("jwks.json");
        std::fs::write(
            &jwks,
            r#"{"keys":[{"kty":"oct","kid":"a","k":"MDEyMzQ1Njc4OWFiY2RlZg"},{"kty":"OKP"}]}"#,
        )
        .unwrap();
        let keys = load_jwks(&jwks).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].0.as_deref(), Some("a"));
        std::fs::write(&jwks, "{}").unwrap();
        assert!(load_jwks(&jwks).unwrap_err().contains("keys"));
    }
}
