//! The retained-message store: the last retained message of each topic.
//!
//! Shared by all shards behind a `RwLock`. Unlike the subscription index it cannot be
//! replicated per shard: two shards setting the same topic at once would apply the two writes
//! in different orders and their replicas would disagree for good. The lock is taken only for
//! PUBLISHes with RETAIN set and for SUBSCRIBE, never for ordinary routing.
//!
//! # A trie by topic level
//! A wildcard SUBSCRIBE used to test every retained topic: with 100k retained messages,
//! 2,000 non-matching wildcard filters held a shard for half a minute. The store is a trie
//! with one node per level, so a lookup visits only the nodes its filter can reach: a
//! literal level is one hash probe, `+` visits the children of one node, `#` the subtree
//! it names (all of which match). A filter that matches nothing costs about its own
//! length. Every walk (insert, remove with pruning, lookup, drop) is a loop: a topic may
//! have thousands of levels when `max_topic_levels` is raised.
//!
//! `$`-topics are not matched by a filter whose first level is a wildcard [MQTT-4.7.2-1]:
//! at the root, `+` and `#` skip the children whose name starts with `$`.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Instant;

use crate::message::SharedMessage;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct RetainedStore {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    root: Node,
    len: usize,
    /// Counts the changes: the order in which they took effect, for persistence (two shards
    /// may submit their batches in the other order, see `store::Batch::put_retained`).
    version: u64,
}

/// One topic level.
#[derive(Debug, Default)]
struct Node {
    children: Children,
    /// The retained message whose topic ends here.
    msg: Option<SharedMessage>,
}

impl Node {
    fn child(&self, level: &str) -> Option<&Node> {
        self.children.get(level)
    }
}

/// A node's children. Most retained-trie nodes have one child or none (`site/N/value`), so
/// up to [`Children::FEW`] live in a small vector (no hash table, one allocation, scanned in
/// order); more move to a hash table. Halves the time of a `#` walk over 100k topics.
#[derive(Debug)]
enum Children {
    Few(Vec<(Box<str>, Node)>),
    Many(HashMap<Box<str>, Node>),
}

impl Default for Children {
    fn default() -> Children {
        Children::Few(Vec::new())
    }
}

impl Children {
    const FEW: usize = 8;

    fn len(&self) -> usize {
        match self {
            Children::Few(v) => v.len(),
            Children::Many(m) => m.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get(&self, level: &str) -> Option<&Node> {
        match self {
            Children::Few(v) => v.iter().find(|(k, _)| &**k == level).map(|(_, n)| n),
            Children::Many(m) => m.get(level),
        }
    }

    fn get_mut(&mut self, level: &str) -> Option<&mut Node> {
        match self {
            Children::Few(v) => v.iter_mut().find(|(k, _)| &**k == level).map(|(_, n)| n),
            Children::Many(m) => m.get_mut(level),
        }
    }

    fn get_or_insert(&mut self, level: &str) -> &mut Node {
        if let Children::Few(v) = self {
            if v.len() >= Self::FEW && !v.iter().any(|(k, _)| &**k == level) {
                *self = Children::Many(std::mem::take(v).into_iter().collect());
            }
        }
        match self {
            Children::Few(v) => match v.iter().position(|(k, _)| &**k == level) {
                Some(i) => &mut v[i].1,
                None => {
                    v.push((level.into(), Node::default()));
                    &mut v.last_mut().expect("just pushed").1
                }
            },
            Children::Many(m) => m.entry(level.into()).or_default(),
        }
    }

    /// Removes a child; gives the table's memory back once most children are gone.
    fn remove(&mut self, level: &str) {
        match self {
            Children::Few(v) => {
                if let Some(i) = v.iter().position(|(k, _)| &**k == level) {
                    v.swap_remove(i);
                }
            }
            Children::Many(m) => {
                m.remove(level);
                if m.len() <= Self::FEW / 2 {
                    *self = Children::Few(std::mem::take(m).into_iter().collect());
                } else if m.capacity() > 64 && m.len() < m.capacity() / 4 {
                    m.shrink_to(m.len() * 2);
                }
            }
        }
    }

    fn iter(&self) -> ChildIter<'_> {
        match self {
            Children::Few(v) => ChildIter::Few(v.iter()),
            Children::Many(m) => ChildIter::Many(m.iter()),
        }
    }

    /// Moves every child into `out` (the iterative drop).
    fn drain_into(&mut self, out: &mut Vec<Node>) {
        match self {
            Children::Few(v) => out.extend(v.drain(..).map(|(_, n)| n)),
            Children::Many(m) => out.extend(m.drain().map(|(_, n)| n)),
        }
    }
}

enum ChildIter<'a> {
    Few(std::slice::Iter<'a, (Box<str>, Node)>),
    Many(std::collections::hash_map::Iter<'a, Box<str>, Node>),
}

impl<'a> Iterator for ChildIter<'a> {
    type Item = (&'a str, &'a Node);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            ChildIter::Few(it) => it.next().map(|(k, n)| (&**k, n)),
            ChildIter::Many(it) => it.next().map(|(k, n)| (&**k, n)),
        }
    }
}

