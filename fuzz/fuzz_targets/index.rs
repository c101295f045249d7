//! The subscription index against a plain model: sequences of subscribe, unsubscribe, drop
//! and match, every match compared with `filter_matches` over the model's subscriptions.
//!
//! Filters and topics are built from a small alphabet of levels (so that they collide and
//! match) and at most `MAX_LEVELS` deep: deep filters are the topic-depth limit's business
//! (`max_topic_levels`, tested in `tests/deep_topics.rs`); this target looks for other bugs.
#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use midge::index::{Entry, SubscriberId, TopicIndex};
use midge::protocol::topic::{
    filter_matches, parse_shared, validate_topic_filter, validate_topic_name,
};
use midge::protocol::{QoS, RetainHandling, SubOptions};

const MAX_LEVELS: usize = 12;
const LEVELS: [&str; 10] = ["a", "b", "c", "", "+", "#", "$SYS", "$x", "aa", "a b"];
const GROUPS: [&str; 3] = ["g1", "g2", "$x"];

#[derive(Debug, Arbitrary)]
struct Filter {
    levels: Vec<u8>,
    /// Some(i): `$share/GROUPS[i]/...`.
    group: Option<u8>,
}

impl Filter {
    fn text(&self) -> String {
        let mut s = match self.group {
            Some(g) => format!("$share/{}/", GROUPS[usize::from(g) % GROUPS.len()]),
            None => String::new(),
        };
        for (i, &l) in self.levels.iter().take(MAX_LEVELS).enumerate() {
            if i > 0 {
                s.push('/');
            }
            s.push_str(LEVELS[usize::from(l) % LEVELS.len()]);
        }
        s
    }
}

#[derive(Debug, Arbitrary)]
enum Op {
    Subscribe {
        who: u8,
        filter: Filter,
        qos: u8,
        identifier: Option<u32>,
    },
    Unsubscribe {
        who: u8,
        filter: Filter,
    },
    /// The session ends: all its subscriptions go.
    Drop {
        who: u8,
    },
    Match {
        topic: Vec<u8>,
        pick_shared: bool,
    },
}

fn subscriber(who: u8) -> SubscriberId {
    SubscriberId {
        shard: u16::from(who % 2),
        slot: u32::from(who % 8),
        generation: u32::from(who % 3),
    }
}

/// What the index must report for one match, in a comparable form.
type Visit = (SubscriberId, u8, Option<u32>, Option<String>);

fn key(e: &Entry, group: Option<&str>) -> Visit {
    (
        e.subscriber,
        e.options.qos as u8,
        e.identifier,
        group.map(str::to_owned),
    )
}

fuzz_target!(|ops: Vec<Op>| {
    let mut index = TopicIndex::new();
    // (full filter, subscriber) -> entry.
    let mut model: BTreeMap<(String, SubscriberId), Entry> = BTreeMap::new();
    for op in ops.into_iter().take(256) {
        match op {
            Op::Subscribe {
                who,
                filter,
                qos,
                identifier,
            } => {
                let full = filter.text();
                if validate_topic_filter(&full).is_err()
                    || matches!(parse_shared(&full), Some(Err(_)))
                {
                    continue;
                }
                let entry = Entry {
                    subscriber: subscriber(who),
                    options: SubOptions {
                        qos: QoS::from_u8(qos % 3).unwrap(),
                        no_local: qos & 4 != 0,
                        retain_as_published: qos & 8 != 0,
                        retain_handling: RetainHandling::SendAtSubscribe,
                    },
                    identifier: identifier.filter(|&i| i > 0),
                };
                let replaced = index.insert(&full, entry);
                let was = model.insert((full.clone(), entry.subscriber), entry);
                assert_eq!(replaced, was.is_some(), "insert {full:?}");
            }
            Op::Unsubscribe { who, filter } => {
                let full = filter.text();
                if validate_topic_filter(&full).is_err()
                    || matches!(parse_shared(&full), Some(Err(_)))
                {
                    continue;
                }
                let removed = index.remove(&full, subscriber(who));
                let was = model.remove(&(full.clone(), subscriber(who)));
                assert_eq!(removed, was.is_some(), "remove {full:?}");
            }
            Op::Drop { who } => {
                let s = subscriber(who);
                let mine: Vec<String> = model
                    .keys()
                    .filter(|(_, k)| *k == s)
                    .map(|(f, _)| f.clone())
                    .collect();
                for f in mine {
                    assert!(index.remove(&f, s), "drop {f:?}");
                    model.remove(&(f, s));
                }
            }
            Op::Match { topic, pick_shared } => {
                let topic = topic
                    .iter()
                    .take(MAX_LEVELS)
                    .map(|&l| LEVELS[usize::from(l) % LEVELS.len()])
                    .filter(|l| !l.contains(['+', '#']))
                    .collect::<Vec<_>>()
                    .join("/");
                if validate_topic_name(&topic).is_err() {
                    continue;
                }
                check_match(&index, &model, &topic, pick_shared);
            }
        }
        assert_eq!(index.len(), model.len());
    }
});

fn check_match(
    index: &TopicIndex,
    model: &BTreeMap<(String, SubscriberId), Entry>,
    topic: &str,
    pick_shared: bool,
) {
    let mut want: Vec<Visit> = Vec::new();
    // Shared groups that match: full filter -> members.
    let mut groups: BTreeMap<&str, Vec<SubscriberId>> = BTreeMap::new();
    for ((full, s), e) in model {
        match parse_shared(full) {
            Some(Ok((_, filter))) => {
                if filter_matches(filter, topic) {
                    groups.entry(full.as_str()).or_default().push(*s);
                }
            }
            _ => {
                if filter_matches(full, topic) {
                    want.push(key(e, None));
                }
            }
        }
    }
    want.sort();
    // Three times: the match cache admits a topic on its second miss and serves the third.
    for round in 0..3 {
        let mut plain: Vec<Visit> = Vec::new();
        let mut shared: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        index.for_each_match(topic, pick_shared, |e, group| match group {
            None => plain.push(key(e, None)),
            Some(g) => shared.entry(g.as_str().to_owned()).or_default().push(*e),
        });
        plain.sort();
        assert_eq!(plain, want, "round {round}: plain matches of {topic:?}");
        if !pick_shared {
            assert!(
                shared.is_empty(),
                "shared members visited without pick_shared"
            );
            continue;
        }
        assert_eq!(
            shared.keys().map(String::as_str).collect::<Vec<_>>(),
            groups.keys().copied().collect::<Vec<_>>(),
            "round {round}: shared groups matching {topic:?}"
        );
        for (g, picked) in &shared {
            assert_eq!(picked.len(), 1, "one member per group: {g}");
            let member = picked[0];
            assert!(
                groups[g.as_str()].contains(&member.subscriber),
                "{g}: not a member"
            );
            assert_eq!(
                model[&(g.clone(), member.subscriber)],
                member,
                "{g}: stale entry"
            );
            assert!(
                index.pick_shared(g).is_some(),
                "{g}: pick_shared found nobody"
            );
        }
    }
}
