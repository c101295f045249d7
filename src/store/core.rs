//! What every backend shares: the in-memory mirror of the live state, the resolution of a
//! [`Batch`] into low-level operations (message ids, refcounts), and group commit.
//!
//! # The writer thread
//! Shards never wait for the disk. [`Store::submit`] only moves a batch's operations into the
//! queue and returns a ticket (under a lock held for a `Vec` swap); one writer thread takes
//! everything queued, resolves it against the mirror, writes it as one frame with one
//! `fdatasync`, and then publishes its progress in two counters: `finished` (every ticket up
//! to it was written or failed) and `durable` (every ticket up to it is on disk). It wakes the
//! shards whose batches it wrote. While it syncs, the shards go on reading, routing and
//! queueing the next group, so the disk's latency overlaps the CPU work instead of adding to
//! it (issue 6: with the old leader/follower commit, both shards stopped for every fsync).
//!
//! Lock order: `queue` is never held while taking `writer` or `engine`; `writer` may be held
//! while taking `engine`. The flusher thread (interval policy) takes only `engine`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::codec::{self, Op, QueuedBody};
use super::pairing::{self, Link, Linked, PAIR_WAIT};
use super::{
    wall_from_instant, Batch, BatchOp, Options, Recovered, RecoveredSession, Store, StoreError,
    StoreStats, StoredDelivery, StoredSession, SyncPolicy,
};
use crate::message::{Delivery, SharedMessage};
use crate::protocol::ByteStr;

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

#[derive(Debug, Clone)]
struct MsgEntry {
    msg: SharedMessage,
    expires_ms: Option<u64>,
    refs: u32,
    size: u32,
}

#[derive(Debug, Clone, Default)]
struct Client {
    session: Option<(StoredSession, u32)>,
    queued: BTreeMap<u64, (QueuedBody, u32)>,
    qos2: BTreeSet<u16>,
}

impl Client {
    fn is_empty(&self) -> bool {
        self.session.is_none() && self.queued.is_empty() && self.qos2.is_empty()
    }
}

/// Retained topics whose last version the mirror remembers at most.
const RETAINED_VERSIONS: usize = 1 << 16;

/// Size counted for a qos2 id.
const QOS2_SIZE: u64 = 16;

/// The live state, as the store holds it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Mirror {
    retained: HashMap<ByteStr, (SharedMessage, Option<u64>, u32)>,
    /// The newest version of each retained topic's change resolved so far (runtime only:
    /// the log holds the changes in version order, so replay needs none). Bounded: cleared
    /// past [`RETAINED_VERSIONS`] topics, which only forgets what a race between two shards
    /// within one write would need.
    retained_versions: HashMap<ByteStr, u64>,
    clients: HashMap<ByteStr, Client>,
    msgs: HashMap<u64, MsgEntry>,
    /// `Arc` address of a stored message -> its id (the entry holds a clone, so the address
    /// cannot be reused while it is here).
    by_ptr: HashMap<usize, u64>,
    next_msg_id: u64,
    live_bytes: u64,
    /// Notes from replay (queued entries whose message is missing).
    notes: Vec<String>,
}

fn ptr(m: &SharedMessage) -> usize {
    Arc::as_ptr(m) as usize
}

impl Mirror {
    fn client(&mut self, c: &ByteStr) -> &mut Client {
        self.clients.entry(c.clone()).or_default()
    }

    fn tidy(&mut self, c: &ByteStr) {
        if self.clients.get(c).is_some_and(Client::is_empty) {
            self.clients.remove(c);
        }
    }

    fn unref(&mut self, id: u64) {
        if let Some(m) = self.msgs.get_mut(&id) {
            m.refs = m.refs.saturating_sub(1);
        }
    }

