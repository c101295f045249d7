//! SUBSCRIBE and UNSUBSCRIBE: filter validation, the index (this replica and every other),
//! SUBACK/UNSUBACK, and retained messages for new subscriptions.

use crate::index::Entry;
use crate::protocol::reason::v3;
use crate::protocol::topic::{parse_shared, validate_topic_filter};
use crate::protocol::{Packet, QoS, SubAck, Subscribe, UnsubAck, Unsubscribe};
use crate::shard::inbox::ShardMsg;
use crate::shard::Shard;

impl Shard {
    /// Handles SUBSCRIBE.
    pub(crate) fn handle_subscribe(&mut self, key: usize, slot: usize, subscribe: Subscribe) -> bool {
        // Updates queued by other shards first, so this replica is current before we add.
        self.drain_inbox();
        let subscriber = self.subscriber_id(slot);
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        let mut granted = Vec::with_capacity(subscribe.filters.len());
        for (filter, options) in subscribe.filters {
            let valid = validate_topic_filter(&filter).is_ok() && parse_shared(&filter).is_none();
            if !valid {
                log::info!("Rejecting subscription to '{}': invalid topic filter.", filter);
                codes.push(v3::SUBACK_FAILURE);
                continue;
            }
            // [MQTT-3.8.4-3]: a repeated filter replaces the existing subscription.
            let entry = Entry { subscriber, options, identifier: None };
            self.index.insert(&filter, entry);
            for to in 0..self.peers.len() {
                if to != self.id {
                    self.push_to(to, ShardMsg::IndexInsert { filter: filter.clone(), entry });
                }
            }
            self.sessions[slot].session.subscriptions.insert(filter.clone(), options);
            codes.push(options.qos as u8);
            granted.push((filter, options.qos));
        }
        // [MQTT-3.8.4-1]: SUBACK with the same packet id, one code per filter [MQTT-3.8.4-5].
        let suback = SubAck { packet_id: subscribe.packet_id, codes, ..Default::default() };
        self.send(key, &Packet::SubAck(suback));
        // Retained messages go out after the SUBACK, with RETAIN set [MQTT-3.3.1-6].
        let mut retained = Vec::new();
        for (filter, qos) in granted {
            retained.clear();
            self.shared.retained.matching(&filter, &mut retained);
            for msg in retained.drain(..) {
                let q: QoS = qos.min(msg.qos);
                self.offer(subscriber, msg, q, true);
            }
        }
        true
    }

    /// Handles UNSUBSCRIBE; UNSUBACK is sent even when nothing matched [MQTT-3.10.4-5].
    pub(crate) fn handle_unsubscribe(&mut self, key: usize, slot: usize, unsubscribe: Unsubscribe) -> bool {
        let subscriber = self.subscriber_id(slot);
        for filter in unsubscribe.filters {
            if self.sessions[slot].session.subscriptions.remove(&filter).is_some() {
                self.index_remove(filter, subscriber);
            }
        }
        let unsuback = UnsubAck { packet_id: unsubscribe.packet_id, ..Default::default() };
        self.send(key, &Packet::UnsubAck(unsuback));
        true
    }
}
