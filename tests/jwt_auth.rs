//! `plugin builtin:jwt` (issue 17) with real clients (mosquitto_pub, paho-mqtt 5 through
//! tests/py/v5_client.py): keys made by `openssl` here, tokens signed here (ring, which midge
//! already depends on): HS256, RS256 (PEM key file) and ES256 (JWKS, chosen by kid); expired,
//! not yet valid, wrong signature, wrong audience; the ACL claim on publish, subscribe and
//! receive.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::clients::Paho;
use common::{run, Broker, STEP};
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
};
use serde_json::{json, Value};

const SECRET: &str = "a shared secret for HS256 tokens";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn openssl(args: &[&str]) {
    let out = run(Command::new("openssl").args(args), Duration::from_secs(60));
    assert!(out.success(), "openssl {args:?}: {out:?}");
}

enum Signer {
    Hs(ring::hmac::Key),
    Rs(RsaKeyPair),
    Es(EcdsaKeyPair),
}

impl Signer {
    fn token(&self, kid: Option<&str>, claims: &Value) -> String {
        let alg = match self {
            Signer::Hs(_) => "HS256",
            Signer::Rs(_) => "RS256",
            Signer::Es(_) => "ES256",
        };
        let mut header = json!({"alg": alg, "typ": "JWT"});
        if let Some(kid) = kid {
            header["kid"] = json!(kid);
        }
        let msg = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let rng = SystemRandom::new();
        let sig = match self {
            Signer::Hs(k) => ring::hmac::sign(k, msg.as_bytes()).as_ref().to_vec(),
            Signer::Rs(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &rng, msg.as_bytes(), &mut sig)
                    .unwrap();
                sig
            }
            Signer::Es(k) => k.sign(&rng, msg.as_bytes()).unwrap().as_ref().to_vec(),
        };
        format!("{msg}.{}", b64(&sig))
    }
}

/// Keys made by openssl in `dir`: (HS256 signer, secret file), (RS256 signer, PEM public key),
/// (ES256 signer, its JWKS with kid "ec1" beside a decoy).
struct Keys {
    hs: Signer,
    rs: Signer,
    es: Signer,
    dir: tempfile::TempDir,
}

fn pkcs8(dir: &Path, name: &str, genpkey: &[&str]) -> Vec<u8> {
    let pem = dir.join(format!("{name}.pem"));
    let der = dir.join(format!("{name}.p8"));
    let publ = dir.join(format!("{name}.pub"));
    let mut args = vec!["genpkey", "-out", pem.to_str().unwrap()];
    args.extend_from_slice(genpkey);
    openssl(&args);
    openssl(&[
        "pkcs8",
        "-topk8",
        "-nocrypt",
        "-in",
        pem.to_str().unwrap(),
        "-outform",
        "DER",
        "-out",
        der.to_str().unwrap(),
    ]);
    openssl(&[
        "pkey",
        "-in",
        pem.to_str().unwrap(),
        "-pubout",
        "-out",
        publ.to_str().unwrap(),
    ]);
    std::fs::read(der).unwrap()
}

fn keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("secret"), format!("{SECRET}\n")).unwrap();
    let rsa = pkcs8(
        d,
        "rsa",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let ec = pkcs8(
        d,
        "ec",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let rng = SystemRandom::new();
    let es = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &ec, &rng).unwrap();
    let point = ring::signature::KeyPair::public_key(&es).as_ref().to_vec();
    let jwk = |kid: &str, p: &[u8]| json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(&p[1..33]), "y": b64(&p[33..65])});
    let mut decoy = point.clone();
    decoy[40] ^= 1;
    let jwks = json!({"keys": [jwk("decoy", &decoy), jwk("ec1", &point)]});
    std::fs::write(d.join("jwks.json"), jwks.to_string()).unwrap();
    Keys {
        hs: Signer::Hs(ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            SECRET.as_bytes(),
        )),
        rs: Signer::Rs(RsaKeyPair::from_pkcs8(&rsa).unwrap()),
        es: Signer::Es(es),
        dir,
    }
}

impl Keys {
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn broker(&self, options: &[String]) -> Broker {
        let mut lines = vec![
            "allow_anonymous false".to_string(),
            "plugin builtin:jwt".into(),
        ];
        lines.extend(options.iter().map(|o| format!("plugin_opt_{o}")));
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        Broker::start_with(&lines)
    }
}

fn login(port: u16, user: &str, token: &str) -> bool {
    let out = run(
        Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
            .args(["-u", user, "-P", token, "-t", "t", "-m", "x"]),
        Duration::from_secs(15),
    );
    out.success()
}

