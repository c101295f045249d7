//! MQTT 5 enhanced authentication (§4.12) with SCRAM-SHA-256/-512 (`builtin:scram`, on by
//! default with a password file), against real clients:
//! - tests/py/scram_client.py: a raw MQTT 5 client whose SCRAM side is Python's
//!   hashlib/hmac written from RFC 5802 (paho-mqtt 2.x sends an Authentication Method but
//!   cannot answer an AUTH packet, so it cannot do SCRAM);
//! - paho-mqtt 2.x (tests/py/v5_client.py) for an unknown method and for basic auth;
//! - midge's own raw V5 client (tests/common/v5.rs) for the protocol errors;
//! - an in-process broker with a Rust plugin whose method never ends, for the step bound.
//!
//! The password file is written by `midge passwd -S`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::auth_files::AuthFiles;
use common::clients::py_script;
use common::v5::{auth_packet, connect, paho, rc, V5};
use common::{run, unique_id, STEP};
use midge::plugin::{
    AuthStep, ClientInfo, Events, ExtendedAuth, Later, Plugin, PluginOptions, ShardPlugin,
};
use midge::protocol::Packet;
use serde_json::{json, Value};

/// alice (SCRAM-SHA-256), bob (SCRAM-SHA-512, 10 iterations), carol (a mosquitto `$7$`
/// hash), written by `midge passwd`; anyone may do anything once in.
fn files() -> AuthFiles {
    let f = AuthFiles::new(&[], "topic readwrite #\n");
    let pw = f.path("passwd");
    f.passwd(&["-c", "-b", "-S", "sha256", &pw, "alice", "secret"]);
    f.passwd(&["-b", "-S", "sha512", "-I", "10", &pw, "bob", "builder"]);
    f.passwd(&["-b", &pw, "carol", "plain"]);
    let text = std::fs::read_to_string(&pw).unwrap();
    assert!(text.contains("alice:$scram-sha-256$4096$"), "{text}");
    assert!(text.contains("bob:$scram-sha-512$10$"), "{text}");
    f
}

/// SCRAM is midge's (mosquitto 2.0 has enhanced authentication only through a plugin of
/// its own): under `MIDGE_TEST_BROKER=mosquitto` these tests have nothing to run against.
fn skip() -> bool {
    !common::is_midge()
}

/// Runs a scenario of scram_client.py; its result object.
fn scram(port: u16, scenario: &str, args: &[&str]) -> Value {
    let out = run(
        std::process::Command::new("python3")
            .arg(py_script("scram_client.py"))
            .args(["--port", &port.to_string(), "--scenario", scenario])
            .args(args),
        Duration::from_secs(30),
    );
    let stdout = out.stdout.clone();
    let last = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| v.get("result").cloned());
    match last {
        Some(r) => r,
        None => panic!("scram_client.py {scenario}: no result: {out:?}"),
    }
}

#[test]
fn right_password_connects_and_the_server_proves_itself() {
    if skip() {
        return;
    }
    let f = files();
    let b = f.broker(false, &[]);
    let r = scram(
        b.port(),
        "connect",
        &["--user", "alice", "--password", "secret"],
    );
    assert_eq!(r["connack"], 0, "{r}");
    assert_eq!(
        r["server_ok"], true,
        "server-final v= is the genuine one: {r}"
    );
    assert_eq!(r["method"], "SCRAM-SHA-256", "[MQTT-4.12.0-5]: {r}");
    assert_eq!(r["ping"], true, "{r}");
    let r = scram(
        b.port(),
        "connect",
        &[
            "--user",
            "bob",
            "--password",
            "builder",
            "--mech",
            "SCRAM-SHA-512",
        ],
    );
    assert_eq!(
        (r["connack"].clone(), r["server_ok"].clone()),
        (json!(0), json!(true)),
        "{r}"
    );
    // CONNECT's user name, when given, must be the SCRAM user (the ACL knows it by that).
    let r = scram(b.port(), "connect", &["--connect-user", "alice"]);
    assert_eq!(r["connack"], 0, "{r}");
    let r = scram(b.port(), "connect", &["--connect-user", "bob"]);
    assert_eq!(r["connack"], rc::NOT_AUTHORIZED, "{r}");
}

