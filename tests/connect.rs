//! CONNECT and CONNACK in every protocol version: return and reason codes, MQTT 3.1 clients,
//! Session Present, client takeover, the properties a 5.0 server announces in CONNACK
//! (Assigned Client Identifier, Response Information, feature flags), refused and malformed
//! CONNECTs, and a server shutdown that names another server.

mod common;

use std::time::Duration;

use serde_json::json;

use common::clients::{mosquitto_pub, MosqSub, Paho};
use common::raw::{Connect, Proto, Raw, CONNACK};
use common::v5::{self, connect, paho, rc, rumq_v5_connect, V5};
use common::{unique_id, Broker, STEP};
use midge::protocol::Packet;

// ---------------------------------------------------------------- MQTT 3.1 and 3.1.1-------------

/// [MQTT-3.2.2-4] return code 0: connection accepted; CONNACK is `20 02 00 00` for a clean
/// session [MQTT-3.2.2-1].
#[test]
fn connect_is_accepted_with_return_code_0() {
    let b = Broker::start();
    let mut c = Raw::tcp(b.port());
    c.send(&Connect::new("accept-me").encode());
    let p = c.expect(CONNACK);
    assert_eq!((p.first, p.body.clone()), (0x20, vec![0x00, 0x00]));
    c.ping();
}

/// [MQTT-3.1.2-2] an unsupported protocol level gets CONNACK 0x01 and the connection is closed.
#[test]
fn unacceptable_protocol_level_gets_return_code_1_then_close() {
    let b = Broker::start();
    let mut c = Raw::tcp(b.port());
    c.send(&Connect::new("level9").protocol(b"MQTT", 9).encode());
    let got = c.expect_closed(STEP);
    assert_eq!(got.len(), 1, "exactly one CONNACK before close: {got:?}");
    assert_eq!(got[0].first, 0x20);
    assert_eq!(got[0].body, vec![0x00, 0x01], "CONNACK return code 1");
}

/// [MQTT-3.1.3-8] an empty client id with clean session 0 gets CONNACK 0x02 (identifier
/// rejected) and the connection is closed [MQTT-3.2.2-5].
#[test]
fn empty_client_id_without_clean_session_is_rejected_with_code_2() {
    let b = Broker::start();
    let mut c = Raw::tcp(b.port());
    c.send(&Connect::new("").clean(false).encode());
    let got = c.expect_closed(STEP);
    assert_eq!(got.len(), 1, "exactly one CONNACK before close: {got:?}");
    assert_eq!(got[0].body, vec![0x00, 0x02], "CONNACK return code 2");
}

/// [MQTT-3.1.3-6] an empty client id with clean session 1 is accepted (the server assigns one).
#[test]
fn empty_client_id_with_clean_session_is_accepted() {
    let b = Broker::start();
    let (mut c, sp) = Raw::connect(b.port(), &Connect::new(""));
    assert!(
        !sp,
        "session present must be 0 for a clean session [MQTT-3.2.2-1]"
    );
    c.ping();
    // A second anonymous client at the same time must not take the first one over.
    let (mut c2, _) = Raw::connect(b.port(), &Connect::new(""));
    c2.ping();
    c.ping();
}

/// [MQTT-3.1.3-6] the same with paho (client_id="" and clean_session=True).
#[test]
fn empty_client_id_with_clean_session_is_accepted_by_paho() {
    let b = Broker::start();
    let mut p = Paho::spawn("sub.py", b.port(), &["--id", "", "--clean", "1"]);
    let ack = p.expect_event("connack");
    assert_eq!(ack["failure"], false, "{ack}");
    assert_eq!(ack["session_present"], false, "{ack}");
    p.finish(STEP);
}

