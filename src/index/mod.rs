//! The subscription index: which sessions want a topic.
//!
//! # Why per-shard replicas
//! Every PUBLISH reads the index, so readers must never block (ARCHITECTURE.md §1.2). midge keeps one
//! replica of the whole index per shard, owned by that shard's thread: a match is a plain walk
//! of a trie with no atomics at all. Writes (SUBSCRIBE/UNSUBSCRIBE, session end) are applied
//! by the subscribing session's own shard at once and sent to every other shard through its
//! inbox, so all updates for one session arrive everywhere in the order they were made (a
//! session only ever lives on its home shard, see `shard::home_shard`). Replicas therefore
//! converge; the cost is N copies of the index (N = shards, i.e. cores) and one inbox item per
//! other shard per subscription change, both independent of the number of subscriptions.
//!
//! # Shape
//! Two structures, chosen by the filter (issue 7):
//! - **Exact filters** (no `+` or `#`, by far the most common: one per device) live only in a
//!   hash table keyed by the whole filter, which is also the only topic it matches. A publish
//!   hashes its topic once and finds them with one probe, however many levels the topic has.
//!   `$`-topics, empty levels (`a//b`) and a trailing `/` need no special case: the filter
//!   and the topic are compared as whole strings.
//! - **Wildcard filters** live in a trie with one node per level. Wildcard children are
//!   separate fields (as in nats-server's sublist), so a match visits at most three branches
//!   per level and never scans siblings. Because exact filters are not in the trie, the walk
//!   only meets nodes that lead to a wildcard, and it is skipped entirely while the index has
//!   no wildcard filter (`wildcards == 0`).
//!
//! Insert and remove are O(levels) in both, whatever the total number of subscriptions.
//! Shared groups (`$share/{group}/{filter}`) sit with their filter (in the table or at a
//! trie node) as ids into one slab, so the match cache can name them.
//!
//! # Match cache
//! A small direct-mapped cache per replica (no lock: the shard thread owns it) remembers, for a
//! topic, the wildcard part of its match: copies of the matching entries and the ids of the
//! matching shared groups (a member is still picked round robin per message). It is keyed by
//! the hash already computed for the exact table, so a lookup costs one slot load and one
//! string compare, and it is valid only at the index `generation` it was filled at: every
//! insert and remove bumps the generation, so a SUBSCRIBE is visible to the very next match.
//! It never allocates in steady state: slots reuse their `String` and `Vec` storage, and
//! results too large to copy cheaply are not cached. A slot is filled only on the second
//! consecutive miss of the same topic at that slot (admission), and only when its walk entered at least two
//! trie nodes (`CACHE_MIN_STEPS`): topics that outrun the cache (a fleet of devices that each
//! publish on their own topic) then cost one `u64` store per miss, not a copy. Any
//! subscription change anywhere empties every replica's cache at once; under heavy churn it
//! is mostly cold, and a cold cache costs about what the walk alone does.
//!
//! Numbers (`benches/topic_match.rs`, medians of two interleaved rounds on a busy 2-core
//! machine; all shapes and the raw runs in results/benches.md):
//!
//! | shape, 1M subscriptions | before (one trie) | after |
//! |---|---|---|
//! | exact topic | 134-150 ns | 47-48 ns |
//! | IoT wildcard (`site/+/device-N/#`) | 161-193 ns | 36-42 ns |
//! | 7 levels, 12 broad wildcards, same topic | 460-470 ns | 39-64 ns |
//! | same, 8,192 rotating topics (cache cannot help) | 2.5-2.7 us | 1.4-2.2 us |
//! | two levels (`a/7` vs `a/+`, `+/7`, `a/#`) | 98-105 ns | 35-36 ns |
//!
//! The short two-level walk still gains from the cache (35 ns against 170-190 ns for the walk
//! alone in the same build), so the threshold only excludes walks that stop at the root.
//! With 1,000 subscriptions and rotating topics the cache-missing path is 10-20% slower than
//! before (a hash of the whole topic on top of the walk).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;
use slab::Slab;

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
    fn get(&self, i: usize) -> Option<&Entry> {
        self.entries.get(i)
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// A shared group's key in [`TopicIndex::groups`]. Stable while the group exists; a cached
/// id is only used at the generation it was taken at, so it never names a reused key.
type GroupId = usize;

/// A trie node. Only wildcard filters are stored in the trie (exact ones are in
/// [`TopicIndex::exact`]), so `here` and `shared` hold filters that contain a `+`.
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
    shared: Vec<GroupId>,
    /// Shared groups whose filter is this node's path followed by `/#`.
    shared_hash: Vec<GroupId>,
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

    /// True if the node holds no subscription and exactly one child: removing the
    /// subscription below it on that child's path leaves it useless.
    fn only_holds_an_edge(&self) -> bool {
        self.here.is_empty()
            && self.hash.is_empty()
            && self.shared.is_empty()
            && self.shared_hash.is_empty()
            && self.children.len() + usize::from(self.plus.is_some()) == 1
    }

    /// Gives memory back once most children are gone (a client with 100k filters under one
    /// level leaves). Shrinking to twice the length at a quarter keeps removal amortised O(1).
    fn shrink_children(&mut self) {
        let (len, cap) = (self.children.len(), self.children.capacity());
        if cap > 64 && len < cap / 4 {
            self.children.shrink_to(len * 2);
        }
    }
}