#[test]
fn a_scram_client_without_a_connect_user_name_is_known_by_the_one_it_proved() {
    if skip() {
        return;
    }
    // Only alice may use alice/#; an anonymous client may use nothing.
    let f = AuthFiles::new(&[], "user alice\ntopic readwrite alice/#\n");
    let pw = f.path("passwd");
    f.passwd(&["-c", "-b", "-S", "sha256", &pw, "alice", "secret"]);
    let b = f.broker(false, &[]);
    let r = scram(b.port(), "connect", &["--subscribe", "alice/t"]);
    assert_eq!(r["connack"], 0, "{r}");
    assert_eq!(r["suback"], 1, "alice's ACL applies (granted QoS 1): {r}");
    let r = scram(b.port(), "connect", &["--subscribe", "other/t"]);
    assert_eq!(r["suback"], 0x87, "and only alice's: {r}");
}

#[test]
fn wrong_password_unknown_user_and_wrong_hash_get_0x87() {
    if skip() {
        return;
    }
    let f = files();
    let b = f.broker(false, &[]);
    for (args, what) in [
        (&["--password", "Secret"][..], "wrong password"),
        (&["--user", "mallory"][..], "unknown user"),
        (
            &["--user", "carol", "--password", "plain"][..],
            "no verifier",
        ),
        (&["--mech", "SCRAM-SHA-512"][..], "a -256 verifier"),
    ] {
        let r = scram(b.port(), "connect", args);
        assert_eq!(r["connack"], rc::NOT_AUTHORIZED, "{what}: {r}");
    }
    assert!(b.wait_log_contains_any(&["refused: invalid-proof"], STEP));
}

#[test]
fn a_captured_exchange_cannot_be_replayed() {
    if skip() {
        return;
    }
    let f = files();
    let b = f.broker(false, &[]);
    let r = scram(b.port(), "replay", &[]);
    assert_eq!(r["first"], 0, "{r}");
    assert_eq!(
        r["replayed"],
        rc::NOT_AUTHORIZED,
        "new server nonce, old proof: {r}"
    );
}

#[test]
fn re_authentication_succeeds_and_its_failure_disconnects_0x87() {
    if skip() {
        return;
    }
    let f = files();
    let b = f.broker(false, &[]);
    let r = scram(b.port(), "reauth", &[]);
    assert_eq!(r["connack"], 0, "{r}");
    assert_eq!(r["auth_rc"], 0, "AUTH 0x00 Success: {r}");
    assert_eq!(r["server_ok"], true, "{r}");
    assert_eq!(r["method"], "SCRAM-SHA-256", "{r}");
    assert_eq!(r["ping"], true, "still connected: {r}");
    let r = scram(b.port(), "reauth", &["--password2", "nope"]);
    assert_eq!(r["connack"], 0, "{r}");
    assert_eq!(r["disconnect"], rc::NOT_AUTHORIZED, "[MQTT-4.12.1-2]: {r}");
    assert_eq!(r["closed"], true, "{r}");
}

#[test]
fn auth_in_the_wrong_state_is_a_protocol_error() {
    if skip() {
        return;
    }
    let f = files();
    let b = f.broker(true, &[]);
    // Before CONNACK only AUTH may follow: a PUBLISH closes without CONNACK.
    let r = scram(b.port(), "publish_in_exchange", &[]);
    assert_eq!(r["packets"], json!(["auth", "closed"]), "{r}");
    // AUTH 0x18 from a connected client with no exchange running.
    let r = scram(b.port(), "auth_continue_connected", &[]);
    assert_eq!(r["disconnect"], rc::PROTOCOL_ERROR, "{r}");
    // Re-authentication with another method than CONNECT's [MQTT-4.12.1-1].
    let r = scram(b.port(), "reauth_other_method", &[]);
    assert_eq!(r["disconnect"], rc::PROTOCOL_ERROR, "{r}");
    // AUTH from a client that connected without a method [MQTT-4.12.0-7].
    let mut v = V5::connected(b.port(), &unique_id("noauth"));
    v.send(&auth_packet(rc::RE_AUTHENTICATE, "SCRAM-SHA-256"));
    let d = v.expect_disconnect(STEP).expect("DISCONNECT");
    assert_eq!(d.reason, rc::PROTOCOL_ERROR, "{d:?}");
    // AUTH as the first packet.
    let mut v = V5::tcp(b.port());
    v.send(&auth_packet(rc::CONTINUE_AUTHENTICATION, "SCRAM-SHA-256"));
    v.until_closed(STEP);
}

