//! MQTT 5.0 publish/subscribe: subscription options (No Local, Retain As Published, Retain
//! Handling), Subscription Identifiers, and the PUBLISH properties a server forwards unchanged
//! (User Properties, Payload Format Indicator, Content Type, Response Topic, Correlation Data).

mod common;

use std::time::Duration;

use serde_json::json;

use common::v5::{mosquitto_pub_v5, opts, opts_full, paho, publish, user_props, MosqSubV5, V5};
use common::{unique_id, Broker};
use midge::protocol::Properties;

/// [MQTT-3.8.3-3] No Local: a client's own messages are not sent back to it on that
/// subscription; other clients still get them.
#[test]
fn no_local_subscription_does_not_receive_own_messages() {
    let b = Broker::start();
    let mut me = V5::connected(b.port(), &unique_id("nl"));
    me.subscribe(&[("nl/t", opts_full(1, true, false, 0))]);
    let mut other = V5::connected(b.port(), &unique_id("nlo"));
    other.subscribe(&[("nl/t", opts(1))]);
    me.publish_simple("nl/t", b"mine", 1, false);
    assert_eq!(&other.recv_publish_ack().payload[..], b"mine");
    me.expect_nothing(Duration::from_millis(500));
    // Messages from someone else still arrive.
    let mut p = V5::connected(b.port(), &unique_id("nlp"));
    p.publish_simple("nl/t", b"theirs", 1, false);
    assert_eq!(&me.recv_publish_ack().payload[..], b"theirs");
}

/// [MQTT-3.3.1-12] Retain As Published 0: a message forwarded to an existing subscription has
/// RETAIN 0 even if it was published with RETAIN 1.
#[test]
fn retain_flag_is_cleared_without_retain_as_published() {
    let b = Broker::start();
    let mut s = V5::connected(b.port(), &unique_id("rap0"));
    s.subscribe(&[("rap/0", opts_full(1, false, false, 0))]);
    let mut p = V5::connected(b.port(), &unique_id("rapp"));
    p.publish_simple("rap/0", b"r", 1, true);
    assert!(
        !s.recv_publish_ack().retain,
        "RETAIN must be 0 [MQTT-3.3.1-12]"
    );
}

/// [MQTT-3.3.1-13] Retain As Published 1: the RETAIN flag is forwarded as published.
#[test]
fn retain_flag_is_kept_with_retain_as_published() {
    let b = Broker::start();
    let mut s = V5::connected(b.port(), &unique_id("rap1"));
    s.subscribe(&[("rap/1", opts_full(1, false, true, 0))]);
    let mut p = V5::connected(b.port(), &unique_id("rapp"));
    p.publish_simple("rap/1", b"r", 1, true);
    p.publish_simple("rap/1", b"n", 1, false);
    let got = [s.recv_publish_ack(), s.recv_publish_ack()];
    assert!(got[0].retain, "RETAIN 1 kept [MQTT-3.3.1-13]: {:?}", got[0]);
    assert!(!got[1].retain, "RETAIN 0 kept: {:?}", got[1]);
}

fn retained_setup(b: &Broker, topic: &str) {
    let mut p = V5::connected(b.port(), &unique_id("ret"));
    p.publish_simple(topic, b"kept", 1, true);
    p.disconnect();
}

/// [MQTT-3.3.1-9] Retain Handling 0: retained messages are sent on every SUBSCRIBE, including
/// one that replaces an existing subscription.
#[test]
fn retain_handling_0_sends_retained_on_every_subscribe() {
    let b = Broker::start();
    retained_setup(&b, "rh/0");
    let mut s = V5::connected(b.port(), &unique_id("rh0"));
    for round in 0..2 {
        s.subscribe(&[("rh/0", opts_full(1, false, false, 0))]);
        let m = s.recv_publish_ack();
        assert!(
            m.retain && &m.payload[..] == b"kept",
            "round {round}: {m:?}"
        );
    }
}

/// [MQTT-3.3.1-10] Retain Handling 1: retained messages only when the subscription is new.
#[test]
fn retain_handling_1_sends_retained_only_for_new_subscription() {
    let b = Broker::start();
    retained_setup(&b, "rh/1");
    let mut s = V5::connected(b.port(), &unique_id("rh1"));
    s.subscribe(&[("rh/1", opts_full(1, false, false, 1))]);
    let m = s.recv_publish_ack();
    assert!(m.retain, "{m:?}");
    s.subscribe(&[("rh/1", opts_full(1, false, false, 1))]);
    s.expect_nothing(Duration::from_millis(500));
}

