//! Routing and delivery: a message published here is matched against this shard's index
//! replica, offered to local sessions and sent once to each other shard with a match; a
//! message from another shard is offered to local sessions. `Shard::offer` is the one place
//! every delivery passes.

use super::inbox::ShardMsg;
use super::Shard;
use crate::auth::{authorize, Access};
use crate::index::{Entry, SubscriberId};
use crate::message::{Delivery, SharedMessage, SubscriptionIds};
use crate::plugin::Events;
use crate::protocol::{self, ByteStr, Packet, QoS, SubOptions};
use crate::retain::Source;
use crate::session::{memory, Offer, Outgoing};

impl Shard {
    /// Routes a message published on this shard: delivers to local subscribers, and sends one
    /// inbox item to each other shard that has at least one. Returns whether any subscription
    /// matched (MQTT 5 PUBACK 0x10 otherwise).
    pub(crate) fn route(&mut self, msg: SharedMessage) -> bool {
        self.route_picking(msg, true)
    }

    /// [`Shard::route`] for a message another cluster node published: its shared groups
    /// are not picked here, since a NATS queue group of the cluster picks their node (see
    /// [`Shard::deliver_to_group`]).
    pub(crate) fn route_from_cluster(&mut self, msg: SharedMessage) -> bool {
        self.route_picking(msg, false)
    }

    /// A message another node sent to this node's members of the shared subscription
    /// `group` (`$share/{name}/{filter}`, chosen by its NATS queue group): delivered to one
    /// of them, picked round robin as for a local message. Returns false when the node no
    /// longer has a member (the last one left while the message crossed).
    pub(crate) fn deliver_to_group(&mut self, msg: SharedMessage, group: ByteStr) -> bool {
        self.drain_inbox();
        match self.index.pick_shared(&group) {
            Some(entry) => {
                self.send_shared(msg, entry, group);
                true
            }
            None => false,
        }
    }

    fn route_picking(&mut self, msg: SharedMessage, pick_shared: bool) -> bool {
        self.drain_inbox();
        let me = self.id as u16;
        let mut matches = std::mem::take(&mut self.matches);
        matches.clear();
        let mut remote: u128 = 0;
        let mut shared_picks = std::mem::take(&mut self.shared_picks);
        self.index
            .for_each_match(&msg.topic, pick_shared, |e, shared| {
                if let Some(group) = shared {
                    shared_picks.push((*e, group.clone()));
                } else if e.subscriber.shard == me {
                    matches.push((e.subscriber, e.options, e.identifier));
                } else {
                    remote |= 1 << e.subscriber.shard;
                }
            });
        let matched = remote != 0 || !matches.is_empty() || !shared_picks.is_empty();
        for (entry, group) in shared_picks.drain(..) {
            // A group with members on other nodes too: the cluster's queue group picks the
            // node (the message went to NATS in `message_in`), this node's included.
            if self
                .cluster
                .as_ref()
                .is_some_and(|c| c.shares_remotely(&group))
            {
                continue;
            }
            self.send_shared(msg.clone(), entry, group);
        }
        // What `take` left in the field is an empty `Vec::new()` (nothing in it, nothing
        // allocated): forgotten, not dropped, as dropping it runs the elements' drop glue
        // (out of line) for nothing on every routed message (callgrind, route_instructions).
        std::mem::forget(std::mem::replace(&mut self.shared_picks, shared_picks));
        let mut shard = 0;
        while remote != 0 {
            if remote & 1 != 0 {
                self.push_to(shard, ShardMsg::Deliver(msg.clone()));
            }
            remote >>= 1;
            shard += 1;
        }
        self.deliver_matches(&msg, &mut matches);
        self.matches = matches;
        matched
    }

    /// Sends `msg` to shard `to`; the wake-up happens once at the end of the turn.
    pub(crate) fn push_to(&mut self, to: usize, msg: ShardMsg) {
        if let Some(d) = self.durable.as_mut().filter(|d| d.persists) {
            let qos = match &msg {
                ShardMsg::Deliver(m) | ShardMsg::DeliverShared { msg: m, .. } => m.qos,
                _ => QoS::AtMostOnce,
            };
            if qos != QoS::AtMostOnce {
                d.delivered_to(to);
            }
        }
        self.stats.cross_shard_out += 1;
        self.outbox.push(to, msg);
        self.wake_pending[to] = true;
    }