#[test]
fn oversize_authentication_data_is_refused() {
    if skip() {
        return;
    }
    let f = files();
    let b = f.broker(false, &[]);
    let r = scram(b.port(), "oversize", &[]);
    assert_eq!(r["connack"], rc::NOT_AUTHORIZED, "{r}");
    assert!(b.wait_log_contains_any(&["authentication data longer than 8192 bytes"], STEP));
}

#[test]
fn unknown_method_gets_0x8c_from_paho_and_basic_auth_still_works() {
    if skip() {
        return;
    }
    let f = files();
    let b = f.broker(false, &[]);
    let mut p = paho(
        b.port(),
        json!([{"op": "connect", "id": unique_id("m"),
                "props": {"AuthenticationMethod": "GS2-KRB5"}}]),
    );
    let ack = p.expect_event("connack");
    assert_eq!(ack["rc"], rc::BAD_AUTHENTICATION_METHOD, "{ack}");
    // The SCRAM line verifies alice's plain password for basic auth too (paho's login).
    for (user, pw, want) in [
        ("alice", "secret", 0u8),
        ("alice", "wrong", rc::BAD_USER_NAME_OR_PASSWORD),
        ("bob", "builder", 0),
        ("carol", "plain", 0),
    ] {
        let mut p = paho(
            b.port(),
            json!([{"op": "connect", "id": unique_id("basic"),
                    "username": user, "password": pw}]),
        );
        let ack = p.expect_event("connack");
        assert_eq!(ack["rc"], want, "{user}/{pw}: {ack}");
    }
}

/// A method that never ends: every step asks for one more.
struct Endless;
struct EndlessShard;

impl Plugin for Endless {
    fn name(&self) -> &str {
        "endless"
    }
    fn configure(&self, _: &PluginOptions) -> Result<(), String> {
        Ok(())
    }
    fn shard(&self, _: usize, _: usize) -> Box<dyn ShardPlugin> {
        Box::new(EndlessShard)
    }
}

impl ShardPlugin for EndlessShard {
    fn events(&self) -> Events {
        Events::EXTENDED_AUTH
    }
    fn extended_auth(&mut self, _: &ClientInfo<'_>, step: &AuthStep<'_>, _: Later) -> ExtendedAuth {
        match step.method {
            "ENDLESS" => ExtendedAuth::Continue(Bytes::from_static(b"more")),
            _ => ExtendedAuth::Pass,
        }
    }
}

#[test]
fn an_exchange_is_bounded_in_steps() {
    if skip() {
        return;
    }
    let config = midge::config::Config::parse_str(
        "listener 0 127.0.0.1\nallow_anonymous true\nsys_interval 0\n",
        "enhanced-auth-test",
    )
    .unwrap();
    let broker =
        midge::broker::Broker::start_with_plugins(config, vec![Arc::new(Endless)]).unwrap();
    let port = broker.local_addrs()[0].port();
    let mut c = connect(&unique_id("endless"));
    c.properties.authentication_method = Some("ENDLESS".into());
    let mut v = V5::tcp(port);
    v.send(&Packet::Connect(c));
    let mut continues = 0;
    let code = loop {
        match v.next() {
            Packet::Auth(a) => {
                assert_eq!(a.reason, rc::CONTINUE_AUTHENTICATION);
                assert_eq!(
                    a.properties.authentication_method.as_deref(),
                    Some("ENDLESS")
                );
                continues += 1;
                v.send(&auth_packet(rc::CONTINUE_AUTHENTICATION, "ENDLESS"));
            }
            Packet::ConnAck(a) => break a.code,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(continues, 10, "ten steps, then the refusal");
    assert_eq!(code, rc::NOT_AUTHORIZED);
    broker.shutdown().unwrap();
}

/// A method whose every step is answered later, from another thread: `DEFER` continues once
/// then succeeds, `DEFER-NO` refuses.
struct Deferred;
struct DeferredShard;

impl Plugin for Deferred {
    fn name(&self) -> &str {
        "deferred"
    }
    fn configure(&self, _: &PluginOptions) -> Result<(), String> {
        Ok(())
    }
    fn shard(&self, _: usize, _: usize) -> Box<dyn ShardPlugin> {
        Box::new(DeferredShard)
    }
}

impl ShardPlugin for DeferredShard {
    fn events(&self) -> Events {
        Events::EXTENDED_AUTH
    }
    fn extended_auth(
        &mut self,
        _: &ClientInfo<'_>,
        step: &AuthStep<'_>,
        later: Later,
    ) -> ExtendedAuth {
        let answer = match (step.method, step.start, step.data) {
            ("DEFER", true, _) => ExtendedAuth::Continue(Bytes::from_static(b"challenge")),
            ("DEFER", false, Some(b"response")) => {
                ExtendedAuth::Success(Some(Bytes::from_static(b"welcome")))
            }
            ("DEFER" | "DEFER-NO", _, _) => ExtendedAuth::Deny,
            ("DEFER-DROP", _, _) => {
                // The handle dropped unanswered: a refusal.
                std::thread::spawn(move || drop(later));
                return ExtendedAuth::Later;
            }
            _ => return ExtendedAuth::Pass,
        };
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            later.answer_extended(answer);
        });
        ExtendedAuth::Later
    }
}

