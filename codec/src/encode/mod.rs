//! Encoding packets for a given protocol version.
//!
//! [`encoded_len`] computes the exact size first and [`encode`] reserves exactly that in `out`,
//! so encoding allocates nothing beyond growing `out` once (ARCHITECTURE.md §1.3). For 3.x, reason
//! codes and properties are not on the wire and are ignored; for 5.0 the short forms are used
//! wherever the specification allows them (PUBACK.. with reason 0 and no properties is 2 bytes
//! of body, DISCONNECT with reason 0 and no properties is empty).
//!
//! Preconditions (not checked; the decoder and the broker guarantee them): every string and
//! binary field is at most 65,535 bytes, a packet's remaining length is at most
//! [`super::MAX_REMAINING_LENGTH`], packet ids of packets that need one are non-zero.
//!
//! One file per job: the fixed header, the packets without a file of their own and the wire
//! primitives (here), CONNECT (`connect`), PUBLISH (`publish`); MQTT 5 properties are written
//! by `crate::properties`.

use bytes::{BufMut, BytesMut};

use crate::decode::ptype;
use crate::packet::{Packet, ProtocolVersion, RetainHandling, SubOptions};
use crate::properties::{properties_block_len, properties_len, put_properties, Properties};

mod connect;
mod publish;
#[cfg(test)]
mod tests;

use connect::{connect_len, put_connect};
pub use publish::{encode_publish, publish_encoded_len, PublishRef};
use publish::{publish_len, put_publish};

/// Appends `packet`, encoded for `version`, to `out`; returns the bytes written.
///
/// CONNECT is encoded with the protocol name, level and rules of its own `version` field (a
/// client states its version there), whatever `version` says. AUTH does not exist before 5.0:
/// for 3.x it encodes nothing and returns 0.
pub fn encode(packet: &Packet, version: ProtocolVersion, out: &mut BytesMut) -> usize {
    let Some(remaining) = remaining_len(packet, version) else {
        return 0;
    };
    let total = 1 + var_int_len(remaining) + remaining;
    out.reserve(total);
    let start = out.len();
    out.put_u8(first_byte(packet));
    put_var_int(out, remaining);
    let v5 = version.is_v5();
    match packet {
        Packet::Connect(c) => put_connect(out, c),
        Packet::ConnAck(c) => {
            out.put_u8(c.session_present as u8);
            out.put_u8(c.code);
            if v5 {
                put_properties(out, &c.properties);
            }
        }
        Packet::Publish(p) => put_publish(out, &PublishRef::new(p), v5),
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            out.put_u16(r.packet_id);
            if v5 {
                put_reason_and_props(out, r.reason, &r.properties);
            }
        }
        Packet::Subscribe(s) => {
            out.put_u16(s.packet_id);
            if v5 {
                put_properties(out, &s.properties);
            }
            for (filter, options) in &s.filters {
                put_str(out, filter.as_bytes());
                out.put_u8(options_byte(options, v5));
            }
        }
        Packet::SubAck(s) => {
            out.put_u16(s.packet_id);
            if v5 {
                put_properties(out, &s.properties);
            }
            out.put_slice(&s.codes);
        }
        Packet::Unsubscribe(u) => {
            out.put_u16(u.packet_id);
            if v5 {
                put_properties(out, &u.properties);
            }
            for filter in &u.filters {
                put_str(out, filter.as_bytes());
            }
        }
        Packet::UnsubAck(u) => {
            out.put_u16(u.packet_id);
            if v5 {
                put_properties(out, &u.properties);
                out.put_slice(&u.codes);
            }
        }
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(d) => {
            if v5 {
                put_reason_and_props(out, d.reason, &d.properties);
            }
        }
        Packet::Auth(a) => put_reason_and_props(out, a.reason, &a.properties),
    }
    debug_assert_eq!(
        out.len() - start,
        total,
        "encoded_len disagrees with encode"
    );
    total
}

/// The size `packet` takes on the wire for `version` (fixed header included); 0 for AUTH
/// before 5.0 (see [`encode`]).
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> usize {
    match remaining_len(packet, version) {
        Some(remaining) => 1 + var_int_len(remaining) + remaining,
        None => 0,
    }
}

