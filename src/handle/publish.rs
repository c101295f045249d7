//! PUBLISH from a client, and wills: validation, the retained store, routing, the
//! acknowledgement of the QoS flow.

use std::sync::Arc;

use crate::index::SubscriberId;
use crate::message::Message;
use crate::protocol::{Packet, PubResp, Publish, QoS, Will};
use crate::shard::Shard;

impl Shard {
    /// The session's identity in the index (for the message's origin).
    pub(crate) fn subscriber_id(&self, slot: usize) -> SubscriberId {
        let generation = self.sessions.get(slot).map_or(0, |s| s.generation);
        SubscriberId { shard: self.id as u16, slot: slot as u32, generation }
    }

    /// Handles PUBLISH from the client of session `slot`.
    pub(crate) fn handle_publish(&mut self, key: usize, slot: usize, publish: Publish) -> bool {
        let config = &self.shared.config;
        if publish.retain && !config.retain_available {
            return self.protocol_error(key, "retained message sent but retain_available is false".into());
        }
        let limit = config.message_size_limit;
        let accepted = limit == 0 || publish.payload.len() <= limit as usize;
        if !accepted {
            log::info!(
                "Dropping message of {} bytes on {} from {}: over message_size_limit {limit}.",
                publish.payload.len(),
                publish.topic,
                self.conns.get(key).map(|c| c.label()).unwrap_or_default()
            );
        }
        let packet_id = publish.packet_id;
        match publish.qos {
            QoS::AtMostOnce => {
                if accepted {
                    self.publish_from(slot, publish);
                }
            }
            QoS::AtLeastOnce => {
                if accepted {
                    self.publish_from(slot, publish);
                }
                self.send(key, &Packet::PubAck(PubResp::new(packet_id)));
            }
            QoS::ExactlyOnce => {
                // Deliver on first receipt, remember the id until PUBREL; a retransmission
                // (DUP) before PUBREL is acknowledged but not delivered again ([MQTT-4.3.3-2]).
                let first = self.sessions[slot].session.incoming_qos2.insert(packet_id);
                if first && accepted {
                    self.publish_from(slot, publish);
                }
                self.send(key, &Packet::PubRec(PubResp::new(packet_id)));
            }
        }
        true
    }

    /// Stores (if retained) and routes a client's message.
    fn publish_from(&mut self, slot: usize, publish: Publish) {
        let origin = self.subscriber_id(slot);
        let msg = Arc::new(Message::from_publish(publish, Some(origin)));
        if msg.retain {
            self.shared.retained.set(&msg);
        }
        self.route(msg);
    }

    /// Publishes a will as if its client had sent it ([MQTT-3.1.2-8]).
    pub(crate) fn publish_will(&mut self, will: Will, origin: SubscriberId) {
        log::debug!("Publishing will on {}.", will.topic);
        let msg = Arc::new(Message {
            topic: will.topic,
            payload: will.payload,
            qos: will.qos,
            retain: will.retain,
            properties: will.properties,
            origin: Some(origin),
        });
        if msg.retain && self.shared.config.retain_available {
            self.shared.retained.set(&msg);
        }
        self.route(msg);
    }
}