/// A deep chain would drop recursively and overflow the stack: children are moved to a
/// heap stack and dropped one at a time, each with no children left.
impl Drop for Node {
    fn drop(&mut self) {
        if self.children.is_empty() {
            return;
        }
        let mut stack: Vec<Node> = Vec::new();
        self.children.drain_into(&mut stack);
        while let Some(mut n) = stack.pop() {
            n.children.drain_into(&mut stack);
        }
    }
}

impl Inner {
    fn insert(&mut self, msg: &SharedMessage) {
        let mut node = &mut self.root;
        for level in msg.topic.split('/') {
            node = node.children.get_or_insert(level);
        }
        if node.msg.replace(msg.clone()).is_none() {
            self.len += 1;
        }
    }

    /// Clears `topic` and prunes the nodes left empty: find the highest node on the path
    /// whose subtree held nothing but this message, and cut it off.
    fn remove(&mut self, topic: &str) {
        let mut node = &mut self.root;
        for level in topic.split('/') {
            match node.children.get_mut(level) {
                Some(c) => node = c,
                None => return,
            }
        }
        if node.msg.take().is_none() {
            return;
        }
        self.len -= 1;
        if !node.children.is_empty() {
            return;
        }
        // `cut`: the depth of the first node from which the path down holds nothing else.
        let mut cut = None;
        let mut node = &self.root;
        for (depth, level) in topic.split('/').enumerate() {
            let Some(child) = node.child(level) else {
                return;
            };
            if child.msg.is_none() && child.children.len() <= 1 {
                cut.get_or_insert(depth);
            } else {
                cut = None;
            }
            node = child;
        }
        let Some(cut) = cut else { return };
        let mut node = &mut self.root;
        for (depth, level) in topic.split('/').enumerate() {
            if depth == cut {
                node.children.remove(level);
                return;
            }
            node = node.children.get_mut(level).expect("walked above");
        }
    }

    /// Calls `found` for every retained message whose topic matches the (valid) `filter`.
    /// Depth-first with an explicit stack: `(node, index of the next filter level)`.
    /// Returns the number of nodes visited (the work done).
    fn for_each_match(&self, filter: &str, mut found: impl FnMut(&SharedMessage)) -> usize {
        let levels: Vec<&str> = filter.split('/').collect();
        let mut stack: Vec<(&Node, usize)> = vec![(&self.root, 0)];
        let mut visited = 0;
        while let Some((node, i)) = stack.pop() {
            visited += 1;
            let Some(&level) = levels.get(i) else {
                if let Some(m) = &node.msg {
                    found(m);
                }
                continue;
            };
            // [MQTT-4.7.2-1]: a wildcard first level does not reach `$` topics.
            let visible = |name: &str| i > 0 || !name.starts_with('$');
            match level {
                "#" => {
                    // `sport/#` matches `sport` itself [MQTT-4.7.1-2] (not at the root: the
                    // root is no topic), and everything below.
                    if i > 0 {
                        if let Some(m) = &node.msg {
                            found(m);
                        }
                    }
                    let mut below: Vec<&Node> = node
                        .children
                        .iter()
                        .filter(|(name, _)| visible(name))
                        .map(|(_, c)| c)
                        .collect();
                    while let Some(n) = below.pop() {
                        visited += 1;
                        if let Some(m) = &n.msg {
                            found(m);
                        }
                        below.extend(n.children.iter().map(|(_, c)| c));
                    }
                }
                "+" => stack.extend(
                    node.children
                        .iter()
                        .filter(|(name, _)| visible(name))
                        .map(|(_, c)| (c, i + 1)),
                ),
                literal => {
                    if let Some(c) = node.child(literal) {
                        stack.push((c, i + 1));
                    }
                }
            }
        }
        visited
    }
}

impl RetainedStore {
    /// An empty store.
    pub fn new() -> RetainedStore {
        RetainedStore::default()
    }

    /// Stores `msg` as the retained message of its topic, or clears the topic when the payload
    /// is empty ([MQTT-3.3.1-10], [MQTT-3.3.1-11]). Returns the change's version (increasing).
    pub fn set(&self, msg: &SharedMessage) -> u64 {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if msg.payload.is_empty() {
            inner.remove(&msg.topic);
        } else {
            inner.insert(msg);
        }
        inner.version += 1;
        inner.version
    }

