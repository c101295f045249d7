//! SUBSCRIBE and UNSUBSCRIBE in every protocol version: granted QoS, overlapping
//! subscriptions, wildcards, `$` topics, SUBACK/UNSUBACK codes, invalid filters, and the 5.0
//! subscription options No Local and Subscription Identifier. (Retain options: `retain.rs`;
//! shared subscriptions: `shared.rs`; deep filters and the subscription quota:
//! `deep_topics.rs`.)

mod common;

use std::time::Duration;

use common::raw::{mqtt_str, packet, Raw, UNSUBACK};
use common::v5::{opts, opts_full, rc, V5};
use common::{unique_id, Broker, QUIET};
use midge::protocol::{Packet, Properties};

// ---------------------------------------------------------------- matching and QoS---------------

/// [MQTT-3.8.4-6] delivered QoS = min(subscription QoS, publish QoS).
#[test]
fn granted_qos_is_min_of_subscription_and_publish() {
    let b = Broker::start();
    let mut s0 = Raw::connected(b.port(), "g0");
    let mut s1 = Raw::connected(b.port(), "g1");
    let mut s2 = Raw::connected(b.port(), "g2");
    // [MQTT-3.9.3-1]/[MQTT-3.8.4-5] SUBACK grants what was asked (a server may grant less;
    // neither midge nor mosquitto does without a limit configured).
    assert_eq!(s0.subscribe(1, &[("g/t", 0)]), vec![0]);
    assert_eq!(s1.subscribe(1, &[("g/t", 1)]), vec![1]);
    assert_eq!(s2.subscribe(1, &[("g/t", 2)]), vec![2]);
    let mut p = Raw::connected(b.port(), "gp");
    for pub_q in 0..3u8 {
        p.publish_complete("g/t", &[pub_q], pub_q, false, 5);
        for (sub_q, s) in [(0u8, &mut s0), (1, &mut s1), (2, &mut s2)] {
            let m = s.recv_publish_ack();
            assert_eq!(m.payload, vec![pub_q]);
            assert_eq!(
                m.qos,
                pub_q.min(sub_q),
                "sub QoS {sub_q}, publish QoS {pub_q}"
            );
        }
    }
}

/// [MQTT-3.3.5-1] overlapping subscriptions (`a/#` at QoS 2, `a/b` at QoS 0), publish QoS 2 to
/// `a/b`: the client gets the message at QoS 2. The spec allows one copy at the maximum QoS or one
/// copy per subscription; midge delivers exactly one copy at the highest QoS.
/// mosquitto deviates: 2.0.11 sends ONE copy at QoS 0 here (the QoS of the `a/b` subscription,
/// whatever the subscription order), against [MQTT-3.3.5-1] "respecting the maximum QoS of all
/// the matching subscriptions". (Other mosquitto versions/configs, with
/// `allow_duplicate_messages true`, send one copy per subscription instead.) For mosquitto only
/// "at least one copy" is asserted.
#[test]
fn overlapping_subscriptions_deliver_once_at_highest_qos() {
    let b = Broker::start();
    let mut s = Raw::connected(b.port(), "overlap");
    assert_eq!(s.subscribe(1, &[("a/#", 2), ("a/b", 0)]), vec![2, 0]);
    let mut p = Raw::connected(b.port(), "overlap-pub");
    p.publish_complete("a/b", b"once", 2, false, 9);
    let mut copies = vec![s.recv_publish_ack()];
    while let Ok(pk) = s.recv(QUIET) {
        // Ack whatever comes so the flow stays valid.
        let m = pk.publish();
        match m.qos {
            1 => s.send(&common::raw::puback(m.pid)),
            2 => {
                s.send(&common::raw::pubrec(m.pid));
                let rel = s.expect(common::raw::PUBREL);
                s.send(&common::raw::pubcomp(rel.pid()));
            }
            _ => {}
        }
        copies.push(m);
    }
    assert!(copies
        .iter()
        .all(|m| m.topic == "a/b" && m.payload == b"once"));
    if b.is_mosquitto() {
        return; // deviation described above
    }
    assert!(
        copies.iter().any(|m| m.qos == 2),
        "at least one copy at QoS 2: {copies:?}"
    );
    assert_eq!(
        copies.len(),
        1,
        "midge delivers exactly one copy: {copies:?}"
    );
}