/// The first byte of the fixed header: type and flags (2.1.2, 2.1.3).
fn first_byte(packet: &Packet) -> u8 {
    let (packet_type, flags) = match packet {
        Packet::Connect(_) => (ptype::CONNECT, 0),
        Packet::ConnAck(_) => (ptype::CONNACK, 0),
        Packet::Publish(p) => (
            ptype::PUBLISH,
            (p.dup as u8) << 3 | (p.qos as u8) << 1 | p.retain as u8,
        ),
        Packet::PubAck(_) => (ptype::PUBACK, 0),
        Packet::PubRec(_) => (ptype::PUBREC, 0),
        Packet::PubRel(_) => (ptype::PUBREL, 0b0010),
        Packet::PubComp(_) => (ptype::PUBCOMP, 0),
        Packet::Subscribe(_) => (ptype::SUBSCRIBE, 0b0010),
        Packet::SubAck(_) => (ptype::SUBACK, 0),
        Packet::Unsubscribe(_) => (ptype::UNSUBSCRIBE, 0b0010),
        Packet::UnsubAck(_) => (ptype::UNSUBACK, 0),
        Packet::PingReq => (ptype::PINGREQ, 0),
        Packet::PingResp => (ptype::PINGRESP, 0),
        Packet::Disconnect(_) => (ptype::DISCONNECT, 0),
        Packet::Auth(_) => (ptype::AUTH, 0),
    };
    packet_type << 4 | flags
}

/// The remaining length of `packet` for `version`; `None` when it cannot be sent (AUTH, 3.x).
fn remaining_len(packet: &Packet, version: ProtocolVersion) -> Option<usize> {
    let v5 = version.is_v5();
    let props = |p: &Properties| if v5 { properties_block_len(p) } else { 0 };
    Some(match packet {
        Packet::Connect(c) => connect_len(c),
        Packet::ConnAck(c) => 2 + props(&c.properties),
        Packet::Publish(p) => publish_len(&PublishRef::new(p), v5),
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            2 + if v5 {
                reason_and_props_len(r.reason, &r.properties)
            } else {
                0
            }
        }
        Packet::Subscribe(s) => {
            2 + props(&s.properties)
                + s.filters
                    .iter()
                    .map(|(f, _)| 2 + f.len() + 1)
                    .sum::<usize>()
        }
        Packet::SubAck(s) => 2 + props(&s.properties) + s.codes.len(),
        Packet::Unsubscribe(u) => {
            2 + props(&u.properties) + u.filters.iter().map(|f| 2 + f.len()).sum::<usize>()
        }
        Packet::UnsubAck(u) => {
            2 + if v5 {
                props(&u.properties) + u.codes.len()
            } else {
                0
            }
        }
        Packet::PingReq | Packet::PingResp => 0,
        Packet::Disconnect(d) => {
            if v5 {
                reason_and_props_len(d.reason, &d.properties)
            } else {
                0
            }
        }
        Packet::Auth(a) => {
            if !v5 {
                return None;
            }
            reason_and_props_len(a.reason, &a.properties)
        }
    })
}

/// The 5.0 subscription options byte (3.8.3.1); 3.x has the requested QoS alone.
fn options_byte(o: &SubOptions, v5: bool) -> u8 {
    let mut b = o.qos as u8;
    if v5 {
        if o.no_local {
            b |= 0b0100;
        }
        if o.retain_as_published {
            b |= 0b1000;
        }
        b |= match o.retain_handling {
            RetainHandling::SendAtSubscribe => 0,
            RetainHandling::SendIfNew => 1,
            RetainHandling::DoNotSend => 2,
        } << 4;
    }
    b
}

/// Length of the optional 5.0 "reason code, properties" tail. With no properties it is the
/// reason code alone, and nothing at all for reason 0 (3.4.2.1, 3.14.2.1, 3.15.2.1). For
/// PUBACK.. the packet id precedes it.
fn reason_and_props_len(reason: u8, props: &Properties) -> usize {
    if props_empty(props) {
        if reason == 0 {
            0
        } else {
            1
        }
    } else {
        1 + properties_block_len(props)
    }
}

fn put_reason_and_props(out: &mut BytesMut, reason: u8, props: &Properties) {
    if props_empty(props) {
        if reason != 0 {
            out.put_u8(reason);
        }
    } else {
        out.put_u8(reason);
        put_properties(out, props);
    }
}

/// True when no property would be written (one pass over the fields, no default
/// `Properties` built to compare against).
fn props_empty(p: &Properties) -> bool {
    properties_len(p) == 0
}

/// Length of a variable byte integer (1.5.5).
pub(crate) fn var_int_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes a variable byte integer (1.5.5), minimally encoded [MQTT-1.5.5-1].
pub(crate) fn put_var_int(out: &mut BytesMut, mut v: usize) {
    loop {
        let mut b = (v & 0x7F) as u8;
        v >>= 7;
        if v > 0 {
            b |= 0x80;
        }
        out.put_u8(b);
        if v == 0 {
            return;
        }
    }
}

/// A string or binary field: two-byte length, bytes (1.5.4, 1.5.6).
pub(crate) fn put_str(out: &mut BytesMut, s: &[u8]) {
    debug_assert!(
        s.len() <= u16::MAX as usize,
        "MQTT string longer than 65535 bytes"
    );
    out.put_u16(s.len() as u16);
    out.put_slice(s);
}
