//! Session state: what the broker remembers about a client id between packets and, for a
//! persistent session (clean session 0), between connections.
//!
//! The state machine here is pure: it is given messages and acknowledgements and answers with
//! the packets to send. It does no I/O and never sees a socket, so the QoS flows are unit
//! tested without a network (see the tests below) and the shard only moves bytes.
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

pub mod memory;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::Instant;

use crate::auth::ClientAcl;
use crate::message::Delivery;
use crate::protocol::{
    publish_encoded_len, ByteStr, Packet, ProtocolVersion, PubResp, Publish, Will,
};
use crate::store::{wall_from_instant, Batch, Flow, StoredSession};

/// The session's records that the store persists too; defined below both (see
/// [`crate::record`]) and named here, where the shard and the handlers look for them.
pub use crate::record::{OutState, Subscription};

/// An outgoing QoS 1/2 message that the client has not finished acknowledging.
#[derive(Debug, Clone)]
pub struct Inflight {
    /// The store's key of this delivery (see the module documentation).
    pub seq: u64,
    pub packet_id: u16,
    pub delivery: Delivery,
    pub state: OutState,
    /// The shard's turn that put it in the store (0: it was durable before, e.g. recovered),
    /// reported when a QoS 1 delivery is acknowledged (see `shard::durable`).
    pub put_turn: u64,
}

/// Per-session limits, from the configuration and the client's CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Outgoing QoS 1/2 messages in flight (0 = unlimited): the smaller of
    /// `max_inflight_messages` and the client's Receive Maximum ([MQTT-3.3.4-9]).
    pub max_inflight: u16,
    /// Messages queued beyond the window (0 = unlimited) — `max_queued_messages`.
    pub max_queued: u32,
    /// Payload bytes queued beyond the window (0 = unlimited) — `max_queued_bytes`. As in
    /// mosquitto, a message is queued while the queue holds less than this, so the queue
    /// exceeds it by at most one message; with `max_queued_messages` too, the first limit
    /// reached applies.
    ///
    /// Both limits are 32-bit (a larger setting counts as 4 Gi messages or 4 GiB), so that
    /// every session's copy of them takes 8 bytes, not 16 (issue #7: memory per connection).
    pub max_queued_bytes: u32,
    /// The client's Maximum Packet Size (0 = none): larger PUBLISHes are not sent to it
    /// ([MQTT-3.1.2-25]) but dropped as if delivered.
    pub max_packet_size: u32,
}

impl Inflight {
    fn flow(&self) -> Flow {
        Flow {
            packet_id: self.packet_id,
            state: self.state,
        }
    }
}

/// A QoS 1/2 delivery waiting for the window or for a reconnect.
#[derive(Debug, Clone)]
pub struct Queued {
    /// The store's key of this delivery.
    pub seq: u64,
    pub delivery: Delivery,
    /// As [`Inflight::put_turn`].
    pub put_turn: u64,
}

impl Limits {
    /// The limits for a client that announced `receive_max` (MQTT 5 Receive Maximum;
    /// `u16::MAX` when absent) and `max_packet_size` (0 = none), under the broker's
    /// `max_inflight_messages` and `max_queued_messages`.
    pub fn new(config: &crate::config::Config, receive_max: u16, max_packet_size: u32) -> Limits {
        Limits {
            max_inflight: match config.max_inflight_messages {
                0 => receive_max,
                m => m.min(receive_max),
            },
            max_queued: u32::try_from(config.max_queued_messages).unwrap_or(u32::MAX),
            max_queued_bytes: u32::try_from(config.max_queued_bytes).unwrap_or(u32::MAX),
            max_packet_size,
        }
    }
}

/// A PUBLISH the session decided to send: the delivery and its per-send fields. The shard
/// encodes it straight from the shared message (`Message::publish_ref`); no `Publish` is
/// built per delivery (issue #7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendPublish {
    pub delivery: Delivery,
    /// 0 at QoS 0.
    pub packet_id: u16,
    pub dup: bool,
}

