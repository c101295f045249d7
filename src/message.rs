//! An application message as the broker routes it.
//!
//! A PUBLISH is decoded once into a [`Message`] behind an `Arc` and that one allocation is
//! shared by every subscriber, every shard, the retained store and every session queue: the
//! payload and topic are `Bytes` slices of the read buffer, never copied while routing.

use std::sync::Arc;

use bytes::Bytes;

use crate::index::SubscriberId;
use crate::protocol::{ByteStr, Properties, Publish, QoS};

/// A message being routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: ByteStr,
    pub payload: Bytes,
    /// The QoS it was published with (the ceiling for every delivery).
    pub qos: QoS,
    /// The RETAIN flag it was published with.
    pub retain: bool,
    pub properties: Properties,
    /// The publishing session, when there is one (no-local, logs).
    pub origin: Option<SubscriberId>,
}

/// The shared form.
pub type SharedMessage = Arc<Message>;

impl Message {
    /// The message a client's PUBLISH carries.
    pub fn from_publish(publish: Publish, origin: Option<SubscriberId>) -> Message {
        Message {
            topic: publish.topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            properties: publish.properties,
            origin,
        }
    }

    /// The PUBLISH that delivers this message to one subscriber.
    pub fn to_publish(&self, qos: QoS, packet_id: u16, retain: bool, dup: bool) -> Publish {
        Publish {
            dup,
            qos,
            retain,
            topic: self.topic.clone(),
            packet_id,
            properties: self.properties.clone(),
            payload: self.payload.clone(),
        }
    }
}
