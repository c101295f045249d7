//! The client session's flows, without sockets: packets in, packets and events out.

use super::*;
use bytes::Bytes;

use crate::protocol::reason::v3;
use crate::protocol::{ConnAck, PubResp, QoS, SubAck};

fn cfg(version: ProtocolVersion) -> SessionConfig {
    let mut c = SessionConfig::new(version, "bridge-1");
    c.keep_alive = 10;
    c.max_inflight = 2;
    c
}

fn output(s: &mut ClientSession, now: Instant) -> Vec<Packet> {
    s.take_output(now).collect()
}

fn events(s: &mut ClientSession) -> Vec<Event> {
    std::iter::from_fn(|| s.next_event()).collect()
}

fn connack(code: u8) -> Packet {
    Packet::ConnAck(ConnAck {
        session_present: false,
        code,
        properties: Properties::default(),
    })
}

/// A session past CONNACK, its CONNECT and event taken.
fn connected(version: ProtocolVersion, now: Instant) -> ClientSession {
    let mut s = ClientSession::new(cfg(version), now);
    output(&mut s, now);
    s.handle(connack(0));
    assert_eq!(
        events(&mut s),
        vec![Event::Connected {
            session_present: false
        }]
    );
    s
}

fn incoming(qos: QoS, id: u16) -> Publish {
    Publish {
        qos,
        topic: ByteStr::from("a/b"),
        packet_id: id,
        payload: Bytes::from_static(b"hi"),
        ..Publish::default()
    }
}

#[test]
fn connect_carries_the_configured_fields() {
    let now = Instant::now();
    let mut c = cfg(ProtocolVersion::V5);
    c.username = Some("u".into());
    c.password = Some(Bytes::from_static(b"p"));
    c.clean_start = false;
    let mut s = ClientSession::new(c, now);
    let out = output(&mut s, now);
    let [Packet::Connect(connect)] = out.as_slice() else {
        panic!("expected one CONNECT, got {out:?}");
    };
    assert_eq!(connect.client_id.as_str(), "bridge-1");
    assert_eq!(connect.username.as_ref().map(|u| u.as_str()), Some("u"));
    assert_eq!(connect.password.as_deref(), Some(&b"p"[..]));
    assert_eq!(connect.keep_alive, 10);
    assert!(!connect.clean_start);
    assert_eq!(connect.properties.receive_maximum, Some(2));
    assert_eq!(connect.properties.maximum_packet_size, Some(1024 * 1024));
}

#[test]
fn connack_refusal_closes_with_its_code() {
    for (version, code) in [
        (ProtocolVersion::V311, v3::NOT_AUTHORIZED),
        (ProtocolVersion::V5, v5::BAD_USER_NAME_OR_PASSWORD),
    ] {
        let now = Instant::now();
        let mut s = ClientSession::new(cfg(version), now);
        output(&mut s, now);
        s.handle(connack(code));
        assert_eq!(
            events(&mut s),
            vec![Event::Closed(CloseReason::Refused(code))]
        );
        assert!(s.is_closed());
        assert_eq!(
            s.publish("t".into(), Bytes::new(), QoS::AtMostOnce, false),
            Err(SendError::NotConnected)
        );
    }
}

#[test]
fn nothing_is_published_before_connack() {
    let now = Instant::now();
    let mut s = ClientSession::new(cfg(ProtocolVersion::V311), now);
    assert_eq!(
        s.publish("t".into(), Bytes::new(), QoS::AtLeastOnce, false),
        Err(SendError::NotConnected)
    );
    assert_eq!(
        s.subscribe(&[("t".into(), QoS::AtMostOnce)]),
        Err(SendError::NotConnected)
    );
}

#[test]
fn connack_that_never_comes_times_out() {
    let now = Instant::now();
    let mut s = ClientSession::new(cfg(ProtocolVersion::V311), now);
    output(&mut s, now);
    s.tick(now + Duration::from_secs(9));
    assert!(events(&mut s).is_empty());
    s.tick(now + Duration::from_secs(10));
    assert!(matches!(
        events(&mut s).as_slice(),
        [Event::Closed(CloseReason::Protocol(_))]
    ));
}