/// MQTT 3.1 ("MQIsdp", level 3) CONNECT from a raw client is accepted.
#[test]
fn mqtt31_raw_connect_is_accepted() {
    let b = Broker::start();
    let (mut c, sp) = Raw::connect(b.port(), &Connect::new("v31raw").proto(Proto::V31));
    assert!(!sp);
    assert_eq!(c.subscribe(1, &[("v31/t", 1)]), vec![1]);
    let (mut p, _) = Raw::connect(b.port(), &Connect::new("v31pub").proto(Proto::V31));
    p.publish_complete("v31/t", b"hi", 1, false, 7);
    let m = c.recv_publish_ack();
    assert_eq!(
        (m.topic.as_str(), m.payload.as_slice()),
        ("v31/t", &b"hi"[..])
    );
}

/// MQTT 3.1 with mosquitto_pub/mosquitto_sub `-V mqttv31`.
#[test]
fn mqtt31_mosquitto_clients_publish_and_subscribe() {
    let b = Broker::start();
    let mut sub = MosqSub::start(
        b.port(),
        &[
            "-V", "mqttv31", "-t", "v31/m", "-q", "1", "-C", "1", "-i", "v31sub",
        ],
    );
    mosquitto_pub(
        b.port(),
        &[
            "-V", "mqttv31", "-t", "v31/m", "-m", "hello31", "-q", "1", "-i", "v31pub",
        ],
    );
    let msgs = sub.messages(1, STEP);
    assert_eq!(msgs.len(), 1, "{}", sub.describe());
    assert_eq!(msgs[0].payload, "hello31");
    assert_eq!(msgs[0].qos, 1);
}

/// MQTT 3.1 with paho (protocol=MQTTv31) on both ends.
#[test]
fn mqtt31_paho_clients_publish_and_subscribe() {
    let b = Broker::start();
    let mut sub = Paho::spawn(
        "sub.py",
        b.port(),
        &[
            "--proto",
            "31",
            "--id",
            "paho31sub",
            "--topic",
            "p31/#:2",
            "--count",
            "1",
        ],
    );
    sub.expect_event("suback");
    common::clients::paho_pub(
        b.port(),
        &[
            "--proto",
            "31",
            "--id",
            "paho31pub",
            "--topic",
            "p31/x",
            "--message",
            "m31",
            "--qos",
            "2",
        ],
    );
    let msgs = sub.messages(1, STEP);
    assert_eq!(msgs.len(), 1, "{}", sub.describe());
    assert_eq!(
        (
            msgs[0].topic.as_str(),
            msgs[0].payload.as_str(),
            msgs[0].qos
        ),
        ("p31/x", "m31", 2)
    );
    sub.finish(STEP);
}

/// [MQTT-3.2.2-1] clean session 1 => session present 0, even if a session existed.
#[test]
fn session_present_is_0_for_clean_session() {
    let b = Broker::start();
    let id = unique_id("sp0");
    let (c, _) = Raw::connect(b.port(), &Connect::new(&id).clean(false));
    c.disconnect();
    let (c, sp) = Raw::connect(b.port(), &Connect::new(&id).clean(true));
    assert!(!sp, "clean session must report session present 0");
    c.disconnect();
}

/// [MQTT-3.2.2-3] clean session 0 with no stored session => session present 0;
/// [MQTT-3.2.2-2] clean session 0 resuming a stored session => session present 1.
#[test]
fn session_present_is_1_when_resuming_stored_session() {
    let b = Broker::start();
    let id = unique_id("sp1");
    let (mut c, sp) = Raw::connect(b.port(), &Connect::new(&id).clean(false));
    assert!(!sp, "first connection: no stored session [MQTT-3.2.2-3]");
    c.subscribe(1, &[("sp/t", 1)]);
    c.disconnect();
    let (c, sp) = Raw::connect(b.port(), &Connect::new(&id).clean(false));
    assert!(
        sp,
        "resumed session must report session present 1 [MQTT-3.2.2-2]"
    );
    c.disconnect();
}

