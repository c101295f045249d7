//! Will messages in every protocol version: published on an abrupt close or keep-alive
//! expiry, not after DISCONNECT, with the will QoS and retain flag, held to the checks of a
//! PUBLISH (`$SYS`, size, topic limits, Maximum QoS, retain available), and the 5.0 Will
//! Delay Interval, will properties and DISCONNECT with Will Message.

mod common;

use std::thread;
use std::time::Duration;

use serde_json::json;

use common::clients::MosqSub;
use common::raw::{Connect, Raw};
use common::v5::{self, connect, opts, paho, rc, resume, user_props, will, with_expiry, V5};
use common::{unique_id, Broker, STEP};
use midge::protocol::{Connect as ConnectV5, Packet, Properties};

const QUIET: Duration = Duration::from_millis(500);

/// [MQTT-3.1.2-8] the will is published when the network connection closes without DISCONNECT.
#[test]
fn will_is_published_when_socket_closes_without_disconnect() {
    let b = Broker::start();
    let mut s = Raw::subscribed(b.port(), "will-sub", &[("will/t", 0)]);
    let (c, _) = Raw::connect(
        b.port(),
        &Connect::new("dier").will("will/t", b"gone", 0, false),
    );
    c.drop_abruptly();
    let m = s.expect_publish();
    assert_eq!(
        (m.topic.as_str(), m.payload.as_slice()),
        ("will/t", &b"gone"[..])
    );
    assert!(!m.retain);
}

/// [MQTT-3.1.2-10] after DISCONNECT the will is discarded, not published.
#[test]
fn will_is_not_published_after_disconnect() {
    let b = Broker::start();
    let mut s = Raw::subscribed(b.port(), "nowill-sub", &[("nowill/t", 0)]);
    let (c, _) = Raw::connect(
        b.port(),
        &Connect::new("polite").will("nowill/t", b"x", 0, false),
    );
    c.disconnect();
    s.expect_nothing(QUIET);
}

/// [MQTT-3.1.2-14] the will is published at the will QoS (subscriber at QoS 2 gets QoS 1).
#[test]
fn will_qos_is_honoured() {
    let b = Broker::start();
    let mut s = Raw::subscribed(b.port(), "wq-sub", &[("wq/t", 2)]);
    let (c, _) = Raw::connect(b.port(), &Connect::new("wq").will("wq/t", b"q1", 1, false));
    c.drop_abruptly();
    let m = s.recv_publish_ack();
    assert_eq!((m.payload.as_slice(), m.qos), (&b"q1"[..], 1));
}

/// [MQTT-3.1.2-17] a will with Will Retain = 1 is published as a retained message: a client
/// subscribing later receives it with RETAIN=1.
#[test]
fn retained_will_is_delivered_to_later_subscriber() {
    let b = Broker::start();
    let (c, _) = Raw::connect(
        b.port(),
        &Connect::new("wr").will("wr/status", b"offline", 1, true),
    );
    c.drop_abruptly();
    // The will is published asynchronously: poll with fresh subscribers until it is there.
    let deadline = std::time::Instant::now() + STEP;
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "retained will never appeared"
        );
        let mut s = Raw::subscribed(b.port(), "wr-sub", &[("wr/status", 1)]);
        if let Ok(pk) = s.recv(Duration::from_millis(200)) {
            let m = pk.publish();
            if !m.retain {
                // Published live between this SUBSCRIBE and now (a loaded machine): the next
                // fresh subscriber gets it as retained.
                s.send(&common::raw::puback(m.pid));
                continue;
            }
            assert_eq!(
                (m.payload.as_slice(), m.retain, m.qos),
                (&b"offline"[..], true, 1)
            );
            s.send(&common::raw::puback(m.pid));
            break;
        }
    }
}

/// [MQTT-3.1.2-8] [MQTT-3.1.2-24] the will is published when the keep-alive expires (client
/// silent for 1.5 x keep-alive, the socket left open). mosquitto expires keep-alives late (see
/// keepalive.rs), hence the per-broker bound.
#[test]
fn will_is_published_on_keepalive_expiry() {
    let b = Broker::start();
    let mut s = Raw::subscribed(b.port(), "ka-will-sub", &[("kaw/t", 0)]);
    let (_silent, _) = Raw::connect(
        b.port(),
        &Connect::new("silent")
            .keepalive(1)
            .will("kaw/t", b"timed out", 0, false),
    );
    let limit = common::keepalive_expiry_limit(b.kind());
    let m = s
        .recv(limit)
        .expect("will after keep-alive expiry")
        .publish();
    assert_eq!(m.payload, b"timed out");
}

/// mosquitto_sub with `--will-topic`, killed with SIGKILL: its will reaches another client.
#[test]
fn will_of_killed_mosquitto_sub_is_published() {
    let b = Broker::start();
    let mut watcher = Raw::subscribed(b.port(), "ms-watch", &[("ms/will", 1)]);
    let mut victim = MosqSub::start(
        b.port(),
        &[
            "-t",
            "ms/other",
            "--will-topic",
            "ms/will",
            "--will-payload",
            "sub died",
            "--will-qos",
            "1",
        ],
    );
    victim.kill();
    let m = watcher.recv_publish_ack();
    assert_eq!((m.payload.as_slice(), m.qos), (&b"sub died"[..], 1));
}

