//! MQTT 5.0 reason codes and error handling: SUBACK/UNSUBACK/PUBACK/PUBREC/PUBCOMP codes,
//! DISCONNECT codes sent by the server (session taken over, malformed packet, protocol error,
//! QoS/retain not supported, payload format invalid), CONNACK failure codes, AUTH, Request
//! Problem Information.

mod common;

use std::time::Duration;

use common::raw::{mqtt_str, packet};
use common::v5::{auth_packet, connect, opts, publish, rc, will, V5};
use common::{unique_id, Broker, STEP};
use midge::protocol::{Packet, Properties, PubResp};

/// A PUBLISH (QoS 1, packet id 1) whose property bytes are written by hand.
fn publish_with_raw_props(topic: &str, props: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = mqtt_str(topic.as_bytes());
    body.extend(1u16.to_be_bytes());
    body.push(props.len() as u8); // < 128: one-byte variable integer
    body.extend_from_slice(props);
    body.extend_from_slice(payload);
    packet(0x32, &body)
}

/// [MQTT-4.7.1-1] (3.9.3) A topic filter with a misplaced wildcard makes the SUBSCRIBE a
/// malformed packet: DISCONNECT and close, no SUBACK even for the valid filters in it.
/// midge sends 0x8F (Topic Filter invalid), mosquitto 2.0.11 0x81 (Malformed Packet).
#[test]
fn disconnect_for_invalid_topic_filter() {
    let b = Broker::start();
    let mut c = V5::connected(b.port(), &unique_id("sf"));
    c.send(&Packet::Subscribe(midge::protocol::Subscribe {
        packet_id: 3,
        filters: vec![("ok/t".into(), opts(1)), ("bad/#/x".into(), opts(1))],
        properties: Properties::default(),
    }));
    let want = if b.is_mosquitto() {
        rc::MALFORMED_PACKET
    } else {
        rc::TOPIC_FILTER_INVALID
    };
    c.expect_disconnect_code(want, "[MQTT-4.7.1-1]");
}

/// (3.8.4, 3.9.3) The granted QoS in SUBACK is the lower of the requested QoS and the
/// server's Maximum QoS.
#[test]
fn suback_grants_at_most_maximum_qos() {
    let b = Broker::start_with(&["max_qos 1"]);
    let mut c = V5::connected(b.port(), &unique_id("sq"));
    let codes = c.subscribe(&[("q/0", opts(0)), ("q/1", opts(1)), ("q/2", opts(2))]);
    assert_eq!(codes, vec![0, 1, 1]);
}

/// (3.11.3) UNSUBACK: 0x00 for a subscription that existed, 0x11 (No subscription existed) for
/// one that did not, in filter order.
#[test]
fn unsuback_0x11_when_no_subscription_existed() {
    let b = Broker::start();
    let mut c = V5::connected(b.port(), &unique_id("us"));
    c.subscribe(&[("us/a", opts(1))]);
    let a = c.unsubscribe(9, &["us/a", "us/never"]);
    assert_eq!(
        a.codes,
        vec![rc::SUCCESS, rc::NO_SUBSCRIPTION_EXISTED],
        "{a:?}"
    );
}

/// (3.4.2.1) PUBACK 0x10 (No matching subscribers) for a QoS 1 message nobody subscribed to;
/// 0x00 once someone does.
#[test]
fn puback_0x10_when_no_matching_subscribers() {
    let b = Broker::start();
    let mut p = V5::connected(b.port(), &unique_id("nm"));
    assert_eq!(
        p.publish_simple("nm/t", b"x", 1, false),
        rc::NO_MATCHING_SUBSCRIBERS
    );
    let mut s = V5::connected(b.port(), &unique_id("nms"));
    s.subscribe(&[("nm/#", opts(0))]);
    assert_eq!(p.publish_simple("nm/t", b"x", 1, false), rc::SUCCESS);
}

/// (3.5.2.1) PUBREC 0x10 for a QoS 2 message nobody subscribed to; the flow still completes.
#[test]
fn pubrec_0x10_when_no_matching_subscribers() {
    let b = Broker::start();
    let mut p = V5::connected(b.port(), &unique_id("nm2"));
    // mosquitto 2.0.11 sends PUBREC 0x00 here (0x10 is a MAY, so not a deviation; midge
    // chose to send it, as for PUBACK).
    let expected = if b.is_midge() {
        rc::NO_MATCHING_SUBSCRIBERS
    } else {
        rc::SUCCESS
    };
    assert_eq!(p.publish_simple("nm2/t", b"x", 2, false), expected);
    p.ping();
}