/// Dropping a chain of nodes recursively overflows the stack at a few thousand levels (a
/// client's filter, or the whole index at shutdown): children are moved to a heap stack and
/// dropped one at a time, each with no children left.
impl Drop for Node {
    fn drop(&mut self) {
        if self.children.is_empty() && self.plus.is_none() {
            return;
        }
        let mut stack: Vec<Node> = Vec::new();
        let take = |n: &mut Node, stack: &mut Vec<Node>| {
            stack.extend(n.children.drain().map(|(_, c)| c));
            if let Some(p) = n.plus.take() {
                stack.push(*p);
            }
        };
        take(self, &mut stack);
        while let Some(mut n) = stack.pop() {
            take(&mut n, &mut stack);
        }
    }
}

/// The subscriptions of one exact filter (no wildcard), i.e. of exactly one topic.
#[derive(Debug)]
struct Exact {
    topic: Box<str>,
    /// `hasher.hash_one(topic)`, kept so the table never rehashes a key when it grows.
    hash: u64,
    here: EntryList,
    shared: Vec<GroupId>,
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

/// The list a filter's subscriptions live in where the filter ends: plain or, for a shared
/// subscription, its group's members (the group is created on first use).
fn list_for<'a>(
    groups: &'a mut Slab<SharedGroup>,
    ids: &mut Vec<GroupId>,
    plain: &'a mut EntryList,
    group: Option<&str>,
    full: &str,
) -> &'a mut EntryList {
    let Some(name) = group else { return plain };
    let id = match ids.iter().copied().find(|&id| &*groups[id].name == name) {
        Some(id) => id,
        None => {
            let id = groups.insert(SharedGroup {
                name: name.into(),
                filter: full.into(),
                members: EntryList::default(),
                next: Cell::new(0),
            });
            ids.push(id);
            id
        }
    };
    &mut groups[id].members
}

/// Removes `subscriber` from the plain or shared list; drops a shared group left empty.
fn take_from(
    groups: &mut Slab<SharedGroup>,
    ids: &mut Vec<GroupId>,
    plain: &mut EntryList,
    group: Option<&str>,
    subscriber: SubscriberId,
) -> bool {
    let Some(name) = group else {
        return plain.take(subscriber);
    };
    let Some(i) = ids.iter().position(|&id| &*groups[id].name == name) else {
        return false;
    };
    let id = ids[i];
    let removed = groups[id].members.take(subscriber);
    if groups[id].members.is_empty() {
        groups.remove(id);
        ids.swap_remove(i);
    }
    removed
}

/// The group named `name` among `ids`.
fn find_group<'a>(
    groups: &'a Slab<SharedGroup>,
    ids: &[GroupId],
    name: &str,
) -> Option<&'a SharedGroup> {
    ids.iter().map(|&id| &groups[id]).find(|g| &*g.name == name)
}

/// Splits a filter into its shared group (if any) and the filter proper.
fn split_filter(filter: &str) -> (Option<&str>, &str) {
    match parse_shared(filter) {
        Some(Ok((group, f))) => (Some(group), f),
        _ => (None, filter),
    }
}

