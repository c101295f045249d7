//! Decoding: a two-phase parse (frame check, then packet parse) over a `BytesMut`.
//!
//! Phase one looks only at the fixed header: the first byte (packet type and flags, checked at
//! once so a garbage stream fails on its first byte) and the remaining length. If the frame is
//! not all there, [`decode`] returns `Ok(None)` and leaves the buffer untouched: "incomplete" is
//! normal control flow. A frame larger than the connection's maximum is refused as soon as its
//! length is known, before its bytes arrive.
//!
//! Phase two splits the frame off the buffer (`split_to(..).freeze()`) and parses the packet
//! out of that `Bytes`, so a PUBLISH topic and payload are slices of the read buffer, not
//! copies. Every rule that can be checked without session state is checked here, with the spec
//! statement it comes from; rules that need state (topic alias range, receive maximum, a second
//! CONNECT, ...) are the broker's.

use bytes::{Buf, Bytes, BytesMut};

use super::packet::{
    Auth, ByteStr, ConnAck, Connect, Disconnect, Packet, ProtocolVersion, PubResp, Publish, QoS,
    RetainHandling, SubAck, SubOptions, Subscribe, UnsubAck, Unsubscribe, Will,
};
use super::properties::{id, Properties};
use super::reason::v5 as rc;

/// The largest remaining length a 4-byte variable byte integer can hold (2.1.4).
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// The largest whole packet: one type byte, four length bytes, the largest remaining length.
pub const MAX_PACKET_SIZE: usize = 1 + 4 + MAX_REMAINING_LENGTH;

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
            DecodeError::InvalidPropertyValue(super::properties::id::TOPIC_ALIAS) => {
                rc::TOPIC_ALIAS_INVALID
            }
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

type Result<T> = std::result::Result<T, DecodeError>;

/// Packet type numbers (first nibble of the fixed header, 2.1.2).
pub(crate) mod ptype {
    pub const CONNECT: u8 = 1;
    pub const CONNACK: u8 = 2;
    pub const PUBLISH: u8 = 3;
    pub const PUBACK: u8 = 4;
    pub const PUBREC: u8 = 5;
    pub const PUBREL: u8 = 6;
    pub const PUBCOMP: u8 = 7;
    pub const SUBSCRIBE: u8 = 8;
    pub const SUBACK: u8 = 9;
    pub const UNSUBSCRIBE: u8 = 10;
    pub const UNSUBACK: u8 = 11;
    pub const PINGREQ: u8 = 12;
    pub const PINGRESP: u8 = 13;
    pub const DISCONNECT: u8 = 14;
    pub const AUTH: u8 = 15;
}

/// The protocol level of the CONNECT at the front of `buf`, if there is one and its header
/// is readable. The broker asks before decoding a connection's first packet, so that a
/// CONNECT rejected by the decoder still gets a CONNACK in the client's own version
/// (MQTT 5 clients expect the reason code in a 5.0 CONNACK).
pub fn connect_level(buf: &[u8]) -> Option<u8> {
    if buf.first()? >> 4 != 1 {
        return None;
    }
    // Skip the remaining-length variable byte integer (at most 4 bytes).
    let len_bytes = buf.iter().skip(1).take(4).position(|b| b & 0x80 == 0)? + 1;
    let rest = buf.get(1 + len_bytes..)?;
    let name_len = usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]));
    rest.get(2 + name_len).copied()
}

/// The size of the whole frame at the front of `buf` (fixed header included), once its fixed
/// header is all there and valid; `None` before that. The broker reserves this much for a
/// large packet still arriving instead of growing its read buffer step by step.
pub fn frame_size(buf: &[u8]) -> Option<usize> {
    match read_remaining_length(buf.get(1..)?) {
        Ok(Some((len_bytes, remaining))) => Some(1 + len_bytes + remaining),
        _ => None,
    }
}

/// Checks the first byte a connection sends: it must start a CONNECT [MQTT-3.1.0-1]. Asked
/// before anything else is decoded, so that a client whose first packet is something else is
/// refused at its first byte, not after the body it announces (up to 256 MB) has arrived.
/// (CONNECT's reserved flags are checked by [`decode`].)
pub fn check_first_packet(buf: &[u8]) -> Result<()> {
    match buf.first() {
        Some(&b) if b >> 4 != ptype::CONNECT => Err(DecodeError::ProtocolError(
            "first packet is not CONNECT [MQTT-3.1.0-1]",
        )),
        _ => Ok(()),
    }
}

/// Decodes one packet from the front of `buf`.
///
/// * `Ok(None)`: the frame is incomplete; nothing was consumed. Read more and call again.
/// * `Ok(Some(packet))`: exactly one frame was consumed; strings and payloads in `packet`
///   share the frame's memory.
/// * `Err(e)`: the stream is unusable (`buf` is left in an unspecified state); send
///   `e.reason_code()` if the version allows and close the connection.
///
/// `version` is the connection's negotiated version, or `None` before CONNECT: then CONNECT is
/// decoded with the version it names and every other packet with 3.1.1 rules.
/// `max_packet_size` is the largest whole packet accepted (fixed header included), 0 meaning
/// the protocol maximum; a larger frame fails as soon as its remaining length is read.
pub fn decode(
    buf: &mut BytesMut,
    version: Option<ProtocolVersion>,
    max_packet_size: u32,
) -> Result<Option<Packet>> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let rules = version.unwrap_or(ProtocolVersion::V311);
    let packet_type = first >> 4;
    let flags = first & 0x0F;
    check_fixed_header(packet_type, flags, rules)?;

    let Some((len_bytes, remaining)) = read_remaining_length(&buf[1..])? else {
        return Ok(None);
    };
    let size = 1 + len_bytes + remaining;
    if max_packet_size != 0 && size > max_packet_size as usize {
        return Err(DecodeError::PacketTooLarge {
            size,
            max: max_packet_size,
        });
    }
    if buf.len() < size {
        return Ok(None);
    }

    let mut frame = buf.split_to(size).freeze();
    frame.advance(1 + len_bytes);
    let mut r = Reader { buf: frame };
    let packet = match packet_type {
        ptype::CONNECT => Packet::Connect(parse_connect(&mut r)?),
        ptype::CONNACK => Packet::ConnAck(parse_connack(&mut r, rules)?),
        ptype::PUBLISH => Packet::Publish(parse_publish(&mut r, flags, rules)?),
        ptype::PUBACK => Packet::PubAck(parse_pub_resp(&mut r, rules)?),
        ptype::PUBREC => Packet::PubRec(parse_pub_resp(&mut r, rules)?),
        ptype::PUBREL => Packet::PubRel(parse_pub_resp(&mut r, rules)?),
        ptype::PUBCOMP => Packet::PubComp(parse_pub_resp(&mut r, rules)?),
        ptype::SUBSCRIBE => Packet::Subscribe(parse_subscribe(&mut r, rules)?),
        ptype::SUBACK => Packet::SubAck(parse_suback(&mut r, rules)?),
        ptype::UNSUBSCRIBE => Packet::Unsubscribe(parse_unsubscribe(&mut r, rules)?),
        ptype::UNSUBACK => Packet::UnsubAck(parse_unsuback(&mut r, rules)?),
        ptype::PINGREQ => Packet::PingReq,
        ptype::PINGRESP => Packet::PingResp,
        ptype::DISCONNECT => {
            let (reason, properties) = parse_reason_and_props(&mut r, rules, Ctx::Disconnect)?;
            Packet::Disconnect(Disconnect { reason, properties })
        }
        // check_fixed_header let AUTH through only for 5.0.
        _ => {
            let (reason, properties) = parse_reason_and_props(&mut r, rules, Ctx::Auth)?;
            Packet::Auth(Auth { reason, properties })
        }
    };
    r.finish()?;
    Ok(Some(packet))
}

/// Checks the first byte of the fixed header: a defined packet type for `version` and the
/// reserved flags it requires (2.1.3, [MQTT-2.2.2-1], [MQTT-2.2.2-2]).
fn check_fixed_header(packet_type: u8, flags: u8, version: ProtocolVersion) -> Result<()> {
    let ok = match packet_type {
        // PUBLISH: DUP, QoS, RETAIN. QoS 3 is malformed [MQTT-3.3.1-4].
        ptype::PUBLISH => {
            if (flags >> 1) & 0b11 == 3 {
                return Err(DecodeError::InvalidQoS);
            }
            true
        }
        // PUBREL, SUBSCRIBE, UNSUBSCRIBE carry 0b0010 [MQTT-3.6.1-1][MQTT-3.8.1-1]
        // [MQTT-3.10.1-1]. MQTT 3.1 set DUP on their retransmission (as mosquitto accepts).
        ptype::PUBREL | ptype::SUBSCRIBE | ptype::UNSUBSCRIBE => {
            flags == 0b0010 || (version == ProtocolVersion::V31 && flags == 0b1010)
        }
        ptype::AUTH if !version.is_v5() => {
            return Err(DecodeError::InvalidPacketType(packet_type));
        }
        0 => return Err(DecodeError::InvalidPacketType(packet_type)),
        _ => flags == 0,
    };
    if ok {
        Ok(())
    } else {
        Err(DecodeError::InvalidFlags { packet_type, flags })
    }
}

/// Reads the remaining length after the first byte: `Ok(None)` if its bytes are not all
/// there, else `(bytes it took, value)`. At most 4 bytes, minimally encoded (2.1.4,
/// [MQTT-1.5.5-1]).
fn read_remaining_length(buf: &[u8]) -> Result<Option<(usize, usize)>> {
    let mut value = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        value |= ((b & 0x7F) as usize) << (7 * i);
        if b & 0x80 == 0 {
            if i > 0 && b == 0 {
                return Err(DecodeError::MalformedVarInt);
            }
            return Ok(Some((i + 1, value)));
        }
    }
    Err(DecodeError::MalformedVarInt)
}

/// A cursor over the body of one frame. Every read checks the length first: running off the
/// end is [`DecodeError::Truncated`], never a panic.
struct Reader {
    buf: Bytes,
}

impl Reader {
    fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn need(&self, n: usize) -> Result<()> {
        if self.buf.len() < n {
            Err(DecodeError::Truncated)
        } else {
            Ok(())
        }
    }

    fn u8(&mut self) -> Result<u8> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }

    fn u16(&mut self) -> Result<u16> {
        self.need(2)?;
        Ok(self.buf.get_u16())
    }

    fn u32(&mut self) -> Result<u32> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }

    /// A non-zero packet identifier [MQTT-2.3.1-1].
    fn packet_id(&mut self) -> Result<u16> {
        match self.u16()? {
            0 => Err(DecodeError::ZeroPacketId),
            id => Ok(id),
        }
    }

    /// A variable byte integer inside the body (property length, subscription identifier).
    fn var_int(&mut self) -> Result<u32> {
        match read_remaining_length(&self.buf)? {
            Some((n, value)) => {
                self.buf.advance(n);
                Ok(value as u32)
            }
            None => Err(DecodeError::Truncated),
        }
    }

    fn take(&mut self, n: usize) -> Result<Bytes> {
        self.need(n)?;
        Ok(self.buf.split_to(n))
    }

    /// Binary data: a two-byte length and that many bytes (1.5.6).
    fn binary(&mut self) -> Result<Bytes> {
        let n = self.u16()? as usize;
        self.take(n)
    }

    /// A UTF-8 encoded string (1.5.4): valid UTF-8 [MQTT-1.5.4-1] without U+0000
    /// [MQTT-1.5.4-2] (3.1.1: [MQTT-1.5.3-1], [MQTT-1.5.3-2]).
    fn string(&mut self) -> Result<ByteStr> {
        let bytes = self.binary()?;
        if bytes.contains(&0) {
            return Err(DecodeError::InvalidUtf8);
        }
        ByteStr::from_utf8(bytes).ok_or(DecodeError::InvalidUtf8)
    }

    /// A topic name: a string without `+` or `#` [MQTT-3.3.2-2] (may be empty; the caller
    /// decides whether that is allowed). One pass for NUL and wildcards, one for UTF-8.
    fn topic_name(&mut self) -> Result<ByteStr> {
        let bytes = self.binary()?;
        for &b in bytes.iter() {
            match b {
                0 => return Err(DecodeError::InvalidUtf8),
                b'+' | b'#' => return Err(DecodeError::TopicNameInvalid),
                _ => {}
            }
        }
        ByteStr::from_utf8(bytes).ok_or(DecodeError::InvalidUtf8)
    }

    fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// Every byte of the frame must belong to the packet.
    fn finish(&self) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }
}

