//! Persistence on the event loop: one store submission per loop turn, and output held until
//! what it depends on is durable (ARCHITECTURE.md §1.6).
//!
//! # One submission per turn, never a wait
//! Everything a turn changes (sessions, queued and in-flight QoS 1/2 messages, incoming QoS 2
//! ids, retained messages) goes into the shard's [`crate::store::Batch`];
//! [`Shard::commit_turn`] submits it once to the store's writer thread and gets a *ticket*
//! back. The shard does not wait: it goes on with the next turn while the writer writes and
//! syncs, and learns of the store's progress (`finished`, `durable`: tickets only grow) at the
//! end of each turn, or from the writer's wake-up when it is parked. One fsync covers the
//! batches of every shard and every turn that arrived while the previous one ran.
//!
//! # What waits for the store
//! - **Acknowledgements** (PUBACK/PUBREC to publishers) are encoded into the publisher's
//!   output where they belong (before the copies of the message to the publisher itself),
//!   but the connection's output is written only up to the first one held (`Conn::acks_held`,
//!   `Conn::ack_barrier`) until every copy of the message it acknowledges is durable:
//!   - copies queued on this shard: this turn's ticket is durable;
//!   - copies sent to another shard: that shard stores them in *its* batch. After the turn's
//!     deliveries to a shard, the publishing shard sends it a *ticket* of its own (a counter
//!     per destination); the destination answers `Committed` with the highest such ticket
//!     once the store ticket of the turn that took them is durable.
//!
//!   A turn that remembered an incoming QoS 2 id also tells the store which of those other
//!   shards' batches it awaits, and each shard's batch says which tickets it covers: the
//!   store writes such partners in one frame, so a crash keeps the id and its copies
//!   together or neither (`store::pairing`).
//!
//!   Held acknowledgements keep their order: once one is held, every later one waits behind
//!   it ([MQTT-4.6.0-2], [MQTT-4.6.0-3]). So does the rest of the publisher's output after it,
//!   above all the copies the message caused on the same connection: the answer to the
//!   client's packet goes first, then what it caused, as without persistence. Each release
//!   lets the output go up to the end of the released acknowledgement (the next one held
//!   is after it), so a busy publisher's output is never starved. Costs a count and a
//!   position per acknowledgement, no copy and no search.
//! - **Everything else a turn wrote** while its batch was not empty (deliveries with packet
//!   ids the store does not know yet, PUBREL/PUBCOMP after a state change) waits for the
//!   turn's ticket to be *finished*: each such connection gets a *mark* (ticket, position in
//!   its output stream) and is written only up to the last released mark (`Conn::gates`).
//!   Later output of the same connection queues behind it, so order is kept, but a busy
//!   connection is never starved: each mark releases its own prefix.
//!
//! # When the disk fails
//! A failed write (disk full, I/O error) stops the store's `durable` counter until a rewrite
//! of the whole live state succeeds (the writer tries one with the next batch; a quiet shard
//! asks for one every tick). Meanwhile an MQTT 5 publisher gets PUBACK/PUBREC with 0x80
//! (Unspecified error: the message was routed, but not stored, so the client may send it
//! again; the held acknowledgement's reason code is rewritten in place); a 3.x client, which
//! has no way to hear of a failure, gets no acknowledgement, nor any output that followed
//! it, until the store works again. The shard answers the tickets of other shards with
//! `CommitFailed` (the publishing shards fail their MQTT 5 acknowledgements the same way) and
//! `Committed` once a retry succeeds. Held output other than acknowledgements is released
//! when its ticket is finished, failed or not (as a non-persistent broker would have sent it).

use std::collections::VecDeque;
use std::sync::Arc;

use crate::protocol::{Packet, PubResp};
use crate::store::Store;

use super::Shard;

mod commit;