/// True if a (valid) filter has a wildcard level. In a valid filter `+` and `#` only occur
/// as whole levels, so looking for the characters is enough.
fn is_wildcard(filter: &str) -> bool {
    filter.bytes().any(|b| b == b'+' || b == b'#')
}

/// `"a/b/c"` -> `("a", Some("b/c"))`, `"a"` -> `("a", None)`, `"a/"` -> `("a", Some(""))`.
fn split_level(rest: &str) -> (&str, Option<&str>) {
    match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    }
}

/// Number of match-cache slots (a power of two). With [`CACHE_MAX_ENTRIES`] and
/// [`CACHE_MAX_TOPIC`] this bounds the cache to about 512 * (96 + 32 * 24 + 32 * 8 + 256)
/// bytes, some 700 KiB per shard, reached only when 512 distinct hot topics each match 32
/// wildcard subscriptions.
const CACHE_SLOTS: usize = 512;
/// Wildcard matches with more entries than this are not cached: copying them out of the
/// cache costs about what visiting them in the trie does, and the bound keeps memory small.
const CACHE_MAX_ENTRIES: usize = 32;
/// Longer topics are not cached (bounds the memory a slot keeps; topics may be 64 KiB).
const CACHE_MAX_TOPIC: usize = 256;
/// A walk shorter than this many steps (nodes entered plus child lookups) is not worth
/// caching. See the module docs for the measurements behind the value.
const CACHE_MIN_STEPS: u32 = 4;

/// One cache slot. Its storage is reused when it is refilled, so a steady state allocates
/// nothing.
#[derive(Debug)]
struct CacheSlot {
    /// Index generation the contents were computed at; `u64::MAX` (never reached) = empty.
    generation: u64,
    hash: u64,
    /// Hash of the last topic that missed here and was worth caching: a second miss of the
    /// same topic fills the slot.
    candidate: u64,
    topic: String,
    entries: Vec<Entry>,
    groups: Vec<GroupId>,
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
struct MatchCache {
    slots: Vec<CacheSlot>,
}

/// A trie of topic filters. See the module documentation.
#[derive(Debug, Default)]
pub struct TopicIndex {
    /// Wildcard filters.
    root: Node,
    /// Exact filters, by the filter (= the one topic each matches).
    exact: HashTable<Exact>,
    /// Keyed SipHash: topics and filters come from clients, so the table must not be open
    /// to collision flooding.
    hasher: RandomState,
    /// Every shared group, in the trie or in `exact`.
    groups: Slab<SharedGroup>,
    len: usize,
    /// Number of wildcard subscriptions (plain and shared): 0 skips the trie walk.
    wildcards: usize,
    /// Bumped by every insert and remove; the match cache is valid at one generation.
    generation: u64,
    /// Interior mutability so matching stays `&self`; the index is owned by one shard
    /// thread (it is not `Sync`, as the shared groups' `Cell` cursors already made it).
    cache: RefCell<MatchCache>,
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

    /// The current generation: changes with every insert and remove.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Adds or replaces the subscription of `entry.subscriber` to `filter` (a valid filter,
    /// possibly `$share/{group}/{filter}`). Returns true when it replaced an existing one.
    pub fn insert(&mut self, full: &str, entry: Entry) -> bool {
        self.generation += 1;
        let (group, filter) = split_filter(full);
        let replaced = if is_wildcard(filter) {
            let replaced = self.insert_wildcard(full, group, filter, entry);
            self.wildcards += usize::from(!replaced);
            replaced
        } else {
            let hash = self.hasher.hash_one(filter);
            let exact = self
                .exact
                .entry(hash, |e| &*e.topic == filter, |e| e.hash)
                .or_insert_with(|| Exact {
                    topic: filter.into(),
                    hash,
                    here: EntryList::default(),
                    shared: Vec::new(),
                })
                .into_mut();
            list_for(
                &mut self.groups,
                &mut exact.shared,
                &mut exact.here,
                group,
                full,
            )
            .upsert(entry)
        };
        self.len += usize::from(!replaced);
        replaced
    }