/// [MQTT-3.3.1-11] Retain Handling 2: no retained messages at subscribe time.
#[test]
fn retain_handling_2_sends_no_retained_messages() {
    let b = Broker::start();
    retained_setup(&b, "rh/2");
    let mut s = V5::connected(b.port(), &unique_id("rh2"));
    s.subscribe(&[("rh/2", opts_full(1, false, false, 2))]);
    s.expect_nothing(Duration::from_millis(500));
    // The subscription itself works.
    let mut p = V5::connected(b.port(), &unique_id("rh2p"));
    p.publish_simple("rh/2", b"live", 1, false);
    assert_eq!(&s.recv_publish_ack().payload[..], b"live");
}

/// [MQTT-3.3.4-3] A message matching a subscription made with a Subscription Identifier carries
/// that identifier.
#[test]
fn subscription_identifier_is_sent_with_matching_message() {
    let b = Broker::start();
    let mut s = V5::connected(b.port(), &unique_id("sid"));
    s.subscribe_id("sid/+", opts(1), 4242);
    let mut p = V5::connected(b.port(), &unique_id("sidp"));
    p.publish_simple("sid/a", b"x", 1, false);
    let m = s.recv_publish_ack();
    assert_eq!(m.properties.subscription_identifiers, vec![4242], "{m:?}");
}

/// [MQTT-3.3.4-4][MQTT-3.3.4-5] Overlapping subscriptions with identifiers 1 and 2: the message
/// carries every matching identifier. midge sends one PUBLISH with both ([MQTT-3.3.4-4]);
/// the spec also lets a server send one PUBLISH per subscription, each with its own
/// identifier ([MQTT-3.3.4-5]), which is what mosquitto does.
#[test]
fn overlapping_subscriptions_carry_every_identifier() {
    let b = Broker::start();
    let mut s = V5::connected(b.port(), &unique_id("sids"));
    s.subscribe_id("ov/#", opts(1), 1);
    s.subscribe_id("ov/+/c", opts(1), 2);
    s.subscribe(&[("ov/b/+", opts(1))]); // no identifier
    let mut p = V5::connected(b.port(), &unique_id("sidsp"));
    p.publish_simple("ov/b/c", b"x", 1, false);
    let got = s.publishes_until_quiet(Duration::from_millis(700));
    let mut ids: Vec<u32> = got
        .iter()
        .flat_map(|m| m.properties.subscription_identifiers.clone())
        .collect();
    ids.sort();
    assert_eq!(ids, vec![1, 2], "every matching identifier: {got:?}");
    if b.is_midge() {
        assert_eq!(got.len(), 1, "midge sends one PUBLISH per message: {got:?}");
    } else {
        for m in &got {
            assert!(m.properties.subscription_identifiers.len() <= 1, "{m:?}");
        }
    }
}

/// [MQTT-3.3.2-17][MQTT-3.3.2-18] User Properties are forwarded unchanged and in order,
/// duplicates included. Published by mosquitto_pub (-D), received with paho-mqtt.
#[test]
fn user_properties_are_forwarded_unchanged_and_in_order() {
    let b = Broker::start();
    let mut sub = paho(
        b.port(),
        json!([{"op": "connect", "id": unique_id("upsub")},
               {"op": "subscribe", "subs": [{"topic": "up/t", "qos": 1}]},
               {"op": "messages", "count": 1, "timeout": 8},
               {"op": "disconnect"}]),
    );
    sub.expect_event("suback");
    mosquitto_pub_v5(
        b.port(),
        &[
            "-t",
            "up/t",
            "-m",
            "x",
            "-q",
            "1",
            "-D",
            "publish",
            "user-property",
            "zeta",
            "1",
            "-D",
            "publish",
            "user-property",
            "alpha",
            "2",
            "-D",
            "publish",
            "user-property",
            "zeta",
            "3",
        ],
    );
    let m = sub.expect_event("message");
    assert_eq!(
        m["props"]["UserProperty"],
        json!([["zeta", "1"], ["alpha", "2"], ["zeta", "3"]]),
        "{m}"
    );
}