#[test]
fn hs256_and_rs256_key_files_times_signature_audience() {
    if !common::is_midge() {
        return; // builtin plugins are midge's own
    }
    let k = keys();
    let claims = |exp: i64, nbf: i64, aud: &str| json!({"sub": "alice", "aud": aud, "exp": now() as i64 + exp, "nbf": now() as i64 + nbf});
    for (signer, file) in [(&k.hs, "secret"), (&k.rs, "rsa.pub")] {
        let b = k.broker(&[
            format!("jwt_key_file {}", k.path(file)),
            "jwt_audience mqtt".into(),
            "jwt_leeway_seconds 5".into(),
        ]);
        let p = b.port();
        let good = signer.token(None, &claims(60, -60, "mqtt"));
        assert!(login(p, "alice", &good), "{file}: a valid token");
        assert!(!login(p, "bob", &good), "{file}: another user's token");
        assert!(
            !login(p, "alice", &signer.token(None, &claims(-60, -120, "mqtt"))),
            "expired"
        );
        assert!(
            login(p, "alice", &signer.token(None, &claims(-2, -120, "mqtt"))),
            "leeway"
        );
        assert!(
            !login(p, "alice", &signer.token(None, &claims(600, 300, "mqtt"))),
            "not yet valid"
        );
        assert!(
            !login(p, "alice", &signer.token(None, &claims(60, -60, "web"))),
            "audience"
        );
        let (head, sig) = good.rsplit_once('.').unwrap();
        let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        sig[5] ^= 0x40;
        assert!(
            !login(p, "alice", &format!("{head}.{}", b64(&sig))),
            "wrong signature"
        );
        assert!(!login(p, "alice", "not a token"));
        // The other algorithm's token (alg confusion) finds no key.
        let other = if file == "secret" { &k.rs } else { &k.hs };
        assert!(!login(
            p,
            "alice",
            &other.token(None, &claims(60, -60, "mqtt"))
        ));
        assert!(
            b.wait_log_contains_any(&["token refused: expired"], STEP),
            "{}",
            b.log()
        );
        assert!(!b.log().contains(&good), "the token is never logged");
    }
}

fn paho(port: u16, steps: Value) -> Paho {
    Paho::spawn("v5_client.py", port, &["--steps", &steps.to_string()])
}

#[test]
fn es256_from_a_jwks_with_acl_claims() {
    if !common::is_midge() {
        return; // builtin plugins are midge's own
    }
    let k = keys();
    let b = k.broker(&[
        format!("jwt_jwks_file {}", k.path("jwks.json")),
        "jwt_issuer https://issuer.test".into(),
        "jwt_acl_claim acl".into(),
    ]);
    let p = b.port();
    let claims = |sub: &str, acl: Value| json!({"sub": sub, "iss": "https://issuer.test", "exp": now() + 60, "acl": acl});
    let reader = k.es.token(
        Some("ec1"),
        &claims("reader", json!({"sub": ["data/+/ok"]})),
    );
    let writer =
        k.es.token(Some("ec1"), &claims("writer", json!({"pub": ["data/#"]})));
    assert!(
        !login(p, "x", &k.es.token(Some("decoy"), &claims("x", json!({})))),
        "wrong kid's key"
    );
    assert!(
        !login(p, "x", &k.es.token(Some("nope"), &claims("x", json!({})))),
        "unknown kid"
    );
    let mut wrong_iss = claims("x", json!({}));
    wrong_iss["iss"] = json!("elsewhere");
    assert!(
        !login(p, "x", &k.es.token(Some("ec1"), &wrong_iss)),
        "issuer"
    );

    let mut r = paho(
        p,
        json!([
            {"op": "connect", "id": "r", "username": "reader", "password": reader},
            {"op": "subscribe", "subs": [{"topic": "data/#", "qos": 1}, {"topic": "other/#", "qos": 1}]},
            {"op": "publish", "topic": "data/1/ok", "payload": "own", "qos": 1},
            {"op": "messages", "count": 1, "timeout": 10},
            {"op": "sleep", "secs": 0.5},
            {"op": "disconnect"}
        ]),
    );
    assert_eq!(r.expect_event("connack")["rc"], 0);
    // data/# overlaps the claim's data/+/ok (granted; each message is checked); other/# not.
    assert_eq!(r.expect_event("suback")["codes"], json!([1, 135]));
    assert_eq!(
        r.expect_event("published")["rc"],
        135,
        "no pub claim: refused"
    );
    let mut w = paho(
        p,
        json!([
            {"op": "connect", "id": "w", "username": "writer", "password": writer},
            {"op": "publish", "topic": "data/1/secret", "payload": "hidden", "qos": 1},
            {"op": "publish", "topic": "data/1/ok", "payload": "seen", "qos": 1},
            {"op": "publish", "topic": "elsewhere", "payload": "x", "qos": 1},
            {"op": "subscribe", "subs": [{"topic": "data/#", "qos": 1}]},
            {"op": "disconnect"}
        ]),
    );
    assert_eq!(w.expect_event("connack")["rc"], 0);
    let rc = w.expect_event("published")["rc"].as_u64();
    assert!(matches!(rc, Some(0 | 16)), "inside the pub claim: {rc:?}");
    assert_eq!(w.expect_event("published")["rc"], 0);
    assert_eq!(
        w.expect_event("published")["rc"],
        135,
        "outside the pub claim"
    );
    assert_eq!(
        w.expect_event("suback")["codes"],
        json!([135]),
        "no sub claim"
    );
    w.finish(STEP);
    let got = r.messages(1, STEP);
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].topic.as_str(), got[0].payload.as_str()),
        ("data/1/ok", "seen")
    );
    r.finish(STEP);
}

