//! Deep and long topics, invalid filters and the per-client subscription quota (issue 11).
//!
//! A filter of ~5,000 levels used to overflow a shard thread's stack in the recursive index
//! walk (on UNSUBSCRIBE, disconnect, a matching PUBLISH, or the trie's drop at SIGTERM) and
//! abort the whole broker. The walks are loops now; `max_topic_levels` (default 200, as
//! mosquitto's TOPIC_HIERARCHY_LIMIT) refuses such topics up front, and is raised here so
//! the deep filters reach the index.

mod common;

use common::raw::{self, Connect, Raw};
use common::v5::{opts, rc, V5};
use common::{unique_id, Broker, STEP};
use midge::protocol::{Packet, Properties, Subscribe, Unsubscribe};

const DEEP: usize = 5_000;

fn plus_filter(levels: usize) -> String {
    vec!["+"; levels].join("/")
}

fn a_topic(levels: usize) -> String {
    vec!["a"; levels].join("/")
}

/// A bystander's round trip: the broker is alive and serving.
fn bystander_ping(port: u16) {
    let mut c = Raw::connected(port, &unique_id("by"));
    c.ping();
}

/// Subscribe, match, unsubscribe, disconnect and SIGTERM with 5,000-level filters: the
/// broker must live through each and exit cleanly. Before the fix it aborted (stack
/// overflow) at the first UNSUBSCRIBE or matching PUBLISH.
#[test]
fn five_thousand_level_filters_do_not_crash_the_broker() {
    let mut b = Broker::start_with(&["max_topic_levels 10000"]);
    if !b.is_midge() {
        return; // mosquitto caps levels at 200 whatever the config.
    }
    let plus = plus_filter(DEEP);
    let hash = format!("{}/#", a_topic(DEEP));
    let topic = a_topic(DEEP);

    let mut sub = Raw::connected(b.port(), &unique_id("deep"));
    let codes = sub.subscribe(1, &[(&plus, 0), (&hash, 0)]);
    assert_eq!(codes, vec![0, 0]);
    bystander_ping(b.port());

    // A matching PUBLISH walks both deep filters.
    let mut publisher = Raw::connected(b.port(), &unique_id("pub"));
    publisher.send(&raw::publish(&topic, b"deep", 0, false, 0));
    // 3.1.1 delivers once per matching filter (as mosquitto without overlap merging does);
    // midge merges per session: at least one.
    assert_eq!(sub.expect_publish().payload, b"deep");
    bystander_ping(b.port());

    // UNSUBSCRIBE walks and prunes the deep chain.
    sub.send(&raw::unsubscribe(2, &[&plus]));
    sub.expect(raw::UNSUBACK);
    bystander_ping(b.port());

    // Disconnect removes the rest (the session ends: clean session).
    sub.send(&raw::disconnect());
    assert!(sub.is_closed_within(STEP));
    bystander_ping(b.port());

    // A deep filter left in place when the broker stops: its index is dropped at SIGTERM.
    let mut left = Raw::connected(b.port(), &unique_id("left"));
    assert_eq!(left.subscribe(1, &[(&plus, 0), (&hash, 1)]), vec![0, 1]);
    b.assert_running();
    b.terminate();
    let log = b.log();
    assert!(
        !log.contains("overflow") && !log.contains("panicked"),
        "broker log at SIGTERM:\n{}",
        &log[log.len().saturating_sub(2000)..]
    );
}

