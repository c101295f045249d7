//! What every backend shares: the [`Engine`] interface, and [`Core`], the store the broker
//! holds (open and replay, submit, progress, shutdown), built on the in-memory mirror of the
//! live state (`mirror`) and the writer thread's group commit (`writer`).
//!
//! # The writer thread
//! Shards never wait for the disk. [`Store::submit`] only moves a batch's operations into the
//! queue and returns a ticket (under a lock held for a `Vec` swap); one writer thread takes
//! everything queued, resolves it against the mirror, writes it as one frame with one
//! `fdatasync`, and then publishes its progress in two counters: `finished` (every ticket up
//! to it was written or failed) and `durable` (every ticket up to it is on disk). It wakes the
//! shards whose batches it wrote. While it syncs, the shards go on reading, routing and
//! queueing the next group, so the disk's latency overlaps the CPU work instead of adding to
//! it (with the old leader/follower commit, both shards stopped for every fsync).
//!
//! Lock order: `queue` is never held while taking `writer` or `engine`; `writer` may be held
//! while taking `engine`. The flusher thread (interval policy) takes only `engine`.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::codec::Op;
use super::mirror::Mirror;
use super::pairing::Link;
use super::writer::{lock, Inner, Queue, Submission, Writer, QOS1_GRACE};
use super::{Batch, Options, Recovered, Store, StoreError, StoreStats, SyncPolicy};

/// A storage engine: persists operations that the mirror has already applied.
pub(crate) trait Engine: Send + 'static {
    /// Feeds every stored operation to `f` (with its approximate size); returns descriptions of
    /// what had to be dropped (a torn tail).
    fn replay(&mut self, f: &mut dyn FnMut(Op, usize)) -> Result<Vec<String>, StoreError>;
    /// Writes one group: `ops`, also encoded as `encoded` (one frame payload).
    fn append(&mut self, ops: &[Op], encoded: &[u8], sync: bool) -> Result<(), StoreError>;
    /// Makes everything appended durable.
    fn sync(&mut self) -> Result<(), StoreError>;
    /// Replaces the whole store with the live state of `mirror`, durably.
    fn rewrite(&mut self, mirror: &Mirror) -> Result<(), StoreError>;
    /// Bytes on disk.
    fn disk_bytes(&self) -> u64;
    /// True if an `Os` policy still needs a background sync (redb keeps non-durable commits
    /// in memory only).
    fn os_needs_flusher(&self) -> bool {
        false
    }
    /// True if [`Engine::append`] reads `ops` (else only `encoded` is kept).
    fn wants_ops(&self) -> bool {
        true
    }
}

/// A shard's wake-up, called by the writer after it finished a group holding that shard's
/// batch.
pub(crate) type Notify = Box<dyn Fn() + Send + Sync>;

/// Background sync for `SyncPolicy::Interval`.
struct Flusher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// A store: the mirror, the writer thread, and one engine.
pub(crate) struct Core<E: Engine> {
    dir: PathBuf,
    inner: Arc<Inner<E>>,
    writer_thread: Option<JoinHandle<()>>,
    flusher: Option<Flusher>,
    dropped_at_open: Vec<String>,
}

impl<E: Engine> Core<E> {
    pub(crate) fn open(mut engine: E, dir: &Path, opts: Options) -> Result<Core<E>, StoreError> {
        let mut mirror = Mirror::default();
        mirror.next_msg_id = 1;
        let mut dropped = engine.replay(&mut |op, size| mirror.apply(op, size))?;
        mirror.finish_replay(&mut dropped);
        let stats = StoreStats {
            disk_bytes: engine.disk_bytes(),
            live_bytes: mirror.live_bytes,
            ..StoreStats::default()
        };
        let keep_ops = engine.wants_ops();
        let engine = Arc::new(Mutex::new(engine));
        let unsynced = Arc::new(AtomicBool::new(false));
        let interval = match opts.sync {
            SyncPolicy::Interval(d) => Some(d),
            SyncPolicy::Os if lock(&engine).os_needs_flusher() => Some(Duration::from_secs(1)),
            _ => None,
        };
        let flusher = interval.map(|every| {
            let stop = Arc::new(AtomicBool::new(false));
            let (e, u, s) = (engine.clone(), unsynced.clone(), stop.clone());
            let thread = std::thread::Builder::new()
                .name("midge-store-sync".into())
                .spawn(move || {
                    while !s.load(Ordering::Acquire) {
                        std::thread::park_timeout(every.max(Duration::from_millis(1)));
                        if u.swap(false, Ordering::AcqRel) {
                            if let Err(err) = lock(&e).sync() {
                                log::error!("{err}");
                                u.store(true, Ordering::Release);
                            }
                        }
                    }
                })
                .expect("spawning the store sync thread");
            Flusher {
                stop,
                thread: Some(thread),
            }
        });
        let inner = Arc::new(Inner {
            opts,
            queue: Mutex::new(Queue {
                pending: Vec::new(),
                spare: Vec::new(),
                spare_links: Vec::new(),
                awaiting: 0,
                holding: false,
                issued: 0,
                rewrite: false,
                urgent: false,
                due: None,
                stop: false,
                failures: VecDeque::new(),
            }),
            work: Condvar::new(),
            progress: Condvar::new(),
            finished: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            writer: Mutex::new(Writer {
                mirror,
                deleted: HashSet::new(),
                skipped: HashSet::new(),
                ops: Vec::new(),
                buf: Vec::new(),
                resync: false,
                stats,
            }),
            engine,
            unsynced,
            keep_ops,
            notify: Mutex::new(Vec::new()),
        });
        let writer_thread = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("midge-store-writer".into())
                .spawn(move || {
                    // A writer that died would leave every held acknowledgement waiting for
                    // ever; a crash at least restarts from the durable state.
                    let run = std::panic::AssertUnwindSafe(|| inner.run_writer());
                    if std::panic::catch_unwind(run).is_err() {
                        log::error!("The store's writer thread failed: stopping.");
                        std::process::abort();
                    }
                })
                .map_err(|e| StoreError::io(dir, "starting the store writer thread", e))?
        };
        Ok(Core {
            dir: dir.to_path_buf(),
            inner,
            writer_thread: Some(writer_thread),
            flusher,
            dropped_at_open: dropped,
        })
    }
}

