//! One shard's cache of ACL answers, keyed by (client id, topic, access), so that the
//! delivery path mostly answers from memory.
//!
//! A lookup hashes the borrowed strings and compares them in place: no allocation, no lock
//! (the table belongs to the shard). Time is the shard's last tick, not a clock read per
//! message. The table is bounded: when full, expired entries go; if it is still full, all go
//! (a burst of misses then costs fetches, never memory).

use std::hash::{BuildHasher, Hash, Hasher};
use std::time::Instant;

use hashbrown::HashTable;

/// A cached answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Allow,
    Deny,
    /// The server said `ignore`: the next plugin decides.
    Pass,
    /// A fetch is under way (further misses do not ask again).
    Pending,
}

#[derive(Debug)]
struct Entry {
    hash: u64,
    client: Box<str>,
    topic: Box<str>,
    acc: u8,
    answer: Answer,
    expires: Instant,
}

#[derive(Debug)]
pub struct AclCache {
    table: HashTable<Entry>,
    hasher: std::collections::hash_map::RandomState,
    max: usize,
}

impl AclCache {
    pub fn new(max: usize) -> AclCache {
        AclCache {
            table: HashTable::new(),
            hasher: Default::default(),
            max: max.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    fn hash(&self, client: &str, topic: &str, acc: u8) -> u64 {
        let mut h = self.hasher.build_hasher();
        client.hash(&mut h);
        topic.hash(&mut h);
        acc.hash(&mut h);
        h.finish()
    }

    /// The unexpired answer for this key, if any.
    pub fn get(&self, client: &str, topic: &str, acc: u8, now: Instant) -> Option<Answer> {
        let hash = self.hash(client, topic, acc);
        self.table
            .find(hash, |e| {
                e.acc == acc && &*e.client == client && &*e.topic == topic
            })
            .filter(|e| e.expires > now)
            .map(|e| e.answer)
    }

    /// Stores `answer` until `expires` (replacing an older one).
    pub fn put(
        &mut self,
        client: &str,
        topic: &str,
        acc: u8,
        answer: Answer,
        expires: Instant,
        now: Instant,
    ) {
        let hash = self.hash(client, topic, acc);
        let eq = |e: &Entry| e.acc == acc && &*e.client == client && &*e.topic == topic;
        if let Some(e) = self.table.find_mut(hash, eq) {
            e.answer = answer;
            e.expires = expires;
            return;
        }
        if self.table.len() >= self.max {
            self.table.retain(|e| e.expires > now);
            if self.table.len() >= self.max {
                self.table.clear();
            }
        }
        let entry = Entry {
            hash,
            client: client.into(),
            topic: topic.into(),
            acc,
            answer,
            expires,
        };
        self.table.insert_unique(hash, entry, |e| e.hash);
    }

    /// Forgets every answer about `client` (it disconnected).
    pub fn forget_client(&mut self, client: &str) {
        self.table.retain(|e| &*e.client != client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn hits_expiry_and_bound() {
        let now = Instant::now();
        let later = now + Duration::from_secs(10);
        let mut c = AclCache::new(3);
        c.put("c1", "a/b", 2, Answer::Allow, later, now);
        assert_eq!(c.get("c1", "a/b", 2, now), Some(Answer::Allow));
        assert_eq!(c.get("c1", "a/b", 1, now), None);
        assert_eq!(c.get("c2", "a/b", 2, now), None);
        assert_eq!(c.get("c1", "a/b", 2, later), None, "expired");
        c.put("c1", "a/b", 2, Answer::Deny, later, now);
        assert_eq!(c.get("c1", "a/b", 2, now), Some(Answer::Deny));
        assert_eq!(c.len(), 1);
        c.put("c1", "x", 2, Answer::Allow, now, now); // already expired
        c.put("c1", "y", 2, Answer::Allow, later, now);
        assert_eq!(c.len(), 3);
        // Full: the expired entry makes room.
        c.put("c1", "z", 2, Answer::Allow, later, now);
        assert_eq!(c.len(), 3);
        assert_eq!(c.get("c1", "z", 2, now), Some(Answer::Allow));
        // Full of live entries: cleared, then the new one.
        c.put("c9", "z", 2, Answer::Pass, later, now);
        assert_eq!(c.len(), 1);
        c.put("c8", "z", 2, Answer::Pass, later, now);
        c.forget_client("c9");
        assert_eq!(c.len(), 1);
    }
}