/// Past `max_topic_levels`, SUBSCRIBE, UNSUBSCRIBE and PUBLISH are malformed: the
/// connection is closed (mosquitto 2.0.11 does the same for more than 200 `/`). 200 levels
/// are accepted by both.
#[test]
fn topics_past_max_topic_levels_close_the_connection() {
    let b = Broker::start();
    let at = plus_filter(200);
    let over = plus_filter(300);
    let over_topic = a_topic(300);

    let mut c = Raw::connected(b.port(), &unique_id("lim"));
    assert_eq!(c.subscribe(1, &[(&at, 0)]), vec![0]);
    c.send(&raw::publish(&a_topic(200), b"ok", 0, false, 0));
    assert_eq!(c.expect_publish().payload, b"ok");

    let mut c = Raw::connected(b.port(), &unique_id("lim"));
    c.send(&raw::subscribe(1, &[("ok/t", 0), (&over, 0)]));
    assert!(
        c.expect_closed(STEP)
            .iter()
            .all(|p| p.kind() != raw::SUBACK),
        "no SUBACK for a SUBSCRIBE past the limit"
    );

    let mut c = Raw::connected(b.port(), &unique_id("lim"));
    c.send(&raw::unsubscribe(1, &[&over]));
    c.expect_closed(STEP);

    let mut c = Raw::connected(b.port(), &unique_id("lim"));
    c.send(&raw::publish(&over_topic, b"x", 1, false, 1));
    assert!(c
        .expect_closed(STEP)
        .iter()
        .all(|p| p.kind() != raw::PUBACK));

    // A will past the limit: refused at CONNECT, no session.
    let mut c = Raw::tcp(b.port());
    c.send(
        &Connect::new(&unique_id("lim"))
            .will(&over_topic, b"w", 0, false)
            .encode(),
    );
    let got = c.expect_closed(STEP);
    assert!(
        got.iter()
            .all(|p| p.kind() != raw::CONNACK || p.body[1] != 0),
        "a will past the limit was accepted: {got:?}"
    );
    bystander_ping(b.port());
}

/// 5.0: past the limit, DISCONNECT 0x8F (Topic Filter invalid) before the close.
#[test]
fn v5_filter_past_max_topic_levels_gets_disconnect() {
    let b = Broker::start_with(&["max_topic_levels 20"]);
    if !b.is_midge() {
        return;
    }
    let mut c = V5::connected(b.port(), &unique_id("lim5"));
    c.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![(plus_filter(21).as_str().into(), opts(0))],
        properties: Properties::default(),
    }));
    c.expect_disconnect_code(rc::TOPIC_FILTER_INVALID, "filter past max_topic_levels");
}

/// [MQTT-4.7.1-1], [MQTT-4.7.3-1]: a misplaced wildcard or an empty filter makes SUBSCRIBE
/// and UNSUBSCRIBE malformed packets: the connection is closed, with no SUBACK/UNSUBACK.
#[test]
fn invalid_filters_close_a_3_1_1_connection() {
    let b = Broker::start();
    for bad in ["a/#/b", "#/x", "a+", "a/b#", ""] {
        let mut c = Raw::connected(b.port(), &unique_id("bad"));
        c.send(&raw::subscribe(1, &[("ok/t", 0), (bad, 0)]));
        let got = c.expect_closed(STEP);
        assert!(
            got.iter().all(|p| p.kind() != raw::SUBACK),
            "SUBSCRIBE {bad:?}: {got:?}"
        );
        let mut c = Raw::connected(b.port(), &unique_id("bad"));
        c.send(&raw::unsubscribe(1, &[bad]));
        let got = c.expect_closed(STEP);
        assert!(
            got.iter().all(|p| p.kind() != raw::UNSUBACK),
            "UNSUBSCRIBE {bad:?}: {got:?}"
        );
    }
    bystander_ping(b.port());
}

/// 5.0: the same, with DISCONNECT 0x8F (Topic Filter invalid) first. mosquitto 2.0.11
/// sends 0x81 (Malformed Packet); both are the close the specification asks for.
#[test]
fn invalid_filters_get_disconnect_in_v5() {
    let b = Broker::start();
    let want = if b.is_midge() {
        rc::TOPIC_FILTER_INVALID
    } else {
        rc::MALFORMED_PACKET
    };
    for bad in ["a/#/b", "#/x", "a+", ""] {
        let mut c = V5::connected(b.port(), &unique_id("bad5"));
        c.send(&Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![("ok/t".into(), opts(0)), (bad.into(), opts(0))],
            properties: Properties::default(),
        }));
        c.expect_disconnect_code(want, &format!("SUBSCRIBE {bad:?}"));
        let mut c = V5::connected(b.port(), &unique_id("bad5"));
        c.send(&Packet::Unsubscribe(Unsubscribe {
            packet_id: 1,
            filters: vec![bad.into()],
            properties: Properties::default(),
        }));
        c.expect_disconnect_code(want, &format!("UNSUBSCRIBE {bad:?}"));
    }
}

