//! What the index stores per subscription ([`Entry`], keyed by [`SubscriberId`]) and the
//! list of them where a filter ends ([`EntryList`]).

use std::collections::HashMap;

use crate::protocol::SubOptions;

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
/// subscribers costs O(1) rather than a scan (subscribe cost independent of the
/// number of subscriptions). Small lists, the common case, stay a plain `Vec`.
#[derive(Debug, Default)]
pub(super) struct EntryList {
    pub(super) entries: Vec<Entry>,
    pub(super) pos: Option<HashMap<SubscriberId, usize>>,
}

impl EntryList {
    /// Above this many entries the position map is kept.
    const INDEXED: usize = 16;

    pub(super) fn as_slice(&self) -> &[Entry] {
        &self.entries
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(super) fn find(&self, s: SubscriberId) -> Option<usize> {
        match &self.pos {
            Some(pos) => pos.get(&s).copied(),
            None => self.entries.iter().position(|e| e.subscriber == s),
        }
    }

    /// Adds `entry`, replacing an earlier entry of the same subscriber (a repeated SUBSCRIBE
    /// to the same filter replaces the subscription [MQTT-3.8.4-3]). True if it replaced one.
    pub(super) fn upsert(&mut self, entry: Entry) -> bool {
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
    pub(super) fn take(&mut self, s: SubscriberId) -> bool {
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
            } else if pos.capacity() > 64 && pos.len() < pos.capacity() / 4 {
                pos.shrink_to(pos.len() * 2);
            }
        }
        let (len, cap) = (self.entries.len(), self.entries.capacity());
        if cap > 64 && len < cap / 4 {
            self.entries.shrink_to(len * 2);
        }
        true
    }

    /// The entry at `i` (round-robin picks).
    pub(super) fn get(&self, i: usize) -> Option<&Entry> {
        self.entries.get(i)
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}
