//! An application message as the broker routes it, and one delivery of it.
//!
//! A PUBLISH is decoded once into a [`Message`] behind an `Arc` and that one allocation is
//! shared by every subscriber, every shard, the retained store and every session queue: the
//! payload and topic are `Bytes` slices of the read buffer, never copied while routing. The
//! `Arc` itself comes from the publishing shard's pool (`shard::pool`), so in steady state no
//! allocation is made per message.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::index::SubscriberId;
use crate::protocol::{ByteStr, Properties, PropertiesPatch, Publish, PublishRef, QoS, Will};

/// A message being routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: ByteStr,
    pub payload: Bytes,
    /// The QoS it was published with (the ceiling for every delivery).
    pub qos: QoS,
    /// The RETAIN flag it was published with.
    pub retain: bool,
    /// Properties forwarded to subscribers (the topic alias is already removed; the message
    /// expiry interval is rewritten per delivery from `expires_at`).
    pub properties: Properties,
    /// When the Message Expiry Interval runs out (MQTT 5); `None` = never.
    pub expires_at: Option<Instant>,
    /// The publishing session, when there is one (no-local, logs).
    pub origin: Option<SubscriberId>,
}

/// The shared form.
pub type SharedMessage = Arc<Message>;

/// The PUBLISH a will becomes ([MQTT-3.1.2-8]): its properties but the Will Delay Interval.
pub fn will_publish(will: Will) -> Publish {
    let mut properties = will.properties;
    properties.will_delay_interval = None;
    Publish {
        qos: will.qos,
        retain: will.retain,
        topic: will.topic,
        properties,
        payload: will.payload,
        ..Default::default()
    }
}

impl Message {
    /// The message a client's PUBLISH carries, received now.
    pub fn from_publish(publish: Publish, origin: Option<SubscriberId>) -> Message {
        let mut properties = publish.properties;
        properties.topic_alias = None;
        let expires_at = properties
            .message_expiry_interval
            .map(|s| Instant::now() + Duration::from_secs(u64::from(s)));
        Message {
            topic: publish.topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            properties,
            expires_at,
            origin,
        }
    }

    /// A message with no topic, payload or properties: what a pooled allocation holds between
    /// two uses (`shard::pool`), so it keeps no buffer alive.
    pub fn empty() -> Message {
        Message {
            topic: ByteStr::default(),
            payload: Bytes::new(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Properties::default(),
            expires_at: None,
            origin: None,
        }
    }

    /// True once the message expiry interval has passed ([MQTT-3.3.2-5]: not delivered then).
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| now >= t)
    }

    /// The PUBLISH that carries `delivery` of this message to one subscriber, borrowed from
    /// the message (encoded with `protocol::encode_publish`: nothing is cloned per delivery).
    /// The forwarded Message Expiry Interval is what is left of it ([MQTT-3.3.2-6]); the
    /// subscription identifiers are those of the matching subscriptions ([MQTT-3.3.4-3]).
    pub fn publish_ref<'a>(&'a self, d: &'a Delivery, packet_id: u16, dup: bool) -> PublishRef<'a> {
        let message_expiry_interval = self.expires_at.map(|t| {
            let left = t.saturating_duration_since(Instant::now());
            // Round up, so a message with time left is never announced as already expired.
            left.as_secs() as u32 + u32::from(left.subsec_nanos() > 0)
        });
        PublishRef {
            dup,
            qos: d.qos,
            retain: d.retain,
            topic: &self.topic.as_bytes()[..],
            packet_id,
            properties: &self.properties,
            patch: PropertiesPatch {
                message_expiry_interval,
                subscription_identifiers: (!d.subscription_ids.is_empty())
                    .then_some(d.subscription_ids.as_slice()),
                topic_alias: None,
            },
            payload: &self.payload,
        }
    }

    /// [`Message::publish_ref`] as an owned `Publish` (tests and tools; it clones the
    /// properties, so the broker's send path does not use it).
    pub fn to_publish(&self, d: &Delivery, packet_id: u16, dup: bool) -> Publish {
        let r = self.publish_ref(d, packet_id, dup);
        let mut properties = self.properties.clone();
        properties.message_expiry_interval = r
            .patch
            .message_expiry_interval
            .or(properties.message_expiry_interval);
        if let Some(ids) = r.patch.subscription_identifiers {
            properties.subscription_identifiers = ids.to_vec();
        }
        Publish {
            dup,
            qos: d.qos,
            retain: d.retain,
            topic: self.topic.clone(),
            packet_id,
            properties,
            payload: self.payload.clone(),
        }
    }
}

