use std::sync::Arc;

use super::*;
use crate::message::{Message, SharedMessage};
use crate::protocol::{Packet, PubResp, QoS};

fn msg(n: u8) -> SharedMessage {
    Arc::new(Message {
        topic: "t".into(),
        payload: bytes::Bytes::from(vec![n]),
        qos: QoS::ExactlyOnce,
        retain: false,
        properties: Default::default(),
        expires_at: None,
        origin: None,
    })
}

fn d(n: u8, qos: QoS) -> Delivery {
    Delivery::new(msg(n), qos, false)
}

fn session(max_inflight: u16, max_queued: u32) -> Session {
    let mut s = Session::new(
        "c".into(),
        u32::MAX,
        ProtocolVersion::V311,
        Limits {
            max_inflight,
            max_queued,
            max_queued_bytes: 0,
            max_packet_size: 0,
            max_inflight_bytes: 0,
        },
    );
    s.conn = Some(0);
    s
}

fn publish(offer: Offer) -> crate::protocol::Publish {
    match offer {
        Offer::Send(p) => p.to_publish(),
        other => panic!("expected a PUBLISH, got {other:?}"),
    }
}

#[test]
fn qos1_window_holds_back_until_puback() {
    let mut s = session(2, 10);
    let a = publish(s.offer(d(1, QoS::AtLeastOnce), &mut Batch::new()));
    let b = publish(s.offer(d(2, QoS::AtLeastOnce), &mut Batch::new()));
    assert_ne!(a.packet_id, 0);
    assert_ne!(a.packet_id, b.packet_id);
    assert_eq!(
        s.offer(d(3, QoS::AtLeastOnce), &mut Batch::new()),
        Offer::Queued
    );
    assert_eq!(s.on_puback(a.packet_id, &mut Batch::new()), Ack::Done);
    assert_eq!(
        s.on_puback(a.packet_id, &mut Batch::new()),
        Ack::Unknown,
        "a second PUBACK acknowledges nothing"
    );
    let mut out = Vec::new();
    s.fill_window(&mut out, &mut Batch::new());
    assert_eq!(out.len(), 1);
    let Packet::Publish(c) = &out[0].to_packet() else {
        panic!()
    };
    assert_eq!(c.payload[0], 3);
}

#[test]
fn qos2_flow_goes_pubrec_pubrel_pubcomp() {
    let mut s = session(0, 0);
    let p = publish(s.offer(d(1, QoS::ExactlyOnce), &mut Batch::new()));
    assert_eq!(
        s.on_pubcomp(p.packet_id, &mut Batch::new()),
        Ack::Violation,
        "PUBCOMP before PUBREC is out of its flow"
    );
    assert_eq!(
        s.on_puback(p.packet_id, &mut Batch::new()),
        Ack::Violation,
        "PUBACK for a QoS 2 message"
    );
    assert_eq!(
        s.on_pubrec(p.packet_id, 0, &mut Batch::new()),
        PubRec::Release(p.packet_id)
    );
    assert_eq!(s.on_pubcomp(p.packet_id, &mut Batch::new()), Ack::Done);
    assert!(s.inflight.is_empty());
    assert_eq!(s.on_pubcomp(p.packet_id, &mut Batch::new()), Ack::Unknown);
    // A QoS 1 message answered with QoS 2 acknowledgements.
    let q1 = publish(s.offer(d(2, QoS::AtLeastOnce), &mut Batch::new()));
    assert_eq!(
        s.on_pubcomp(q1.packet_id, &mut Batch::new()),
        Ack::Violation
    );
    assert_eq!(
        s.on_pubrec(q1.packet_id, 0, &mut Batch::new()),
        PubRec::Violation
    );
}

