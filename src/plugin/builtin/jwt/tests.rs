//! The JWT plugin's hooks called directly (HS256 tokens signed here; RS256 and ES256 with real
//! clients are in tests/jwt_auth.rs).

use serde_json::json;

use super::token::tests::{hs256, SECRET};
use super::*;
use crate::protocol::ProtocolVersion;

fn plugin(extra: &[(&str, &str)]) -> (tempfile::TempDir, Arc<dyn Plugin>) {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("secret");
    std::fs::write(&key, SECRET).unwrap();
    let mut o: PluginOptions = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    o.insert("jwt_key_file".into(), key.display().to_string());
    let p = new(&o).unwrap();
    p.configure(&o).unwrap();
    (dir, p)
}

fn client(id: &str) -> ClientInfo<'_> {
    ClientInfo {
        client_id: id,
        username: None,
        protocol: ProtocolVersion::V311,
        peer: None,
        listener_port: 1883,
        certificate_identity: None,
    }
}

/// Basic auth, then (allowed) the connect hook, as the broker calls them.
fn auth(s: &mut dyn ShardPlugin, id: &str, user: Option<&str>, token: &str) -> Decision {
    let creds = Credentials {
        username: user,
        password: Some(token.as_bytes()),
    };
    let d = s.basic_auth(&client(id), &creds, Later::detached());
    if d == Decision::Allow {
        s.connect(&client(id));
    }
    d
}

fn now() -> u64 {
    unix_now()
}

#[test]
fn options() {
    let e = JwtConfig::parse(&PluginOptions::new()).unwrap_err();
    assert!(e.contains("jwt_key_file"), "{e}");
    let mut o = PluginOptions::new();
    o.insert("jwt_key_file".into(), "/nonexistent/key".into());
    assert!(JwtConfig::parse(&o)
        .unwrap_err()
        .contains("/nonexistent/key"));
    let (_d, p) = plugin(&[]);
    let mut o = PluginOptions::new();
    o.insert("jwt_leeway".into(), "5".into());
    assert!(p
        .configure(&o)
        .unwrap_err()
        .contains("unknown option jwt_leeway"));
}

#[test]
fn allow_deny_pass_and_the_user_name() {
    let (_d, p) = plugin(&[("jwt_audience", "mqtt")]);
    let mut s = p.shard(0, 1);
    let good = hs256(&json!({"sub":"alice","aud":"mqtt","exp":now()+60}));
    assert_eq!(auth(&mut *s, "c", Some("alice"), &good), Decision::Allow);
    assert_eq!(auth(&mut *s, "c", None, &good), Decision::Allow);
    assert_eq!(
        auth(&mut *s, "c", Some("bob"), &good),
        Decision::Deny,
        "another user's token"
    );
    let expired = hs256(&json!({"sub":"alice","aud":"mqtt","exp":now()-60}));
    assert_eq!(auth(&mut *s, "c", None, &expired), Decision::Deny);
    let wrong_aud = hs256(&json!({"sub":"alice","aud":"web","exp":now()+60}));
    assert_eq!(auth(&mut *s, "c", None, &wrong_aud), Decision::Deny);
    assert_eq!(auth(&mut *s, "c", None, "a plain password"), Decision::Deny);
    let none = Credentials {
        username: Some("alice"),
        password: None,
    };
    assert_eq!(
        s.basic_auth(&client("c"), &none, Later::detached()),
        Decision::Pass
    );
    // No ACL claim configured: the ACL is not this plugin's.
    assert!(!s.events().contains(Events::ACL_CHECK));
}

#[test]
fn token_in_the_user_name() {
    let (_d, p) = plugin(&[("jwt_from", "username")]);
    let mut s = p.shard(0, 1);
    let good = hs256(&json!({"sub":"alice"}));
    let creds = Credentials {
        username: Some(&good),
        password: None,
    };
    assert_eq!(
        s.basic_auth(&client("c"), &creds, Later::detached()),
        Decision::Allow
    );
}

#[test]
fn acl_claims() {
    let (_d, p) = plugin(&[("jwt_acl_claim", "acl")]);
    let mut s = p.shard(0, 1);
    assert!(s.events().contains(Events::ACL_CHECK));
    let t = hs256(&json!({"sub":"a","acl":{"pub":["up/+/data"],"sub":["down/#"]}}));
    assert_eq!(auth(&mut *s, "c1", None, &t), Decision::Allow);
    let c1 = client("c1");
    assert_eq!(
        s.acl_check(&c1, "up/7/data", Access::Write),
        Decision::Allow
    );
    assert_eq!(
        s.acl_check(&c1, "up/7/other", Access::Write),
        Decision::Deny
    );
    assert_eq!(s.acl_check(&c1, "down/x", Access::Write), Decision::Deny);
    assert_eq!(s.acl_check(&c1, "down/x", Access::Read), Decision::Allow);
    assert_eq!(
        s.acl_check(&c1, "down/#", Access::Subscribe),
        Decision::Allow
    );
    assert_eq!(s.acl_check(&c1, "up/7/data", Access::Read), Decision::Deny);
    assert_eq!(s.acl_check(&c1, "up/#", Access::Subscribe), Decision::Deny);
    // Another client, or one whose token has no claim: not decided here.
    assert_eq!(
        s.acl_check(&client("c2"), "x", Access::Write),
        Decision::Pass
    );
    let plain = hs256(&json!({"sub":"b"}));
    assert_eq!(auth(&mut *s, "c2", None, &plain), Decision::Allow);
    assert_eq!(
        s.acl_check(&client("c2"), "x", Access::Write),
        Decision::Pass
    );
    // An empty claim grants nothing.
    let empty = hs256(&json!({"sub":"a","acl":{}}));
    assert_eq!(auth(&mut *s, "c3", None, &empty), Decision::Allow);
    assert_eq!(
        s.acl_check(&client("c3"), "x", Access::Write),
        Decision::Deny
    );
    // A bad claim refuses the token.
    let bad = hs256(&json!({"sub":"a","acl":{"pub":"x"}}));
    assert_eq!(auth(&mut *s, "c4", None, &bad), Decision::Deny);
    let bad = hs256(&json!({"sub":"a","acl":{"pub":["a/#/b"]}}));
    assert_eq!(auth(&mut *s, "c4", None, &bad), Decision::Deny);
    // Authenticated on one shard, connected on another (the client id's home shard).
    let mut home = p.shard(1, 2);
    let creds = Credentials {
        username: None,
        password: Some(t.as_bytes()),
    };
    assert_eq!(
        s.basic_auth(&client("c9"), &creds, Later::detached()),
        Decision::Allow
    );
    home.connect(&client("c9"));
    assert_eq!(
        home.acl_check(&client("c9"), "up/7/other", Access::Write),
        Decision::Deny
    );
    assert_eq!(
        home.acl_check(&client("c9"), "up/7/data", Access::Write),
        Decision::Allow
    );
    // The session's end forgets it.
    s.session_end("c1", SessionEnd::Closed);
    assert_eq!(
        s.acl_check(&c1, "up/7/other", Access::Write),
        Decision::Pass
    );
}
