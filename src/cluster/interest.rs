//! Which filters the other nodes' clients use, so that a message goes to NATS only when some
//! other node wants it.
//!
//! Each gateway announces on `midge.i.<its origin id>`: `H` (hello, with its whole set: the
//! others answer with theirs) when it starts, `F` (its whole set) every [`FULL_EVERY`], and
//! `+`/`-` with one filter as its set changes. Filters are separated by NUL, which MQTT
//! strings may not contain [MQTT-1.5.4-2]. A node not heard from for [`EXPIRE_AFTER`] is
//! taken as gone and its filters leave the union; the periodic whole set repairs anything a
//! lost `+`/`-` got wrong. [`RemoteInterest`] is the pure bookkeeping: it turns announcements
//! into changes of the union, which the gateway hands to every shard.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

/// Subjects of the announcements; the origin id (hex) follows.
pub(crate) const PREFIX: &str = "midge.i.";
/// How often a node announces its whole set.
pub(crate) const FULL_EVERY: Duration = Duration::from_secs(10);
/// A node silent this long is gone (three whole sets missed, and some).
pub(crate) const EXPIRE_AFTER: Duration = Duration::from_secs(35);

/// One announcement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Announcement {
    /// A node started: its whole set, and a request for everyone else's.
    Hello(Vec<String>),
    /// A node's whole set.
    Full(Vec<String>),
    Add(String),
    Remove(String),
}

impl Announcement {
    pub(crate) fn encode(&self) -> Bytes {
        let (tag, filters): (u8, &[String]) = match self {
            Announcement::Hello(f) => (b'H', f),
            Announcement::Full(f) => (b'F', f),
            Announcement::Add(f) => (b'+', std::slice::from_ref(f)),
            Announcement::Remove(f) => (b'-', std::slice::from_ref(f)),
        };
        let mut b = BytesMut::with_capacity(1 + filters.iter().map(|f| f.len() + 1).sum::<usize>());
        b.put_u8(tag);
        for (i, f) in filters.iter().enumerate() {
            if i > 0 {
                b.put_u8(0);
            }
            b.put_slice(f.as_bytes());
        }
        b.freeze()
    }

    pub(crate) fn decode(b: &[u8]) -> Option<Announcement> {
        let (&tag, rest) = b.split_first()?;
        let text = std::str::from_utf8(rest).ok()?;
        let list = || -> Vec<String> {
            if text.is_empty() {
                Vec::new()
            } else {
                text.split('\0').map(str::to_string).collect()
            }
        };
        match tag {
            b'H' => Some(Announcement::Hello(list())),
            b'F' => Some(Announcement::Full(list())),
            b'+' if !text.is_empty() && !text.contains('\0') => {
                Some(Announcement::Add(text.into()))
            }
            b'-' if !text.is_empty() && !text.contains('\0') => {
                Some(Announcement::Remove(text.into()))
            }
            _ => None,
        }
    }
}

/// The origin id in an announcement's subject.
pub(crate) fn subject_origin(subject: &str) -> Option<u64> {
    u64::from_str_radix(subject.strip_prefix(PREFIX)?, 16).ok()
}

/// The subject a node with origin id `origin` announces on.
pub(crate) fn subject_of(origin: u64) -> String {
    format!("{PREFIX}{origin:016x}")
}

/// The other nodes' filter sets and their union (with a count per filter).
#[derive(Debug, Default)]
pub(crate) struct RemoteInterest {
    nodes: HashMap<u64, (HashSet<String>, Instant)>,
    union: HashMap<String, usize>,
}

impl RemoteInterest {
    /// Applies `a` from node `origin`; returns the changes of the union (filter, added).
    pub(crate) fn apply(
        &mut self,
        origin: u64,
        a: Announcement,
        now: Instant,
    ) -> Vec<(String, bool)> {
        let mut changes = Vec::new();
        let (set, seen) = self
            .nodes
            .entry(origin)
            .or_insert_with(|| (HashSet::new(), now));
        *seen = now;
        match a {
            Announcement::Hello(list) | Announcement::Full(list) => {
                let new: HashSet<String> = list.into_iter().collect();
                let gone: Vec<String> = set.difference(&new).cloned().collect();
                let came: Vec<String> = new.difference(set).cloned().collect();
                *set = new;
                for f in gone {
                    dec(&mut self.union, f, &mut changes);
                }
                for f in came {
                    inc(&mut self.union, f, &mut changes);
                }
            }
            Announcement::Add(f) => {
                if set.insert(f.clone()) {
                    inc(&mut self.union, f, &mut changes);
                }
            }
            Announcement::Remove(f) => {
                if set.remove(&f) {
                    dec(&mut self.union, f, &mut changes);
                }
            }
        }
        changes
    }

