use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::message::Message;
use crate::protocol::topic::filter_matches;
use crate::protocol::QoS;
use crate::protocol::{ByteStr, Properties};

fn msg(topic: &str, payload: &'static [u8]) -> SharedMessage {
    Arc::new(Message {
        topic: topic.into(),
        payload: bytes::Bytes::from_static(payload),
        qos: QoS::AtMostOnce,
        retain: true,
        properties: Default::default(),
        expires_at: None,
        origin: None,
    })
}

fn topics(store: &RetainedStore, filter: &str) -> Vec<String> {
    let mut out = Vec::new();
    store.matching(filter, &mut out);
    let mut t: Vec<String> = out.iter().map(|m| m.topic.to_string()).collect();
    t.sort();
    t
}

#[test]
fn retained_message_is_replaced_and_cleared_by_empty_payload() {
    let store = RetainedStore::new();
    store.set(&msg("a/b", b"1"));
    store.set(&msg("a/b", b"2"));
    store.set(&msg("a/c", b"3"));
    let mut out = Vec::new();
    store.matching("a/b", &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(&out[0].payload[..], b"2");
    out.clear();
    store.matching("a/+", &mut out);
    assert_eq!(out.len(), 2);
    store.set(&msg("a/b", b""));
    out.clear();
    store.matching("#", &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(store.len(), 1);
    store.set(&msg("a/c", b""));
    store.set(&msg("nothing/here", b""));
    assert!(store.is_empty());
    let inner = store.inner.read().unwrap();
    assert!(inner.root.children.is_empty(), "emptied nodes are pruned");
}

#[test]
fn the_spec_examples_and_dollar_topics() {
    let store = RetainedStore::new();
    for t in [
        "sport",
        "sport/tennis",
        "sport/tennis/player1",
        "sport/",
        "/finance",
        "$SYS/broker",
        "a//b",
    ] {
        store.set(&msg(t, b"x"));
    }
    assert_eq!(
        topics(&store, "sport/#"),
        ["sport", "sport/", "sport/tennis", "sport/tennis/player1"]
    );
    assert_eq!(topics(&store, "sport/+"), ["sport/", "sport/tennis"]);
    assert_eq!(
        topics(&store, "+/+"),
        ["/finance", "sport/", "sport/tennis"]
    );
    assert_eq!(topics(&store, "+"), ["sport"]);
    assert_eq!(topics(&store, "$SYS/#"), ["$SYS/broker"]);
    assert!(!topics(&store, "#").contains(&"$SYS/broker".to_string()));
    assert!(topics(&store, "+/broker").is_empty());
    assert_eq!(topics(&store, "a//b"), ["a//b"]);
    assert_eq!(topics(&store, "a/+/b"), ["a//b"]);
}

#[test]
fn expired_messages_are_not_returned() {
    let store = RetainedStore::new();
    let mut m = Message::clone(&msg("e/1", b"x"));
    m.expires_at = Some(Instant::now());
    store.set(&Arc::new(m));
    store.set(&msg("e/2", b"y"));
    assert_eq!(topics(&store, "e/#"), ["e/2"]);
}

#[test]
fn hundred_thousand_level_topics_do_not_recurse() {
    let store = RetainedStore::new();
    let deep = vec!["a"; 100_000].join("/");
    store.set(&msg(&deep, b"x"));
    store.set(&msg("a", b"y"));
    assert_eq!(topics(&store, "a/#").len(), 2);
    assert_eq!(topics(&store, &vec!["+"; 100_000].join("/")).len(), 1);
    assert_eq!(topics(&store, &deep).len(), 1);
    store.set(&msg(&deep, b""));
    assert_eq!(topics(&store, "#"), ["a"]);
    store.set(&msg(&deep, b"x"));
    drop(store);
}

fn level() -> impl Strategy<Value = &'static str> {
    // More names than `Children::FEW`, so nodes switch between the vector and the table.
    prop::sample::select(vec![
        "a", "b", "", "$s", "c", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9",
    ])
}

fn arb_topic() -> impl Strategy<Value = String> {
    prop::collection::vec(level(), 1..5).prop_map(|l| l.join("/"))
}

fn arb_filter() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop_oneof![3 => level(), 1 => Just("+")], 1..5),
        any::<bool>(),
    )
        .prop_map(|(mut l, hash)| {
            if hash {
                l.push("#");
            }
            l.join("/")
        })
}

