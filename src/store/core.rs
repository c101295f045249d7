//! What every backend shares: the in-memory mirror of the live state, the resolution of a
//! [`Batch`] into low-level operations (message ids, refcounts), and group commit.
//!
//! Lock order: `engine` may be taken while holding nothing or while holding `engine` only;
//! `state` is never held while waiting for `engine`, so the leader can write without blocking
//! the shards that queue batches for the next group.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::codec::{self, Op, QueuedBody};
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

/// Size counted for a qos2 id.
const QOS2_SIZE: u64 = 16;

/// The live state, as the store holds it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Mirror {
    retained: HashMap<ByteStr, (SharedMessage, Option<u64>, u32)>,
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
            BatchOp::PutRetained(msg) => {
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
            BatchOp::DelRetained(topic) => {
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

/// Group-commit state, behind `Core::state`.
struct State {
    mirror: Mirror,
    /// The group being filled: its operations and their encoding.
    ops: Vec<Op>,
    buf: Vec<u8>,
    batches_in_group: u64,
    /// Number of the group being filled; groups below `done` are finished.
    filling: u64,
    done: u64,
    leader: bool,
    /// Recent failed groups and their error.
    failures: VecDeque<(u64, StoreError)>,
    /// The disk is behind the mirror (a write failed): the next write is a full rewrite.
    resync: bool,
    /// A rewrite was asked for.
    force_rewrite: bool,
    stats: StoreStats,
}

/// Background sync for `SyncPolicy::Interval`.
struct Flusher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// A store: the mirror, group commit, and one engine.
pub(crate) struct Core<E: Engine> {
    dir: PathBuf,
    opts: Options,
    state: Mutex<State>,
    cond: Condvar,
    engine: Arc<Mutex<E>>,
    /// Set when a write was not synced (for the flusher).
    unsynced: Arc<AtomicBool>,
    flusher: Option<Flusher>,
    keep_ops: bool,
    dropped_at_open: Vec<String>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

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
        Ok(Core {
            dir: dir.to_path_buf(),
            opts,
            state: Mutex::new(State {
                mirror,
                ops: Vec::new(),
                buf: Vec::new(),
                batches_in_group: 0,
                filling: 1,
                done: 0,
                leader: false,
                failures: VecDeque::new(),
                resync: false,
                force_rewrite: false,
                stats,
            }),
            cond: Condvar::new(),
            engine,
            unsynced,
            flusher,
            keep_ops,
            dropped_at_open: dropped,
        })
    }

    /// Waits until group `mine` is written, leading the write if nobody is.
    fn finish<'a>(&'a self, mut st: MutexGuard<'a, State>, mine: u64) -> Result<(), StoreError> {
        loop {
            if st.done >= mine {
                return match st.failures.iter().find(|(g, _)| *g == mine) {
                    Some((_, e)) => Err(e.clone()),
                    None => Ok(()),
                };
            }
            if st.leader {
                st = self.cond.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // Lead: take the group being filled.
            st.leader = true;
            let group = st.filling;
            st.filling += 1;
            let ops = std::mem::take(&mut st.ops);
            let buf = std::mem::take(&mut st.buf);
            let batches = std::mem::take(&mut st.batches_in_group);
            let due = st.stats.disk_bytes > self.opts.compact_min_bytes
                && st.stats.disk_bytes
                    > st.mirror.live_bytes.saturating_mul(self.opts.compact_ratio);
            let rewrite = st.resync || st.force_rewrite || due;
            // A rewrite writes the mirror, which includes this group: its ops are covered.
            let snapshot = rewrite.then(|| st.mirror.clone());
            st.force_rewrite = false;
            drop(st);

            let sync = self.opts.sync == SyncPolicy::EveryBatch;
            let mut engine = lock(&self.engine);
            let result = match &snapshot {
                Some(m) => engine.rewrite(m),
                None if buf.is_empty() => Ok(()),
                None => engine.append(&ops, &buf, sync),
            };
            let disk_bytes = engine.disk_bytes();
            drop(engine);
            if result.is_ok() && !sync && snapshot.is_none() && !buf.is_empty() {
                self.unsynced.store(true, Ordering::Release);
            }

            st = lock(&self.state);
            st.leader = false;
            st.done = group;
            st.stats.disk_bytes = disk_bytes;
            st.stats.live_bytes = st.mirror.live_bytes;
            match result {
                Ok(()) => {
                    if snapshot.is_some() {
                        st.resync = false;
                        st.stats.compactions += 1;
                    }
                    if !buf.is_empty() || snapshot.is_some() {
                        st.stats.groups += 1;
                    }
                    st.stats.batches += batches;
                }
                Err(e) => {
                    log::error!("{e}");
                    st.resync = true;
                    st.failures.push_back((group, e));
                    while st.failures.len() > 64 {
                        st.failures.pop_front();
                    }
                }
            }
            self.cond.notify_all();
        }
    }
}

impl<E: Engine> Store for Core<E> {
    fn commit(&self, batch: &mut Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let keep_ops = self.keep_ops;
        let mut st = lock(&self.state);
        let State {
            mirror, ops, buf, ..
        } = &mut *st;
        let mut emit = |m: &mut Mirror, op: Op| {
            let at = buf.len();
            codec::put_op(buf, &op);
            let size = buf.len() - at;
            if keep_ops {
                ops.push(op.clone());
            }
            m.apply(op, size);
        };
        for bop in batch.ops.drain(..) {
            mirror.resolve(bop, &mut emit);
        }
        st.batches_in_group += 1;
        let mine = st.filling;
        self.finish(st, mine)
    }

    fn load(&self) -> Result<Recovered, StoreError> {
        let st = lock(&self.state);
        let mut r = st.mirror.recovered();
        let mut dropped = self.dropped_at_open.clone();
        dropped.append(&mut r.dropped);
        r.dropped = dropped;
        Ok(r)
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.unsynced.store(false, Ordering::Release);
        lock(&self.engine).sync()
    }

    fn compact(&self) -> Result<(), StoreError> {
        let mut st = lock(&self.state);
        st.force_rewrite = true;
        let mine = st.filling;
        self.finish(st, mine)
    }

    fn stats(&self) -> StoreStats {
        lock(&self.state).stats
    }

    fn dir(&self) -> &Path {
        &self.dir
    }
}

impl<E: Engine> Drop for Core<E> {
    fn drop(&mut self) {
        if let Some(f) = &mut self.flusher {
            f.stop.store(true, Ordering::Release);
            if let Some(t) = f.thread.take() {
                t.thread().unpark();
                let _ = t.join();
            }
        }
        if self.opts.sync != SyncPolicy::EveryBatch {
            if let Err(e) = lock(&self.engine).sync() {
                log::error!("{e}");
            }
        }
    }
}
