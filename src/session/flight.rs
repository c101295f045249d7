//! What a session owes its client: deliveries in flight ([`Inflight`]) and queued
//! ([`Queued`]), and the limits on both ([`Limits`]).

use crate::message::Delivery;
use crate::record::OutState;
use crate::store::Flow;

/// An outgoing QoS 1/2 message that the client has not finished acknowledging.
#[derive(Debug, Clone)]
pub struct Inflight {
    /// The store's key of this delivery (see the module documentation).
    pub seq: u64,
    pub packet_id: u16,
    pub delivery: Delivery,
    pub state: OutState,
    /// The shard's turn that put it in the store (0: it was durable before, e.g. recovered),
    /// reported when a QoS 1 delivery is acknowledged (see `shard::durable`).
    pub put_turn: u64,
}

/// Per-session limits, from the configuration and the client's CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Outgoing QoS 1/2 messages in flight (0 = unlimited): the smaller of
    /// `max_inflight_messages` and the client's Receive Maximum ([MQTT-3.3.4-9]).
    pub max_inflight: u16,
    /// Messages queued beyond the window (0 = unlimited) — `max_queued_messages`.
    pub max_queued: u32,
    /// Payload bytes queued beyond the window (0 = unlimited) — `max_queued_bytes`. As in
    /// mosquitto, a message is queued while the queue holds less than this, so the queue
    /// exceeds it by at most one message; with `max_queued_messages` too, the first limit
    /// reached applies.
    ///
    /// Both limits are 32-bit (a larger setting counts as 4 Gi messages or 4 GiB), so that
    /// every session's copy of them takes 8 bytes, not 16 (memory per connection).
    pub max_queued_bytes: u32,
    /// The client's Maximum Packet Size (0 = none): larger PUBLISHes are not sent to it
    /// ([MQTT-3.1.2-25]) but dropped as if delivered.
    pub max_packet_size: u32,
    /// Payload bytes of outgoing QoS 1/2 messages in flight (0 = unlimited) —
    /// `max_inflight_bytes`. As in mosquitto, a message goes out while less is in flight,
    /// so the window exceeds it by at most one message.
    pub max_inflight_bytes: u32,
}

impl Inflight {
    pub(super) fn flow(&self) -> Flow {
        Flow {
            packet_id: self.packet_id,
            state: self.state,
        }
    }
}

/// A QoS 1/2 delivery waiting for the window or for a reconnect.
#[derive(Debug, Clone)]
pub struct Queued {
    /// The store's key of this delivery.
    pub seq: u64,
    pub delivery: Delivery,
    /// As [`Inflight::put_turn`].
    pub put_turn: u64,
}

impl Limits {
    /// The limits for a client that announced `receive_max` (MQTT 5 Receive Maximum;
    /// `u16::MAX` when absent) and `max_packet_size` (0 = none), under the broker's
    /// `max_inflight_messages` and `max_queued_messages`.
    pub fn new(config: &crate::config::Config, receive_max: u16, max_packet_size: u32) -> Limits {
        Limits {
            max_inflight: match config.max_inflight_messages {
                0 => receive_max,
                m => m.min(receive_max),
            },
            max_queued: u32::try_from(config.max_queued_messages).unwrap_or(u32::MAX),
            max_queued_bytes: u32::try_from(config.max_queued_bytes).unwrap_or(u32::MAX),
            max_packet_size,
            max_inflight_bytes: u32::try_from(config.clients.max_inflight_bytes)
                .unwrap_or(u32::MAX),
        }
    }
}