/// A PUBACK or PUBREC owed to a publisher. Kept small (not a `Packet`): every QoS 1/2
/// publish makes one, and they are moved through queues until sent.
#[derive(Debug, Clone, Copy)]
struct Ack {
    /// The publisher's connection.
    key: usize,
    /// Its session (a refused QoS 2 message's id is released there).
    slot: usize,
    packet_id: u16,
    reason: u8,
    /// PUBREC (QoS 2) rather than PUBACK.
    rec: bool,
    v5: bool,
    /// Where it is in its connection's output stream (`Conn::written` counts).
    at: u32,
}

impl Ack {
    fn packet(&self) -> Packet {
        let r = PubResp {
            packet_id: self.packet_id,
            reason: self.reason,
            ..Default::default()
        };
        if self.rec {
            Packet::PubRec(r)
        } else {
            Packet::PubAck(r)
        }
    }

    /// Its encoding while held: always with the reason code in 5.0 (which may then be turned
    /// into a failure in place, see `Shard::send_failed_ack`).
    fn encode(&self, out: &mut bytes::BytesMut) {
        use bytes::BufMut;
        let kind: u8 = if self.rec { 5 } else { 4 };
        out.put_u8(kind << 4);
        out.put_u8(if self.v5 { 3 } else { 2 });
        out.put_u16(self.packet_id);
        if self.v5 {
            out.put_u8(self.reason);
        }
    }

    /// Its length as `encode` writes it.
    fn len(&self) -> u32 {
        if self.v5 {
            5
        } else {
            4
        }
    }
}

/// The acknowledgements of one turn that wait for other shards or for the store.
#[derive(Debug, Default)]
struct Held {
    /// Per destination shard: the ticket that must be confirmed.
    needs: Vec<u64>,
    /// The turn whose batch must be settled (0: none).
    dep: u64,
    acks: Vec<Ack>,
}

/// A turn whose batch was submitted and is not settled yet: not durable, and (for a batch of
/// only QoS 1 deliveries) not every delivery acknowledged by its subscriber.
#[derive(Debug, Clone, Copy)]
struct Turn {
    ticket: u64,
    /// QoS 1 deliveries put in this turn and not acknowledged yet.
    outstanding: u32,
    /// The batch held only QoS 1 deliveries: settled once `outstanding` is 0.
    only_qos1: bool,
}

/// Output of one connection held until a store ticket is finished.
#[derive(Debug, Clone, Copy)]
struct Mark {
    ticket: u64,
    key: usize,
    /// The connection's output stream may be written up to here once `ticket` is finished.
    end: u32,
}

/// A confirmation owed to another shard once a turn is settled.
#[derive(Debug, Clone, Copy)]
struct Owed {
    dep: u64,
    origin: usize,
    upto: u64,
}

/// A shard's persistence state (present when `persistence` is on, or in a cluster, where
/// QoS 1/2 messages that go to other nodes are acknowledged once the cluster's stream holds
/// them: the gateway is one more destination, whose tickets it answers).
pub(crate) struct Durable {
    pub store: Arc<dyn Store>,
    /// The store keeps the shard's batches (persistence is on): see [`Durable::new`].
    pub persists: bool,
    /// The cluster gateway's destination index, if any.
    pub gateway: Option<usize>,
    /// The message being routed went to the cluster's message stream (taken by the
    /// acknowledgement that follows its routing, see [`Durable::must_hold`]).
    to_cluster: bool,
    /// This turn's acknowledgements.
    turn_acks: Vec<Ack>,
    /// Per connection (slab key): its acknowledgements held in its output (`Conn::acks_held`
    /// says whether there are any; the count is kept here, where it is needed, to keep every
    /// connection small).
    acks_held: Vec<u32>,
    /// Earlier turns' acknowledgements still waiting, oldest first.
    held: VecDeque<Held>,
    /// Emptied `Held`s, reused (their Vecs keep their allocations).
    spare: Vec<Held>,
    /// Per destination: QoS 1/2 deliveries were pushed to it this turn (a ticket is owed).
    owe_ticket: Vec<bool>,
    /// Per destination: the last ticket sent.
    sent: Vec<u64>,
    /// Per destination: the highest ticket it confirmed durable.
    confirmed: Vec<u64>,
    /// Per destination: the highest ticket it could not make durable.
    failed_upto: Vec<u64>,
    /// Per origin shard: the highest ticket received (its deliveries are in our batch).
    seen: Vec<u64>,
    /// Per origin shard: the highest ticket already in `owed`.
    owing: Vec<u64>,
    /// Confirmations to send as store tickets become durable, in ticket order.
    owed: VecDeque<Owed>,
    /// Per origin shard: the highest ticket confirmed to it.
    reported: Vec<u64>,
    /// Per origin shard: the highest ticket reported failed to it.
    reported_failed: Vec<u64>,
    /// This shard's last store ticket that output waits for (all it submitted before
    /// is covered by it).
    last: u64,
    /// This shard's last store ticket of any kind (shutdown waits for it).
    submitted: u64,
    /// The store's progress as last read.
    finished: u64,
    durable: u64,
    /// Output held until a ticket is finished, in ticket order.
    marks: VecDeque<Mark>,
    /// Unsettled turns, oldest first; `turns[0]` is turn number `turn_base`.
    turns: VecDeque<Turn>,
    turn_base: u64,
    /// A write of ours failed and no rewrite has succeeded since.
    failing: bool,
    /// Failed writes seen (logged at powers of two).
    failures: u64,
    /// The one urgent submission whose commit latency is being measured: its ticket and
    /// when it was submitted (sampled, so a clock is read at most twice per commit).
    pub(super) latency_sample: Option<(u64, std::time::Instant)>,
}

