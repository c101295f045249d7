//! Batches of different shards that must reach the disk in one frame.
//!
//! # Why
//! A QoS 2 PUBLISH that arrives on shard A and has subscribers on shard B is stored in two
//! batches: A's remembers the packet id as received (with A's own copies), B's holds B's
//! subscribers' copies. Written in two frames, a crash between them breaks exactly-once
//! either way: the id without B's copies loses the message for B (the publisher, which got
//! no PUBREC, retransmits with DUP, and the broker takes the id as already received), B's
//! copies without the id deliver it twice (the retransmission is routed again).
//!
//! # How
//! A's batch says which batches it awaits ([`Link::Awaits`]: shard B's batch covering A's
//! ticket t, the counter the shards already keep for cross-shard deliveries, see
//! `shard::durable`); B's batch says what it covers ([`Link::Covers`]: everything A sent up
//! to ticket t). The writer takes the longest prefix of its queue in which every awaited
//! batch is present ([`closed_prefix`]) and writes it as one frame, which recovery takes
//! whole or not at all (one checksum). What is left waits for its partners, at most
//! [`PAIR_WAIT`]; then the writer writes it as it is.
//!
//! # What the cap trades
//! Correctness never depends on it: the PUBREC still waits until every part is durable
//! (`shard::durable`), so past the cap only the crash atomicity of that one frame is lost,
//! not an acknowledged message. A longer cap covers slower partners (a shard stalled, an
//! outbox batch that did not fit its inbox), at the price of the latency of everything
//! queued behind the held batch (all shards' acknowledgements) while it waits. Partners
//! normally arrive within one loop turn of the other shard (tens of microseconds to a few
//! milliseconds), well inside it; but under steady QoS 2 traffic *both ways* between two
//! shards every batch both covers and awaits, the chain has no closed prefix, and the cap
//! is what ends it.

use std::time::Duration;

/// How long the writer holds a batch whose partners have not arrived (see the module
/// documentation for what this trades).
pub(crate) const PAIR_WAIT: Duration = Duration::from_millis(50);

/// What a submitted batch says about its partners on other shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Link {
    /// Write this batch with shard `shard`'s batch that covers our ticket `ticket`.
    Awaits { shard: u16, ticket: u64 },
    /// This batch holds what shard `origin` sent up to its ticket `ticket`.
    Covers { origin: u16, ticket: u64 },
}

/// A queued batch as pairing sees it.
pub(crate) trait Linked {
    /// The submitting shard.
    fn shard(&self) -> usize;
    fn links(&self) -> &[Link];
}

/// The index of the first batch after `i` from shard `shard` that covers ticket `ticket`
/// of shard `origin`.
fn partner<S: Linked>(
    queue: &[S],
    i: usize,
    origin: usize,
    shard: u16,
    ticket: u64,
) -> Option<usize> {
    (i + 1..queue.len()).find(|&j| {
        queue[j].shard() == usize::from(shard)
            && queue[j].links().iter().any(|l| {
                matches!(*l, Link::Covers { origin: o, ticket: t }
                    if usize::from(o) == origin && t >= ticket)
            })
    })
}

/// The length of the longest prefix of `queue` (in submission order) that holds the partner
/// of every batch in it: what can be written now as one frame without splitting a pair.
/// `queue.len()` when nothing waits. A batch's partners always come after it (the other
/// shard learns of the ticket only after the batch was submitted), so a prefix that ends
/// where no pair is open is exactly such a prefix.
pub(crate) fn closed_prefix<S: Linked>(queue: &[S]) -> usize {
    let mut closed = 0;
    // The furthest partner of any batch seen so far.
    let mut reach = 0;
    for (i, s) in queue.iter().enumerate() {
        for l in s.links() {
            if let Link::Awaits { shard, ticket } = *l {
                match partner(queue, i, s.shard(), shard, ticket) {
                    Some(j) => reach = reach.max(j),
                    None => return closed,
                }
            }
        }
        if reach <= i {
            closed = i + 1;
        }
    }
    closed
}

#[cfg(test)]
mod tests {
    use super::*;

    struct B(usize, Vec<Link>);

    impl Linked for B {
        fn shard(&self) -> usize {
            self.0
        }
        fn links(&self) -> &[Link] {
            &self.1
        }
    }

    fn awaits(shard: u16, ticket: u64) -> Link {
        Link::Awaits { shard, ticket }
    }

    fn covers(origin: u16, ticket: u64) -> Link {
        Link::Covers { origin, ticket }
    }

    #[test]
    fn unpaired_batches_are_all_written() {
        let q = vec![B(0, vec![]), B(1, vec![covers(0, 3)]), B(0, vec![])];
        assert_eq!(closed_prefix(&q), 3);
        assert_eq!(closed_prefix::<B>(&[]), 0);
    }

    #[test]
    fn a_batch_waits_for_the_batch_that_covers_its_ticket() {
        let mut q = vec![B(1, vec![]), B(0, vec![awaits(1, 5)]), B(2, vec![])];
        assert_eq!(closed_prefix(&q), 1, "written up to the awaiting batch");
        // An older ticket, or the right ticket from the wrong shard or for the wrong origin,
        // is not the partner.
        q.push(B(1, vec![covers(0, 4)]));
        q.push(B(2, vec![covers(0, 5)]));
        q.push(B(1, vec![covers(2, 5)]));
        assert_eq!(closed_prefix(&q), 1);
        q.push(B(1, vec![covers(0, 6)]));
        assert_eq!(
            closed_prefix(&q),
            7,
            "a later ticket covers the earlier ones"
        );
    }

    #[test]
    fn a_pair_is_never_split_by_a_batch_between_its_parts() {
        // 0 awaits 3; 1 awaits 5 (not there yet): 0..=3 cannot be cut off at 2 or 3 without
        // splitting 1 from its partner, nor at 1 or 2 without splitting 0 from its own.
        let q = vec![
            B(0, vec![awaits(1, 1)]),
            B(2, vec![awaits(1, 1)]),
            B(3, vec![]),
            B(1, vec![covers(0, 1)]),
        ];
        assert_eq!(closed_prefix(&q), 0);
        let mut q = q;
        q.push(B(1, vec![covers(2, 1)]));
        assert_eq!(closed_prefix(&q), 5);
    }

    #[test]
    fn a_chain_closes_only_where_no_pair_is_open() {
        // Both ways: 0 awaits 1's cover, which awaits 0's next batch, and so on.
        let mut q = vec![
            B(0, vec![awaits(1, 1)]),
            B(1, vec![covers(0, 1), awaits(0, 1)]),
            B(0, vec![covers(1, 1), awaits(1, 2)]),
        ];
        assert_eq!(closed_prefix(&q), 0);
        q.push(B(1, vec![covers(0, 2)]));
        q.push(B(0, vec![awaits(1, 3)]));
        assert_eq!(closed_prefix(&q), 4);
    }
}
