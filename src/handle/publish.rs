//! PUBLISH from a client, and wills: validation (limits, MQTT 5 topic aliases and payload
//! format), the retained store, routing, and the acknowledgement of the QoS flow.

use std::sync::Arc;

use super::hooks::publish_refusal;
use crate::index::SubscriberId;
use crate::message::{Message, SharedMessage};
use crate::protocol::reason::v5;
use crate::protocol::topic::{filter_matches, parse_shared};
use crate::protocol::{ByteStr, Publish, QoS, Will};
use crate::retain::Source;
use crate::shard::ctx::{Ctx, Services, SessionCtx};

/// Whether a PUBLISH is routed, or refused with an MQTT 5 reason code (still acknowledged).
enum Verdict {
    Route,
    Refuse(u8, &'static str),
}

/// Handles PUBLISH from the client of this session.
pub(super) fn handle_publish(cx: &mut SessionCtx<'_>, mut publish: Publish) -> bool {
    let config = cx.config();
    let (retain_available, max_qos) = (config.retain_available, config.max_qos);
    let (limit, max_inflight, max_queued) = (
        config.message_size_limit,
        usize::from(config.max_inflight_messages),
        config.max_queued_messages,
    );
    let memory_limit = config.memory_limit;
    let v5 = cx.is_v5();
    if publish.retain && !retain_available {
        return cx.protocol_error(v5::RETAIN_NOT_SUPPORTED, "retain_available is false".into());
    }
    if publish.qos as u8 > max_qos {
        return cx.protocol_error(v5::QOS_NOT_SUPPORTED, "QoS above max_qos".into());
    }
    if !publish.properties.subscription_identifiers.is_empty() {
        let reason = "subscription identifier in a client's PUBLISH [MQTT-3.3.4-6]".into();
        return cx.protocol_error(v5::PROTOCOL_ERROR, reason);
    }
    if let Err((code, reason)) = resolve_topic_alias(cx, &mut publish) {
        return cx.protocol_error(code, reason.into());
    }
    // After the alias (which maps the client's own topic, as mosquitto's), before the limits
    // and the ACL: both see the full topic.
    if let Some(full) = cx.mounted_topic(&publish.topic) {
        publish.topic = full;
    }
    // `max_topic_levels` / `max_topic_length`: malformed, as mosquitto's topic check.
    if let Err(e) = cx.config().topic_limits().check(&publish.topic) {
        return cx.protocol_error(v5::TOPIC_NAME_INVALID, format!("PUBLISH {e}"));
    }
    let verdict = if let Some(why) = publish_refusal(cx, &publish.topic) {
        // 3.x: dropped but acknowledged, as mosquitto does; 5.0: reason code 0x87.
        Verdict::Refuse(v5::NOT_AUTHORIZED, why)
    } else if limit != 0 && publish.payload.len() > limit as usize {
        Verdict::Refuse(v5::QUOTA_EXCEEDED, "over message_size_limit")
    } else if publish.qos != QoS::AtMostOnce && crate::session::memory::full(memory_limit) {
        // 3.x: dropped but acknowledged, as other refusals; 5.0: 0x97 tells the publisher.
        Verdict::Refuse(v5::QUOTA_EXCEEDED, "memory_limit reached")
    } else if publish.properties.payload_format_indicator == Some(1)
        && std::str::from_utf8(&publish.payload).is_err()
    {
        // [MQTT-3.3.2-4]: a payload announced as UTF-8 must be UTF-8.
        Verdict::Refuse(
            v5::PAYLOAD_FORMAT_INVALID,
            "payload is not the UTF-8 it claims to be",
        )
    } else {
        Verdict::Route
    };
    if let Verdict::Refuse(_, why) = verdict {
        log::info!(
            "Dropping message of {} bytes on {} from {}: {why}.",
            publish.payload.len(),
            publish.topic,
            cx.label()
        );
    }
    let packet_id = publish.packet_id;
    let qos = publish.qos;
    let fresh = match qos {
        // Deliver on first receipt, remember the id until PUBREL; a retransmission (DUP)
        // before PUBREL is acknowledged but not delivered again ([MQTT-4.3.3-2]). The
        // broker's Receive Maximum bounds the ids held [MQTT-3.3.4-8].
        // 3.x has no Receive Maximum: a PUBLISH over the quota waits, unacknowledged, for a
        // PUBREL to free an id (as mosquitto delays its PUBREC), so a client with a larger
        // window slows down instead of being cut off; the waiting ones are bounded by
        // `max_queued_messages`, beyond which the connection is closed (nothing is lost:
        // the client still owns every message it has no PUBREC for).
        QoS::ExactlyOnce => {
            let (session, batch) = cx.session_and_batch();
            let held = &session.incoming_qos2;
            if max_inflight != 0 && held.len() >= max_inflight && !held.contains(&packet_id) {
                if v5 {
                    return cx.protocol_error(
                        v5::RECEIVE_MAXIMUM_EXCEEDED,
                        "receive maximum exceeded".into(),
                    );
                }
                if session.wait_incoming_qos2(publish, max_queued) {
                    return true;
                }
                let reason = "unreleased QoS 2 messages over the inflight and queue limits";
                return cx.protocol_error(v5::RECEIVE_MAXIMUM_EXCEEDED, reason.into());
            }
            session.hold_incoming_qos2(packet_id, batch)
        }
        _ => true,
    };
    // Where the acknowledgement belongs in this connection's output: before any delivery
    // of this very message to the publisher itself (see `SessionCtx::send_ack`).
    let ack_at = cx.output_mark();
    let reason = match verdict {
        Verdict::Refuse(code, _) => code,
        Verdict::Route if fresh => match publish_from(cx, publish) {
            true => v5::SUCCESS,
            false => v5::NO_MATCHING_SUBSCRIBERS,
        },
        Verdict::Route => v5::SUCCESS,
    };
    let reason = if v5 { reason } else { 0 };
    match qos {
        QoS::AtMostOnce => {}
        QoS::AtLeastOnce => cx.send_ack(false, packet_id, reason, ack_at),
        QoS::ExactlyOnce => {
            if reason >= 0x80 {
                // A PUBREC with a failure code ends the QoS 2 flow (MQTT 5 section 4.3.3): forget the id.
                let (session, batch) = cx.session_and_batch();
                session.release_incoming_qos2(packet_id, batch);
            }
            cx.send_ack(true, packet_id, reason, ack_at);
        }
    }
    true
}

/// MQTT 5 topic aliases from the client ([MQTT-3.3.2-7..12]): a topic with an alias sets
/// the mapping, an empty topic with an alias uses it. The alias is not forwarded.
fn resolve_topic_alias(cx: &mut Ctx<'_>, publish: &mut Publish) -> Result<(), (u8, &'static str)> {
    let Some(alias) = publish.properties.topic_alias.take() else {
        return Ok(());
    };
    let max = cx.config().max_topic_alias;
    if alias == 0 || alias > max {
        return Err((
            v5::TOPIC_ALIAS_INVALID,
            "topic alias 0 or above the maximum [MQTT-3.3.2-8/9]",
        ));
    }
    let entry = &mut cx.topic_aliases(max)[usize::from(alias) - 1];
    if publish.topic.is_empty() {
        match entry {
            Some(topic) => publish.topic = topic.clone(),
            None => return Err((v5::PROTOCOL_ERROR, "unknown topic alias")),
        }
    } else {
        *entry = Some(publish.topic.clone());
    }
    Ok(())
}

/// Stores (if retained) and routes a client's message. Returns whether anyone matched.
fn publish_from(cx: &mut SessionCtx<'_>, mut publish: Publish) -> bool {
    // The plugins' message-in hook, on the PUBLISH itself: a change costs no copy.
    if !cx.plugin_message_in(&mut publish) {
        return false;
    }
    let origin = cx.subscriber();
    let msg = cx.share(Message::from_publish(publish, Some(origin)));
    if msg.retain {
        let source = cx.retain_source();
        set_retained(cx, &msg, source);
    }
    cx.message_in(msg)
}

/// Sets (or, with an empty payload, clears) the retained message of `msg.topic`, in
/// memory and in the store.
fn set_retained(sv: &mut Services<'_>, msg: &SharedMessage, source: Option<Arc<Source>>) {
    let version = sv.retained().set_from(msg, source);
    if sv.persistent() {
        if msg.payload.is_empty() {
            sv.batch().delete_retained(&msg.topic, version);
        } else {
            sv.batch().put_retained(msg, version);
        }
    }
}

impl Services<'_> {
    /// Sets (or clears) a retained message that enters outside a client's PUBLISH (a bridge's
    /// incoming message, its notification), in memory and in the store.
    pub(crate) fn store_retained(&mut self, msg: &SharedMessage) {
        set_retained(self, msg, None);
    }

