use super::*;
use crate::protocol::{QoS, SubOptions};

fn sub(slot: u32) -> SubscriberId {
    SubscriberId {
        shard: 0,
        slot,
        generation: 0,
    }
}

fn entry(slot: u32, qos: QoS) -> Entry {
    Entry {
        subscriber: sub(slot),
        options: SubOptions {
            qos,
            ..Default::default()
        },
        identifier: None,
    }
}

fn matches(index: &TopicIndex, topic: &str) -> Vec<u32> {
    let mut v = Vec::new();
    index.for_each_match(topic, true, |e, _| v.push(e.subscriber.slot));
    v.sort();
    v
}

#[test]
fn wildcards_match_per_the_specification() {
    let mut index = TopicIndex::new();
    index.insert("sport/tennis/player1/#", entry(1, QoS::AtMostOnce));
    index.insert("sport/+/player1", entry(2, QoS::AtMostOnce));
    index.insert("+/+", entry(3, QoS::AtMostOnce));
    index.insert("#", entry(4, QoS::AtMostOnce));
    index.insert("sport/tennis", entry(5, QoS::AtMostOnce));
    index.insert("/+", entry(6, QoS::AtMostOnce));
    // [MQTT-4.7.1-2]: the multi-level wildcard also matches the parent level.
    assert_eq!(matches(&index, "sport/tennis/player1"), vec![1, 2, 4]);
    assert_eq!(
        matches(&index, "sport/tennis/player1/ranking/wimbledon"),
        vec![1, 4]
    );
    assert_eq!(matches(&index, "sport/tennis"), vec![3, 4, 5]);
    assert_eq!(matches(&index, "/finance"), vec![3, 4, 6]);
    assert_eq!(matches(&index, "sport"), vec![4]);
}

#[test]
fn dollar_topics_are_not_matched_by_leading_wildcards() {
    // [MQTT-4.7.2-1]
    let mut index = TopicIndex::new();
    index.insert("#", entry(1, QoS::AtMostOnce));
    index.insert("+/monitor/Clients", entry(2, QoS::AtMostOnce));
    index.insert("$SYS/#", entry(3, QoS::AtMostOnce));
    index.insert("$SYS/monitor/+", entry(4, QoS::AtMostOnce));
    assert_eq!(matches(&index, "$SYS/monitor/Clients"), vec![3, 4]);
    assert_eq!(matches(&index, "a/monitor/Clients"), vec![1, 2]);
}

#[test]
fn resubscribing_replaces_and_remove_prunes() {
    let mut index = TopicIndex::new();
    assert!(!index.insert("a/b", entry(1, QoS::AtMostOnce)));
    assert!(index.insert("a/b", entry(1, QoS::ExactlyOnce)));
    assert_eq!(index.len(), 1);
    let mut qos = Vec::new();
    index.for_each_match("a/b", true, |e, _| qos.push(e.options.qos));
    assert_eq!(qos, vec![QoS::ExactlyOnce]);
    assert!(index.remove("a/b", sub(1)));
    assert!(!index.remove("a/b", sub(1)));
    assert!(index.is_empty());
    assert!(index.root.is_empty(), "empty nodes are pruned");
    index.insert("x/+/#", entry(2, QoS::AtMostOnce));
    assert!(index.remove("x/+/#", sub(2)));
    assert!(index.root.is_empty());
}

