//! The subscription index: which sessions want a topic.
//!
//! # Why per-shard replicas
//! Every PUBLISH reads the index, so readers must never block (DESIGN.md 1.2). midge keeps one
//! replica of the whole index per shard, owned by that shard's thread: a match is a plain walk
//! of a trie with no atomics at all. Writes (SUBSCRIBE/UNSUBSCRIBE, session end) are applied
//! by the subscribing session's own shard at once and sent to every other shard through its
//! inbox, so all updates for one session arrive everywhere in the order they were made (a
//! session only ever lives on its home shard, see `shard::home_shard`). Replicas therefore
//! converge; the cost is N copies of the index (N = shards, i.e. cores) and one inbox item per
//! other shard per subscription change, both independent of the number of subscriptions.
//!
//! # Shape
//! A trie with one node per topic level. Wildcard children are separate fields (as in
//! nats-server's sublist), so a match visits at most three branches per level and never scans
//! siblings. Insert and remove are O(levels), whatever the total number of subscriptions.

use std::cell::Cell;
use std::collections::HashMap;

use crate::protocol::topic::parse_shared;
use crate::protocol::{ByteStr, SubOptions};

/// Identifies a session across the broker: its home shard, its slot in that shard's session
/// slab, and the slot's generation (a slot is reused after a session ends; the generation
/// makes a late delivery to the old occupant detectable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriberId {
    pub shard: u16,
    pub slot: u32,
    pub generation: u32,
}

/// One subscription as the index stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub subscriber: SubscriberId,
    pub options: SubOptions,
    /// MQTT 5 subscription identifier, if the SUBSCRIBE carried one.
    pub identifier: Option<u32>,
}

/// The subscriptions ending at one node. Order does not matter (the router merges per
/// session), so removal is `swap_remove`; a list that grows past [`EntryList::INDEXED`]
/// also keeps a position map, so that a SUBSCRIBE or UNSUBSCRIBE on a topic with 10k
/// subscribers costs O(1) rather than a scan (issue 7: subscribe cost independent of the
/// number of subscriptions). Small lists, the common case, stay a plain `Vec`.
#[derive(Debug, Default)]
struct EntryList {
    entries: Vec<Entry>,
    pos: Option<HashMap<SubscriberId, usize>>,
}

impl EntryList {
    /// Above this many entries the position map is kept.
    const INDEXED: usize = 16;