#[test]
fn outgoing_qos2_runs_pubrec_pubrel_pubcomp() {
    let now = Instant::now();
    let mut s = connected(ProtocolVersion::V311, now);
    let id = s
        .publish(
            "t".into(),
            Bytes::from_static(b"x"),
            QoS::ExactlyOnce,
            false,
        )
        .unwrap();
    assert_ne!(id, 0);
    let out = output(&mut s, now);
    assert!(
        matches!(out.as_slice(), [Packet::Publish(p)] if p.packet_id == id && p.qos == QoS::ExactlyOnce)
    );
    s.handle(Packet::PubRec(PubResp::new(id)));
    assert_eq!(output(&mut s, now), vec![Packet::PubRel(PubResp::new(id))]);
    assert_eq!(
        events(&mut s),
        vec![Event::Received { packet_id: id }],
        "received, not done before PUBCOMP"
    );
    // A repeated PUBREC is answered with PUBREL again, and reported once.
    s.handle(Packet::PubRec(PubResp::new(id)));
    assert_eq!(output(&mut s, now), vec![Packet::PubRel(PubResp::new(id))]);
    assert!(events(&mut s).is_empty());
    s.handle(Packet::PubComp(PubResp::new(id)));
    assert_eq!(
        events(&mut s),
        vec![Event::Acked {
            packet_id: id,
            reason: 0
        }]
    );
    assert_eq!(s.inflight(), 0);
    // A late PUBCOMP for a finished flow changes nothing.
    s.handle(Packet::PubComp(PubResp::new(id)));
    assert!(events(&mut s).is_empty());
}

#[test]
fn outgoing_qos2_ends_at_a_failing_pubrec_in_v5() {
    let now = Instant::now();
    let mut s = connected(ProtocolVersion::V5, now);
    let id = s
        .publish("t".into(), Bytes::new(), QoS::ExactlyOnce, false)
        .unwrap();
    output(&mut s, now);
    let mut rec = PubResp::new(id);
    rec.reason = v5::NOT_AUTHORIZED;
    s.handle(Packet::PubRec(rec));
    assert!(output(&mut s, now).is_empty(), "no PUBREL after a failure");
    assert_eq!(
        events(&mut s),
        vec![Event::Acked {
            packet_id: id,
            reason: v5::NOT_AUTHORIZED
        }]
    );
}

#[test]
fn incoming_qos2_is_delivered_once_and_released_by_pubrel() {
    let now = Instant::now();
    let mut s = connected(ProtocolVersion::V311, now);
    s.handle(Packet::Publish(incoming(QoS::ExactlyOnce, 7)));
    assert_eq!(output(&mut s, now), vec![Packet::PubRec(PubResp::new(7))]);
    assert!(matches!(events(&mut s).as_slice(), [Event::Message(p)] if p.packet_id == 7));
    // The same id again (DUP) before PUBREL: acknowledged, not delivered twice.
    let mut dup = incoming(QoS::ExactlyOnce, 7);
    dup.dup = true;
    s.handle(Packet::Publish(dup));
    assert_eq!(output(&mut s, now), vec![Packet::PubRec(PubResp::new(7))]);
    assert!(events(&mut s).is_empty());
    s.handle(Packet::PubRel(PubResp::new(7)));
    assert_eq!(output(&mut s, now), vec![Packet::PubComp(PubResp::new(7))]);
    // After the release the id is free: a new message with it is a new message.
    s.handle(Packet::Publish(incoming(QoS::ExactlyOnce, 7)));
    assert_eq!(events(&mut s).len(), 1);
}

