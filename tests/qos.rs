//! QoS flows byte by byte with a raw client: acks and their packet ids, QoS 2 exactly once,
//! outgoing packet ids, redelivery with DUP, inflight window, offline queue limit.

mod common;

use std::time::Duration;

use common::raw::{self, Connect, Raw, PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL};
use common::{Broker, STEP};

const QUIET: Duration = Duration::from_millis(300);

/// [MQTT-4.3.2-2] a QoS 1 PUBLISH is answered with PUBACK `40 02 <id>` carrying its packet id.
#[test]
fn qos1_publish_is_acknowledged_with_puback_of_same_id() {
    let b = Broker::start();
    let mut c = Raw::connected(b.port(), "q1");
    c.send(&raw::publish("q1/t", b"x", 1, false, 0xBEEF));
    let ack = c.expect(PUBACK);
    assert_eq!((ack.first, ack.body.clone()), (0x40, vec![0xBE, 0xEF]));
}

/// [MQTT-4.3.3-2] QoS 2 receiver flow: PUBLISH -> PUBREC, PUBREL -> PUBCOMP, same packet id;
/// PUBREL from the broker side is not expected, PUBREC has flags 0.
#[test]
fn qos2_publish_flow_is_pubrec_pubrel_pubcomp() {
    let b = Broker::start();
    let mut c = Raw::connected(b.port(), "q2");
    c.send(&raw::publish("q2/t", b"x", 2, false, 0x0102));
    let rec = c.expect(PUBREC);
    assert_eq!((rec.first, rec.body.clone()), (0x50, vec![0x01, 0x02]));
    c.send(&raw::pubrel(0x0102));
    let comp = c.expect(PUBCOMP);
    assert_eq!((comp.first, comp.body.clone()), (0x70, vec![0x01, 0x02]));
}

/// [MQTT-4.3.3-2] (method B: store the packet id until PUBREL) a QoS 2 PUBLISH sent again with
/// DUP=1 and the same packet id before PUBREL is delivered to subscribers only once.
#[test]
fn qos2_duplicate_publish_before_pubrel_is_delivered_once() {
    let b = Broker::start();
    let mut s = Raw::connected(b.port(), "eo-sub");
    s.subscribe(1, &[("eo/t", 2)]);
    let mut p = Raw::connected(b.port(), "eo-pub");
    p.send(&raw::publish("eo/t", b"only once", 2, false, 42));
    assert_eq!(p.expect(PUBREC).pid(), 42);
    p.send(&raw::publish_raw(b"eo/t", b"only once", 2, false, true, 42));
    assert_eq!(
        p.expect(PUBREC).pid(),
        42,
        "the duplicate is acknowledged again"
    );
    p.send(&raw::pubrel(42));
    assert_eq!(p.expect(PUBCOMP).pid(), 42);
    let m = s.recv_publish_ack();
    assert_eq!(m.payload, b"only once");
    s.expect_nothing(QUIET);
}

/// [MQTT-2.3.1-1] [MQTT-4.3.2-1] outgoing QoS 1 PUBLISH to a subscriber has a non-zero packet id;
/// the broker accepts the PUBACK and uses distinct ids for unacknowledged messages.
#[test]
fn outgoing_qos1_uses_nonzero_distinct_packet_ids() {
    let b = Broker::start();
    let mut s = Raw::connected(b.port(), "out1-sub");
    s.subscribe(1, &[("out1/t", 1)]);
    let mut p = Raw::connected(b.port(), "out1-pub");
    p.publish_complete("out1/t", b"a", 1, false, 1);
    p.publish_complete("out1/t", b"b", 1, false, 2);
    let m1 = s.expect_publish();
    let m2 = s.expect_publish();
    assert_eq!((m1.qos, m2.qos), (1, 1));
    assert!(m1.pid != 0 && m2.pid != 0, "packet ids must be non-zero");
    assert_ne!(
        m1.pid, m2.pid,
        "two unacknowledged messages need distinct ids"
    );
    assert!(
        !m1.dup && !m2.dup,
        "first delivery has DUP=0 [MQTT-3.3.1-2]"
    );
    s.send(&raw::puback(m1.pid));
    s.send(&raw::puback(m2.pid));
    s.ping();
}

/// [MQTT-4.3.3-1] outgoing QoS 2: PUBLISH (id != 0) -> PUBREC from the client -> PUBREL
/// (flags 0b0010 [MQTT-3.6.1-1]) from the broker with the same id -> PUBCOMP from the client.
#[test]
fn outgoing_qos2_flow_to_subscriber() {
    let b = Broker::start();
    let mut s = Raw::connected(b.port(), "out2-sub");
    s.subscribe(1, &[("out2/t", 2)]);
    let mut p = Raw::connected(b.port(), "out2-pub");
    p.publish_complete("out2/t", b"two", 2, false, 3);
    let m = s.expect_publish();
    assert_eq!(m.qos, 2);
    assert_ne!(m.pid, 0);
    // No PUBREL before our PUBREC.
    s.expect_nothing(Duration::from_millis(100));
    s.send(&raw::pubrec(m.pid));
    let rel = s.expect(PUBREL);
    assert_eq!((rel.first, rel.pid()), (0x62, m.pid));
    s.send(&raw::pubcomp(m.pid));
    s.ping();
}