/// Where a property list appears; decides which properties are allowed (table 2-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ctx {
    Connect,
    ConnAck,
    Publish,
    Will,
    PubResp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

const fn bits(ids: &[u8]) -> u64 {
    let mut mask = 0u64;
    let mut i = 0;
    while i < ids.len() {
        mask |= 1 << ids[i];
        i += 1;
    }
    mask
}

/// Every property MQTT 5 defines.
const KNOWN: u64 = bits(&[
    id::PAYLOAD_FORMAT_INDICATOR,
    id::MESSAGE_EXPIRY_INTERVAL,
    id::CONTENT_TYPE,
    id::RESPONSE_TOPIC,
    id::CORRELATION_DATA,
    id::SUBSCRIPTION_IDENTIFIER,
    id::SESSION_EXPIRY_INTERVAL,
    id::ASSIGNED_CLIENT_IDENTIFIER,
    id::SERVER_KEEP_ALIVE,
    id::AUTHENTICATION_METHOD,
    id::AUTHENTICATION_DATA,
    id::REQUEST_PROBLEM_INFORMATION,
    id::WILL_DELAY_INTERVAL,
    id::REQUEST_RESPONSE_INFORMATION,
    id::RESPONSE_INFORMATION,
    id::SERVER_REFERENCE,
    id::REASON_STRING,
    id::RECEIVE_MAXIMUM,
    id::TOPIC_ALIAS_MAXIMUM,
    id::TOPIC_ALIAS,
    id::MAXIMUM_QOS,
    id::RETAIN_AVAILABLE,
    id::USER_PROPERTY,
    id::MAXIMUM_PACKET_SIZE,
    id::WILDCARD_SUBSCRIPTION_AVAILABLE,
    id::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
    id::SHARED_SUBSCRIPTION_AVAILABLE,
]);

impl Ctx {
    /// The properties allowed here, as a bit set over property ids (MQTT 5.0 table 2-4).
    pub(crate) const fn allowed(self) -> u64 {
        match self {
            Ctx::Connect => bits(&[
                id::SESSION_EXPIRY_INTERVAL,
                id::AUTHENTICATION_METHOD,
                id::AUTHENTICATION_DATA,
                id::REQUEST_PROBLEM_INFORMATION,
                id::REQUEST_RESPONSE_INFORMATION,
                id::RECEIVE_MAXIMUM,
                id::TOPIC_ALIAS_MAXIMUM,
                id::USER_PROPERTY,
                id::MAXIMUM_PACKET_SIZE,
            ]),
            Ctx::ConnAck => bits(&[
                id::SESSION_EXPIRY_INTERVAL,
                id::ASSIGNED_CLIENT_IDENTIFIER,
                id::SERVER_KEEP_ALIVE,
                id::AUTHENTICATION_METHOD,
                id::AUTHENTICATION_DATA,
                id::RESPONSE_INFORMATION,
                id::SERVER_REFERENCE,
                id::REASON_STRING,
                id::RECEIVE_MAXIMUM,
                id::TOPIC_ALIAS_MAXIMUM,
                id::MAXIMUM_QOS,
                id::RETAIN_AVAILABLE,
                id::USER_PROPERTY,
                id::MAXIMUM_PACKET_SIZE,
                id::WILDCARD_SUBSCRIPTION_AVAILABLE,
                id::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
                id::SHARED_SUBSCRIPTION_AVAILABLE,
            ]),
            Ctx::Publish => bits(&[
                id::PAYLOAD_FORMAT_INDICATOR,
                id::MESSAGE_EXPIRY_INTERVAL,
                id::CONTENT_TYPE,
                id::RESPONSE_TOPIC,
                id::CORRELATION_DATA,
                id::SUBSCRIPTION_IDENTIFIER,
                id::TOPIC_ALIAS,
                id::USER_PROPERTY,
            ]),
            Ctx::Will => bits(&[
                id::PAYLOAD_FORMAT_INDICATOR,
                id::MESSAGE_EXPIRY_INTERVAL,
                id::CONTENT_TYPE,
                id::RESPONSE_TOPIC,
                id::CORRELATION_DATA,
                id::WILL_DELAY_INTERVAL,
                id::USER_PROPERTY,
            ]),
            Ctx::PubResp | Ctx::SubAck | Ctx::UnsubAck => {
                bits(&[id::REASON_STRING, id::USER_PROPERTY])
            }
            Ctx::Subscribe => bits(&[id::SUBSCRIPTION_IDENTIFIER, id::USER_PROPERTY]),
            Ctx::Unsubscribe => bits(&[id::USER_PROPERTY]),
            Ctx::Disconnect => bits(&[
                id::SESSION_EXPIRY_INTERVAL,
                id::SERVER_REFERENCE,
                id::REASON_STRING,
                id::USER_PROPERTY,
            ]),
            Ctx::Auth => bits(&[
                id::AUTHENTICATION_METHOD,
                id::AUTHENTICATION_DATA,
                id::REASON_STRING,
                id::USER_PROPERTY,
            ]),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Ctx::Connect => "CONNECT",
            Ctx::ConnAck => "CONNACK",
            Ctx::Publish => "PUBLISH",
            Ctx::Will => "Will",
            Ctx::PubResp => "PUBACK/PUBREC/PUBREL/PUBCOMP",
            Ctx::Subscribe => "SUBSCRIBE",
            Ctx::SubAck => "SUBACK",
            Ctx::Unsubscribe => "UNSUBSCRIBE",
            Ctx::UnsubAck => "UNSUBACK",
            Ctx::Disconnect => "DISCONNECT",
            Ctx::Auth => "AUTH",
        }
    }
}

/// A 0/1 property ("It is a Protocol Error to ... have a value other than 0 or 1").
fn flag(r: &mut Reader, pid: u8) -> Result<u8> {
    match r.u8()? {
        v @ (0 | 1) => Ok(v),
        _ => Err(DecodeError::InvalidPropertyValue(pid)),
    }
}

/// A u16 property for which 0 is a Protocol Error (receive maximum, topic alias).
fn nonzero_u16(r: &mut Reader, pid: u8) -> Result<u16> {
    match r.u16()? {
        0 => Err(DecodeError::InvalidPropertyValue(pid)),
        v => Ok(v),
    }
}

/// Reads a property length and the properties it covers (2.2.2), for a 5.0 packet.
fn read_properties(r: &mut Reader, ctx: Ctx) -> Result<Properties> {
    let len = r.var_int()? as usize;
    let mut p = Properties::default();
    if len == 0 {
        return Ok(p);
    }
    let mut pr = Reader { buf: r.take(len)? };
    let allowed = ctx.allowed();
    let mut seen = 0u64;
    while pr.remaining() > 0 {
        // The identifier is a variable byte integer, but every defined one is below 0x80: a
        // first byte with the continuation bit is no identifier we know.
        let pid = pr.u8()?;
        if pid >= 64 || KNOWN & (1 << pid) == 0 {
            return Err(DecodeError::UnknownProperty(pid));
        }
        let bit = 1u64 << pid;
        if allowed & bit == 0 {
            return Err(DecodeError::PropertyNotAllowed {
                id: pid,
                packet: ctx.name(),
            });
        }
        // User properties repeat anywhere; subscription identifiers repeat in PUBLISH only
        // (one per matching subscription, 3.3.2.3.8; once in SUBSCRIBE, 3.8.2.1.2).
        let repeatable =
            pid == id::USER_PROPERTY || (pid == id::SUBSCRIPTION_IDENTIFIER && ctx == Ctx::Publish);
        if !repeatable {
            if seen & bit != 0 {
                return Err(DecodeError::DuplicateProperty(pid));
            }
            seen |= bit;
        }
        match pid {
            id::PAYLOAD_FORMAT_INDICATOR => p.payload_format_indicator = Some(flag(&mut pr, pid)?),
            id::MESSAGE_EXPIRY_INTERVAL => p.message_expiry_interval = Some(pr.u32()?),
            id::CONTENT_TYPE => p.content_type = Some(pr.string()?),
            id::RESPONSE_TOPIC => {
                // A topic name: no wildcards [MQTT-3.3.2-14] [MQTT-3.1.3-11].
                let topic = pr.string()?;
                if topic.is_empty() || topic.contains(['+', '#']) {
                    return Err(DecodeError::InvalidPropertyValue(pid));
                }
                p.response_topic = Some(topic);
            }
            id::CORRELATION_DATA => p.correlation_data = Some(pr.binary()?),
            id::SUBSCRIPTION_IDENTIFIER => {
                // 1..=268,435,455; 0 is a Protocol Error (3.3.2.3.8).
                match pr.var_int()? {
                    0 => return Err(DecodeError::InvalidPropertyValue(pid)),
                    v => p.subscription_identifiers.push(v),
                }
            }
            id::SESSION_EXPIRY_INTERVAL => p.session_expiry_interval = Some(pr.u32()?),
            id::ASSIGNED_CLIENT_IDENTIFIER => p.assigned_client_identifier = Some(pr.string()?),
            id::SERVER_KEEP_ALIVE => p.server_keep_alive = Some(pr.u16()?),
            id::AUTHENTICATION_METHOD => p.authentication_method = Some(pr.string()?),
            id::AUTHENTICATION_DATA => p.authentication_data = Some(pr.binary()?),
            id::REQUEST_PROBLEM_INFORMATION => {
                p.request_problem_information = Some(flag(&mut pr, pid)?)
            }
            id::WILL_DELAY_INTERVAL => p.will_delay_interval = Some(pr.u32()?),
            id::REQUEST_RESPONSE_INFORMATION => {
                p.request_response_information = Some(flag(&mut pr, pid)?)
            }
            id::RESPONSE_INFORMATION => p.response_information = Some(pr.string()?),
            id::SERVER_REFERENCE => p.server_reference = Some(pr.string()?),
            id::REASON_STRING => p.reason_string = Some(pr.string()?),
            id::RECEIVE_MAXIMUM => p.receive_maximum = Some(nonzero_u16(&mut pr, pid)?),
            id::TOPIC_ALIAS_MAXIMUM => p.topic_alias_maximum = Some(pr.u16()?),
            id::TOPIC_ALIAS => p.topic_alias = Some(nonzero_u16(&mut pr, pid)?),
            id::MAXIMUM_QOS => p.maximum_qos = Some(flag(&mut pr, pid)?),
            id::RETAIN_AVAILABLE => p.retain_available = Some(flag(&mut pr, pid)?),
            id::USER_PROPERTY => {
                let key = pr.string()?;
                let value = pr.string()?;
                p.user_properties.push((key, value));
            }
            id::MAXIMUM_PACKET_SIZE => match pr.u32()? {
                0 => return Err(DecodeError::InvalidPropertyValue(pid)),
                v => p.maximum_packet_size = Some(v),
            },
            id::WILDCARD_SUBSCRIPTION_AVAILABLE => {
                p.wildcard_subscription_available = Some(flag(&mut pr, pid)?)
            }
            id::SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                p.subscription_identifier_available = Some(flag(&mut pr, pid)?)
            }
            _ => p.shared_subscription_available = Some(flag(&mut pr, pid)?),
        }
    }
    // "It is a Protocol Error to include Authentication Data if there is no Authentication
    // Method" (3.1.2.11.10, 3.2.2.3.18, 3.15.2.2.3).
    if p.authentication_data.is_some() && p.authentication_method.is_none() {
        return Err(DecodeError::InvalidPropertyValue(id::AUTHENTICATION_DATA));
    }
    Ok(p)
}

