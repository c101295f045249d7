//! [`Batch`]: the changes of one event-loop turn, as a shard hands them to the store.

use crate::message::{Delivery, SharedMessage};
use crate::protocol::ByteStr;
use crate::record::OutState;

use super::{Flow, Link, StoredSession};

/// One operation of a [`Batch`].
#[derive(Debug, Clone)]
pub(crate) enum BatchOp {
    /// With the version the retained store gave the change (0: apply in batch order).
    PutRetained(SharedMessage, u64),
    DelRetained(ByteStr, u64),
    PutSession(ByteStr, Box<StoredSession>),
    DelSession(ByteStr),
    PutQueued(ByteStr, u64, Delivery, Option<Flow>),
    UpdateQueued(ByteStr, u64, Option<Flow>),
    DelQueued(ByteStr, u64),
    PutQos2(ByteStr, u16),
    DelQos2(ByteStr, u16),
}

/// The changes of one event-loop turn, committed at once with [`Store::commit`](super::Store::commit). Operations
/// apply in the order they were added. Cheap to fill: it holds reference-counted handles, and
/// encoding happens at commit.
#[derive(Debug, Clone)]
pub struct Batch {
    pub(crate) ops: Vec<BatchOp>,
    /// Some operation must be written now, not only with the next write (see
    /// [`Batch::holds_output`]).
    pub(crate) urgent: bool,
    /// Every operation is a QoS 1 delivery's (put, in flight, deleted): once each such
    /// delivery is acknowledged by its subscriber, nothing of the batch needs to be durable
    /// any more (see `shard::durable`).
    pub(crate) only_qos1: bool,
    /// QoS 1 deliveries put this turn.
    pub(crate) qos1_puts: u32,
    /// The number the shard gave this turn (from 1; 0 means "no turn"); a delivery put now
    /// remembers it.
    pub(crate) turn: u64,
    /// Turns whose QoS 1 deliveries were acknowledged this turn, one entry per delivery.
    pub(crate) acked: Vec<u64>,
    /// An incoming QoS 2 packet id was put (see [`Batch::receives_qos2`]).
    pub(crate) qos2_in: bool,
    /// Which other shards' batches this one must be written with (see [`Batch::awaits`]).
    pub(crate) links: Vec<Link>,
}

