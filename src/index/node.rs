//! Where subscriptions are kept: a wildcard trie [`Node`], an exact filter's record
//! ([`Exact`]), shared groups ([`SharedGroup`]), and the filter-splitting helpers that choose
//! between them.

use std::cell::Cell;
use std::collections::HashMap;

use slab::Slab;

use super::entry::{Entry, EntryList, SubscriberId};
use crate::protocol::topic::parse_shared;
use crate::protocol::ByteStr;

/// A shared group's key in [`TopicIndex::groups`]. Stable while the group exists; a cached
/// id is only used at the generation it was taken at, so it never names a reused key.
pub(super) type GroupId = usize;

/// A trie node. Only wildcard filters are stored in the trie (exact ones are in
/// [`TopicIndex::exact`]), so `here` and `shared` hold filters that contain a `+`.
#[derive(Debug, Default)]
pub(super) struct Node {
    /// Literal children by level name.
    pub(super) children: HashMap<Box<str>, Node>,
    /// The `+` child.
    pub(super) plus: Option<Box<Node>>,
    /// Subscriptions whose filter ends at this node.
    pub(super) here: EntryList,
    /// Subscriptions whose filter is this node's path followed by `/#`.
    pub(super) hash: EntryList,
    /// Shared subscription groups (`$share/{group}/{filter}`) whose filter ends here.
    pub(super) shared: Vec<GroupId>,
    /// Shared groups whose filter is this node's path followed by `/#`.
    pub(super) shared_hash: Vec<GroupId>,
}

impl Node {
    pub(super) fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.here.is_empty()
            && self.hash.is_empty()
            && self.shared.is_empty()
            && self.shared_hash.is_empty()
    }

    /// True if the node holds no subscription and exactly one child: removing the
    /// subscription below it on that child's path leaves it useless.
    pub(super) fn only_holds_an_edge(&self) -> bool {
        self.here.is_empty()
            && self.hash.is_empty()
            && self.shared.is_empty()
            && self.shared_hash.is_empty()
            && self.children.len() + usize::from(self.plus.is_some()) == 1
    }

    /// Gives memory back once most children are gone (a client with 100k filters under one
    /// level leaves). Shrinking to twice the length at a quarter keeps removal amortised O(1).
    pub(super) fn shrink_children(&mut self) {
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
pub(super) struct Exact {
    pub(super) topic: Box<str>,
    /// `hasher.hash_one(topic)`, kept so the table never rehashes a key when it grows.
    pub(super) hash: u64,
    pub(super) here: EntryList,
    pub(super) shared: Vec<GroupId>,
}

/// The members of one `$share/{group}/...` filter; each message goes to one of them.
#[derive(Debug)]
pub(super) struct SharedGroup {
    pub(super) name: Box<str>,
    /// The whole filter, `$share/{group}/{filter}` (deliveries carry it, so a member that
    /// leaves can hand its unacknowledged messages to another member).
    pub(super) filter: ByteStr,
    pub(super) members: EntryList,
    /// Round-robin cursor. Each shard's replica keeps its own: a message is assigned by the
    /// shard it was published on, so fairness holds per publishing shard.
    pub(super) next: Cell<usize>,
}

impl SharedGroup {
    pub(super) fn pick(&self) -> Option<&Entry> {
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
pub(super) fn list_for<'a>(
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
pub(super) fn take_from(
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
pub(super) fn find_group<'a>(
    groups: &'a Slab<SharedGroup>,
    ids: &[GroupId],
    name: &str,
) -> Option<&'a SharedGroup> {
    ids.iter().map(|&id| &groups[id]).find(|g| &*g.name == name)
}

/// Splits a filter into its shared group (if any) and the filter proper.
pub(super) fn split_filter(filter: &str) -> (Option<&str>, &str) {
    match parse_shared(filter) {
        Some(Ok((group, f))) => (Some(group), f),
        _ => (None, filter),
    }
}

/// True if a (valid) filter has a wildcard level. In a valid filter `+` and `#` only occur
/// as whole levels, so looking for the characters is enough.
pub(super) fn is_wildcard(filter: &str) -> bool {
    filter.bytes().any(|b| b == b'+' || b == b'#')
}

/// `"a/b/c"` -> `("a", Some("b/c"))`, `"a"` -> `("a", None)`, `"a/"` -> `("a", Some(""))`.
pub(super) fn split_level(rest: &str) -> (&str, Option<&str>) {
    match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    }
}
