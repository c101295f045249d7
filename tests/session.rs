//! Persistent sessions (clean session 0): subscriptions and QoS 1/2 messages survive a
//! disconnect; clean session 1 discards them.

mod common;

use std::time::Duration;

use common::clients::{mosquitto_pub, paho_pub, MosqSub, Paho, Rumq};
use common::raw::{Connect, Raw};
use common::{unique_id, Broker, STEP};

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
