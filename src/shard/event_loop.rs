//! The loop and its turn: poll, dispatch each ready event, drain the inbox, then end the
//! turn (store batch, outbox batches, flushes, wake-ups in that order) and, on time, tick.
//! The first stop on the path of one PUBLISH (ARCHITECTURE.md §4).

use std::io;
use std::time::{Duration, Instant};

use mio::Token;

use super::dormancy::{self, Dormancy, HOSTED_BASE};
use super::inbox::{Batch, ShardMsg};
use super::lifecycle::Close;
use super::links::LINK_BASE;
use super::{Shard, LINGER_BASE, LISTENER_BASE, TICK, WAKER};
use crate::cluster::Inbound;
use crate::reactor::{Event, Events, Input, Reactor};
use crate::session::memory;

/// Messages from other nodes routed per loop turn at most.
const CLUSTER_PER_TURN: usize = 1024;

impl Shard {
    /// Runs the loop on `poll` (the one [`Shard::new`] was given) until the broker shuts
    /// down. Shard thread only. The shard lives in its [`super::handoff::Slot`], locked for each turn
    /// and released while the loop sleeps in `poll`, when a peer may run its handed-off turn.
    pub fn run(mut self, mut poll: Reactor) -> io::Result<()> {
        self.start_links();
        if let Some(sends) = &self.sends {
            sends.prepare();
        }
        let slot = self.peers[self.id].slot.clone();
        let peers = self.peers.clone();
        let me = &peers[self.id].beacon;
        if poll.epoll_fd().is_none() {
            // io_uring: a ring has one issuer thread, its loop's.
            self.dormancy = Dormancy::new(false);
        }
        me.started(poll.epoll_fd());
        *slot.lock() = Some(self);
        let mut events = Events::with_capacity(1024);
        let mut next_tick = Instant::now() + TICK;
        let ended = loop {
            let (timeout, doze) = match slot.lock().as_mut() {
                // A shard resumed from dormancy at shutdown polls without waiting: its
                // wake-up may have been read by its host.
                Some(shard) if shard.shared.is_shutting_down() => (Duration::ZERO, false),
                Some(shard) => {
                    let timeout = shard.park(next_tick);
                    (timeout, shard.wants_to_doze(timeout))
                }
                None => break Ok(()),
            };
            if doze {
                (poll, next_tick) =
                    dormancy::doze(&slot, me, &peers[dormancy::HOST].beacon, poll, next_tick);
                continue;
            }
            let polled = poll.poll(&mut events, Some(timeout));
            let mut guard = slot.lock();
            let Some(shard) = guard.as_mut() else {
                break Ok(());
            };
            if let Err(e) = polled {
                if e.kind() != io::ErrorKind::Interrupted {
                    break Err(e);
                }
            }
            if shard.shared.is_shutting_down() {
                shard.shutdown();
                // Out of the slot, which its peers hold (as the shard holds theirs): its
                // sockets close here.
                *guard = None;
                break Ok(());
            }
            shard.turn(&events, &mut next_tick);
        };
        // Nothing registers in this loop's epoll any more, and the shards it hosted take
        // their own loops back.
        me.stopped();
        for p in peers.iter() {
            p.beacon.resume();
        }
        // After the sockets closed (or left with the shard): the reactor lets go of them.
        poll.release_all();
        ended
    }

    /// Announces that the loop is about to sleep (see `Inbox::park`); how long it may.
    pub(super) fn park(&mut self, next_tick: Instant) -> Duration {
        let timeout = next_tick.saturating_duration_since(Instant::now());
        // After `park`: the cluster gateway wakes a parked shard, so a message it queued
        // before is seen here and one after wakes `poll`.
        let parked = self.inbox.park() && !self.cluster.as_ref().is_some_and(|c| c.has_inbound());
        if !parked || self.must_not_sleep() {
            Duration::ZERO
        } else if self.outbox.has_pending() {
            // A batch waits for room in a stalled shard's queue: retry soon.
            timeout.min(Duration::from_millis(1))
        } else {
            timeout
        }
    }

    /// Work is left that the loop does on its next turn, at once: store progress to release
    /// (after `park`, the store's writer wakes a parked shard, so progress it made before is
    /// seen here and progress after wakes `poll`), or retained messages still to offer.
    pub(super) fn must_not_sleep(&self) -> bool {
        self.durable.as_ref().is_some_and(|d| d.progress_waiting())
            || !self.retained_backlog.is_empty()
    }