/// [MQTT-3.3.2-4] The Payload Format Indicator is forwarded unaltered. Published by paho,
/// received by mosquitto_sub -V mqttv5 (%F).
#[test]
fn payload_format_indicator_is_forwarded() {
    let b = Broker::start();
    let mut sub = MosqSubV5::start(b.port(), &["-t", "pfi/t", "-q", "1", "-C", "1"]);
    let mut p = paho(
        b.port(),
        json!([{"op": "connect", "id": unique_id("pfip")},
               {"op": "publish", "topic": "pfi/t", "payload": "text", "qos": 1,
                "props": {"PayloadFormatIndicator": 1}},
               {"op": "disconnect"}]),
    );
    p.expect_event("published");
    let m = sub
        .next_msg(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no message: {}", sub.describe()));
    assert_eq!(m.format, "1", "{m:?}");
}

/// [MQTT-3.3.2-20] Content Type is forwarded unaltered (mosquitto_pub -> mosquitto_sub).
#[test]
fn content_type_is_forwarded() {
    let b = Broker::start();
    let mut sub = MosqSubV5::start(b.port(), &["-t", "ct/t", "-q", "1", "-C", "1"]);
    mosquitto_pub_v5(
        b.port(),
        &[
            "-t",
            "ct/t",
            "-m",
            "{}",
            "-q",
            "1",
            "-D",
            "publish",
            "content-type",
            "application/json",
        ],
    );
    let m = sub
        .next_msg(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no message: {}", sub.describe()));
    assert_eq!(m.content_type, "application/json", "{m:?}");
}

/// [MQTT-3.3.2-15] Response Topic is forwarded unaltered (paho -> paho).
#[test]
fn response_topic_is_forwarded() {
    let b = Broker::start();
    let mut sub = paho(
        b.port(),
        json!([{"op": "connect", "id": unique_id("rtsub")},
               {"op": "subscribe", "subs": [{"topic": "rt/req", "qos": 1}]},
               {"op": "messages", "count": 1, "timeout": 8},
               {"op": "disconnect"}]),
    );
    sub.expect_event("suback");
    let mut p = paho(
        b.port(),
        json!([{"op": "connect", "id": unique_id("rtp")},
               {"op": "publish", "topic": "rt/req", "payload": "q", "qos": 1,
                "props": {"ResponseTopic": "rt/reply/42"}},
               {"op": "disconnect"}]),
    );
    p.expect_event("published");
    let m = sub.expect_event("message");
    assert_eq!(m["props"]["ResponseTopic"], "rt/reply/42", "{m}");
}

/// [MQTT-3.3.2-16] Correlation Data (binary) is forwarded unaltered (raw publisher with
/// non-UTF-8 bytes -> raw subscriber).
#[test]
fn correlation_data_is_forwarded() {
    let b = Broker::start();
    let mut s = V5::connected(b.port(), &unique_id("cd"));
    s.subscribe(&[("cd/t", opts(1))]);
    let mut p = V5::connected(b.port(), &unique_id("cdp"));
    let data: &'static [u8] = &[0x00, 0xff, 0x10, 0x80, b'z'];
    let mut m = publish("cd/t", b"x", 1, false, 7);
    m.properties.correlation_data = Some(bytes::Bytes::from_static(data));
    m.properties.response_topic = Some("cd/reply".into());
    p.publish(m);
    let got = s.recv_publish_ack();
    assert_eq!(
        got.properties.correlation_data.as_deref(),
        Some(data),
        "{got:?}"
    );
    assert_eq!(got.properties.response_topic.as_deref(), Some("cd/reply"));
}

/// All forwardable PUBLISH properties together survive the trip, and the server adds no
/// Topic Alias the client did not allow (Topic Alias Maximum absent = 0, [MQTT-3.3.2-11],
/// 3.1.2.11.5 "the Server MUST NOT send a Topic Alias" to a client that did not allow any).
#[test]
fn all_publish_properties_are_forwarded_together() {
    let b = Broker::start();
    let mut s = V5::connected(b.port(), &unique_id("all"));
    s.subscribe(&[("all/t", opts(2))]);
    let mut p = V5::connected(b.port(), &unique_id("allp"));
    let mut m = publish("all/t", "ünï".as_bytes(), 2, false, 9);
    m.properties = Properties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(100),
        content_type: Some("text/plain; charset=utf-8".into()),
        response_topic: Some("all/reply".into()),
        correlation_data: Some(bytes::Bytes::from_static(b"id-1")),
        user_properties: user_props(&[("k", "v1"), ("k", "v2"), ("", "")]),
        ..Properties::default()
    };
    let sent = m.properties.clone();
    p.publish(m);
    let got = s.recv_publish_ack();
    let mut expect = sent;
    // The expiry may have ticked by one second on the way.
    let e = got.properties.message_expiry_interval;
    assert!(matches!(e, Some(99) | Some(100)), "{got:?}");
    expect.message_expiry_interval = e;
    assert_eq!(got.properties, expect, "forwarded properties");
    assert_eq!(got.topic.as_str(), "all/t");
}