    fn as_slice(&self) -> &[Entry] {
        &self.entries
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn find(&self, s: SubscriberId) -> Option<usize> {
        match &self.pos {
            Some(pos) => pos.get(&s).copied(),
            None => self.entries.iter().position(|e| e.subscriber == s),
        }
    }

    /// Adds `entry`, replacing an earlier entry of the same subscriber (a repeated SUBSCRIBE
    /// to the same filter replaces the subscription [MQTT-3.8.4-3]). True if it replaced one.
    fn upsert(&mut self, entry: Entry) -> bool {
        if let Some(i) = self.find(entry.subscriber) {
            self.entries[i] = entry;
            return true;
        }
        self.entries.push(entry);
        match &mut self.pos {
            Some(pos) => {
                pos.insert(entry.subscriber, self.entries.len() - 1);
            }
            None if self.entries.len() > Self::INDEXED => {
                self.pos = Some(
                    self.entries
                        .iter()
                        .enumerate()
                        .map(|(i, e)| (e.subscriber, i))
                        .collect(),
                );
            }
            None => {}
        }
        false
    }

    /// Removes the entry of `s`; true if there was one.
    fn take(&mut self, s: SubscriberId) -> bool {
        let Some(i) = self.find(s) else {
            return false;
        };
        self.entries.swap_remove(i);
        if let Some(pos) = &mut self.pos {
            pos.remove(&s);
            if let Some(moved) = self.entries.get(i) {
                pos.insert(moved.subscriber, i);
            }
            if self.entries.len() < Self::INDEXED / 2 {
                self.pos = None;
            }
        }
        true
    }

    /// The entry at `i` (round-robin picks).
    fn get(&self, i: usize) -> Option<&Entry> {
        self.entries.get(i)
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[derive(Debug, Default)]
struct Node {
    /// Literal children by level name.
    children: HashMap<Box<str>, Node>,
    /// The `+` child.
    plus: Option<Box<Node>>,
    /// Subscriptions whose filter ends at this node.
    here: EntryList,
    /// Subscriptions whose filter is this node's path followed by `/#`.
    hash: EntryList,
    /// Shared subscription groups (`$share/{group}/{filter}`) whose filter ends here.
    shared: Vec<SharedGroup>,
    /// Shared groups whose filter is this node's path followed by `/#`.
    shared_hash: Vec<SharedGroup>,
}

/// The members of one `$share/{group}/...` filter; each message goes to one of them.
#[derive(Debug)]
struct SharedGroup {
    name: Box<str>,
    /// The whole filter, `$share/{group}/{filter}` (deliveries carry it, so a member that
    /// leaves can hand its unacknowledged messages to another member).
    filter: ByteStr,
    members: EntryList,
    /// Round-robin cursor. Each shard's replica keeps its own: a message is assigned by the
    /// shard it was published on, so fairness holds per publishing shard.
    next: Cell<usize>,
}

impl SharedGroup {
    fn pick(&self) -> Option<&Entry> {
        if self.members.is_empty() {
            return None;
        }
        let i = self.next.get() % self.members.len();
        self.next.set(i + 1);
        self.members.get(i)
    }
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.here.is_empty()
            && self.hash.is_empty()
            && self.shared.is_empty()
            && self.shared_hash.is_empty()
    }
}

/// The list a filter's subscriptions live in at its final node: plain or shared (by group).
fn slot_list<'a>(
    groups: &'a mut Vec<SharedGroup>,
    plain: &'a mut EntryList,
    group: Option<&str>,
    full: &str,
) -> &'a mut EntryList {
    let Some(name) = group else { return plain };
    let i = match groups.iter().position(|g| &*g.name == name) {
        Some(i) => i,
        None => {
            groups.push(SharedGroup {
                name: name.into(),
                filter: full.into(),
                members: EntryList::default(),
                next: Cell::new(0),
            });
            groups.len() - 1
        }
    };
    &mut groups[i].members
}

/// Removes `subscriber` from the plain or shared list; drops a shared group left empty.
fn take_from(
    groups: &mut Vec<SharedGroup>,
    plain: &mut EntryList,
    group: Option<&str>,
    subscriber: SubscriberId,
) -> bool {
    let Some(name) = group else {
        return plain.take(subscriber);
    };
    let Some(i) = groups.iter().position(|g| &*g.name == name) else {
        return false;
    };
    let removed = groups[i].members.take(subscriber);
    if groups[i].members.is_empty() {
        groups.swap_remove(i);
    }
    removed
}

/// Splits a filter into its shared group (if any) and the filter proper.
fn split_filter(filter: &str) -> (Option<&str>, &str) {
    match parse_shared(filter) {
        Some(Ok((group, f))) => (Some(group), f),
        _ => (None, filter),
    }
}

/// A trie of topic filters. See the module documentation.
#[derive(Debug, Default)]
pub struct TopicIndex {
    root: Node,
    len: usize,
}

impl TopicIndex {
    /// An empty index.
    pub fn new() -> TopicIndex {
        TopicIndex::default()
    }

    /// Number of subscriptions stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no subscription is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds or replaces the subscription of `entry.subscriber` to `filter` (a valid filter,
    /// possibly `$share/{group}/{filter}`). Returns true when it replaced an existing one.
    pub fn insert(&mut self, full: &str, entry: Entry) -> bool {
        let (group, filter) = split_filter(full);
        let mut node = &mut self.root;
        let mut levels = filter.split('/').peekable();
        while let Some(level) = levels.next() {
            if level == "#" && levels.peek().is_none() {
                let replaced =
                    slot_list(&mut node.shared_hash, &mut node.hash, group, full).upsert(entry);
                self.len += usize::from(!replaced);
                return replaced;
            }
            node = if level == "+" {
                node.plus.get_or_insert_with(Box::default)
            } else {
                node.children.entry(level.into()).or_default()
            };
        }
        let replaced = slot_list(&mut node.shared, &mut node.here, group, full).upsert(entry);
        self.len += usize::from(!replaced);
        replaced
    }