impl Durable {
    /// `persists`: the store keeps what the shard records (persistence on); false for a
    /// `NullStore` that only holds acknowledgements behind the cluster gateway. `gateway`:
    /// the cluster gateway's destination index (one past the shards), if the node is in a
    /// cluster.
    pub fn new(
        store: Arc<dyn Store>,
        shards: usize,
        persists: bool,
        gateway: Option<usize>,
    ) -> Durable {
        let durable = store.durable();
        let shards = shards + usize::from(gateway.is_some());
        Durable {
            persists,
            gateway,
            to_cluster: false,
            store,
            turn_acks: Vec::new(),
            acks_held: Vec::new(),
            held: VecDeque::new(),
            spare: Vec::new(),
            owe_ticket: vec![false; shards],
            sent: vec![0; shards],
            confirmed: vec![0; shards],
            failed_upto: vec![0; shards],
            seen: vec![0; shards],
            owing: vec![0; shards],
            owed: VecDeque::new(),
            reported: vec![0; shards],
            reported_failed: vec![0; shards],
            last: durable,
            submitted: durable,
            finished: durable,
            durable,
            marks: VecDeque::new(),
            turns: VecDeque::new(),
            turn_base: 1,
            failing: false,
            failures: 0,
            latency_sample: None,
        }
    }

    /// A QoS 1/2 delivery was pushed to shard `to`.
    pub fn delivered_to(&mut self, to: usize) {
        self.owe_ticket[to] = true;
    }

    /// A QoS 1/2 message went to the cluster's message stream this turn.
    pub fn sent_to_cluster(&mut self) {
        if let Some(to) = self.gateway {
            self.owe_ticket[to] = true;
            self.to_cluster = true;
        }
    }

    /// Whether the acknowledgement of the message just routed, to connection `key`, must be
    /// held: always with persistence; without, only if the message went to the cluster's
    /// stream or the connection has an earlier acknowledgement held (order). So a clustered
    /// node's acknowledgements of messages that stay on it go out at once, as a lone node's.
    pub fn must_hold(&mut self, key: usize) -> bool {
        let to_cluster = std::mem::take(&mut self.to_cluster);
        self.persists || to_cluster || self.acks_held.get(key).is_some_and(|n| *n > 0)
    }

    /// Shard `from` sent ticket `ticket`: everything it sent before is in our batch.
    pub fn ticket(&mut self, from: usize, ticket: u64) {
        self.seen[from] = self.seen[from].max(ticket);
    }

    /// Shard `from` made our deliveries up to ticket `upto` durable.
    pub fn committed(&mut self, from: usize, upto: u64) {
        self.confirmed[from] = self.confirmed[from].max(upto);
    }