impl SendPublish {
    /// The PUBLISH as an owned packet (tests, logs; clones the properties).
    pub fn to_publish(&self) -> Publish {
        self.delivery
            .msg
            .to_publish(&self.delivery, self.packet_id, self.dup)
    }
}

/// What a session asks its connection to send, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    Publish(SendPublish),
    /// PUBREL of this packet id (a resumed QoS 2 flow).
    PubRel(u16),
}

impl Outgoing {
    /// As an owned packet (tests).
    pub fn to_packet(&self) -> Packet {
        match self {
            Outgoing::Publish(p) => Packet::Publish(p.to_publish()),
            Outgoing::PubRel(id) => Packet::PubRel(PubResp::new(*id)),
        }
    }
}

/// What became of a message offered to a session.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    /// Send this PUBLISH now.
    Send(SendPublish),
    /// Kept in the session queue.
    Queued,
    /// Dropped: QoS 0 for an offline client, the queue is full, or too large for the client.
    Dropped,
}

/// Incoming QoS 2 state: the packet ids awaiting PUBREL and the 3.x PUBLISHes waiting for one
/// of them to be released. Allocates nothing until its first id: an empty `HashSet` is 48
/// bytes inline, paid by every session, while only QoS 2 publishers ever hold an id
/// (issue #7: memory per idle connection).
#[derive(Debug, Default)]
pub struct PacketIdSet(Option<Box<IncomingQos2>>);

#[derive(Debug, Default)]
struct IncomingQos2 {
    ids: HashSet<u16>,
    /// See [`Session::wait_incoming_qos2`].
    waiting: VecDeque<Publish>,
}

impl PacketIdSet {
    /// Adds `id`; false if it was there already.
    pub fn insert(&mut self, id: u16) -> bool {
        self.0.get_or_insert_with(Default::default).ids.insert(id)
    }

    /// Removes `id`; false if it was not there.
    pub fn remove(&mut self, id: &u16) -> bool {
        let removed = self.0.as_mut().is_some_and(|s| s.ids.remove(id));
        self.free_if_empty();
        removed
    }

    pub fn contains(&self, id: &u16) -> bool {
        self.0.as_ref().is_some_and(|s| s.ids.contains(id))
    }

    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |s| s.ids.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every id and waiting PUBLISH (and the allocation).
    pub fn clear(&mut self) {
        self.0 = None;
    }