#[test]
fn with_manual_acks_incoming_messages_wait_for_the_owners_acknowledgement() {
    let now = Instant::now();
    let mut c = cfg(ProtocolVersion::V311);
    c.manual_acks = true;
    let mut s = ClientSession::new(c, now);
    output(&mut s, now);
    s.handle(connack(0));
    events(&mut s);
    // QoS 1: delivered, not acknowledged until the owner says so.
    s.handle(Packet::Publish(incoming(QoS::AtLeastOnce, 3)));
    assert!(output(&mut s, now).is_empty());
    assert!(matches!(events(&mut s).as_slice(), [Event::Message(p)] if p.packet_id == 3));
    s.acknowledge(3, false);
    assert_eq!(output(&mut s, now), vec![Packet::PubAck(PubResp::new(3))]);
    // QoS 2: no PUBREC, not even for a resend (DUP), before the owner's acknowledgement;
    // after it, a resend gets its PUBREC again and is still not delivered twice.
    s.handle(Packet::Publish(incoming(QoS::ExactlyOnce, 7)));
    let mut dup = incoming(QoS::ExactlyOnce, 7);
    dup.dup = true;
    s.handle(Packet::Publish(dup.clone()));
    assert!(output(&mut s, now).is_empty());
    assert_eq!(events(&mut s).len(), 1);
    s.acknowledge(7, true);
    assert_eq!(output(&mut s, now), vec![Packet::PubRec(PubResp::new(7))]);
    s.handle(Packet::Publish(dup));
    assert_eq!(output(&mut s, now), vec![Packet::PubRec(PubResp::new(7))]);
    assert!(events(&mut s).is_empty());
    s.handle(Packet::PubRel(PubResp::new(7)));
    assert_eq!(output(&mut s, now), vec![Packet::PubComp(PubResp::new(7))]);
    // A QoS 2 id no longer held is not acknowledged.
    s.acknowledge(7, true);
    assert!(output(&mut s, now).is_empty());
}

#[test]
fn incoming_qos2_beyond_the_receive_maximum_is_a_protocol_error_in_v5() {
    let now = Instant::now();
    let mut s = connected(ProtocolVersion::V5, now);
    s.handle(Packet::Publish(incoming(QoS::ExactlyOnce, 1)));
    s.handle(Packet::Publish(incoming(QoS::ExactlyOnce, 2)));
    output(&mut s, now);
    events(&mut s);
    s.handle(Packet::Publish(incoming(QoS::ExactlyOnce, 3)));
    assert!(matches!(
        output(&mut s, now).as_slice(),
        [Packet::Disconnect(d)] if d.reason == v5::PROTOCOL_ERROR
    ));
    assert!(matches!(
        events(&mut s).as_slice(),
        [Event::Closed(CloseReason::Protocol(_))]
    ));
}

#[test]
fn pubrel_for_an_unknown_id_gets_pubcomp_not_found_in_v5() {
    let now = Instant::now();
    let mut s = connected(ProtocolVersion::V5, now);
    s.handle(Packet::PubRel(PubResp::new(9)));
    let mut comp = PubResp::new(9);
    comp.reason = v5::PACKET_IDENTIFIER_NOT_FOUND;
    assert_eq!(output(&mut s, now), vec![Packet::PubComp(comp)]);
}

#[test]
fn incoming_qos1_is_acked_and_qos0_is_not() {
    let now = Instant::now();
    let mut s = connected(ProtocolVersion::V311, now);
    s.handle(Packet::Publish(incoming(QoS::AtLeastOnce, 3)));
    s.handle(Packet::Publish(incoming(QoS::AtMostOnce, 0)));
    assert_eq!(output(&mut s, now), vec![Packet::PubAck(PubResp::new(3))]);
    assert_eq!(events(&mut s).len(), 2);
}

#[test]
fn the_inflight_window_bounds_outgoing_qos1_and_2() {
    let now = Instant::now();
    let mut s = connected(ProtocolVersion::V311, now);
    let a = s
        .publish("t".into(), Bytes::new(), QoS::AtLeastOnce, false)
        .unwrap();
    s.publish("t".into(), Bytes::new(), QoS::ExactlyOnce, false)
        .unwrap();
    assert_eq!(
        s.publish("t".into(), Bytes::new(), QoS::AtLeastOnce, false),
        Err(SendError::InflightFull)
    );
    // QoS 0 does not take a slot.
    assert_eq!(
        s.publish("t".into(), Bytes::new(), QoS::AtMostOnce, false),
        Ok(0)
    );
    s.handle(Packet::PubAck(PubResp::new(a)));
    assert!(s
        .publish("t".into(), Bytes::new(), QoS::AtLeastOnce, false)
        .is_ok());
}