    /// Removes the subscription of `subscriber` to `filter`. Returns true if there was one.
    /// Empty nodes left behind are pruned so the index stays bounded by live subscriptions.
    pub fn remove(&mut self, filter: &str, subscriber: SubscriberId) -> bool {
        let (group, filter) = split_filter(filter);
        let levels: Vec<&str> = filter.split('/').collect();
        let removed = Self::remove_at(&mut self.root, &levels, group, subscriber);
        if removed {
            self.len -= 1;
        }
        removed
    }

    fn remove_at(
        node: &mut Node,
        levels: &[&str],
        group: Option<&str>,
        subscriber: SubscriberId,
    ) -> bool {
        match levels {
            [] => take_from(&mut node.shared, &mut node.here, group, subscriber),
            ["#"] => take_from(&mut node.shared_hash, &mut node.hash, group, subscriber),
            [first, rest @ ..] => {
                if *first == "+" {
                    let Some(child) = node.plus.as_deref_mut() else {
                        return false;
                    };
                    let removed = Self::remove_at(child, rest, group, subscriber);
                    if child.is_empty() {
                        node.plus = None;
                    }
                    removed
                } else {
                    let Some(child) = node.children.get_mut(*first) else {
                        return false;
                    };
                    let removed = Self::remove_at(child, rest, group, subscriber);
                    if child.is_empty() {
                        node.children.remove(*first);
                    }
                    removed
                }
            }
        }
    }

    /// Calls `visit(entry, None)` for every subscription whose filter matches `topic` (a
    /// valid topic name), and, when `pick_shared`, `visit(member, Some(group filter))` for one
    /// member of every matching shared group (round robin). Only the shard a message was published on
    /// picks shared members; shards that receive it from there skip the groups.
    ///
    /// A subscriber with several matching filters is visited once per filter; the caller
    /// merges them (highest QoS wins, see `Shard::deliver_matches`). Topics starting with `$`
    /// are not matched by filters whose first level is a wildcard [MQTT-4.7.2-1].
    pub fn for_each_match(
        &self,
        topic: &str,
        pick_shared: bool,
        mut visit: impl FnMut(&Entry, Option<&ByteStr>),
    ) {
        let dollar = topic.starts_with('$');
        let mut v = |list: &[Entry], groups: &[SharedGroup]| {
            list.iter().for_each(|e| visit(e, None));
            if pick_shared {
                for g in groups {
                    if let Some(e) = g.pick() {
                        visit(e, Some(&g.filter));
                    }
                }
            }
        };
        Self::match_at(&self.root, topic, true, dollar, &mut v);
    }

    /// The next member (round robin) of the shared group `$share/{group}/{filter}`, if it has
    /// any: where a departing member's unacknowledged messages go.
    pub fn pick_shared(&self, full: &str) -> Option<Entry> {
        let (Some(group), filter) = split_filter(full) else {
            return None;
        };
        let mut node = &self.root;
        let mut levels = filter.split('/').peekable();
        while let Some(level) = levels.next() {
            if level == "#" && levels.peek().is_none() {
                return node
                    .shared_hash
                    .iter()
                    .find(|g| &*g.name == group)?
                    .pick()
                    .copied();
            }
            node = if level == "+" {
                node.plus.as_deref()?
            } else {
                node.children.get(level)?
            };
        }
        node.shared
            .iter()
            .find(|g| &*g.name == group)?
            .pick()
            .copied()
    }

    fn match_at(
        node: &Node,
        rest: &str,
        first: bool,
        dollar: bool,
        visit: &mut impl FnMut(&[Entry], &[SharedGroup]),
    ) {
        let wild_ok = !(first && dollar);
        if wild_ok {
            // `a/#` matches `a/b/c`, and also `a` itself (handled at the end of the topic).
            visit(node.hash.as_slice(), &node.shared_hash);
        }
        let (level, tail) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let mut descend = |child: &Node| match tail {
            Some(t) => Self::match_at(child, t, false, dollar, visit),
            None => {
                visit(child.here.as_slice(), &child.shared);
                // "sport/#" matches "sport" [MQTT-4.7.1-2].
                visit(child.hash.as_slice(), &child.shared_hash);
            }
        };
        if let Some(child) = node.children.get(level) {
            descend(child);
        }
        if wild_ok {
            if let Some(child) = node.plus.as_deref() {
                descend(child);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::QoS;

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
}
