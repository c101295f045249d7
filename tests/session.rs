//! Sessions in every protocol version: a persistent session (clean session 0, or a 5.0
//! Session Expiry Interval) keeps subscriptions and QoS 1/2 messages across a disconnect,
//! clean session / Clean Start discards it, Session Expiry (including changing it on
//! DISCONNECT) and Message Expiry. (Takeover: `connect.rs`; across a restart:
//! `persistence.rs`.)

mod common;

use std::thread;
use std::time::Duration;

use common::clients::{mosquitto_pub, paho_pub, MosqSub, Paho, Rumq};
use common::raw::{Connect, Raw};
use common::v5::{connect, opts, publish_q1, rc, resume, with_expiry, V5};
use common::{unique_id, Broker, STEP};
use midge::protocol::{Packet, Properties};

// ---------------------------------------------------------------- MQTT 3.1.1 clean session-------

/// [MQTT-3.1.2-4] [MQTT-3.1.2-5] a clean-session-0 mosquitto_sub (-c -i ID) that went away
/// receives the QoS 1 and QoS 2 messages published meanwhile when it comes back. QoS 0 ones may
/// be dropped, so they are not asserted either way.
#[test]
fn persistent_session_delivers_qos1_and_qos2_to_returning_mosquitto_sub() {
    let b = Broker::start();
    let id = unique_id("ms-persist");
    let base = ["-c", "-i", id.as_str(), "-t", "ps/#", "-q", "2"];
    // -E: exit once the SUBACK is in; the session (and its subscription) stays on the broker.
    drop(MosqSub::start(b.port(), &[&base[..], &["-E"]].concat()));
    mosquitto_pub(b.port(), &["-t", "ps/a", "-m", "zero", "-q", "0"]);
    mosquitto_pub(b.port(), &["-t", "ps/b", "-m", "one", "-q", "1"]);
    mosquitto_pub(b.port(), &["-t", "ps/c", "-m", "two", "-q", "2"]);
    let mut s = MosqSub::start(b.port(), &base);
    let mut got = s.messages(3, Duration::from_secs(2));
    got.retain(|m| m.payload != "zero");
    got.sort_by(|a, b| a.topic.cmp(&b.topic));
    let summary: Vec<(String, u8)> = got.iter().map(|m| (m.payload.clone(), m.qos)).collect();
    assert_eq!(
        summary,
        vec![("one".into(), 1), ("two".into(), 2)],
        "{}",
        s.describe()
    );
}

/// The same with paho (clean_session=False).
#[test]
fn persistent_session_delivers_qos1_and_qos2_to_returning_paho_client() {
    let b = Broker::start();
    let id = unique_id("paho-persist");
    let first = Paho::spawn(
        "sub.py",
        b.port(),
        &["--id", &id, "--clean", "0", "--topic", "pp/#:2"],
    );
    first.finish(STEP * 2);
    paho_pub(
        b.port(),
        &["--topic", "pp/one", "--message", "1", "--qos", "1"],
    );
    paho_pub(
        b.port(),
        &["--topic", "pp/two", "--message", "2", "--qos", "2"],
    );
    let mut again = Paho::spawn(
        "sub.py",
        b.port(),
        &["--id", &id, "--clean", "0", "--count", "2"],
    );
    let ack = again.expect_event("connack");
    assert_eq!(ack["session_present"], true, "{ack}");
    let mut got = again.messages(2, STEP);
    got.sort_by(|a, b| a.topic.cmp(&b.topic));
    let summary: Vec<(&str, u8)> = got.iter().map(|m| (m.topic.as_str(), m.qos)).collect();
    assert_eq!(
        summary,
        vec![("pp/one", 1), ("pp/two", 2)],
        "{}",
        again.describe()
    );
    again.finish(STEP);
}

/// The same with rumqttc (clean_session false).
#[test]
fn persistent_session_delivers_to_returning_rumqttc_client() {
    let b = Broker::start();
    let id = unique_id("rq-persist");
    let (mut s, ack) = Rumq::connect(b.port(), &id, false);
    assert!(!ack.session_present);
    s.subscribe("rp/t", 1);
    s.disconnect();
    let mut p = Raw::connected(b.port(), "rp-pub");
    p.publish_complete("rp/t", b"while away", 1, false, 1);
    let (mut s, ack) = Rumq::connect(b.port(), &id, false);
    assert!(ack.session_present);
    let m = s.messages(1, STEP);
    assert_eq!(m.len(), 1);
    assert_eq!((m[0].payload.as_str(), m[0].qos), ("while away", 1));
    s.disconnect();
}

