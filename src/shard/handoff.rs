//! Handoffs: a shard delivers what it queued for a sleeping shard itself, instead of waking
//! it (docs/ARCHITECTURE.md §4, "cross-shard delivery").
//!
//! Why: at low rates every message whose subscriber lives on another shard cost a second
//! loop's wake-up: an eventfd write, a sleeping thread woken (in a VM an inter-processor
//! interrupt), an `epoll_wait` returning and another going back to sleep. With 1,000 pairs at
//! 1 msg/s, 2 shards used 1.5x the CPU per message of 1 shard (`results/lowrate-20261206`).
//!
//! How: a shard lives in a [`Slot`], a mutex its own loop holds for the whole turn and
//! releases only while it sleeps in `poll`. A shard that queued a batch for a peer parked in
//! `poll` may, instead of waking it, take the peer's lock (`try_lock`: it never waits) and
//! run the part of the peer's turn that the batch needs: drain its inbox and end its turn
//! (the store batch, batches for other shards, flushes to its clients, in the usual order).
//! The peer sleeps on. What only the peer's own loop does (adoptions, handshaken
//! connections, deferred plugin answers, the retained backlog, a batch that did not fit a
//! queue, the store's progress) wakes it as before.
//!
//! When not: a shard whose own turn was busy, or whose last handoff wrote many packets, wakes
//! its peers for a while, so that under load the work spreads over the loops as without
//! handoffs; never with a C plugin loaded (its per-shard hooks are promised their own
//! shard's thread) or with `shard_handoff false`. A handoff never nests: what the peer's
//! turn sends a third shard wakes that shard.
//!
//! Locks: a loop blocks on its own slot only (held by a handing-off peer for one handoff at
//! most), and takes other slots only with `try_lock` while holding its own: no thread waits
//! for a lock while it holds one, so there is no deadlock.

use std::cell::Cell;
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use super::Shard;

/// A turn that handled more events than this is busy: its shard wakes its peers instead.
const BUSY_TURN_EVENTS: usize = 16;
/// A handoff that wrote more packets than this (a large fan-out on the peer) makes its shard
/// wake its peers for [`BACK_OFF`], so one loop does not carry another's load. Counted in
/// packets, not time: a thread preempted in the middle of a small handoff (two shared cores)
/// must not stop handoffs for everyone.
const LARGE_HANDOFF_PACKETS: u64 = 64;
const BACK_OFF: Duration = Duration::from_millis(20);

thread_local! {
    /// This thread is running a peer's turn (handoffs do not nest).
    static HANDING_OFF: Cell<bool> = const { Cell::new(false) };
}

/// One shard's state, behind the lock its loop holds except while it sleeps.
pub struct Slot(Mutex<Option<Shard>>);

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Slot")
    }
}

impl Slot {
    /// A slot whose shard is not running yet.
    pub fn empty() -> Slot {
        Slot(Mutex::new(None))
    }

    /// The shard's own loop takes its state (blocking while a peer runs a handoff). A shard
    /// that panicked poisons nothing others need: its peers only `try_run` it.
    pub(super) fn lock(&self) -> MutexGuard<'_, Option<Shard>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the shard, on this thread, if its loop is not running it now (`try_lock`:
    /// never waits). `None`: not run (busy, not started, stopped, or this thread is already
    /// running a peer's turn: handoffs and hosted turns do not nest).
    pub(super) fn run_for_peer<R>(&self, f: impl FnOnce(&mut Shard) -> R) -> Option<R> {
        if HANDING_OFF.with(Cell::get) {
            return None;
        }
        let mut guard = match self.0.try_lock() {
            Ok(g) => g,
            Err(TryLockError::WouldBlock) | Err(TryLockError::Poisoned(_)) => return None,
        };
        let shard = guard.as_mut()?;
        HANDING_OFF.with(|h| h.set(true));
        let r = f(shard);
        HANDING_OFF.with(|h| h.set(false));
        Some(r)
    }

    /// Runs the shard's handed-off turn if its loop is not running it now (see
    /// [`Slot::run_for_peer`]); whether its own loop must run too (see
    /// [`Shard::needs_own_turn`]) and the packets the turn wrote.
    fn try_run(&self) -> Option<(bool, u64)> {
        self.run_for_peer(|shard| {
            let before = shard.stats.packets_out;
            shard.handed_off_turn();
            (shard.needs_own_turn(), shard.stats.packets_out - before)
        })
    }
}

/// When this shard may run its peers' turns.
#[derive(Debug)]
pub(crate) struct Policy {
    enabled: bool,
    /// Events the current turn handled.
    pub(crate) turn_events: usize,
    /// No handoffs before this instant (a slow one was seen).
    quiet_until: Option<Instant>,
}

impl Policy {
    pub(crate) fn new(enabled: bool) -> Policy {
        Policy {
            enabled,
            turn_events: 0,
            quiet_until: None,
        }
    }

    fn allows(&mut self) -> bool {
        if !self.enabled || self.turn_events > BUSY_TURN_EVENTS {
            return false;
        }
        match self.quiet_until {
            Some(t) if Instant::now() < t => false,
            Some(_) => {
                self.quiet_until = None;
                true
            }
            None => true,
        }
    }

    fn wrote(&mut self, packets: u64) {
        if packets > LARGE_HANDOFF_PACKETS {
            self.quiet_until = Some(Instant::now() + BACK_OFF);
        }
    }
}

impl Shard {
    /// Peer `peer` was sent something this turn: runs its turn here if it sleeps and the
    /// policy allows, else wakes it if it sleeps.
    pub(super) fn hand_off_or_wake(&mut self, peer: usize) {
        let handle = &self.peers[peer];
        if !handle.is_sleeping() {
            return;
        }
        if self.handoff.allows() {
            if let Some((needs_own_turn, packets)) = handle.slot.try_run() {
                self.handoff.wrote(packets);
                self.stats.handoffs += 1;
                if needs_own_turn {
                    handle.wake_if_sleeping();
                }
                return;
            }
        }
        handle.wake_if_sleeping();
    }

    /// The part of a turn a peer runs for this sleeping shard: what other shards sent, then
    /// the end of the turn, as the loop does (`Shard::run`).
    fn handed_off_turn(&mut self) {
        let started = Instant::now();
        self.drain_inbox();
        self.close_turn(started);
    }

    /// Something waits that only this shard's own loop does (see the module documentation),
    /// or that makes it poll without sleeping (a connection left to flush included: its
    /// output waits for the store or for a full queue, which the loop watches), or socket
    /// registrations only its loop submits (io_uring: a closed connection's socket stays
    /// open until its poll request is removed).
    pub(super) fn needs_own_turn(&self) -> bool {
        !self.adoptions.is_empty()
            || self.registry.has_pending()
            || !self.handshaken.is_empty()
            || !self.later_answers.is_empty()
            || self.outbox.has_pending()
            || !self.dirty.is_empty()
            || !self.inbox.rx.is_empty()
            || self.must_not_sleep()
    }
}