    fn insert_wildcard(
        &mut self,
        full: &str,
        group: Option<&str>,
        filter: &str,
        entry: Entry,
    ) -> bool {
        let mut node = &mut self.root;
        let mut levels = filter.split('/').peekable();
        while let Some(level) = levels.next() {
            if level == "#" && levels.peek().is_none() {
                return list_for(
                    &mut self.groups,
                    &mut node.shared_hash,
                    &mut node.hash,
                    group,
                    full,
                )
                .upsert(entry);
            }
            node = if level == "+" {
                node.plus.get_or_insert_with(Box::default)
            } else {
                node.children.entry(level.into()).or_default()
            };
        }
        list_for(
            &mut self.groups,
            &mut node.shared,
            &mut node.here,
            group,
            full,
        )
        .upsert(entry)
    }

    /// Removes the subscription of `subscriber` to `filter`. Returns true if there was one.
    /// Empty nodes and table entries left behind are dropped, so the index stays bounded by
    /// live subscriptions.
    pub fn remove(&mut self, full: &str, subscriber: SubscriberId) -> bool {
        self.generation += 1;
        let (group, filter) = split_filter(full);
        let removed = if is_wildcard(filter) {
            let removed =
                Self::remove_wildcard(&mut self.root, &mut self.groups, filter, group, subscriber);
            self.wildcards -= usize::from(removed);
            removed
        } else {
            let hash = self.hasher.hash_one(filter);
            match self.exact.find_entry(hash, |e| &*e.topic == filter) {
                Ok(mut slot) => {
                    let exact = slot.get_mut();
                    let removed = take_from(
                        &mut self.groups,
                        &mut exact.shared,
                        &mut exact.here,
                        group,
                        subscriber,
                    );
                    if exact.here.is_empty() && exact.shared.is_empty() {
                        slot.remove();
                        // Give memory back after a mass unsubscribe. Shrinking to twice the
                        // length when a quarter is left keeps this amortised O(1).
                        let (len, cap) = (self.exact.len(), self.exact.capacity());
                        if cap > 1024 && len < cap / 4 {
                            self.exact.shrink_to(len * 2, |e| e.hash);
                        }
                    }
                    removed
                }
                Err(_) => false,
            }
        };
        self.len -= usize::from(removed);
        removed
    }

    /// Removes `subscriber` from the wildcard `filter`'s list, then prunes the nodes the
    /// removal left empty. Three loops over the filter's levels (remove, find the highest
    /// node that became useless, cut it off) rather than a recursion: a client chooses the
    /// depth, and 5,000 levels overflowed a shard's stack.
    fn remove_wildcard(
        root: &mut Node,
        groups: &mut Slab<SharedGroup>,
        filter: &str,
        group: Option<&str>,
        subscriber: SubscriberId,
    ) -> bool {
        // The levels that are trie edges: every level but a trailing `#`.
        let (path, multi) = match filter.strip_suffix("#") {
            Some("") => ("", true),
            Some(p) if p.ends_with('/') => (&p[..p.len() - 1], true),
            _ => (filter, false),
        };
        let edges = || {
            let mut it = path.split('/');
            if multi && path.is_empty() && filter == "#" {
                // `#` alone: no edge at all (its list is the root's).
                it.next();
            }
            it
        };
        let mut node = &mut *root;
        for level in edges() {
            let child = if level == "+" {
                node.plus.as_deref_mut()
            } else {
                node.children.get_mut(level)
            };
            match child {
                Some(c) => node = c,
                None => return false,
            }
        }
        let removed = if multi {
            take_from(
                groups,
                &mut node.shared_hash,
                &mut node.hash,
                group,
                subscriber,
            )
        } else {
            take_from(groups, &mut node.shared, &mut node.here, group, subscriber)
        };
        if !removed {
            return false;
        }
        // The highest node on the path whose whole subtree is now empty: every node from it
        // down holds nothing but the next edge of the path. `cut` counts the edges above it.
        let mut cut = None;
        let mut node = &*root;
        for (depth, level) in edges().enumerate() {
            let child = if level == "+" {
                node.plus.as_deref()
            } else {
                node.children.get(level)
            };
            let Some(child) = child else { break };
            if child.only_holds_an_edge() || child.is_empty() {
                cut.get_or_insert(depth);
            } else {
                cut = None;
            }
            node = child;
        }
        // The deepest node must itself be empty for the chain above it to go.
        if !node.is_empty() {
            cut = None;
        }
        if let Some(cut) = cut {
            let mut node = &mut *root;
            for (depth, level) in edges().enumerate() {
                if depth == cut {
                    if level == "+" {
                        node.plus = None;
                    } else {
                        node.children.remove(level);
                        node.shrink_children();
                    }
                    break;
                }
                node = if level == "+" {
                    node.plus.as_deref_mut().expect("walked above")
                } else {
                    node.children.get_mut(level).expect("walked above")
                };
            }
        }
        true
    }