#[test]
fn deferred_steps_continue_and_succeed_through_the_inbox() {
    if skip() {
        return;
    }
    let config = midge::config::Config::parse_str(
        "listener 0 127.0.0.1\nallow_anonymous true\nsys_interval 0\n",
        "enhanced-auth-test",
    )
    .unwrap();
    let broker =
        midge::broker::Broker::start_with_plugins(config, vec![Arc::new(Deferred)]).unwrap();
    let port = broker.local_addrs()[0].port();
    let with_method = |method: &str| {
        let mut c = connect(&unique_id("defer"));
        c.properties.authentication_method = Some(method.into());
        c
    };
    let mut v = V5::tcp(port);
    v.send(&Packet::Connect(with_method("DEFER")));
    let Packet::Auth(a) = v.next() else {
        panic!("expected AUTH 0x18")
    };
    assert_eq!(a.reason, rc::CONTINUE_AUTHENTICATION);
    assert_eq!(
        a.properties.authentication_data.as_deref(),
        Some(&b"challenge"[..])
    );
    let mut reply = auth_packet(rc::CONTINUE_AUTHENTICATION, "DEFER");
    if let Packet::Auth(a) = &mut reply {
        a.properties.authentication_data = Some(Bytes::from_static(b"response"));
    }
    v.send(&reply);
    let Packet::ConnAck(ack) = v.next() else {
        panic!("expected CONNACK")
    };
    assert_eq!(ack.code, 0, "{ack:?}");
    assert_eq!(
        ack.properties.authentication_method.as_deref(),
        Some("DEFER")
    );
    assert_eq!(
        ack.properties.authentication_data.as_deref(),
        Some(&b"welcome"[..])
    );
    v.ping();
    let mut v = V5::tcp(port);
    v.send(&Packet::Connect(with_method("DEFER-NO")));
    let Packet::ConnAck(ack) = v.next() else {
        panic!("expected CONNACK")
    };
    assert_eq!(ack.code, rc::NOT_AUTHORIZED, "a deferred Deny: {ack:?}");
    let mut v = V5::tcp(port);
    v.send(&Packet::Connect(with_method("DEFER-DROP")));
    let Packet::ConnAck(ack) = v.next() else {
        panic!("expected CONNACK")
    };
    assert_eq!(ack.code, rc::NOT_AUTHORIZED, "a dropped handle: {ack:?}");
    broker.shutdown().unwrap();
}

#[test]
fn an_explicit_plugin_line_is_the_same_plugin() {
    if skip() {
        return;
    }
    let f = files();
    let b = f.broker(false, &["plugin builtin:scram"]);
    let r = scram(b.port(), "connect", &[]);
    assert_eq!(
        (r["connack"].clone(), r["server_ok"].clone()),
        (json!(0), json!(true)),
        "{r}"
    );
}

#[test]
fn a_client_that_stops_answering_is_closed_after_connect_timeout() {
    if skip() {
        return;
    }
    let f = files();
    let b = f.broker(false, &["connect_timeout 1"]);
    let mut c = connect(&unique_id("silent"));
    c.properties.authentication_method = Some("SCRAM-SHA-256".into());
    c.properties.authentication_data = Some(Bytes::from_static(b"n,,n=alice,r=abc"));
    let mut v = V5::tcp(b.port());
    v.send(&Packet::Connect(c));
    let Packet::Auth(a) = v.next() else {
        panic!("expected AUTH 0x18")
    };
    assert_eq!(a.reason, rc::CONTINUE_AUTHENTICATION);
    let started = std::time::Instant::now();
    v.until_closed(Duration::from_secs(5));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}
