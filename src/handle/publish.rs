//! PUBLISH from a client, and wills: validation (limits, MQTT 5 topic aliases and payload
//! format), the retained store, routing, and the acknowledgement of the QoS flow.

use std::sync::Arc;

use super::hooks::write_refusal;
use crate::index::SubscriberId;
use crate::message::{Message, SharedMessage};
use crate::protocol::reason::v5;
use crate::protocol::{Publish, QoS, Will};
use crate::shard::Shard;

/// Whether a PUBLISH is routed, or refused with an MQTT 5 reason code (still acknowledged).
enum Verdict {
    Route,
    Refuse(u8, &'static str),
}

impl Shard {
    /// The session's identity in the index (for the message's origin).
    pub(crate) fn subscriber_id(&self, slot: usize) -> SubscriberId {
        let generation = self.sessions.get(slot).map_or(0, |s| s.generation);
        SubscriberId {
            shard: self.id as u16,
            slot: slot as u32,
            generation,
        }
    }

    /// Handles PUBLISH from the client of session `slot`.
    pub(crate) fn handle_publish(&mut self, key: usize, slot: usize, mut publish: Publish) -> bool {
        let config = &self.shared.config;
        let (retain_available, max_qos) = (config.retain_available, config.max_qos);
        let (limit, max_inflight, max_queued) = (
            config.message_size_limit,
            usize::from(config.max_inflight_messages),
            config.max_queued_messages,
        );
        let memory_limit = config.memory_limit;
        let v5 = self.conns[key].is_v5();
        if publish.retain && !retain_available {
            return self.protocol_error(
                key,
                v5::RETAIN_NOT_SUPPORTED,
                "retain_available is false".into(),
            );
        }
        if publish.qos as u8 > max_qos {
            return self.protocol_error(key, v5::QOS_NOT_SUPPORTED, "QoS above max_qos".into());
        }
        if !publish.properties.subscription_identifiers.is_empty() {
            let reason = "subscription identifier in a client's PUBLISH [MQTT-3.3.4-6]".into();
            return self.protocol_error(key, v5::PROTOCOL_ERROR, reason);
        }
        if let Err((code, reason)) = self.resolve_topic_alias(key, &mut publish) {
            return self.protocol_error(key, code, reason.into());
        }
        // `max_topic_levels` / `max_topic_length`: malformed, as mosquitto's topic check.
        if let Err(e) = self.shared.config.topic_limits().check(&publish.topic) {
            return self.protocol_error(key, v5::TOPIC_NAME_INVALID, format!("PUBLISH {e}"));
        }
        let session = &self.sessions[slot].session;
        let verdict = if let Some(why) = write_refusal(&session.acl, &publish.topic) {
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
                self.label(&self.conns[key])
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
                let session = &mut self.sessions[slot].session;
                let held = &session.incoming_qos2;
                if max_inflight != 0 && held.len() >= max_inflight && !held.contains(&packet_id) {
                    if v5 {
                        return self.protocol_error(
                            key,
                            v5::RECEIVE_MAXIMUM_EXCEEDED,
                            "receive maximum exceeded".into(),
                        );
                    }
                    if session.wait_incoming_qos2(publish, max_queued) {
                        return true;
                    }
                    let reason = "unreleased QoS 2 messages over the inflight and queue limits";
                    return self.protocol_error(key, v5::RECEIVE_MAXIMUM_EXCEEDED, reason.into());
                }
                session.hold_incoming_qos2(packet_id, &mut self.batch)
            }
            _ => true,
        };
        // Where the acknowledgement belongs in this connection's output: before any delivery
        // of this very message to the publisher itself (see `Shard::send_ack`).
        let ack_at = self.conns[key].wbuf.len();
        let reason = match verdict {
            Verdict::Refuse(code, _) => code,
            Verdict::Route if fresh => match self.publish_from(slot, publish) {
                true => v5::SUCCESS,
                false => v5::NO_MATCHING_SUBSCRIBERS,
            },
            Verdict::Route => v5::SUCCESS,
        };
        let reason = if v5 { reason } else { 0 };
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send_ack(key, slot, false, packet_id, reason, ack_at),
            QoS::ExactlyOnce => {
                if reason >= 0x80 {
                    // A PUBREC with a failure code ends the QoS 2 flow (MQTT 5 section 4.3.3): forget the id.
                    self.sessions[slot]
                        .session
                        .release_incoming_qos2(packet_id, &mut self.batch);
                }
                self.send_ack(key, slot, true, packet_id, reason, ack_at);
            }
        }
        true
    }

    /// MQTT 5 topic aliases from the client ([MQTT-3.3.2-7..12]): a topic with an alias sets
    /// the mapping, an empty topic with an alias uses it. The alias is not forwarded.
    fn resolve_topic_alias(
        &mut self,
        key: usize,
        publish: &mut Publish,
    ) -> Result<(), (u8, &'static str)> {
        let Some(alias) = publish.properties.topic_alias.take() else {
            return Ok(());
        };
        let max = self.shared.config.max_topic_alias;
        if alias == 0 || alias > max {
            return Err((
                v5::TOPIC_ALIAS_INVALID,
                "topic alias 0 or above the maximum [MQTT-3.3.2-8/9]",
            ));
        }
        let aliases = &mut self.conns[key].topic_aliases;
        if aliases.len() < usize::from(max) {
            *aliases = vec![None; usize::from(max)].into_boxed_slice();
        }
        let entry = &mut aliases[usize::from(alias) - 1];
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
    fn publish_from(&mut self, slot: usize, publish: Publish) -> bool {
        let origin = self.subscriber_id(slot);
        let msg = self
            .pool
            .share(Message::from_publish(publish, Some(origin)));
        if msg.retain {
            self.set_retained(&msg);
        }
        self.message_in(msg)
    }

    /// Sets (or, with an empty payload, clears) the retained message of `msg.topic`, in
    /// memory and in the store.
    pub(crate) fn set_retained(&mut self, msg: &SharedMessage) {
        let version = self.shared.retained.set(msg);
        if self.durable.is_some() {
            if msg.payload.is_empty() {
                self.batch.delete_retained(&msg.topic, version);
            } else {
                self.batch.put_retained(msg, version);
            }
        }
    }

    /// Publishes a will as if its client had sent it ([MQTT-3.1.2-8]).
    pub(crate) fn publish_will(&mut self, will: Will, origin: SubscriberId) {
        log::debug!("Publishing will on {}.", will.topic);
        let mut properties = will.properties;
        properties.will_delay_interval = None;
        let publish = Publish {
            qos: will.qos,
            retain: will.retain,
            topic: will.topic,
            properties,
            payload: will.payload,
            ..Default::default()
        };
        let msg = Arc::new(Message::from_publish(publish, Some(origin)));
        if msg.retain && self.shared.config.retain_available {
            self.set_retained(&msg);
        }
        self.message_in(msg);
    }
}