    /// Applies one operation (replay and commit alike). `size` is its encoded size.
    pub(crate) fn apply(&mut self, op: Op, size: usize) {
        let size32 = size as u32;
        match op {
            Op::PutRetained {
                topic,
                msg,
                expires_ms,
            } => {
                if let Some((_, _, old)) = self.retained.insert(topic, (msg, expires_ms, size32)) {
                    self.live_bytes -= u64::from(old);
                }
                self.live_bytes += size as u64;
            }
            Op::DelRetained { topic } => {
                if let Some((_, _, old)) = self.retained.remove(&topic) {
                    self.live_bytes -= u64::from(old);
                }
            }
            Op::PutSession { client, session } => {
                if let Some((_, old)) = self.client(&client).session.replace((*session, size32)) {
                    self.live_bytes -= u64::from(old);
                }
                self.live_bytes += size as u64;
            }
            Op::DelSession { client } => {
                if let Some(c) = self.clients.get_mut(&client) {
                    if let Some((_, old)) = c.session.take() {
                        self.live_bytes -= u64::from(old);
                    }
                }
                self.tidy(&client);
            }
            Op::PutMsg {
                id,
                msg,
                expires_ms,
            } => {
                let p = ptr(&msg);
                let refs = match self.msgs.remove(&id) {
                    Some(old) => {
                        self.by_ptr.remove(&ptr(&old.msg));
                        self.live_bytes -= u64::from(old.size);
                        old.refs
                    }
                    None => 0,
                };
                self.by_ptr.insert(p, id);
                self.msgs.insert(
                    id,
                    MsgEntry {
                        msg,
                        expires_ms,
                        refs,
                        size: size32,
                    },
                );
                self.live_bytes += size as u64;
                self.next_msg_id = self.next_msg_id.max(id + 1);
            }
            Op::DelMsg { id } => {
                if let Some(old) = self.msgs.remove(&id) {
                    self.by_ptr.remove(&ptr(&old.msg));
                    self.live_bytes -= u64::from(old.size);
                }
            }
            Op::PutQueued { client, seq, body } => {
                let id = body.msg_id;
                if !self.msgs.contains_key(&id) {
                    self.notes.push(format!(
                        "queued message {seq} of client '{client}' refers to message {id}, \
                         which is not stored: dropped"
                    ));
                    return;
                }
                let old = self.client(&client).queued.insert(seq, (body, size32));
                if let Some((old, old_size)) = old {
                    self.live_bytes -= u64::from(old_size);
                    self.unref(old.msg_id);
                }
                if let Some(m) = self.msgs.get_mut(&id) {
                    m.refs += 1;
                }
                self.live_bytes += size as u64;
            }
            Op::DelQueued { client, seq } => {
                let old = self
                    .clients
                    .get_mut(&client)
                    .and_then(|c| c.queued.remove(&seq));
                if let Some((old, old_size)) = old {
                    self.live_bytes -= u64::from(old_size);
                    self.unref(old.msg_id);
                }
                self.tidy(&client);
            }
            Op::PutQos2 { client, packet_id } => {
                if self.client(&client).qos2.insert(packet_id) {
                    self.live_bytes += QOS2_SIZE;
                }
            }
            Op::DelQos2 { client, packet_id } => {
                if let Some(c) = self.clients.get_mut(&client) {
                    if c.qos2.remove(&packet_id) {
                        self.live_bytes -= QOS2_SIZE;
                    }
                }
                self.tidy(&client);
            }
        }
    }

    /// Every live record as an operation, messages first (what a rewrite writes).
    pub(crate) fn for_each_op(&self, mut f: impl FnMut(Op)) {
        for (&id, m) in &self.msgs {
            f(Op::PutMsg {
                id,
                msg: m.msg.clone(),
                expires_ms: m.expires_ms,
            });
        }
        for (topic, (msg, expires_ms, _)) in &self.retained {
            f(Op::PutRetained {
                topic: topic.clone(),
                msg: msg.clone(),
                expires_ms: *expires_ms,
            });
        }
        for (client, c) in &self.clients {
            if let Some((s, _)) = &c.session {
                f(Op::PutSession {
                    client: client.clone(),
                    session: Box::new(s.clone()),
                });
            }
            for (&seq, (body, _)) in &c.queued {
                f(Op::PutQueued {
                    client: client.clone(),
                    seq,
                    body: body.clone(),
                });
            }
            for &packet_id in &c.qos2 {
                f(Op::PutQos2 {
                    client: client.clone(),
                    packet_id,
                });
            }
        }
    }