#[test]
fn a_v5_server_receive_maximum_lowers_the_window() {
    let now = Instant::now();
    let mut c = cfg(ProtocolVersion::V5);
    c.max_inflight = 10;
    let mut s = ClientSession::new(c, now);
    output(&mut s, now);
    let mut ack = ConnAck::default();
    ack.properties.receive_maximum = Some(1);
    s.handle(Packet::ConnAck(ack));
    s.publish("t".into(), Bytes::new(), QoS::AtLeastOnce, false)
        .unwrap();
    assert_eq!(
        s.publish("t".into(), Bytes::new(), QoS::AtLeastOnce, false),
        Err(SendError::InflightFull)
    );
}

#[test]
fn keep_alive_pings_when_idle_and_closes_without_pingresp() {
    let now = Instant::now();
    let mut s = connected(ProtocolVersion::V311, now);
    s.tick(now + Duration::from_secs(9));
    assert!(output(&mut s, now).is_empty());
    let t = now + Duration::from_secs(10);
    assert_eq!(s.next_deadline(), Some(t));
    s.tick(t);
    assert_eq!(output(&mut s, t), vec![Packet::PingReq]);
    // Answered: the next ping is a keep-alive after the last one was sent.
    s.handle(Packet::PingResp);
    s.tick(t + Duration::from_secs(5));
    assert!(output(&mut s, t).is_empty());
    let t2 = t + Duration::from_secs(10);
    s.tick(t2);
    assert_eq!(output(&mut s, t2), vec![Packet::PingReq]);
    // Not answered within another keep-alive: the session is over.
    s.tick(t2 + Duration::from_secs(10));
    assert!(matches!(
        events(&mut s).as_slice(),
        [Event::Closed(CloseReason::Protocol(why))] if why.contains("PINGRESP")
    ));
}

#[test]
fn sending_anything_postpones_the_ping() {
    let now = Instant::now();
    let mut s = connected(ProtocolVersion::V311, now);
    let t = now + Duration::from_secs(6);
    s.publish("t".into(), Bytes::new(), QoS::AtMostOnce, false)
        .unwrap();
    output(&mut s, t);
    s.tick(now + Duration::from_secs(10));
    assert!(output(&mut s, t).is_empty());
    s.tick(t + Duration::from_secs(10));
    assert_eq!(output(&mut s, t), vec![Packet::PingReq]);
}

#[test]
fn suback_reports_the_granted_codes() {
    let now = Instant::now();
    let mut s = connected(ProtocolVersion::V311, now);
    let id = s
        .subscribe(&[
            ("a/#".into(), QoS::ExactlyOnce),
            ("b".into(), QoS::AtMostOnce),
        ])
        .unwrap();
    let out = output(&mut s, now);
    assert!(
        matches!(out.as_slice(), [Packet::Subscribe(sub)] if sub.packet_id == id
        && sub.filters.len() == 2 && sub.filters[0].1.qos == QoS::ExactlyOnce)
    );
    s.handle(Packet::SubAck(SubAck {
        packet_id: id,
        codes: vec![2, 0x80],
        properties: Properties::default(),
    }));
    assert_eq!(
        events(&mut s),
        vec![Event::Subscribed {
            packet_id: id,
            codes: vec![2, 0x80]
        }]
    );
}

#[test]
fn server_disconnect_and_unexpected_packets_close_the_session() {
    let now = Instant::now();
    let mut s = connected(ProtocolVersion::V5, now);
    s.handle(Packet::Disconnect(Disconnect {
        reason: v5::SERVER_SHUTTING_DOWN,
        properties: Properties::default(),
    }));
    assert_eq!(
        events(&mut s),
        vec![Event::Closed(CloseReason::Disconnected(
            v5::SERVER_SHUTTING_DOWN
        ))]
    );
    let mut s = connected(ProtocolVersion::V311, now);
    s.handle(Packet::PingReq);
    assert!(matches!(
        events(&mut s).as_slice(),
        [Event::Closed(CloseReason::Protocol(_))]
    ));
}

