//! Session state: what the broker remembers about a client id between packets and, for a
//! persistent session (clean session 0), between connections.
//!
//! The state machine here is pure: it is given messages and acknowledgements and answers with
//! the packets to send. It does no I/O and never sees a socket, so the QoS flows are unit
//! tested without a network (see `tests.rs`) and the shard only moves bytes.
//!
//! Owned by the session's home shard; shard thread only.
//!
//! # Durability
//! A session with `durable` set (persistence on and a Session Expiry Interval above 0) writes
//! every change to what it owes the client into the shard's store [`Batch`]: each QoS 1/2
//! delivery gets its own sequence number (`seq`), stored when queued, updated when it goes in
//! flight or its QoS 2 flow moves on, deleted when acknowledged; incoming QoS 2 packet ids are
//! stored until PUBREL. The shard commits the batch once per loop turn, before it writes to
//! any socket (group commit), so the client never sees a packet id the store does not know.

mod ack;
mod answer;
mod flight;
mod incoming;
pub mod memory;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use crate::auth::ClientAcl;
use crate::message::Delivery;
use crate::protocol::{publish_encoded_len, ByteStr, ProtocolVersion, Publish, Will};
use crate::store::{wall_from_instant, Batch, StoredSession};

pub use answer::{Ack, Offer, Outgoing, PubRec, SendPublish};
pub use flight::{Inflight, Limits, Queued};
pub use incoming::PacketIdSet;

/// The session's records that the store persists too; defined below both (see
/// [`crate::record`]) and named here, where the shard and the handlers look for them.
pub use crate::record::{OutState, Subscription};

/// One session.
#[derive(Debug)]
pub struct Session {
    pub client_id: ByteStr,
    /// What the client may publish, subscribe to and receive (`acl_file`), fixed at CONNECT.
    pub acl: ClientAcl,
    /// Session Expiry Interval in seconds: 0 = the session ends with the connection (clean
    /// session in 3.x), `u32::MAX` = never (persistent 3.x session).
    pub expiry_interval: u32,
    /// While disconnected: when the session ends.
    pub expires_at: Option<Instant>,
    /// The subscriptions, by filter (to remove them from the index when the session ends).
    ///
    /// A `BTreeMap`: 24 bytes and no allocation while empty, where a `HashMap` takes 48 in
    /// every session (its hasher's keys among them); a session's own subscriptions are few,
    /// and routing never looks here (memory per connection).
    pub subscriptions: BTreeMap<ByteStr, Subscription>,
    /// Outgoing QoS 1/2 messages not yet fully acknowledged, in send order.
    pub inflight: VecDeque<Inflight>,
    /// Messages waiting for the window or for a reconnect. Only `offer`, `recovered` and
    /// `fill_window` change it, so that `queued_bytes` stays its payload total.
    pub queue: VecDeque<Queued>,
    /// Payload bytes of `queue` (for `max_queued_bytes`).
    queued_bytes: usize,
    /// Packet ids of incoming QoS 2 messages already delivered and awaiting PUBREL: a
    /// retransmitted PUBLISH with such an id is acknowledged again but not delivered again
    /// ([MQTT-4.3.3-2], method B).
    pub incoming_qos2: PacketIdSet,
    /// The connection (slot in the shard's connection slab) while connected.
    pub conn: Option<usize>,
    /// The protocol version of the last connection (how to encode queued messages).
    pub version: ProtocolVersion,
    /// The will of the current connection. Boxed, like `pending_will`: a `Will` is ~470 bytes
    /// (its MQTT 5 properties) and most sessions have none, while every session pays for what
    /// is inline here (memory per idle connection).
    pub will: Option<Box<Will>>,
    /// A will waiting for its Will Delay Interval to pass (MQTT 5) while disconnected, and
    /// when it is due. One box for both: 8 bytes in every session instead of 24.
    pub pending_will: Option<Box<(Instant, Will)>>,
    pub limits: Limits,
    /// Messages dropped because the queue was full (logged, later in $SYS). 32 bits (it
    /// shares a word with the fields below): a wrapped count only shifts the log lines.
    pub dropped: u32,
    /// Changes are written to the store (persistence on and `expiry_interval` > 0).
    pub durable: bool,
    /// The `seq` of the next QoS 1/2 delivery.
    pub next_seq: u64,
    next_packet_id: u16,
}

impl Session {
    /// A new, empty session.
    pub fn new(
        client_id: ByteStr,
        expiry_interval: u32,
        version: ProtocolVersion,
        limits: Limits,
    ) -> Session {
        Session {
            client_id,
            acl: ClientAcl::allow_all(),
            expiry_interval,
            expires_at: None,
            subscriptions: BTreeMap::new(),
            inflight: VecDeque::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            incoming_qos2: PacketIdSet::default(),
            conn: None,
            version,
            will: None,
            pending_will: None,
            limits,
            dropped: 0,
            durable: false,
            next_seq: 1,
            next_packet_id: 0,
        }
    }