/// Session present through paho: first 0, then 1.
#[test]
fn session_present_flag_seen_by_paho() {
    let b = Broker::start();
    let id = unique_id("paho-sp");
    for expected in [false, true] {
        let mut p = Paho::spawn(
            "sub.py",
            b.port(),
            &["--id", &id, "--clean", "0", "--topic", "psp/t:1"],
        );
        let ack = p.expect_event("connack");
        assert_eq!(ack["session_present"], expected, "{ack}");
        p.finish(STEP);
    }
}

/// [MQTT-3.1.4-2] a second connection with the same client id disconnects the first.
#[test]
fn second_connection_with_same_client_id_closes_the_first() {
    let b = Broker::start();
    let mut first = Raw::connected(b.port(), "twin");
    first.ping();
    let mut second = Raw::connected(b.port(), "twin");
    first.expect_closed(STEP);
    second.ping();
}

/// [MQTT-3.1.4-2] takeover across shards: with `shards 2`, 20 pairs of connections with the same
/// id; some pairs land on different shards. Every first connection is closed, every second one
/// keeps working, and a persistent session follows the client to its new connection.
#[test]
fn takeover_works_across_shards() {
    let b = Broker::start_with(&["shards 2"]);
    let n = 20;
    let ids: Vec<String> = (0..n).map(|i| format!("tk{i}")).collect();
    let mut firsts: Vec<Raw> = ids
        .iter()
        .map(|id| {
            let (mut c, _) = Raw::connect(b.port(), &Connect::new(id).clean(false));
            c.subscribe(1, &[(&format!("tk/{id}"), 1)]);
            c
        })
        .collect();
    let mut seconds: Vec<Raw> = ids
        .iter()
        .map(|id| {
            let (c, sp) = Raw::connect(b.port(), &Connect::new(id).clean(false));
            assert!(
                sp,
                "{id}: the session moves to the new connection [MQTT-3.2.2-2]"
            );
            c
        })
        .collect();
    for (i, f) in firsts.iter_mut().enumerate() {
        assert!(
            f.is_closed_within(STEP),
            "first connection of {} still open",
            ids[i]
        );
    }
    let mut publisher = Raw::connected(b.port(), "tk-pub");
    for id in &ids {
        publisher.publish_complete(&format!("tk/{id}"), id.as_bytes(), 1, false, 1);
    }
    for (i, s) in seconds.iter_mut().enumerate() {
        let m = s.recv_publish_ack();
        assert_eq!(
            m.topic,
            format!("tk/{}", ids[i]),
            "subscription kept by the session"
        );
        s.ping();
    }
    // Bounded extra check: nothing else arrives on the second connections.
    for s in seconds.iter_mut() {
        s.expect_nothing(Duration::from_millis(20));
    }
}

/// A 3.1 (MQIsdp) CONNACK has no session-present flag (a reserved byte, 0),
/// even when a session was resumed.
#[test]
fn a_3_1_connack_has_no_session_present_bit() {
    let b = Broker::start();
    let id = unique_id("old");
    let c31 = Connect::new(&id).proto(Proto::V31).clean(false);
    let (c, _) = Raw::connect(b.port(), &c31);
    c.disconnect();
    let (_c, present) = Raw::connect(b.port(), &c31);
    assert!(!present);
    // The session was there: 3.1.1 says so.
    let (_c, present) = Raw::connect(b.port(), &Connect::new(&id).clean(false));
    assert!(present);
}

// ---------------------------------------------------------------- MQTT 5.0-----------------------

/// (3.2.2.3.3) Receive Maximum in CONNACK: how many QoS 1/2 PUBLISHes the client
/// may have unacknowledged at the server; `max_inflight_messages 5` announces 5. Read with
/// rumqttc v5.
#[test]
fn connack_announces_receive_maximum() {
    let b = Broker::start_with(&["max_inflight_messages 5"]);
    let (_c, ack) = rumq_v5_connect(b.port(), &unique_id("rm"), |_| {});
    let props = ack.properties.expect("CONNACK properties");
    assert_eq!(
        props.receive_max,
        Some(5),
        "CONNACK Receive Maximum: {props:?}"
    );
}