/// [MQTT-3.1.2-6] connecting with clean session 1 discards the stored session: no queued
/// messages, no subscriptions, session present 0.
#[test]
fn clean_session_discards_the_old_session() {
    let b = Broker::start();
    let id = unique_id("discard");
    let (mut s, _) = Raw::connect(b.port(), &Connect::new(&id).clean(false));
    s.subscribe(1, &[("cs/t", 1)]);
    s.disconnect();
    let mut p = Raw::connected(b.port(), "cs-pub");
    p.publish_complete("cs/t", b"queued", 1, false, 1);
    let (mut s, sp) = Raw::connect(b.port(), &Connect::new(&id).clean(true));
    assert!(!sp, "session present 0 [MQTT-3.2.2-1]");
    s.expect_nothing(Duration::from_millis(300));
    // The subscription is gone as well.
    p.publish_complete("cs/t", b"live", 1, false, 2);
    s.expect_nothing(Duration::from_millis(300));
    s.disconnect();
    // [MQTT-3.1.2-6] the clean session's state is not kept after it ends either.
    let (s, sp) = Raw::connect(b.port(), &Connect::new(&id).clean(false));
    assert!(!sp, "a clean session leaves no stored session behind");
    s.disconnect();
}

/// [MQTT-3.1.2-4] the subscriptions of a persistent session survive a disconnect: messages
/// published after the client returns reach it without subscribing again.
#[test]
fn persistent_session_keeps_subscriptions() {
    let b = Broker::start();
    let id = unique_id("keepsubs");
    let (mut s, _) = Raw::connect(b.port(), &Connect::new(&id).clean(false));
    s.subscribe(1, &[("ks/t", 1)]);
    s.drop_abruptly();
    let (mut s, sp) = Raw::connect(b.port(), &Connect::new(&id).clean(false));
    assert!(sp);
    mosquitto_pub(b.port(), &["-t", "ks/t", "-m", "still here", "-q", "1"]);
    assert_eq!(s.recv_publish_ack().payload, b"still here");
}

// ---------------------------------------------------------------- MQTT 5.0 session and message expiry

/// Subscribes `id` to `topic` at QoS 1 in a session with `expiry`, then disconnects normally.
fn park_session(port: u16, id: &str, topic: &str, expiry: u32) {
    let (mut s, _) = V5::connect(port, &with_expiry(id, expiry));
    assert_eq!(s.subscribe(&[(topic, opts(1))]), vec![1]);
    s.disconnect();
}

/// [MQTT-3.1.2-23] A session with a non-zero Session Expiry Interval outlives the connection:
/// the client reconnects with Clean Start 0, gets Session Present 1 [MQTT-3.2.2-3] and the
/// QoS 1 message published meanwhile.
#[test]
fn session_is_kept_for_session_expiry_interval() {
    let b = Broker::start();
    let id = unique_id("keep");
    park_session(b.port(), &id, "sess/keep", 60);
    publish_q1(b.port(), "sess/keep", b"queued", None);
    let (mut s, ack) = V5::connect(b.port(), &resume(&id, 60));
    assert!(
        ack.session_present,
        "Session Present [MQTT-3.2.2-3]: {ack:?}"
    );
    let m = s.recv_publish_ack();
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("sess/keep", &b"queued"[..])
    );
}

/// [MQTT-3.1.2-23] After the Session Expiry Interval has passed the session is gone: Session
/// Present 0 and no queued message.
#[test]
fn session_is_discarded_after_session_expiry_interval() {
    let b = Broker::start();
    let id = unique_id("expire");
    park_session(b.port(), &id, "sess/expire", 1);
    publish_q1(b.port(), "sess/expire", b"lost", None);
    thread::sleep(Duration::from_millis(2500));
    let (mut s, ack) = V5::connect(b.port(), &resume(&id, 60));
    assert!(!ack.session_present, "session should have expired: {ack:?}");
    s.expect_nothing(Duration::from_millis(500));
}

/// [MQTT-3.1.2-23] Session Expiry Interval 0 (or absent): the session ends when the network
/// connection closes.
#[test]
fn session_expiry_0_ends_session_at_disconnect() {
    let b = Broker::start();
    let id = unique_id("zero");
    let (mut s, _) = V5::connect(b.port(), &connect(&id));
    s.subscribe(&[("sess/zero", opts(1))]);
    s.disconnect();
    publish_q1(b.port(), "sess/zero", b"lost", None);
    let (mut s, ack) = V5::connect(b.port(), &resume(&id, 0));
    assert!(!ack.session_present, "{ack:?}");
    s.expect_nothing(Duration::from_millis(500));
}

/// [MQTT-3.1.2-4] Clean Start 1 discards an existing session: no subscriptions survive.
#[test]
fn clean_start_discards_existing_session() {
    let b = Broker::start();
    let id = unique_id("clean");
    park_session(b.port(), &id, "sess/clean", 60);
    let (mut s, ack) = V5::connect(b.port(), &with_expiry(&id, 60));
    assert!(!ack.session_present, "{ack:?}");
    publish_q1(b.port(), "sess/clean", b"x", None);
    s.expect_nothing(Duration::from_millis(500));
}

