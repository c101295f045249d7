//! The writer thread and what it shares with the shards: the queue of submitted batches,
//! the pairing of batches that must share a frame, the cancelling of deliveries put and
//! acknowledged within one group, and the group write itself (see `core` for the design).

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::codec::{self, Op};
use super::core::{Engine, Notify};
use super::mirror::Mirror;
use super::pairing::{self, Link, Linked, PAIR_WAIT};
use super::{BatchOp, Options, StoreError, StoreStats, SyncPolicy};
use crate::protocol::ByteStr;

/// One submitted batch.
pub(super) struct Submission {
    pub(super) ticket: u64,
    pub(super) shard: usize,
    pub(super) ops: Vec<BatchOp>,
    /// Its partners on other shards (see `pairing`); empty for most batches.
    pub(super) links: Vec<Link>,
    /// When it was submitted, if it awaits a partner.
    pub(super) awaiting_since: Option<Instant>,
}

impl Linked for Submission {
    fn shard(&self) -> usize {
        self.shard
    }
    fn links(&self) -> &[Link] {
        &self.links
    }
}

/// What shards hand to the writer, behind `Core::queue`.
pub(super) struct Queue {
    pub(super) pending: Vec<Submission>,
    /// Emptied operation vectors, handed back to submitters (no allocation per turn).
    pub(super) spare: Vec<Vec<BatchOp>>,
    /// Emptied link vectors, likewise.
    pub(super) spare_links: Vec<Vec<Link>>,
    /// Pending submissions that await a partner (0: no pairing to check).
    pub(super) awaiting: usize,
    /// The writer holds pending batches until their partners arrive: a submission that
    /// covers one wakes it.
    pub(super) holding: bool,
    /// The last ticket given out.
    pub(super) issued: u64,
    /// A rewrite was asked for ([`Store::compact`], or a retry after a failed write).
    pub(super) rewrite: bool,
    /// Something pending must be written now (not only lazy deletes, `Batch::holds_output`).
    pub(super) urgent: bool,
    /// Pending QoS 1 deliveries must be written by then (see [`QOS1_GRACE`]).
    pub(super) due: Option<Instant>,
    pub(super) stop: bool,
    /// Recent failed tickets (inclusive ranges) and their error, for [`Store::wait`].
    pub(super) failures: VecDeque<(u64, u64, StoreError)>,
}

/// The writer's own state, behind `Core::writer`.
pub(super) struct Writer {
    pub(super) mirror: Mirror,
    /// Queued entries deleted in the group being written, and those whose put was skipped
    /// (see [`Writer::find_cancelling_pairs`]); reused.
    pub(super) deleted: HashSet<EntryKey>,
    pub(super) skipped: HashSet<EntryKey>,
    /// The group being written: its operations and their encoding (reused).
    pub(super) ops: Vec<Op>,
    pub(super) buf: Vec<u8>,
    /// The disk is behind the mirror (a write failed): the next write is a full rewrite.
    pub(super) resync: bool,
    pub(super) stats: StoreStats,
}