    /// Turns one batch operation into operations, applying each (so that the next batch
    /// operation sees its effect) and handing it to `out` with its encoding.
    fn resolve(&mut self, bop: BatchOp, emit: &mut impl FnMut(&mut Mirror, Op)) {
        match bop {
            BatchOp::PutRetained(msg, version) => {
                if self.stale_retained(&msg.topic, version) {
                    return;
                }
                let expires_ms = msg.expires_at.map(|t| codec::wall_ms(wall_from_instant(t)));
                emit(
                    self,
                    Op::PutRetained {
                        topic: msg.topic.clone(),
                        msg,
                        expires_ms,
                    },
                );
            }
            BatchOp::DelRetained(topic, version) => {
                if self.stale_retained(&topic, version) {
                    return;
                }
                if self.retained.contains_key(&topic) {
                    emit(self, Op::DelRetained { topic });
                }
            }
            BatchOp::PutSession(client, session) => emit(self, Op::PutSession { client, session }),
            BatchOp::DelSession(client) => {
                let Some(c) = self.clients.get(&client) else {
                    return;
                };
                let seqs: Vec<u64> = c.queued.keys().copied().collect();
                let ids: Vec<u16> = c.qos2.iter().copied().collect();
                let had_session = c.session.is_some();
                for seq in seqs {
                    self.resolve(BatchOp::DelQueued(client.clone(), seq), emit);
                }
                for packet_id in ids {
                    emit(
                        self,
                        Op::DelQos2 {
                            client: client.clone(),
                            packet_id,
                        },
                    );
                }
                if had_session {
                    emit(self, Op::DelSession { client });
                }
            }
            BatchOp::PutQueued(client, seq, d, flow) => {
                let msg_id = match self.by_ptr.get(&ptr(&d.msg)) {
                    Some(&id) => id,
                    None => {
                        let id = self.next_msg_id.max(1);
                        let expires_ms = d
                            .msg
                            .expires_at
                            .map(|t| codec::wall_ms(wall_from_instant(t)));
                        emit(
                            self,
                            Op::PutMsg {
                                id,
                                msg: d.msg.clone(),
                                expires_ms,
                            },
                        );
                        id
                    }
                };
                let old = self
                    .clients
                    .get(&client)
                    .and_then(|c| c.queued.get(&seq))
                    .map(|(b, _)| b.msg_id);
                let Delivery {
                    qos,
                    retain,
                    subscription_ids,
                    shared,
                    ..
                } = d;
                emit(
                    self,
                    Op::PutQueued {
                        client,
                        seq,
                        body: QueuedBody {
                            msg_id,
                            qos,
                            retain,
                            subscription_ids,
                            shared,
                            flow,
                        },
                    },
                );
                if let Some(old) = old {
                    self.release(old, emit);
                }
            }
            BatchOp::UpdateQueued(client, seq, flow) => {
                let Some((body, _)) = self.clients.get(&client).and_then(|c| c.queued.get(&seq))
                else {
                    return;
                };
                if body.flow == flow {
                    return;
                }
                let mut body = body.clone();
                body.flow = flow;
                emit(self, Op::PutQueued { client, seq, body });
            }
            BatchOp::DelQueued(client, seq) => {
                let Some((body, _)) = self.clients.get(&client).and_then(|c| c.queued.get(&seq))
                else {
                    return;
                };
                let id = body.msg_id;
                emit(self, Op::DelQueued { client, seq });
                self.release(id, emit);
            }
            BatchOp::PutQos2(client, packet_id) => {
                if !self
                    .clients
                    .get(&client)
                    .is_some_and(|c| c.qos2.contains(&packet_id))
                {
                    emit(self, Op::PutQos2 { client, packet_id });
                }
            }
            BatchOp::DelQos2(client, packet_id) => {
                if self
                    .clients
                    .get(&client)
                    .is_some_and(|c| c.qos2.contains(&packet_id))
                {
                    emit(self, Op::DelQos2 { client, packet_id });
                }
            }
        }
    }

