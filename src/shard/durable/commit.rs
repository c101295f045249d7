//! The shard's side of persistence: each turn's store submission, the acknowledgements held
//! until what they acknowledge is durable, and the progress the store writer reports back.
//! The bookkeeping these use (`Durable`, held acknowledgements, turns) is the parent module's;
//! this is a child module so that it reads that state without widening its visibility.

use crate::protocol::reason::v5;

use super::super::inbox::ShardMsg;
use super::super::links::LINK_BASE;
use super::{Ack, Mark, Owed, Shard, Turn};

impl Shard {
    /// Sends a PUBACK/PUBREC to a publisher: at once without persistence, otherwise once
    /// what it acknowledges is durable (see the module documentation).
    /// `rec`: a PUBREC (QoS 2), else a PUBACK; `reason` as it is to be sent. `before`: where
    /// in the connection's write buffer it belongs, ahead of what the message's routing wrote
    /// there since (its copies to the publisher itself: the answer to the client's packet
    /// first, then what it caused; mosquitto 2.0.11 sends the copy first). Its reason code
    /// (5.0: "no matching subscribers") is known only after routing, so it is encoded after
    /// those copies and moved in front of them: a copy of this message's own deliveries to its
    /// publisher, and nothing else.
    pub(crate) fn send_ack(
        &mut self,
        key: usize,
        slot: usize,
        rec: bool,
        packet_id: u16,
        reason: u8,
        before: usize,
    ) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let mut ack = Ack {
            key,
            slot,
            packet_id,
            reason,
            rec,
            v5: conn.is_v5(),
            at: 0,
        };
        let routed_end = conn.wbuf.len();
        let hold = self.durable.as_mut().is_some_and(|d| d.must_hold(key));
        match self.durable.as_mut().filter(|_| hold) {
            None => self.send(key, &ack.packet()),
            Some(d) => {
                self.buffers.ensure(&mut conn.wbuf);
                ack.encode(&mut conn.wbuf);
                conn.mark_dirty(key, &mut self.dirty);
                // Held in the stream: nothing from it on is written until it is released.
                ack.at = conn.written.wrapping_add(before.min(routed_end) as u32);
                if d.acks_held.len() <= key {
                    d.acks_held.resize(key + 1, 0);
                }
                if d.acks_held[key] == 0 {
                    conn.ack_barrier = ack.at;
                    conn.acks_held = true;
                }
                d.acks_held[key] += 1;
                d.turn_acks.push(ack);
            }
        }
        // Nothing of the turn's output was written meanwhile (flushes happen at the end of
        // the turn), so the positions still hold.
        if let Some(conn) = self.conns.get_mut(key) {
            let end = conn.wbuf.len();
            if routed_end > before && end > routed_end {
                conn.wbuf[before..end].rotate_right(end - routed_end);
            }
        }
    }

    /// Whether persistence is on (the shard records its changes in its batch, to be stored).
    #[inline]
    pub(crate) fn persistent(&self) -> bool {
        self.durable.as_ref().is_some_and(|d| d.persists)
    }

    /// The cluster gateway answered this shard's ticket: the cluster's message stream holds
    /// (`ok`) or failed to store the QoS 1/2 messages sent before it.
    pub(crate) fn cluster_settled(&mut self, ticket: u64, ok: bool) {
        if let Some(d) = &mut self.durable {
            if let Some(gw) = d.gateway {
                match ok {
                    true => d.committed(gw, ticket),
                    false => d.commit_failed(gw, ticket),
                }
            }
        }
    }

    /// Holds the PUBACK/PUBREC of a message a bridge received from its remote (`key`: the
    /// link's `LINK_BASE + i`) until the message is durable, exactly as a client's: it joins
    /// the turn's acknowledgements. It is not in any connection's output (the link encodes
    /// it when it is released), and a failed write holds it, as for a 3.x client, until the
    /// store works again: the remote keeps the message meanwhile.
    pub(crate) fn hold_link_ack(&mut self, key: usize, packet_id: u16, rec: bool) {
        if let Some(d) = &mut self.durable {
            d.turn_acks.push(Ack {
                key,
                slot: usize::MAX,
                packet_id,
                reason: 0,
                rec,
                v5: false,
                at: 0,
            });
        }
    }

    /// An acknowledgement held in its connection's stream may go (with what follows it up to
    /// the next one still held).
    fn release_ack(&mut self, a: &Ack) {
        if a.key >= LINK_BASE {
            self.link_acknowledged(a.key - LINK_BASE, a.packet_id, a.rec);
            return;
        }
        let (Some(conn), Some(d)) = (self.conns.get_mut(a.key), self.durable.as_mut()) else {
            return;
        };
        let Some(n) = d.acks_held.get_mut(a.key) else {
            return;
        };
        *n = n.saturating_sub(1);
        conn.acks_held = *n > 0;
        // Released in stream order: the next one held is at or after its end.
        conn.ack_barrier = a.at.wrapping_add(a.len());
        conn.mark_dirty(a.key, &mut self.dirty);
    }

    /// Ends a loop turn's persistence: tickets for this turn's cross-shard deliveries, the
    /// turn's batch submitted to the store, marks on the output that must wait for it, and
    /// then whatever the store's progress releases. `tick` asks for a retry after a failed
    /// write when nothing else would cause one.
    pub(crate) fn commit_turn(&mut self, tick: bool) {
        let Some(d) = self.durable.as_mut() else {
            return;
        };
        let me = self.id;
        let mut ticketed = false;
        // A message routed to the cluster that no acknowledgement followed (a will, a
        // bridge's message, a closed publisher): nothing later is held for it.
        d.to_cluster = false;
        // A QoS 2 message's id and its copies on other shards reach the disk in one frame
        // (`store::pairing`): this batch awaits theirs, theirs say what they cover.
        let paired = self.batch.receives_qos2();
        for to in 0..d.owe_ticket.len() {
            if std::mem::take(&mut d.owe_ticket[to]) {
                d.sent[to] += 1;
                if Some(to) == d.gateway {
                    // The cluster's message stream: its answer comes through the link.
                    let sent = self.cluster.as_mut().is_some_and(|c| c.ticket(d.sent[to]));
                    if !sent {
                        d.commit_failed(to, d.sent[to]);
                    }
                    ticketed = true;
                    continue;
                }
                if paired {
                    self.batch.awaits(to, d.sent[to]);
                }
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
        for dep in self.batch.acked.drain(..) {
            d.acked(dep);
        }
        for origin in 0..d.seen.len() {
            if d.seen[origin] > d.owing[origin] {
                self.batch.covers(origin, d.seen[origin]);
            }
        }
        // The turn this turn's acknowledgements and confirmations depend on (0: none).
        let mut dep = 0;
        if !self.batch.urgent {
            if !self.batch.is_empty() {
                // Only deletes of acknowledged deliveries (and what this batch covers for
                // other shards' pairs): written with the next write.
                d.submitted = d.store.submit(me, &mut self.batch);
            }
            if tick {
                d.store.nudge();
            }
            if tick && d.failing && d.store.finished() >= d.last {
                // Nothing new to write: ask for the rewrite that makes the failed writes
                // durable.
                d.last = d.store.request_rewrite();
                d.submitted = d.last;
            }
        } else {
            let holds = self.batch.holds_output();
            dep = self.batch.turn;
            if d.turns.is_empty() {
                d.turn_base = dep;
            }
            let mut turn = Turn {
                ticket: 0,
                outstanding: self.batch.qos1_puts,
                only_qos1: self.batch.only_qos1,
            };
            d.last = d.store.submit(me, &mut self.batch);
            d.submitted = d.last;
            if d.latency_sample.is_none() {
                d.latency_sample = Some((d.last, std::time::Instant::now()));
            }
            turn.ticket = d.last;
            d.turns.push_back(turn);
            self.batch.turn = dep + 1;
            if holds {
                // Everything written this turn while the batch held output back waits for
                // it (those connections were only marked dirty, see `Shard::flush`).
                for &key in &self.dirty {
                    if let Some(conn) = self.conns.get_mut(key) {
                        if !conn.wbuf.is_empty() {
                            conn.gates += 1;
                            d.marks.push_back(Mark {
                                ticket: d.last,
                                key,
                                end: conn.output_end(),
                            });
                        }
                    }
                }
            }
        }
        for origin in 0..d.seen.len() {
            if d.seen[origin] > d.owing[origin] {
                d.owing[origin] = d.seen[origin];
                d.owed.push_back(Owed {
                    dep,
                    origin,
                    upto: d.seen[origin],
                });
            }
        }
        let acks = std::mem::take(&mut d.turn_acks);
        if !acks.is_empty() {
            if ticketed || !d.held.is_empty() || !d.settled(dep) {
                d.hold(dep, acks);
            } else {
                let mut acks = acks;
                for a in acks.drain(..) {
                    self.release_ack(&a);
                }
                // Keep the allocation for the next turn.
                self.durable.as_mut().expect("checked").turn_acks = acks;
            }
        }
        self.absorb_progress();
    }

    /// Releases what the store's progress (and the other shards' confirmations) allow:
    /// marked output, confirmations to other shards, held acknowledgements.
    pub(crate) fn absorb_progress(&mut self) {
        let Some(d) = self.durable.as_mut() else {
            return;
        };
        let me = self.id;
        // `finished` first: the writer raises `durable` before `finished`, so a `durable`
        // read after is at least as new, and a success never looks like a failure.
        let finished = d.store.finished();
        let durable = d.store.durable();
        d.durable = durable;
        if finished > d.finished {
            d.finished = finished;
            if let Some((_, at)) = d.latency_sample.filter(|(t, _)| *t <= durable) {
                self.stats.store_commits += 1;
                self.stats.store_commit_nanos += at.elapsed().as_nanos() as u64;
                d.latency_sample = None;
            } else if d.latency_sample.is_some_and(|(t, _)| t <= finished) {
                // Finished but failed: not a commit; measure the next one.
                d.latency_sample = None;
            }
            let failed = d.last <= finished && d.last > durable;
            if failed && !d.failing {
                d.failures += 1;
                if d.failures.is_power_of_two() {
                    log::error!(
                        "Persistence failed; publishes are not acknowledged as stored until it \
                         works again ({} failed writes seen by shard {me}).",
                        d.failures
                    );
                }
            }
            if d.failing && d.last <= durable {
                log::warn!("Persistence works again (shard {me}).");
            }
            d.failing = failed || (d.failing && d.last > durable);
            while let Some(m) = d.marks.front().copied() {
                if m.ticket > finished {
                    break;
                }
                d.marks.pop_front();
                if let Some(conn) = self.conns.get_mut(m.key) {
                    conn.release_to(m.end);
                    conn.mark_dirty(m.key, &mut self.dirty);
                }
            }
        }
        self.answer_tickets();
        self.release_held();
        if let Some(d) = self.durable.as_mut() {
            d.drop_settled();
        }
    }

    /// Answers the shards whose deliveries this shard stored: `Committed` for the tickets now
    /// durable, or, for those whose write failed, `CommitFailed` (once per ticket).
    fn answer_tickets(&mut self) {
        let Some(d) = self.durable.as_mut() else {
            return;
        };
        let me = self.id as u16;
        let mut i = 0;
        while let Some(&o) = d.owed.get(i) {
            let msg = if d.settled(o.dep) {
                d.owed.remove(i);
                if o.upto <= d.reported[o.origin] {
                    continue;
                }
                d.reported[o.origin] = o.upto;
                ShardMsg::Committed {
                    from: me,
                    upto: o.upto,
                }
            } else if d.write_failed(o.dep) {
                i += 1;
                if o.upto <= d.reported[o.origin].max(d.reported_failed[o.origin]) {
                    continue;
                }
                d.reported_failed[o.origin] = o.upto;
                ShardMsg::CommitFailed {
                    from: me,
                    upto: o.upto,
                }
            } else {
                break;
            };
            self.outbox.push(o.origin, msg);
            self.wake_pending[o.origin] = true;
        }
    }

    /// Writes the held acknowledgements whose copies are all durable now, oldest first. Where
    /// a copy could not be stored, MQTT 5 publishers get their failure now and 3.x ones keep
    /// waiting (see the module documentation).
    pub(crate) fn release_held(&mut self) {
        loop {
            let Some(d) = self.durable.as_mut() else {
                return;
            };
            let Some(h) = d.held.front() else {
                return;
            };
            if d.ready(h) {
                let mut h = d.held.pop_front().expect("checked");
                let mut acks = std::mem::take(&mut h.acks);
                for a in acks.drain(..) {
                    self.release_ack(&a);
                }
                h.acks = acks;
                self.durable.as_mut().expect("checked").recycle(h);
            } else if d.failed(h) {
                let h = d.held.front_mut().expect("checked");
                if h.acks.iter().all(|a| !a.v5) {
                    return;
                }
                let (failed, wait): (Vec<Ack>, Vec<Ack>) =
                    std::mem::take(&mut h.acks).into_iter().partition(|a| a.v5);
                h.acks = wait;
                let done = h.acks.is_empty();
                if done {
                    let h = d.held.pop_front().expect("checked");
                    d.recycle(h);
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

    /// Waits until everything this shard submitted is finished (shutdown).
    pub(crate) fn wait_for_store(&mut self) {
        if let Some(d) = &self.durable {
            if let Err(e) = d.store.wait(d.submitted) {
                log::error!("Persistence: the last writes failed: {e}");
            }
        }
        self.absorb_progress();
    }

    /// An acknowledgement whose message could not be stored, to an MQTT 5 client.
    fn send_failed_ack(&mut self, mut a: Ack) {
        if a.reason < 0x80 {
            a.reason = v5::UNSPECIFIED_ERROR;
        }
        if a.rec {
            // A PUBREC with a failure code ends the flow: forget the id (MQTT 5 4.3.3).
            if let Some(s) = self.sessions.get_mut(a.slot) {
                s.session
                    .release_incoming_qos2(a.packet_id, &mut self.batch);
            }
        }
        if let Some(conn) = self.conns.get_mut(a.key) {
            // Held, so not written yet: its reason code (the last byte, see `Ack::encode`)
            // is rewritten in place.
            let reason_at = a.at.wrapping_sub(conn.written) as usize + 4;
            if let Some(byte) = conn.wbuf.get_mut(reason_at) {
                *byte = a.reason;
            }
        }
        self.release_ack(&a);
    }
}
