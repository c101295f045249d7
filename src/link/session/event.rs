//! What a client session reports to its owner: events, why it ended, why a send was refused.

use crate::protocol::Publish;

/// What happened, for the session's owner. Inline like [`Packet`]: events pass through a
/// reused queue, and boxing the message would allocate per message.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// CONNACK accepted the connection.
    Connected { session_present: bool },
    /// A message from the peer (QoS 2: once, when its PUBLISH first arrives).
    Message(Publish),
    /// An outgoing QoS 1/2 message is done: PUBACK, PUBCOMP, or a PUBREC with a failure
    /// reason (5.0). `reason` is the peer's code (0 = success).
    Acked { packet_id: u16, reason: u8 },
    /// An outgoing QoS 2 message reached the peer (PUBREC, success): PUBREL is sent and the
    /// message must not be sent again, only released.
    Received { packet_id: u16 },
    /// SUBACK: one granted QoS or failure code per filter.
    Subscribed { packet_id: u16, codes: Vec<u8> },
    /// The session is over; nothing more will be sent or received.
    Closed(CloseReason),
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// CONNACK refused the connection with this return (3.x) or reason (5.0) code.
    Refused(u8),
    /// The peer sent DISCONNECT (5.0 reason code; 0 for 3.x, where servers never send it).
    Disconnected(u8),
    /// The peer closed the connection, or it failed (I/O or TLS error).
    Gone(String),
    /// The peer broke the protocol, or did not answer in time.
    Protocol(String),
    /// The owner asked for it ([`ClientSession::disconnect`]).
    Local,
}

/// Why a publish or subscribe was not accepted now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// CONNACK has not arrived yet, or the session is closed.
    NotConnected,
    /// The in-flight window is full: try again after an [`Event::Acked`].
    InflightFull,
    /// Larger than the peer's Maximum Packet Size (5.0), or than the protocol allows.
    TooLarge,
    /// The write buffer is over its bound (a slow peer): try again after it drains.
    Backpressure,
    /// The packet id the owner chose is 0 or already in a flow.
    IdInUse,
}