/// (4.3.3, 3.7.2.1) PUBREL for a packet identifier the server does not know: PUBCOMP 0x92
/// (Packet Identifier not found).
#[test]
fn pubcomp_0x92_for_unknown_packet_id() {
    let b = Broker::start();
    let mut p = V5::connected(b.port(), &unique_id("pnf"));
    p.send(&Packet::PubRel(PubResp::new(77)));
    match p.next() {
        Packet::PubComp(c) => {
            // mosquitto 2.0.11 deviates: PUBCOMP 0x00 (Success) for an id it never saw.
            let expected = if b.is_midge() {
                rc::PACKET_IDENTIFIER_NOT_FOUND
            } else {
                rc::SUCCESS
            };
            assert_eq!((c.packet_id, c.reason), (77, expected))
        }
        other => panic!("expected PUBCOMP 0x92, got {other:?}"),
    }
}

/// [MQTT-3.1.4-3] A second connection with the same Client Identifier takes the session over:
/// the old connection gets DISCONNECT 0x8E (Session taken over) and is closed.
#[test]
fn session_takeover_sends_0x8e_to_old_connection() {
    let b = Broker::start();
    let id = unique_id("to");
    let mut old = V5::connected(b.port(), &id);
    let _new = V5::connected(b.port(), &id);
    if b.is_mosquitto() {
        // mosquitto 2.0.11 deviates from [MQTT-3.1.4-3]: it closes the old connection
        // without sending DISCONNECT 0x8E.
        assert!(old.expect_disconnect(STEP).is_none(), "mosquitto changed");
        return;
    }
    old.expect_disconnect_code(rc::SESSION_TAKEN_OVER, "[MQTT-3.1.4-3]");
}

/// (2.2.2.2, 4.13) An unknown property identifier makes the packet malformed: DISCONNECT 0x81.
#[test]
fn unknown_property_is_disconnected_with_0x81() {
    let b = Broker::start();
    let mut p = V5::connected(b.port(), &unique_id("mal"));
    p.send_bytes(&publish_with_raw_props("mal/t", &[0x7F, 0x01], b"x"));
    p.expect_disconnect_code(rc::MALFORMED_PACKET, "unknown property 0x7F");
}

/// (2.2.2.2) A property not allowed in the packet (Session Expiry Interval in PUBLISH) makes
/// it malformed: DISCONNECT 0x81.
#[test]
fn property_in_wrong_packet_is_disconnected_with_0x81() {
    let b = Broker::start();
    let mut p = V5::connected(b.port(), &unique_id("wrong"));
    p.send_bytes(&publish_with_raw_props(
        "wrong/t",
        &[0x11, 0, 0, 0, 10],
        b"x",
    ));
    p.expect_disconnect_code(rc::MALFORMED_PACKET, "Session Expiry in PUBLISH");
}

/// (2.2.2.2) A property that may appear once, appearing twice (Content Type), is a Protocol
/// Error: DISCONNECT 0x82.
#[test]
fn duplicate_property_is_disconnected_with_0x82() {
    let b = Broker::start();
    let mut p = V5::connected(b.port(), &unique_id("dup"));
    let mut props = vec![0x03];
    props.extend(mqtt_str(b"a"));
    props.push(0x03);
    props.extend(mqtt_str(b"b"));
    p.send_bytes(&publish_with_raw_props("dup/t", &props, b"x"));
    if b.is_mosquitto() {
        // mosquitto 2.0.11 deviates (4.13.1: the server SHOULD send DISCONNECT 0x82 before
        // closing): it closes without a DISCONNECT.
        assert!(p.expect_disconnect(STEP).is_none(), "mosquitto changed");
        return;
    }
    p.expect_disconnect_code(rc::PROTOCOL_ERROR, "duplicate Content Type");
}

/// (3.8.2.1.2) Subscription Identifier 0 is a Protocol Error: DISCONNECT 0x82.
#[test]
fn subscription_identifier_0_is_protocol_error() {
    let b = Broker::start();
    let mut c = V5::connected(b.port(), &unique_id("sid0"));
    // SUBSCRIBE id 1, properties [0x0B 0x00], filter "s/t" QoS 0.
    let mut body = vec![0, 1, 2, 0x0B, 0x00];
    body.extend(mqtt_str(b"s/t"));
    body.push(0);
    c.send_bytes(&packet(0x82, &body));
    // mosquitto 2.0.11 deviates from 3.8.2.1.2 ("a Protocol Error"): DISCONNECT 0x81.
    let expected = if b.is_midge() {
        rc::PROTOCOL_ERROR
    } else {
        rc::MALFORMED_PACKET
    };
    c.expect_disconnect_code(expected, "Subscription Identifier 0");
}

