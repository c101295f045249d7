//! MQTT 5.0 sessions and expiry: Session Expiry Interval (incl. changing it on DISCONNECT),
//! Clean Start, Session Present, Message Expiry Interval, Will Delay Interval, will properties.

mod common;

use std::thread;
use std::time::Duration;

use serde_json::json;

use common::v5::{connect, opts, paho, publish, rc, user_props, will, V5};
use common::{unique_id, Broker, STEP};
use midge::protocol::{Connect, Packet, Properties};

fn with_expiry(id: &str, secs: u32) -> Connect {
    let mut c = connect(id);
    c.properties.session_expiry_interval = Some(secs);
    c
}

fn resume(id: &str, secs: u32) -> Connect {
    let mut c = with_expiry(id, secs);
    c.clean_start = false;
    c
}

/// Subscribes `id` to `topic` at QoS 1 in a session with `expiry`, then disconnects normally.
fn park_session(port: u16, id: &str, topic: &str, expiry: u32) {
    let (mut s, _) = V5::connect(port, &with_expiry(id, expiry));
    assert_eq!(s.subscribe(&[(topic, opts(1))]), vec![1]);
    s.disconnect();
}

fn publish_q1(port: u16, topic: &str, payload: &[u8], expiry: Option<u32>) {
    let mut p = V5::connected(port, &unique_id("pub"));
    let mut m = publish(topic, payload, 1, false, 1);
    m.properties.message_expiry_interval = expiry;
    p.publish(m);
    p.disconnect();
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
    let mut s = V5::connected(b.port(), &unique_id("mlive"));
    s.subscribe(&[("sess/mlive", opts(1))]);
    publish_q1(b.port(), "sess/mlive", b"m", Some(30));
    let m = s.recv_publish_ack();
    let e = m.properties.message_expiry_interval;
    assert!(matches!(e, Some(29) | Some(30)), "{m:?}");
}

fn will_conn(id: &str, session_expiry: u32, delay: u32, topic: &str) -> Connect {
    let mut c = with_expiry(id, session_expiry);
    c.will = Some(will(
        topic,
        b"gone",
        1,
        false,
        Properties {
            will_delay_interval: Some(delay),
            ..Properties::default()
        },
    ));
    c
}

/// [MQTT-3.1.3-9] With a Will Delay Interval the will is published when the delay ends, not
/// when the connection drops.
#[test]
fn will_is_published_after_will_delay() {
    let b = Broker::start();
    let mut w = V5::connected(b.port(), &unique_id("wsub"));
    w.subscribe(&[("will/delay", opts(1))]);
    let (c, _) = V5::connect(b.port(), &will_conn(&unique_id("wd"), 60, 2, "will/delay"));
    c.drop_abruptly();
    w.expect_nothing(Duration::from_millis(1000));
    let m = match w.recv(Duration::from_secs(4)) {
        Ok(Packet::Publish(p)) => p,
        other => panic!("no will after the delay: {other:?}"),
    };
    assert_eq!(&m.payload[..], b"gone");
}

/// (3.1.3.2.2) The will goes out at the earlier of the delay's end and the session's end:
/// session expiry 1 s, will delay 60 s -> will after about 1 s.
#[test]
fn will_is_published_at_session_end_when_before_will_delay() {
    let b = Broker::start();
    let mut w = V5::connected(b.port(), &unique_id("wsub"));
    w.subscribe(&[("will/sessend", opts(1))]);
    let (c, _) = V5::connect(
        b.port(),
        &will_conn(&unique_id("we"), 1, 60, "will/sessend"),
    );
    c.drop_abruptly();
    match w.recv(Duration::from_secs(4)) {
        Ok(Packet::Publish(p)) => assert_eq!(&p.payload[..], b"gone"),
        other => panic!("no will at session end: {other:?}"),
    }
}

/// [MQTT-3.1.3-9] A reconnect within the Will Delay Interval cancels the will.
#[test]
fn reconnect_within_will_delay_cancels_will() {
    let b = Broker::start();
    let mut w = V5::connected(b.port(), &unique_id("wsub"));
    w.subscribe(&[("will/cancel", opts(1))]);
    let id = unique_id("wc");
    let (c, _) = V5::connect(b.port(), &will_conn(&id, 60, 2, "will/cancel"));
    c.drop_abruptly();
    thread::sleep(Duration::from_millis(500));
    let (_c2, ack) = V5::connect(b.port(), &resume(&id, 60));
    assert!(ack.session_present);
    w.expect_nothing(Duration::from_millis(3000));
}