/// [MQTT-4.7.1-3] `+` matches exactly one level (also an empty one).
#[test]
fn plus_wildcard_matches_exactly_one_level() {
    let b = Broker::start();
    let mut s = Raw::subscribed(b.port(), "plus", &[("sport/+/score", 0)]);
    let mut p = Raw::connected(b.port(), "plus-pub");
    for t in [
        "sport/tennis/score",
        "sport/tennis/x/score",
        "sport/score",
        "sport//score",
        "sport/golf/score",
    ] {
        p.publish_complete(t, t.as_bytes(), 0, false, 0);
    }
    let mut got = Vec::new();
    while let Ok(pk) = s.recv(QUIET) {
        got.push(pk.publish().topic);
    }
    assert_eq!(
        got,
        vec!["sport/tennis/score", "sport//score", "sport/golf/score"]
    );
}

/// [MQTT-4.7.1-2] `#` matches the parent level and any number of child levels:
/// `sport/#` matches `sport`, `sport/` and `sport/tennis/player1`.
#[test]
fn hash_wildcard_matches_parent_and_all_children() {
    let b = Broker::start();
    let mut s = Raw::subscribed(b.port(), "hash", &[("sport/#", 0)]);
    let mut p = Raw::connected(b.port(), "hash-pub");
    for t in [
        "sport",
        "sport/",
        "sport/tennis/player1",
        "sports",
        "other/sport",
    ] {
        p.publish_complete(t, t.as_bytes(), 0, false, 0);
    }
    let mut got = Vec::new();
    while let Ok(pk) = s.recv(QUIET) {
        got.push(pk.publish().topic);
    }
    assert_eq!(got, vec!["sport", "sport/", "sport/tennis/player1"]);
}

