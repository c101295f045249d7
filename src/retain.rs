//! The retained-message store: the last retained message of each topic.
//!
//! Shared by all shards behind a `RwLock`. Unlike the subscription index it cannot be
//! replicated per shard: two shards setting the same topic at once would apply the two writes
//! in different orders and their replicas would disagree for good. The lock is taken only for
//! PUBLISHes with RETAIN set and for SUBSCRIBE, never for ordinary routing.
//!
//! Lookups by wildcard filter walk every retained topic; that is linear in the store and is
//! the next thing to replace with a trie when retained stores grow large (issue: hot path).

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Instant;

use crate::message::SharedMessage;
use crate::protocol::topic::filter_matches;
use crate::protocol::ByteStr;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct RetainedStore {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_topic: HashMap<ByteStr, SharedMessage>,
    /// Counts the changes: the order in which they took effect, for persistence (two shards
    /// may submit their batches in the other order, see `store::Batch::put_retained`).
    version: u64,
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
            inner.by_topic.remove(&msg.topic);
        } else {
            inner.by_topic.insert(msg.topic.clone(), msg.clone());
        }
        inner.version += 1;
        inner.version
    }

    /// Appends to `out` every retained message whose topic matches `filter`, except those
    /// whose Message Expiry Interval has passed (MQTT 5: they are no longer retained).
    pub fn matching(&self, filter: &str, out: &mut Vec<SharedMessage>) {
        let now = Instant::now();
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let map = &inner.by_topic;
        let live = |m: &&SharedMessage| !m.is_expired(now);
        if !filter.contains(['+', '#']) {
            out.extend(map.get(filter.as_bytes()).filter(live).cloned());
            return;
        }
        out.extend(
            map.iter()
                .filter(|(t, _)| filter_matches(filter, t))
                .map(|(_, m)| m)
                .filter(live)
                .cloned(),
        );
    }

    /// Number of retained messages.
    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_topic
            .len()
    }

    /// True when nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::message::Message;
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
    }
}