    /// True if a retained change of `topic` with `version` is older than one already
    /// resolved (and must be dropped); records it otherwise.
    fn stale_retained(&mut self, topic: &ByteStr, version: u64) -> bool {
        if version == 0 {
            return false;
        }
        if let Some(&seen) = self.retained_versions.get(topic) {
            if seen > version {
                return true;
            }
        }
        if self.retained_versions.len() >= RETAINED_VERSIONS {
            self.retained_versions.clear();
        }
        self.retained_versions.insert(topic.clone(), version);
        false
    }

    /// Deletes message `id` once nothing refers to it.
    fn release(&mut self, id: u64, emit: &mut impl FnMut(&mut Mirror, Op)) {
        if self.msgs.get(&id).is_some_and(|m| m.refs == 0) {
            emit(self, Op::DelMsg { id });
        }
    }

    /// Drops messages nothing refers to (after replay) and reports orphaned queues.
    fn finish_replay(&mut self, dropped: &mut Vec<String>) {
        dropped.append(&mut self.notes);
        let unused: Vec<u64> = self
            .msgs
            .iter()
            .filter(|(_, m)| m.refs == 0)
            .map(|(&id, _)| id)
            .collect();
        for id in unused {
            self.apply(Op::DelMsg { id }, 0);
        }
    }

    fn recovered(&self) -> Recovered {
        let mut retained: Vec<SharedMessage> =
            self.retained.values().map(|(m, _, _)| m.clone()).collect();
        retained.sort_by(|a, b| a.topic.cmp(&b.topic));
        let mut sessions = Vec::new();
        let mut dropped = Vec::new();
        for (client, c) in &self.clients {
            let Some((session, _)) = &c.session else {
                if !c.queued.is_empty() || !c.qos2.is_empty() {
                    dropped.push(format!(
                        "client '{client}': {} queued message(s) and {} QoS 2 id(s) without a \
                         session: ignored",
                        c.queued.len(),
                        c.qos2.len()
                    ));
                }
                continue;
            };
            let queued = c
                .queued
                .iter()
                .filter_map(|(&seq, (b, _))| {
                    let m = self.msgs.get(&b.msg_id)?;
                    Some((
                        seq,
                        StoredDelivery {
                            delivery: Delivery {
                                msg: m.msg.clone(),
                                qos: b.qos,
                                retain: b.retain,
                                subscription_ids: b.subscription_ids.clone(),
                                shared: b.shared.clone(),
                            },
                            flow: b.flow,
                        },
                    ))
                })
                .collect();
            sessions.push(RecoveredSession {
                client_id: client.clone(),
                session: session.clone(),
                queued,
                incoming_qos2: c.qos2.iter().copied().collect(),
            });
        }
        sessions.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        Recovered {
            retained,
            sessions,
            dropped,
        }
    }
}

/// A shard's wake-up, called by the writer after it finished a group holding that shard's
/// batch.
pub(crate) type Notify = Box<dyn Fn() + Send + Sync>;