/// What one verification costs on a shard (the plugin's basic_auth called in-process, as the
/// shard calls it). Run with `cargo test --release --test jwt_auth cost -- --nocapture` for
/// the numbers in docs/PLUGINS.md; the assertion only catches a pathological slowdown.
#[test]
fn cost_of_a_verification_on_the_shard() {
    if !common::is_midge() {
        return; // builtin plugins are midge's own
    }
    use midge::plugin::{ClientInfo, Credentials, Decision, Later};
    let k = keys();
    let claims = json!({"sub": "alice", "exp": now() + 600});
    let cases = [
        (
            "HS256",
            &k.hs,
            None,
            format!("jwt_key_file {}", k.path("secret")),
        ),
        (
            "RS256",
            &k.rs,
            None,
            format!("jwt_key_file {}", k.path("rsa.pub")),
        ),
        (
            "ES256",
            &k.es,
            Some("ec1"),
            format!("jwt_jwks_file {}", k.path("jwks.json")),
        ),
    ];
    for (name, signer, kid, option) in cases {
        let (key, value) = option.split_once(' ').unwrap();
        let options = [(key.to_string(), value.to_string())].into_iter().collect();
        let plugin = midge::plugin::builtin::jwt::new(&options).unwrap();
        plugin.configure(&options).unwrap();
        let mut shard = plugin.shard(0, 1);
        let token = signer.token(kid, &claims);
        let client = ClientInfo {
            client_id: "c",
            username: None,
            protocol: midge::protocol::ProtocolVersion::V5,
            peer: None,
            listener_port: 1883,
            certificate_identity: None,
        };
        let creds = Credentials {
            username: Some("alice"),
            password: Some(token.as_bytes()),
        };
        let n = 300;
        let start = std::time::Instant::now();
        for _ in 0..n {
            assert_eq!(
                shard.basic_auth(&client, &creds, Later::detached()),
                Decision::Allow
            );
        }
        let each = start.elapsed() / n;
        println!("{name}: {each:?} per CONNECT verification");
        assert!(each < Duration::from_millis(20), "{name}: {each:?}");
    }
}

/// A bad option of either plugin stops `midge check` (and start-up) naming the line.
#[test]
fn bad_options_name_their_line() {
    if !common::is_midge() {
        return; // builtin plugins are midge's own
    }
    let dir = tempfile::tempdir().unwrap();
    for (text, want) in [
        (
            "plugin builtin:http\nplugin_opt_http_auth_url http://127.0.0.1:1/\nplugin_opt_http_timeout_ms soon\n",
            ":1: plugin builtin:http: http_timeout_ms \"soon\"",
        ),
        (
            "plugin builtin:http\nplugin_opt_http_auth_url ftp://x/\n",
            ":1: plugin builtin:http: \"ftp://x/\": the URL must start with http:// or https://",
        ),
        (
            "plugin builtin:jwt\nplugin_opt_jwt_key_file /nonexistent/key\n",
            ":1: plugin builtin:jwt: jwt_key_file /nonexistent/key",
        ),
        (
            "plugin builtin:jwt\nplugin_opt_jwt_aud x\n",
            ":1: plugin builtin:jwt: unknown option jwt_aud",
        ),
    ] {
        let path = dir.path().join("bad.conf");
        std::fs::write(&path, text).unwrap();
        let out = run(
            Command::new(env!("CARGO_BIN_EXE_midge"))
                .args(["check", "--config"])
                .arg(&path),
            STEP,
        );
        assert!(!out.success(), "{text:?} passed the check");
        assert!(
            out.stderr.contains(&format!("{}{want}", path.display())),
            "{text:?}: {}",
            out.stderr
        );
    }
}
