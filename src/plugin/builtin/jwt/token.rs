//! Checking one compact JWT (`HEADER.PAYLOAD.SIGNATURE`, base64url): the signature under the
//! key its `alg` and `kid` name, then `exp`, `nbf`, `aud` and `iss`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

use super::keys::Key;

/// What a token must satisfy besides its signature.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub leeway: u64,
    pub audience: Option<String>,
    pub issuer: Option<String>,
}

/// Tokens longer than this are refused before any decoding (a CONNECT password may be 64 KiB).
const MAX_TOKEN: usize = 16 * 1024;

fn part(text: &str, what: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| format!("the {what} is not base64url"))
}

/// Verifies `token` against `keys` (pairs of optional kid and key) at `now` (Unix seconds);
/// returns the claims or why not.
pub fn verify(
    token: &str,
    keys: &[(Option<String>, Key)],
    rules: &Rules,
    now: u64,
) -> Result<Map<String, Value>, String> {
    if token.len() > MAX_TOKEN {
        return Err("token too long".into());
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a JWT (three dot-separated parts)".into());
    };
    let header: Value = serde_json::from_slice(&part(h, "header")?)
        .map_err(|_| "the header is not JSON".to_string())?;
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("none");
    let kid = header.get("kid").and_then(Value::as_str);
    let key = match kid {
        Some(kid) => keys
            .iter()
            .find(|(k, key)| k.as_deref() == Some(kid) && key.alg() == alg),
        None => keys.iter().find(|(_, key)| key.alg() == alg),
    }
    .map(|(_, key)| key)
    .ok_or_else(|| match kid {
        Some(kid) => format!("no {alg} key with kid {kid:?}"),
        None => format!("no key for alg {alg:?}"),
    })?;
    let signature = part(s, "signature")?;
    let signed = &token[..h.len() + 1 + p.len()];
    if !key.verify(signed.as_bytes(), &signature) {
        return Err("bad signature".into());
    }
    let claims = match serde_json::from_slice(&part(p, "payload")?) {
        Ok(Value::Object(map)) => map,
        _ => return Err("the payload is not a JSON object".into()),
    };
    let time = |name: &str| -> Result<Option<u64>, String> {
        match claims.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|t| *t >= 0.0)
                .map(|t| Some(t as u64))
                .ok_or_else(|| format!("{name} is not a number")),
        }
    };
    if let Some(exp) = time("exp")? {
        if now >= exp.saturating_add(rules.leeway) {
            return Err(format!("expired ({}s ago)", now - exp));
        }
    }
    if let Some(nbf) = time("nbf")? {
        if now.saturating_add(rules.leeway) < nbf {
            return Err(format!("not valid before {nbf} (now {now})"));
        }
    }
    if let Some(want) = &rules.audience {
        let ok = match claims.get("aud") {
            Some(Value::String(a)) => a == want,
            Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(want)),
            _ => false,
        };
        if !ok {
            return Err(format!("audience is not {want:?}"));
        }
    }
    if let Some(want) = &rules.issuer {
        if claims.get("iss").and_then(Value::as_str) != Some(want.as_str()) {
            return Err(format!("issuer is not {want:?}"));
        }
    }
    Ok(claims)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use serde_json::json;

    pub const SECRET: &[u8] = b"a test secret of enough bytes";

    pub fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn hs256(claims: &Value) -> String {
        let msg = format!(
            "{}.{}",
            b64(br#"{"alg":"HS256","typ":"JWT"}"#),
            b64(claims.to_string().as_bytes())
        );
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET);
        format!(
            "{msg}.{}",
            b64(ring::hmac::sign(&key, msg.as_bytes()).as_ref())
        )
    }

    fn hmac_keys() -> Vec<(Option<String>, Key)> {
        vec![(
            None,
            Key::Hmac(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET)),
        )]
    }

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn times_audience_issuer() {
        let keys = hmac_keys();
        let rules = Rules {
            leeway: 5,
            audience: Some("mqtt".into()),
            issuer: Some("me".into()),
        };
        let ok = json!({"sub":"alice","exp":NOW+60,"nbf":NOW-60,"aud":["x","mqtt"],"iss":"me"});
        assert_eq!(
            verify(&hs256(&ok), &keys, &rules, NOW).unwrap()["sub"],
            "alice"
        );
        let mut c = ok.clone();
        c["exp"] = json!(NOW - 10);
        assert!(verify(&hs256(&c), &keys, &rules, NOW)
            .unwrap_err()
            .contains("expired"));
        c["exp"] = json!(NOW - 3); // within the leeway
        assert!(verify(&hs256(&c), &keys, &rules, NOW).is_ok());
        let mut c = ok.clone();
        c["nbf"] = json!(NOW + 60);
        assert!(verify(&hs256(&c), &keys, &rules, NOW)
            .unwrap_err()
            .contains("not valid before"));
        let mut c = ok.clone();
        c["aud"] = json!("other");
        assert!(verify(&hs256(&c), &keys, &rules, NOW)
            .unwrap_err()
            .contains("audience"));
        let mut c = ok.clone();
        c["iss"] = json!("them");
        assert!(verify(&hs256(&c), &keys, &rules, NOW)
            .unwrap_err()
            .contains("issuer"));
    }

    #[test]
    fn signatures_and_garbage() {
        let keys = hmac_keys();
        let rules = Rules::default();
        let t = hs256(&json!({"sub":"a"}));
        let (signed, sig) = t.rsplit_once('.').unwrap();
        let mut bad = URL_SAFE_NO_PAD.decode(sig).unwrap();
        bad[0] ^= 1;
        let forged = format!("{signed}.{}", b64(&bad));
        assert_eq!(
            verify(&forged, &keys, &rules, NOW).unwrap_err(),
            "bad signature"
        );
        // alg none, or an alg the key is not for, finds no key.
        let none = format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(br#"{"sub":"a"}"#));
        assert!(verify(&none, &keys, &rules, NOW)
            .unwrap_err()
            .contains("no key"));
        for junk in ["", "a.b", "a.b.c.d", "!!.b.c", &"x".repeat(20_000)] {
            assert!(verify(junk, &keys, &rules, NOW).is_err(), "{junk:.20}");
        }
    }

    #[test]
    fn es256_by_kid_and_the_cost_of_a_verification() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let msg = format!(
            "{}.{}",
            b64(br#"{"alg":"ES256","kid":"k2"}"#),
            b64(br#"{"sub":"a"}"#)
        );
        let sig = pair.sign(&rng, msg.as_bytes()).unwrap();
        let token = format!("{msg}.{}", b64(sig.as_ref()));
        let mut keys = hmac_keys();
        keys.push((Some("k1".into()), Key::P256(vec![4; 65])));
        keys.push((
            Some("k2".into()),
            Key::P256(pair.public_key().as_ref().to_vec()),
        ));
        let rules = Rules::default();
        assert!(verify(&token, &keys, &rules, NOW).is_ok());
        let hs = hs256(&json!({"sub":"a","exp":NOW+60}));
        // The number docs/PLUGINS.md quotes (debug build: an upper bound).
        for (name, t) in [("ES256", &token), ("HS256", &hs)] {
            let n = 200;
            let start = std::time::Instant::now();
            for _ in 0..n {
                assert!(verify(t, &keys, &rules, NOW).is_ok());
            }
            println!("{name}: {:?} per verification", start.elapsed() / n);
        }
    }
}