    /// Forgets the nodes not heard from for [`EXPIRE_AFTER`]; returns the union's changes.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<(String, bool)> {
        let dead: Vec<u64> = self
            .nodes
            .iter()
            .filter(|(_, (_, seen))| now.duration_since(*seen) >= EXPIRE_AFTER)
            .map(|(&o, _)| o)
            .collect();
        let mut changes = Vec::new();
        for origin in dead {
            if let Some((set, _)) = self.nodes.remove(&origin) {
                log::info!(
                    "cluster: node {origin:016x} silent for {EXPIRE_AFTER:?}, its interest dropped"
                );
                for f in set {
                    dec(&mut self.union, f, &mut changes);
                }
            }
        }
        changes
    }
}

fn inc(union: &mut HashMap<String, usize>, f: String, changes: &mut Vec<(String, bool)>) {
    let n = union.entry(f.clone()).or_insert(0);
    *n += 1;
    if *n == 1 {
        changes.push((f, true));
    }
}

fn dec(union: &mut HashMap<String, usize>, f: String, changes: &mut Vec<(String, bool)>) {
    if let Some(n) = union.get_mut(&f) {
        *n -= 1;
        if *n == 0 {
            union.remove(&f);
            changes.push((f, false));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn announcements_round_trip_and_garbage_is_refused() {
        for a in [
            Announcement::Hello(vec![]),
            Announcement::Full(s(&["a/#", "b/+/c", "", "x y"])),
            Announcement::Add("a/b".into()),
            Announcement::Remove("+/x".into()),
        ] {
            assert_eq!(Announcement::decode(&a.encode()), Some(a));
        }
        assert_eq!(Announcement::decode(b""), None);
        assert_eq!(Announcement::decode(b"?a"), None);
        assert_eq!(Announcement::decode(b"+"), None);
        assert_eq!(Announcement::decode(b"+a\0b"), None);
        assert_eq!(Announcement::decode(&[b'F', 0xff]), None);
        assert_eq!(subject_origin(&subject_of(0xdead_beef)), Some(0xdead_beef));
        assert_eq!(subject_origin("midge.i.zz"), None);
    }

    #[test]
    fn the_union_counts_nodes_and_reports_only_its_own_changes() {
        let t = Instant::now();
        let mut r = RemoteInterest::default();
        assert_eq!(r.apply(1, Announcement::Hello(s(&["a", "b"])), t).len(), 2);
        // Node 2 shares "a": the union does not change for it.
        assert_eq!(
            r.apply(2, Announcement::Full(s(&["a", "c"])), t),
            vec![("c".into(), true)]
        );
        assert_eq!(r.apply(1, Announcement::Remove("a".into()), t), vec![]);
        assert_eq!(
            r.apply(2, Announcement::Remove("a".into()), t),
            vec![("a".into(), false)]
        );
        // Repeated and unknown changes are no-ops.
        assert_eq!(r.apply(2, Announcement::Remove("a".into()), t), vec![]);
        assert_eq!(r.apply(1, Announcement::Add("b".into()), t), vec![]);
        // A whole set replaces what was known of the node.
        let mut got = r.apply(1, Announcement::Full(s(&["d"])), t);
        got.sort();
        assert_eq!(got, vec![("b".into(), false), ("d".into(), true)]);
    }

    #[test]
    fn a_silent_node_expires_and_takes_its_filters_along() {
        let t = Instant::now();
        let mut r = RemoteInterest::default();
        r.apply(1, Announcement::Full(s(&["a", "x"])), t);
        r.apply(
            2,
            Announcement::Full(s(&["x"])),
            t + Duration::from_secs(20),
        );
        assert_eq!(r.expire(t + Duration::from_secs(30)), vec![]);
        let mut got = r.expire(t + EXPIRE_AFTER);
        got.sort();
        assert_eq!(
            got,
            vec![("a".into(), false)],
            "x is still wanted by node 2"
        );
        assert_eq!(
            r.expire(t + Duration::from_secs(20) + EXPIRE_AFTER),
            vec![("x".into(), false)]
        );
    }
}
