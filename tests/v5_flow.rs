//! MQTT 5.0 flow control: Receive Maximum (both directions), Maximum Packet Size (both
//! directions), Topic Aliases (client -> server).

mod common;

use std::time::Duration;

use common::v5::{connect, opts, publish, rc, V5};
use common::{unique_id, Broker};
use midge::protocol::{Packet, PubResp, QoS};

/// A PUBLISH using `alias`; `topic` may be empty to use an existing mapping.
fn aliased(topic: &str, alias: u16, payload: &[u8], q: u8, pid: u16) -> midge::protocol::Publish {
    let mut m = publish("x", payload, q, false, pid);
    m.topic = topic.into();
    m.properties.topic_alias = Some(alias);
    m
}

/// [MQTT-3.3.2-12] (3.3.2.3.4) A Topic Alias set with a topic name is resolved for later
/// PUBLISHes with an empty topic, and can be remapped to another topic.
#[test]
fn topic_alias_mapping_is_set_used_and_remapped() {
    let b = Broker::start_with(&["max_topic_alias 5"]);
    let mut s = V5::connected(b.port(), &unique_id("tas"));
    s.subscribe(&[("ta/+", opts(1))]);
    let (mut p, ack) = V5::connect(b.port(), &connect(&unique_id("tap")));
    assert_eq!(ack.properties.topic_alias_maximum, Some(5));
    p.publish(aliased("ta/one", 3, b"1", 1, 1));
    p.publish(aliased("", 3, b"2", 1, 2));
    p.publish(aliased("ta/two", 3, b"3", 1, 3));
    p.publish(aliased("", 3, b"4", 1, 4));
    let got: Vec<(String, Vec<u8>)> = (0..4)
        .map(|_| {
            let m = s.recv_publish_ack();
            (m.topic.to_string(), m.payload.to_vec())
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("ta/one".into(), b"1".to_vec()),
            ("ta/one".into(), b"2".to_vec()),
            ("ta/two".into(), b"3".to_vec()),
            ("ta/two".into(), b"4".to_vec()),
        ]
    );
}

/// [MQTT-3.3.2-8] Topic Alias 0 is invalid: DISCONNECT 0x94 (Topic Alias invalid).
#[test]
fn topic_alias_0_is_disconnected_with_0x94() {
    let b = Broker::start();
    let mut p = V5::connected(b.port(), &unique_id("ta0"));
    p.send(&Packet::Publish(aliased("ta/zero", 0, b"x", 0, 0)));
    // mosquitto 2.0.11 answers 0x81 (Malformed Packet) instead of 0x94 (Topic Alias invalid).
    let expected = if b.is_midge() {
        rc::TOPIC_ALIAS_INVALID
    } else {
        rc::MALFORMED_PACKET
    };
    p.expect_disconnect_code(expected, "[MQTT-3.3.2-8]");
}

/// [MQTT-3.3.2-9] A Topic Alias above the server's Topic Alias Maximum: DISCONNECT 0x94.
#[test]
fn topic_alias_above_maximum_is_disconnected_with_0x94() {
    let b = Broker::start_with(&["max_topic_alias 5"]);
    let mut p = V5::connected(b.port(), &unique_id("ta6"));
    p.send(&Packet::Publish(aliased("ta/six", 6, b"x", 0, 0)));
    p.expect_disconnect_code(rc::TOPIC_ALIAS_INVALID, "[MQTT-3.3.2-9]");
}

/// (3.3.2.3.4, 4.13) An empty topic with a Topic Alias that has no mapping is a Protocol
/// Error: DISCONNECT 0x82.
#[test]
fn unmapped_topic_alias_is_protocol_error() {
    let b = Broker::start_with(&["max_topic_alias 5"]);
    let mut p = V5::connected(b.port(), &unique_id("taun"));
    p.send(&Packet::Publish(aliased("", 2, b"x", 0, 0)));
    p.expect_disconnect_code(rc::PROTOCOL_ERROR, "unmapped topic alias");
}