/// [MQTT-3.1.3-9] A reconnect with Clean Start 1 within the Will Delay Interval cancels the
/// will too: the new connection ends the old session, but the will's delay had not passed and
/// a new connection for the client id came first (mosquitto's 07-will-delay-reconnect).
#[test]
fn clean_start_reconnect_within_will_delay_cancels_will() {
    let b = Broker::start();
    let mut w = V5::connected(b.port(), &unique_id("wsub"));
    w.subscribe(&[("will/cleancancel", opts(1))]);
    let id = unique_id("wcc");
    let (c, _) = V5::connect(b.port(), &will_conn(&id, 60, 2, "will/cleancancel"));
    c.drop_abruptly();
    thread::sleep(Duration::from_millis(500));
    let (c2, ack) = V5::connect(b.port(), &connect(&id));
    assert!(!ack.session_present);
    w.expect_nothing(Duration::from_millis(3000));
    drop(c2);
}

/// [MQTT-3.1.2-8] A dropped connection publishes the will; (3.1.3.2) its properties
/// (Payload Format Indicator, Content Type, Response Topic, Correlation Data, User
/// Properties) reach subscribers unchanged. Received with paho-mqtt.
#[test]
fn will_properties_are_passed_through() {
    let b = Broker::start();
    let mut sub = paho(
        b.port(),
        json!([{"op": "connect", "id": unique_id("wpsub")},
               {"op": "subscribe", "subs": [{"topic": "will/props", "qos": 1}]},
               {"op": "messages", "count": 1, "timeout": 8},
               {"op": "disconnect"}]),
    );
    sub.expect_event("suback");
    let mut c = connect(&unique_id("wp"));
    c.will = Some(will(
        "will/props",
        "héllo".as_bytes(),
        1,
        false,
        Properties {
            payload_format_indicator: Some(1),
            content_type: Some("text/plain".into()),
            response_topic: Some("will/reply".into()),
            correlation_data: Some(bytes::Bytes::from_static(b"corr")),
            user_properties: user_props(&[("a", "1"), ("b", "2"), ("a", "3")]),
            ..Properties::default()
        },
    ));
    let (v, _) = V5::connect(b.port(), &c);
    v.drop_abruptly();
    let m = sub.expect_event("message");
    assert_eq!(m["payload"], "héllo");
    let p = &m["props"];
    assert_eq!(p["PayloadFormatIndicator"], 1, "{m}");
    assert_eq!(p["ContentType"], "text/plain", "{m}");
    assert_eq!(p["ResponseTopic"], "will/reply", "{m}");
    assert_eq!(p["CorrelationData"], hex(b"corr"), "{m}");
    assert_eq!(
        p["UserProperty"],
        json!([["a", "1"], ["b", "2"], ["a", "3"]]),
        "{m}"
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// (3.14.2.1) DISCONNECT with reason 0x04 (Disconnect with Will Message) publishes the will.
#[test]
fn disconnect_with_will_message_publishes_will() {
    let b = Broker::start();
    let mut w = V5::connected(b.port(), &unique_id("wsub"));
    w.subscribe(&[("will/rc4", opts(1))]);
    let (c, _) = V5::connect(b.port(), &will_conn(&unique_id("w4"), 0, 0, "will/rc4"));
    c.disconnect_with(rc::DISCONNECT_WITH_WILL_MESSAGE, Properties::default());
    match w.recv(STEP) {
        Ok(Packet::Publish(p)) => assert_eq!(&p.payload[..], b"gone"),
        other => panic!("no will after DISCONNECT 0x04: {other:?}"),
    }
}

/// [MQTT-3.1.2-10] A normal DISCONNECT (0x00) discards the will.
#[test]
fn normal_disconnect_discards_will() {
    let b = Broker::start();
    let mut w = V5::connected(b.port(), &unique_id("wsub"));
    w.subscribe(&[("will/rc0", opts(1))]);
    let (c, _) = V5::connect(b.port(), &will_conn(&unique_id("w0"), 0, 0, "will/rc0"));
    c.disconnect();
    w.expect_nothing(Duration::from_millis(1000));
}