    fn free_if_empty(&mut self) {
        if self
            .0
            .as_ref()
            .is_some_and(|s| s.ids.is_empty() && s.waiting.is_empty())
        {
            self.0 = None;
        }
    }
}

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
    /// and routing never looks here (issue #7: memory per connection).
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
    /// is inline here (issue #7: memory per idle connection).
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
        self.limits.max_inflight == 0 || self.inflight.len() < usize::from(self.limits.max_inflight)
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
        let inflight: usize = self
            .inflight
            .iter()
            .map(|f| f.delivery.msg.payload.len())
            .sum();
        inflight + self.queued_bytes
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

    /// Ends the flow of inflight entry `i` (acknowledged, or refused by the client).
    fn complete(&mut self, i: usize, batch: &mut Batch) {
        if let Some(f) = self.inflight.remove(i) {
            memory::release(f.delivery.msg.payload.len());
            if self.durable {
                batch.delete_queued(&self.client_id, f.seq);
                if f.state == OutState::AwaitPubAck && f.put_turn != 0 {
                    batch.qos1_acked(f.put_turn);
                }
            }
        }
    }

    /// The inflight entry with `packet_id`, checked against the flow an acknowledgement
    /// belongs to (as mosquitto's `db__message_delete_outgoing`): `Unknown` if no entry has
    /// that id, `Violation` if one has it but is at another QoS or step.
    fn find(&self, packet_id: u16, accept: &[OutState]) -> AckMatch {
        match self.inflight.iter().position(|f| f.packet_id == packet_id) {
            None => AckMatch::Unknown,
            Some(i) if accept.contains(&self.inflight[i].state) => AckMatch::Found(i),
            Some(_) => AckMatch::Violation,
        }
    }

    /// PUBACK received: the QoS 1 flow is complete. A PUBACK for a QoS 2 message is a
    /// protocol violation ([`Ack::Violation`]); one for an unknown id is ignored.
    pub fn on_puback(&mut self, packet_id: u16, batch: &mut Batch) -> Ack {
        match self.find(packet_id, &[OutState::AwaitPubAck]) {
            AckMatch::Found(i) => {
                self.complete(i, batch);
                Ack::Done
            }
            AckMatch::Unknown => Ack::Unknown,
            AckMatch::Violation => Ack::Violation,
        }
    }

    /// PUBREC received: the message is now the client's; answer PUBREL ([MQTT-4.3.3-3]).
    /// A PUBREC for an id already released is answered with PUBREL again. A PUBREC with a
    /// failure reason (MQTT 5, >= 0x80) ends the flow instead: no PUBREL (MQTT 5 section 4.3.3).
    /// A PUBREC for a QoS 1 message (or a failing one after PUBREL) is a violation.
    pub fn on_pubrec(&mut self, packet_id: u16, reason: u8, batch: &mut Batch) -> PubRec {
        if reason >= 0x80 {
            return match self.find(packet_id, &[OutState::AwaitPubRec]) {
                AckMatch::Found(i) => {
                    self.complete(i, batch);
                    PubRec::Ended
                }
                AckMatch::Unknown => PubRec::Unknown,
                AckMatch::Violation => PubRec::Violation,
            };
        }
        let accept = [OutState::AwaitPubRec, OutState::AwaitPubComp];
        match self.find(packet_id, &accept) {
            AckMatch::Found(i) => {
                let f = &mut self.inflight[i];
                if f.state == OutState::AwaitPubRec {
                    f.state = OutState::AwaitPubComp;
                    if self.durable {
                        batch.update_queued(&self.client_id, f.seq, Some(f.flow()));
                    }
                }
                PubRec::Release(packet_id)
            }
            AckMatch::Unknown => PubRec::Unknown,
            AckMatch::Violation => PubRec::Violation,
        }
    }

    /// PUBCOMP received: the QoS 2 flow is complete. A PUBCOMP for a QoS 1 message, or before
    /// PUBREC, is a violation; one for an unknown id is ignored.
    pub fn on_pubcomp(&mut self, packet_id: u16, batch: &mut Batch) -> Ack {
        match self.find(packet_id, &[OutState::AwaitPubComp]) {
            AckMatch::Found(i) => {
                self.complete(i, batch);
                Ack::Done
            }
            AckMatch::Unknown => Ack::Unknown,
            AckMatch::Violation => Ack::Violation,
        }
    }
}

/// Where an acknowledgement's packet id stands (see [`Session::find`]).
enum AckMatch {
    Found(usize),
    Unknown,
    Violation,
}

/// What a PUBACK or PUBCOMP did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// A flow completed: the window has room.
    Done,
    /// No message in flight has this id (a late duplicate): ignored, as mosquitto does.
    Unknown,
    /// The id is in flight in another flow (PUBCOMP for QoS 1, PUBACK for QoS 2, PUBCOMP
    /// before PUBREC): a protocol violation; mosquitto closes the connection.
    Violation,
}

