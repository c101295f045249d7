//! What the session answers the shard: the packets to send ([`Outgoing`]), what became of
//! an offered message ([`Offer`]) and of an acknowledgement ([`Ack`], [`PubRec`]).

use crate::message::Delivery;
use crate::protocol::{Packet, PubResp, Publish};

/// A PUBLISH the session decided to send: the delivery and its per-send fields. The shard
/// encodes it straight from the shared message (`Message::publish_ref`); no `Publish` is
/// built per delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendPublish {
    pub delivery: Delivery,
    /// 0 at QoS 0.
    pub packet_id: u16,
    pub dup: bool,
}

impl SendPublish {
    /// The PUBLISH as an owned packet (tests, logs; clones the properties).
    pub fn to_publish(&self) -> Publish {
        self.delivery
            .msg
            .to_publish(&self.delivery, self.packet_id, self.dup)
    }
}

/// What a session asks its connection to send, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    Publish(SendPublish),
    /// PUBREL of this packet id (a resumed QoS 2 flow).
    PubRel(u16),
}

impl Outgoing {
    /// As an owned packet (tests).
    pub fn to_packet(&self) -> Packet {
        match self {
            Outgoing::Publish(p) => Packet::Publish(p.to_publish()),
            Outgoing::PubRel(id) => Packet::PubRel(PubResp::new(*id)),
        }
    }
}

/// What became of a message offered to a session.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    /// Send this PUBLISH now.
    Send(SendPublish),
    /// Kept in the session queue.
    Queued,
    /// Dropped: QoS 0 for an offline client, the queue is full, or too large for the client.
    Dropped,
}

/// What a PUBACK or PUBCOMP did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// A flow completed: the window has room.
    Done,
    /// No message in flight has this id (a late duplicate): ignored, as mosquitto does.
    Unknown,
    /// The id is in flight in another flow (PUBCOMP for QoS 1, PUBACK for QoS 2, PUBCOMP
    /// before PUBREC): a protocol violation; mosquitto closes the connection.
    Violation,
}

/// What a PUBREC did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PubRec {
    /// Send PUBREL for this packet id.
    Release(u16),
    /// A failure reason code ended the flow: the window has room.
    Ended,
    /// Unknown id: ignored.
    Unknown,
    /// As [`Ack::Violation`].
    Violation,
}
