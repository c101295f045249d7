//! Persistence on the event loop: one store commit per loop turn, and acknowledgements held
//! until what they acknowledge is durable (issue 6, DESIGN.md 1.6).
//!
//! # One commit per turn
//! Everything a turn changes (sessions, queued and in-flight QoS 1/2 messages, incoming QoS 2
//! ids, retained messages) goes into the shard's [`Batch`]; [`Shard::commit_turn`] commits it
//! once, before the turn's writes are flushed. Shards that commit at the same time share one
//! write and one fsync (the store's group commit), so the cost is one fsync per turn, not per
//! message.
//!
//! # Acknowledgements wait for durability
//! A PUBACK/PUBREC is not written with the rest of the turn's output but collected, and written
//! only once every copy of the message it acknowledges is durable:
//! - copies queued on this shard: by this turn's commit;
//! - copies sent to another shard: that shard stores them in *its* batch. After the turn's
//!   deliveries to a shard, the publishing shard sends it a *ticket* (a counter per
//!   destination); the destination commits its turn, then answers `Committed` with the highest
//!   ticket it has made durable. Acknowledgements of a turn that sent tickets are held (in
//!   order, per shard) until every destination has confirmed its ticket.
//!
//! Held acknowledgements keep their order: once one is held, every later one waits behind it
//! ([MQTT-4.6.0-2], [MQTT-4.6.0-3]).
//!
//! # When the disk fails
//! A failed commit (disk full, I/O error) fails the acknowledgements of that turn: an MQTT 5
//! client gets PUBACK/PUBREC with 0x80 (Unspecified error: the message was routed, but not
//! stored, so the client may send it again); a 3.x client, which has no way to hear of a
//! failure, gets no acknowledgement until the store works again. The shard answers the
//! tickets of that turn with `CommitFailed` (the publishing shards fail their MQTT 5
//! acknowledgements the same way) and confirms nothing until a retry succeeds; each tick
//! retries by rewriting the store's whole live state, which includes everything that failed.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::protocol::reason::v5;
use crate::protocol::Packet;
use crate::store::Store;

use super::inbox::ShardMsg;
use super::Shard;

/// A PUBACK or PUBREC owed to a publisher.
#[derive(Debug)]
struct Ack {
    /// The publisher's connection.
    key: usize,
    /// Its session (a refused QoS 2 message's id is released there).
    slot: usize,
    packet: Packet,
    v5: bool,
}

/// The acknowledgements of one turn that wait for other shards or for the store.
#[derive(Debug)]
struct Held {
    /// Per destination shard: the ticket that must be confirmed.
    needs: Vec<u64>,
    /// The number of successful local commits that must have happened.
    epoch: u64,
    acks: Vec<Ack>,
}

/// A shard's persistence state (present when `persistence` is on).
pub(crate) struct Durable {
    pub store: Arc<dyn Store>,
    /// This turn's acknowledgements.
    turn_acks: Vec<Ack>,
    /// Earlier turns' acknowledgements still waiting, oldest first.
    held: VecDeque<Held>,
    /// Per destination: QoS 1/2 deliveries were pushed to it this turn (a ticket is owed).
    owe_ticket: Vec<bool>,
    /// Per destination: the last ticket sent.
    sent: Vec<u64>,
    /// Per destination: the highest ticket it confirmed durable.
    confirmed: Vec<u64>,
    /// Per origin shard: the highest ticket received (its deliveries are in our batch).
    seen: Vec<u64>,
    /// Per origin shard: the highest ticket confirmed to it.
    reported: Vec<u64>,
    /// Per origin shard: the highest ticket reported failed to it.
    reported_failed: Vec<u64>,
    /// Per destination: the highest ticket it could not make durable.
    failed_upto: Vec<u64>,
    /// Successful commits so far.
    epoch: u64,
    /// The last commit failed; nothing is confirmed until a retry succeeds.
    failed: bool,
    /// Commit failures (logged at powers of two).
    failures: u64,
}

impl Durable {
    pub fn new(store: Arc<dyn Store>, shards: usize) -> Durable {
        Durable {
            store,
            turn_acks: Vec::new(),
            held: VecDeque::new(),
            owe_ticket: vec![false; shards],
            sent: vec![0; shards],
            confirmed: vec![0; shards],
            seen: vec![0; shards],
            reported: vec![0; shards],
            reported_failed: vec![0; shards],
            failed_upto: vec![0; shards],
            epoch: 0,
            failed: false,
            failures: 0,
        }
    }

    /// A QoS 1/2 delivery was pushed to shard `to`.
    pub fn delivered_to(&mut self, to: usize) {
        self.owe_ticket[to] = true;
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

    /// True if a destination failed to store a copy `h` waits for (and has not stored it
    /// since).
    fn failed(&self, h: &Held) -> bool {
        h.needs
            .iter()
            .zip(self.confirmed.iter().zip(&self.failed_upto))
            .any(|(n, (c, f))| n > c && n <= f)
    }

    /// A connection closed: its acknowledgements are never sent (the client sends the
    /// PUBLISH again after reconnecting, with DUP).
    pub fn forget(&mut self, key: usize) {
        self.turn_acks.retain(|a| a.key != key);
        for h in &mut self.held {
            h.acks.retain(|a| a.key != key);
        }
    }

    fn ready(&self, h: &Held) -> bool {
        h.epoch <= self.epoch
            && !self.failed
            && h.needs.iter().zip(&self.confirmed).all(|(n, c)| n <= c)
    }
}

impl Shard {
    /// Sends a PUBACK/PUBREC to a publisher: at once without persistence, otherwise once
    /// what it acknowledges is durable (see the module documentation).
    pub(crate) fn send_ack(&mut self, key: usize, slot: usize, packet: Packet) {
        let v5 = self.conns.get(key).is_some_and(|c| c.is_v5());
        match &mut self.durable {
            None => self.send(key, &packet),
            Some(d) => d.turn_acks.push(Ack {
                key,
                slot,
                packet,
                v5,
            }),
        }
    }

