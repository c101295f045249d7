//! Bad input in every protocol version: each malformed or forbidden packet closes only the
//! offending connection (another client connected meanwhile keeps being served; for midge the
//! log names the reason), acknowledgements of the wrong flow, a second CONNECT, and the 5.0
//! DISCONNECT reason codes for malformed properties, with and without Request Problem
//! Information.

mod common;

use std::time::Duration;

use common::raw::{self, mqtt_str, packet, pubcomp, pubrec, Connect, Raw};
use common::v5::{connect, opts, publish, rc, V5};
use common::{unique_id, Broker, LOG_REASON_WORDS, STEP};
use midge::protocol::{Packet, Properties};

/// Starts a broker (with `extra` config lines) and an observer client; opens a raw connection
/// (after CONNECT/CONNACK when `connect_first`), sends `bad`, and asserts that the raw
/// connection is closed, the observer is still served, and (midge) the log gives a reason.
fn assert_closes_only_offender(extra: &[&str], connect_first: bool, bad: &[u8]) {
    let b = Broker::start_with(extra);
    let mut observer = Raw::subscribed(b.port(), "observer", &[("obs/t", 1)]);
    let mut offender = Raw::tcp(b.port());
    if connect_first {
        let (_, rc) = offender.handshake(&Connect::new("offender"));
        assert_eq!(rc, 0);
    }
    offender.send(bad);
    let got = offender.expect_closed(STEP);
    assert!(
        got.iter()
            .all(|p| p.kind() != raw::PUBACK && p.kind() != raw::SUBACK),
        "the bad packet must not be acknowledged: {got:?}"
    );
    // The broker keeps serving the observer and new clients.
    observer.ping();
    let mut publisher = Raw::connected(b.port(), "publisher");
    publisher.publish_complete("obs/t", b"still serving", 1, false, 1);
    assert_eq!(observer.recv_publish_ack().payload, b"still serving");
    if b.is_midge() {
        assert!(
            b.wait_log_contains_any(LOG_REASON_WORDS, Duration::from_secs(2)),
            "the log should say why the connection was closed (one of {LOG_REASON_WORDS:?}); log:\n{}",
            b.log()
        );
    }
}

/// [MQTT-2.2.3] (remaining length is at most 4 bytes) a fifth continuation byte is malformed.
#[test]
fn remaining_length_with_five_bytes_closes_connection() {
    let mut bad = vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01];
    bad.extend_from_slice(&[0u8; 16]);
    assert_closes_only_offender(&[], true, &bad);
}

/// [MQTT-3.8.1-1] SUBSCRIBE fixed-header flags must be 0b0010; 0b0000 is malformed.
#[test]
fn subscribe_with_reserved_flags_zero_closes_connection() {
    assert_closes_only_offender(
        &[],
        true,
        &raw::subscribe_with_flags(1, &[("x/y", 0)], 0x00),
    );
}

/// [MQTT-1.5.3-1] a topic that is not valid UTF-8 closes the connection.
#[test]
fn invalid_utf8_topic_closes_connection() {
    assert_closes_only_offender(
        &[],
        true,
        &raw::publish_raw(b"bad/\xFF\xFE", b"x", 0, false, false, 0),
    );
}

/// [MQTT-1.5.3-2] a topic containing U+0000 closes the connection.
#[test]
fn nul_in_topic_closes_connection() {
    assert_closes_only_offender(
        &[],
        true,
        &raw::publish_raw(b"a\0b", b"x", 0, false, false, 0),
    );
}

/// [MQTT-3.3.2-2] a PUBLISH topic name must not contain wildcards.
#[test]
fn wildcard_in_publish_topic_closes_connection() {
    assert_closes_only_offender(&[], true, &raw::publish("a/+/b", b"x", 1, false, 1));
}

/// [MQTT-3.3.2-2] the same with `#`.
#[test]
fn hash_in_publish_topic_closes_connection() {
    assert_closes_only_offender(&[], true, &raw::publish("a/#", b"x", 0, false, 0));
}

/// [MQTT-3.1.0-1] the first packet must be CONNECT: a PUBLISH first closes the connection.
#[test]
fn publish_before_connect_closes_connection() {
    assert_closes_only_offender(&[], false, &raw::publish("obs/t", b"early", 1, false, 1));
}

/// [MQTT-3.1.0-2] a second CONNECT is a protocol violation: the connection is closed.
#[test]
fn second_connect_closes_connection() {
    assert_closes_only_offender(&[], true, &Connect::new("offender").encode());
}

/// `max_packet_size 1000`: a larger packet closes the connection (and is not delivered).
#[test]
fn packet_larger_than_max_packet_size_closes_connection() {
    let payload = vec![b'x'; 2000];
    assert_closes_only_offender(
        &["max_packet_size 1000"],
        true,
        &raw::publish("obs/t", &payload, 1, false, 1),
    );
}

/// [MQTT-3.3.1-4] a PUBLISH with both QoS bits set (QoS 3) closes the connection.
#[test]
fn qos3_publish_closes_connection() {
    let mut bad = raw::publish("obs/t", b"x", 1, false, 1);
    bad[0] |= 0x06;
    assert_closes_only_offender(&[], true, &bad);
}

/// Bytes that are not MQTT at all (an HTTP request, then noise) close the connection.
#[test]
fn garbage_bytes_close_connection() {
    let mut bad = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    bad.extend((0..200u32).map(|i| (i.wrapping_mul(151) % 251) as u8));
    assert_closes_only_offender(&[], false, &bad);
}

/// [MQTT-3.1.2-3] the CONNECT reserved flag (bit 0) must be 0.
#[test]
fn connect_with_reserved_flag_set_closes_connection() {
    let mut bad = Connect::new("reserved").encode();
    // fixed header (2 bytes) + "MQTT" string (6) + level (1) => flags at index 9
    bad[9] |= 0x01;
    assert_closes_only_offender(&[], false, &bad);
}

/// An acknowledgement of another flow's type for a message in flight is a
/// protocol violation: the connection is closed, as mosquitto does (02-subpub-qos1-bad-pubcomp,
/// -qos2-bad-pubcomp). One for an unknown packet id is ignored.
#[test]
fn an_acknowledgement_of_the_wrong_flow_closes_the_connection() {
    let b = Broker::start();
    for (qos, bad) in [
        (1u8, pubcomp as fn(u16) -> Vec<u8>),
        (2, pubcomp),
        (1, pubrec),
    ] {
        let mut s = Raw::subscribed(b.port(), &unique_id("badack"), &[("bad/ack", qos)]);
        // Unknown ids are ignored.
        s.send(&raw::puback(999));
        s.send(&pubcomp(998));
        s.ping();
        let mut p = Raw::connected(b.port(), &unique_id("pub"));
        p.publish_complete("bad/ack", b"m", qos, false, 1);
        let m = s.expect_publish();
        s.send(&bad(m.pid));
        assert!(
            s.is_closed_within(Duration::from_secs(3)),
            "QoS {qos} answered with the wrong acknowledgement"
        );
    }
}

// ---------------------------------------------------------------- 5.0 reason codes---------------

/// A PUBLISH (QoS 1, packet id 1) whose property bytes are written by hand.
fn publish_with_raw_props(topic: &str, props: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = mqtt_str(topic.as_bytes());
    body.extend(1u16.to_be_bytes());
    body.push(props.len() as u8); // < 128: one-byte variable integer
    body.extend_from_slice(props);
    body.extend_from_slice(payload);
    packet(0x32, &body)
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
