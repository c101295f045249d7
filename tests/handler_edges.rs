//! Protocol edges of the packet handlers found by mosquitto's own broker tests and by issue 11:
//! wills held to the checks of a PUBLISH, logins with empty credentials, a CONNACK the client
//! could not take, 3.1's CONNACK, acknowledgements of the wrong flow, the order of a
//! publisher's acknowledgement and its own copy. Also run against mosquitto
//! (`MIDGE_TEST_BROKER=mosquitto`).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::raw::{self, pubcomp, publish, pubrec, Connect, Proto, Raw};
use common::v5::{self, rc, V5};
use common::{run, unique_id, Broker};
use midge::protocol::{Packet, Properties};

const QUIET: Duration = Duration::from_millis(600);

fn passwd(dir: &tempfile::TempDir, args: &[&str]) -> String {
    let pw: PathBuf = dir.path().join("passwd");
    let pw = pw.to_string_lossy().into_owned();
    let mut all = vec!["-b"];
    if !std::path::Path::new(&pw).exists() {
        all.push("-c");
    }
    all.push(&pw);
    all.extend_from_slice(args);
    let out = run(
        Command::new(env!("CARGO_BIN_EXE_midge"))
            .arg("passwd")
            .args(&all),
        Duration::from_secs(60),
    );
    assert!(out.success(), "midge passwd {all:?}: {out:?}");
    pw
}

/// Issue 11 item 4: a will on `$SYS` is accepted with the CONNECT but never published nor
/// retained: no client can plant `$SYS/broker/version`.
#[test]
fn a_will_on_sys_is_not_published_nor_retained() {
    let b = Broker::start();
    let mut s = Raw::connected(b.port(), &unique_id("syssub"));
    s.subscribe(1, &[("$SYS/broker/planted", 0)]);
    let (c, _) = Raw::connect(
        b.port(),
        &Connect::new(&unique_id("planter")).will("$SYS/broker/planted", b"pwned", 0, true),
    );
    c.drop_abruptly();
    s.expect_nothing(QUIET);
    let mut late = Raw::connected(b.port(), &unique_id("late"));
    late.subscribe(1, &[("$SYS/broker/planted", 0)]);
    late.expect_nothing(QUIET);
}

/// Issue 11 item 8: `message_size_limit` applies to wills: an oversize will refuses the
/// CONNECT, "not authorized" (5) in 3.1.1 as mosquitto sends, 0x95 in 5.0.
#[test]
fn an_oversize_will_refuses_the_connect() {
    let b = Broker::start_with(&["message_size_limit 10"]);
    let mut c = Raw::tcp(b.port());
    let (_, code) = c.handshake(&Connect::new("bigwill").will("w/big", &[7u8; 11], 0, false));
    assert_eq!(code, 5);
    assert!(c.is_closed_within(Duration::from_secs(2)));
    let mut c5 = V5::tcp(b.port());
    let mut connect = v5::connect("bigwill5");
    connect.will = Some(v5::will(
        "w/big",
        &[7u8; 11],
        0,
        false,
        Properties::default(),
    ));
    assert_eq!(c5.handshake(&connect).code, rc::PACKET_TOO_LARGE);
    // At the limit it is fine.
    let (_c, _) = Raw::connect(
        b.port(),
        &Connect::new("okwill").will("w/ok", &[7u8; 10], 0, false),
    );
}

/// A will topic deeper than the topic limits is a malformed CONNECT, closed without CONNACK
/// (as mosquitto: `mosquitto_pub_topic_check` fails in `will__read`).
#[test]
fn a_will_topic_beyond_the_topic_limits_closes_the_connection() {
    let b = Broker::start();
    let deep = vec!["a"; 300].join("/");
    let mut c = Raw::tcp(b.port());
    c.send(
        &Connect::new("deepwill")
            .will(&deep, b"w", 0, false)
            .encode(),
    );
    let got = c.expect_closed(Duration::from_secs(3));
    assert!(got.is_empty(), "no CONNACK: {got:?}");
    let (_ok, _) = Raw::connect(
        b.port(),
        &Connect::new("shallowwill").will(&vec!["a"; 100].join("/"), b"w", 0, false),
    );
}