impl<E: Engine> Store for Core<E> {
    fn submit(&self, shard: usize, batch: &mut Batch) -> u64 {
        let mut q = lock(&self.inner.queue);
        if batch.is_empty() {
            return q.issued;
        }
        q.issued += 1;
        let ticket = q.issued;
        let fresh = q.spare.pop().unwrap_or_default();
        let ops = std::mem::replace(&mut batch.ops, fresh);
        let (links, awaiting_since) = if batch.links.is_empty() {
            (Vec::new(), None)
        } else {
            let fresh = q.spare_links.pop().unwrap_or_default();
            let links = std::mem::replace(&mut batch.links, fresh);
            let awaits = links.iter().any(|l| matches!(l, Link::Awaits { .. }));
            q.awaiting += usize::from(awaits);
            (links, awaits.then(Instant::now))
        };
        // A partner the writer holds a batch for.
        let partner = q.holding && !links.is_empty();
        q.pending.push(Submission {
            ticket,
            shard,
            ops,
            links,
            awaiting_since,
        });
        // A batch of only QoS 1 deliveries may wait a little: its subscribers' acknowledgements
        // usually arrive meanwhile, and then nothing of it needs writing (see `QOS1_GRACE`).
        let wake = if batch.urgent && batch.only_qos1 {
            let first = q.due.is_none() && !q.urgent;
            if first {
                q.due = Some(Instant::now() + QOS1_GRACE);
            }
            first
        } else {
            let wake = batch.urgent && !q.urgent;
            q.urgent |= batch.urgent;
            wake
        };
        batch.reset_flags();
        drop(q);
        if wake || partner {
            self.inner.work.notify_one();
        }
        ticket
    }

    fn nudge(&self) {
        let mut q = lock(&self.inner.queue);
        if !q.pending.is_empty() && !q.urgent {
            q.urgent = true;
            drop(q);
            self.inner.work.notify_one();
        }
    }

    fn finished(&self) -> u64 {
        self.inner.finished.load(Ordering::SeqCst)
    }

    fn durable(&self) -> u64 {
        self.inner.durable.load(Ordering::Acquire)
    }

    fn wait(&self, ticket: u64) -> Result<(), StoreError> {
        let mut q = lock(&self.inner.queue);
        if self.inner.finished.load(Ordering::Acquire) < ticket && !q.urgent {
            // The ticket may be a lazy one: it must be written now.
            q.urgent = true;
            self.inner.work.notify_one();
        }
        while self.inner.finished.load(Ordering::Acquire) < ticket {
            q = self
                .inner
                .progress
                .wait(q)
                .unwrap_or_else(|e| e.into_inner());
        }
        drop(q);
        self.inner.outcome(ticket).unwrap_or(Ok(()))
    }

    fn request_rewrite(&self) -> u64 {
        let mut q = lock(&self.inner.queue);
        q.rewrite = true;
        // A ticket of its own, so that waiting for it waits for the rewrite.
        q.issued += 1;
        let ticket = q.issued;
        drop(q);
        self.inner.work.notify_one();
        ticket
    }

    fn set_notify(&self, shard: usize, notify: Notify) {
        let mut n = lock(&self.inner.notify);
        if n.len() <= shard {
            n.resize_with(shard + 1, || None);
        }
        n[shard] = Some(notify);
    }

    fn load(&self) -> Result<Recovered, StoreError> {
        let w = lock(&self.inner.writer);
        let mut r = w.mirror.recovered();
        let mut dropped = self.dropped_at_open.clone();
        dropped.append(&mut r.dropped);
        r.dropped = dropped;
        Ok(r)
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.inner.unsynced.store(false, Ordering::Release);
        lock(&self.inner.engine).sync()
    }

    fn stats(&self) -> StoreStats {
        lock(&self.inner.writer).stats
    }

    fn dir(&self) -> &Path {
        &self.dir
    }
}

impl<E: Engine> Drop for Core<E> {
    fn drop(&mut self) {
        lock(&self.inner.queue).stop = true;
        self.inner.work.notify_all();
        if let Some(t) = self.writer_thread.take() {
            let _ = t.join();
        }
        if let Some(f) = &mut self.flusher {
            f.stop.store(true, Ordering::Release);
            if let Some(t) = f.thread.take() {
                t.thread().unpark();
                let _ = t.join();
            }
        }
        if self.inner.opts.sync != SyncPolicy::EveryBatch {
            if let Err(e) = lock(&self.inner.engine).sync() {
                log::error!("{e}");
            }
        }
    }
}
