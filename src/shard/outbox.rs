//! What a shard sends to other shards during one loop turn, batched per destination.
//!
//! Why: pushing one inbox item per message per destination into an unbounded channel cost a
//! heap allocation every ~31 items (the channel's blocks) and one queue operation per message.
//! Instead every item for shard `to` — deliveries, replica updates, adopted
//! connections, in the order they were produced — is appended to `pending[to]`, and
//! [`Outbox::send`] pushes the whole Vec as ONE [`Batch`] at the end of the turn. The inbox
//! queues are bounded and preallocated, and a drained batch's Vec goes back to its sender
//! (`ShardHandle::recycle`), so steady-state traffic allocates nothing.
//!
//! Order: one destination's items stay in one Vec until they are queued, and a batch that
//! does not fit (the destination's queue is full) stays here and keeps growing, so what a
//! shard sends another arrives in the order it was sent even under overload. While such a
//! batch holds a replica update, the shard holds back its own writes to clients
//! ([`Outbox::holds_index_update`]): a SUBACK must not leave before the subscription it
//! acknowledges is queued to every other shard (see `Shard::drain_inbox`).

use crossbeam_channel::{Receiver, TrySendError};

use super::inbox::{Batch, ShardHandle, ShardMsg};

/// Initial capacity of a batch Vec (grows with the traffic, then is reused).
const BATCH_CAPACITY: usize = 64;

/// Per-destination batches of one shard. Shard thread only.
#[derive(Debug)]
pub struct Outbox {
    from: u16,
    /// Items for each shard not queued yet (index = destination; empty for this shard).
    pending: Vec<Vec<ShardMsg>>,
    /// Empty batch Vecs given back by the shards that drained them.
    free: Receiver<Vec<ShardMsg>>,
    /// A pending batch that did not fit its destination's queue holds a replica update.
    index_update_held: bool,
}

impl Outbox {
    /// The outbox of shard `from` among `shards`; `free` is where its batches come back.
    pub fn new(from: usize, shards: usize, free: Receiver<Vec<ShardMsg>>) -> Outbox {
        Outbox {
            from: from as u16,
            pending: (0..shards).map(|_| Vec::new()).collect(),
            free,
            index_update_held: false,
        }
    }

    /// Appends `msg` to this turn's batch for shard `to`.
    pub fn push(&mut self, to: usize, msg: ShardMsg) {
        let batch = &mut self.pending[to];
        if batch.capacity() == 0 {
            *batch = self
                .free
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(BATCH_CAPACITY));
        }
        batch.push(msg);
    }

    /// Queues every non-empty batch to its shard (one queue item each). A batch whose
    /// destination queue is full stays pending, in order, for the next call; the caller wakes
    /// the destinations it pushed to (as before: once per turn, only if parked).
    pub fn send(&mut self, peers: &[ShardHandle]) {
        self.index_update_held = false;
        for (to, batch) in self.pending.iter_mut().enumerate() {
            if batch.is_empty() {
                continue;
            }
            let items = std::mem::take(batch);
            match peers[to].push(Batch {
                from: self.from,
                items,
            }) {
                Ok(()) => {}
                Err(TrySendError::Full(b)) => {
                    self.index_update_held |= b.items.iter().any(|m| {
                        matches!(
                            m,
                            ShardMsg::IndexInsert { .. } | ShardMsg::IndexRemove { .. }
                        )
                    });
                    *batch = b.items;
                }
                // The destination is gone: the broker is shutting down.
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
    }

    /// True while some batch waits for room in its destination's queue.
    pub fn has_pending(&self) -> bool {
        self.pending.iter().any(|b| !b.is_empty())
    }

    /// True while a replica update waits for room (writes to clients are held back then).
    pub fn holds_index_update(&self) -> bool {
        self.index_update_held
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::SubscriberId;
    use crate::reactor::{IoBackend, Reactor};
    use crate::shard::inbox::{inbox, Inbox, INBOX_BATCHES};
    use crate::shard::WAKER;

    fn shards(n: usize) -> (Vec<Reactor>, Vec<ShardHandle>, Vec<Inbox>) {
        let (mut polls, mut handles, mut inboxes) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..n {
            let (poll, _, waker) = Reactor::new(IoBackend::Epoll, WAKER).unwrap();
            let (h, i) = inbox(waker);
            polls.push(poll);
            handles.push(h);
            inboxes.push(i);
        }
        (polls, handles, inboxes)
    }

    fn remove(slot: u32) -> ShardMsg {
        ShardMsg::IndexRemove {
            filter: "a/b".into(),
            subscriber: SubscriberId {
                shard: 0,
                slot,
                generation: 1,
            },
        }
    }

    fn slots(items: &[ShardMsg]) -> Vec<u32> {
        items
            .iter()
            .map(|m| match m {
                ShardMsg::IndexRemove { subscriber, .. } => subscriber.slot,
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn one_batch_per_destination_per_send_in_order_with_its_sender() {
        let (_polls, peers, inboxes) = shards(2);
        let mut out = Outbox::new(0, 2, inboxes[0].free.clone());
        for slot in 0..3 {
            out.push(1, remove(slot));
        }
        out.send(&peers);
        assert!(!out.has_pending());
        let b = inboxes[1].rx.try_recv().expect("one batch");
        assert!(inboxes[1].rx.try_recv().is_err(), "only one");
        assert_eq!((b.from, slots(&b.items)), (0, vec![0, 1, 2]));
        // Drained, it goes back to shard 0 and is reused for its next batch.
        let ptr = b.items.as_ptr();
        peers[0].recycle(b.items);
        out.push(1, remove(9));
        out.send(&peers);
        let b = inboxes[1].rx.try_recv().unwrap();
        assert_eq!(b.items.as_ptr(), ptr, "the recycled Vec");
    }

    #[test]
    fn a_full_queue_keeps_the_batch_in_order_and_holds_index_updates() {
        let (_polls, peers, inboxes) = shards(2);
        let mut out = Outbox::new(0, 2, inboxes[0].free.clone());
        for _ in 0..INBOX_BATCHES {
            peers[1]
                .push(Batch {
                    from: 0,
                    items: Vec::new(),
                })
                .unwrap();
        }
        out.push(1, remove(1));
        out.send(&peers);
        assert!(out.has_pending() && out.holds_index_update());
        out.push(1, remove(2));
        out.send(&peers);
        assert!(out.holds_index_update(), "still full");
        inboxes[1].rx.try_recv().unwrap(); // the shard drains one batch
        out.send(&peers);
        assert!(!out.has_pending() && !out.holds_index_update());
        let last = std::iter::from_fn(|| inboxes[1].rx.try_recv().ok()).last();
        assert_eq!(
            slots(&last.unwrap().items),
            vec![1, 2],
            "both, in order, in one batch"
        );
    }
}