/// What a PUBREC did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PubRec {
    /// Send PUBREL for this packet id.
    Release(u16),
    /// A failure reason code ended the flow: the window has room.
    Ended,
    /// Unknown id: ignored.
    Unknown,
    /// As [`Ack::Violation`].
    Violation,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::message::{Message, SharedMessage};
    use crate::protocol::QoS;

    fn msg(n: u8) -> SharedMessage {
        Arc::new(Message {
            topic: "t".into(),
            payload: bytes::Bytes::from(vec![n]),
            qos: QoS::ExactlyOnce,
            retain: false,
            properties: Default::default(),
            expires_at: None,
            origin: None,
        })
    }

    fn d(n: u8, qos: QoS) -> Delivery {
        Delivery::new(msg(n), qos, false)
    }

    fn session(max_inflight: u16, max_queued: u32) -> Session {
        let mut s = Session::new(
            "c".into(),
            u32::MAX,
            ProtocolVersion::V311,
            Limits {
                max_inflight,
                max_queued,
                max_queued_bytes: 0,
                max_packet_size: 0,
            },
        );
        s.conn = Some(0);
        s
    }

    fn publish(offer: Offer) -> crate::protocol::Publish {
        match offer {
            Offer::Send(p) => p.to_publish(),
            other => panic!("expected a PUBLISH, got {other:?}"),
        }
    }

    #[test]
    fn qos1_window_holds_back_until_puback() {
        let mut s = session(2, 10);
        let a = publish(s.offer(d(1, QoS::AtLeastOnce), &mut Batch::new()));
        let b = publish(s.offer(d(2, QoS::AtLeastOnce), &mut Batch::new()));
        assert_ne!(a.packet_id, 0);
        assert_ne!(a.packet_id, b.packet_id);
        assert_eq!(
            s.offer(d(3, QoS::AtLeastOnce), &mut Batch::new()),
            Offer::Queued
        );
        assert_eq!(s.on_puback(a.packet_id, &mut Batch::new()), Ack::Done);
        assert_eq!(
            s.on_puback(a.packet_id, &mut Batch::new()),
            Ack::Unknown,
            "a second PUBACK acknowledges nothing"
        );
        let mut out = Vec::new();
        s.fill_window(&mut out, &mut Batch::new());
        assert_eq!(out.len(), 1);
        let Packet::Publish(c) = &out[0].to_packet() else {
            panic!()
        };
        assert_eq!(c.payload[0], 3);
    }

    #[test]
    fn qos2_flow_goes_pubrec_pubrel_pubcomp() {
        let mut s = session(0, 0);
        let p = publish(s.offer(d(1, QoS::ExactlyOnce), &mut Batch::new()));
        assert_eq!(
            s.on_pubcomp(p.packet_id, &mut Batch::new()),
            Ack::Violation,
            "PUBCOMP before PUBREC is out of its flow"
        );
        assert_eq!(
            s.on_puback(p.packet_id, &mut Batch::new()),
            Ack::Violation,
            "PUBACK for a QoS 2 message"
        );
        assert_eq!(
            s.on_pubrec(p.packet_id, 0, &mut Batch::new()),
            PubRec::Release(p.packet_id)
        );
        assert_eq!(s.on_pubcomp(p.packet_id, &mut Batch::new()), Ack::Done);
        assert!(s.inflight.is_empty());
        assert_eq!(s.on_pubcomp(p.packet_id, &mut Batch::new()), Ack::Unknown);
        // A QoS 1 message answered with QoS 2 acknowledgements.
        let q1 = publish(s.offer(d(2, QoS::AtLeastOnce), &mut Batch::new()));
        assert_eq!(
            s.on_pubcomp(q1.packet_id, &mut Batch::new()),
            Ack::Violation
        );
        assert_eq!(
            s.on_pubrec(q1.packet_id, 0, &mut Batch::new()),
            PubRec::Violation
        );
    }

    #[test]
    fn resume_resends_with_dup_and_same_packet_id() {
        // [MQTT-4.4.0-1]
        let mut s = session(10, 10);
        let p1 = publish(s.offer(d(1, QoS::AtLeastOnce), &mut Batch::new()));
        let p2 = publish(s.offer(d(2, QoS::ExactlyOnce), &mut Batch::new()));
        s.on_pubrec(p2.packet_id, 0, &mut Batch::new());
        s.conn = None;
        assert_eq!(
            s.offer(d(3, QoS::AtLeastOnce), &mut Batch::new()),
            Offer::Queued
        );
        assert_eq!(
            s.offer(d(4, QoS::AtMostOnce), &mut Batch::new()),
            Offer::Dropped
        );
        s.conn = Some(1);
        let mut out = Vec::new();
        s.resume(&mut out, &mut Batch::new());
        assert_eq!(out.len(), 3);
        match &out[0].to_packet() {
            Packet::Publish(p) => {
                assert!(p.dup);
                assert_eq!(p.packet_id, p1.packet_id);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            out[1].to_packet(),
            Packet::PubRel(PubResp::new(p2.packet_id))
        );
        match &out[2].to_packet() {
            Packet::Publish(p) => assert!(!p.dup && p.payload[0] == 3),
            other => panic!("{other:?}"),
        }
    }

    /// What a durable session writes into the store batch, as (kind, seq, in flight).
    fn journal(b: &mut Batch) -> Vec<(&'static str, u64, bool)> {
        use crate::store::BatchOp;
        b.ops
            .drain(..)
            .map(|op| match op {
                BatchOp::PutQueued(_, seq, _, flow) => ("put", seq, flow.is_some()),
                BatchOp::UpdateQueued(_, seq, flow) => ("update", seq, flow.is_some()),
                BatchOp::DelQueued(_, seq) => ("delete", seq, false),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_durable_session_journals_every_step_of_its_deliveries() {
        let mut s = session(1, 10);
        s.durable = true;
        let mut b = Batch::new();
        let a = publish(s.offer(d(1, QoS::AtLeastOnce), &mut b));
        assert_eq!(s.offer(d(2, QoS::AtLeastOnce), &mut b), Offer::Queued);
        assert_eq!(
            s.offer(d(3, QoS::AtMostOnce), &mut b),
            Offer::Send(SendPublish {
                delivery: d(3, QoS::AtMostOnce),
                packet_id: 0,
                dup: false
            })
        );
        assert_eq!(
            journal(&mut b),
            [("put", 1, true), ("put", 2, false)],
            "QoS 0 is never stored"
        );
        assert_eq!(s.on_puback(a.packet_id, &mut b), Ack::Done);
        let mut out = Vec::new();
        s.fill_window(&mut out, &mut b);
        assert_eq!(journal(&mut b), [("delete", 1, false), ("update", 2, true)]);
        // Not durable: nothing is written.
        s.durable = false;
        s.offer(d(4, QoS::AtLeastOnce), &mut b);
        assert!(b.is_empty());
    }

    #[test]
    fn queued_messages_the_acl_now_refuses_are_dropped_when_they_leave_the_queue() {
        // A recovered session queues before its client's CONNECT fixes the ACL.
        let mut s = session(10, 10);
        s.durable = true;
        s.conn = None;
        let mut b = Batch::new();
        assert_eq!(s.offer(d(1, QoS::AtLeastOnce), &mut b), Offer::Queued);
        b.clear();
        let acl = crate::auth::Acl::parse("user u\ntopic read other\n", "acl").unwrap();
        s.acl = acl.for_client("c", Some("u"));
        s.conn = Some(0);
        let mut out = Vec::new();
        s.fill_window(&mut out, &mut b);
        assert!(out.is_empty(), "topic t is not readable: {out:?}");
        assert_eq!(journal(&mut b), [("delete", 1, false)]);
    }

    #[test]
    fn resume_drops_inflight_messages_the_new_acl_refuses_and_frees_their_ids() {
        // Another user resumes the session (same client id): what it may not read is not
        // resent; a PUBREL (no message in it) still is.
        let mut s = session(10, 10);
        s.durable = true;
        let mut b = Batch::new();
        let p1 = publish(s.offer(d(1, QoS::AtLeastOnce), &mut b));
        let p2 = publish(s.offer(d(2, QoS::ExactlyOnce), &mut b));
        let p3 = publish(s.offer(d(3, QoS::ExactlyOnce), &mut b));
        assert!(matches!(
            s.on_pubrec(p3.packet_id, 0, &mut b),
            PubRec::Release(_)
        ));
        s.conn = None;
        b.clear();
        let acl = crate::auth::Acl::parse("user u\ntopic read other\n", "acl").unwrap();
        s.acl = acl.for_client("c", Some("u"));
        s.conn = Some(1);
        let mut out = Vec::new();
        s.resume(&mut out, &mut b);
        assert_eq!(out, [Outgoing::PubRel(p3.packet_id)]);
        assert_eq!(s.inflight.len(), 1);
        assert_eq!(
            journal(&mut b),
            [("delete", 1, false), ("delete", 2, false)]
        );
        assert_eq!(s.on_puback(p1.packet_id, &mut b), Ack::Unknown);
        assert_eq!(
            s.on_pubrec(p2.packet_id, 0, &mut b),
            PubRec::Unknown,
            "the id is free again"
        );
    }

    #[test]
    fn queue_is_bounded() {
        let mut s = session(1, 2);
        s.conn = None;
        assert_eq!(
            s.offer(d(1, QoS::AtLeastOnce), &mut Batch::new()),
            Offer::Queued
        );
        assert_eq!(
            s.offer(d(2, QoS::AtLeastOnce), &mut Batch::new()),
            Offer::Queued
        );
        assert_eq!(
            s.offer(d(3, QoS::AtLeastOnce), &mut Batch::new()),
            Offer::Dropped
        );
        assert_eq!(s.dropped, 1);
    }

    /// A message of `len` payload bytes.
    fn sized(len: usize) -> Delivery {
        let mut m = Arc::unwrap_or_clone(msg(0));
        m.payload = bytes::Bytes::from(vec![0x5a; len]);
        Delivery::new(Arc::new(m), QoS::AtLeastOnce, false)
    }

    #[test]
    fn queue_is_bounded_in_payload_bytes_too() {
        let mut s = session(1, 0);
        s.limits.max_queued_bytes = 250;
        let mut b = Batch::new();
        // The window takes the first; the queue takes messages while it holds less than
        // 250 bytes (as mosquitto: the last one may cross the limit), then drops.
        let first = publish(s.offer(sized(100), &mut b));
        for _ in 0..3 {
            assert_eq!(s.offer(sized(100), &mut b), Offer::Queued);
        }
        assert_eq!(s.queued_bytes(), 300);
        assert_eq!(s.offer(sized(1), &mut b), Offer::Dropped);
        assert_eq!((s.dropped, s.queue.len()), (1, 3));
        // An acknowledgement lets one queued message into the window: room again.
        assert_eq!(s.on_puback(first.packet_id, &mut b), Ack::Done);
        let mut out = Vec::new();
        s.fill_window(&mut out, &mut b);
        assert_eq!((out.len(), s.queued_bytes()), (1, 200));
        assert_eq!(s.offer(sized(100), &mut b), Offer::Queued);
        assert_eq!(s.queued_bytes(), 300);
        // QoS 0 to a connected client is not queued and not counted.
        assert!(matches!(
            s.offer(Delivery::new(msg(9), QoS::AtMostOnce, false), &mut b),
            Offer::Send(_)
        ));
        assert_eq!(s.queued_bytes(), 300);
    }

    #[test]
    fn packet_ids_skip_ids_in_flight_and_zero() {
        let mut s = session(0, 0);
        s.next_packet_id = u16::MAX - 1;
        let a = publish(s.offer(d(1, QoS::AtLeastOnce), &mut Batch::new()));
        let b = publish(s.offer(d(2, QoS::AtLeastOnce), &mut Batch::new()));
        assert_eq!((a.packet_id, b.packet_id), (u16::MAX, 1));
    }
}