    /// Calls `visit(entry, None)` for every subscription whose filter matches `topic` (a
    /// valid topic name), and, when `pick_shared`, `visit(member, Some(group filter))` for one
    /// member of every matching shared group (round robin). Only the shard a message was published on
    /// picks shared members; shards that receive it from there skip the groups.
    ///
    /// A subscriber with several matching filters is visited once per filter; the caller
    /// merges them (highest QoS wins, see `Shard::deliver_matches`). Topics starting with `$`
    /// are not matched by filters whose first level is a wildcard [MQTT-4.7.2-1].
    ///
    /// Hot path (every PUBLISH, on its shard and on every shard it is sent to): one hash of
    /// the topic, one table probe, and either a cache hit or a trie walk over wildcard
    /// filters only; no allocation once the cache slots have grown, no lock. Shard thread
    /// only (the visitor must not call back into this index).
    pub fn for_each_match(
        &self,
        topic: &str,
        pick_shared: bool,
        mut visit: impl FnMut(&Entry, Option<&ByteStr>),
    ) {
        if self.len == 0 {
            return;
        }
        let hash = self.hasher.hash_one(topic);
        if let Some(exact) = self.exact.find(hash, |e| &*e.topic == topic) {
            self.visit_list(
                exact.here.as_slice(),
                &exact.shared,
                pick_shared,
                &mut visit,
            );
        }
        if self.wildcards == 0 {
            return;
        }
        if topic.len() > CACHE_MAX_TOPIC {
            let mut steps = 0;
            self.walk(topic, &mut steps, &mut |list, groups| {
                self.visit_list(list, groups, pick_shared, &mut visit)
            });
            return;
        }
        let mut cache = self.cache.borrow_mut();
        if cache.slots.is_empty() {
            cache.slots.resize_with(CACHE_SLOTS, CacheSlot::default);
        }
        let slot = &mut cache.slots[(hash as usize) % CACHE_SLOTS];
        if slot.generation == self.generation && slot.hash == hash && slot.topic == topic {
            self.visit_list(&slot.entries, &slot.groups, pick_shared, &mut visit);
            return;
        }
        let mut steps = 0;
        if slot.candidate != hash {
            // First miss: walk and visit directly; remember the topic if it was worth it.
            let mut found = 0;
            self.walk(topic, &mut steps, &mut |list, groups| {
                found += list.len();
                self.visit_list(list, groups, pick_shared, &mut visit)
            });
            if steps >= CACHE_MIN_STEPS && found <= CACHE_MAX_ENTRIES {
                slot.candidate = hash;
            }
            return;
        }
        // Second miss in a row of this topic at this slot: fill it (reusing its storage).
        slot.entries.clear();
        slot.groups.clear();
        let (entries, groups) = (&mut slot.entries, &mut slot.groups);
        self.walk(topic, &mut steps, &mut |list, ids| {
            entries.extend_from_slice(list);
            groups.extend_from_slice(ids);
        });
        self.visit_list(&slot.entries, &slot.groups, pick_shared, &mut visit);
        if slot.entries.len() <= CACHE_MAX_ENTRIES {
            slot.topic.clear();
            slot.topic.push_str(topic);
            slot.hash = hash;
            slot.generation = self.generation;
        } else {
            // The match grew since it was a candidate: give the storage back.
            *slot = CacheSlot::default();
        }
    }