    /// Shard `from` could not store our deliveries up to ticket `upto`.
    pub fn commit_failed(&mut self, from: usize, upto: u64) {
        self.failed_upto[from] = self.failed_upto[from].max(upto);
    }

    /// A connection closed: its acknowledgements are never sent (the client sends the
    /// PUBLISH again after reconnecting, with DUP), and its marks go (the slot may be reused).
    pub fn forget(&mut self, key: usize) {
        if let Some(n) = self.acks_held.get_mut(key) {
            *n = 0;
        }
        self.turn_acks.retain(|a| a.key != key);
        for h in &mut self.held {
            h.acks.retain(|a| a.key != key);
        }
        self.marks.retain(|m| m.key != key);
    }

    /// True when the store moved on since this shard last looked and something here waits
    /// for it (the loop then must not block in `poll`).
    pub fn progress_waiting(&self) -> bool {
        (!self.marks.is_empty() || !self.held.is_empty() || !self.owed.is_empty())
            && self.store.finished() > self.finished
    }

    /// Where turn `dep` is in `turns` (`None` for 0, a settled turn already dropped, or one
    /// not recorded).
    fn turn_index(&self, dep: u64) -> Option<usize> {
        usize::try_from(dep.checked_sub(self.turn_base)?).ok()
    }

    fn turn(&self, dep: u64) -> Option<&Turn> {
        self.turns.get(self.turn_index(dep)?)
    }

    /// Turn `dep`'s batch no longer needs the store: it is durable, or it held only QoS 1
    /// deliveries and each was acknowledged by its subscriber (no copy is left to lose).
    fn settled(&self, dep: u64) -> bool {
        self.turn(dep)
            .is_none_or(|t| t.ticket <= self.durable || (t.only_qos1 && t.outstanding == 0))
    }

    /// Turn `dep`'s write failed (and no rewrite has made it durable since).
    fn write_failed(&self, dep: u64) -> bool {
        !self.settled(dep) && self.turn(dep).is_some_and(|t| t.ticket <= self.finished)
    }

    /// A QoS 1 delivery put in turn `dep` was acknowledged.
    fn acked(&mut self, dep: u64) {
        if let Some(t) = self.turn_index(dep).and_then(|i| self.turns.get_mut(i)) {
            t.outstanding = t.outstanding.saturating_sub(1);
        }
    }

    /// Forgets the settled turns at the front.
    fn drop_settled(&mut self) {
        while self.turns.front().is_some() && self.settled(self.turn_base) {
            self.turns.pop_front();
            self.turn_base += 1;
        }
    }

    /// Every copy `h` acknowledges is durable (or acknowledged downstream).
    fn ready(&self, h: &Held) -> bool {
        self.settled(h.dep) && h.needs.iter().zip(&self.confirmed).all(|(n, c)| n <= c)
    }

    /// A copy `h` acknowledges could not be stored (and has not been since).
    fn failed(&self, h: &Held) -> bool {
        self.write_failed(h.dep)
            || h.needs
                .iter()
                .zip(self.confirmed.iter().zip(&self.failed_upto))
                .any(|(n, (c, f))| n > c && n <= f)
    }

    /// Holds `acks` behind turn `dep` and the cross-shard tickets sent so far.
    /// (The spare's empty `acks` Vec becomes the next turn's, so neither allocates.)
    fn hold(&mut self, dep: u64, acks: Vec<Ack>) {
        let mut h = self.spare.pop().unwrap_or_default();
        h.needs.clear();
        h.needs.extend_from_slice(&self.sent);
        h.dep = dep;
        let empty = std::mem::replace(&mut h.acks, acks);
        if self.turn_acks.capacity() == 0 {
            self.turn_acks = empty;
        }
        self.held.push_back(h);
    }

    /// Keeps an emptied `Held` for reuse.
    fn recycle(&mut self, mut h: Held) {
        if self.spare.len() < 64 {
            h.acks.clear();
            self.spare.push(h);
        }
    }
}