    /// One turn, after `poll` returned `events`.
    pub(super) fn turn(&mut self, events: &Events, next_tick: &mut Instant) {
        // One clock read per turn (vDSO, no system call): the loop's busy time.
        let woke = Instant::now();
        self.inbox.unpark();
        if !events.is_empty() {
            self.trim.activity();
        }
        self.retained_backlog.new_turn();
        self.handoff.turn_events = 0;
        for event in events.iter() {
            self.handoff.turn_events += 1;
            self.dispatch(event);
        }
        self.drain_inbox();
        self.adopt_pending();
        self.admit_handshaken();
        self.drain_auth_responses();
        self.drain_later_answers();
        self.drain_cluster();
        if !self.retained_backlog.is_empty() {
            self.offer_retained_backlog();
        }
        let now = self.close_turn(woke);
        if now >= *next_tick {
            self.tick(now);
            self.tick_links(now);
            self.end_turn(true);
            *next_tick = now + TICK;
            self.dormancy_tick(now);
        }
    }

    /// The end of a turn that started at `woke` (the loop's, or a handed-off one): `end_turn`,
    /// pooled messages reclaimed, the busy time counted. Returns the time it ended.
    pub(super) fn close_turn(&mut self, woke: Instant) -> Instant {
        self.end_turn(false);
        self.pool.reclaim();
        let now = Instant::now();
        self.stats.busy_nanos += now.saturating_duration_since(woke).as_nanos() as u64;
        now
    }

    /// Routes what other nodes of the cluster published, at most [`CLUSTER_PER_TURN`] per
    /// turn (the rest keeps the loop from sleeping, see `run`), so other clients are served
    /// between bursts.
    fn drain_cluster(&mut self) {
        if let Some(c) = &mut self.cluster {
            c.apply_remote_interest();
        }
        for _ in 0..CLUSTER_PER_TURN {
            let Some(inbound) = self.cluster.as_ref().and_then(|c| c.next_inbound()) else {
                return;
            };
            match inbound {
                Inbound::Message(msg) => self.services().message_from_cluster(msg),
                Inbound::Retained(msg) => self.services().retained_from_cluster(msg),
                Inbound::Shared(msg, group) => self.services().shared_from_cluster(msg, group),
                Inbound::Will(msg) => self.services().will_from_cluster(msg),
                Inbound::TakenOver(client_id) => self.taken_over_elsewhere(&client_id),
                Inbound::Committed(ticket) => self.cluster_settled(ticket, true),
                Inbound::CommitFailed(ticket) => self.cluster_settled(ticket, false),
                Inbound::SessionFetched(token, moved) => self.cluster_session_fetched(token, moved),
                Inbound::HandOver(client_id, reply) => self.hand_over(&client_id, reply),
                Inbound::KeepWills => self.keep_cluster_wills_again(),
                Inbound::SessionChecked(client_id, elsewhere) => {
                    self.recovered_session_checked(&client_id, elsewhere)
                }
            }
        }
    }

    /// The end of a loop turn: the turn's changes go to the store (persistence: submitted
    /// without waiting; what depends on them is held, and tickets and confirmations are
    /// queued behind the turn's deliveries), then this turn's batches to other shards are
    /// queued and the shards that were sent something and are parked are woken (or their
    /// turn run here, a handoff), then client connections are flushed as far as they may be.
    /// In this order, so a SUBACK never leaves before its replica updates are queued, nor a
    /// PUBACK before its message is safe; and a peer starts on the copies this turn routed
    /// to it before this loop spends its time on its own sends: a publisher's PUBACK does
    /// not go out ahead of the delivery it acknowledges (on loopback a send runs the
    /// receiver's input and wake-up inline, so the copy would wait for it).
    pub(super) fn end_turn(&mut self, tick: bool) {
        // First: what the links received this turn is routed before the batches and
        // flushes below carry it on.
        self.flush_links();
        self.flush_held_bytes();
        self.flush_cluster_records();
        self.commit_turn(tick);
        // What the store's progress released to the links' remotes.
        self.flush_link_acks();
        self.outbox.send(&self.peers);
        self.wake_peers();
        if !self.dormancy.hosted {
            self.flush_dirty();
        }
    }