fn props_if_v5(r: &mut Reader, version: ProtocolVersion, ctx: Ctx) -> Result<Properties> {
    if version.is_v5() {
        read_properties(r, ctx)
    } else {
        Ok(Properties::default())
    }
}

/// CONNECT (3.1). Decoded with the version it names, whatever the connection's state.
fn parse_connect(r: &mut Reader) -> Result<Connect> {
    // Protocol name and level [MQTT-3.1.2-1] [MQTT-3.1.2-2]: anything but these three pairs is
    // answered with "unacceptable protocol version" (3.x) / 0x84 (5.0).
    let name = r.binary()?;
    let level = r.u8()?;
    let version = match (&name[..], level) {
        (b"MQTT", 4) => ProtocolVersion::V311,
        (b"MQTT", 5) => ProtocolVersion::V5,
        (b"MQIsdp", 3) => ProtocolVersion::V31,
        _ => return Err(DecodeError::UnsupportedProtocolVersion { level }),
    };

    let flags = r.u8()?;
    // The reserved bit is 0 [MQTT-3.1.2-3].
    if flags & 0x01 != 0 {
        return Err(DecodeError::Malformed("CONNECT flags reserved bit is set"));
    }
    let clean_start = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0b11;
    let will_retain = flags & 0x20 != 0;
    let has_password = flags & 0x40 != 0;
    let has_username = flags & 0x80 != 0;
    // Without a will, Will QoS and Will Retain are 0 (3.1.1: [MQTT-3.1.2-13] [MQTT-3.1.2-15];
    // 5.0: [MQTT-3.1.2-11] [MQTT-3.1.2-13]).
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(DecodeError::Malformed(
            "Will QoS or Will Retain set without a Will",
        ));
    }
    // Will QoS 3 (3.1.1: [MQTT-3.1.2-14]; 5.0: [MQTT-3.1.2-12]).
    let will_qos = QoS::from_u8(will_qos).ok_or(DecodeError::InvalidQoS)?;
    // 3.x: a password needs a user name [MQTT-3.1.2-22]; 5.0 allows it (3.1.2.9).
    if has_password && !has_username && !version.is_v5() {
        return Err(DecodeError::Malformed(
            "password flag set without user name flag",
        ));
    }
    let keep_alive = r.u16()?;
    let properties = props_if_v5(r, version, Ctx::Connect)?;

    // Payload: client id, will (properties, topic, payload), user name, password (3.1.3).
    let client_id = r.string()?;
    let will = if will_flag {
        let properties = props_if_v5(r, version, Ctx::Will)?;
        // The will topic is a topic name: non-empty, no wildcards [MQTT-3.1.3-10] [MQTT-4.7.3-1].
        let topic = r.topic_name()?;
        if topic.is_empty() {
            return Err(DecodeError::TopicNameInvalid);
        }
        let payload = r.binary()?;
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if has_username {
        Some(r.string()?)
    } else {
        None
    };
    let password = if has_password {
        Some(r.binary()?)
    } else {
        None
    };
    Ok(Connect {
        version,
        clean_start,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

/// CONNACK (3.2).
fn parse_connack(r: &mut Reader, version: ProtocolVersion) -> Result<ConnAck> {
    let flags = r.u8()?;
    // Bits 7-1 of the acknowledge flags are reserved, 0 (3.1.1: 3.2.2.1; 5.0: [MQTT-3.2.2-1]).
    if flags & 0xFE != 0 {
        return Err(DecodeError::Malformed(
            "CONNACK acknowledge flags reserved bits set",
        ));
    }
    let code = r.u8()?;
    let properties = props_if_v5(r, version, Ctx::ConnAck)?;
    Ok(ConnAck {
        session_present: flags & 1 != 0,
        code,
        properties,
    })
}

/// PUBLISH (3.3); `flags` were checked by [`check_fixed_header`].
fn parse_publish(r: &mut Reader, flags: u8, version: ProtocolVersion) -> Result<Publish> {
    let dup = flags & 0b1000 != 0;
    let qos = QoS::from_u8((flags >> 1) & 0b11).ok_or(DecodeError::InvalidQoS)?;
    let retain = flags & 1 != 0;
    // DUP is 0 for every QoS 0 message [MQTT-3.3.1-2].
    if dup && qos == QoS::AtMostOnce {
        return Err(DecodeError::Malformed("DUP set on a QoS 0 PUBLISH"));
    }
    let topic = r.topic_name()?;
    // A packet identifier only for QoS 1 and 2, and then non-zero [MQTT-2.3.1-1] (3.1.1:
    // [MQTT-2.3.1-5] none for QoS 0).
    let packet_id = if qos == QoS::AtMostOnce {
        0
    } else {
        r.packet_id()?
    };
    let properties = props_if_v5(r, version, Ctx::Publish)?;
    // Topic names are at least one character [MQTT-4.7.3-1], except in 5.0 when a Topic Alias
    // stands for the topic (3.3.2.3.4).
    if topic.is_empty() && properties.topic_alias.is_none() {
        return Err(DecodeError::TopicNameInvalid);
    }
    let payload = r.rest();
    Ok(Publish {
        dup,
        qos,
        retain,
        topic,
        packet_id,
        properties,
        payload,
    })
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP (3.4-3.7). In 5.0 the reason code may be omitted
/// (remaining length 2 = success) and so may the properties (remaining length 3)
/// (3.4.2.1, 3.5.2.1, 3.6.2.1, 3.7.2.1).
fn parse_pub_resp(r: &mut Reader, version: ProtocolVersion) -> Result<PubResp> {
    let packet_id = r.packet_id()?;
    let (reason, properties) = parse_reason_and_props(r, version, Ctx::PubResp)?;
    Ok(PubResp {
        packet_id,
        reason,
        properties,
    })
}

/// The optional "reason code, then optional properties" tail of PUBACK.., DISCONNECT (3.14.2:
/// remaining length 0 = normal disconnection) and AUTH (3.15.2). 3.x has neither: the caller's
/// `finish` rejects anything left.
fn parse_reason_and_props(
    r: &mut Reader,
    version: ProtocolVersion,
    ctx: Ctx,
) -> Result<(u8, Properties)> {
    if !version.is_v5() || r.remaining() == 0 {
        return Ok((0, Properties::default()));
    }
    let reason = r.u8()?;
    let properties = if r.remaining() == 0 {
        Properties::default()
    } else {
        read_properties(r, ctx)?
    };
    Ok((reason, properties))
}

/// SUBSCRIBE (3.8).
fn parse_subscribe(r: &mut Reader, version: ProtocolVersion) -> Result<Subscribe> {
    let packet_id = r.packet_id()?;
    let properties = props_if_v5(r, version, Ctx::Subscribe)?;
    let mut filters = Vec::new();
    while r.remaining() > 0 {
        let filter = topic_filter(r)?;
        let options = r.u8()?;
        filters.push((filter, sub_options(options, version)?));
    }
    // At least one filter [MQTT-3.8.3-3] (3.1.1: [MQTT-3.8.3-3] too).
    if filters.is_empty() {
        return Err(DecodeError::ProtocolError(
            "SUBSCRIBE without a topic filter",
        ));
    }
    Ok(Subscribe {
        packet_id,
        filters,
        properties,
    })
}

/// A SUBSCRIBE/UNSUBSCRIBE topic filter: a UTF-8 string that is a valid filter (the broker
/// checks its own limits and shared-subscription names).
fn topic_filter(r: &mut Reader) -> Result<ByteStr> {
    let filter = r.string()?;
    super::topic::validate_topic_filter(&filter).map_err(|_| DecodeError::TopicFilterInvalid)?;
    Ok(filter)
}

/// The subscription options byte (3.8.3.1).
fn sub_options(byte: u8, version: ProtocolVersion) -> Result<SubOptions> {
    let qos = QoS::from_u8(byte & 0b11).ok_or(DecodeError::InvalidQoS)?;
    if !version.is_v5() {
        // 3.x: the upper 6 bits are reserved, 0 (3.1.1 [MQTT-3-8.3-4]).
        if byte & 0b1111_1100 != 0 {
            return Err(DecodeError::Malformed(
                "SUBSCRIBE requested QoS reserved bits set",
            ));
        }
        return Ok(SubOptions {
            qos,
            ..SubOptions::default()
        });
    }
    // 5.0: bits 6 and 7 are reserved, 0 [MQTT-3.8.3-5]; retain handling 3 is malformed.
    if byte & 0b1100_0000 != 0 {
        return Err(DecodeError::Malformed(
            "subscription options reserved bits set",
        ));
    }
    let retain_handling = match (byte >> 4) & 0b11 {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendIfNew,
        2 => RetainHandling::DoNotSend,
        _ => return Err(DecodeError::Malformed("retain handling 3")),
    };
    Ok(SubOptions {
        qos,
        no_local: byte & 0b0100 != 0,
        retain_as_published: byte & 0b1000 != 0,
        retain_handling,
    })
}

/// SUBACK (3.9).
fn parse_suback(r: &mut Reader, version: ProtocolVersion) -> Result<SubAck> {
    let packet_id = r.packet_id()?;
    let properties = props_if_v5(r, version, Ctx::SubAck)?;
    let codes = r.rest();
    if codes.is_empty() {
        return Err(DecodeError::ProtocolError("SUBACK without a return code"));
    }
    // 3.1.1: return codes other than 0, 1, 2 and 0x80 are reserved [MQTT-3.9.3-2].
    if !version.is_v5() && codes.iter().any(|&c| c > 2 && c != 0x80) {
        return Err(DecodeError::Malformed("SUBACK return code is reserved"));
    }
    Ok(SubAck {
        packet_id,
        codes: codes.to_vec(),
        properties,
    })
}

/// UNSUBSCRIBE (3.10).
fn parse_unsubscribe(r: &mut Reader, version: ProtocolVersion) -> Result<Unsubscribe> {
    let packet_id = r.packet_id()?;
    let properties = props_if_v5(r, version, Ctx::Unsubscribe)?;
    let mut filters = Vec::new();
    while r.remaining() > 0 {
        filters.push(topic_filter(r)?);
    }
    // At least one filter [MQTT-3.10.3-2].
    if filters.is_empty() {
        return Err(DecodeError::ProtocolError(
            "UNSUBSCRIBE without a topic filter",
        ));
    }
    Ok(Unsubscribe {
        packet_id,
        filters,
        properties,
    })
}

/// UNSUBACK (3.11): 3.x is the packet id alone; 5.0 adds properties and a reason per filter.
fn parse_unsuback(r: &mut Reader, version: ProtocolVersion) -> Result<UnsubAck> {
    let packet_id = r.packet_id()?;
    if !version.is_v5() {
        return Ok(UnsubAck {
            packet_id,
            ..UnsubAck::default()
        });
    }
    let properties = read_properties(r, Ctx::UnsubAck)?;
    let codes = r.rest();
    if codes.is_empty() {
        return Err(DecodeError::ProtocolError("UNSUBACK without a reason code"));
    }
    Ok(UnsubAck {
        packet_id,
        codes: codes.to_vec(),
        properties,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::{encode, encoded_len};
    use crate::reason::v5 as rc;
    use proptest::prelude::*;
    use ProtocolVersion::{V31, V311, V5};

    const ALL: [Option<ProtocolVersion>; 4] = [None, Some(V31), Some(V311), Some(V5)];

    /// Decodes `bytes` as one whole frame; also checks that every shorter prefix is
    /// "incomplete" and consumes nothing.
    fn ok(bytes: &[u8], version: Option<ProtocolVersion>) -> Packet {
        for n in 0..bytes.len() {
            let mut prefix = BytesMut::from(&bytes[..n]);
            assert_eq!(
                decode(&mut prefix, version, 0),
                Ok(None),
                "prefix {n} of {bytes:02x?}"
            );
            assert_eq!(&prefix[..], &bytes[..n], "prefix {n} was consumed");
        }
        let mut buf = BytesMut::from(bytes);
        buf.extend_from_slice(&[0xC0, 0x00]); // a PINGREQ behind it must stay in the buffer
        let packet = decode(&mut buf, version, 0)
            .expect("decodes")
            .expect("complete");
        assert_eq!(&buf[..], &[0xC0, 0x00], "exactly one frame consumed");
        packet
    }

    /// Like [`ok`], and the packet encodes back to exactly `bytes` (canonical vectors).
    fn canonical(bytes: &[u8], version: Option<ProtocolVersion>) -> Packet {
        let packet = ok(bytes, version);
        let mut out = BytesMut::new();
        let v = match &packet {
            Packet::Connect(c) => c.version,
            _ => version.unwrap_or(V311),
        };
        assert_eq!(encode(&packet, v, &mut out), bytes.len());
        assert_eq!(encoded_len(&packet, v), bytes.len());
        assert_eq!(&out[..], bytes, "re-encoding {packet:?}");
        packet
    }

    fn err(bytes: &[u8], version: Option<ProtocolVersion>) -> DecodeError {
        let mut buf = BytesMut::from(bytes);
        match decode(&mut buf, version, 0) {
            Err(e) => e,
            other => panic!("expected an error for {bytes:02x?}, got {other:?}"),
        }
    }

    /// A frame: first byte, minimal remaining length, body.
    fn frame(first: u8, body: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        out.extend_from_slice(&[first]);
        crate::encode::put_var_int(&mut out, body.len());
        out.extend_from_slice(body);
        out.to_vec()
    }

    /// A v5 property block: length, then `props`.
    fn props(props: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        crate::encode::put_var_int(&mut out, props.len());
        out.extend_from_slice(props);
        out.to_vec()
    }

    /// A v5 QoS 0 PUBLISH to "a" carrying `p` as properties.
    fn v5_publish_with(p: &[u8]) -> Vec<u8> {
        let mut body = vec![0x00, 0x01, b'a'];
        body.extend(props(p));
        body.extend_from_slice(b"x");
        frame(0x30, &body)
    }

    fn s(v: &str) -> ByteStr {
        ByteStr::from(v)
    }

    // ---------------------------------------------------------------- CONNECT

    #[test]
    fn connect_v311_minimal_mqtt_3_1_0_1() {
        let bytes = [
            0x10, 0x0F, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x03,
            b'a', b'b', b'c',
        ];
        for v in ALL {
            let Packet::Connect(c) = canonical(&bytes, v) else {
                panic!()
            };
            assert_eq!(c.version, V311);
            assert!(c.clean_start);
            assert_eq!(c.keep_alive, 60);
            assert_eq!(&*c.client_id, "abc");
            assert!(c.will.is_none() && c.username.is_none() && c.password.is_none());
        }
    }

    #[test]
    fn connect_v31_mqisdp_level_3() {
        let bytes = [
            0x10, 0x11, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x02, 0x00, 0x3C,
            0x00, 0x03, b'a', b'b', b'c',
        ];
        let Packet::Connect(c) = canonical(&bytes, None) else {
            panic!()
        };
        assert_eq!(c.version, V31);
        assert_eq!(&*c.client_id, "abc");
    }

    #[test]
    fn connect_v311_will_user_password_mqtt_3_1_2() {
        let bytes = [
            0x10, 0x1D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0xEE, 0x00, 0x0A, //
            0x00, 0x01, b'c', // client id
            0x00, 0x03, b'w', b'/', b't', // will topic
            0x00, 0x03, b'b', b'y', b'e', // will payload
            0x00, 0x01, b'u', // user name
            0x00, 0x01, b'p', // password
        ];
        let Packet::Connect(c) = canonical(&bytes, None) else {
            panic!()
        };
        let will = c.will.unwrap();
        assert_eq!((&*will.topic, &will.payload[..]), ("w/t", &b"bye"[..]));
        assert_eq!((will.qos, will.retain), (QoS::AtLeastOnce, true));
        assert_eq!(c.username.as_deref(), Some("u"));
        assert_eq!(c.password.as_deref(), Some(&b"p"[..]));
    }

    #[test]
    fn connect_v5_with_properties_and_will_properties() {
        let bytes = [
            0x10, 0x1E, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x06, 0x00, 0x3C, //
            0x05, 0x11, 0x00, 0x00, 0x00, 0x78, // session expiry 120
            0x00, 0x01, b'c', // client id
            0x05, 0x18, 0x00, 0x00, 0x00, 0x05, // will delay 5
            0x00, 0x01, b't', // will topic
            0x00, 0x00, // empty will payload
        ];
        let Packet::Connect(c) = canonical(&bytes, None) else {
            panic!()
        };
        assert_eq!(c.version, V5);
        assert_eq!(c.properties.session_expiry_interval, Some(120));
        assert_eq!(c.will.unwrap().properties.will_delay_interval, Some(5));
    }

    #[test]
    fn connect_v5_password_without_user_name_is_allowed_3_1_2_9() {
        let bytes = frame(
            0x10,
            &[
                0, 4, b'M', b'Q', b'T', b'T', 5, 0x42, 0, 0, 0, 0, 1, b'c', 0, 1, b'p',
            ],
        );
        let Packet::Connect(c) = canonical(&bytes, None) else {
            panic!()
        };
        assert!(c.username.is_none());
        assert_eq!(c.password.as_deref(), Some(&b"p"[..]));
    }

    /// CONNECT with protocol name `name`, level, flags, keep alive 0, client id "c", `extra`.
    fn connect_with(name: &[u8], level: u8, flags: u8, extra: &[u8]) -> Vec<u8> {
        let mut body = vec![0, name.len() as u8];
        body.extend_from_slice(name);
        body.extend_from_slice(&[level, flags, 0, 0]);
        if level == 5 {
            body.push(0);
        }
        body.extend_from_slice(&[0, 1, b'c']);
        body.extend_from_slice(extra);
        frame(0x10, &body)
    }

    #[test]
    fn connect_unsupported_protocol_is_reported_with_its_level_mqtt_3_1_2_1_and_2() {
        for (name, level) in [
            (&b"MQTT"[..], 3u8),
            (b"MQTT", 6),
            (b"MQTT", 0),
            (b"MQIsdp", 4),
            (b"MQIsdp", 5),
            (b"HTTP", 4),
        ] {
            let e = err(&connect_with(name, level, 0x02, &[]), None);
            assert_eq!(e, DecodeError::UnsupportedProtocolVersion { level });
            assert_eq!(e.reason_code(), rc::UNSUPPORTED_PROTOCOL_VERSION);
        }
    }

    #[test]
    fn connect_reserved_flag_is_malformed_mqtt_3_1_2_3() {
        let e = err(&connect_with(b"MQTT", 4, 0x03, &[]), None);
        assert!(matches!(e, DecodeError::Malformed(_)));
        assert_eq!(e.reason_code(), rc::MALFORMED_PACKET);
    }

    #[test]
    fn connect_will_qos_and_retain_need_will_flag_mqtt_3_1_2_11_13_15() {
        for flags in [0x08, 0x10, 0x20, 0x28] {
            for level in [4, 5] {
                let e = err(&connect_with(b"MQTT", level, flags, &[]), None);
                assert!(matches!(e, DecodeError::Malformed(_)), "{flags:#x}");
            }
        }
    }

    #[test]
    fn connect_will_qos_3_is_malformed_mqtt_3_1_2_14() {
        let will = [0, 1, b't', 0, 0];
        assert_eq!(
            err(&connect_with(b"MQTT", 4, 0x1C, &will), None),
            DecodeError::InvalidQoS
        );
    }

    #[test]
    fn connect_v311_password_without_user_name_is_malformed_mqtt_3_1_2_22() {
        let e = err(&connect_with(b"MQTT", 4, 0x40, &[0, 1, b'p']), None);
        assert!(matches!(e, DecodeError::Malformed(_)));
        let e = err(&connect_with(b"MQIsdp", 3, 0x40, &[0, 1, b'p']), None);
        assert!(matches!(e, DecodeError::Malformed(_)));
    }

    #[test]
    fn connect_will_topic_must_be_a_topic_name_mqtt_3_1_3_10() {
        for topic in [&b"a/#"[..], b"+", b""] {
            let mut will = vec![0, topic.len() as u8];
            will.extend_from_slice(topic);
            will.extend_from_slice(&[0, 0]);
            let e = err(&connect_with(b"MQTT", 4, 0x04, &will), None);
            assert_eq!(e, DecodeError::TopicNameInvalid);
        }
    }

    #[test]
    fn connect_missing_or_extra_payload_fields() {
        // User name flag without a user name.
        assert_eq!(
            err(&connect_with(b"MQTT", 4, 0x80, &[]), None),
            DecodeError::Truncated
        );
        // A byte after the last field.
        assert_eq!(
            err(&connect_with(b"MQTT", 4, 0, &[0]), None),
            DecodeError::TrailingBytes
        );
    }

    #[test]
    fn connect_is_decoded_with_its_own_version_whatever_the_connection() {
        let bytes = connect_with(b"MQTT", 5, 0x02, &[]);
        for v in ALL {
            let Packet::Connect(c) = ok(&bytes, v) else {
                panic!()
            };
            assert_eq!(c.version, V5);
        }
    }

    // ---------------------------------------------------------------- CONNACK

    #[test]
    fn connack_v311_and_v31() {
        for v in [Some(V31), Some(V311), None] {
            let p = canonical(&[0x20, 0x02, 0x01, 0x00], v);
            assert_eq!(
                p,
                Packet::ConnAck(ConnAck {
                    session_present: true,
                    ..Default::default()
                })
            );
            let p = canonical(&[0x20, 0x02, 0x00, 0x05], v);
            assert_eq!(
                p,
                Packet::ConnAck(ConnAck {
                    code: 5,
                    ..Default::default()
                })
            );
        }
    }

    #[test]
    fn connack_v5_with_properties() {
        canonical(&[0x20, 0x03, 0x00, 0x00, 0x00], Some(V5));
        let p = canonical(
            &[0x20, 0x07, 0x00, 0x00, 0x04, 0x24, 0x01, 0x25, 0x00],
            Some(V5),
        );
        let Packet::ConnAck(c) = p else { panic!() };
        assert_eq!(
            (c.properties.maximum_qos, c.properties.retain_available),
            (Some(1), Some(0))
        );
    }

    #[test]
    fn connack_reserved_acknowledge_flags_are_malformed_mqtt_3_2_2_1() {
        let e = err(&[0x20, 0x02, 0x02, 0x00], Some(V311));
        assert!(matches!(e, DecodeError::Malformed(_)));
    }

    // ---------------------------------------------------------------- PUBLISH

    #[test]
    fn publish_v311_qos0() {
        let bytes = [0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'];
        for v in [None, Some(V31), Some(V311)] {
            let Packet::Publish(p) = canonical(&bytes, v) else {
                panic!()
            };
            assert_eq!(
                (&*p.topic, &p.payload[..], p.qos, p.packet_id),
                ("a/b", &b"hi"[..], QoS::AtMostOnce, 0)
            );
        }
    }

    #[test]
    fn publish_v311_qos1_dup_retain() {
        let bytes = [
            0x3B, 0x09, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A, b'h', b'i',
        ];
        let Packet::Publish(p) = canonical(&bytes, Some(V311)) else {
            panic!()
        };
        assert!(p.dup && p.retain);
        assert_eq!((p.qos, p.packet_id), (QoS::AtLeastOnce, 10));
    }

    #[test]
    fn publish_v5_without_and_with_properties() {
        let bytes = [
            0x34, 0x0A, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x01, 0x00, b'h', b'i',
        ];
        let Packet::Publish(p) = canonical(&bytes, Some(V5)) else {
            panic!()
        };
        assert_eq!((p.qos, p.packet_id), (QoS::ExactlyOnce, 1));
        // Empty topic with a Topic Alias (3.3.2.3.4).
        let bytes = [
            0x32, 0x09, 0x00, 0x00, 0x00, 0x01, 0x03, 0x23, 0x00, 0x05, b'x',
        ];
        let Packet::Publish(p) = canonical(&bytes, Some(V5)) else {
            panic!()
        };
        assert!(p.topic.is_empty());
        assert_eq!(p.properties.topic_alias, Some(5));
    }

    #[test]
    fn publish_payload_and_topic_are_slices_of_the_read_buffer() {
        let mut buf = BytesMut::from(&[0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'][..]);
        let base = buf.as_ptr() as usize;
        let Some(Packet::Publish(p)) = decode(&mut buf, Some(V311), 0).unwrap() else {
            panic!()
        };
        assert_eq!(p.topic.as_bytes().as_ptr() as usize, base + 4);
        assert_eq!(p.payload.as_ptr() as usize, base + 7);
    }

    #[test]
    fn publish_qos3_is_malformed_on_first_byte_mqtt_3_3_1_4() {
        for v in ALL {
            assert_eq!(err(&[0x36], v), DecodeError::InvalidQoS);
            assert_eq!(err(&[0x36], v).reason_code(), rc::MALFORMED_PACKET);
        }
    }

    #[test]
    fn publish_packet_id_zero_is_rejected_mqtt_2_3_1_1() {
        for v in ALL {
            let e = err(&[0x32, 0x05, 0x00, 0x01, b'a', 0x00, 0x00], v);
            assert_eq!(e, DecodeError::ZeroPacketId);
            assert_eq!(e.reason_code(), rc::PROTOCOL_ERROR);
        }
    }

    #[test]
    fn publish_topic_with_wildcards_is_invalid_mqtt_3_3_2_2() {
        for v in ALL {
            for topic in [b'+', b'#'] {
                let e = err(&[0x30, 0x05, 0x00, 0x03, b'a', b'/', topic], v);
                assert_eq!(e, DecodeError::TopicNameInvalid);
                assert_eq!(e.reason_code(), rc::TOPIC_NAME_INVALID);
            }
        }
    }

    #[test]
    fn publish_empty_topic_needs_v5_topic_alias_mqtt_4_7_3_1() {
        for v in [None, Some(V31), Some(V311)] {
            assert_eq!(
                err(&[0x30, 0x02, 0x00, 0x00], v),
                DecodeError::TopicNameInvalid
            );
        }
        assert_eq!(
            err(&[0x30, 0x03, 0x00, 0x00, 0x00], Some(V5)),
            DecodeError::TopicNameInvalid
        );
    }

    #[test]
    fn publish_dup_on_qos0_is_malformed_mqtt_3_3_1_2() {
        let e = err(&[0x38, 0x03, 0x00, 0x01, b'a'], Some(V311));
        assert!(matches!(e, DecodeError::Malformed(_)));
    }

    #[test]
    fn strings_must_be_utf8_without_nul_mqtt_1_5_3_1_and_2() {
        for topic in [
            &[0xFFu8][..],
            &[b'a', 0x00],
            &[0xED, 0xA0, 0x80],
            &[0xC0, 0x80],
        ] {
            let mut body = vec![0, topic.len() as u8];
            body.extend_from_slice(topic);
            for v in ALL {
                assert_eq!(
                    err(&frame(0x30, &body), v),
                    DecodeError::InvalidUtf8,
                    "{topic:x?}"
                );
            }
        }
        // Also in CONNECT's client id and in a SUBSCRIBE filter.
        let mut bytes = connect_with(b"MQTT", 4, 0, &[]);
        let n = bytes.len();
        bytes[n - 1] = 0;
        assert_eq!(err(&bytes, None), DecodeError::InvalidUtf8);
        assert_eq!(
            err(&[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 0xFF, 0x00], None),
            DecodeError::InvalidUtf8
        );
    }

    #[test]
    fn publish_larger_than_max_packet_size_is_refused_before_its_bytes_arrive() {
        // Only the fixed header: a 2,097,152-byte remaining length.
        let mut buf = BytesMut::from(&[0x30, 0x80, 0x80, 0x80, 0x01][..]);
        let e = decode(&mut buf, Some(V311), 1000).unwrap_err();
        assert_eq!(
            e,
            DecodeError::PacketTooLarge {
                size: 5 + 2_097_152,
                max: 1000
            }
        );
        assert_eq!(e.reason_code(), rc::PACKET_TOO_LARGE);
        // The limit is on the whole packet, fixed header included.
        let bytes = [0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'];
        assert!(decode(&mut BytesMut::from(&bytes[..]), Some(V311), 9)
            .unwrap()
            .is_some());
        let e = decode(&mut BytesMut::from(&bytes[..]), Some(V311), 8).unwrap_err();
        assert_eq!(e, DecodeError::PacketTooLarge { size: 9, max: 8 });
    }

    // ---------------------------------------------------------------- PUBACK .. PUBCOMP

    #[test]
    fn pub_responses_v311() {
        for (first, make) in [
            (0x40u8, Packet::PubAck as fn(PubResp) -> Packet),
            (0x50, Packet::PubRec),
            (0x62, Packet::PubRel),
            (0x70, Packet::PubComp),
        ] {
            for v in [None, Some(V31), Some(V311), Some(V5)] {
                assert_eq!(
                    canonical(&[first, 0x02, 0x12, 0x34], v),
                    make(PubResp::new(0x1234))
                );
            }
            // 3.x has no reason code: a third byte is left over.
            assert_eq!(
                err(&[first, 0x03, 0x00, 0x01, 0x00], Some(V311)),
                DecodeError::TrailingBytes
            );
            assert_eq!(
                err(&[first, 0x02, 0x00, 0x00], Some(V311)),
                DecodeError::ZeroPacketId
            );
        }
    }

    #[test]
    fn pub_responses_v5_short_forms_3_4_2_1() {
        let p = canonical(&[0x40, 0x03, 0x00, 0x01, 0x10], Some(V5));
        assert_eq!(
            p,
            Packet::PubAck(PubResp {
                packet_id: 1,
                reason: 0x10,
                ..Default::default()
            })
        );
        // Reason 0 and an empty property block: the long form of the 2-byte packet.
        assert_eq!(
            ok(&[0x50, 0x04, 0x00, 0x01, 0x00, 0x00], Some(V5)),
            Packet::PubRec(PubResp::new(1))
        );
        let bytes = [
            0x62, 0x09, 0x00, 0x01, 0x92, 0x05, 0x1F, 0x00, 0x02, b'n', b'o',
        ];
        let Packet::PubRel(r) = canonical(&bytes, Some(V5)) else {
            panic!()
        };
        assert_eq!(
            (r.reason, r.properties.reason_string.as_deref()),
            (0x92, Some("no"))
        );
    }

    #[test]
    fn pubrel_in_v31_may_carry_dup() {
        assert_eq!(
            ok(&[0x6A, 0x02, 0x00, 0x01], Some(V31)),
            Packet::PubRel(PubResp::new(1))
        );
        assert!(matches!(
            err(&[0x6A, 0x02, 0x00, 0x01], Some(V311)),
            DecodeError::InvalidFlags { .. }
        ));
    }

    // ---------------------------------------------------------------- SUBSCRIBE / SUBACK

    /// [MQTT-4.7.1-1], [MQTT-4.7.3-1]: a misplaced wildcard or an empty filter makes
    /// SUBSCRIBE and UNSUBSCRIBE malformed, in every version (0x8F in 5.0).
    #[test]
    fn invalid_filters_are_malformed_in_subscribe_and_unsubscribe() {
        for bad in ["a/#/b", "#/x", "a+", "a/b#", "+a", ""] {
            let mut sub = vec![0x00, 0x01];
            let mut unsub = vec![0x00, 0x01];
            for body in [&mut sub, &mut unsub] {
                body.extend_from_slice(&(bad.len() as u16).to_be_bytes());
                body.extend_from_slice(bad.as_bytes());
            }
            sub.push(0x00);
            for v in [Some(V31), Some(V311), Some(V5)] {
                let props = |b: &[u8]| {
                    let mut b = b.to_vec();
                    if v == Some(V5) {
                        b.insert(2, 0x00);
                    }
                    b
                };
                let e = err(&frame(0x82, &props(&sub)), v);
                assert_eq!(
                    e,
                    DecodeError::TopicFilterInvalid,
                    "SUBSCRIBE {bad:?} {v:?}"
                );
                assert_eq!(e.reason_code(), rc::TOPIC_FILTER_INVALID);
                let e = err(&frame(0xA2, &props(&unsub)), v);
                assert_eq!(
                    e,
                    DecodeError::TopicFilterInvalid,
                    "UNSUBSCRIBE {bad:?} {v:?}"
                );
            }
        }
    }

    #[test]
    fn subscribe_v311_mqtt_3_8() {
        let bytes = [
            0x82, 0x0C, 0x00, 0x0A, 0x00, 0x03, b'a', b'/', b'b', 0x01, 0x00, 0x01, b'#', 0x02,
        ];
        let Packet::Subscribe(sub) = canonical(&bytes, Some(V311)) else {
            panic!()
        };
        assert_eq!(sub.packet_id, 10);
        assert_eq!(sub.filters.len(), 2);
        assert_eq!(
            (&*sub.filters[0].0, sub.filters[0].1.qos),
            ("a/b", QoS::AtLeastOnce)
        );
        assert_eq!(
            (&*sub.filters[1].0, sub.filters[1].1.qos),
            ("#", QoS::ExactlyOnce)
        );
    }

    #[test]
    fn subscribe_v5_options_and_subscription_identifier() {
        let bytes = [
            0x82, 0x0B, 0x00, 0x0A, 0x02, 0x0B, 0x07, 0x00, 0x03, b'a', b'/', b'b', 0x2D,
        ];
        let Packet::Subscribe(sub) = canonical(&bytes, Some(V5)) else {
            panic!()
        };
        assert_eq!(sub.properties.subscription_identifiers, vec![7]);
        assert_eq!(
            sub.filters[0].1,
            SubOptions {
                qos: QoS::AtLeastOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::DoNotSend,
            }
        );
    }

    #[test]
    fn subscribe_without_filter_is_a_protocol_error_mqtt_3_8_3_3() {
        for v in ALL {
            let body: &[u8] = if v == Some(V5) { &[0, 1, 0] } else { &[0, 1] };
            let e = err(&frame(0x82, body), v);
            assert!(matches!(e, DecodeError::ProtocolError(_)), "{v:?}");
            assert_eq!(e.reason_code(), rc::PROTOCOL_ERROR);
        }
    }

    #[test]
    fn subscribe_option_reserved_bits_mqtt_3_8_3_4_and_5() {
        let sub = |v5: bool, opt: u8| {
            let mut body = vec![0, 1];
            if v5 {
                body.push(0);
            }
            body.extend_from_slice(&[0, 1, b'a', opt]);
            frame(0x82, &body)
        };
        // 3.x: upper 6 bits reserved.
        for opt in [0x04, 0x08, 0x10, 0x80] {
            assert!(matches!(
                err(&sub(false, opt), Some(V311)),
                DecodeError::Malformed(_)
            ));
        }
        // 5.0: bits 6-7 reserved, retain handling 3 malformed.
        for opt in [0x40, 0x80, 0x30] {
            assert!(matches!(
                err(&sub(true, opt), Some(V5)),
                DecodeError::Malformed(_)
            ));
        }
        assert_eq!(err(&sub(false, 3), Some(V311)), DecodeError::InvalidQoS);
        assert_eq!(err(&sub(true, 3), Some(V5)), DecodeError::InvalidQoS);
        // Filters are not validated here: the broker answers an invalid one in SUBACK.
        assert!(
            ok(
                &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'#', 0x00],
                Some(V311)
            ) != Packet::PingReq
        );
    }

    #[test]
    fn subscribe_and_unsubscribe_packet_id_zero_mqtt_2_3_1_1() {
        assert_eq!(
            err(&[0x82, 0x06, 0, 0, 0, 1, b'a', 0], None),
            DecodeError::ZeroPacketId
        );
        assert_eq!(
            err(&[0xA2, 0x05, 0, 0, 0, 1, b'a'], None),
            DecodeError::ZeroPacketId
        );
        assert_eq!(err(&[0x90, 0x03, 0, 0, 0], None), DecodeError::ZeroPacketId);
    }

    #[test]
    fn suback_v311_v5() {
        let p = canonical(&[0x90, 0x04, 0x00, 0x0A, 0x01, 0x80], Some(V311));
        assert_eq!(
            p,
            Packet::SubAck(SubAck {
                packet_id: 10,
                codes: vec![1, 0x80],
                ..Default::default()
            })
        );
        let p = canonical(&[0x90, 0x04, 0x00, 0x0A, 0x00, 0x8F], Some(V5));
        assert_eq!(
            p,
            Packet::SubAck(SubAck {
                packet_id: 10,
                codes: vec![0x8F],
                ..Default::default()
            })
        );
        // 3.1.1 return codes other than 0, 1, 2, 0x80 are reserved [MQTT-3.9.3-2].
        assert!(matches!(
            err(&[0x90, 0x03, 0x00, 0x0A, 0x03], Some(V311)),
            DecodeError::Malformed(_)
        ));
        assert!(matches!(
            err(&[0x90, 0x02, 0x00, 0x0A], Some(V311)),
            DecodeError::ProtocolError(_)
        ));
    }

    // ---------------------------------------------------------------- UNSUBSCRIBE / UNSUBACK

    #[test]
    fn unsubscribe_v311_v5_mqtt_3_10() {
        let bytes = [0xA2, 0x07, 0x00, 0x0B, 0x00, 0x03, b'a', b'/', b'b'];
        let want = Unsubscribe {
            packet_id: 11,
            filters: vec![s("a/b")],
            ..Default::default()
        };
        assert_eq!(
            canonical(&bytes, Some(V311)),
            Packet::Unsubscribe(want.clone())
        );
        let bytes = [0xA2, 0x08, 0x00, 0x0B, 0x00, 0x00, 0x03, b'a', b'/', b'b'];
        assert_eq!(canonical(&bytes, Some(V5)), Packet::Unsubscribe(want));
    }

    #[test]
    fn unsubscribe_without_filter_is_a_protocol_error_mqtt_3_10_3_2() {
        assert!(matches!(
            err(&[0xA2, 0x02, 0x00, 0x01], Some(V311)),
            DecodeError::ProtocolError(_)
        ));
        assert!(matches!(
            err(&[0xA2, 0x03, 0x00, 0x01, 0x00], Some(V5)),
            DecodeError::ProtocolError(_)
        ));
    }

    #[test]
    fn unsuback_v311_is_the_packet_id_alone_and_v5_has_codes() {
        let p = canonical(&[0xB0, 0x02, 0x00, 0x0B], Some(V311));
        assert_eq!(
            p,
            Packet::UnsubAck(UnsubAck {
                packet_id: 11,
                ..Default::default()
            })
        );
        assert_eq!(
            err(&[0xB0, 0x03, 0x00, 0x0B, 0x00], Some(V311)),
            DecodeError::TrailingBytes
        );
        let p = canonical(&[0xB0, 0x05, 0x00, 0x0B, 0x00, 0x00, 0x11], Some(V5));
        assert_eq!(
            p,
            Packet::UnsubAck(UnsubAck {
                packet_id: 11,
                codes: vec![0, 0x11],
                ..Default::default()
            })
        );
    }

    // ---------------------------------------------------------------- PING, DISCONNECT, AUTH

    #[test]
    fn ping_and_disconnect_have_no_body() {
        for v in ALL {
            assert_eq!(canonical(&[0xC0, 0x00], v), Packet::PingReq);
            assert_eq!(canonical(&[0xD0, 0x00], v), Packet::PingResp);
            assert_eq!(
                canonical(&[0xE0, 0x00], v),
                Packet::Disconnect(Disconnect::default())
            );
            assert_eq!(err(&[0xC0, 0x01, 0x00], v), DecodeError::TrailingBytes);
        }
        assert_eq!(
            err(&[0xE0, 0x01, 0x00], Some(V311)),
            DecodeError::TrailingBytes
        );
    }

    #[test]
    fn disconnect_v5_reason_and_properties_3_14_2_1() {
        let p = canonical(&[0xE0, 0x01, 0x04], Some(V5));
        assert_eq!(
            p,
            Packet::Disconnect(Disconnect {
                reason: 4,
                ..Default::default()
            })
        );
        let bytes = [0xE0, 0x07, 0x8E, 0x05, 0x11, 0x00, 0x00, 0x00, 0x00];
        let Packet::Disconnect(d) = canonical(&bytes, Some(V5)) else {
            panic!()
        };
        assert_eq!(
            (d.reason, d.properties.session_expiry_interval),
            (0x8E, Some(0))
        );
    }

    #[test]
    fn auth_is_v5_only_3_15() {
        assert_eq!(
            canonical(&[0xF0, 0x00], Some(V5)),
            Packet::Auth(Auth::default())
        );
        let bytes = [0xF0, 0x06, 0x18, 0x04, 0x15, 0x00, 0x01, b'm'];
        let Packet::Auth(a) = canonical(&bytes, Some(V5)) else {
            panic!()
        };
        assert_eq!(
            (a.reason, a.properties.authentication_method.as_deref()),
            (0x18, Some("m"))
        );
        for v in [None, Some(V31), Some(V311)] {
            assert_eq!(err(&[0xF0, 0x00], v), DecodeError::InvalidPacketType(15));
        }
    }

    // ---------------------------------------------------------------- fixed header

    #[test]
    fn packet_type_0_is_invalid() {
        for v in ALL {
            assert_eq!(err(&[0x00, 0x00], v), DecodeError::InvalidPacketType(0));
        }
    }

    #[test]
    fn reserved_fixed_header_flags_are_checked_mqtt_2_2_2_1_and_2() {
        for v in ALL {
            for t in [1u8, 2, 4, 5, 7, 9, 11, 12, 13, 14] {
                for flags in [0x1, 0x2, 0x8] {
                    let e = err(&[t << 4 | flags], v);
                    assert_eq!(
                        e,
                        DecodeError::InvalidFlags {
                            packet_type: t,
                            flags
                        }
                    );
                }
            }
            for t in [6u8, 8, 10] {
                for flags in [0x0, 0x3, 0x6] {
                    let e = err(&[t << 4 | flags], v);
                    assert_eq!(
                        e,
                        DecodeError::InvalidFlags {
                            packet_type: t,
                            flags
                        }
                    );
                }
            }
        }
        assert!(matches!(
            err(&[0xF1], Some(V5)),
            DecodeError::InvalidFlags { .. }
        ));
    }

    #[test]
    fn remaining_length_is_at_most_4_bytes_and_minimal_mqtt_1_5_5_1() {
        for v in ALL {
            assert_eq!(
                err(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F], v),
                DecodeError::MalformedVarInt
            );
            assert_eq!(
                err(&[0x30, 0xFF, 0xFF, 0xFF, 0x80], v),
                DecodeError::MalformedVarInt
            );
            assert_eq!(err(&[0xC0, 0x80, 0x00], v), DecodeError::MalformedVarInt);
            // Four bytes with the last continuation bit clear is only incomplete.
            let mut buf = BytesMut::from(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F][..]);
            assert_eq!(decode(&mut buf, v, 0), Ok(None));
        }
    }

    #[test]
    fn remaining_length_boundaries_decode() {
        for len in [0usize, 127, 128, 16_383, 16_384] {
            let mut body = vec![0x00, 0x01, b'a'];
            body.resize(3 + len, 7);
            let bytes = frame(0x30, &body);
            let Packet::Publish(p) = canonical(&bytes, Some(V311)) else {
                panic!()
            };
            assert_eq!(p.payload.len(), len);
        }
    }

    // ---------------------------------------------------------------- properties

    #[test]
    fn every_v5_property_decodes_where_allowed() {
        let p = [
            0x01, 0x01, // payload format
            0x02, 0, 0, 0, 9, // message expiry
            0x03, 0, 1, b't', // content type
            0x08, 0, 1, b'r', // response topic
            0x09, 0, 1, 0xFF, // correlation data
            0x0B, 0x80, 0x01, // subscription id 128
            0x0B, 0x01, // and 1
            0x23, 0, 3, // topic alias
            0x26, 0, 1, b'k', 0, 1, b'v', // user property
            0x26, 0, 1, b'k', 0, 1, b'w', // repeated
        ];
        let Packet::Publish(publish) = canonical(&v5_publish_with(&p), Some(V5)) else {
            panic!()
        };
        let q = publish.properties;
        assert_eq!(q.payload_format_indicator, Some(1));
        assert_eq!(q.message_expiry_interval, Some(9));
        assert_eq!(q.content_type.as_deref(), Some("t"));
        assert_eq!(q.response_topic.as_deref(), Some("r"));
        assert_eq!(q.correlation_data.as_deref(), Some(&[0xFF][..]));
        assert_eq!(q.subscription_identifiers, vec![128, 1]);
        assert_eq!(q.topic_alias, Some(3));
        assert_eq!(q.user_properties, vec![(s("k"), s("v")), (s("k"), s("w"))]);

        let connack = [
            0x11, 0, 0, 0, 1, 0x12, 0, 1, b'c', 0x13, 0, 5, 0x15, 0, 1, b'm', 0x16, 0, 1, 1, 0x1A,
            0, 1, b'i', 0x1C, 0, 1, b's', 0x1F, 0, 1, b'r', 0x21, 0, 9, 0x22, 0, 9, 0x24, 0, 0x25,
            1, 0x27, 0, 0, 1, 0, 0x28, 1, 0x29, 0, 0x2A, 1,
        ];
        let mut body = vec![0, 0];
        body.extend(props(&connack));
        let Packet::ConnAck(c) = canonical(&frame(0x20, &body), Some(V5)) else {
            panic!()
        };
        let q = c.properties;
        assert_eq!(q.session_expiry_interval, Some(1));
        assert_eq!(q.assigned_client_identifier.as_deref(), Some("c"));
        assert_eq!(q.server_keep_alive, Some(5));
        assert_eq!(q.authentication_method.as_deref(), Some("m"));
        assert_eq!(q.authentication_data.as_deref(), Some(&[1][..]));
        assert_eq!(q.response_information.as_deref(), Some("i"));
        assert_eq!(q.server_reference.as_deref(), Some("s"));
        assert_eq!(q.reason_string.as_deref(), Some("r"));
        assert_eq!(
            (q.receive_maximum, q.topic_alias_maximum),
            (Some(9), Some(9))
        );
        assert_eq!((q.maximum_qos, q.retain_available), (Some(0), Some(1)));
        assert_eq!(q.maximum_packet_size, Some(256));
        assert_eq!(q.wildcard_subscription_available, Some(1));
        assert_eq!(q.subscription_identifier_available, Some(0));
        assert_eq!(q.shared_subscription_available, Some(1));

        let connect = [0x17, 1, 0x19, 1];
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0, 0, 0];
        body.extend(props(&connect));
        body.extend_from_slice(&[0, 0]);
        let Packet::Connect(c) = canonical(&frame(0x10, &body), None) else {
            panic!()
        };
        assert_eq!(c.properties.request_problem_information, Some(1));
        assert_eq!(c.properties.request_response_information, Some(1));
    }

    #[test]
    fn property_not_allowed_in_packet_is_malformed_table_2_4() {
        // Receive Maximum in PUBLISH.
        let e = err(&v5_publish_with(&[0x21, 0, 1]), Some(V5));
        assert_eq!(
            e,
            DecodeError::PropertyNotAllowed {
                id: 0x21,
                packet: "PUBLISH"
            }
        );
        // Will Delay among CONNECT (not Will) properties.
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0, 0, 0];
        body.extend(props(&[0x18, 0, 0, 0, 1]));
        body.extend_from_slice(&[0, 0]);
        let e = err(&frame(0x10, &body), None);
        assert_eq!(
            e,
            DecodeError::PropertyNotAllowed {
                id: 0x18,
                packet: "CONNECT"
            }
        );
        assert_eq!(e.reason_code(), rc::MALFORMED_PACKET);
        // Session Expiry among Will properties.
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0x04, 0, 0, 0, 0, 0];
        body.extend(props(&[0x11, 0, 0, 0, 1]));
        body.extend_from_slice(&[0, 1, b't', 0, 0]);
        let e = err(&frame(0x10, &body), None);
        assert_eq!(
            e,
            DecodeError::PropertyNotAllowed {
                id: 0x11,
                packet: "Will"
            }
        );
        // Reason String in UNSUBSCRIBE, Subscription Identifier in PUBACK.
        assert_eq!(
            err(&[0xA2, 0x09, 0, 1, 0x04, 0x1F, 0, 1, b'r', 0, 0], Some(V5)),
            DecodeError::PropertyNotAllowed {
                id: 0x1F,
                packet: "UNSUBSCRIBE"
            }
        );
        assert!(matches!(
            err(&[0x40, 0x06, 0, 1, 0, 0x02, 0x0B, 0x01], Some(V5)),
            DecodeError::PropertyNotAllowed { id: 0x0B, .. }
        ));
    }

    #[test]
    fn unknown_property_is_malformed_2_2_2_2() {
        for pid in [0x00u8, 0x04, 0x14, 0x2B, 0x7F, 0x80] {
            assert_eq!(
                err(&v5_publish_with(&[pid, 0]), Some(V5)),
                DecodeError::UnknownProperty(pid)
            );
        }
    }

    #[test]
    fn duplicate_single_valued_property_is_a_protocol_error() {
        let e = err(
            &v5_publish_with(&[0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 1]),
            Some(V5),
        );
        assert_eq!(e, DecodeError::DuplicateProperty(0x02));
        assert_eq!(e.reason_code(), rc::PROTOCOL_ERROR);
        let e = err(&v5_publish_with(&[0x01, 0, 0x01, 0]), Some(V5));
        assert_eq!(e, DecodeError::DuplicateProperty(0x01));
        // The Subscription Identifier repeats in PUBLISH but not in SUBSCRIBE (3.8.2.1.2).
        let bytes = [
            0x82, 0x0A, 0x00, 0x01, 0x04, 0x0B, 0x01, 0x0B, 0x02, 0x00, 0x01, b'a',
        ];
        let mut bytes = bytes.to_vec();
        bytes.push(0);
        bytes[1] += 1;
        assert_eq!(err(&bytes, Some(V5)), DecodeError::DuplicateProperty(0x0B));
    }

    #[test]
    fn frame_size_needs_the_whole_fixed_header() {
        assert_eq!(frame_size(&[]), None);
        assert_eq!(frame_size(&[0x30]), None);
        assert_eq!(frame_size(&[0x30, 0x80]), None, "length continues");
        assert_eq!(frame_size(&[0x30, 0x05]), Some(7));
        // 8 MiB: 0x80 0x80 0x80 0x04.
        assert_eq!(
            frame_size(&[0x30, 0x80, 0x80, 0x80, 0x04]),
            Some(1 + 4 + 8 * 1024 * 1024)
        );
        assert_eq!(frame_size(&[0x30, 0x80, 0x00]), None, "not minimal");
    }

    #[test]
    fn first_packet_must_be_connect_mqtt_3_1_0_1() {
        assert_eq!(check_first_packet(&[]), Ok(()));
        assert_eq!(check_first_packet(&[0x10]), Ok(()));
        for first in [0x30u8, 0xC0, 0x82, 0x00, 0xF0] {
            assert!(check_first_packet(&[first]).is_err(), "{first:#04x}");
        }
    }

    #[test]
    fn connect_level_is_read_from_the_header_only() {
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0, 0, 0];
        body.extend_from_slice(&[1, 0x21, 0, 0]); // receive maximum 0: invalid
        let bytes = frame(0x10, &body);
        assert_eq!(connect_level(&bytes), Some(5));
        assert_eq!(connect_level(&bytes[..7]), None, "name not complete");
        assert_eq!(connect_level(&[0x30, 0]), None, "not a CONNECT");
        assert_eq!(connect_level(&[0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]), None);
    }

    #[test]
    fn out_of_range_property_values_are_protocol_errors() {
        // In PUBLISH.
        for p in [
            &[0x01u8, 2][..],    // payload format indicator
            &[0x23, 0, 0],       // topic alias 0
            &[0x0B, 0],          // subscription identifier 0
            &[0x08, 0, 1, b'#'], // response topic with a wildcard
        ] {
            let e = err(&v5_publish_with(p), Some(V5));
            assert_eq!(e, DecodeError::InvalidPropertyValue(p[0]), "{p:x?}");
            // [MQTT-3.3.2-8]: topic alias 0 has its own reason code.
            let want = if p[0] == 0x23 {
                rc::TOPIC_ALIAS_INVALID
            } else {
                rc::PROTOCOL_ERROR
            };
            assert_eq!(e.reason_code(), want);
        }
        // In CONNACK.
        for p in [
            &[0x21u8, 0, 0][..], // receive maximum 0
            &[0x27, 0, 0, 0, 0], // maximum packet size 0
            &[0x24, 2],          // maximum QoS
            &[0x25, 2],          // retain available
            &[0x28, 2],
            &[0x29, 2],
            &[0x2A, 2],
            &[0x16, 0, 0], // authentication data without method
        ] {
            let mut body = vec![0, 0];
            body.extend(props(p));
            let e = err(&frame(0x20, &body), Some(V5));
            assert_eq!(e, DecodeError::InvalidPropertyValue(p[0]), "{p:x?}");
        }
        // In CONNECT.
        for p in [[0x17u8, 2], [0x19, 2]] {
            let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0, 0, 0];
            body.extend(props(&p));
            body.extend_from_slice(&[0, 0]);
            assert_eq!(
                err(&frame(0x10, &body), None),
                DecodeError::InvalidPropertyValue(p[0])
            );
        }
    }

    #[test]
    fn property_length_past_the_frame_is_malformed() {
        let e = err(&[0x30, 0x05, 0x00, 0x01, b'a', 0x05, 0x01], Some(V5));
        assert_eq!(e, DecodeError::Truncated);
        // A property value running past the property block.
        let e = err(
            &[0x30, 0x07, 0x00, 0x01, b'a', 0x02, 0x02, 0x00, 0x00],
            Some(V5),
        );
        assert_eq!(e, DecodeError::Truncated);
        assert_eq!(e.reason_code(), rc::MALFORMED_PACKET);
    }

    #[test]
    fn errors_display_what_was_wrong() {
        let e = DecodeError::PropertyNotAllowed {
            id: 0x23,
            packet: "CONNECT",
        };
        assert_eq!(e.to_string(), "property 0x23 is not allowed in CONNECT");
        let e: Box<dyn std::error::Error> = Box::new(DecodeError::InvalidQoS);
        assert!(!e.to_string().is_empty());
    }

    // ---------------------------------------------------------------- property tests

    fn arb_str() -> impl Strategy<Value = ByteStr> {
        "[a-zA-Z0-9/ $é€\u{1F600}]{0,10}".prop_map(ByteStr::from)
    }

    fn arb_topic() -> impl Strategy<Value = ByteStr> {
        "[a-z0-9/$ é]{1,10}".prop_map(ByteStr::from)
    }

    fn arb_bytes(max: usize) -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
    }

    /// Clears every property `ctx` does not allow.
    fn keep_allowed(p: &mut Properties, ctx: Ctx) {
        let a = ctx.allowed();
        let ok = |pid: u8| a & (1 << pid) != 0;
        macro_rules! clear {
            ($($pid:ident => $field:ident),* $(,)?) => {
                $(if !ok(id::$pid) { p.$field = Default::default(); })*
            };
        }
        clear!(
            PAYLOAD_FORMAT_INDICATOR => payload_format_indicator,
            MESSAGE_EXPIRY_INTERVAL => message_expiry_interval,
            CONTENT_TYPE => content_type,
            RESPONSE_TOPIC => response_topic,
            CORRELATION_DATA => correlation_data,
            SUBSCRIPTION_IDENTIFIER => subscription_identifiers,
            SESSION_EXPIRY_INTERVAL => session_expiry_interval,
            ASSIGNED_CLIENT_IDENTIFIER => assigned_client_identifier,
            SERVER_KEEP_ALIVE => server_keep_alive,
            AUTHENTICATION_METHOD => authentication_method,
            AUTHENTICATION_DATA => authentication_data,
            REQUEST_PROBLEM_INFORMATION => request_problem_information,
            WILL_DELAY_INTERVAL => will_delay_interval,
            REQUEST_RESPONSE_INFORMATION => request_response_information,
            RESPONSE_INFORMATION => response_information,
            SERVER_REFERENCE => server_reference,
            REASON_STRING => reason_string,
            RECEIVE_MAXIMUM => receive_maximum,
            TOPIC_ALIAS_MAXIMUM => topic_alias_maximum,
            TOPIC_ALIAS => topic_alias,
            MAXIMUM_QOS => maximum_qos,
            RETAIN_AVAILABLE => retain_available,
            USER_PROPERTY => user_properties,
            MAXIMUM_PACKET_SIZE => maximum_packet_size,
            WILDCARD_SUBSCRIPTION_AVAILABLE => wildcard_subscription_available,
            SUBSCRIPTION_IDENTIFIER_AVAILABLE => subscription_identifier_available,
            SHARED_SUBSCRIPTION_AVAILABLE => shared_subscription_available,
        );
        if ctx == Ctx::Subscribe {
            p.subscription_identifiers.truncate(1);
        }
        if p.authentication_method.is_none() {
            p.authentication_data = None;
        }
    }

    /// Valid MQTT 5 properties for `ctx`.
    fn arb_props(ctx: Ctx) -> BoxedStrategy<Properties> {
        use proptest::collection::vec;
        use proptest::option::of;
        let flag = || of(0u8..=1);
        let a = (
            flag(),
            of(any::<u32>()),
            of(arb_str()),
            of(arb_topic()),
            of(arb_bytes(6)),
            vec(1u32..=268_435_455, 0..3),
            of(any::<u32>()),
            of(arb_str()),
            of(any::<u16>()),
            of(arb_str()),
        );
        let b = (
            of(arb_bytes(6)),
            flag(),
            of(any::<u32>()),
            flag(),
            of(arb_str()),
            of(arb_str()),
            of(arb_str()),
            of(1u16..),
            of(any::<u16>()),
            of(1u16..),
        );
        let c = (
            flag(),
            flag(),
            vec((arb_str(), arb_str()), 0..3),
            of(1u32..),
            flag(),
            flag(),
            flag(),
        );
        (a, b, c)
            .prop_map(move |(a, b, c)| {
                let mut p = Properties {
                    payload_format_indicator: a.0,
                    message_expiry_interval: a.1,
                    content_type: a.2,
                    response_topic: a.3,
                    correlation_data: a.4,
                    subscription_identifiers: a.5,
                    session_expiry_interval: a.6,
                    assigned_client_identifier: a.7,
                    server_keep_alive: a.8,
                    authentication_method: a.9,
                    authentication_data: b.0,
                    request_problem_information: b.1,
                    will_delay_interval: b.2,
                    request_response_information: b.3,
                    response_information: b.4,
                    server_reference: b.5,
                    reason_string: b.6,
                    receive_maximum: b.7,
                    topic_alias_maximum: b.8,
                    topic_alias: b.9,
                    maximum_qos: c.0,
                    retain_available: c.1,
                    user_properties: c.2,
                    maximum_packet_size: c.3,
                    wildcard_subscription_available: c.4,
                    subscription_identifier_available: c.5,
                    shared_subscription_available: c.6,
                };
                keep_allowed(&mut p, ctx);
                p
            })
            .boxed()
    }

    fn arb_props_for(v: ProtocolVersion, ctx: Ctx) -> BoxedStrategy<Properties> {
        if v.is_v5() {
            arb_props(ctx)
        } else {
            Just(Properties::default()).boxed()
        }
    }

    fn arb_qos() -> impl Strategy<Value = QoS> {
        prop_oneof![
            Just(QoS::AtMostOnce),
            Just(QoS::AtLeastOnce),
            Just(QoS::ExactlyOnce)
        ]
    }

    fn arb_connect(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
        let will = (
            arb_topic(),
            arb_bytes(8),
            arb_qos(),
            any::<bool>(),
            arb_props_for(v, Ctx::Will),
        )
            .prop_map(|(topic, payload, qos, retain, properties)| Will {
                topic,
                payload,
                qos,
                retain,
                properties,
            });
        (
            any::<bool>(),
            any::<u16>(),
            arb_str(),
            proptest::option::of(will),
            proptest::option::of(arb_str()),
            proptest::option::of(arb_bytes(8)),
            arb_props_for(v, Ctx::Connect),
        )
            .prop_map(
                move |(
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    mut username,
                    password,
                    properties,
                )| {
                    // 3.x: a password needs a user name [MQTT-3.1.2-22].
                    if !v.is_v5() && password.is_some() && username.is_none() {
                        username = Some(ByteStr::from_static("u"));
                    }
                    Packet::Connect(Connect {
                        version: v,
                        clean_start,
                        keep_alive,
                        client_id,
                        will,
                        username,
                        password,
                        properties,
                    })
                },
            )
    }

    fn arb_publish(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
        let topic = if v.is_v5() {
            prop_oneof![3 => arb_topic(), 1 => Just(ByteStr::default())].boxed()
        } else {
            arb_topic().boxed()
        };
        (
            arb_qos(),
            any::<bool>(),
            any::<bool>(),
            topic,
            1u16..,
            arb_props_for(v, Ctx::Publish),
            arb_bytes(40),
        )
            .prop_map(|(qos, dup, retain, topic, pid, mut properties, payload)| {
                if topic.is_empty() && properties.topic_alias.is_none() {
                    properties.topic_alias = Some(1);
                }
                let qos0 = qos == QoS::AtMostOnce;
                Packet::Publish(Publish {
                    dup: dup && !qos0,
                    qos,
                    retain,
                    topic,
                    packet_id: if qos0 { 0 } else { pid },
                    properties,
                    payload,
                })
            })
    }

    fn arb_options(v: ProtocolVersion) -> impl Strategy<Value = SubOptions> {
        let rh = prop_oneof![
            Just(RetainHandling::SendAtSubscribe),
            Just(RetainHandling::SendIfNew),
            Just(RetainHandling::DoNotSend)
        ];
        (arb_qos(), any::<bool>(), any::<bool>(), rh).prop_map(move |(qos, nl, rap, rh)| {
            if v.is_v5() {
                SubOptions {
                    qos,
                    no_local: nl,
                    retain_as_published: rap,
                    retain_handling: rh,
                }
            } else {
                SubOptions {
                    qos,
                    ..SubOptions::default()
                }
            }
        })
    }

    /// Any packet `v` can express, valid for the decoder.
    fn arb_packet(v: ProtocolVersion) -> BoxedStrategy<Packet> {
        use proptest::collection::vec;
        let v5 = v.is_v5();
        let reason = move || {
            if v5 {
                any::<u8>().boxed()
            } else {
                Just(0u8).boxed()
            }
        };
        let pub_resp = (0..4usize, 1u16.., reason(), arb_props_for(v, Ctx::PubResp)).prop_map(
            |(kind, packet_id, reason, properties)| {
                let r = PubResp {
                    packet_id,
                    reason,
                    properties,
                };
                [
                    Packet::PubAck,
                    Packet::PubRec,
                    Packet::PubRel,
                    Packet::PubComp,
                ][kind](r)
            },
        );
        let connack = (
            any::<bool>(),
            if v5 {
                any::<u8>().boxed()
            } else {
                (0u8..=5).boxed()
            },
            arb_props_for(v, Ctx::ConnAck),
        )
            .prop_map(|(session_present, code, properties)| {
                Packet::ConnAck(ConnAck {
                    session_present,
                    code,
                    properties,
                })
            });
        let subscribe = (
            1u16..,
            vec((arb_topic(), arb_options(v)), 1..4),
            arb_props_for(v, Ctx::Subscribe),
        )
            .prop_map(|(packet_id, filters, properties)| {
                Packet::Subscribe(Subscribe {
                    packet_id,
                    filters,
                    properties,
                })
            });
        let code = if v5 {
            any::<u8>().boxed()
        } else {
            prop::sample::select(vec![0u8, 1, 2, 0x80]).boxed()
        };
        let suback = (1u16.., vec(code, 1..4), arb_props_for(v, Ctx::SubAck)).prop_map(
            |(packet_id, codes, properties)| {
                Packet::SubAck(SubAck {
                    packet_id,
                    codes,
                    properties,
                })
            },
        );
        let unsubscribe = (
            1u16..,
            vec(arb_topic(), 1..4),
            arb_props_for(v, Ctx::Unsubscribe),
        )
            .prop_map(|(packet_id, filters, properties)| {
                Packet::Unsubscribe(Unsubscribe {
                    packet_id,
                    filters,
                    properties,
                })
            });
        let unsuback = (
            1u16..,
            vec(any::<u8>(), 1..4),
            arb_props_for(v, Ctx::UnsubAck),
        )
            .prop_map(move |(packet_id, codes, properties)| {
                let codes = if v5 { codes } else { Vec::new() };
                Packet::UnsubAck(UnsubAck {
                    packet_id,
                    codes,
                    properties,
                })
            });
        let disconnect = (reason(), arb_props_for(v, Ctx::Disconnect))
            .prop_map(|(reason, properties)| Packet::Disconnect(Disconnect { reason, properties }));
        let auth = (reason(), arb_props_for(v, Ctx::Auth))
            .prop_map(|(reason, properties)| Packet::Auth(Auth { reason, properties }));
        let mut all = vec![
            arb_connect(v).boxed(),
            connack.boxed(),
            arb_publish(v).boxed(),
            pub_resp.boxed(),
            subscribe.boxed(),
            suback.boxed(),
            unsubscribe.boxed(),
            unsuback.boxed(),
            Just(Packet::PingReq).boxed(),
            Just(Packet::PingResp).boxed(),
            disconnect.boxed(),
        ];
        if v5 {
            all.push(auth.boxed());
        }
        proptest::strategy::Union::new(all).boxed()
    }

    fn arb_versioned_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
        prop_oneof![Just(V31), Just(V311), Just(V5)].prop_flat_map(|v| (Just(v), arb_packet(v)))
    }

    /// After a successful decode: encoding the packet and decoding it again gives it back.
    fn reencodes(packet: &Packet, version: Option<ProtocolVersion>) {
        let (enc_v, dec_v) = match packet {
            Packet::Connect(c) => (c.version, None),
            _ => (version.unwrap_or(V311), version),
        };
        let mut out = BytesMut::new();
        let n = encode(packet, enc_v, &mut out);
        assert_eq!(n, out.len());
        let again = decode(&mut out, dec_v, 0);
        assert_eq!(again.as_ref(), Ok(&Some(packet.clone())));
    }

    /// Decodes frames off `bytes` until incomplete or an error; must never panic.
    fn decode_all(bytes: &[u8], version: Option<ProtocolVersion>) {
        let mut buf = BytesMut::from(bytes);
        loop {
            let before = buf.clone();
            match decode(&mut buf, version, 0) {
                Ok(Some(packet)) => {
                    assert!(buf.len() < before.len());
                    reencodes(&packet, version);
                }
                Ok(None) => {
                    assert_eq!(buf, before, "incomplete must consume nothing");
                    return;
                }
                Err(e) => {
                    let _ = e.reason_code();
                    return;
                }
            }
        }
    }

    /// First bytes with valid type and flags for `v`.
    fn valid_first_bytes(v: Option<ProtocolVersion>) -> Vec<u8> {
        let mut firsts = vec![
            0x10, 0x20, 0x40, 0x50, 0x62, 0x70, 0x82, 0x90, 0xA2, 0xB0, 0xC0, 0xD0, 0xE0,
        ];
        firsts.extend((0x30..=0x3F).filter(|b| (b >> 1) & 3 != 3));
        if v == Some(V5) {
            firsts.push(0xF0);
        }
        firsts
    }

    fn arb_version() -> impl Strategy<Value = Option<ProtocolVersion>> {
        prop::sample::select(ALL.to_vec())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// (a) encode -> decode gives the packet back, for every type and version; the length
        /// is what encoded_len said; every prefix is incomplete.
        #[test]
        fn round_trip((v, packet) in arb_versioned_packet(), cut in any::<prop::sample::Index>()) {
            let mut out = BytesMut::new();
            let n = encode(&packet, v, &mut out);
            prop_assert_eq!(n, out.len());
            prop_assert_eq!(n, encoded_len(&packet, v));
            let dec_v = if matches!(packet, Packet::Connect(_)) { None } else { Some(v) };
            let full = out.clone();
            let mut prefix = BytesMut::from(&full[..cut.index(n)]);
            prop_assert_eq!(decode(&mut prefix, dec_v, 0), Ok(None));
            prop_assert_eq!(prefix.len(), cut.index(n));
            // Two frames back to back come out one at a time.
            encode(&packet, v, &mut out);
            prop_assert_eq!(decode(&mut out, dec_v, 0), Ok(Some(packet.clone())));
            prop_assert_eq!(decode(&mut out, dec_v, 0), Ok(Some(packet)));
            prop_assert!(out.is_empty());
        }

        /// (b) arbitrary bytes never panic, for every version.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), v in arb_version()) {
            decode_all(&bytes, v);
        }

        /// (b) arbitrary bodies behind a valid fixed header never panic.
        #[test]
        fn arbitrary_body_behind_valid_header_never_panics(
            v in arb_version(),
            first in any::<prop::sample::Index>(),
            prefix in prop::sample::select(vec![
                &b""[..],
                b"\x00\x04MQTT\x04",
                b"\x00\x04MQTT\x05",
                b"\x00\x06MQIsdp\x03",
                b"\x00\x04MQTT\x05\x02\x00\x00",
                b"\x00\x01a",
                b"\x00\x01a\x00\x01",
                b"\x00\x01",
            ]),
            body in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let firsts = valid_first_bytes(v);
            let mut full = prefix.to_vec();
            full.extend_from_slice(&body);
            decode_all(&frame(firsts[first.index(firsts.len())], &full), v);
        }

        /// (b) v5 property blocks of arbitrary bytes never panic.
        #[test]
        fn arbitrary_v5_properties_never_panic(p in proptest::collection::vec(any::<u8>(), 0..60)) {
            decode_all(&v5_publish_with(&p), Some(V5));
            let mut body = vec![0, 0];
            body.extend(props(&p));
            decode_all(&frame(0x20, &body), Some(V5));
        }
    }
}