    /// Visits `list` and, when `pick_shared`, one member of each group in `groups`.
    fn visit_list(
        &self,
        list: &[Entry],
        groups: &[GroupId],
        pick_shared: bool,
        visit: &mut impl FnMut(&Entry, Option<&ByteStr>),
    ) {
        list.iter().for_each(|e| visit(e, None));
        if pick_shared {
            for &id in groups {
                let g = &self.groups[id];
                if let Some(e) = g.pick() {
                    visit(e, Some(&g.filter));
                }
            }
        }
    }

    /// The next member (round robin) of the shared group `$share/{group}/{filter}`, if it has
    /// any: where a departing member's unacknowledged messages go.
    pub fn pick_shared(&self, full: &str) -> Option<Entry> {
        let (Some(group), filter) = split_filter(full) else {
            return None;
        };
        if !is_wildcard(filter) {
            let exact = self
                .exact
                .find(self.hasher.hash_one(filter), |e| &*e.topic == filter)?;
            return find_group(&self.groups, &exact.shared, group)?
                .pick()
                .copied();
        }
        let mut node = &self.root;
        let mut levels = filter.split('/').peekable();
        while let Some(level) = levels.next() {
            if level == "#" && levels.peek().is_none() {
                return find_group(&self.groups, &node.shared_hash, group)?
                    .pick()
                    .copied();
            }
            node = if level == "+" {
                node.plus.as_deref()?
            } else {
                node.children.get(level)?
            };
        }
        find_group(&self.groups, &node.shared, group)?
            .pick()
            .copied()
    }

    /// Walks the wildcard trie for `topic`, calling `visit` with every matching list and its
    /// shared groups; adds the work done to `steps` (for the cache's admission rule).
    ///
    /// Depth-first with an explicit stack, not a recursion: a topic may have thousands of
    /// levels. The stack grows by at most one frame per level (a node pushes its literal and
    /// `+` children, two, and pops one) and lives inline for the first [`INLINE_FRAMES`].
    fn walk(&self, topic: &str, steps: &mut u32, visit: &mut impl FnMut(&[Entry], &[GroupId])) {
        let dollar = topic.starts_with('$');
        let mut stack = WalkStack::new();
        stack.push((&self.root, topic, true));
        while let Some((node, rest, first)) = stack.pop() {
            *steps += 2; // this node, and the child lookup below
            let wild_ok = !(first && dollar);
            if wild_ok {
                // `a/#` matches `a/b/c`, and also `a` itself (handled at the end of the topic).
                visit(node.hash.as_slice(), &node.shared_hash);
            }
            let (level, tail) = split_level(rest);
            let literal = node.children.get(level);
            let plus = if wild_ok { node.plus.as_deref() } else { None };
            for child in [literal, plus].into_iter().flatten() {
                match tail {
                    Some(t) => stack.push((child, t, false)),
                    None => {
                        visit(child.here.as_slice(), &child.shared);
                        // "sport/#" matches "sport" [MQTT-4.7.1-2].
                        visit(child.hash.as_slice(), &child.shared_hash);
                    }
                }
            }
        }
    }
}

/// Frames kept inline by [`WalkStack`]: topics of up to this many levels walk without
/// allocating.
const INLINE_FRAMES: usize = 16;

/// One pending node of a trie walk: the node, what is left of the topic below it, and
/// whether it is the root (for the `$` rule).
type Frame<'a> = (&'a Node, &'a str, bool);

/// A stack of walk frames: inline up to [`INLINE_FRAMES`], then on the heap, so the hot path
/// does not allocate and a deep topic costs heap, not thread stack.
struct WalkStack<'a> {
    inline: [Option<Frame<'a>>; INLINE_FRAMES],
    len: usize,
    spill: Vec<Frame<'a>>,
}

impl<'a> WalkStack<'a> {
    fn new() -> WalkStack<'a> {
        WalkStack {
            inline: [None; INLINE_FRAMES],
            len: 0,
            spill: Vec::new(),
        }
    }

    fn push(&mut self, frame: Frame<'a>) {
        if self.len < INLINE_FRAMES {
            self.inline[self.len] = Some(frame);
            self.len += 1;
        } else {
            self.spill.push(frame);
        }
    }

    fn pop(&mut self) -> Option<Frame<'a>> {
        if let Some(f) = self.spill.pop() {
            return Some(f);
        }
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        self.inline[self.len].take()
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
}