    /// A session rebuilt from the store at start-up: disconnected, its in-flight messages
    /// resent with DUP when the client returns, its queue in order. A session stored while
    /// its client was connected has no end time yet: its expiry starts now. The ACL is not
    /// stored: until the client's next CONNECT fixes it, everything is queued, and queued
    /// messages are checked against it when they leave the queue (`fill_window`).
    pub fn recovered(r: crate::store::RecoveredSession, limits: Limits) -> Session {
        let stored = r.session;
        let mut s = Session::new(r.client_id, stored.expiry_interval, stored.version, limits);
        s.durable = true;
        s.expires_at = match (stored.expires_at, stored.expiry_interval) {
            (Some(at), _) => Some(crate::store::instant_from_wall(at)),
            (None, u32::MAX) => None,
            (None, secs) => Some(Instant::now() + std::time::Duration::from_secs(u64::from(secs))),
        };
        s.pending_will = stored
            .pending_will
            .map(|(at, will)| Box::new((crate::store::instant_from_wall(at), will)));
        s.subscriptions = stored.subscriptions.into_iter().collect();
        for (seq, d) in r.queued {
            s.next_seq = s.next_seq.max(seq + 1);
            match d.flow {
                Some(flow) => s.inflight.push_back(Inflight {
                    seq,
                    packet_id: flow.packet_id,
                    delivery: d.delivery,
                    state: flow.state,
                    put_turn: 0,
                }),
                None => {
                    s.queued_bytes += d.delivery.msg.payload.len();
                    s.queue.push_back(Queued {
                        seq,
                        delivery: d.delivery,
                        put_turn: 0,
                    })
                }
            }
        }
        s.next_packet_id = s.inflight.iter().map(|f| f.packet_id).max().unwrap_or(0);
        for id in r.incoming_qos2 {
            s.incoming_qos2.insert(id);
        }
        s
    }

    /// The session as the store keeps it (everything but its messages).
    pub fn stored(&self) -> StoredSession {
        let mut subscriptions: Vec<(ByteStr, Subscription)> = self
            .subscriptions
            .iter()
            .map(|(f, s)| (f.clone(), *s))
            .collect();
        subscriptions.sort_by(|a, b| a.0.cmp(&b.0));
        StoredSession {
            expiry_interval: self.expiry_interval,
            expires_at: self.expires_at.map(wall_from_instant),
            version: self.version,
            subscriptions,
            pending_will: self
                .pending_will
                .as_ref()
                .map(|p| (wall_from_instant(p.0), p.1.clone())),
        }
    }

    /// Writes the session record (not its messages) into `batch` if the session is durable.
    pub fn store_record(&self, batch: &mut Batch) {
        if self.durable {
            batch.put_session(&self.client_id, &self.stored());
        }
    }

    /// Remembers an incoming QoS 2 packet id until PUBREL; false if it was already held (a
    /// retransmission: acknowledge, do not deliver again).
    pub fn hold_incoming_qos2(&mut self, packet_id: u16, batch: &mut Batch) -> bool {
        let fresh = self.incoming_qos2.insert(packet_id);
        if fresh && self.durable {
            batch.put_incoming_qos2(&self.client_id, packet_id);
        }
        fresh
    }

    /// Forgets an incoming QoS 2 packet id (PUBREL, or a PUBREC that refused the message);
    /// false if it was not held.
    pub fn release_incoming_qos2(&mut self, packet_id: u16, batch: &mut Batch) -> bool {
        let known = self.incoming_qos2.remove(&packet_id);
        if known && self.durable {
            batch.delete_incoming_qos2(&self.client_id, packet_id);
        }
        known
    }

    /// Keeps a 3.x QoS 2 PUBLISH that arrived while `incoming_qos2` held the inflight quota:
    /// not acknowledged and not routed until a PUBREL frees an id (as mosquitto delays its
    /// PUBREC). The client still owns it, so it is not stored, and it is forgotten when the
    /// connection ends (the client sends it again). A retransmission of one already waiting
    /// is dropped. False when `max` (`max_queued_messages`; 0 = only the 65,535 packet ids
    /// bound it) are waiting.
    pub fn wait_incoming_qos2(&mut self, publish: Publish, max: usize) -> bool {
        let waiting = &mut self
            .incoming_qos2
            .0
            .get_or_insert_with(Default::default)
            .waiting;
        if waiting.iter().any(|p| p.packet_id == publish.packet_id) {
            return true;
        }
        if max != 0 && waiting.len() >= max {
            return false;
        }
        waiting.push_back(Publish {
            topic: publish.topic.unshared(),
            payload: bytes::Bytes::copy_from_slice(&publish.payload),
            ..publish
        });
        true
    }