/// (3.2.2.3.8) Topic Alias Maximum in CONNACK from `max_topic_alias`; read with paho-mqtt.
#[test]
fn connack_announces_topic_alias_maximum() {
    let b = Broker::start_with(&["max_topic_alias 7"]);
    let mut p = paho(
        b.port(),
        json!([{"op": "connect", "id": unique_id("tam")},
                                      {"op": "disconnect"}]),
    );
    let ack = p.expect_event("connack");
    assert_eq!(ack["rc"], 0);
    assert_eq!(ack["props"]["TopicAliasMaximum"], 7, "CONNACK: {ack}");
}

/// [MQTT-3.2.2-9] Maximum QoS: a server that does not support QoS 2 says so in CONNACK.
#[test]
fn connack_announces_maximum_qos_when_limited() {
    let b = Broker::start_with(&["max_qos 1"]);
    let (_c, ack) = V5::connect(b.port(), &connect(&unique_id("mq")));
    assert_eq!(ack.properties.maximum_qos, Some(1), "CONNACK: {ack:?}");
}

/// A server announces the full QoS set by leaving Maximum QoS out (3.2.2.3.4: absent = 2).
#[test]
fn connack_omits_maximum_qos_when_qos_2_is_supported() {
    let b = Broker::start();
    let (_c, ack) = V5::connect(b.port(), &connect(&unique_id("mq2")));
    assert!(
        matches!(ack.properties.maximum_qos, None | Some(2)),
        "CONNACK: {ack:?}"
    );
}

/// [MQTT-3.2.2-12] Retain Available 0 in CONNACK when retained messages are not supported.
#[test]
fn connack_announces_retain_unavailable() {
    let b = Broker::start_with(&["retain_available false"]);
    let (_c, ack) = V5::connect(b.port(), &connect(&unique_id("ra")));
    assert_eq!(ack.properties.retain_available, Some(0), "CONNACK: {ack:?}");
}

/// (3.2.2.3.11-13) Wildcard, Subscription Identifier and Shared Subscription Available: all
/// three features are supported by default, so each flag is absent or 1.
#[test]
fn connack_feature_flags_say_available_by_default() {
    let b = Broker::start();
    let (_c, ack) = V5::connect(b.port(), &connect(&unique_id("flags")));
    let p = &ack.properties;
    for (name, v) in [
        (
            "Wildcard Subscription Available",
            p.wildcard_subscription_available,
        ),
        (
            "Subscription Identifier Available",
            p.subscription_identifier_available,
        ),
        (
            "Shared Subscription Available",
            p.shared_subscription_available,
        ),
        ("Retain Available", p.retain_available),
    ] {
        assert!(matches!(v, None | Some(1)), "{name} = {v:?}: {ack:?}");
    }
}

/// (3.2.2.3.6) Maximum Packet Size in CONNACK from `max_packet_size`.
#[test]
fn connack_announces_maximum_packet_size() {
    let b = Broker::start_with(&["max_packet_size 2000"]);
    let (_c, ack) = V5::connect(b.port(), &connect(&unique_id("mps")));
    assert_eq!(
        ack.properties.maximum_packet_size,
        Some(2000),
        "CONNACK: {ack:?}"
    );
}

/// [MQTT-3.2.2-16] A client connecting with an empty Client Identifier is given one in the
/// Assigned Client Identifier property, and it is unique per connection.
#[test]
fn empty_client_id_gets_assigned_client_identifier() {
    let b = Broker::start();
    let (_c1, a1) = V5::connect(b.port(), &connect(""));
    let (_c2, a2) = V5::connect(b.port(), &connect(""));
    let id1 = a1
        .properties
        .assigned_client_identifier
        .clone()
        .unwrap_or_else(|| panic!("no Assigned Client Identifier: {a1:?}"));
    let id2 = a2
        .properties
        .assigned_client_identifier
        .clone()
        .unwrap_or_else(|| panic!("no Assigned Client Identifier: {a2:?}"));
    assert!(!id1.is_empty(), "empty Assigned Client Identifier");
    assert_ne!(
        id1, id2,
        "two connections were assigned the same identifier"
    );
    assert!(!a1.session_present, "a new session [MQTT-3.2.2-2]");
}

