//! Bad input: each malformed or forbidden packet closes only the offending connection; another
//! client connected meanwhile keeps being served. For midge the log must name the reason.

mod common;

use std::time::Duration;

use common::raw::{self, Connect, Raw};
use common::{Broker, LOG_REASON_WORDS, STEP};

/// Starts a broker (with `extra` config lines) and an observer client; opens a raw connection
/// (after CONNECT/CONNACK when `connect_first`), sends `bad`, and asserts that the raw
/// connection is closed, the observer is still served, and (midge) the log gives a reason.
fn assert_closes_only_offender(extra: &[&str], connect_first: bool, bad: &[u8]) {
    let b = Broker::start_with(extra);
    let mut observer = Raw::connected(b.port(), "observer");
    observer.subscribe(1, &[("obs/t", 1)]);
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