    /// Ends a loop turn's persistence: tickets for this turn's cross-shard deliveries, one
    /// commit, confirmations to the shards whose deliveries are now durable, and the
    /// acknowledgements that may go out. `tick` allows a retry after a failed commit.
    pub(crate) fn commit_turn(&mut self, tick: bool) {
        let Some(d) = self.durable.as_mut() else {
            return;
        };
        let me = self.id;
        let mut ticketed = false;
        for to in 0..d.owe_ticket.len() {
            if std::mem::take(&mut d.owe_ticket[to]) {
                d.sent[to] += 1;
                self.outbox.push(
                    to,
                    ShardMsg::Ticket {
                        from: me as u16,
                        ticket: d.sent[to],
                    },
                );
                self.wake_pending[to] = true;
                ticketed = true;
            }
        }
        if !self.batch.is_empty() {
            match d.store.commit(&mut self.batch) {
                Ok(()) => d.failed = false,
                Err(e) => {
                    d.failed = true;
                    d.failures += 1;
                    if d.failures.is_power_of_two() {
                        log::error!(
                            "Persistence failed ({e}); publishes are not acknowledged as stored \
                             until it works again ({} failed commits on shard {me}).",
                            d.failures
                        );
                    }
                }
            }
        } else if d.failed && tick {
            // Rewrites everything live, including what the failed commits held.
            if d.store.compact().is_ok() {
                log::warn!("Persistence works again (shard {me}).");
                d.failed = false;
            }
        }
        if !d.failed {
            d.epoch += 1;
        }
        self.answer_tickets();
        let Some(d) = self.durable.as_mut() else {
            return;
        };
        let mut acks = std::mem::take(&mut d.turn_acks);
        if d.failed {
            // v5 publishers hear of the failure now; 3.x ones wait for a working store.
            let (failed, wait): (Vec<Ack>, Vec<Ack>) = acks.into_iter().partition(|a| a.v5);
            if !wait.is_empty() {
                d.held.push_back(Held {
                    needs: d.sent.clone(),
                    epoch: d.epoch + 1,
                    acks: wait,
                });
            }
            for a in failed {
                self.send_failed_ack(a);
            }
        } else if !acks.is_empty() {
            if ticketed || !d.held.is_empty() {
                d.held.push_back(Held {
                    needs: d.sent.clone(),
                    epoch: d.epoch,
                    acks,
                });
            } else {
                for a in acks.drain(..) {
                    self.send(a.key, &a.packet);
                }
                // Keep the allocation for the next turn.
                self.durable.as_mut().expect("checked").turn_acks = acks;
            }
        }
        self.release_held();
    }

    /// Answers the shards whose deliveries this shard received: `Committed` for the tickets
    /// now durable, or, while the store fails, `CommitFailed` (once per ticket).
    fn answer_tickets(&mut self) {
        let Some(d) = self.durable.as_mut() else {
            return;
        };
        let me = self.id as u16;
        for from in 0..d.seen.len() {
            let upto = d.seen[from];
            let msg = if d.failed {
                if upto <= d.reported[from].max(d.reported_failed[from]) {
                    continue;
                }
                d.reported_failed[from] = upto;
                ShardMsg::CommitFailed { from: me, upto }
            } else {
                if upto <= d.reported[from] {
                    continue;
                }
                d.reported[from] = upto;
                ShardMsg::Committed { from: me, upto }
            };
            self.outbox.push(from, msg);
            self.wake_pending[from] = true;
        }
    }

    /// Writes the held acknowledgements whose copies are all durable now, oldest first. Where
    /// another shard failed to store a copy, MQTT 5 publishers get their failure now and 3.x
    /// ones keep waiting (see the module documentation).
    pub(crate) fn release_held(&mut self) {
        loop {
            let Some(d) = self.durable.as_mut() else {
                return;
            };
            let Some(h) = d.held.front() else {
                return;
            };
            if d.ready(h) {
                let h = d.held.pop_front().expect("checked");
                for a in h.acks {
                    self.send(a.key, &a.packet);
                }
            } else if d.failed(h) {
                let h = d.held.front_mut().expect("checked");
                let (failed, wait): (Vec<Ack>, Vec<Ack>) =
                    std::mem::take(&mut h.acks).into_iter().partition(|a| a.v5);
                h.acks = wait;
                let done = h.acks.is_empty();
                if done {
                    d.held.pop_front();
                }
                for a in failed {
                    self.send_failed_ack(a);
                }
                if !done {
                    return;
                }
            } else {
                return;
            }
        }
    }

    /// An acknowledgement whose message could not be stored, to an MQTT 5 client.
    fn send_failed_ack(&mut self, a: Ack) {
        let packet = match a.packet {
            Packet::PubAck(mut r) => {
                if r.reason < 0x80 {
                    r.reason = v5::UNSPECIFIED_ERROR;
                }
                Packet::PubAck(r)
            }
            Packet::PubRec(mut r) => {
                if r.reason < 0x80 {
                    r.reason = v5::UNSPECIFIED_ERROR;
                }
                // A PUBREC with a failure code ends the flow: forget the id (MQTT 5 4.3.3).
                if let Some(s) = self.sessions.get_mut(a.slot) {
                    s.session
                        .release_incoming_qos2(r.packet_id, &mut self.batch);
                }
                Packet::PubRec(r)
            }
            other => other,
        };
        self.send(a.key, &packet);
    }
}