#[test]
fn a_resumed_session_resends_what_was_in_flight() {
    let now = Instant::now();
    let mut s = connected(ProtocolVersion::V311, now);
    let a = s
        .publish("t".into(), Bytes::new(), QoS::AtLeastOnce, false)
        .unwrap();
    let b = s
        .publish("t".into(), Bytes::new(), QoS::ExactlyOnce, false)
        .unwrap();
    output(&mut s, now);
    s.handle(Packet::PubRec(PubResp::new(b)));
    output(&mut s, now);
    // A second CONNACK on the same connection is a protocol error; a resumed session is the
    // owner's new connection, modelled here by going through CONNACK again.
    s.state = State::AwaitingConnAck;
    s.handle(Packet::ConnAck(ConnAck {
        session_present: true,
        ..ConnAck::default()
    }));
    let out = output(&mut s, now);
    assert!(matches!(out.as_slice(),
        [Packet::Publish(p), Packet::PubRel(r)] if p.packet_id == a && p.dup && r.packet_id == b));
}

#[test]
fn packet_ids_skip_those_in_use_and_wrap() {
    let now = Instant::now();
    let mut s = connected(ProtocolVersion::V311, now);
    s.next_id = u16::MAX;
    let a = s
        .publish("t".into(), Bytes::new(), QoS::AtLeastOnce, false)
        .unwrap();
    assert_eq!(a, u16::MAX);
    s.next_id = u16::MAX;
    let b = s
        .publish("t".into(), Bytes::new(), QoS::AtLeastOnce, false)
        .unwrap();
    assert_eq!(b, 1, "0 is never an id and MAX is in use");
}

#[test]
fn owner_numbered_publishes_and_releases_resume_flows() {
    let now = Instant::now();
    let mut s = connected(ProtocolVersion::V311, now);
    let publish = |id: u16, dup: bool| Publish {
        dup,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "t".into(),
        packet_id: id,
        properties: Default::default(),
        payload: Bytes::from_static(b"x"),
    };
    s.publish_packet(publish(7, true)).unwrap();
    assert_eq!(s.publish_packet(publish(7, false)), Err(SendError::IdInUse));
    s.release(9).unwrap();
    assert_eq!(
        s.publish_packet(publish(11, false)),
        Err(SendError::InflightFull)
    );
    // A resend beyond the window is still taken (its flow began on an earlier connection).
    s.publish_packet(publish(13, true)).unwrap();
    assert_eq!(
        output(&mut s, now),
        vec![
            Packet::Publish(publish(7, true)),
            Packet::PubRel(PubResp::new(9)),
            Packet::Publish(publish(13, true))
        ]
    );
    s.handle(Packet::PubComp(PubResp::new(9)));
    s.handle(Packet::PubAck(PubResp::new(7)));
    assert_eq!(
        events(&mut s),
        vec![
            Event::Acked {
                packet_id: 9,
                reason: 0
            },
            Event::Acked {
                packet_id: 7,
                reason: 0
            }
        ]
    );
    // SUBSCRIBE ids count down from the top, away from the owner's.
    let sub = s.subscribe(&[("a".into(), QoS::AtMostOnce)]).unwrap();
    assert_eq!(sub, u16::MAX);
}

/// A session on a new connection for `cfg`, holding `held` from the one before, past a
/// CONNACK that says whether the server kept the session.
fn reconnected(
    cfg: SessionConfig,
    held: Unreleased,
    session_present: bool,
    now: Instant,
) -> ClientSession {
    let mut s = ClientSession::new(cfg, now);
    s.resume_unreleased(held);
    output(&mut s, now);
    s.handle(Packet::ConnAck(ConnAck {
        session_present,
        ..ConnAck::default()
    }));
    events(&mut s);
    s
}

