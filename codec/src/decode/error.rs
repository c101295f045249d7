//! [`DecodeError`]: why a frame could not be decoded, and the reason code it maps to.

use crate::properties::id;
use crate::reason::v5 as rc;

/// Why a frame could not be decoded. Each maps to the MQTT 5 reason code the broker sends in
/// DISCONNECT (or CONNACK, for an error in CONNECT) before closing the connection; see
/// [`DecodeError::reason_code`].
///
/// Variants carry only `Copy` data (no allocation or formatting when an error is made).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// A variable byte integer (remaining length, property length, subscription identifier)
    /// runs past 4 bytes or is not minimally encoded (2.1.4, [MQTT-1.5.5-1]). Malformed, 0x81.
    MalformedVarInt,
    /// The whole packet (`size` bytes) is larger than the `max` accepted. 0x95.
    PacketTooLarge { size: usize, max: u32 },
    /// Packet type 0 (reserved), or 15 (AUTH) on a 3.x connection. Malformed, 0x81.
    InvalidPacketType(u8),
    /// The fixed-header flags are not what the packet type requires [MQTT-2.2.2-1/2].
    /// Malformed, 0x81.
    InvalidFlags { packet_type: u8, flags: u8 },
    /// CONNECT names a protocol/level this codec does not speak: not "MQTT" 4 or 5 nor
    /// "MQIsdp" 3 [MQTT-3.1.2-1/2]. The broker answers CONNACK 0x84 when `level == 5` (the
    /// client speaks 5.0) and the 3.x return code 0x01 otherwise. 0x84.
    UnsupportedProtocolVersion { level: u8 },
    /// A QoS field (PUBLISH, Will, subscription options) holds 3 [MQTT-3.3.1-4]. Malformed, 0x81.
    InvalidQoS,
    /// A UTF-8 string is not valid UTF-8 or contains U+0000 [MQTT-1.5.3-1/2]. Malformed, 0x81.
    InvalidUtf8,
    /// A PUBLISH or Will topic name contains a wildcard [MQTT-3.3.2-2] or is empty where that
    /// is not allowed [MQTT-4.7.3-1]. 0x90.
    TopicNameInvalid,
    /// A SUBSCRIBE or UNSUBSCRIBE filter is empty [MQTT-4.7.3-1] or misplaces a wildcard
    /// (`a/#/b`, `#/x`, `a+`) [MQTT-4.7.1-1]: a malformed packet, as mosquitto treats it.
    /// 0x8F (Topic Filter invalid).
    TopicFilterInvalid,
    /// A packet identifier that must be non-zero is zero [MQTT-2.3.1-1]. Protocol Error, 0x82.
    ZeroPacketId,
    /// A property identifier that MQTT 5 does not define (2.2.2.2). Malformed, 0x81.
    UnknownProperty(u8),
    /// A property not allowed in this packet (table 2-4; "a Control Packet which contains an
    /// Identifier which is not valid for its packet type ... is a Malformed Packet", 2.2.2.2).
    /// `packet` is the packet name, or "Will" for the will properties. Malformed, 0x81.
    PropertyNotAllowed { id: u8, packet: &'static str },
    /// A property that may appear once appears twice. Protocol Error, 0x82.
    DuplicateProperty(u8),
    /// A property value outside its range (a 0/1 flag above 1; 0 for receive maximum, maximum
    /// packet size, topic alias or subscription identifier; a wildcard in a response topic;
    /// authentication data without a method). Protocol Error, 0x82.
    InvalidPropertyValue(u8),
    /// A field runs past the end of the frame. Malformed, 0x81.
    Truncated,
    /// Bytes are left in the frame after the packet's last field. Malformed, 0x81.
    TrailingBytes,
    /// Any other malformed packet; the text names the rule. 0x81.
    Malformed(&'static str),
    /// Any other protocol error; the text names the rule. 0x82.
    ProtocolError(&'static str),
}

impl DecodeError {
    /// The MQTT 5 reason code to send in DISCONNECT or CONNACK for this error.
    pub fn reason_code(&self) -> u8 {
        match self {
            DecodeError::PacketTooLarge { .. } => rc::PACKET_TOO_LARGE,
            DecodeError::UnsupportedProtocolVersion { .. } => rc::UNSUPPORTED_PROTOCOL_VERSION,
            DecodeError::TopicNameInvalid => rc::TOPIC_NAME_INVALID,
            DecodeError::TopicFilterInvalid => rc::TOPIC_FILTER_INVALID,
            // [MQTT-3.3.2-8]: a Topic Alias of 0 is "Topic Alias invalid", not a generic error.
            DecodeError::InvalidPropertyValue(id::TOPIC_ALIAS) => rc::TOPIC_ALIAS_INVALID,
            DecodeError::ZeroPacketId
            | DecodeError::DuplicateProperty(_)
            | DecodeError::InvalidPropertyValue(_)
            | DecodeError::ProtocolError(_) => rc::PROTOCOL_ERROR,
            DecodeError::MalformedVarInt
            | DecodeError::InvalidPacketType(_)
            | DecodeError::InvalidFlags { .. }
            | DecodeError::InvalidQoS
            | DecodeError::InvalidUtf8
            | DecodeError::UnknownProperty(_)
            | DecodeError::PropertyNotAllowed { .. }
            | DecodeError::Truncated
            | DecodeError::TrailingBytes
            | DecodeError::Malformed(_) => rc::MALFORMED_PACKET,
        }
    }
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::MalformedVarInt => {
                f.write_str("malformed variable byte integer (over 4 bytes or not minimal)")
            }
            DecodeError::PacketTooLarge { size, max } => {
                write!(
                    f,
                    "packet of {size} bytes exceeds the maximum packet size {max}"
                )
            }
            DecodeError::InvalidPacketType(t) => write!(f, "invalid packet type {t}"),
            DecodeError::InvalidFlags { packet_type, flags } => {
                write!(
                    f,
                    "invalid fixed header flags {flags:#06b} for packet type {packet_type}"
                )
            }
            DecodeError::UnsupportedProtocolVersion { level } => {
                write!(f, "unsupported protocol name or level {level}")
            }
            DecodeError::InvalidQoS => f.write_str("QoS 3 is not a valid QoS"),
            DecodeError::InvalidUtf8 => f.write_str("string is not valid UTF-8 or contains U+0000"),
            DecodeError::TopicFilterInvalid => f.write_str("invalid topic filter"),
            DecodeError::TopicNameInvalid => {
                f.write_str("topic name is empty or contains a wildcard")
            }
            DecodeError::ZeroPacketId => f.write_str("packet identifier is zero"),
            DecodeError::UnknownProperty(id) => write!(f, "unknown property {id:#04x}"),
            DecodeError::PropertyNotAllowed { id, packet } => {
                write!(f, "property {id:#04x} is not allowed in {packet}")
            }
            DecodeError::DuplicateProperty(id) => write!(f, "property {id:#04x} appears twice"),
            DecodeError::InvalidPropertyValue(id) => {
                write!(f, "property {id:#04x} has an invalid value")
            }
            DecodeError::Truncated => f.write_str("a field runs past the end of the packet"),
            DecodeError::TrailingBytes => f.write_str("unexpected bytes at the end of the packet"),
            DecodeError::Malformed(what) => write!(f, "malformed packet: {what}"),
            DecodeError::ProtocolError(what) => write!(f, "protocol error: {what}"),
        }
    }
}

impl std::error::Error for DecodeError {}