/// Shared by the shards (through [`Core`]) and the writer thread.
pub(super) struct Inner<E: Engine> {
    pub(super) opts: Options,
    pub(super) queue: Mutex<Queue>,
    /// The writer waits here for work.
    pub(super) work: Condvar,
    /// Blocking callers ([`Store::wait`]) wait here for progress.
    pub(super) progress: Condvar,
    pub(super) finished: AtomicU64,
    pub(super) durable: AtomicU64,
    pub(super) writer: Mutex<Writer>,
    pub(super) engine: Arc<Mutex<E>>,
    /// Set when a write was not synced (for the flusher).
    pub(super) unsynced: Arc<AtomicBool>,
    pub(super) keep_ops: bool,
    pub(super) notify: Mutex<Vec<Option<Notify>>>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long a batch of only QoS 1 deliveries may wait before the writer takes it. A delivery
/// to an online subscriber is usually acknowledged within this time, and its publisher's
/// PUBACK waits for the acknowledgement or the write, whichever comes first
/// (`shard::durable`); the writer then drops the delivery's put and delete as a pair
/// ([`Writer::find_cancelling_pairs`]) instead of writing and syncing both. Only deliveries
/// to slow or offline subscribers pay it, as added latency of their publishers' PUBACKs.
pub(super) const QOS1_GRACE: Duration = Duration::from_millis(1);

/// Recent failures kept for [`Store::wait`] (older failed tickets read as plain failures
/// through `durable`, without the error text).
pub(super) const FAILURES_KEPT: usize = 64;
/// Emptied operation vectors kept for reuse.
pub(super) const SPARE_KEPT: usize = 16;
/// A spare larger than this (operations) is freed: a burst must not pin its memory.
pub(super) const SPARE_MAX_OPS: usize = 1 << 16;

/// A queued entry within one group: the address and length of its client id's bytes, and
/// its sequence number. Every operation of a session carries a clone of the session's one
/// client id (same bytes, same address), and the group's operations keep those bytes alive,
/// so within a group the address names the client, without hashing the string or touching
/// its reference count (this lookup runs for every queued entry). `None` for an empty id.
type EntryKey = (usize, usize, u64);

fn entry_key(client: &ByteStr, seq: u64) -> Option<EntryKey> {
    let b = client.as_bytes();
    (!b.is_empty()).then(|| (b.as_ptr() as usize, b.len(), seq))
}

impl Writer {
    /// Collects the queued entries that this group both puts and deletes: a delivery
    /// acknowledged before it was ever written (the common case for online subscribers,
    /// see `shard::durable`) then costs the writer two set lookups instead of four records
    /// (message, entry, and their deletes) encoded, applied and written. Not done for a
    /// group that ends a session: a new session of the same client id counts its entries
    /// from 1 again, so a (client, seq) pair would not name one entry.
    fn find_cancelling_pairs(&mut self, taken: &[Submission]) {
        self.deleted.clear();
        self.skipped.clear();
        let ops = taken.iter().flat_map(|s| s.ops.iter());
        if ops.clone().any(|op| matches!(op, BatchOp::DelSession(..))) {
            return;
        }
        for op in ops {
            if let BatchOp::DelQueued(client, seq) = op {
                self.deleted.extend(entry_key(client, *seq));
            }
        }
    }
}

/// True if `op` is part of a put/delete pair of this group (see
/// [`Writer::find_cancelling_pairs`]) and is dropped. A put is dropped only if the entry is
/// not in the mirror (so it is new in this group); its updates and its delete go with it.
fn cancelled(
    op: &BatchOp,
    mirror: &Mirror,
    deleted: &HashSet<EntryKey>,
    skipped: &mut HashSet<EntryKey>,
) -> bool {
    match op {
        BatchOp::PutQueued(client, seq, ..) => {
            let Some(key) = entry_key(client, *seq) else {
                return false;
            };
            let stored = || {
                mirror
                    .clients
                    .get(client)
                    .is_some_and(|c| c.queued.contains_key(seq))
            };
            if deleted.contains(&key) && !stored() {
                skipped.insert(key);
                true
            } else {
                false
            }
        }
        BatchOp::UpdateQueued(client, seq, _) => {
            !skipped.is_empty() && entry_key(client, *seq).is_some_and(|k| skipped.contains(&k))
        }
        BatchOp::DelQueued(client, seq) => {
            !skipped.is_empty() && entry_key(client, *seq).is_some_and(|k| skipped.remove(&k))
        }
        _ => false,
    }
}

impl<E: Engine> Inner<E> {
    /// The writer thread: one group per iteration, until stopped with nothing left to write.
    pub(super) fn run_writer(&self) {
        let mut taken: Vec<Submission> = Vec::new();
        let mut emptied: Vec<Vec<BatchOp>> = Vec::new();
        loop {
            let (hi, rewrite) = {
                let mut q = lock(&self.queue);
                let mut hold_until = None;
                let take = loop {
                    let now = Instant::now();
                    let ready = q.urgent || q.rewrite || q.stop || q.due.is_some_and(|d| now >= d);
                    if ready {
                        let take = self.writable(&mut q, now, &mut hold_until);
                        if take > 0 || q.pending.is_empty() {
                            break take;
                        }
                    }
                    let until = match (q.due.filter(|_| !ready), hold_until) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    q.holding = hold_until.is_some();
                    q = match until {
                        None => self.work.wait(q).unwrap_or_else(|e| e.into_inner()),
                        Some(until) => {
                            let left = until.saturating_duration_since(now);
                            self.work
                                .wait_timeout(q, left)
                                .unwrap_or_else(|e| e.into_inner())
                                .0
                        }
                    };
                };
                q.holding = false;
                if take == q.pending.len() {
                    q.urgent = false;
                    q.due = None;
                    if q.pending.is_empty() && !q.rewrite {
                        if q.stop {
                            return; // everything written
                        }
                        continue;
                    }
                    std::mem::swap(&mut q.pending, &mut taken);
                } else {
                    // The rest waits for partners; `urgent`/`due` stay as they were for it.
                    taken.extend(q.pending.drain(..take));
                }
                let hi = q.pending.first().map_or(q.issued, |s| s.ticket - 1);
                for s in &mut taken {
                    if s.awaiting_since.is_some() {
                        q.awaiting -= 1;
                    }
                    if s.links.capacity() > 0 {
                        let mut links = std::mem::take(&mut s.links);
                        if q.spare_links.len() < SPARE_KEPT {
                            links.clear();
                            q.spare_links.push(links);
                        }
                    }
                }
                (hi, std::mem::take(&mut q.rewrite))
            };
            let lo = self.finished.load(Ordering::Acquire) + 1;
            let mut shards: u64 = 0;
            let result = self.write_group(&mut taken, rewrite, &mut shards, &mut emptied);
            let mut q = lock(&self.queue);
            for mut ops in emptied.drain(..) {
                if q.spare.len() < SPARE_KEPT && ops.capacity() <= SPARE_MAX_OPS {
                    ops.clear();
                    q.spare.push(ops);
                }
            }
            match result {
                Ok(()) => self.durable.store(hi, Ordering::Release),
                Err(e) => {
                    q.failures.push_back((lo, hi, e));
                    while q.failures.len() > FAILURES_KEPT {
                        q.failures.pop_front();
                    }
                }
            }
            // SeqCst: pairs with a shard parking (its `sleeping` flag, then this), see `Shard::run`.
            self.finished.store(hi, Ordering::SeqCst);
            drop(q);
            self.progress.notify_all();
            let notify = lock(&self.notify);
            for (i, n) in notify.iter().enumerate() {
                if shards & (1 << i.min(63)) != 0 {
                    if let Some(n) = n {
                        n();
                    }
                }
            }
        }
    }