    /// A message another node of the cluster published: stored if retained (and retain is
    /// available here), then routed through this node's index, whose matching and read checks
    /// are those of any message. Never forwarded back to the cluster: that is what keeps
    /// cluster traffic from looping.
    pub(crate) fn message_from_cluster(&mut self, msg: SharedMessage) {
        if msg.retain {
            if !self.config().retain_available {
                return;
            }
            if !self.cluster_keeps_retained() {
                set_retained(self, &msg, None);
            }
        }
        self.route_from_cluster(msg);
    }

    /// A message another node sent to this node's members of the shared subscription
    /// `group`: to one of them. The retained store is not touched (the message's other
    /// copies, or the retained stream, do that).
    pub(crate) fn shared_from_cluster(&mut self, msg: SharedMessage, group: ByteStr) {
        // NATS subject patterns over-match (`$` topics): MQTT's rule decides.
        let Some(Ok((_, filter))) = parse_shared(&group) else {
            return;
        };
        if !filter_matches(filter, &msg.topic) {
            return;
        }
        if !self.deliver_to_group(msg, group) {
            log::debug!("cluster: a shared message arrived after this node's last member left");
        }
    }

    /// The retained message of a topic as the cluster's retained stream holds it: stored
    /// unless it is what this node holds already (its own change coming back, or a replay).
    /// Every node applies the stream's changes in the stream's order, so nodes that set one
    /// topic at once end with the same message.
    pub(crate) fn retained_from_cluster(&mut self, msg: SharedMessage) {
        if !self.config().retain_available || self.retained().holds(&msg) {
            return;
        }
        set_retained(self, &msg, None);
    }

    /// The will of a client of a dead cluster node, which this node publishes for it
    /// (`cluster::wills`): as [`Services::publish_will`] does, without a session of its own.
    pub(crate) fn will_from_cluster(&mut self, msg: SharedMessage) {
        log::info!(
            "Publishing the will on {} of a dead cluster node's client.",
            msg.topic
        );
        if msg.retain && self.config().retain_available {
            set_retained(self, &msg, None);
        }
        self.message_in(msg);
    }

    /// Publishes a will as if its client had sent it ([MQTT-3.1.2-8]).
    pub(crate) fn publish_will(&mut self, will: Will, origin: SubscriberId) {
        log::debug!("Publishing will on {}.", will.topic);
        let mut publish = crate::message::will_publish(will);
        if !self.plugin_message_in_will(&mut publish) {
            return;
        }
        let msg = Arc::new(Message::from_publish(publish, Some(origin)));
        if msg.retain && self.config().retain_available {
            set_retained(self, &msg, None);
        }
        self.message_in(msg);
    }
}