    /// Delivers a message from another shard to this shard's matching sessions.
    pub(super) fn deliver_remote(&mut self, msg: &SharedMessage) {
        let me = self.id as u16;
        let mut matches = std::mem::take(&mut self.matches);
        matches.clear();
        self.index.for_each_match(&msg.topic, false, |e, _| {
            if e.subscriber.shard == me {
                matches.push((e.subscriber, e.options, e.identifier));
            }
        });
        self.deliver_matches(msg, &mut matches);
        self.matches = matches;
    }

    /// Delivers once per session, merging its matching subscriptions: the highest QoS among
    /// them (the specification allows one copy per subscription or one at the maximum QoS
    /// [MQTT-3.3.5-1]; one copy is what clients expect), capped by the published QoS
    /// [MQTT-3.8.4-6]; every subscription identifier [MQTT-3.3.4-3]; Retain As Published if any
    /// subscription asked for it [MQTT-3.3.1-12]. No Local subscriptions never get the
    /// session's own messages [MQTT-3.8.3-3].
    fn deliver_matches(
        &mut self,
        msg: &SharedMessage,
        matches: &mut [(SubscriberId, SubOptions, Option<u32>)],
    ) {
        matches.sort_unstable_by_key(|m| m.0);
        for group in matches.chunk_by(|a, b| a.0 == b.0) {
            let sub = group[0].0;
            let own = msg.origin == Some(sub);
            let mut best: Option<QoS> = None;
            let mut retain_as_published = false;
            // None or one identifier: no allocation (see `SubscriptionIds`).
            let mut ids = SubscriptionIds::new();
            for (_, options, id) in group.iter().filter(|(_, o, _)| !(own && o.no_local)) {
                best = best.max(Some(options.qos));
                retain_as_published |= options.retain_as_published;
                ids.extend(*id);
            }
            let Some(qos) = best else { continue };
            let delivery = Delivery {
                msg: msg.clone(),
                qos: self.shared.config.clients.outgoing_qos(qos, msg.qos),
                retain: retain_as_published && msg.retain,
                subscription_ids: ids,
                shared: None,
            };
            self.offer(sub, delivery);
        }
    }

    /// Sends a message to the chosen member of a shared group, here or on its shard.
    pub(super) fn send_shared(
        &mut self,
        msg: SharedMessage,
        entry: Entry,
        group: protocol::ByteStr,
    ) {
        let to = entry.subscriber.shard as usize;
        if to == self.id {
            self.deliver_shared(msg, entry, group);
        } else {
            self.push_to(to, ShardMsg::DeliverShared { msg, entry, group });
        }
    }

    /// Delivers a message to the local member of a shared group that was chosen for it.
    pub(super) fn deliver_shared(
        &mut self,
        msg: SharedMessage,
        entry: Entry,
        group: protocol::ByteStr,
    ) {
        let o = entry.options;
        let delivery = Delivery {
            qos: self.shared.config.clients.outgoing_qos(o.qos, msg.qos),
            retain: o.retain_as_published && msg.retain,
            subscription_ids: entry.identifier.into_iter().collect(),
            shared: Some(group),
            msg,
        };
        self.offer(entry.subscriber, delivery);
    }

    /// Does one loop turn's share of the pending retained work. Called after each
    /// SUBSCRIBE and once per loop turn while some waits. Every message goes through
    /// `offer`, so the subscriber's read ACL and Maximum Packet Size apply as to any
    /// delivery, and a subscriber gone meanwhile gets nothing (its generation no longer
    /// matches).
    pub(crate) fn offer_retained_backlog(&mut self) {
        let mut backlog = std::mem::take(&mut self.retained_backlog);
        let shared = self.shared.clone();
        backlog.run_turn(&shared.retained, |(msg, source), subscriber, qos, ids| {
            if source.is_some_and(|s| !self.may_still_publish(&s, &msg.topic)) {
                return;
            }
            let delivery = Delivery {
                qos: shared.config.clients.outgoing_qos(qos, msg.qos),
                msg,
                retain: true,
                subscription_ids: ids.clone(),
                shared: None,
            };
            self.offer(subscriber, delivery);
        });
        self.retained_backlog = backlog;
    }

    /// `check_retain_source`: whether the publisher of a retained message may still publish
    /// on `topic`, by the ACL of the listener it came through as that ACL is now (a reload
    /// may have revoked it), as mosquitto checks it when it sends a retained message.
    fn may_still_publish(&self, source: &Source, topic: &str) -> bool {
        let Some(listener) = self.listeners.get(usize::from(source.listener)) else {
            return false;
        };
        let acl = listener
            .auth
            .client_acl(&source.client_id, source.username.as_deref());
        authorize(&acl, topic, Access::Write)
    }

