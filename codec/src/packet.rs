//! The packet types of MQTT 3.1, 3.1.1 and 5.0, in one set.
//!
//! One type per control packet, shared by every protocol version: fields that only exist in
//! MQTT 5 (properties, reason codes) are simply empty/success for 3.x, and the encoder decides
//! from the session's [`ProtocolVersion`] what goes on the wire. This keeps the broker's
//! handlers version-agnostic: a handler reads `reason` and `properties` without asking which
//! version produced them.
//!
//! Strings that come off the wire are [`ByteStr`]: validated UTF-8 held in a `Bytes` slice of
//! the read buffer, so decoding a PUBLISH copies neither its topic nor its payload.

use bytes::Bytes;

use super::properties::Properties;

/// The protocol level carried by CONNECT (MQTT 3.1 = 3, 3.1.1 = 4, 5.0 = 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtocolVersion {
    /// MQTT 3.1, protocol name "MQIsdp", level 3.
    V31,
    /// MQTT 3.1.1, protocol name "MQTT", level 4.
    V311,
    /// MQTT 5.0, protocol name "MQTT", level 5.
    V5,
}

impl ProtocolVersion {
    /// The protocol level byte of CONNECT.
    pub fn level(self) -> u8 {
        match self {
            ProtocolVersion::V31 => 3,
            ProtocolVersion::V311 => 4,
            ProtocolVersion::V5 => 5,
        }
    }

    /// The protocol name of CONNECT.
    pub fn name(self) -> &'static str {
        match self {
            ProtocolVersion::V31 => "MQIsdp",
            _ => "MQTT",
        }
    }

    /// True for MQTT 5.0, the only version with properties and reason codes on every packet.
    pub fn is_v5(self) -> bool {
        self == ProtocolVersion::V5
    }
}

/// Quality of service of a PUBLISH or a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum QoS {
    #[default]
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    /// Parses the two QoS bits; 3 is not a QoS ([MQTT-3.3.1-4]).
    pub fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// A UTF-8 string that was validated once (no NUL, no surrogates, valid encoding) and is
/// shared without copying: cloning is a reference-count increment.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ByteStr(Bytes);

impl ByteStr {
    /// Wraps bytes already known to be valid UTF-8 (checked by the caller).
    ///
    /// Returns `None` if they are not UTF-8.
    pub fn from_utf8(bytes: Bytes) -> Option<ByteStr> {
        std::str::from_utf8(&bytes).ok()?;
        Some(ByteStr(bytes))
    }

    /// A string known at compile time or built by the broker.
    pub fn from_static(s: &'static str) -> ByteStr {
        ByteStr(Bytes::from_static(s.as_bytes()))
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        // SAFETY-free: validated at construction; from_utf8_unchecked would save a scan but
        // the checked form costs nothing measurable next to decoding (see benches/codec.rs).
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    /// The underlying bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The same string in an allocation of its own. A decoded string is a slice of the
    /// connection's read buffer, and any slice keeps that whole buffer (4 KiB or more) alive:
    /// strings kept for a session's lifetime (client id, subscription filters, will topic)
    /// are copied with this so that idle sessions do not pin read buffers.
    pub fn unshared(&self) -> ByteStr {
        ByteStr(Bytes::copy_from_slice(&self.0))
    }
}

impl From<String> for ByteStr {
    fn from(s: String) -> ByteStr {
        ByteStr(Bytes::from(s))
    }
}

impl From<&str> for ByteStr {
    fn from(s: &str) -> ByteStr {
        ByteStr(Bytes::copy_from_slice(s.as_bytes()))
    }
}

/// Lets maps keyed by `ByteStr` be queried with `&[u8]` (`ByteStr` hashes exactly as its bytes).
impl std::borrow::Borrow<[u8]> for ByteStr {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl std::ops::Deref for ByteStr {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Debug for ByteStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for ByteStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every MQTT control packet.
///
/// Variants are stored inline: a packet lives on the stack for one handler call, and boxing
/// CONNECT (the large one, with two property sets) would only move its cost to the heap.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Connect(Connect),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(PubResp),
    PubRec(PubResp),
    PubRel(PubResp),
    PubComp(PubResp),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    /// MQTT 5 only.
    Auth(Auth),
}

impl Packet {
    /// The packet's name as the specification writes it, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Packet::Connect(_) => "CONNECT",
            Packet::ConnAck(_) => "CONNACK",
            Packet::Publish(_) => "PUBLISH",
            Packet::PubAck(_) => "PUBACK",
            Packet::PubRec(_) => "PUBREC",
            Packet::PubRel(_) => "PUBREL",
            Packet::PubComp(_) => "PUBCOMP",
            Packet::Subscribe(_) => "SUBSCRIBE",
            Packet::SubAck(_) => "SUBACK",
            Packet::Unsubscribe(_) => "UNSUBSCRIBE",
            Packet::UnsubAck(_) => "UNSUBACK",
            Packet::PingReq => "PINGREQ",
            Packet::PingResp => "PINGRESP",
            Packet::Disconnect(_) => "DISCONNECT",
            Packet::Auth(_) => "AUTH",
        }
    }
}