    /// The oldest waiting 3.x QoS 2 PUBLISH (see [`Session::wait_incoming_qos2`]).
    pub fn next_waiting_qos2(&mut self) -> Option<Publish> {
        let next = self.incoming_qos2.0.as_mut()?.waiting.pop_front();
        self.incoming_qos2.free_if_empty();
        next
    }

    /// Forgets the waiting QoS 2 PUBLISHes (the connection ended: the client resends them).
    pub fn forget_waiting_qos2(&mut self) {
        if let Some(s) = self.incoming_qos2.0.as_mut() {
            s.waiting = VecDeque::new();
        }
        self.incoming_qos2.free_if_empty();
    }

    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    fn window_open(&self) -> bool {
        let l = &self.limits;
        (l.max_inflight == 0 || self.inflight.len() < usize::from(l.max_inflight))
            && (l.max_inflight_bytes == 0 || self.inflight_bytes() < l.max_inflight_bytes as usize)
    }

    /// Payload bytes in flight. Summed over the window (at most `max_inflight_messages`,
    /// 20 by default) and only when `max_inflight_bytes` is set: no counter to keep right on
    /// every path that adds to or removes from the window.
    fn inflight_bytes(&self) -> usize {
        self.inflight
            .iter()
            .map(|f| f.delivery.msg.payload.len())
            .sum()
    }

    /// The next packet id not in use by an inflight message ([MQTT-2.3.1-2]: an id is
    /// reusable only after its flow completed).
    fn allocate_packet_id(&mut self) -> u16 {
        loop {
            self.next_packet_id = self.next_packet_id.wrapping_add(1);
            if self.next_packet_id == 0 {
                continue;
            }
            let id = self.next_packet_id;
            if !self.inflight.iter().any(|f| f.packet_id == id) {
                return id;
            }
        }
    }

    /// True if the client can take this delivery's PUBLISH (its Maximum Packet Size; the
    /// size without a topic alias, which only makes it smaller).
    fn fits(&self, d: &Delivery) -> bool {
        self.limits.max_packet_size == 0
            || publish_encoded_len(&d.msg.publish_ref(d, 1, false), self.version)
                <= self.limits.max_packet_size as usize
    }

    /// Starts the flow of a QoS 1/2 message and returns its PUBLISH, or `None` when the
    /// client could not take it (too large: dropped as if delivered, [MQTT-3.1.2-25]).
    /// `stored` says whether the delivery is already in the store (queued before, in turn
    /// `put_turn`) or new.
    fn start_flow(
        &mut self,
        seq: u64,
        delivery: Delivery,
        stored: Option<u64>,
        batch: &mut Batch,
    ) -> Option<SendPublish> {
        if !self.fits(&delivery) {
            self.dropped = self.dropped.wrapping_add(1);
            if stored.is_some() {
                memory::release(delivery.msg.payload.len());
                if self.durable {
                    batch.delete_queued(&self.client_id, seq);
                }
            }
            return None;
        }
        if stored.is_none() {
            memory::hold(delivery.msg.payload.len());
        }
        let packet_id = self.allocate_packet_id();
        let publish = SendPublish {
            delivery: delivery.clone(),
            packet_id,
            dup: false,
        };
        let state = if delivery.qos == crate::protocol::QoS::ExactlyOnce {
            OutState::AwaitPubRec
        } else {
            OutState::AwaitPubAck
        };
        let mut f = Inflight {
            seq,
            packet_id,
            delivery,
            state,
            put_turn: stored.unwrap_or(0),
        };
        if self.durable {
            match stored {
                Some(_) => batch.update_queued(&self.client_id, seq, Some(f.flow())),
                None => {
                    f.put_turn = batch.turn;
                    batch.put_queued(&self.client_id, seq, &f.delivery, Some(f.flow()));
                }
            }
        }
        self.inflight.push_back(f);
        Some(publish)
    }

