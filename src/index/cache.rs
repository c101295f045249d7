//! The per-replica match cache's storage and bounds (the policy is in
//! [`TopicIndex::for_each_match`](super::TopicIndex::for_each_match); see the module docs of
//! [`crate::index`]).

use super::entry::Entry;
use super::node::GroupId;

/// Number of match-cache slots (a power of two). With [`CACHE_MAX_ENTRIES`] and
/// [`CACHE_MAX_TOPIC`] this bounds the cache to about 512 * (96 + 32 * 24 + 32 * 8 + 256)
/// bytes, some 700 KiB per shard, reached only when 512 distinct hot topics each match 32
/// wildcard subscriptions.
pub(super) const CACHE_SLOTS: usize = 512;
/// Wildcard matches with more entries than this are not cached: copying them out of the
/// cache costs about what visiting them in the trie does, and the bound keeps memory small.
pub(super) const CACHE_MAX_ENTRIES: usize = 32;
/// Longer topics are not cached (bounds the memory a slot keeps; topics may be 64 KiB).
pub(super) const CACHE_MAX_TOPIC: usize = 256;
/// A walk shorter than this many steps (nodes entered plus child lookups) is not worth
/// caching. See the module docs for the measurements behind the value.
pub(super) const CACHE_MIN_STEPS: u32 = 4;

/// One cache slot. Its storage is reused when it is refilled, so a steady state allocates
/// nothing.
#[derive(Debug)]
pub(super) struct CacheSlot {
    /// Index generation the contents were computed at; `u64::MAX` (never reached) = empty.
    pub(super) generation: u64,
    pub(super) hash: u64,
    /// Hash of the last topic that missed here and was worth caching: a second miss of the
    /// same topic fills the slot.
    pub(super) candidate: u64,
    pub(super) topic: String,
    pub(super) entries: Vec<Entry>,
    pub(super) groups: Vec<GroupId>,
}

impl Default for CacheSlot {
    fn default() -> CacheSlot {
        CacheSlot {
            generation: u64::MAX,
            hash: 0,
            candidate: 0,
            topic: String::new(),
            entries: Vec::new(),
            groups: Vec::new(),
        }
    }
}

/// The per-replica match cache (see the module docs). Slots are allocated on first use, so
/// an index without wildcard filters never pays for them.
#[derive(Debug, Default)]
pub(super) struct MatchCache {
    pub(super) slots: Vec<CacheSlot>,
}
