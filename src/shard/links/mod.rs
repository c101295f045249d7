//! The outgoing connections a shard owns (bridges), driven by its loop like its client
//! connections: a token range of their own in the shard's poll (`dispatch`), their timers
//! from the shard's tick, one flush per loop turn (`end_turn`).
//!
//! Each bridge has a local session here, subscribed (No Local, Retain As Published) to the
//! bridge's `out` topics. Its `conn` is `LINK_BASE + i` while the link is up, so
//! `Shard::offer` hands its PUBLISHes to the link instead of a socket; while the link is down
//! the session queues QoS 1/2 messages within the session limits, and on reconnect resumes
//! its unacknowledged flows and then its queue, in order. The remote's acknowledgements
//! complete the session's flows, so a message leaves the session only once the remote has it.
//! Messages from the remote enter like a client's PUBLISH (`message_in`, the retained store),
//! with the bridge's session as their origin: its No Local subscriptions never send them back.
//!
//! A SIGHUP reload adds, removes and restarts links here (`reload`); a link keeps its index,
//! and so its token, for its whole life, and a removed link's index is reused.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use mio::Token;

mod reload;

use super::{SessionSlot, Shard};
use crate::auth::{authorize, Access};
use crate::bridge::{Bridge, BridgeEvent};
use crate::config::BridgeConfig;
use crate::index::{Entry, SubscriberId};
use crate::message::Message;
use crate::protocol::{ByteStr, Properties, Publish, QoS, SubOptions};
use crate::reactor::Event;
use crate::session::{Limits, OutState, Outgoing, SendPublish, Session};

/// Tokens from here up to `LINGER_BASE` are links (token `LINK_BASE + i` is link `i`); the
/// same value marks a bridge session's `conn`.
pub(super) const LINK_BASE: usize = 1 << 38;

/// One bridge and its local session.
#[derive(Debug)]
struct LinkSlot {
    bridge: Bridge,
    session: usize,
}

/// The shard's links: link `i` is `slots[i]` (`None`: removed by a reload, free for reuse).
#[derive(Debug, Default)]
pub(crate) struct Links {
    slots: Vec<Option<LinkSlot>>,
    /// The store's progress released acknowledgements to a remote since the last flush.
    acks_due: bool,
}

impl Links {
    fn get(&self, i: usize) -> Option<&LinkSlot> {
        self.slots.get(i).and_then(Option::as_ref)
    }

    fn get_mut(&mut self, i: usize) -> Option<&mut LinkSlot> {
        self.slots.get_mut(i).and_then(Option::as_mut)
    }

    /// Link `i`, which the caller knows to be there (its events are being handled).
    fn at(&mut self, i: usize) -> &mut LinkSlot {
        self.get_mut(i).expect("a live link")
    }

    /// The session slot of live link `i`.
    fn session(&self, i: usize) -> usize {
        self.get(i).expect("a live link").session
    }
}

impl Shard {
    /// Creates the bridges this shard owns, their sessions and local subscriptions. A bridge
    /// lives on the home shard of its local client id, where the store's recovery put its
    /// session (`persistence true`): that session, with what it still owed the remote, is
    /// the bridge's again. Shard thread only, before the first turn.
    pub(super) fn start_links(&mut self) {
        let mine = self.my_bridges(&self.shared.config.bridges);
        let now = Instant::now();
        for cfg in mine {
            self.add_link(cfg, None, now);
        }
    }

    /// The bridges of `all` that live on this shard (the home shard of their local client id).
    fn my_bridges(&self, all: &[BridgeConfig]) -> Vec<BridgeConfig> {
        let n = self.peers.len();
        all.iter()
            .filter(|b| super::home_shard(b.local_clientid.as_bytes(), n) == self.id)
            .cloned()
            .collect()
    }