#[test]
fn shared_group_delivers_to_one_member_in_turn() {
    let mut index = TopicIndex::new();
    index.insert("$share/g/a/+", entry(1, QoS::AtMostOnce));
    index.insert("$share/g/a/+", entry(2, QoS::AtMostOnce));
    index.insert("$share/h/a/#", entry(3, QoS::AtMostOnce));
    index.insert("a/b", entry(4, QoS::AtMostOnce));
    let mut picks = Vec::new();
    for _ in 0..4 {
        let mut got = matches(&index, "a/b");
        assert!(got.contains(&3) && got.contains(&4), "{got:?}");
        got.retain(|s| *s == 1 || *s == 2);
        assert_eq!(got.len(), 1, "exactly one member of group g");
        picks.push(got[0]);
    }
    assert_eq!(picks, vec![1, 2, 1, 2]);
    let mut plain = Vec::new();
    index.for_each_match("a/b", false, |e, _| plain.push(e.subscriber.slot));
    assert_eq!(
        plain,
        vec![4],
        "receiving shards do not pick shared members"
    );
    let next = index.pick_shared("$share/g/a/+").map(|e| e.subscriber.slot);
    assert_eq!(
        next,
        Some(1),
        "a departing member's messages go to the next member"
    );
    assert_eq!(
        index.pick_shared("$share/h/a/#").map(|e| e.subscriber.slot),
        Some(3)
    );
    assert_eq!(index.pick_shared("$share/nope/a/+"), None);
    assert!(index.remove("$share/g/a/+", sub(1)));
    assert!(
        !index.remove("a/+", sub(2)),
        "a shared subscription is not the plain filter"
    );
    assert!(index.remove("$share/g/a/+", sub(2)));
    assert!(index.remove("$share/h/a/#", sub(3)));
    assert!(index.remove("a/b", sub(4)));
    assert!(index.root.is_empty());
}

#[test]
fn large_lists_stay_correct_through_indexed_upserts_and_removals() {
    // Past EntryList::INDEXED the position map takes over; swap_remove moves entries, so
    // every removal must keep the map right.
    let mut index = TopicIndex::new();
    for slot in 0..100 {
        assert!(!index.insert("big/topic", entry(slot, QoS::AtMostOnce)));
    }
    assert!(
        index.insert("big/topic", entry(42, QoS::AtLeastOnce)),
        "a repeated SUBSCRIBE replaces"
    );
    assert_eq!(index.len(), 100);
    for slot in (0..100).filter(|s| s % 3 != 0) {
        assert!(index.remove("big/topic", sub(slot)), "slot {slot}");
        assert!(!index.remove("big/topic", sub(slot)), "gone: {slot}");
    }
    let want: Vec<u32> = (0..100).filter(|s| s % 3 == 0).collect();
    assert_eq!(matches(&index, "big/topic"), want);
    let mut qos = None;
    index.for_each_match("big/topic", false, |e, _| {
        if e.subscriber.slot == 42 {
            qos = Some(e.options.qos);
        }
    });
    assert_eq!(qos, Some(QoS::AtLeastOnce));
    for slot in want {
        assert!(index.remove("big/topic", sub(slot)));
    }
    assert!(index.root.is_empty());
}

#[test]
fn matches_agree_with_the_reference_matcher() {
    use crate::protocol::topic::filter_matches;
    let filters = [
        "a/b", "a/+", "a/#", "+/b", "#", "+", "a/+/c", "/#", "+/+", "a//b", "$x/#", "$x/+",
    ];
    let topics = [
        "a/b", "a", "a/c", "b/b", "a/b/c", "/", "/a", "a//b", "$x/y", "$x", "x",
    ];
    let mut index = TopicIndex::new();
    for (i, f) in filters.iter().enumerate() {
        index.insert(f, entry(i as u32, QoS::AtMostOnce));
    }
    for t in topics {
        let want: Vec<u32> = filters
            .iter()
            .enumerate()
            .filter(|(_, f)| filter_matches(f, t))
            .map(|(i, _)| i as u32)
            .collect();
        assert_eq!(matches(&index, t), want, "topic {t}");
    }
}

