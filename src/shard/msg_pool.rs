//! A per-shard pool of `Arc<Message>` allocations, reused once every other holder let go.
//!
//! Why: a routed message is one `Arc<Message>` shared by every subscriber and shard (see
//! `message`), and allocating it was the last heap allocation per PUBLISH on the hot path
//! (`tests/alloc.rs` counts them). The last holder of a message may be any shard, a session
//! queue or the retained store, so the `Arc` cannot be handed back on drop without a shared
//! free list (a lock or atomics per message). Instead the publishing shard keeps one clone of
//! each message it hands out (`live`) and, once per loop turn, looks at a bounded number of
//! them: one whose count is back to 1 (`Arc::get_mut` succeeds) is emptied and kept for the
//! next PUBLISH. Shard thread only; nothing here is shared.
//!
//! The free list must hold what one busy loop turn uses (a turn may read 256 KiB per
//! connection: thousands of small messages), or the pool misses exactly when it matters; and
//! the scan is proportional to the messages handed out since the last one (two looks per
//! message), so it costs O(1) per message however many long-held messages are watched.
//!
//! Bounds: at most [`LIVE`] clones are kept (beyond that the oldest is let go and becomes an
//! ordinary `Arc`, freed by its last holder) and at most [`FREE`] empty ones. A message is
//! emptied at the latest one turn after its last holder dropped it, so the pool never keeps a
//! payload (and the read buffer it is a slice of) alive for long.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::message::{Message, SharedMessage};

/// Messages handed out and still watched.
const LIVE: usize = 8192;
/// Empty messages kept for reuse (about 600 bytes each).
const FREE: usize = 4096;
/// Messages taken from the front of `live` when the free list runs dry within a turn.
const FRONT: usize = 4;
/// Messages looked at per [`MessagePool::reclaim`] at least (more after a busy turn).
const SCAN: usize = 256;

/// See the module documentation.
#[derive(Debug)]
pub struct MessagePool {
    live: VecDeque<SharedMessage>,
    free: Vec<SharedMessage>,
    /// Messages handed out since the last reclaim (sizes its scan).
    shared_since_reclaim: usize,
    /// Messages allocated because the pool had none free (tests and diagnostics).
    pub allocated: u64,
}

impl Default for MessagePool {
    fn default() -> Self {
        MessagePool {
            live: VecDeque::with_capacity(LIVE),
            free: Vec::with_capacity(FREE),
            shared_since_reclaim: 0,
            allocated: 0,
        }
    }
}

impl MessagePool {
    /// `msg` behind an `Arc`, in a recycled allocation when one is free.
    pub fn share(&mut self, msg: Message) -> SharedMessage {
        if self.free.is_empty() {
            // A busy turn used up the free list: messages released since the last reclaim
            // (delivered locally, or drained by another shard meanwhile) are at the front.
            self.take_released_front();
        }
        let shared = match self.free.pop() {
            Some(mut a) => match Arc::get_mut(&mut a) {
                Some(slot) => {
                    *slot = msg;
                    a
                }
                // Unreachable: only messages nobody else holds are put in `free`.
                None => Arc::new(msg),
            },
            None => {
                self.allocated += 1;
                Arc::new(msg)
            }
        };
        if self.live.len() == LIVE {
            self.live.pop_front();
        }
        self.shared_since_reclaim += 1;
        self.live.push_back(shared.clone());
        shared
    }

    /// Moves the oldest watched messages to the free list while nobody else holds them (at
    /// most [`FRONT`]; they are overwritten at once, so they are not emptied).
    fn take_released_front(&mut self) {
        for _ in 0..FRONT {
            match self.live.front_mut().map(Arc::get_mut) {
                Some(Some(_)) => {
                    let a = self.live.pop_front().expect("front exists");
                    self.free.push(a);
                }
                _ => return,
            }
        }
    }

    /// Moves watched messages that nobody else holds any more to the free list, emptied (their
    /// payload, topic and properties are dropped now). Once per loop turn.
    pub fn reclaim(&mut self) {
        let budget = SCAN.max(2 * std::mem::take(&mut self.shared_since_reclaim));
        for _ in 0..self.live.len().min(budget) {
            let Some(mut a) = self.live.pop_front() else {
                break;
            };
            // A plain load first: most watched messages are still held (a QoS 1 window in
            // flight), and `Arc::get_mut` is a compare-and-swap on the counts even when it
            // fails. `get_mut` still decides (with the acquire ordering that makes reuse safe).
            if Arc::strong_count(&a) != 1 {
                self.live.push_back(a);
                continue;
            }
            match Arc::get_mut(&mut a) {
                Some(m) => {
                    if self.free.len() < FREE {
                        *m = Message::empty();
                        self.free.push(a);
                    }
                }
                None => self.live.push_back(a),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::QoS;

    fn message(payload: &'static [u8]) -> Message {
        Message {
            payload: bytes::Bytes::from_static(payload),
            qos: QoS::AtLeastOnce,
            ..Message::empty()
        }
    }

    #[test]
    fn a_message_nobody_holds_is_reused_and_one_still_held_is_not() {
        let mut pool = MessagePool::default();
        let a = pool.share(message(b"a"));
        let b = pool.share(message(b"b"));
        assert_eq!(pool.allocated, 2);
        let a_ptr = Arc::as_ptr(&a);
        drop(a);
        pool.reclaim();
        let c = pool.share(message(b"c"));
        assert_eq!(Arc::as_ptr(&c), a_ptr, "a's allocation is reused");
        assert_eq!(&c.payload[..], b"c");
        assert_eq!(pool.allocated, 2);
        let d = pool.share(message(b"d"));
        assert_eq!(pool.allocated, 3, "b is still held: a new allocation");
        assert_eq!(&b.payload[..], b"b", "a held message is never overwritten");
        drop((c, d));
    }

    #[test]
    fn reclaim_empties_the_message_so_its_payload_is_released() {
        let mut pool = MessagePool::default();
        let payload = bytes::Bytes::from(vec![7u8; 100]);
        let m = pool.share(Message {
            payload: payload.clone(),
            ..Message::empty()
        });
        drop(m);
        pool.reclaim();
        // Only our own handle is left on the payload's storage: the pool dropped its copy.
        assert!(bytes::Bytes::try_into_mut(payload).is_ok());
    }

    #[test]
    fn a_busy_turn_reuses_messages_released_during_it() {
        let mut pool = MessagePool::default();
        for _ in 0..100 {
            drop(pool.share(message(b"x"))); // delivered and released at once
        }
        assert_eq!(
            pool.allocated, 1,
            "no reclaim in between, yet one allocation"
        );
    }

    #[test]
    fn the_pool_is_bounded() {
        let mut pool = MessagePool::default();
        let held: Vec<_> = (0..LIVE + 10).map(|_| pool.share(message(b"x"))).collect();
        assert_eq!(pool.live.len(), LIVE);
        drop(held);
        for _ in 0..(LIVE / SCAN + 1) {
            pool.reclaim();
        }
        assert_eq!(pool.shared_since_reclaim, 0);
        assert_eq!(pool.free.len(), FREE);
        assert!(pool.live.is_empty());
    }
}