/// [MQTT-4.4.0-1] a persistent session's unacknowledged QoS 1 message is resent on reconnect
/// with DUP=1 [MQTT-3.3.1-1] and the same packet id.
#[test]
fn unacked_qos1_message_is_resent_with_dup_and_same_id_on_reconnect() {
    let b = Broker::start();
    let c = Connect::new("redeliver").clean(false);
    let (mut s, _) = Raw::connect(b.port(), &c);
    s.subscribe(1, &[("rd/t", 1)]);
    let mut p = Raw::connected(b.port(), "rd-pub");
    p.publish_complete("rd/t", b"again", 1, false, 1);
    let first = s.expect_publish();
    assert!(!first.dup);
    s.drop_abruptly(); // no PUBACK
    let (mut s, sp) = Raw::connect(b.port(), &c);
    assert!(sp, "session present");
    let again = s.expect_publish();
    assert_eq!(again.payload, b"again");
    assert_eq!(again.pid, first.pid, "same packet id");
    assert!(again.dup, "DUP=1 on redelivery");
    assert_eq!(again.qos, 1);
    s.send(&raw::puback(again.pid));
    s.expect_nothing(QUIET);
}

/// [MQTT-4.4.0-1] a persistent session's QoS 2 message that got PUBREC but no PUBCOMP: the
/// broker resends the PUBREL (not the PUBLISH) on reconnect.
#[test]
fn unfinished_qos2_resends_pubrel_on_reconnect() {
    let b = Broker::start();
    let c = Connect::new("redeliver2").clean(false);
    let (mut s, _) = Raw::connect(b.port(), &c);
    s.subscribe(1, &[("rd2/t", 2)]);
    let mut p = Raw::connected(b.port(), "rd2-pub");
    p.publish_complete("rd2/t", b"x", 2, false, 1);
    let m = s.expect_publish();
    s.send(&raw::pubrec(m.pid));
    assert_eq!(s.expect(PUBREL).pid(), m.pid);
    s.drop_abruptly(); // no PUBCOMP
    let (mut s, _) = Raw::connect(b.port(), &c);
    let rel = s.expect(PUBREL);
    assert_eq!((rel.first, rel.pid()), (0x62, m.pid));
    s.send(&raw::pubcomp(m.pid));
    s.expect_nothing(QUIET);
}

/// `max_inflight_messages 2`: a subscriber that does not ack gets only 2 QoS 1 messages; once
/// it acks, the rest arrive, in order. For midge each PUBACK opens exactly one slot.
/// mosquitto deviates from its own option: 2.0.11 sends TWO more messages after the first PUBACK
/// (3 unacknowledged with a window of 2), so the one-slot-per-ack step is checked for midge only.
#[test]
fn max_inflight_messages_limits_unacked_qos1_deliveries() {
    let b = Broker::start_with(&["max_inflight_messages 2"]);
    let mut s = Raw::connected(b.port(), "inflight-sub");
    s.subscribe(1, &[("if/t", 1)]);
    let mut p = Raw::connected(b.port(), "inflight-pub");
    for i in 0..5u8 {
        p.publish_complete("if/t", &[i], 1, false, 1 + i as u16);
    }
    let first = s.expect_publish();
    let second = s.expect_publish();
    assert_eq!(
        (first.payload.clone(), second.payload.clone()),
        (vec![0], vec![1])
    );
    s.expect_nothing(QUIET);
    let mut rest = Vec::new();
    if b.is_midge() {
        s.send(&raw::puback(first.pid));
        let third = s.expect_publish();
        assert_eq!(third.payload, vec![2]);
        s.expect_nothing(Duration::from_millis(200));
        s.send(&raw::puback(second.pid));
        s.send(&raw::puback(third.pid));
        rest.push(third);
    } else {
        s.send(&raw::puback(first.pid));
        s.send(&raw::puback(second.pid));
    }
    rest.extend(s.collect_publishes(5 - 2 - rest.len(), STEP));
    let payloads: Vec<u8> = rest.iter().map(|m| m.payload[0]).collect();
    assert_eq!(payloads, vec![2, 3, 4], "the rest, in order");
    s.expect_nothing(QUIET);
}

/// `max_queued_messages 10`: an offline persistent session keeps at most 10 queued messages
/// (plus the inflight window); some are delivered after reconnect.
#[test]
fn max_queued_messages_bounds_the_offline_queue() {
    let queued = 10;
    let inflight = 5;
    let b = Broker::start_with(&[
        &format!("max_queued_messages {queued}"),
        &format!("max_inflight_messages {inflight}"),
    ]);
    let c = Connect::new("queue-sub").clean(false);
    let (mut s, _) = Raw::connect(b.port(), &c);
    s.subscribe(1, &[("mq/t", 1)]);
    s.disconnect();
    let mut p = Raw::connected(b.port(), "queue-pub");
    for i in 0..50u16 {
        p.publish_complete("mq/t", &i.to_be_bytes(), 1, false, 1 + i);
    }
    let (mut s, sp) = Raw::connect(b.port(), &c);
    assert!(sp);
    let mut got = 0;
    while let Ok(pk) = s.recv(Duration::from_millis(500)) {
        assert_eq!(pk.kind(), PUBLISH);
        let m = pk.publish();
        s.send(&raw::puback(m.pid));
        got += 1;
    }
    assert!(got > 0, "queued messages are delivered on reconnect");
    assert!(
        got <= queued + inflight,
        "received {got}, more than max_queued_messages {queued} + inflight {inflight}"
    );
}