/// Issue 11 item 8: a user whose password is empty does not get in with an empty or missing
/// password (mosquitto reads an empty password as none and refuses a known user without one).
#[test]
fn an_empty_password_never_logs_in() {
    let dir = tempfile::tempdir().unwrap();
    let pw = passwd(&dir, &["full", "secret"]);
    // `midge passwd` (like mosquitto_passwd) refuses to make an empty password; the entry is
    // the hash of "" made by hand, as a file from elsewhere could hold.
    let hash = midge::auth::PasswordHash::new(b"", Default::default()).unwrap();
    let mut text = std::fs::read_to_string(&pw).unwrap();
    text.push_str(&format!("empty:{hash}\n"));
    std::fs::write(&pw, text).unwrap();
    let line = format!("password_file {pw}");
    let b = Broker::start_with(&["allow_anonymous false", "user root", &line]);
    let code = |c: &Connect| Raw::tcp(b.port()).handshake(c).1;
    assert_eq!(code(&Connect::new("e1").login("empty", "")), 5);
    // Username without password (flag 0x80 only).
    let mut body = raw::mqtt_str(b"MQTT");
    body.extend([4, 0x82, 0, 60]);
    body.extend(raw::mqtt_str(b"e2"));
    body.extend(raw::mqtt_str(b"empty"));
    let no_password = raw::packet(raw::CONNECT << 4, &body);
    let mut raw = Raw::tcp(b.port());
    raw.send(&no_password);
    let ack = raw.expect(raw::CONNACK);
    assert_eq!(ack.body[1], 5, "user without password: {ack:?}");
    assert_eq!(code(&Connect::new("f1").login("full", "secret")), 0);
}

/// Issue 11 item 7: an empty username is anonymous, as in mosquitto: refused when anonymous
/// clients are, and under the anonymous section of the ACL otherwise.
#[test]
fn an_empty_username_is_anonymous() {
    let dir = tempfile::tempdir().unwrap();
    let pw = passwd(&dir, &["u", "p"]);
    let line = format!("password_file {pw}");
    let b = Broker::start_with(&["allow_anonymous false", "user root", &line]);
    assert_eq!(
        Raw::tcp(b.port())
            .handshake(&Connect::new("anon").login("", ""))
            .1,
        5
    );
    drop(b);
    let acl = dir.path().join("acl");
    std::fs::write(
        &acl,
        "topic readwrite anon/#\nuser u\ntopic readwrite u/#\n",
    )
    .unwrap();
    let acl_line = format!("acl_file {}", acl.display());
    let b = Broker::start_with(&["allow_anonymous true", "user root", &line, &acl_line]);
    let (mut c, _) = Raw::connect(b.port(), &Connect::new("anon2").login("", ""));
    c.subscribe(1, &[("anon/#", 0)]);
    c.send(&publish("anon/x", b"a", 0, false, 0));
    assert_eq!(
        c.expect_publish().topic,
        "anon/x",
        "the anonymous section applies"
    );
}

/// Issue 11 item 8 [MQTT-3.1.2-24]: a CONNACK larger than the client's Maximum Packet Size is
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

/// Issue 11 item 8: a 3.1 (MQIsdp) CONNACK has no session-present flag (a reserved byte, 0),
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

/// Issue 11 item 8: an acknowledgement of another flow's type for a message in flight is a
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
        let mut s = Raw::connected(b.port(), &unique_id("badack"));
        s.subscribe(1, &[("bad/ack", qos)]);
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

/// Issue 11 item 7: a client subscribed to its own topic gets the PUBACK/PUBREC of its
/// PUBLISH before the copy delivered to it: the acknowledgement answers the client's packet,
/// the copy is the result. midge only: mosquitto 2.0.11 queues the copy first
/// (`sub__messages_queue` before `send__puback` in handle_publish.c) and sends it first.
#[test]
fn the_publishers_acknowledgement_comes_before_its_own_copy() {
    if !common::is_midge() {
        return;
    }
    let b = Broker::start();
    for qos in [1u8, 2] {
        let mut c = Raw::connected(b.port(), &unique_id("self"));
        c.subscribe(1, &[("self/t", qos)]);
        c.send(&publish("self/t", b"me", qos, false, 7));
        let first = c.recv(common::STEP).expect("a packet");
        let want = if qos == 1 { raw::PUBACK } else { raw::PUBREC };
        assert_eq!(
            first.kind(),
            want,
            "QoS {qos}: the acknowledgement first, got {first:?}"
        );
        assert_eq!(c.expect_publish().payload, b"me");
    }
}

/// A client id whose session lives on shard `shard` of 2.
fn id_on_shard(prefix: &str, shard: usize) -> String {
    let base = unique_id(prefix);
    (0..)
        .map(|i| format!("{base}-{i}"))
        .find(|id| midge::shard::home_shard(id.as_bytes(), 2) == shard)
        .expect("some id hashes to every shard")
}