/// [MQTT-4.7.2-1] topics starting with `$` are not matched by filters starting with a wildcard
/// (`#`, `+/...`), but are matched by `$test/#`.
#[test]
fn dollar_topics_are_not_matched_by_leading_wildcards() {
    let b = Broker::start();
    let mut hash = Raw::subscribed(b.port(), "d-hash", &[("#", 0)]);
    let mut plus = Raw::connected(b.port(), "d-plus");
    plus.subscribe(1, &[("+/x", 0)]);
    let mut dollar = Raw::subscribed(b.port(), "d-dollar", &[("$test/#", 0)]);
    let mut p = Raw::connected(b.port(), "d-pub");
    p.publish_complete("$test/x", b"d", 0, false, 0);
    let m = dollar.expect_publish();
    assert_eq!(m.topic, "$test/x");
    // Skip anything a `#` subscriber may see from a broker's own topics, but never `$test/x`.
    for s in [&mut hash, &mut plus] {
        while let Ok(pk) = s.recv(QUIET) {
            let t = pk.publish().topic;
            assert!(!t.starts_with('$'), "wildcard subscriber received {t}");
        }
    }
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

// ---------------------------------------------------------------- UNSUBSCRIBE--------------------

/// [MQTT-3.10.4-4] UNSUBACK carries the UNSUBSCRIBE's packet id; [MQTT-3.10.4-2] delivery stops.
#[test]
fn unsubscribe_stops_delivery_and_gets_unsuback() {
    let b = Broker::start();
    let mut s = Raw::subscribed(b.port(), "unsub", &[("u/t", 1)]);
    let mut p = Raw::connected(b.port(), "unsub-pub");
    p.publish_complete("u/t", b"before", 1, false, 1);
    assert_eq!(s.recv_publish_ack().payload, b"before");
    s.send(&common::raw::unsubscribe(0x1234, &["u/t"]));
    let ack = s.expect(UNSUBACK);
    assert_eq!(ack.first, 0xB0);
    assert_eq!(ack.body, vec![0x12, 0x34]);
    p.publish_complete("u/t", b"after", 1, false, 2);
    s.expect_nothing(QUIET);
}

/// [MQTT-3.10.4-5] UNSUBSCRIBE of a filter that was never subscribed still gets an UNSUBACK.
#[test]
fn unsubscribe_unknown_filter_still_gets_unsuback() {
    let b = Broker::start();
    let mut s = Raw::connected(b.port(), "unsub-none");
    s.send(&common::raw::unsubscribe(77, &["never/subscribed"]));
    assert_eq!(s.expect(UNSUBACK).pid(), 77);
    s.ping();
}

/// (3.11.3) UNSUBACK: 0x00 for a subscription that existed, 0x11 (No subscription existed) for
/// one that did not, in filter order.
#[test]
fn unsuback_0x11_when_no_subscription_existed() {
    let b = Broker::start();
    let mut c = V5::subscribed(b.port(), &unique_id("us"), &[("us/a", opts(1))]);
    let a = c.unsubscribe(9, &["us/a", "us/never"]);
    assert_eq!(
        a.codes,
        vec![rc::SUCCESS, rc::NO_SUBSCRIPTION_EXISTED],
        "{a:?}"
    );
}

// ---------------------------------------------------------------- 5.0 subscription options-------

/// [MQTT-3.8.3-3] No Local: a client's own messages are not sent back to it on that
/// subscription; other clients still get them.
#[test]
fn no_local_subscription_does_not_receive_own_messages() {
    let b = Broker::start();
    let mut me = V5::subscribed(
        b.port(),
        &unique_id("nl"),
        &[("nl/t", opts_full(1, true, false, 0))],
    );
    let mut other = V5::connected(b.port(), &unique_id("nlo"));
    other.subscribe(&[("nl/t", opts(1))]);
    me.publish_simple("nl/t", b"mine", 1, false);
    assert_eq!(&other.recv_publish_ack().payload[..], b"mine");
    me.expect_nothing(Duration::from_millis(500));
    // Messages from someone else still arrive.
    let mut p = V5::connected(b.port(), &unique_id("nlp"));
    p.publish_simple("nl/t", b"theirs", 1, false);
    assert_eq!(&me.recv_publish_ack().payload[..], b"theirs");
}

/// [MQTT-3.3.4-3] A message matching a subscription made with a Subscription Identifier carries
/// that identifier.
#[test]
fn subscription_identifier_is_sent_with_matching_message() {
    let b = Broker::start();
    let mut s = V5::connected(b.port(), &unique_id("sid"));
    s.subscribe_id("sid/+", opts(1), 4242);
    let mut p = V5::connected(b.port(), &unique_id("sidp"));
    p.publish_simple("sid/a", b"x", 1, false);
    let m = s.recv_publish_ack();
    assert_eq!(m.properties.subscription_identifiers, vec![4242], "{m:?}");
}

/// [MQTT-3.3.4-4][MQTT-3.3.4-5] Overlapping subscriptions with identifiers 1 and 2: the message
/// carries every matching identifier. midge sends one PUBLISH with both ([MQTT-3.3.4-4]);
/// the spec also lets a server send one PUBLISH per subscription, each with its own
/// identifier ([MQTT-3.3.4-5]), which is what mosquitto does.
#[test]
fn overlapping_subscriptions_carry_every_identifier() {
    let b = Broker::start();
    let mut s = V5::connected(b.port(), &unique_id("sids"));
    s.subscribe_id("ov/#", opts(1), 1);
    s.subscribe_id("ov/+/c", opts(1), 2);
    s.subscribe(&[("ov/b/+", opts(1))]); // no identifier
    let mut p = V5::connected(b.port(), &unique_id("sidsp"));
    p.publish_simple("ov/b/c", b"x", 1, false);
    let got = s.publishes_until_quiet(Duration::from_millis(700));
    let mut ids: Vec<u32> = got
        .iter()
        .flat_map(|m| m.properties.subscription_identifiers.clone())
        .collect();
    ids.sort();
    assert_eq!(ids, vec![1, 2], "every matching identifier: {got:?}");
    if b.is_midge() {
        assert_eq!(got.len(), 1, "midge sends one PUBLISH per message: {got:?}");
    } else {
        for m in &got {
            assert!(m.properties.subscription_identifiers.len() <= 1, "{m:?}");
        }
    }
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
