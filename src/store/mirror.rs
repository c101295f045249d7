//! The in-memory mirror of the store's live state, and the resolution of a [`Batch`]'s
//! operations into the records the engines write (message ids, reference counts, retained
//! versions). The writer thread owns it (`Writer::mirror`); replay rebuilds it at open.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::codec::{self, Op, QueuedBody};
use super::{
    wall_from_instant, BatchOp, Recovered, RecoveredSession, StoredDelivery, StoredSession,
};
use crate::message::{Delivery, SharedMessage};
use crate::protocol::ByteStr;

#[derive(Debug, Clone)]
struct MsgEntry {
    msg: SharedMessage,
    expires_ms: Option<u64>,
    refs: u32,
    size: u32,
}

#[derive(Debug, Clone, Default)]
pub(super) struct Client {
    session: Option<(StoredSession, u32)>,
    pub(super) queued: BTreeMap<u64, (QueuedBody, u32)>,
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
    pub(super) clients: HashMap<ByteStr, Client>,
    msgs: HashMap<u64, MsgEntry>,
    /// `Arc` address of a stored message -> its id (the entry holds a clone, so the address
    /// cannot be reused while it is here).
    by_ptr: HashMap<usize, u64>,
    pub(super) next_msg_id: u64,
    pub(super) live_bytes: u64,
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
    pub(super) fn resolve(&mut self, bop: BatchOp, emit: &mut impl FnMut(&mut Mirror, Op)) {
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
    pub(super) fn finish_replay(&mut self, dropped: &mut Vec<String>) {
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

    pub(super) fn recovered(&self) -> Recovered {
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