impl Default for Batch {
    /// Empty; `only_qos1` starts true (nothing in it is anything else).
    fn default() -> Batch {
        Batch {
            ops: Vec::new(),
            urgent: false,
            only_qos1: true,
            qos1_puts: 0,
            turn: 0,
            acked: Vec::new(),
            qos2_in: false,
            links: Vec::new(),
        }
    }
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// True when there is nothing to commit: no operation, and no pairing with another
    /// shard's batch to tell the writer about.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.links.is_empty()
    }

    /// Operations queued.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Drops every operation (and what was recorded about them).
    pub fn clear(&mut self) {
        self.ops.clear();
        self.acked.clear();
        self.links.clear();
        self.reset_flags();
    }

    /// After the operations were taken (submitted).
    pub(crate) fn reset_flags(&mut self) {
        self.urgent = false;
        self.only_qos1 = true;
        self.qos1_puts = 0;
        self.qos2_in = false;
    }

    /// True if this batch remembers an incoming QoS 2 packet id as received. Such a batch
    /// and the batches holding its message's copies on other shards must reach the disk
    /// together (see [`Batch::awaits`]).
    pub fn receives_qos2(&self) -> bool {
        self.qos2_in
    }

    /// This batch must be written in one frame with the batch of shard `shard` that
    /// [covers](Batch::covers) our `ticket` (the counter the two shards share for what this
    /// one sent that one). Why: a QoS 2 message's packet id (remembered here) and its copies
    /// on another shard (stored there) are one fact. A crash that keeps the id but not the
    /// copies loses the message (the publisher's retransmission is taken as already
    /// received); one that keeps the copies but not the id delivers it twice (the
    /// retransmission is routed again). See `pairing` for the writer's side.
    pub fn awaits(&mut self, shard: usize, ticket: u64) {
        self.links.push(Link::Awaits {
            shard: shard as u16,
            ticket,
        });
    }

    /// This batch holds what shard `origin` sent this shard up to its `ticket` (the
    /// counterpart of [`Batch::awaits`]).
    pub fn covers(&mut self, origin: usize, ticket: u64) {
        self.links.push(Link::Covers {
            origin: origin as u16,
            ticket,
        });
    }

    /// True if output written after these operations must wait until they are durable.
    /// Two kinds of change do not hold output back:
    /// - forgetting an acknowledged delivery ([`Batch::delete_queued`]): its loss in a crash
    ///   only repeats what QoS 1/2 allows (the delivery is resent, as DUP, after a restart;
    ///   QoS 2 resumes at PUBREL). A batch of only those does not even ask for a write of
    ///   its own: it goes with the next write (or the next tick's, [`Store::nudge`](super::Store::nudge));
    /// - a QoS 1 delivery put or put in flight: a PUBLISH of it that reaches the client
    ///   before the store has it can at worst be sent again after a crash, which QoS 1
    ///   allows (QoS 2 deliveries do hold output: a second copy would break exactly-once).
    pub fn holds_output(&self) -> bool {
        // Every operation but a delete clears `only_qos1` unless it is a QoS 1 delivery's.
        !self.only_qos1
    }

    /// A QoS 1 delivery that was put in turn `turn` was acknowledged by its subscriber.
    pub(crate) fn qos1_acked(&mut self, turn: u64) {
        self.acked.push(turn);
    }

    fn push(&mut self, op: BatchOp) {
        let qos1 = match &op {
            BatchOp::DelQueued(..) => {
                self.ops.push(op);
                return;
            }
            BatchOp::PutQueued(_, _, d, _) => {
                let qos1 = d.qos == crate::protocol::QoS::AtLeastOnce;
                self.qos1_puts += u32::from(qos1);
                qos1
            }
            BatchOp::UpdateQueued(_, _, flow) => {
                flow.is_some_and(|f| f.state == OutState::AwaitPubAck)
            }
            BatchOp::PutQos2(..) => {
                self.qos2_in = true;
                false
            }
            _ => false,
        };
        self.urgent = true;
        self.only_qos1 &= qos1;
        self.ops.push(op);
    }

    /// Sets the retained message of `msg.topic` (an empty payload is stored as given: call
    /// [`Batch::delete_retained`] for a clearing PUBLISH). `version` is what
    /// `RetainedStore::set` returned: two shards can set one topic in one order and submit
    /// their batches in the other, and the store keeps the newer version, as memory did
    /// (0: no version, applied in order).
    pub fn put_retained(&mut self, msg: &SharedMessage, version: u64) {
        self.push(BatchOp::PutRetained(msg.clone(), version));
    }

    /// Clears the retained message of `topic` (`version` as for [`Batch::put_retained`]).
    pub fn delete_retained(&mut self, topic: &ByteStr, version: u64) {
        self.push(BatchOp::DelRetained(topic.clone(), version));
    }

    /// Creates or replaces a session (not its queue).
    pub fn put_session(&mut self, client_id: &ByteStr, session: &StoredSession) {
        self.push(BatchOp::PutSession(
            client_id.clone(),
            Box::new(session.clone()),
        ));
    }

    /// Deletes a session with its queued messages and incoming QoS 2 ids.
    pub fn delete_session(&mut self, client_id: &ByteStr) {
        self.push(BatchOp::DelSession(client_id.clone()));
    }

    /// Stores a delivery queued for (or in flight to) `client_id` under `seq` (the session's
    /// own increasing counter: recovery returns the queue in `seq` order). The message body is
    /// stored once however many sessions it is queued for (same `Arc`).
    pub fn put_queued(
        &mut self,
        client_id: &ByteStr,
        seq: u64,
        delivery: &Delivery,
        flow: Option<Flow>,
    ) {
        self.push(BatchOp::PutQueued(
            client_id.clone(),
            seq,
            delivery.clone(),
            flow,
        ));
    }

    /// Records that queued entry `seq` went in flight or moved on in its flow (PUBREC received:
    /// `AwaitPubComp`). Ignored if there is no such entry.
    pub fn update_queued(&mut self, client_id: &ByteStr, seq: u64, flow: Option<Flow>) {
        self.push(BatchOp::UpdateQueued(client_id.clone(), seq, flow));
    }

    /// Deletes a queued entry (acknowledged, expired or dropped).
    pub fn delete_queued(&mut self, client_id: &ByteStr, seq: u64) {
        self.push(BatchOp::DelQueued(client_id.clone(), seq));
    }

    /// Remembers an incoming QoS 2 packet id awaiting PUBREL.
    pub fn put_incoming_qos2(&mut self, client_id: &ByteStr, packet_id: u16) {
        self.push(BatchOp::PutQos2(client_id.clone(), packet_id));
    }

    /// Forgets an incoming QoS 2 packet id (PUBREL received).
    pub fn delete_incoming_qos2(&mut self, client_id: &ByteStr, packet_id: u16) {
        self.push(BatchOp::DelQos2(client_id.clone(), packet_id));
    }
}