    fn dispatch(&mut self, event: &Event) {
        match event.token() {
            WAKER => {}
            Token(t) if t >= LISTENER_BASE => self.accept(t - LISTENER_BASE),
            Token(t) if t >= LINGER_BASE => {
                self.lingering.on_readable(&self.registry, t - LINGER_BASE)
            }
            Token(t) if t >= LINK_BASE => self.link_ready(t - LINK_BASE, event),
            Token(t) if t >= HOSTED_BASE => self.host_turn(t - HOSTED_BASE, false),
            Token(key) => {
                match self.registry.input(event) {
                    Input::Readiness => {}
                    Input::Stale => return,
                    Input::Data(bytes) => return self.on_received(key, bytes),
                    Input::End(None) => {
                        return self.close(key, Close::Gone("connection closed by peer".into()))
                    }
                    Input::End(Some(e)) => {
                        return self.close(key, Close::Gone(format!("read error: {e}")))
                    }
                }
                if event.is_writable() && self.conns.contains(key) {
                    self.flush(key);
                }
                let peer_closed = event.is_read_closed() || event.is_error();
                if (event.is_readable() || peer_closed) && self.conns.contains(key) {
                    self.on_readable(key, peer_closed);
                }
                self.queue_tls_records(key);
            }
        }
    }

    /// Applies everything other shards sent. Also called right before routing a PUBLISH and
    /// handling a SUBSCRIBE, so a subscription acknowledged on another shard is always visible
    /// to a publish that was sent after the SUBACK (the update is queued before the SUBACK).
    pub(crate) fn drain_inbox(&mut self) {
        while let Ok(Batch { from, mut items }) = self.inbox.rx.try_recv() {
            self.stats.cross_shard_in += items.len() as u64;
            for msg in items.drain(..) {
                self.apply_inbox_item(msg);
            }
            self.peers[usize::from(from)].recycle(items);
        }
    }

    /// One item from another shard (see [`Shard::drain_inbox`]).
    fn apply_inbox_item(&mut self, msg: ShardMsg) {
        match msg {
            ShardMsg::Deliver(msg) => self.deliver_remote(&msg),
            ShardMsg::DeliverShared { msg, entry, group } => self.deliver_shared(msg, entry, group),
            ShardMsg::IndexInsert { filter, entry } => self.replica_insert(&filter, entry),
            ShardMsg::IndexRemove { filter, subscriber } => {
                self.replica_remove(&filter, subscriber)
            }
            ShardMsg::Reload(reload) => self.apply_reload(&reload),
            // At the top of the loop, as adoptions: it resumes a parked connection.
            ShardMsg::LaterAnswer { token, answer } => self.later_answers.push((token, answer)),
            // Not here: drain_inbox also runs in the middle of handling a packet (before a
            // route or a SUBSCRIBE), and an adopted CONNECT may take over, and close, the
            // very connection being handled. Adoption waits for the top of the loop.
            ShardMsg::Adopt(m) => self.adoptions.push(*m),
            ShardMsg::Handshaken(h) => self.handshaken.push(*h),
            ShardMsg::Ticket { from, ticket } => {
                if let Some(d) = &mut self.durable {
                    d.ticket(usize::from(from), ticket);
                }
            }
            ShardMsg::Committed { from, upto } => {
                if let Some(d) = &mut self.durable {
                    d.committed(usize::from(from), upto);
                }
            }
            ShardMsg::CommitFailed { from, upto } => {
                if let Some(d) = &mut self.durable {
                    d.commit_failed(usize::from(from), upto);
                }
            }
        }
    }

    /// Adopts the connections other shards sent (their CONNECT is handled now, outside any
    /// other connection's packet handling).
    fn adopt_pending(&mut self) {
        while !self.adoptions.is_empty() {
            for m in std::mem::take(&mut self.adoptions) {
                self.adopt(m);
            }
            self.drain_inbox();
        }
    }

    /// Wakes, or runs the turn of (see `shard::handoff`), every parked shard sent something.
    fn wake_peers(&mut self) {
        for i in 0..self.wake_pending.len() {
            if std::mem::take(&mut self.wake_pending[i]) {
                self.hand_off_or_wake(i);
            }
        }
    }

    /// Adds this turn's changes to the bytes held for delivery to the broker-wide total
    /// (`memory_limit`): one atomic operation per turn, none per message.
    fn flush_held_bytes(&mut self) {
        if self.shared.config.memory_limit == 0 {
            return;
        }
        if self.held_recovered != 0 {
            memory::hold(std::mem::take(&mut self.held_recovered));
        }
        memory::flush(&self.shared.held_bytes);
    }

    fn shutdown(&mut self) {
        self.end_turn(false);
        self.stop_links();
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.close(key, Close::Shutdown);
        }
        // The sessions' end times, set by those closes.
        self.commit_turn(false);
        self.wait_for_store();
        if let Some(d) = &self.durable {
            if let Err(e) = d.store.sync() {
                log::error!("Persistence: final sync failed: {e}");
            }
        }
    }
}