/// The same with persistence: the acknowledgement waits until the message is durable (here
/// also the copy of a subscriber on the other shard), and the publisher's own copy (QoS 1
/// copies are not held for the store) waits behind it. Both protocol versions, several
/// publishes in a row, each acknowledgement before its copy.
#[test]
fn with_persistence_the_acknowledgement_still_comes_before_the_own_copy() {
    if !common::is_midge() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let location = format!("persistence_location {}/", dir.path().display());
    let b = Broker::start_with(&["persistence true", &location, "shards 2"]);
    let mut other = Raw::connected(b.port(), &id_on_shard("dself-other", 1));
    other.subscribe(1, &[("dself/#", 1)]);
    for qos in [1u8, 2] {
        for sub_qos in [1u8, 2] {
            let mut c = Raw::connected(b.port(), &id_on_shard("dself", 0));
            c.subscribe(1, &[("dself/t", sub_qos)]);
            let want = if qos == 1 { raw::PUBACK } else { raw::PUBREC };
            for pid in 1..=3u16 {
                c.send(&publish("dself/t", b"me", qos, false, pid));
                let first = c.recv(common::STEP).expect("a packet");
                assert_eq!(
                    first.kind(),
                    want,
                    "3.1.1 QoS {qos} (sub {sub_qos}) #{pid}: the acknowledgement first, got {first:?}"
                );
                let copy = c.expect_publish();
                assert_eq!(copy.payload, b"me");
                if copy.qos == 1 {
                    c.send(&raw::puback(copy.pid));
                } else if copy.qos == 2 {
                    c.send(&pubrec(copy.pid));
                    assert_eq!(c.expect(raw::PUBREL).pid(), copy.pid);
                    c.send(&pubcomp(copy.pid));
                }
                if qos == 2 {
                    c.send(&raw::pubrel(pid));
                    assert_eq!(c.expect(raw::PUBCOMP).pid(), pid);
                }
            }
            let mut c = V5::connected(b.port(), &id_on_shard("dself5", 0));
            c.subscribe(&[("dself/t5", v5::opts(sub_qos))]);
            for pid in 1..=3u16 {
                c.send(&Packet::Publish(v5::publish(
                    "dself/t5", b"me", qos, false, pid,
                )));
                let first = c.recv(common::STEP).expect("a packet");
                let ok = match (&first, qos) {
                    (Packet::PubAck(r), 1) | (Packet::PubRec(r), 2) => r.packet_id == pid,
                    _ => false,
                };
                assert!(
                    ok,
                    "5.0 QoS {qos} (sub {sub_qos}) #{pid}: the acknowledgement first, got {first:?}"
                );
                let copy = c.expect_publish();
                assert_eq!(&copy.payload[..], b"me");
                c.ack(&copy);
                if qos == 2 {
                    c.send(&Packet::PubRel(midge::protocol::PubResp {
                        packet_id: pid,
                        ..Default::default()
                    }));
                    match c.next() {
                        Packet::PubComp(r) => assert_eq!(r.packet_id, pid),
                        other => panic!("expected PUBCOMP, got {other:?}"),
                    }
                }
            }
        }
    }
}

/// Issue 11 item 6: a 3.1.1 client holds at most `max_inflight_messages` unreleased QoS 2
/// ids. Beyond them its PUBLISHes wait unacknowledged (not routed) for a PUBREL to free an id,
/// as mosquitto delays PUBREC; beyond `max_queued_messages` waiting the connection is closed.
/// midge only: mosquitto 2.0.11 bounds them at a fixed 20 (not `max_inflight_messages`) and
/// drops what is over its queue with a PUBREC that says nothing of it to a 3.1.1 client.
#[test]
fn unreleased_qos2_ids_of_a_3_1_1_client_are_bounded_by_the_inflight_quota() {
    if !common::is_midge() {
        return;
    }
    let b = Broker::start_with(&["max_inflight_messages 5", "max_queued_messages 10"]);
    let mut s = Raw::connected(b.port(), &unique_id("q2sub"));
    s.subscribe(1, &[("q2/#", 0)]);
    let mut p = Raw::connected(b.port(), &unique_id("q2pub"));
    for i in 1..=15u16 {
        p.send(&publish("q2/t", format!("m{i}").as_bytes(), 2, false, i));
    }
    for i in 1..=5u16 {
        assert_eq!(p.expect(raw::PUBREC).pid(), i);
    }
    p.expect_nothing(QUIET);
    let got: Vec<Vec<u8>> = s
        .collect_publishes_until_quiet(QUIET)
        .into_iter()
        .map(|m| m.payload)
        .collect();
    assert_eq!(got.len(), 5, "only the acknowledged ones are routed");
    // Each PUBREL lets the oldest waiting one in.
    p.send(&raw::pubrel(1));
    assert_eq!(p.expect(raw::PUBCOMP).pid(), 1);
    assert_eq!(p.expect(raw::PUBREC).pid(), 6);
    assert_eq!(s.expect_publish().payload, b"m6");
    // A retransmission of a waiting one is not queued twice.
    p.send(&raw::publish_raw(b"q2/t", b"m7", 2, false, true, 7));
    p.expect_nothing(Duration::from_millis(200));
    // 5 held, 9 waiting: one more fits, the next is over every limit.
    p.send(&publish("q2/t", b"m16", 2, false, 16));
    p.expect_nothing(Duration::from_millis(200));
    p.send(&publish("q2/t", b"m17", 2, false, 17));
    assert!(p.is_closed_within(Duration::from_secs(3)));
    s.ping();
}
