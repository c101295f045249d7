//! `$SYS/broker/store/messages/{count,bytes}` as mosquitto counts its message store: every
//! distinct message the broker holds (retained, queued or in flight), once however many
//! sessions hold it, as mosquitto's store counts a message once and keeps a reference count.
//!
//! midge keeps no such count on the message path (it would take an atomic per delivery,
//! since one `Arc<Message>` is shared by sessions on every shard). Instead each shard, at its
//! walk over its sessions (about once a second, `Shard::count_gauges`), notes each message
//! its sessions hold:
//!
//! - a message whose `Arc` count is 1 has no other holder (no session, shard or retained
//!   store can take a new reference to it without one): it counts for this shard alone;
//! - a message the retained store holds is already in the retained count;
//! - any other message may also be held elsewhere (another session, another shard, or only
//!   briefly, by a shard's message pool or a batch in flight): its address goes on the shard's
//!   list, which the shard hands to [`HeldByMany`] (one lock per shard per walk).
//!
//! Shard 0 counts the distinct addresses of all lists when it computes the tree. At rest the
//! count is exact; while messages come and go it is as approximate as any gauge taken on
//! several threads at slightly different moments.

use std::sync::{Arc, Mutex};

use crate::message::SharedMessage;
use crate::retain::RetainedStore;

/// A held message that may have other holders: its address (identity only, never read
/// through) and payload bytes.
type Entry = (usize, u64);

/// One shard's walk over the messages its sessions hold.
#[derive(Debug, Default)]
pub(crate) struct HeldScan {
    /// Messages held by this shard's sessions and nothing else, and their payload bytes.
    alone: (u64, u64),
    /// Messages that may also be held elsewhere (reused from walk to walk).
    maybe_shared: Vec<Entry>,
    /// Scratch for the retained-store lookups.
    retained: Vec<SharedMessage>,
}

impl HeldScan {
    /// Starts a walk.
    pub(crate) fn start(&mut self) {
        self.alone = (0, 0);
        self.maybe_shared.clear();
    }

    /// Notes one message a session holds (queued or in flight).
    pub(crate) fn note(&mut self, msg: &SharedMessage, retained: &RetainedStore) {
        let bytes = msg.payload.len() as u64;
        if Arc::strong_count(msg) == 1 {
            self.alone.0 += 1;
            self.alone.1 += bytes;
            return;
        }
        if msg.retain && self.is_retained(msg, retained) {
            return;
        }
        self.maybe_shared.push((Arc::as_ptr(msg) as usize, bytes));
    }

    /// Whether the retained store holds this very message (a topic name has no wildcard, so
    /// as a filter it matches its own retained message only).
    fn is_retained(&mut self, msg: &SharedMessage, retained: &RetainedStore) -> bool {
        self.retained.clear();
        retained.matching(&msg.topic, &mut self.retained);
        let found = self.retained.iter().any(|m| Arc::ptr_eq(m, msg));
        self.retained.clear();
        found
    }

    /// Ends the walk: hands the list to `many` as shard `shard`'s and returns the messages
    /// (and bytes) that counted for this shard alone.
    pub(crate) fn finish(&mut self, many: &HeldByMany, shard: usize) -> (u64, u64) {
        self.maybe_shared.sort_unstable();
        self.maybe_shared.dedup_by_key(|e| e.0);
        many.replace(shard, &mut self.maybe_shared);
        self.alone
    }
}

/// Each shard's last list of messages that may be held by more than one holder.
#[derive(Debug)]
pub struct HeldByMany {
    lists: Box<[Mutex<Vec<Entry>>]>,
}

impl HeldByMany {
    /// Empty lists for `shards` shards.
    pub fn new(shards: usize) -> HeldByMany {
        HeldByMany {
            lists: (0..shards).map(|_| Mutex::default()).collect(),
        }
    }

    /// Swaps `list` (sorted, without duplicates) in as shard `shard`'s; `list` gets the
    /// previous one's allocation back, emptied.
    fn replace(&self, shard: usize, list: &mut Vec<Entry>) {
        if let Some(slot) = self.lists.get(shard) {
            std::mem::swap(&mut *slot.lock().unwrap_or_else(|e| e.into_inner()), list);
        }
        list.clear();
    }

    /// The distinct messages over all lists and their payload bytes; `scratch` is reused.
    pub(crate) fn distinct(&self, scratch: &mut Vec<Entry>) -> (u64, u64) {
        scratch.clear();
        for list in self.lists.iter() {
            scratch.extend_from_slice(&list.lock().unwrap_or_else(|e| e.into_inner()));
        }
        scratch.sort_unstable();
        scratch.dedup_by_key(|e| e.0);
        let bytes = scratch.iter().map(|e| e.1).sum();
        let count = scratch.len() as u64;
        scratch.clear();
        (count, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use bytes::Bytes;

    fn message(topic: &'static str, payload: &'static str, retain: bool) -> SharedMessage {
        Arc::new(Message {
            topic: crate::protocol::ByteStr::from_static(topic),
            payload: Bytes::from_static(payload.as_bytes()),
            retain,
            ..Message::empty()
        })
    }

    #[test]
    fn a_message_held_by_several_sessions_on_several_shards_counts_once() {
        let retained = RetainedStore::new();
        let many = HeldByMany::new(2);
        let alone = message("a", "1", false);
        let shared = message("b", "22", false);
        let kept = message("r", "333", true);
        retained.set(&kept);
        // Shard 0: `alone` (its only holder), `shared` twice and the retained `kept`.
        let held_0 = [alone.clone(), shared.clone(), shared.clone(), kept.clone()];
        drop(alone);
        let mut scan = HeldScan::default();
        scan.start();
        held_0.iter().for_each(|m| scan.note(m, &retained));
        assert_eq!(scan.finish(&many, 0), (1, 1));
        // Shard 1: `shared` once more.
        let held_1 = [shared.clone()];
        let mut scan_1 = HeldScan::default();
        scan_1.start();
        held_1.iter().for_each(|m| scan_1.note(m, &retained));
        assert_eq!(scan_1.finish(&many, 1), (0, 0));
        let mut scratch = Vec::new();
        assert_eq!(many.distinct(&mut scratch), (1, 2), "`shared` once");
        // A new walk replaces the shard's list: the sessions of shard 0 let go.
        scan.start();
        assert_eq!(scan.finish(&many, 0), (0, 0));
        assert_eq!(
            many.distinct(&mut scratch),
            (1, 2),
            "shard 1 still holds it"
        );
        scan_1.start();
        assert_eq!(scan_1.finish(&many, 1), (0, 0));
        assert_eq!(many.distinct(&mut scratch), (0, 0));
    }
}