/// `max_subscriptions_per_client`: filters past it fail (3.1.1 0x80, 5.0 0x97); replacing
/// an existing one still works, and unsubscribing makes room.
#[test]
fn max_subscriptions_per_client_refuses_the_extra_filters() {
    let b = Broker::start_with(&["max_subscriptions_per_client 3"]);
    if !b.is_midge() {
        return;
    }
    let mut c = Raw::connected(b.port(), &unique_id("quota"));
    let codes = c.subscribe(
        1,
        &[("q/1", 1), ("q/2", 1), ("q/3", 1), ("q/4", 1), ("q/5", 0)],
    );
    assert_eq!(codes, vec![1, 1, 1, 0x80, 0x80]);
    assert_eq!(
        c.subscribe(2, &[("q/2", 0)]),
        vec![0],
        "a replacement is no new filter"
    );
    c.send(&raw::unsubscribe(3, &["q/1"]));
    c.expect(raw::UNSUBACK);
    assert_eq!(c.subscribe(4, &[("q/4", 1), ("q/5", 1)]), vec![1, 0x80]);

    let mut c = V5::connected(b.port(), &unique_id("quota5"));
    let codes = c.subscribe(&[
        ("r/1", opts(0)),
        ("r/2", opts(0)),
        ("r/3", opts(0)),
        ("r/4", opts(0)),
    ]);
    assert_eq!(codes, vec![0, 0, 0, rc::QUOTA_EXCEEDED]);
}

/// A store written under `max_topic_levels 10000` holds a 5,000-level filter and a 300-level
/// retained topic; restarted under the default 200, the broker starts, logs what it
/// dropped, and keeps the rest of the session and the other retained messages.
#[test]
fn a_store_with_topics_past_the_limits_loads_the_rest() {
    if !common::is_midge() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut b = common::persistent_broker(dir.path(), &["max_topic_levels 10000"]);
    let id = unique_id("kept");
    let deep = plus_filter(DEEP);
    let (mut c, _) = Raw::connect(b.port(), &Connect::new(&id).clean(false));
    assert_eq!(c.subscribe(1, &[("ok/#", 1), (&deep, 1)]), vec![1, 1]);
    c.send(&raw::disconnect());
    assert!(c.is_closed_within(STEP));
    let mut p = Raw::connected(b.port(), &unique_id("p"));
    p.publish_complete("ok/r", b"kept", 1, true, 2);
    p.publish_complete(&a_topic(300), b"deep", 1, true, 3);
    p.send(&raw::disconnect());
    assert!(p.is_closed_within(STEP));
    b.terminate();

    let config = std::fs::read_to_string(b.config_path()).unwrap();
    std::fs::write(
        b.config_path(),
        config.replace("max_topic_levels 10000\n", ""),
    )
    .unwrap();
    b.restart();
    assert!(
        b.wait_log_contains_any(&["dropped the subscription of client"], STEP),
        "{}",
        b.log()
    );
    assert!(b.log().contains("dropped the retained message on 'a/a/a"));

    let (mut c, present) = Raw::connect(b.port(), &Connect::new(&id).clean(false));
    assert!(present, "the session itself was kept");
    // Its queued copies of the retained publishes, from before the restart.
    c.collect_publishes_until_quiet(std::time::Duration::from_millis(300));
    let mut p = Raw::connected(b.port(), &unique_id("p"));
    p.send(&raw::publish("ok/live", b"live", 0, false, 0));
    assert_eq!(
        c.expect_publish().payload,
        b"live",
        "its other filter still works"
    );
    let mut r = Raw::connected(b.port(), &unique_id("r"));
    assert_eq!(r.subscribe(1, &[("#", 0)]), vec![0]);
    let got = r.collect_publishes_until_quiet(std::time::Duration::from_millis(300));
    let topics: Vec<&str> = got.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(
        topics,
        ["ok/r"],
        "only the retained message within the limits"
    );
}
