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

mod backlog;
#[cfg(test)]
mod tests;
mod trie;

use std::sync::{Arc, RwLock};
use std::time::Instant;

use crate::message::{Message, SharedMessage};
use crate::protocol::{ByteStr, Properties};
pub use backlog::{PendingRetained, RetainedBacklog, Work};
use trie::Node;

/// Who published a retained message, for `check_retain_source`: what the ACL needs to
/// decide, when the message is sent to a new subscriber, whether they may still publish it
/// (as mosquitto keeps the source's client id, username and listener with the message).
#[derive(Debug, PartialEq, Eq)]
pub struct Source {
    pub client_id: ByteStr,
    pub username: Option<Box<str>>,
    /// The listener it came through (`shard::conn::Conn::listener`): whose ACL applies.
    pub listener: u8,
}

/// A retained message found for a subscription, and who published it when that is kept.
pub type Found = (SharedMessage, Option<Arc<Source>>);

/// See the module documentation.
#[derive(Debug, Default)]
pub struct RetainedStore {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    root: Node,
    len: usize,
    /// Payload bytes of the stored messages (`$SYS/broker/store/messages/bytes`).
    bytes: usize,
    /// Counts the changes: the order in which they took effect, for persistence (two shards
    /// may submit their batches in the other order, see `store::Batch::put_retained`).
    version: u64,
}

impl Inner {
    fn insert(&mut self, msg: &SharedMessage, source: Option<Arc<Source>>) {
        let mut node = &mut self.root;
        for level in msg.topic.split('/') {
            node = node.children.get_or_insert(level);
        }
        node.source = source;
        self.bytes += msg.payload.len();
        match node.msg.replace(msg.clone()) {
            None => self.len += 1,
            Some(old) => self.bytes -= old.payload.len(),
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
        let Some(old) = node.msg.take() else {
            return;
        };
        node.source = None;
        self.len -= 1;
        self.bytes -= old.payload.len();
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
    fn for_each_match(&self, filter: &str, mut found: impl FnMut(&Node)) -> usize {
        let levels: Vec<&str> = filter.split('/').collect();
        let mut stack: Vec<(&Node, usize)> = vec![(&self.root, 0)];
        let mut visited = 0;
        while let Some((node, i)) = stack.pop() {
            visited += 1;
            let Some(&level) = levels.get(i) else {
                found(node);
                continue;
            };
            // [MQTT-4.7.2-1]: a wildcard first level does not reach `$` topics.
            let visible = |name: &str| i > 0 || !name.starts_with('$');
            match level {
                "#" => {
                    // `sport/#` matches `sport` itself [MQTT-4.7.1-2] (not at the root: the
                    // root is no topic), and everything below.
                    if i > 0 {
                        found(node);
                    }
                    let mut below: Vec<&Node> = node
                        .children
                        .iter()
                        .filter(|(name, _)| visible(name))
                        .map(|(_, c)| c)
                        .collect();
                    while let Some(n) = below.pop() {
                        visited += 1;
                        found(n);
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
        self.set_from(msg, None)
    }

    /// [`RetainedStore::set`], keeping who published the message (`check_retain_source`).
    pub fn set_from(&self, msg: &SharedMessage, source: Option<Arc<Source>>) -> u64 {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if msg.payload.is_empty() {
            inner.remove(&msg.topic);
        } else {
            inner.insert(msg, source);
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
        inner.for_each_match(filter, |node| match &node.msg {
            Some(m) if !m.is_expired(now) => out.push(m.clone()),
            _ => {}
        })
    }

    /// [`RetainedStore::matching`], with who published each message when that is kept.
    pub fn matching_with_source(&self, filter: &str, out: &mut Vec<Found>) -> usize {
        let now = Instant::now();
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.for_each_match(filter, |node| match &node.msg {
            Some(m) if !m.is_expired(now) => out.push((m.clone(), node.source.clone())),
            _ => {}
        })
    }

    /// True when setting `msg` would change nothing but the publisher kept with it: the store
    /// holds a message of the same payload, QoS and properties (the Message Expiry Interval
    /// aside: it counts down) for its topic, or, for an empty payload, none.
    pub fn holds(&self, msg: &Message) -> bool {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let mut node = &inner.root;
        for level in msg.topic.split('/') {
            match node.child(level) {
                Some(c) => node = c,
                None => return msg.payload.is_empty(),
            }
        }
        match &node.msg {
            None => msg.payload.is_empty(),
            Some(held) => {
                held.payload == msg.payload
                    && held.qos == msg.qos
                    && Properties {
                        message_expiry_interval: None,
                        ..held.properties.clone()
                    } == Properties {
                        message_expiry_interval: None,
                        ..msg.properties.clone()
                    }
            }
        }
    }

    /// Number of retained messages.
    pub fn len(&self) -> usize {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).len
    }

    /// Number of retained messages and their payload bytes.
    pub fn len_and_bytes(&self) -> (usize, usize) {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        (inner.len, inner.bytes)
    }

    /// True when nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