    /// How many of the pending submissions (from the front) to write now: all of them,
    /// unless a batch awaits a partner that has not arrived (see `pairing`), and then the
    /// longest prefix that splits no pair, or none while the oldest waiting batch is within
    /// [`PAIR_WAIT`] (`hold_until` is set to when that ends). Everything on shutdown.
    fn writable(&self, q: &mut Queue, now: Instant, hold_until: &mut Option<Instant>) -> usize {
        *hold_until = None;
        if q.awaiting == 0 || q.stop {
            return q.pending.len();
        }
        let take = pairing::closed_prefix(&q.pending);
        if take > 0 || q.pending.is_empty() {
            return take;
        }
        let since = q.pending[0].awaiting_since.unwrap_or(now);
        let until = since + PAIR_WAIT;
        if now >= until {
            // Past the cap: written as it is (the acknowledgements still wait for every part).
            return q.pending.len();
        }
        *hold_until = Some(until);
        0
    }

    /// Resolves and writes the submissions in `taken` (emptying it) as one group.
    fn write_group(
        &self,
        taken: &mut Vec<Submission>,
        force_rewrite: bool,
        shards: &mut u64,
        emptied: &mut Vec<Vec<BatchOp>>,
    ) -> Result<(), StoreError> {
        let mut w = lock(&self.writer);
        w.find_cancelling_pairs(taken);
        let Writer {
            mirror,
            deleted,
            skipped,
            ops,
            buf,
            resync,
            stats,
        } = &mut *w;
        ops.clear();
        buf.clear();
        let keep_ops = self.keep_ops;
        let batches = taken.len() as u64;
        for mut sub in taken.drain(..) {
            debug_assert!(sub.ticket > 0);
            *shards |= 1 << sub.shard.min(63);
            let mut emit = |m: &mut Mirror, op: Op| {
                let at = buf.len();
                codec::put_op(buf, &op);
                let size = buf.len() - at;
                if keep_ops {
                    ops.push(op.clone());
                }
                m.apply(op, size);
            };
            for bop in sub.ops.drain(..) {
                if !deleted.is_empty() && cancelled(&bop, mirror, deleted, skipped) {
                    continue;
                }
                mirror.resolve(bop, &mut emit);
            }
            emptied.push(sub.ops);
        }
        let due = stats.disk_bytes > self.opts.compact_min_bytes
            && stats.disk_bytes > mirror.live_bytes.saturating_mul(self.opts.compact_ratio);
        let rewrite = *resync || force_rewrite || due;
        let sync = self.opts.sync == SyncPolicy::EveryBatch;
        let mut engine = lock(&self.engine);
        let result = if rewrite {
            // A rewrite writes the mirror, which includes this group: its ops are covered.
            engine.rewrite(mirror)
        } else if buf.is_empty() {
            Ok(())
        } else {
            engine.append(ops, buf, sync)
        };
        stats.disk_bytes = engine.disk_bytes();
        drop(engine);
        stats.live_bytes = mirror.live_bytes;
        if result.is_ok() && !sync && !rewrite && !buf.is_empty() {
            self.unsynced.store(true, Ordering::Release);
        }
        match &result {
            Ok(()) => {
                if rewrite {
                    *resync = false;
                    stats.compactions += 1;
                }
                if !buf.is_empty() || rewrite {
                    stats.groups += 1;
                }
                stats.batches += batches;
            }
            Err(e) => {
                log::error!("{e}");
                *resync = true;
            }
        }
        // The copies of operations are not needed past the write (they hold payloads).
        ops.clear();
        result
    }

    pub(super) fn outcome(&self, ticket: u64) -> Option<Result<(), StoreError>> {
        if self.durable.load(Ordering::Acquire) >= ticket {
            return Some(Ok(()));
        }
        if self.finished.load(Ordering::Acquire) < ticket {
            return None;
        }
        let q = lock(&self.queue);
        // Read again under the lock: a rewrite may have made it durable meanwhile.
        if self.durable.load(Ordering::Acquire) >= ticket {
            return Some(Ok(()));
        }
        let e = q
            .failures
            .iter()
            .rev()
            .find(|(lo, hi, _)| (*lo..=*hi).contains(&ticket))
            .map(|(_, _, e)| e.clone())
            .unwrap_or_else(|| StoreError::Backend {
                path: PathBuf::new(),
                reason: "an earlier write failed".into(),
            });
        Some(Err(e))
    }
}