/// Whether `topic`'s wildcard match is currently served from the cache.
fn cached(index: &TopicIndex, topic: &str) -> bool {
    let hash = index.hasher.hash_one(topic);
    let cache = index.cache.borrow();
    cache
        .slots
        .get((hash as usize) % CACHE_SLOTS)
        .is_some_and(|s| s.generation == index.generation && s.hash == hash && s.topic == topic)
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const LEVELS: [&str; 5] = ["a", "b", "$SYS", "", "c"];

fn random_topic(rng: &mut Rng) -> String {
    let n = 1 + rng.below(5);
    (0..n)
        .map(|i| match LEVELS[rng.below(LEVELS.len())] {
            // `$` only makes sense (and only matters) at the first level.
            "$SYS" if i > 0 => "a",
            l => l,
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn random_filter(rng: &mut Rng) -> String {
    let n = 1 + rng.below(5);
    let mut levels: Vec<&str> = (0..n)
        .map(|i| match rng.below(8) {
            0 | 1 => "+",
            _ => match LEVELS[rng.below(LEVELS.len())] {
                "$SYS" if i > 0 => "b",
                l => l,
            },
        })
        .collect();
    if rng.below(4) == 0 {
        levels.push("#");
    }
    let filter = levels.join("/");
    match rng.below(6) {
        0 => format!("$share/g{}/{filter}", rng.below(2)),
        _ => filter,
    }
}

/// Plain matches and the shared groups that must each yield one member, per the
/// reference matcher over the live subscriptions.
fn reference(live: &[(String, u32)], topic: &str) -> (Vec<u32>, Vec<String>) {
    use crate::protocol::topic::filter_matches;
    let mut plain = Vec::new();
    let mut groups = Vec::new();
    for (full, slot) in live {
        let (group, filter) = split_filter(full);
        if filter_matches(filter, topic) {
            match group {
                None => plain.push(*slot),
                Some(_) => groups.push(full.clone()),
            }
        }
    }
    plain.sort();
    groups.sort();
    groups.dedup();
    (plain, groups)
}

fn observed(index: &TopicIndex, topic: &str) -> (Vec<u32>, Vec<String>) {
    let mut plain = Vec::new();
    let mut groups = Vec::new();
    index.for_each_match(topic, true, |e, g| match g {
        None => plain.push(e.subscriber.slot),
        Some(g) => groups.push(g.to_string()),
    });
    plain.sort();
    groups.sort();
    (plain, groups)
}

#[test]
fn fast_path_and_cache_agree_with_the_reference_matcher_under_churn() {
    // Random filters (wildcards, `$SYS`, shared, empty levels, trailing `/`) and topics;
    // each topic is matched three times (first miss, admission, hit) between random
    // subscribes and unsubscribes, and every answer must be the reference matcher's over
    // the subscriptions live at that moment [MQTT-4.7.1-2, MQTT-4.7.2-1].
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut index = TopicIndex::new();
    let mut live: Vec<(String, u32)> = Vec::new();
    let topics: Vec<String> = (0..40).map(|_| random_topic(&mut rng)).collect();
    let mut next_slot = 0;
    let mut served_from_cache = 0;
    for round in 0..3000 {
        match rng.below(10) {
            0..=3 => {
                let filter = random_filter(&mut rng);
                next_slot += 1;
                assert!(!index.insert(&filter, entry(next_slot, QoS::AtMostOnce)));
                live.push((filter, next_slot));
            }
            4 | 5 if !live.is_empty() => {
                let (filter, slot) = live.swap_remove(rng.below(live.len()));
                assert!(index.remove(&filter, sub(slot)), "{filter}");
            }
            _ => {}
        }
        assert_eq!(index.len(), live.len());
        let topic = &topics[rng.below(topics.len())];
        let want = reference(&live, topic);
        for pass in 0..3 {
            assert_eq!(
                observed(&index, topic),
                want,
                "round {round}, pass {pass}, topic {topic:?}"
            );
            served_from_cache += usize::from(pass == 2 && cached(&index, topic));
        }
    }
    assert!(
        served_from_cache > 300,
        "the cache was exercised: {served_from_cache}"
    );
    for (filter, slot) in live.drain(..) {
        assert!(index.remove(&filter, sub(slot)));
    }
    assert!(index.is_empty());
    assert!(index.root.is_empty() && index.exact.is_empty() && index.groups.is_empty());
    assert_eq!(index.wildcards, 0);
}

#[test]
fn subscribe_and_unsubscribe_between_matches_invalidate_the_cache() {
    let mut index = TopicIndex::new();
    index.insert("a/+/c/#", entry(1, QoS::AtMostOnce));
    index.insert("+/b/+/d", entry(2, QoS::AtMostOnce));
    let topic = "a/b/c/d";
    for _ in 0..3 {
        assert_eq!(matches(&index, topic), vec![1, 2]);
    }
    assert!(
        cached(&index, topic),
        "a repeated deep topic is served from the cache"
    );
    index.insert("a/#", entry(3, QoS::AtMostOnce));
    assert!(!cached(&index, topic), "a subscribe invalidates");
    assert_eq!(matches(&index, topic), vec![1, 2, 3]);
    for _ in 0..2 {
        assert_eq!(matches(&index, topic), vec![1, 2, 3]);
    }
    assert!(cached(&index, topic));
    index.remove("+/b/+/d", sub(2));
    assert_eq!(matches(&index, topic), vec![1, 3], "an unsubscribe too");
    // An exact subscription is found by the table, not the (cached) wildcard part.
    for _ in 0..2 {
        matches(&index, topic);
    }
    assert!(cached(&index, topic));
    index.insert(topic, entry(4, QoS::AtMostOnce));
    assert_eq!(matches(&index, topic), vec![1, 3, 4]);
}

#[test]
fn shared_groups_keep_their_turns_when_served_from_the_cache() {
    let mut index = TopicIndex::new();
    index.insert("$share/g/x/+/z/#", entry(1, QoS::AtMostOnce));
    index.insert("$share/g/x/+/z/#", entry(2, QoS::AtMostOnce));
    index.insert("$share/g/x/+/z/#", entry(3, QoS::AtMostOnce));
    let picks: Vec<u32> = (0..6).map(|_| matches(&index, "x/y/z/w")[0]).collect();
    assert!(cached(&index, "x/y/z/w"));
    assert_eq!(picks, vec![1, 2, 3, 1, 2, 3]);
    let mut groups = Vec::new();
    index.for_each_match("x/y/z/w", true, |_, g| groups.push(g.cloned()));
    assert_eq!(groups, vec![Some(ByteStr::from("$share/g/x/+/z/#"))]);
}

#[test]
fn exact_filters_skip_the_trie_and_the_cache() {
    // [MQTT-4.7.2-1] does not concern exact filters: `$SYS/x` matches itself.
    let mut index = TopicIndex::new();
    for (i, f) in ["$SYS/x", "a//b", "a/", "/", "$share/g/a/b"]
        .iter()
        .enumerate()
    {
        index.insert(f, entry(i as u32, QoS::AtMostOnce));
    }
    assert!(index.root.is_empty(), "no wildcard filter, no trie node");
    assert_eq!(matches(&index, "$SYS/x"), vec![0]);
    assert_eq!(matches(&index, "a//b"), vec![1]);
    assert_eq!(matches(&index, "a/"), vec![2]);
    assert_eq!(matches(&index, "a"), Vec::<u32>::new());
    assert_eq!(matches(&index, "/"), vec![3]);
    assert_eq!(matches(&index, "a/b"), vec![4]);
    assert_eq!(
        index.pick_shared("$share/g/a/b").map(|e| e.subscriber.slot),
        Some(4)
    );
    assert!(
        index.cache.borrow().slots.is_empty(),
        "no wildcard, no cache"
    );
}

#[test]
fn large_and_long_matches_are_not_cached() {
    let mut index = TopicIndex::new();
    for slot in 0..(CACHE_MAX_ENTRIES as u32 + 1) {
        index.insert("p/+/r", entry(slot, QoS::AtMostOnce));
    }
    for _ in 0..3 {
        assert_eq!(matches(&index, "p/q/r").len(), CACHE_MAX_ENTRIES + 1);
    }
    assert!(!cached(&index, "p/q/r"));
    let long = format!("p/{}/r", "q".repeat(CACHE_MAX_TOPIC));
    index.insert("p/+/#", entry(100, QoS::AtMostOnce));
    for _ in 0..3 {
        assert_eq!(matches(&index, &long).len(), CACHE_MAX_ENTRIES + 2);
    }
    assert!(!cached(&index, &long));
}

#[test]
fn the_exact_table_shrinks_after_a_mass_unsubscribe() {
    let mut index = TopicIndex::new();
    for slot in 0..5000 {
        index.insert(&format!("dev/{slot}"), entry(slot, QoS::AtMostOnce));
    }
    let full = index.exact.capacity();
    for slot in 10..5000 {
        assert!(index.remove(&format!("dev/{slot}"), sub(slot)));
    }
    assert!(
        index.exact.capacity() < full / 4,
        "{}",
        index.exact.capacity()
    );
    for slot in 0..10 {
        assert_eq!(matches(&index, &format!("dev/{slot}")), vec![slot]);
    }
}
/// 100,000 levels: far past `max_topic_levels`, which a raised limit or a store written
/// under one can still bring here. Every walk must be a loop; the test threads' 2 MiB
/// stacks overflowed at about 5,000 levels with the recursive walk.
#[test]
fn hundred_thousand_level_filters_insert_match_remove_and_drop() {
    const LEVELS: usize = 100_000;
    let plus = vec!["+"; LEVELS].join("/");
    let deep_hash = format!("{}/#", vec!["a"; LEVELS].join("/"));
    let topic = vec!["a"; LEVELS].join("/");
    let deeper = format!("{topic}/b/c");
    let mut index = TopicIndex::new();
    index.insert(&plus, entry(1, QoS::AtMostOnce));
    index.insert(&deep_hash, entry(2, QoS::AtMostOnce));
    index.insert("a/#", entry(4, QoS::AtMostOnce));
    assert_eq!(matches(&index, &topic), vec![1, 2, 4]);
    assert_eq!(matches(&index, &deeper), vec![2, 4]);
    assert_eq!(matches(&index, "a/b"), vec![4]);
    assert!(index.remove(&plus, sub(1)));
    assert!(!index.remove(&plus, sub(1)));
    assert_eq!(matches(&index, &topic), vec![2, 4]);
    assert!(index.remove(&deep_hash, sub(2)));
    assert_eq!(matches(&index, &topic), vec![4]);
    assert!(index.remove("a/#", sub(4)));
    assert!(index.root.is_empty(), "the deep chains were pruned");
    // Shared filters are at most 65,535 bytes (MQTT strings), so 30,000 levels.
    let shared_plus = vec!["+"; 30_000].join("/");
    let shared = format!("$share/g/{shared_plus}");
    index.insert(&shared, entry(3, QoS::AtMostOnce));
    assert_eq!(matches(&index, &vec!["x"; 30_000].join("/")), vec![3]);
    assert!(index.remove(&shared, sub(3)));
    assert!(index.root.is_empty());
    // And a whole index dropped with deep chains in it (shutdown, session end).
    index.insert(&plus, entry(1, QoS::AtMostOnce));
    index.insert(&deep_hash, entry(2, QoS::AtMostOnce));
    drop(index);
}

#[test]
fn removal_prunes_only_what_it_left_empty() {
    let mut index = TopicIndex::new();
    index.insert("a/b/+/d", entry(1, QoS::AtMostOnce));
    index.insert("a/b/+", entry(2, QoS::AtMostOnce));
    index.insert("a/+/x/#", entry(3, QoS::AtMostOnce));
    index.insert("#", entry(4, QoS::AtMostOnce));
    index.insert("/#", entry(5, QoS::AtMostOnce));
    assert!(index.remove("a/b/+/d", sub(1)));
    assert_eq!(matches(&index, "a/b/c"), vec![2, 4]);
    assert_eq!(matches(&index, "a/q/x/y"), vec![3, 4]);
    assert_eq!(matches(&index, "/z"), vec![4, 5]);
    assert!(index.remove("#", sub(4)));
    assert!(index.remove("/#", sub(5)));
    assert!(index.remove("a/b/+", sub(2)));
    assert_eq!(matches(&index, "a/q/x"), vec![3]);
    assert!(!index.root.is_empty());
    assert!(index.remove("a/+/x/#", sub(3)));
    assert!(index.root.is_empty());
}

#[test]
fn trie_children_give_memory_back_after_a_mass_unsubscribe() {
    let mut index = TopicIndex::new();
    for slot in 0..20_000 {
        index.insert(&format!("dev/{slot}/+"), entry(slot, QoS::AtMostOnce));
    }
    let full = index.root.children["dev"].children.capacity();
    for slot in 10..20_000 {
        assert!(index.remove(&format!("dev/{slot}/+"), sub(slot)));
    }
    let left = index.root.children["dev"].children.capacity();
    assert!(left < full / 4, "{left} of {full}");
    assert_eq!(matches(&index, "dev/3/x"), vec![3]);
}