/// (3.14.2.2.2) The Session Expiry Interval can be changed on DISCONNECT: setting it to 0
/// ends the session at the disconnect.
#[test]
fn session_expiry_set_to_0_on_disconnect_ends_session() {
    let b = Broker::start();
    let id = unique_id("dis0");
    let (mut s, _) = V5::connect(b.port(), &with_expiry(&id, 60));
    s.subscribe(&[("sess/dis0", opts(1))]);
    s.disconnect_with(
        0,
        Properties {
            session_expiry_interval: Some(0),
            ..Properties::default()
        },
    );
    let (_s, ack) = V5::connect(b.port(), &resume(&id, 60));
    assert!(!ack.session_present, "{ack:?}");
}

/// (3.14.2.2.2) Raising the Session Expiry Interval on DISCONNECT (1 s -> 60 s) keeps the
/// session beyond the interval given at CONNECT.
#[test]
fn session_expiry_raised_on_disconnect_keeps_session() {
    let b = Broker::start();
    let id = unique_id("disup");
    let (mut s, _) = V5::connect(b.port(), &with_expiry(&id, 1));
    s.subscribe(&[("sess/disup", opts(1))]);
    s.disconnect_with(
        0,
        Properties {
            session_expiry_interval: Some(60),
            ..Properties::default()
        },
    );
    thread::sleep(Duration::from_millis(2500));
    let (_s, ack) = V5::connect(b.port(), &resume(&id, 60));
    assert!(ack.session_present, "{ack:?}");
}

/// [MQTT-3.14.2-2] Session Expiry 0 at CONNECT and non-zero on DISCONNECT is a Protocol Error:
/// the server answers DISCONNECT 0x82 (4.13).
#[test]
fn session_expiry_0_to_nonzero_on_disconnect_is_protocol_error() {
    let b = Broker::start();
    let (mut s, _) = V5::connect(b.port(), &connect(&unique_id("zero2n")));
    s.send(&Packet::Disconnect(midge::protocol::Disconnect {
        reason: 0,
        properties: Properties {
            session_expiry_interval: Some(60),
            ..Properties::default()
        },
    }));
    s.expect_disconnect_code(rc::PROTOCOL_ERROR, "[MQTT-3.14.2-2]");
}

/// [MQTT-3.3.2-5] A queued message whose Message Expiry Interval passed is not delivered;
/// a message without expiry queued alongside it is.
#[test]
fn expired_queued_message_is_not_delivered() {
    let b = Broker::start();
    let id = unique_id("mexp");
    park_session(b.port(), &id, "sess/mexp", 60);
    publish_q1(b.port(), "sess/mexp", b"short-lived", Some(1));
    publish_q1(b.port(), "sess/mexp", b"durable", None);
    thread::sleep(Duration::from_millis(2500));
    let (mut s, ack) = V5::connect(b.port(), &resume(&id, 60));
    assert!(ack.session_present);
    let got = s.publishes_until_quiet(Duration::from_millis(700));
    let payloads: Vec<_> = got.iter().map(|p| p.payload.to_vec()).collect();
    assert_eq!(payloads, vec![b"durable".to_vec()], "{got:?}");
}

/// [MQTT-3.3.2-6] The Message Expiry Interval forwarded to a subscriber is the received value
/// minus the time the message waited in the server.
#[test]
fn forwarded_message_expiry_is_reduced_by_time_waited() {
    let b = Broker::start();
    let id = unique_id("mred");
    park_session(b.port(), &id, "sess/mred", 60);
    publish_q1(b.port(), "sess/mred", b"m", Some(20));
    thread::sleep(Duration::from_millis(2200));
    let (mut s, _) = V5::connect(b.port(), &resume(&id, 60));
    let m = s.recv_publish_ack();
    let e = m
        .properties
        .message_expiry_interval
        .unwrap_or_else(|| panic!("no Message Expiry Interval forwarded: {m:?}"));
    assert!(
        (1..=18).contains(&e),
        "expiry {e} not reduced by >= 2 s wait"
    );
}

/// A live subscriber gets the Message Expiry Interval (about) unchanged.
#[test]
fn message_expiry_is_forwarded_to_live_subscriber() {
    let b = Broker::start();
    let mut s = V5::subscribed(b.port(), &unique_id("mlive"), &[("sess/mlive", opts(1))]);
    publish_q1(b.port(), "sess/mlive", b"m", Some(30));
    let m = s.recv_publish_ack();
    let e = m.properties.message_expiry_interval;
    assert!(matches!(e, Some(29) | Some(30)), "{m:?}");
}