/// [MQTT-3.1.0-2] A second CONNECT is a Protocol Error: DISCONNECT 0x82.
#[test]
fn second_connect_is_disconnected_with_0x82() {
    let b = Broker::start();
    let id = unique_id("twice");
    let mut c = V5::connected(b.port(), &id);
    c.send(&Packet::Connect(connect(&id)));
    match c.expect_disconnect(STEP) {
        Some(d) => assert_eq!(d.reason, rc::PROTOCOL_ERROR, "{d:?}"),
        // mosquitto 2.0.11 deviates (4.13.1: the server SHOULD send DISCONNECT with the
        // reason code before closing): it closes without DISCONNECT.
        None if b.is_mosquitto() => {}
        None => panic!("closed without DISCONNECT 0x82 [MQTT-3.1.0-2]"),
    }
}

/// (3.1.2.11.9, 4.12) CONNECT with an Authentication Method the server does not support:
/// CONNACK 0x8C (Bad authentication method) and the connection is closed [MQTT-3.2.2-7].
#[test]
fn unknown_authentication_method_gets_connack_0x8c() {
    let b = Broker::start();
    let mut c = connect(&unique_id("auth"));
    c.properties.authentication_method = Some("SCRAM-SHA-256".into());
    c.properties.authentication_data = Some(bytes::Bytes::from_static(b"n,,n=user,r=abc"));
    let mut v = V5::tcp(b.port());
    let ack = v.handshake(&c);
    assert_eq!(ack.code, rc::BAD_AUTHENTICATION_METHOD, "{ack:?}");
    assert!(!ack.session_present, "[MQTT-3.2.2-6]");
    v.until_closed(STEP);
}

/// (3.15, 4.12) An AUTH packet from a client that did not start enhanced
/// authentication in CONNECT is a Protocol Error: DISCONNECT 0x82.
#[test]
fn auth_without_authentication_method_is_protocol_error() {
    let b = Broker::start();
    let mut v = V5::connected(b.port(), &unique_id("auth2"));
    v.send(&auth_packet(rc::RE_AUTHENTICATE, "SCRAM-SHA-256"));
    match v.expect_disconnect(STEP) {
        Some(d) => assert_eq!(d.reason, rc::PROTOCOL_ERROR, "{d:?}"),
        // mosquitto 2.0.11 deviates (4.13.1 SHOULD): it closes without DISCONNECT 0x82.
        None if b.is_mosquitto() => {}
        None => panic!("closed without DISCONNECT 0x82"),
    }
}

/// [MQTT-3.1.2-29] Request Problem Information 0: no Reason String (nor User Property) on
/// PUBACK, SUBACK, UNSUBACK even when they carry an error/unusual code.
#[test]
fn request_problem_information_0_suppresses_reason_strings() {
    let b = Broker::start();
    let mut c = connect(&unique_id("rpi"));
    c.properties.request_problem_information = Some(0);
    let (mut v, _) = V5::connect(b.port(), &c);
    let puback = v.publish(publish("rpi/none", b"x", 1, false, 1)).unwrap();
    assert_eq!(puback.reason, rc::NO_MATCHING_SUBSCRIBERS);
    assert_eq!(
        puback.properties,
        Properties::default(),
        "PUBACK: {puback:?}"
    );
    let unsuback = v.unsubscribe(2, &["rpi/never"]);
    assert_eq!(
        unsuback.properties,
        Properties::default(),
        "UNSUBACK: {unsuback:?}"
    );
    let suback = v.subscribe_props(3, &[("rpi/ok", opts(1))], Properties::default());
    assert_eq!(
        suback.properties,
        Properties::default(),
        "SUBACK: {suback:?}"
    );
}