/// [MQTT-3.3.4-9] The server never has more than the client's Receive Maximum unacknowledged
/// QoS > 0 PUBLISHes in flight to it; each PUBACK releases the next one.
#[test]
fn server_respects_client_receive_maximum() {
    let b = Broker::start();
    let mut c = connect(&unique_id("rmc"));
    c.properties.receive_maximum = Some(2);
    let (mut s, _) = V5::connect(b.port(), &c);
    s.subscribe(&[("rm/t", opts(1))]);
    let mut p = V5::connected(b.port(), &unique_id("rmp"));
    for i in 0..6u8 {
        p.publish_simple("rm/t", &[b'0' + i], 1, false);
    }
    // The first window: exactly two, then nothing while both are unacknowledged.
    let mut unacked = std::collections::VecDeque::new();
    unacked.push_back(s.expect_publish());
    unacked.push_back(s.expect_publish());
    s.expect_nothing(Duration::from_millis(300));
    let mut got = Vec::new();
    let mut received = 2;
    while let Some(m) = unacked.pop_front() {
        got.push(m.payload[0]);
        s.send(&Packet::PubAck(PubResp::new(m.packet_id)));
        if b.is_midge() {
            // One PUBACK frees one slot: one more PUBLISH, then nothing while two are
            // unacknowledged again.
            if received < 6 {
                unacked.push_back(s.expect_publish());
                received += 1;
                if unacked.len() == 2 {
                    s.expect_nothing(Duration::from_millis(300));
                }
            }
        } else {
            // mosquitto 2.0.11 deviates from [MQTT-3.3.4-9]: after the first PUBACK it sends
            // two more PUBLISHes (three unacknowledged with Receive Maximum 2). Only check
            // that every message arrives.
            while received < 6 && unacked.len() < 6 {
                match s.recv(Duration::from_millis(300)) {
                    Ok(Packet::Publish(p)) => {
                        unacked.push_back(p);
                        received += 1;
                    }
                    Ok(other) => panic!("expected PUBLISH, got {other:?}"),
                    Err(_) => break,
                }
            }
        }
    }
    got.sort();
    assert_eq!(got, b"012345".to_vec());
}

/// The same limit holds for QoS 2: a PUBLISH stays in flight until its PUBCOMP.
#[test]
fn server_respects_client_receive_maximum_for_qos2() {
    let b = Broker::start();
    let mut c = connect(&unique_id("rm2c"));
    c.properties.receive_maximum = Some(1);
    let (mut s, _) = V5::connect(b.port(), &c);
    s.subscribe(&[("rm2/t", opts(2))]);
    let mut p = V5::connected(b.port(), &unique_id("rm2p"));
    p.publish_simple("rm2/t", b"a", 2, false);
    p.publish_simple("rm2/t", b"b", 2, false);
    let m = s.expect_publish();
    assert_eq!(m.qos, QoS::ExactlyOnce);
    s.send(&Packet::PubRec(PubResp::new(m.packet_id)));
    match s.next() {
        Packet::PubRel(r) => assert_eq!(r.packet_id, m.packet_id),
        other => panic!("expected PUBREL, got {other:?}"),
    }
    // PUBREC received but no PUBCOMP yet: still in flight.
    s.expect_nothing(Duration::from_millis(500));
    s.send(&Packet::PubComp(PubResp::new(m.packet_id)));
    let m2 = s.expect_publish();
    assert_eq!(&m2.payload[..], b"b");
}

/// (3.3.4, "Receive Maximum exceeded"; the client's obligation is [MQTT-3.3.4-7]) A client
/// that sends more unacknowledged QoS 2 PUBLISHes than the server's Receive Maximum gets
/// DISCONNECT 0x93.
#[test]
fn client_exceeding_server_receive_maximum_is_disconnected_0x93() {
    let b = Broker::start_with(&["max_inflight_messages 2"]);
    let (mut p, ack) = V5::connect(b.port(), &connect(&unique_id("rmx")));
    assert_eq!(ack.properties.receive_maximum, Some(2));
    for pid in 1..=3u16 {
        // QoS 2 without PUBREL: each stays unacknowledged (no PUBCOMP) at the server.
        p.send(&Packet::Publish(publish("rmx/t", b"x", 2, false, pid)));
    }
    if b.is_mosquitto() {
        // mosquitto 2.0.11 deviates: it answers the third PUBLISH with PUBREC 0x97 (Quota
        // exceeded) and keeps the connection open instead of DISCONNECT 0x93.
        for pid in 1..=2u16 {
            match p.next() {
                Packet::PubRec(r) => assert_eq!((r.packet_id, r.reason), (pid, 0)),
                other => panic!("expected PUBREC, got {other:?}"),
            }
        }
        match p.next() {
            Packet::PubRec(r) => assert_eq!((r.packet_id, r.reason), (3, rc::QUOTA_EXCEEDED)),
            other => panic!("expected PUBREC 0x97, got {other:?}"),
        }
        return;
    }
    let got = p.until_closed(Duration::from_secs(5));
    let pubrecs = got
        .iter()
        .filter(|x| matches!(x, Packet::PubRec(_)))
        .count();
    assert_eq!(pubrecs, 2, "the first two are accepted: {got:?}");
    match got.last() {
        Some(Packet::Disconnect(d)) => {
            assert_eq!(d.reason, rc::RECEIVE_MAXIMUM_EXCEEDED, "{got:?}")
        }
        _ => panic!("no DISCONNECT 0x93: {got:?}"),
    }
}