    /// Appends to `out` every retained message whose topic matches `filter`, except those
    /// whose Message Expiry Interval has passed (MQTT 5: they are no longer retained).
    /// Costs the nodes the filter can reach, not the size of the store; returns how many
    /// that was (a `+` over a level with 100k children visits them all, as in mosquitto).
    pub fn matching(&self, filter: &str, out: &mut Vec<SharedMessage>) -> usize {
        let now = Instant::now();
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.for_each_match(filter, |m| {
            if !m.is_expired(now) {
                out.push(m.clone());
            }
        })
    }

    /// Number of retained messages.
    pub fn len(&self) -> usize {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).len
    }

    /// True when nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Retained-message work for new subscriptions not done yet: lookups and deliveries.
///
/// A SUBSCRIBE to `#` with 100k retained messages, or 2,000 pipelined SUBSCRIBEs whose `+`
/// each spans 100k topics, must not hold its shard's loop until all is done. The shard does
/// a bounded amount per loop turn ([`RetainedBacklog::VISITS_PER_TURN`] trie nodes, at least
/// one lookup; [`RetainedBacklog::DELIVERIES_PER_TURN`] deliveries), taking turns between
/// subscriptions, and serves its other clients in between. The SUBACK is not delayed.
#[derive(Debug, Default)]
pub struct RetainedBacklog {
    pending: std::collections::VecDeque<PendingRetained>,
    /// What is left of this turn's budgets (see [`RetainedBacklog::new_turn`]).
    visits: usize,
    deliveries: usize,
    /// Messages found by lookups and not offered yet.
    found: usize,
}

/// The retained work of one new subscription.
#[derive(Debug)]
pub struct PendingRetained {
    pub subscriber: crate::index::SubscriberId,
    /// The granted QoS (a delivery gets the lower of it and the message's).
    pub qos: crate::protocol::QoS,
    pub ids: crate::message::SubscriptionIds,
    pub work: Work,
}

/// What is left to do for one subscription.
#[derive(Debug)]
pub enum Work {
    /// Look the filter up (done when the turn's budget allows).
    Lookup(crate::protocol::ByteStr),
    /// Offer these, in order.
    Deliver(std::vec::IntoIter<SharedMessage>),
}

impl RetainedBacklog {
    /// Trie nodes visited by lookups per loop turn (one lookup may exceed it: lookups are
    /// not split). About a millisecond of work.
    pub const VISITS_PER_TURN: usize = 64 * 1024;
    /// Deliveries offered per loop turn, over all pending subscriptions.
    pub const DELIVERIES_PER_TURN: usize = 1024;
    /// No new lookup while this many found messages wait (bounds the backlog's memory to
    /// this plus one lookup's result, at most the store).
    pub const MAX_FOUND: usize = 64 * 1024;

    /// Restores the per-turn budgets: the shard calls it once at the start of each loop
    /// turn, so all the SUBSCRIBEs handled in one turn share one budget.
    pub fn new_turn(&mut self) {
        self.visits = Self::VISITS_PER_TURN;
        self.deliveries = Self::DELIVERIES_PER_TURN;
    }

    /// Queues one subscription's lookup.
    pub fn push(&mut self, p: PendingRetained) {
        self.pending.push_back(p);
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Does one turn's worth of work: lookups in `store` and, through `offer`, deliveries
    /// (message, subscriber, granted QoS, subscription ids).
    pub fn run_turn(
        &mut self,
        store: &RetainedStore,
        mut offer: impl FnMut(
            SharedMessage,
            crate::index::SubscriberId,
            crate::protocol::QoS,
            &crate::message::SubscriptionIds,
        ),
    ) {
        let (mut visits, mut deliveries) = (self.visits, self.deliveries);
        // Each pending subscription is looked at at most once per call.
        for _ in 0..self.pending.len() {
            if deliveries == 0 {
                break;
            }
            let Some(mut p) = self.pending.pop_front() else {
                break;
            };
            if let Work::Lookup(filter) = &p.work {
                // Lookups wait while the turn's visits are spent, or while enough found
                // messages wait to be offered: a client repeating SUBSCRIBE `#` must not
                // pile up copies of the whole store faster than they are delivered.
                if visits == 0 || self.found >= Self::MAX_FOUND {
                    self.pending.push_back(p);
                    continue;
                }
                let mut msgs = Vec::new();
                visits = visits.saturating_sub(store.matching(filter, &mut msgs));
                self.found += msgs.len();
                p.work = Work::Deliver(msgs.into_iter());
            }
            let Work::Deliver(msgs) = &mut p.work else {
                unreachable!("looked up above")
            };
            for msg in msgs.by_ref().take(deliveries) {
                deliveries -= 1;
                self.found -= 1;
                offer(msg, p.subscriber, p.qos, &p.ids);
            }
            if msgs.len() > 0 {
                self.pending.push_back(p);
            }
        }
        (self.visits, self.deliveries) = (visits, deliveries);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::message::Message;
    use crate::protocol::topic::filter_matches;
    use crate::protocol::QoS;

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
}
