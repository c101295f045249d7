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
//!
//! One file per job: the fixed header and the frame (here), the body cursor (`reader`), the
//! packet families (`connect`, `publish`, `subscribe`), the error type (`error`); MQTT 5
//! properties are read by `crate::properties`.

use bytes::{Buf, BytesMut};

use crate::packet::{Auth, Disconnect, Packet, ProtocolVersion};
use crate::properties::Ctx;

mod connect;
mod error;
mod publish;
mod reader;
mod subscribe;
#[cfg(test)]
mod tests;

use connect::{parse_connack, parse_connect};
pub use error::DecodeError;
use publish::{parse_pub_resp, parse_publish, parse_reason_and_props};
pub(crate) use reader::Reader;
use subscribe::{parse_suback, parse_subscribe, parse_unsuback, parse_unsubscribe};

/// The largest remaining length a 4-byte variable byte integer can hold (2.1.4).
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// The largest whole packet: one type byte, four length bytes, the largest remaining length.
pub const MAX_PACKET_SIZE: usize = 1 + 4 + MAX_REMAINING_LENGTH;

pub(crate) type Result<T> = std::result::Result<T, DecodeError>;

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