/// A client that sent a Client Identifier gets no Assigned Client Identifier.
#[test]
fn given_client_id_gets_no_assigned_client_identifier() {
    let b = Broker::start();
    let (_c, ack) = V5::connect(b.port(), &connect(&unique_id("given")));
    assert_eq!(ack.properties.assigned_client_identifier, None, "{ack:?}");
}

/// [MQTT-3.2.2-2] Clean Start 1: Session Present is 0 in CONNACK, even when a session existed.
#[test]
fn clean_start_gives_session_present_0() {
    let b = Broker::start();
    let id = unique_id("cs");
    let mut c = connect(&id);
    c.properties.session_expiry_interval = Some(60);
    let (v, _) = V5::connect(b.port(), &c);
    v.disconnect();
    let (_v, ack) = V5::connect(b.port(), &c);
    assert!(
        !ack.session_present,
        "Session Present with Clean Start 1: {ack:?}"
    );
}

/// [MQTT-3.1.2-28] (3.2.2.3.15) Response Information (midge's `response_information`) is sent
/// in CONNACK only to a client that set Request Response Information to 1. mosquitto has no
/// such option (it never sends one), which the spec allows.
#[test]
fn response_information_is_sent_only_when_requested() {
    let b = Broker::start_with(&["response_information replies/"]);
    let mut asking = connect(&unique_id("ri"));
    asking.properties.request_response_information = Some(1);
    let (_c, ack) = V5::connect(b.port(), &asking);
    let got = ack.properties.response_information.map(|s| s.to_string());
    if b.is_mosquitto() {
        assert_eq!(got, None);
        return;
    }
    assert_eq!(got.as_deref(), Some("replies/"));
    let (_c, ack) = V5::connect(b.port(), &connect(&unique_id("ri")));
    assert_eq!(
        ack.properties.response_information, None,
        "not asked, not sent"
    );
}

/// (4.11, 3.14.2.2.5) With midge's `server_reference`, a broker shutting down tells MQTT 5
/// clients to use another server: DISCONNECT 0x9C with the Server Reference.
#[test]
fn shutdown_with_server_reference_sends_use_another_server() {
    if !common::is_midge() {
        eprintln!("note: server_reference is a midge option");
        return;
    }
    let b = Broker::start_with(&["server_reference standby.example:1883"]);
    let mut c = V5::connected(b.port(), &unique_id("sr"));
    let status = std::process::Command::new("kill")
        .args(["-TERM", &b.pid().to_string()])
        .status();
    assert!(status.is_ok_and(|s| s.success()));
    let d = c.expect_disconnect_code(0x9C, "use another server on shutdown");
    assert_eq!(
        d.properties.server_reference.as_deref(),
        Some("standby.example:1883")
    );
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

/// [MQTT-3.1.2-24]: a CONNACK larger than the client's Maximum Packet Size is
/// not sent (mosquitto's 12-prop-maximum-packet-size-connect: the connection just closes).
#[test]
fn a_connack_over_the_clients_maximum_packet_size_is_not_sent() {
    let b = Broker::start();
    let mut c = V5::tcp(b.port());
    let mut connect = v5::connect("tiny");
    connect.properties.maximum_packet_size = Some(2);
    c.send(&Packet::Connect(connect));
    let got = c.raw.expect_closed(Duration::from_secs(3));
    assert!(got.is_empty(), "nothing may be sent: {got:?}");
}