#[test]
fn incoming_qos2_ids_outlive_the_connection_while_the_server_keeps_the_session() {
    let now = Instant::now();
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let mut c = cfg(version);
        c.clean_start = false;
        let mut s = connected(version, now);
        s.handle(Packet::Publish(incoming(QoS::ExactlyOnce, 7)));
        assert_eq!(output(&mut s, now), vec![Packet::PubRec(PubResp::new(7))]);
        assert_eq!(events(&mut s).len(), 1);
        s.connection_lost("reset".into());
        let held = s.take_unreleased();
        assert_eq!(held.len(), 1);
        // The server resends the message (DUP) on the new connection: PUBREC again, no
        // second delivery [MQTT-4.3.3-2]; its PUBREL there gets a successful PUBCOMP.
        let mut s = reconnected(c, held, true, now);
        let mut dup = incoming(QoS::ExactlyOnce, 7);
        dup.dup = true;
        s.handle(Packet::Publish(dup));
        assert_eq!(output(&mut s, now), vec![Packet::PubRec(PubResp::new(7))]);
        assert!(events(&mut s).is_empty(), "{version:?}: delivered twice");
        s.handle(Packet::PubRel(PubResp::new(7)));
        assert_eq!(output(&mut s, now), vec![Packet::PubComp(PubResp::new(7))]);
        assert!(s.take_unreleased().is_empty());
    }
}

#[test]
fn incoming_qos2_ids_are_forgotten_when_the_server_starts_a_new_session() {
    let now = Instant::now();
    let mut c = cfg(ProtocolVersion::V311);
    c.clean_start = false;
    let mut s = connected(ProtocolVersion::V311, now);
    s.handle(Packet::Publish(incoming(QoS::ExactlyOnce, 7)));
    s.connection_lost("reset".into());
    let held = s.take_unreleased();
    let mut s = reconnected(c.clone(), held.clone(), false, now);
    s.handle(Packet::Publish(incoming(QoS::ExactlyOnce, 7)));
    assert_eq!(
        events(&mut s).len(),
        1,
        "a new message taken for a duplicate"
    );
    // A clean session holds nothing from before, whatever the CONNACK says.
    c.clean_start = true;
    let mut s = reconnected(c, held, true, now);
    s.handle(Packet::Publish(incoming(QoS::ExactlyOnce, 7)));
    assert_eq!(
        events(&mut s).len(),
        1,
        "a new message taken for a duplicate"
    );
}

#[test]
fn an_acknowledgement_between_connections_is_kept_for_the_resend() {
    let now = Instant::now();
    let mut c = cfg(ProtocolVersion::V311);
    c.clean_start = false;
    c.manual_acks = true;
    let mut s = ClientSession::new(c.clone(), now);
    output(&mut s, now);
    s.handle(connack(0));
    s.handle(Packet::Publish(incoming(QoS::ExactlyOnce, 7)));
    events(&mut s);
    s.connection_lost("reset".into());
    // The owner's acknowledgement comes while no connection is up.
    let mut held = s.take_unreleased();
    held.acknowledge(7);
    let mut s = reconnected(c, held, true, now);
    let mut dup = incoming(QoS::ExactlyOnce, 7);
    dup.dup = true;
    s.handle(Packet::Publish(dup));
    assert_eq!(output(&mut s, now), vec![Packet::PubRec(PubResp::new(7))]);
    assert!(events(&mut s).is_empty());
}

#[test]
fn ids_held_from_before_count_against_the_receive_maximum() {
    let now = Instant::now();
    let mut c = cfg(ProtocolVersion::V5);
    c.clean_start = false;
    let mut s = connected(ProtocolVersion::V5, now);
    s.handle(Packet::Publish(incoming(QoS::ExactlyOnce, 1)));
    s.handle(Packet::Publish(incoming(QoS::ExactlyOnce, 2)));
    s.connection_lost("reset".into());
    let mut s = reconnected(c, s.take_unreleased(), true, now);
    s.handle(Packet::Publish(incoming(QoS::ExactlyOnce, 3)));
    assert!(matches!(
        output(&mut s, now).as_slice(),
        [Packet::Disconnect(d)] if d.reason == v5::PROTOCOL_ERROR
    ));
}