    /// Offers a delivery (QoS already the granted one).
    pub fn offer(&mut self, delivery: Delivery, batch: &mut Batch) -> Offer {
        let connected = self.conn.is_some();
        if delivery.qos == crate::protocol::QoS::AtMostOnce {
            if !connected {
                return Offer::Dropped;
            }
            return if self.fits(&delivery) {
                Offer::Send(SendPublish {
                    delivery,
                    packet_id: 0,
                    dup: false,
                })
            } else {
                Offer::Dropped
            };
        }
        if connected && self.queue.is_empty() && self.window_open() {
            let seq = self.take_seq();
            return match self.start_flow(seq, delivery, None, batch) {
                Some(p) => Offer::Send(p),
                None => Offer::Dropped,
            };
        }
        if self.queue_full() {
            self.dropped = self.dropped.wrapping_add(1);
            return Offer::Dropped;
        }
        let seq = self.take_seq();
        self.queued_bytes += delivery.msg.payload.len();
        memory::hold(delivery.msg.payload.len());
        if self.durable {
            batch.put_queued(&self.client_id, seq, &delivery, None);
        }
        self.queue.push_back(Queued {
            seq,
            delivery,
            put_turn: batch.turn,
        });
        Offer::Queued
    }

    /// `max_queued_messages` or `max_queued_bytes` is reached.
    fn queue_full(&self) -> bool {
        let l = &self.limits;
        (l.max_queued != 0 && self.queue.len() >= l.max_queued as usize)
            || (l.max_queued_bytes != 0 && self.queued_bytes >= l.max_queued_bytes as usize)
    }

    /// Payload bytes of every QoS 1/2 message the session holds, queued or in flight (what
    /// it counts toward `memory_limit`, see [`memory`]).
    pub fn held_bytes(&self) -> usize {
        self.inflight_bytes() + self.queued_bytes
    }

    /// Takes the messages the session still owes its client, for a session that moves to
    /// another cluster node: those in flight (but QoS 2 ones already received, which only
    /// await PUBCOMP), then those queued, in order. The session keeps none, and no longer
    /// counts them toward `memory_limit`.
    pub fn take_messages(&mut self) -> Vec<Delivery> {
        memory::release(self.held_bytes());
        let inflight = std::mem::take(&mut self.inflight)
            .into_iter()
            .filter(|f| f.state != OutState::AwaitPubComp)
            .map(|f| f.delivery);
        let queued = std::mem::take(&mut self.queue)
            .into_iter()
            .map(|q| q.delivery);
        self.queued_bytes = 0;
        inflight.chain(queued).collect()
    }

    /// Payload bytes waiting in the queue.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Moves queued messages into the window while it has room; returns their PUBLISHes.
    /// Queued messages whose expiry interval passed are discarded ([MQTT-3.3.2-5]).
    pub fn fill_window(&mut self, out: &mut Vec<Outgoing>, batch: &mut Batch) {
        let now = Instant::now();
        while self.conn.is_some() && self.window_open() {
            let Some(q) = self.queue.pop_front() else {
                break;
            };
            self.queued_bytes -= q.delivery.msg.payload.len();
            // The ACL is checked again: a session recovered from the store was filled before
            // its client's CONNECT fixed the ACL (see `Session::recovered`).
            let refused = !self
                .acl
                .allowed(&q.delivery.msg.topic, crate::auth::Access::Read);
            if q.delivery.msg.is_expired(now) || refused {
                memory::release(q.delivery.msg.payload.len());
                if self.durable {
                    batch.delete_queued(&self.client_id, q.seq);
                }
                continue;
            }
            out.extend(
                self.start_flow(q.seq, q.delivery, Some(q.put_turn), batch)
                    .map(Outgoing::Publish),
            );
        }
    }

    /// The packets to resend when a persistent session is resumed: unacknowledged PUBLISHes
    /// with DUP set and the same packet id, and PUBRELs whose PUBCOMP is missing
    /// ([MQTT-4.4.0-1]), in their original order; then queued messages while the window allows.
    ///
    /// A resumed session may belong to another user than the one it delivered to (same client
    /// id, another login): an unacknowledged PUBLISH the current ACL does not let the client
    /// read is dropped and its packet id released, never resent. A PUBREL carries no message
    /// and is always sent, so that the client can finish a flow it already received.
    pub fn resume(&mut self, out: &mut Vec<Outgoing>, batch: &mut Batch) {
        let mut i = 0;
        while i < self.inflight.len() {
            let f = &self.inflight[i];
            let unreadable = f.state != OutState::AwaitPubComp
                && !self
                    .acl
                    .allowed(&f.delivery.msg.topic, crate::auth::Access::Read);
            if unreadable {
                self.complete(i, batch);
            } else {
                i += 1;
            }
        }
        for f in &self.inflight {
            out.push(match f.state {
                OutState::AwaitPubAck | OutState::AwaitPubRec => Outgoing::Publish(SendPublish {
                    delivery: f.delivery.clone(),
                    packet_id: f.packet_id,
                    dup: true,
                }),
                OutState::AwaitPubComp => Outgoing::PubRel(f.packet_id),
            });
        }
        self.fill_window(out, batch);
    }
}