/// The Will of a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Will {
    pub topic: ByteStr,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// Will properties (MQTT 5): will delay, message expiry, content type, ...
    pub properties: Properties,
}

impl Will {
    /// The will with its topic and payload in allocations of their own (see
    /// [`ByteStr::unshared`]). Properties are left as decoded: wills with MQTT 5 string
    /// properties are rare.
    pub fn unshared(self) -> Will {
        Will {
            topic: self.topic.unshared(),
            payload: Bytes::copy_from_slice(&self.payload),
            ..self
        }
    }
}

/// CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub version: ProtocolVersion,
    /// Clean Session (3.x) / Clean Start (5.0).
    pub clean_start: bool,
    pub keep_alive: u16,
    pub client_id: ByteStr,
    pub will: Option<Will>,
    pub username: Option<ByteStr>,
    /// Binary data, not necessarily UTF-8.
    pub password: Option<Bytes>,
    pub properties: Properties,
}

/// CONNACK.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnAck {
    pub session_present: bool,
    /// A 3.x return code (0..=5) or a 5.0 reason code; see [`super::reason`].
    pub code: u8,
    pub properties: Properties,
}

/// PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// May be empty in MQTT 5 when a topic alias is used.
    pub topic: ByteStr,
    /// Zero for QoS 0.
    pub packet_id: u16,
    pub properties: Properties,
    pub payload: Bytes,
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP: a packet id, and in MQTT 5 a reason code and properties.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PubResp {
    pub packet_id: u16,
    /// 0 = success (always 0 for 3.x).
    pub reason: u8,
    pub properties: Properties,
}

impl PubResp {
    /// A success response for `packet_id`.
    pub fn new(packet_id: u16) -> PubResp {
        PubResp {
            packet_id,
            reason: 0,
            properties: Properties::default(),
        }
    }
}

/// Retain Handling of a subscription (MQTT 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetainHandling {
    /// 0: send retained messages at subscribe time.
    #[default]
    SendAtSubscribe,
    /// 1: send them only if the subscription did not exist.
    SendIfNew,
    /// 2: never send them.
    DoNotSend,
}

/// Options of one topic filter in SUBSCRIBE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubOptions {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: RetainHandling,
}

/// SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscribe {
    pub packet_id: u16,
    pub filters: Vec<(ByteStr, SubOptions)>,
    pub properties: Properties,
}

/// SUBACK.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubAck {
    pub packet_id: u16,
    /// One per filter: granted QoS (0..=2) or a failure code (0x80, or a 5.0 reason code).
    pub codes: Vec<u8>,
    pub properties: Properties,
}

/// UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Unsubscribe {
    pub packet_id: u16,
    pub filters: Vec<ByteStr>,
    pub properties: Properties,
}

/// UNSUBACK.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnsubAck {
    pub packet_id: u16,
    /// MQTT 5 only: one reason code per filter (empty for 3.x).
    pub codes: Vec<u8>,
    pub properties: Properties,
}

/// DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// MQTT 5 reason code (0 = normal disconnection).
    pub reason: u8,
    pub properties: Properties,
}

/// AUTH (MQTT 5).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    pub reason: u8,
    pub properties: Properties,
}
