//! CONNECT / CONNACK: return codes, MQTT 3.1 clients, session present, client takeover.

mod common;

use std::time::Duration;

use common::clients::{mosquitto_pub, MosqSub, Paho};
use common::raw::{Connect, Proto, Raw, CONNACK};
use common::{unique_id, Broker, STEP};

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