/// One delivery of a message to one session: the granted QoS, the RETAIN flag it is sent
/// with, and the identifiers of the subscriptions it matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub msg: SharedMessage,
    pub qos: QoS,
    pub retain: bool,
    /// Empty unless the subscriptions carried identifiers; none or one is held inline.
    pub subscription_ids: SubscriptionIds,
    /// For a delivery through a shared subscription: its `$share/{group}/{filter}`, so that
    /// the message can go to another member if this one's session ends unacknowledged.
    pub shared: Option<ByteStr>,
}

impl Delivery {
    /// A delivery without subscription identifiers.
    pub fn new(msg: SharedMessage, qos: QoS, retain: bool) -> Delivery {
        Delivery {
            msg,
            qos,
            retain,
            subscription_ids: SubscriptionIds::new(),
            shared: None,
        }
    }
}

/// The identifiers of the subscriptions a delivery matched ([MQTT-3.3.4-3]), in the order
/// they were added.
///
/// A session almost always has none or one matching subscription with an identifier: those
/// are held inline, so building a delivery for an MQTT 5 subscriber allocates nothing (issue
/// #7: no allocation per message). Two or more go to the heap. No larger than the `Vec<u32>`
/// it replaces (the `Vec`'s capacity niche holds the tag), so a queued delivery costs the same.
#[derive(Clone, Default)]
pub struct SubscriptionIds(Ids);

#[derive(Clone, Default)]
enum Ids {
    #[default]
    None,
    One(u32),
    /// Two or more.
    Many(Vec<u32>),
}

impl SubscriptionIds {
    /// No identifiers.
    pub const fn new() -> SubscriptionIds {
        SubscriptionIds(Ids::None)
    }

    /// Adds one; allocates only for the second (and grows for later ones).
    pub fn push(&mut self, id: u32) {
        self.0 = match std::mem::take(&mut self.0) {
            Ids::None => Ids::One(id),
            Ids::One(first) => Ids::Many(vec![first, id]),
            Ids::Many(mut ids) => {
                ids.push(id);
                Ids::Many(ids)
            }
        };
    }

    pub fn as_slice(&self) -> &[u32] {
        match &self.0 {
            Ids::None => &[],
            Ids::One(id) => std::slice::from_ref(id),
            Ids::Many(ids) => ids,
        }
    }
}

impl std::ops::Deref for SubscriptionIds {
    type Target = [u32];
    fn deref(&self) -> &[u32] {
        self.as_slice()
    }
}

/// Equal when the identifiers are (however they are held).
impl PartialEq for SubscriptionIds {
    fn eq(&self, other: &SubscriptionIds) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for SubscriptionIds {}

impl std::fmt::Debug for SubscriptionIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl Extend<u32> for SubscriptionIds {
    fn extend<I: IntoIterator<Item = u32>>(&mut self, iter: I) {
        for id in iter {
            self.push(id);
        }
    }
}

impl FromIterator<u32> for SubscriptionIds {
    fn from_iter<I: IntoIterator<Item = u32>>(iter: I) -> SubscriptionIds {
        let mut ids = SubscriptionIds::new();
        ids.extend(iter);
        ids
    }
}

impl From<Vec<u32>> for SubscriptionIds {
    fn from(ids: Vec<u32>) -> SubscriptionIds {
        match ids[..] {
            [] => SubscriptionIds::new(),
            [id] => SubscriptionIds(Ids::One(id)),
            _ => SubscriptionIds(Ids::Many(ids)),
        }
    }
}

impl<'a> IntoIterator for &'a SubscriptionIds {
    type Item = &'a u32;
    type IntoIter = std::slice::Iter<'a, u32>;
    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_ids_keep_their_order_and_compare_by_value() {
        let mut ids = SubscriptionIds::new();
        assert!(ids.is_empty());
        ids.push(7);
        assert_eq!(ids.as_slice(), &[7]);
        ids.extend([3, 9]);
        assert_eq!(ids.as_slice(), &[7, 3, 9]);
        assert_eq!(ids, SubscriptionIds::from(vec![7, 3, 9]));
        assert_eq!(
            SubscriptionIds::from(vec![5]),
            Some(5).into_iter().collect()
        );
        assert_eq!(SubscriptionIds::from(vec![]), SubscriptionIds::new());
        assert_eq!(format!("{ids:?}"), "[7, 3, 9]");
    }

    #[test]
    fn subscription_ids_are_no_larger_than_a_vec() {
        assert!(std::mem::size_of::<SubscriptionIds>() <= std::mem::size_of::<Vec<u32>>());
    }
}