/// [MQTT-3.1.2-25] A message larger than the client's Maximum Packet Size is not sent to it
/// (dropped for that client); smaller messages still are, and other clients get it.
#[test]
fn message_larger_than_client_maximum_packet_size_is_not_sent() {
    let b = Broker::start();
    let mut c = connect(&unique_id("mpsc"));
    c.properties.maximum_packet_size = Some(128);
    let (mut small, _) = V5::connect(b.port(), &c);
    small.subscribe(&[("mps/t", opts(1))]);
    let mut big = V5::connected(b.port(), &unique_id("mpsb"));
    big.subscribe(&[("mps/t", opts(1))]);
    let mut p = V5::connected(b.port(), &unique_id("mpsp"));
    p.publish_simple("mps/t", &[b'L'; 400], 1, false);
    p.publish_simple("mps/t", b"small", 1, false);
    assert_eq!(small.recv_publish_ack().payload.as_ref(), b"small");
    assert_eq!(big.recv_publish_ack().payload.len(), 400);
    assert_eq!(big.recv_publish_ack().payload.as_ref(), b"small");
    small.expect_nothing(Duration::from_millis(300));
}

/// (3.2.2.3.6, 4.13) A packet larger than the server's Maximum Packet Size
/// (`max_packet_size`): DISCONNECT 0x95 (Packet too large).
#[test]
fn packet_larger_than_server_maximum_is_disconnected_0x95() {
    let b = Broker::start_with(&["max_packet_size 200"]);
    let (mut p, ack) = V5::connect(b.port(), &connect(&unique_id("mpss")));
    assert_eq!(ack.properties.maximum_packet_size, Some(200));
    p.send(&Packet::Publish(publish(
        "mps/big",
        &[b'x'; 500],
        1,
        false,
        1,
    )));
    p.expect_disconnect_code(rc::PACKET_TOO_LARGE, "oversized PUBLISH");
}

/// [MQTT-3.3.2-7] Topic Alias mappings do not carry over to a new network connection: an
/// empty topic with an alias mapped on the previous connection is a Protocol Error (0x82).
#[test]
fn topic_alias_mapping_does_not_survive_reconnect() {
    let b = Broker::start_with(&["max_topic_alias 5"]);
    let id = unique_id("tarc");
    let mut c = connect(&id);
    c.properties.session_expiry_interval = Some(60);
    let (mut p, _) = V5::connect(b.port(), &c);
    p.publish(aliased("tarc/t", 1, b"1", 1, 1));
    p.disconnect();
    c.clean_start = false;
    let (mut p, _) = V5::connect(b.port(), &c);
    p.send(&Packet::Publish(aliased("", 1, b"2", 0, 0)));
    p.expect_disconnect_code(rc::PROTOCOL_ERROR, "[MQTT-3.3.2-7]");
}

/// [MQTT-3.3.2-11] Toward a client that allows Topic Aliases (Topic Alias Maximum 2), any alias
/// the server uses is in 1..=2 and every PUBLISH resolves to the topic that was published.
/// (Whether the server uses aliases at all is its choice.)
#[test]
fn server_topic_aliases_stay_within_client_maximum_and_resolve() {
    let b = Broker::start();
    let mut c = connect(&unique_id("stac"));
    c.properties.topic_alias_maximum = Some(2);
    let (mut s, _) = V5::connect(b.port(), &c);
    s.subscribe(&[("sta/#", opts(0))]);
    let mut p = V5::connected(b.port(), &unique_id("stap"));
    let topics = [
        "sta/a", "sta/b", "sta/c", "sta/a", "sta/b", "sta/a", "sta/d", "sta/a",
    ];
    for (i, t) in topics.iter().enumerate() {
        p.publish(publish(t, format!("{i}").as_bytes(), 1, false, 1));
    }
    let mut map = std::collections::HashMap::new();
    for (i, t) in topics.iter().enumerate() {
        let m = s.expect_publish();
        let topic = match m.properties.topic_alias {
            None => m.topic.to_string(),
            Some(a) => {
                assert!(
                    (1..=2).contains(&a),
                    "alias {a} outside 1..=2 [MQTT-3.3.2-11]"
                );
                if !m.topic.is_empty() {
                    map.insert(a, m.topic.to_string());
                }
                map.get(&a)
                    .cloned()
                    .unwrap_or_else(|| panic!("alias {a} used before it was set: {m:?}"))
            }
        };
        assert_eq!(
            (topic.as_str(), &m.payload[..]),
            (*t, format!("{i}").as_bytes())
        );
    }
}