/// One submitted batch.
struct Submission {
    ticket: u64,
    shard: usize,
    ops: Vec<BatchOp>,
    /// Its partners on other shards (see `pairing`); empty for most batches.
    links: Vec<Link>,
    /// When it was submitted, if it awaits a partner.
    awaiting_since: Option<Instant>,
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
struct Queue {
    pending: Vec<Submission>,
    /// Emptied operation vectors, handed back to submitters (no allocation per turn).
    spare: Vec<Vec<BatchOp>>,
    /// Emptied link vectors, likewise.
    spare_links: Vec<Vec<Link>>,
    /// Pending submissions that await a partner (0: no pairing to check).
    awaiting: usize,
    /// The writer holds pending batches until their partners arrive: a submission that
    /// covers one wakes it.
    holding: bool,
    /// The last ticket given out.
    issued: u64,
    /// A rewrite was asked for ([`Store::compact`], or a retry after a failed write).
    rewrite: bool,
    /// Something pending must be written now (not only lazy deletes, `Batch::holds_output`).
    urgent: bool,
    /// Pending QoS 1 deliveries must be written by then (see [`QOS1_GRACE`]).
    due: Option<Instant>,
    stop: bool,
    /// Recent failed tickets (inclusive ranges) and their error, for [`Store::wait`].
    failures: VecDeque<(u64, u64, StoreError)>,
}

/// The writer's own state, behind `Core::writer`.
struct Writer {
    mirror: Mirror,
    /// Queued entries deleted in the group being written, and those whose put was skipped
    /// (see [`Writer::find_cancelling_pairs`]); reused.
    deleted: HashSet<EntryKey>,
    skipped: HashSet<EntryKey>,
    /// The group being written: its operations and their encoding (reused).
    ops: Vec<Op>,
    buf: Vec<u8>,
    /// The disk is behind the mirror (a write failed): the next write is a full rewrite.
    resync: bool,
    stats: StoreStats,
}

/// Background sync for `SyncPolicy::Interval`.
struct Flusher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Shared by the shards (through [`Core`]) and the writer thread.
struct Inner<E: Engine> {
    opts: Options,
    queue: Mutex<Queue>,
    /// The writer waits here for work.
    work: Condvar,
    /// Blocking callers ([`Store::wait`]) wait here for progress.
    progress: Condvar,
    finished: AtomicU64,
    durable: AtomicU64,
    writer: Mutex<Writer>,
    engine: Arc<Mutex<E>>,
    /// Set when a write was not synced (for the flusher).
    unsynced: Arc<AtomicBool>,
    keep_ops: bool,
    notify: Mutex<Vec<Option<Notify>>>,
}

/// A store: the mirror, the writer thread, and one engine.
pub(crate) struct Core<E: Engine> {
    dir: PathBuf,
    inner: Arc<Inner<E>>,
    writer_thread: Option<JoinHandle<()>>,
    flusher: Option<Flusher>,
    dropped_at_open: Vec<String>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long a batch of only QoS 1 deliveries may wait before the writer takes it. A delivery
/// to an online subscriber is usually acknowledged within this time, and its publisher's
/// PUBACK waits for the acknowledgement or the write, whichever comes first
/// (`shard::durable`); the writer then drops the delivery's put and delete as a pair
/// ([`Writer::find_cancelling_pairs`]) instead of writing and syncing both. Only deliveries
/// to slow or offline subscribers pay it, as added latency of their publishers' PUBACKs.
const QOS1_GRACE: Duration = Duration::from_millis(1);

/// Recent failures kept for [`Store::wait`] (older failed tickets read as plain failures
/// through `durable`, without the error text).
const FAILURES_KEPT: usize = 64;
/// Emptied operation vectors kept for reuse.
const SPARE_KEPT: usize = 16;
/// A spare larger than this (operations) is freed: a burst must not pin its memory.
const SPARE_MAX_OPS: usize = 1 << 16;

impl<E: Engine> Core<E> {
    pub(crate) fn open(mut engine: E, dir: &Path, opts: Options) -> Result<Core<E>, StoreError> {
        let mut mirror = Mirror {
            next_msg_id: 1,
            ..Mirror::default()
        };
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
    fn run_writer(&self) {
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

    fn outcome(&self, ticket: u64) -> Option<Result<(), StoreError>> {
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