    /// Offers a delivery to one local session and sends what it says to send.
    pub(crate) fn offer(&mut self, sub: SubscriberId, delivery: Delivery) {
        if self.mounted {
            // A client of a mount point gets nothing outside it (`shard::mount`).
            let conn = self
                .sessions
                .get(sub.slot as usize)
                .and_then(|s| s.session.conn);
            if self.outside_mount(conn, &delivery.msg.topic) {
                return;
            }
        }
        let Some(slot) = self.sessions.get_mut(sub.slot as usize) else {
            return;
        };
        if slot.generation != sub.generation {
            return;
        }
        // Every delivery passes here (live, shared, retained, wills): the one place for the
        // read ACL. The plugins first (one bit test when none checks ACLs), then the ACL
        // file, the chain's last member (`plugin::builtin::acl`).
        let topic: &str = &delivery.msg.topic;
        let allowed = if self.plugins.wants(Events::ACL_CHECK) {
            let s = &slot.session;
            let conn = s.conn.and_then(|k| self.conns.get(k));
            read_allowed(&mut self.plugins, conn, &self.listener_ports, s, topic)
        } else {
            authorize(&slot.session.acl, topic, Access::Read)
        };
        if !allowed {
            return;
        }
        if delivery.qos != QoS::AtMostOnce && memory::full(self.shared.config.memory_limit) {
            // `memory_limit`: no new QoS 1/2 message is held, queued or in flight.
            slot.session.dropped = slot.session.dropped.wrapping_add(1);
            self.stats.publishes_dropped += 1;
            if slot.session.dropped.is_power_of_two() {
                log::warn!(
                    "memory_limit reached: dropping messages for client {} ({} dropped).",
                    slot.session.client_id,
                    slot.session.dropped
                );
            }
            return;
        }
        let conn = slot.session.conn;
        let dropped_before = slot.session.dropped;
        match slot.session.offer(delivery, &mut self.batch) {
            Offer::Send(publish) => {
                let Some(key) = conn else { return };
                if key >= super::links::LINK_BASE {
                    return self.link_send(key, &publish);
                }
                // Only output the socket refused counts (`want_write`: the last flush hit
                // WouldBlock): a subscriber that reads may gather more than the limit within
                // one loop turn, before the turn's flush, and must lose nothing for it.
                let backlog =
                    self.conns
                        .get(key)
                        .map_or(0, |c| if c.want_write { c.wbuf.len() } else { 0 });
                let qos0 = publish.delivery.qos == QoS::AtMostOnce;
                if qos0 && backlog > self.qos0_backlog_limit {
                    // A subscriber that does not read: its QoS 0 messages are dropped rather
                    // than grow its buffer without bound (QoS 1/2 are bounded by the window).
                    self.slow_consumer_drops += 1;
                    self.stats.publishes_dropped += 1;
                    if self.slow_consumer_drops.is_power_of_two() {
                        log::warn!(
                            "Dropping QoS 0 messages for a slow consumer ({} bytes unsent; {} dropped on shard {}).",
                            backlog,
                            self.slow_consumer_drops,
                            self.id
                        );
                    }
                    return;
                }
                self.send_publish(key, &publish);
            }
            Offer::Queued => {}
            Offer::Dropped => {
                self.stats.publishes_dropped += 1;
                if slot.session.dropped != dropped_before && slot.session.dropped.is_power_of_two()
                {
                    log::warn!(
                        "Outgoing messages are being dropped for client {}: queue full or too large \
                         for the client ({} dropped).",
                        slot.session.client_id,
                        slot.session.dropped
                    );
                }
            }
        }
    }

    /// Sends the packets a session produced (`self.out`) to its connection.
    pub(crate) fn send_session_output(&mut self, conn: usize) {
        let mut out = std::mem::take(&mut self.out);
        for o in out.drain(..) {
            match o {
                Outgoing::Publish(p) => self.send_publish(conn, &p),
                Outgoing::PubRel(id) => {
                    self.send(conn, &Packet::PubRel(protocol::PubResp::new(id)))
                }
            }
        }
        self.out = out;
    }
}

/// The plugins' read decision for `session`'s client on `topic`, then the ACL file's when
/// they all pass. Out of line: only a broker with an ACL plugin comes here.
#[inline(never)]
fn read_allowed(
    plugins: &mut crate::plugin::ShardPlugins,
    conn: Option<&super::conn::Conn>,
    ports: &[u16],
    session: &crate::session::Session,
    topic: &str,
) -> bool {
    let info = super::plugin_hooks::session_client(conn, ports, session);
    let chain = plugins.acl_check(&info, topic, Access::Read);
    crate::plugin::builtin::acl::after_chain(chain, &session.acl, topic, Access::Read)
}