#[test]
fn backlog_bounds_each_turn_and_what_it_holds() {
    let store = RetainedStore::new();
    for i in 0..3000 {
        store.set(&msg(&format!("t/{i}"), b"x"));
    }
    let sub = crate::index::SubscriberId {
        shard: 0,
        slot: 1,
        generation: 1,
    };
    let mut backlog = RetainedBacklog::default();
    for _ in 0..100 {
        backlog.push(PendingRetained {
            subscriber: sub,
            qos: QoS::AtMostOnce,
            ids: Default::default(),
            work: Work::Lookup("#".into()),
        });
    }
    let mut delivered = 0;
    let mut turns = 0;
    while !backlog.is_empty() {
        backlog.new_turn();
        let mut this_turn = 0;
        backlog.run_turn(&store, |_, _, _, _| this_turn += 1);
        assert!(this_turn <= RetainedBacklog::DELIVERIES_PER_TURN);
        assert!(
            backlog.found <= RetainedBacklog::MAX_FOUND + 3000,
            "found {}",
            backlog.found
        );
        delivered += this_turn;
        turns += 1;
        assert!(turns < 10_000);
    }
    assert_eq!(
        delivered,
        100 * 3000,
        "every message of every subscription, once"
    );
    assert_eq!(backlog.found, 0);
}

proptest! {
    /// The trie answers what the linear scan over every retained topic did, through
    /// sets and clears [MQTT-4.7.1-2], [MQTT-4.7.2-1].
    #[test]
    fn agrees_with_the_linear_matcher(
        ops in prop::collection::vec((arb_topic(), any::<bool>()), 1..120),
        filters in prop::collection::vec(arb_filter(), 1..20),
    ) {
        let store = RetainedStore::new();
        let mut live = std::collections::BTreeSet::new();
        for (t, set) in &ops {
            store.set(&msg(t, if *set { b"x" } else { b"" }));
            if *set { live.insert(t.clone()); } else { live.remove(t); }
        }
        prop_assert_eq!(store.len(), live.len());
        for f in filters.iter().chain(["#".to_string(), "+/#".to_string()].iter()) {
            let want: Vec<String> =
                live.iter().filter(|t| filter_matches(f, t)).cloned().collect();
            prop_assert_eq!(topics(&store, f), want, "filter {}", f);
        }
    }
}

#[test]
fn payload_bytes_follow_replacements_and_clears() {
    let store = RetainedStore::new();
    store.set(&msg("a/b", b"12345"));
    store.set(&msg("a/c", b"12"));
    assert_eq!(store.len_and_bytes(), (2, 7));
    store.set(&msg("a/b", b"1"));
    assert_eq!(store.len_and_bytes(), (2, 3));
    store.set(&msg("a/c", b""));
    assert_eq!(store.len_and_bytes(), (1, 1));
}

#[test]
fn holds_tells_whether_setting_a_message_would_change_what_is_retained() {
    let store = RetainedStore::new();
    assert!(
        store.holds(&msg("a/b", b"")),
        "clearing nothing changes nothing"
    );
    assert!(!store.holds(&msg("a/b", b"1")));
    store.set(&msg("a/b", b"1"));
    assert!(store.holds(&msg("a/b", b"1")));
    assert!(!store.holds(&msg("a/b", b"2")), "another payload");
    assert!(!store.holds(&msg("a/b", b"")), "a clear");
    assert!(
        store.holds(&msg("a", b"")),
        "nothing is retained on the parent level"
    );
    assert!(!store.holds(&msg("a", b"1")));
    let mut other_qos = (*msg("a/b", b"1")).clone();
    other_qos.qos = QoS::AtLeastOnce;
    assert!(!store.holds(&other_qos), "another QoS");
    let mut with_property = (*msg("a/b", b"1")).clone();
    with_property.properties = Properties {
        content_type: Some(ByteStr::from("text/plain")),
        ..Properties::default()
    };
    assert!(!store.holds(&with_property), "another property");
    // The expiry interval counts down between copies of one message: not a difference.
    let mut counted_down = (*msg("a/b", b"1")).clone();
    counted_down.properties.message_expiry_interval = Some(7);
    assert!(store.holds(&counted_down));
}
