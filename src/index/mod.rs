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
//! Two structures, chosen by the filter:
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

mod cache;
mod entry;
mod node;
#[cfg(test)]
mod tests;
mod walk;

use std::cell::RefCell;
use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;
use slab::Slab;

use crate::protocol::ByteStr;
use cache::{
    CacheSlot, MatchCache, CACHE_MAX_ENTRIES, CACHE_MAX_TOPIC, CACHE_MIN_STEPS, CACHE_SLOTS,
};
use entry::EntryList;
pub use entry::{Entry, SubscriberId};
use node::{
    find_group, is_wildcard, list_for, split_filter, take_from, Exact, GroupId, Node, SharedGroup,
};

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
}