#[test]
fn resume_resends_with_dup_and_same_packet_id() {
    // [MQTT-4.4.0-1]
    let mut s = session(10, 10);
    let p1 = publish(s.offer(d(1, QoS::AtLeastOnce), &mut Batch::new()));
    let p2 = publish(s.offer(d(2, QoS::ExactlyOnce), &mut Batch::new()));
    s.on_pubrec(p2.packet_id, 0, &mut Batch::new());
    s.conn = None;
    assert_eq!(
        s.offer(d(3, QoS::AtLeastOnce), &mut Batch::new()),
        Offer::Queued
    );
    assert_eq!(
        s.offer(d(4, QoS::AtMostOnce), &mut Batch::new()),
        Offer::Dropped
    );
    s.conn = Some(1);
    let mut out = Vec::new();
    s.resume(&mut out, &mut Batch::new());
    assert_eq!(out.len(), 3);
    match &out[0].to_packet() {
        Packet::Publish(p) => {
            assert!(p.dup);
            assert_eq!(p.packet_id, p1.packet_id);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        out[1].to_packet(),
        Packet::PubRel(PubResp::new(p2.packet_id))
    );
    match &out[2].to_packet() {
        Packet::Publish(p) => assert!(!p.dup && p.payload[0] == 3),
        other => panic!("{other:?}"),
    }
}

/// What a durable session writes into the store batch, as (kind, seq, in flight).
fn journal(b: &mut Batch) -> Vec<(&'static str, u64, bool)> {
    use crate::store::BatchOp;
    b.ops
        .drain(..)
        .map(|op| match op {
            BatchOp::PutQueued(_, seq, _, flow) => ("put", seq, flow.is_some()),
            BatchOp::UpdateQueued(_, seq, flow) => ("update", seq, flow.is_some()),
            BatchOp::DelQueued(_, seq) => ("delete", seq, false),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

#[test]
fn a_durable_session_journals_every_step_of_its_deliveries() {
    let mut s = session(1, 10);
    s.durable = true;
    let mut b = Batch::new();
    let a = publish(s.offer(d(1, QoS::AtLeastOnce), &mut b));
    assert_eq!(s.offer(d(2, QoS::AtLeastOnce), &mut b), Offer::Queued);
    assert_eq!(
        s.offer(d(3, QoS::AtMostOnce), &mut b),
        Offer::Send(SendPublish {
            delivery: d(3, QoS::AtMostOnce),
            packet_id: 0,
            dup: false
        })
    );
    assert_eq!(
        journal(&mut b),
        [("put", 1, true), ("put", 2, false)],
        "QoS 0 is never stored"
    );
    assert_eq!(s.on_puback(a.packet_id, &mut b), Ack::Done);
    let mut out = Vec::new();
    s.fill_window(&mut out, &mut b);
    assert_eq!(journal(&mut b), [("delete", 1, false), ("update", 2, true)]);
    // Not durable: nothing is written.
    s.durable = false;
    s.offer(d(4, QoS::AtLeastOnce), &mut b);
    assert!(b.is_empty());
}

#[test]
fn queued_messages_the_acl_now_refuses_are_dropped_when_they_leave_the_queue() {
    // A recovered session queues before its client's CONNECT fixes the ACL.
    let mut s = session(10, 10);
    s.durable = true;
    s.conn = None;
    let mut b = Batch::new();
    assert_eq!(s.offer(d(1, QoS::AtLeastOnce), &mut b), Offer::Queued);
    b.clear();
    let acl = crate::auth::Acl::parse("user u\ntopic read other\n", "acl").unwrap();
    s.acl = acl.for_client("c", Some("u"));
    s.conn = Some(0);
    let mut out = Vec::new();
    s.fill_window(&mut out, &mut b);
    assert!(out.is_empty(), "topic t is not readable: {out:?}");
    assert_eq!(journal(&mut b), [("delete", 1, false)]);
}

#[test]
fn resume_drops_inflight_messages_the_new_acl_refuses_and_frees_their_ids() {
    // Another user resumes the session (same client id): what it may not read is not
    // resent; a PUBREL (no message in it) still is.
    let mut s = session(10, 10);
    s.durable = true;
    let mut b = Batch::new();
    let p1 = publish(s.offer(d(1, QoS::AtLeastOnce), &mut b));
    let p2 = publish(s.offer(d(2, QoS::ExactlyOnce), &mut b));
    let p3 = publish(s.offer(d(3, QoS::ExactlyOnce), &mut b));
    assert!(matches!(
        s.on_pubrec(p3.packet_id, 0, &mut b),
        PubRec::Release(_)
    ));
    s.conn = None;
    b.clear();
    let acl = crate::auth::Acl::parse("user u\ntopic read other\n", "acl").unwrap();
    s.acl = acl.for_client("c", Some("u"));
    s.conn = Some(1);
    let mut out = Vec::new();
    s.resume(&mut out, &mut b);
    assert_eq!(out, [Outgoing::PubRel(p3.packet_id)]);
    assert_eq!(s.inflight.len(), 1);
    assert_eq!(
        journal(&mut b),
        [("delete", 1, false), ("delete", 2, false)]
    );
    assert_eq!(s.on_puback(p1.packet_id, &mut b), Ack::Unknown);
    assert_eq!(
        s.on_pubrec(p2.packet_id, 0, &mut b),
        PubRec::Unknown,
        "the id is free again"
    );
}

#[test]
fn queue_is_bounded() {
    let mut s = session(1, 2);
    s.conn = None;
    assert_eq!(
        s.offer(d(1, QoS::AtLeastOnce), &mut Batch::new()),
        Offer::Queued
    );
    assert_eq!(
        s.offer(d(2, QoS::AtLeastOnce), &mut Batch::new()),
        Offer::Queued
    );
    assert_eq!(
        s.offer(d(3, QoS::AtLeastOnce), &mut Batch::new()),
        Offer::Dropped
    );
    assert_eq!(s.dropped, 1);
}

/// A message of `len` payload bytes.
fn sized(len: usize) -> Delivery {
    let mut m = Arc::unwrap_or_clone(msg(0));
    m.payload = bytes::Bytes::from(vec![0x5a; len]);
    Delivery::new(Arc::new(m), QoS::AtLeastOnce, false)
}

#[test]
fn queue_is_bounded_in_payload_bytes_too() {
    let mut s = session(1, 0);
    s.limits.max_queued_bytes = 250;
    let mut b = Batch::new();
    // The window takes the first; the queue takes messages while it holds less than
    // 250 bytes (as mosquitto: the last one may cross the limit), then drops.
    let first = publish(s.offer(sized(100), &mut b));
    for _ in 0..3 {
        assert_eq!(s.offer(sized(100), &mut b), Offer::Queued);
    }
    assert_eq!(s.queued_bytes(), 300);
    assert_eq!(s.offer(sized(1), &mut b), Offer::Dropped);
    assert_eq!((s.dropped, s.queue.len()), (1, 3));
    // An acknowledgement lets one queued message into the window: room again.
    assert_eq!(s.on_puback(first.packet_id, &mut b), Ack::Done);
    let mut out = Vec::new();
    s.fill_window(&mut out, &mut b);
    assert_eq!((out.len(), s.queued_bytes()), (1, 200));
    assert_eq!(s.offer(sized(100), &mut b), Offer::Queued);
    assert_eq!(s.queued_bytes(), 300);
    // QoS 0 to a connected client is not queued and not counted.
    assert!(matches!(
        s.offer(Delivery::new(msg(9), QoS::AtMostOnce, false), &mut b),
        Offer::Send(_)
    ));
    assert_eq!(s.queued_bytes(), 300);
}

#[test]
fn window_is_bounded_in_payload_bytes_with_max_inflight_bytes() {
    let mut s = session(0, 0);
    s.limits.max_inflight_bytes = 250;
    let mut b = Batch::new();
    // Messages go out while less than 250 bytes are in flight (as mosquitto: the last one
    // may cross the limit), then wait in the queue.
    let first = publish(s.offer(sized(100), &mut b));
    publish(s.offer(sized(100), &mut b));
    publish(s.offer(sized(100), &mut b));
    assert_eq!(s.offer(sized(10), &mut b), Offer::Queued);
    assert_eq!(s.inflight.len(), 3);
    // An acknowledgement frees 100 bytes: 200 < 250, the queued one goes out.
    assert_eq!(s.on_puback(first.packet_id, &mut b), Ack::Done);
    let mut out = Vec::new();
    s.fill_window(&mut out, &mut b);
    assert_eq!((out.len(), s.inflight.len(), s.queue.len()), (1, 3, 0));
}

#[test]
fn packet_ids_skip_ids_in_flight_and_zero() {
    let mut s = session(0, 0);
    s.next_packet_id = u16::MAX - 1;
    let a = publish(s.offer(d(1, QoS::AtLeastOnce), &mut Batch::new()));
    let b = publish(s.offer(d(2, QoS::AtLeastOnce), &mut Batch::new()));
    assert_eq!((a.packet_id, b.packet_id), (u16::MAX, 1));
}