/// (3.3.2.3.2, 4.13) Payload Format Indicator 1 with a payload that is not UTF-8: the server
/// rejects it with 0x99 (Payload format invalid), in PUBACK or DISCONNECT, and does not
/// forward it.
#[test]
fn invalid_utf8_payload_with_format_indicator_is_rejected_0x99() {
    let b = Broker::start();
    let mut s = V5::connected(b.port(), &unique_id("pfs"));
    s.subscribe(&[("pf/t", opts(1))]);
    let mut p = V5::connected(b.port(), &unique_id("pfp"));
    let mut m = publish("pf/t", &[b'o', b'k', 0xff, 0xfe], 1, false, 5);
    m.properties.payload_format_indicator = Some(1);
    p.send(&Packet::Publish(m));
    let reply = p.recv(STEP);
    if b.is_mosquitto() {
        // mosquitto 2.0.11 does not validate the payload: PUBACK 0x00 and it forwards it.
        // (Validation is a MAY in 3.3.2.3.2; midge chose to validate, issue 3.)
        assert!(
            matches!(reply, Ok(Packet::PubAck(ref a)) if a.reason == 0),
            "{reply:?}"
        );
        return;
    }
    match reply {
        Ok(Packet::PubAck(a)) => assert_eq!(a.reason, rc::PAYLOAD_FORMAT_INVALID, "{a:?}"),
        Ok(Packet::Disconnect(d)) => assert_eq!(d.reason, rc::PAYLOAD_FORMAT_INVALID, "{d:?}"),
        other => panic!("expected PUBACK/DISCONNECT 0x99, got {other:?}"),
    }
    s.expect_nothing(Duration::from_millis(500));
}

/// (3.2.2.3.4) A PUBLISH with a QoS above the server's Maximum QoS: DISCONNECT 0x9B (QoS not
/// supported) [MQTT-3.2.2-11 is the client's side].
#[test]
fn publish_above_maximum_qos_is_disconnected_0x9b() {
    let b = Broker::start_with(&["max_qos 1"]);
    let mut p = V5::connected(b.port(), &unique_id("mq"));
    p.send(&Packet::Publish(publish("mq/t", b"x", 2, false, 1)));
    p.expect_disconnect_code(rc::QOS_NOT_SUPPORTED, "QoS 2 above Maximum QoS 1");
}

/// (3.2.2.3.5) A PUBLISH with RETAIN 1 when Retain Available is 0: DISCONNECT 0x9A (Retain not
/// supported) [MQTT-3.2.2-14 is the client's side].
#[test]
fn retained_publish_when_retain_unavailable_is_disconnected_0x9a() {
    let b = Broker::start_with(&["retain_available false"]);
    let mut p = V5::connected(b.port(), &unique_id("rn"));
    p.send(&Packet::Publish(publish("rn/t", b"x", 1, true, 1)));
    p.expect_disconnect_code(
        rc::RETAIN_NOT_SUPPORTED,
        "RETAIN with retain_available false",
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

/// [MQTT-3.1.2-2] A CONNECT with an unknown protocol level (6): the server refuses it with
/// "unsupported protocol version" and closes. The level is unknown, so either CONNACK form is
/// acceptable: 3.1.1's return code 0x01 (what both midge and mosquitto send) or 5.0's 0x84.
#[test]
fn unsupported_protocol_level_is_refused() {
    let b = Broker::start();
    let mut bytes = common::v5::enc(&Packet::Connect(connect(&unique_id("lvl"))));
    let i = bytes
        .windows(5)
        .position(|w| w == b"MQTT\x05")
        .expect("protocol name");
    bytes[i + 4] = 6;
    let mut v = V5::tcp(b.port());
    v.send_bytes(&bytes);
    let got = v.raw.expect_closed(STEP);
    let first = got.first().expect("a CONNACK before the close");
    assert_eq!(first.kind(), common::raw::CONNACK, "{got:?}");
    assert!(
        first.body == [0, 1] || (first.body.len() >= 3 && first.body[1] == 0x84),
        "CONNACK 0x01 (3.1.1) or 0x84 (5.0): {first:?}"
    );
}

/// (3.1.2.11.3, 4.13.1) Receive Maximum 0 in CONNECT is a Protocol Error; the server closes
/// the connection, and midge first sends CONNACK 0x82 (4.13.1 lets a server send the CONNACK
/// for an error in CONNECT; midge's decoder documents that it does).
#[test]
fn receive_maximum_0_in_connect_gets_connack_0x82() {
    let b = Broker::start();
    let mut c = connect(&unique_id("rm0"));
    c.properties.receive_maximum = Some(0);
    let mut v = V5::tcp(b.port());
    v.send(&Packet::Connect(c));
    let got = v.raw.expect_closed(STEP);
    match got.first() {
        Some(p) if p.kind() == common::raw::CONNACK => {
            assert!(p.body.len() >= 2, "{p:?}");
            assert_eq!(p.body[1], rc::PROTOCOL_ERROR, "CONNACK reason: {p:?}");
        }
        // mosquitto 2.0.11 closes without a CONNACK: allowed (4.13.1 "MAY send a CONNACK").
        None if b.is_mosquitto() => {}
        other => panic!("expected CONNACK 0x82, got {other:?}"),
    }
}