/// A will on `$SYS` is accepted with the CONNECT but never published nor
/// retained: no client can plant `$SYS/broker/version`.
#[test]
fn a_will_on_sys_is_not_published_nor_retained() {
    const QUIET: Duration = Duration::from_millis(600);
    let b = Broker::start();
    let mut s = Raw::subscribed(
        b.port(),
        &unique_id("syssub"),
        &[("$SYS/broker/planted", 0)],
    );
    let (c, _) = Raw::connect(
        b.port(),
        &Connect::new(&unique_id("planter")).will("$SYS/broker/planted", b"pwned", 0, true),
    );
    c.drop_abruptly();
    s.expect_nothing(QUIET);
    let mut late = Raw::subscribed(b.port(), &unique_id("late"), &[("$SYS/broker/planted", 0)]);
    late.expect_nothing(QUIET);
}

/// `message_size_limit` applies to wills: an oversize will refuses the
/// CONNECT, "not authorized" (5) in 3.1.1 as mosquitto sends, 0x95 in 5.0.
#[test]
fn an_oversize_will_refuses_the_connect() {
    let b = Broker::start_with(&["message_size_limit 10"]);
    let mut c = Raw::tcp(b.port());
    let (_, code) = c.handshake(&Connect::new("bigwill").will("w/big", &[7u8; 11], 0, false));
    assert_eq!(code, 5);
    assert!(c.is_closed_within(Duration::from_secs(2)));
    let mut c5 = V5::tcp(b.port());
    let mut connect = v5::connect("bigwill5");
    connect.will = Some(v5::will(
        "w/big",
        &[7u8; 11],
        0,
        false,
        Properties::default(),
    ));
    assert_eq!(c5.handshake(&connect).code, rc::PACKET_TOO_LARGE);
    // At the limit it is fine.
    let (_c, _) = Raw::connect(
        b.port(),
        &Connect::new("okwill").will("w/ok", &[7u8; 10], 0, false),
    );
}

/// A will topic deeper than the topic limits is a malformed CONNECT, closed without CONNACK
/// (as mosquitto: `mosquitto_pub_topic_check` fails in `will__read`).
#[test]
fn a_will_topic_beyond_the_topic_limits_closes_the_connection() {
    let b = Broker::start();
    let deep = vec!["a"; 300].join("/");
    let mut c = Raw::tcp(b.port());
    c.send(
        &Connect::new("deepwill")
            .will(&deep, b"w", 0, false)
            .encode(),
    );
    let got = c.expect_closed(Duration::from_secs(3));
    assert!(got.is_empty(), "no CONNACK: {got:?}");
    let (_ok, _) = Raw::connect(
        b.port(),
        &Connect::new("shallowwill").will(&vec!["a"; 100].join("/"), b"w", 0, false),
    );
}

/// [MQTT-3.2.2-13] A will with Will Retain 1 when retained messages are not supported: CONNACK
/// 0x9A and the connection is closed.
#[test]
fn will_retain_when_retain_unavailable_gets_connack_0x9a() {
    let b = Broker::start_with(&["retain_available false"]);
    let mut c = connect(&unique_id("wr"));
    c.will = Some(will("wr/t", b"x", 0, true, Properties::default()));
    let mut v = V5::tcp(b.port());
    let ack = v.handshake(&c);
    assert_eq!(ack.code, rc::RETAIN_NOT_SUPPORTED, "{ack:?}");
    v.until_closed(STEP);
}

/// [MQTT-3.2.2-12] A will QoS above the server's Maximum QoS: CONNACK 0x9B.
#[test]
fn will_qos_above_maximum_gets_connack_0x9b() {
    let b = Broker::start_with(&["max_qos 0"]);
    let mut c = connect(&unique_id("wq"));
    c.will = Some(will("wq/t", b"x", 1, false, Properties::default()));
    let mut v = V5::tcp(b.port());
    let ack = v.handshake(&c);
    assert_eq!(ack.code, rc::QOS_NOT_SUPPORTED, "{ack:?}");
    v.until_closed(STEP);
}

// ---------------------------------------------------------------- 5.0 will delay and properties--

fn will_conn(id: &str, session_expiry: u32, delay: u32, topic: &str) -> ConnectV5 {
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
    let mut w = V5::subscribed(b.port(), &unique_id("wsub"), &[("will/delay", opts(1))]);
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
    let mut w = V5::subscribed(b.port(), &unique_id("wsub"), &[("will/sessend", opts(1))]);
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
    let mut w = V5::subscribed(b.port(), &unique_id("wsub"), &[("will/cancel", opts(1))]);
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
    let mut w = V5::subscribed(
        b.port(),
        &unique_id("wsub"),
        &[("will/cleancancel", opts(1))],
    );
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
    let mut w = V5::subscribed(b.port(), &unique_id("wsub"), &[("will/rc4", opts(1))]);
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
    let mut w = V5::subscribed(b.port(), &unique_id("wsub"), &[("will/rc0", opts(1))]);
    let (c, _) = V5::connect(b.port(), &will_conn(&unique_id("w0"), 0, 0, "will/rc0"));
    c.disconnect();
    w.expect_nothing(Duration::from_millis(1000));
}