    /// Starts a bridge: its local session (`kept`: the session of the same bridge before a
    /// reload restarted it, with what it still owes the remote; else the one recovered from
    /// the store, or a new one), its local subscriptions, and its first connection attempt.
    fn add_link(&mut self, cfg: BridgeConfig, kept: Option<usize>, now: Instant) {
        let i = match self.links.slots.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                self.links.slots.push(None);
                self.links.slots.len() - 1
            }
        };
        let limits = Limits::new(&self.shared.config, u16::MAX, cfg.max_packet_size);
        let client_id = ByteStr::from(cfg.local_clientid.as_str());
        let slot = match kept {
            Some(slot) => slot,
            None => {
                if cfg.local_clean_session {
                    // What an earlier run stored for it is dropped.
                    if let Some(&slot) = self.session_by_id.get(&client_id) {
                        self.end_session(slot);
                    }
                }
                // Kept out of `session_by_id`: no client can take a bridge's session over.
                match self.session_by_id.remove(&client_id) {
                    Some(slot) => slot,
                    None => {
                        let generation = self.next_generation;
                        self.next_generation = self.next_generation.wrapping_add(1);
                        let session = Session::new(client_id, u32::MAX, cfg.protocol, limits);
                        self.sessions.insert(SessionSlot::new(generation, session))
                    }
                }
            }
        };
        let subscriber = self.subscriber_id(slot);
        let durable = self.persistent() && !cfg.local_clean_session;
        let s = &mut self.sessions[slot].session;
        if s.durable && !durable {
            // A restart with `local_cleansession true` now: no longer kept in the store.
            self.batch.delete_session(&s.client_id);
        }
        s.limits = limits;
        s.limits.max_inflight = 1;
        s.acl = self
            .shared
            .auth
            .client_acl(&cfg.local_clientid, cfg.local_username.as_deref());
        s.expiry_interval = u32::MAX;
        s.expires_at = None;
        s.durable = durable;
        s.store_record(&mut self.batch);
        // The subscriptions are the configuration's, not what an earlier run stored.
        let stale = std::mem::take(&mut s.subscriptions);
        for filter in stale.into_keys() {
            self.subscription_removed(filter, subscriber);
        }
        let bridge = Bridge::new(cfg, Token(LINK_BASE + i), now);
        let filters: Vec<(String, QoS)> = bridge
            .topics()
            .local_filters()
            .map(|(t, f)| (f.to_owned(), t.qos))
            .collect();
        for (filter, qos) in filters {
            let options = SubOptions {
                qos,
                no_local: true,
                retain_as_published: true,
                ..SubOptions::default()
            };
            let entry = Entry {
                subscriber,
                options,
                identifier: None,
            };
            self.subscription_added(&ByteStr::from(filter), entry);
        }
        log::info!(
            "Bridge {} ({}) runs on shard {}.",
            bridge.config().name,
            bridge.config().source,
            self.id
        );
        self.links.slots[i] = Some(LinkSlot {
            bridge,
            session: slot,
        });
        self.notify_local(i, false);
    }

    /// A readiness event for link `i`.
    pub(super) fn link_ready(&mut self, i: usize, event: &Event) {
        let Some(l) = self.links.get_mut(i) else {
            return;
        };
        l.bridge.on_ready(&self.registry, event, Instant::now());
        self.link_events(i);
    }

    /// The shard's tick: reconnects and keep-alive of every link.
    pub(super) fn tick_links(&mut self, now: Instant) {
        for i in 0..self.links.slots.len() {
            let Some(l) = self.links.get(i) else {
                continue;
            };
            let waiting = self.sessions[l.session].session.queue.len();
            let l = self.links.at(i);
            l.bridge.demand(waiting, now);
            l.bridge.tick(&self.registry, now);
            self.link_events(i);
        }
    }

    /// Sends what this turn queued on every link (once per turn).
    pub(super) fn flush_links(&mut self) {
        for i in 0..self.links.slots.len() {
            let Some(l) = self.links.get_mut(i) else {
                continue;
            };
            l.bridge.flush(&self.registry);
            // A flush may read (reading resumes once a full buffer drains): what that
            // caused is handled and sent in this turn too.
            if self.link_events(i) {
                self.links.at(i).bridge.flush(&self.registry);
            }
        }
    }

    /// At shutdown: every link says goodbye.
    pub(super) fn stop_links(&mut self) {
        for l in self.links.slots.iter_mut().flatten() {
            l.bridge.stop(&self.registry);
        }
    }

    /// A PUBLISH the bridge session of link `conn - LINK_BASE` decided to send (from
    /// `Shard::offer`).
    pub(crate) fn link_send(&mut self, conn: usize, p: &SendPublish) {
        let i = conn - LINK_BASE;
        if self.links.get(i).is_some() && !self.link_publish(i, p) {
            self.link_ack(i, p.packet_id, 0);
        }
    }

    /// Hands one PUBLISH to link `i`. Returns false for a QoS 1/2 message that no `out`
    /// topic remaps (a subscription matched it, the remapping did not): its flow is over.
    fn link_publish(&mut self, i: usize, p: &SendPublish) -> bool {
        let l = self.links.at(i);
        let publish = p.delivery.msg.to_publish(&p.delivery, p.packet_id, p.dup);
        let qos = publish.qos;
        match l.bridge.send(publish) {
            Ok(true) => self.message_out(p.delivery.msg.payload.len()),
            Ok(false) => return qos == QoS::AtMostOnce,
            Err(_) if qos == QoS::AtMostOnce => self.stats.publishes_dropped += 1,
            Err(e) => {
                // The session keeps the flow: it is resent on the next connection.
                let registry = &self.registry;
                l.bridge.abort(
                    registry,
                    &format!("could not send a QoS 1/2 message ({e:?})"),
                );
                self.link_events(i);
            }
        }
        true
    }

    /// Handles link `i`'s events; returns whether there were any.
    fn link_events(&mut self, i: usize) -> bool {
        let mut any = false;
        while let Some(event) = self.links.at(i).bridge.next_event() {
            any = true;
            match event {
                BridgeEvent::Up => self.link_up(i),
                BridgeEvent::Down => {
                    let slot = self.links.session(i);
                    self.sessions[slot].session.conn = None;
                    if let Some(d) = &mut self.durable {
                        // Held acknowledgements die with the connection: the remote sends
                        // those messages again.
                        d.forget(LINK_BASE + i);
                    }
                    self.notify_local(i, false);
                }
                BridgeEvent::Message(p) => self.link_message(i, p),
                BridgeEvent::Acked { packet_id, reason } => self.link_ack(i, packet_id, reason),
                BridgeEvent::Received { packet_id } => {
                    let slot = self.links.session(i);
                    // The session now owes only the PUBREL (already sent by the link).
                    let _ = self.sessions[slot]
                        .session
                        .on_pubrec(packet_id, 0, &mut self.batch);
                }
            }
        }
        any
    }

    /// The link is up: the session sends through it, its unacknowledged flows first.
    fn link_up(&mut self, i: usize) {
        let slot = self.links.session(i);
        let window = self.links.at(i).bridge.window();
        let s = &mut self.sessions[slot].session;
        s.conn = Some(LINK_BASE + i);
        s.limits.max_inflight = window;
        let mut out = std::mem::take(&mut self.out);
        s.resume(&mut out, &mut self.batch);
        self.send_link_output(i, &mut out);
        self.out = out;
        self.notify_local(i, true);
    }

    /// Sends what the bridge session asked to send. Flows that end at once (nothing to
    /// remap) make room in the window, which is refilled here: a loop, not a recursion.
    fn send_link_output(&mut self, i: usize, out: &mut Vec<Outgoing>) {
        let mut over = Vec::new();
        loop {
            for o in out.drain(..) {
                match o {
                    Outgoing::Publish(p) => {
                        if !self.link_publish(i, &p) {
                            over.push(p.packet_id);
                        }
                    }
                    Outgoing::PubRel(id) => {
                        if self.links.at(i).bridge.release(id).is_err() {
                            let registry = &self.registry;
                            self.links
                                .at(i)
                                .bridge
                                .abort(registry, "could not resend a PUBREL");
                            self.link_events(i);
                        }
                    }
                }
            }
            if over.is_empty() {
                return;
            }
            for id in over.drain(..) {
                self.complete_flow(i, id, 0);
            }
            let slot = self.links.session(i);
            self.sessions[slot]
                .session
                .fill_window(out, &mut self.batch);
        }
    }

    /// An outgoing flow of link `i` is complete: the session lets it go and fills its window.
    fn link_ack(&mut self, i: usize, packet_id: u16, reason: u8) {
        if !self.complete_flow(i, packet_id, reason) {
            return;
        }
        let slot = self.links.session(i);
        let mut out = std::mem::take(&mut self.out);
        self.sessions[slot]
            .session
            .fill_window(&mut out, &mut self.batch);
        self.send_link_output(i, &mut out);
        self.out = out;
    }

    /// Ends the session's flow `packet_id`, whatever step it is at; false if it has none.
    fn complete_flow(&mut self, i: usize, packet_id: u16, reason: u8) -> bool {
        let slot = self.links.session(i);
        let s = &mut self.sessions[slot].session;
        let state = s
            .inflight
            .iter()
            .find(|f| f.packet_id == packet_id)
            .map(|f| f.state);
        match state {
            Some(OutState::AwaitPubAck) => {
                s.on_puback(packet_id, &mut self.batch);
            }
            Some(OutState::AwaitPubRec) => {
                // A PUBREC with a failure reason ended it (or nothing was sent).
                s.on_pubrec(packet_id, reason.max(0x80), &mut self.batch);
            }
            Some(OutState::AwaitPubComp) => {
                s.on_pubcomp(packet_id, &mut self.batch);
            }
            None => return false,
        }
        true
    }

    /// A message from the remote: enters the broker like a client's PUBLISH, and is
    /// acknowledged to the remote as a client's would be (refused or not, as a client's).
    fn link_message(&mut self, i: usize, publish: Publish) {
        let (packet_id, qos) = (publish.packet_id, publish.qos);
        self.route_link_message(i, publish);
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.acknowledge_in(i, packet_id, false),
            QoS::ExactlyOnce => self.acknowledge_in(i, packet_id, true),
        }
    }

    /// Acknowledges a message from the remote on link `i` when a client's PUBLISH would be:
    /// at once without persistence, else once every copy of it is durable (held with the
    /// clients' acknowledgements, `shard/durable`, and released through
    /// [`Shard::link_acknowledged`]). ARCHITECTURE.md §1.6.
    fn acknowledge_in(&mut self, i: usize, packet_id: u16, qos2: bool) {
        if self.durable.is_some() {
            self.hold_link_ack(LINK_BASE + i, packet_id, qos2);
        } else {
            self.links.at(i).bridge.acknowledge(packet_id, qos2);
        }
    }

    /// A held acknowledgement to link `i`'s remote may go: queued now, sent by
    /// [`Shard::flush_link_acks`] at the end of the turn.
    pub(super) fn link_acknowledged(&mut self, i: usize, packet_id: u16, qos2: bool) {
        if let Some(l) = self.links.get_mut(i) {
            l.bridge.acknowledge(packet_id, qos2);
            self.links.acks_due = true;
        }
    }

    /// Sends the acknowledgements the store's progress released this turn (after
    /// `commit_turn`, which releases them once `flush_links` has run).
    pub(super) fn flush_link_acks(&mut self) {
        if std::mem::take(&mut self.links.acks_due) {
            self.flush_links();
        }
    }

    /// Routes a message from the remote (unless its topic or the ACL refuses it).
    fn route_link_message(&mut self, i: usize, mut publish: Publish) {
        if let Err(e) = self.shared.config.topic_limits().check(&publish.topic) {
            log::warn!(
                "Bridge {}: dropped a message whose local topic is refused ({e:?}).",
                self.links.at(i).bridge.config().name
            );
            return;
        }
        let slot = self.links.session(i);
        if !authorize(
            &self.sessions[slot].session.acl,
            &publish.topic,
            Access::Write,
        ) {
            log::debug!(
                "Bridge {}: a message on {} is not allowed in by the ACL.",
                self.links.at(i).bridge.config().name,
                &*publish.topic
            );
            return;
        }
        // The plugins' message-in hook sees a bridged message without a client.
        if !self.plugin_message_in(None, &mut publish) {
            return;
        }
        let origin = self.subscriber_id(slot);
        let msg = self
            .pool
            .share(Message::from_publish(publish, Some(origin)));
        if msg.retain && self.shared.config.retain_available {
            self.services().store_retained(&msg);
        }
        self.message_in(msg);
    }

    /// The local notification of link `i` (`notifications`): a retained "1" or "0".
    fn notify_local(&mut self, i: usize, up: bool) {
        let Some(l) = self.links.get(i) else {
            return;
        };
        let origin = self.subscriber_id(l.session);
        let Some(msg) = notification(l.bridge.config(), origin, up) else {
            return;
        };
        if self.shared.config.retain_available {
            self.services().store_retained(&msg);
        }
        self.route(msg);
    }
}

/// A bridge's local notification message (`None` without `notifications`).
fn notification(cfg: &BridgeConfig, origin: SubscriberId, up: bool) -> Option<Arc<Message>> {
    if !cfg.notifications {
        return None;
    }
    Some(Arc::new(Message {
        topic: ByteStr::from(cfg.notification_topic.as_str()),
        payload: Bytes::from_static(if up { b"1" } else { b"0" }),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Properties::default(),
        expires_at: None,
        // Never sent to the remote by the bridge's own (No Local) subscriptions.
        origin: Some(origin),
    }))
}
