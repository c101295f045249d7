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

use bytes::{BufMut, Bytes, BytesMut};

use super::decode::ptype;
use super::packet::{
    ByteStr, Connect, Packet, ProtocolVersion, Publish, RetainHandling, SubOptions,
};
use super::properties::{id, Properties};

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

/// Per-send values that replace those of a stored message's properties when one PUBLISH is
/// encoded for one subscriber: `Some` replaces, `None` keeps the stored value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PropertiesPatch<'a> {
    /// What is left of the Message Expiry Interval [MQTT-3.3.2-6].
    pub message_expiry_interval: Option<u32>,
    /// The identifiers of the subscriptions this delivery matched [MQTT-3.3.4-3].
    pub subscription_identifiers: Option<&'a [u32]>,
    /// The alias this connection uses for the topic [MQTT-3.3.2-12].
    pub topic_alias: Option<u16>,
}

/// A PUBLISH made of borrowed parts: the shared message's topic, properties and payload and
/// one delivery's fields. Why: encoding a delivery from this writes the bytes directly into
/// the connection's buffer; building a [`Publish`] per delivery cloned the whole
/// `Properties` (about 470 bytes) and, with topic aliases, cloned it again (issue #7).
#[derive(Debug, Clone, Copy)]
pub struct PublishRef<'a> {
    pub dup: bool,
    pub qos: super::packet::QoS,
    pub retain: bool,
    /// Empty when a topic alias stands for the topic (MQTT 5).
    pub topic: &'a [u8],
    /// Ignored at QoS 0.
    pub packet_id: u16,
    pub properties: &'a Properties,
    pub patch: PropertiesPatch<'a>,
    pub payload: &'a [u8],
}

impl<'a> PublishRef<'a> {
    /// The parts of a whole `Publish`, unpatched.
    pub fn new(p: &'a Publish) -> PublishRef<'a> {
        PublishRef {
            dup: p.dup,
            qos: p.qos,
            retain: p.retain,
            topic: &p.topic.as_bytes()[..],
            packet_id: p.packet_id,
            properties: &p.properties,
            patch: PropertiesPatch::default(),
            payload: &p.payload,
        }
    }
}

/// Appends the PUBLISH `p`, encoded for `version`, to `out`; returns the bytes written. The
/// same bytes as [`encode`] of the equivalent [`Publish`].
pub fn encode_publish(p: &PublishRef, version: ProtocolVersion, out: &mut BytesMut) -> usize {
    let v5 = version.is_v5();
    let remaining = publish_len(p, v5);
    let total = 1 + var_int_len(remaining) + remaining;
    out.reserve(total);
    out.put_u8(ptype::PUBLISH << 4 | (p.dup as u8) << 3 | (p.qos as u8) << 1 | p.retain as u8);
    put_var_int(out, remaining);
    put_publish(out, p, v5);
    total
}

/// The size of [`encode_publish`]'s output.
pub fn publish_encoded_len(p: &PublishRef, version: ProtocolVersion) -> usize {
    let remaining = publish_len(p, version.is_v5());
    1 + var_int_len(remaining) + remaining
}

fn publish_len(p: &PublishRef, v5: bool) -> usize {
    2 + p.topic.len()
        + if p.qos as u8 > 0 { 2 } else { 0 }
        + if v5 {
            let n = properties_len_patched(p.properties, &p.patch);
            var_int_len(n) + n
        } else {
            0
        }
        + p.payload.len()
}

fn put_publish(out: &mut BytesMut, p: &PublishRef, v5: bool) {
    put_str(out, p.topic);
    if p.qos as u8 > 0 {
        out.put_u16(p.packet_id);
    }
    if v5 {
        put_properties_patched(out, p.properties, &p.patch);
    }
    out.put_slice(p.payload);
}

fn connect_len(c: &Connect) -> usize {
    let v5 = c.version.is_v5();
    let mut n = 2 + c.version.name().len() + 1 + 1 + 2;
    if v5 {
        n += properties_block_len(&c.properties);
    }
    n += 2 + c.client_id.len();
    if let Some(w) = &c.will {
        if v5 {
            n += properties_block_len(&w.properties);
        }
        n += 2 + w.topic.len() + 2 + w.payload.len();
    }
    if let Some(u) = &c.username {
        n += 2 + u.len();
    }
    if let Some(p) = &c.password {
        n += 2 + p.len();
    }
    n
}

fn put_connect(out: &mut BytesMut, c: &Connect) {
    let v5 = c.version.is_v5();
    put_str(out, c.version.name().as_bytes());
    out.put_u8(c.version.level());
    let mut flags = 0u8;
    if c.clean_start {
        flags |= 0x02;
    }
    if let Some(w) = &c.will {
        flags |= 0x04 | (w.qos as u8) << 3;
        if w.retain {
            flags |= 0x20;
        }
    }
    if c.password.is_some() {
        flags |= 0x40;
    }
    if c.username.is_some() {
        flags |= 0x80;
    }
    out.put_u8(flags);
    out.put_u16(c.keep_alive);
    if v5 {
        put_properties(out, &c.properties);
    }
    put_str(out, c.client_id.as_bytes());
    if let Some(w) = &c.will {
        if v5 {
            put_properties(out, &w.properties);
        }
        put_str(out, w.topic.as_bytes());
        put_str(out, &w.payload);
    }
    if let Some(u) = &c.username {
        put_str(out, u.as_bytes());
    }
    if let Some(p) = &c.password {
        put_str(out, p);
    }
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
fn put_str(out: &mut BytesMut, s: &[u8]) {
    debug_assert!(
        s.len() <= u16::MAX as usize,
        "MQTT string longer than 65535 bytes"
    );
    out.put_u16(s.len() as u16);
    out.put_slice(s);
}

/// Property length plus properties (2.2.2).
fn properties_block_len(p: &Properties) -> usize {
    let n = properties_len(p);
    var_int_len(n) + n
}

/// The length of the properties themselves, without the property length prefix.
pub(crate) fn properties_len(p: &Properties) -> usize {
    properties_len_patched(p, &PropertiesPatch::default())
}

/// [`properties_len`] of `p` with `patch` applied.
fn properties_len_patched(p: &Properties, patch: &PropertiesPatch) -> usize {
    let expiry = patch.message_expiry_interval.or(p.message_expiry_interval);
    let ids = patch
        .subscription_identifiers
        .unwrap_or(&p.subscription_identifiers);
    let alias = patch.topic_alias.or(p.topic_alias);
    // Identifier byte + value, per present property.
    let byte = |o: &Option<u8>| if o.is_some() { 2 } else { 0 };
    let two = |o: &Option<u16>| if o.is_some() { 3 } else { 0 };
    let four = |o: &Option<u32>| if o.is_some() { 5 } else { 0 };
    let s = |o: &Option<ByteStr>| o.as_ref().map_or(0, |v| 3 + v.len());
    let bin = |o: &Option<Bytes>| o.as_ref().map_or(0, |v| 3 + v.len());
    byte(&p.payload_format_indicator)
        + four(&expiry)
        + s(&p.content_type)
        + s(&p.response_topic)
        + bin(&p.correlation_data)
        + ids
            .iter()
            .map(|&v| 1 + var_int_len(v as usize))
            .sum::<usize>()
        + four(&p.session_expiry_interval)
        + s(&p.assigned_client_identifier)
        + two(&p.server_keep_alive)
        + s(&p.authentication_method)
        + bin(&p.authentication_data)
        + byte(&p.request_problem_information)
        + four(&p.will_delay_interval)
        + byte(&p.request_response_information)
        + s(&p.response_information)
        + s(&p.server_reference)
        + s(&p.reason_string)
        + two(&p.receive_maximum)
        + two(&p.topic_alias_maximum)
        + two(&alias)
        + byte(&p.maximum_qos)
        + byte(&p.retain_available)
        + p.user_properties
            .iter()
            .map(|(k, v)| 1 + 2 + k.len() + 2 + v.len())
            .sum::<usize>()
        + four(&p.maximum_packet_size)
        + byte(&p.wildcard_subscription_available)
        + byte(&p.subscription_identifier_available)
        + byte(&p.shared_subscription_available)
}

/// Writes the property length and every present property, in identifier order except that
/// user properties keep their own order.
fn put_properties(out: &mut BytesMut, p: &Properties) {
    put_properties_patched(out, p, &PropertiesPatch::default())
}

/// [`put_properties`] of `p` with `patch` applied.
fn put_properties_patched(out: &mut BytesMut, p: &Properties, patch: &PropertiesPatch) {
    put_var_int(out, properties_len_patched(p, patch));
    fn byte(out: &mut BytesMut, pid: u8, o: Option<u8>) {
        if let Some(v) = o {
            out.put_u8(pid);
            out.put_u8(v);
        }
    }
    fn two(out: &mut BytesMut, pid: u8, o: Option<u16>) {
        if let Some(v) = o {
            out.put_u8(pid);
            out.put_u16(v);
        }
    }
    fn four(out: &mut BytesMut, pid: u8, o: Option<u32>) {
        if let Some(v) = o {
            out.put_u8(pid);
            out.put_u32(v);
        }
    }
    fn s(out: &mut BytesMut, pid: u8, o: Option<&[u8]>) {
        if let Some(v) = o {
            out.put_u8(pid);
            put_str(out, v);
        }
    }
    fn st(o: &Option<ByteStr>) -> Option<&[u8]> {
        o.as_ref().map(|v| &v.as_bytes()[..])
    }
    fn bin(o: &Option<Bytes>) -> Option<&[u8]> {
        o.as_deref()
    }

    byte(
        out,
        id::PAYLOAD_FORMAT_INDICATOR,
        p.payload_format_indicator,
    );
    four(
        out,
        id::MESSAGE_EXPIRY_INTERVAL,
        patch.message_expiry_interval.or(p.message_expiry_interval),
    );
    s(out, id::CONTENT_TYPE, st(&p.content_type));
    s(out, id::RESPONSE_TOPIC, st(&p.response_topic));
    s(out, id::CORRELATION_DATA, bin(&p.correlation_data));
    let ids = patch
        .subscription_identifiers
        .unwrap_or(&p.subscription_identifiers);
    for &v in ids {
        out.put_u8(id::SUBSCRIPTION_IDENTIFIER);
        put_var_int(out, v as usize);
    }
    four(out, id::SESSION_EXPIRY_INTERVAL, p.session_expiry_interval);
    s(
        out,
        id::ASSIGNED_CLIENT_IDENTIFIER,
        st(&p.assigned_client_identifier),
    );
    two(out, id::SERVER_KEEP_ALIVE, p.server_keep_alive);
    s(out, id::AUTHENTICATION_METHOD, st(&p.authentication_method));
    s(out, id::AUTHENTICATION_DATA, bin(&p.authentication_data));
    byte(
        out,
        id::REQUEST_PROBLEM_INFORMATION,
        p.request_problem_information,
    );
    four(out, id::WILL_DELAY_INTERVAL, p.will_delay_interval);
    byte(
        out,
        id::REQUEST_RESPONSE_INFORMATION,
        p.request_response_information,
    );
    s(out, id::RESPONSE_INFORMATION, st(&p.response_information));
    s(out, id::SERVER_REFERENCE, st(&p.server_reference));
    s(out, id::REASON_STRING, st(&p.reason_string));
    two(out, id::RECEIVE_MAXIMUM, p.receive_maximum);
    two(out, id::TOPIC_ALIAS_MAXIMUM, p.topic_alias_maximum);
    two(out, id::TOPIC_ALIAS, patch.topic_alias.or(p.topic_alias));
    byte(out, id::MAXIMUM_QOS, p.maximum_qos);
    byte(out, id::RETAIN_AVAILABLE, p.retain_available);
    for (k, v) in &p.user_properties {
        out.put_u8(id::USER_PROPERTY);
        put_str(out, k.as_bytes());
        put_str(out, v.as_bytes());
    }
    four(out, id::MAXIMUM_PACKET_SIZE, p.maximum_packet_size);
    byte(
        out,
        id::WILDCARD_SUBSCRIPTION_AVAILABLE,
        p.wildcard_subscription_available,
    );
    byte(
        out,
        id::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        p.subscription_identifier_available,
    );
    byte(
        out,
        id::SHARED_SUBSCRIPTION_AVAILABLE,
        p.shared_subscription_available,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patched_publish_ref_encodes_as_the_patched_publish() {
        let stored = Publish {
            qos: QoS::AtLeastOnce,
            topic: "a/b".into(),
            packet_id: 7,
            properties: Properties {
                message_expiry_interval: Some(60),
                content_type: Some("text/plain".into()),
                user_properties: vec![("k".into(), "v".into())],
                ..Default::default()
            },
            payload: Bytes::from_static(b"hello"),
            ..Default::default()
        };
        let ids = [3u32, 200];
        let mut r = PublishRef::new(&stored);
        r.dup = true;
        r.topic = b"";
        r.patch = PropertiesPatch {
            message_expiry_interval: Some(59),
            subscription_identifiers: Some(&ids),
            topic_alias: Some(2),
        };
        let mut expected = stored.clone();
        expected.dup = true;
        expected.topic = "".into();
        expected.properties.message_expiry_interval = Some(59);
        expected.properties.subscription_identifiers = ids.to_vec();
        expected.properties.topic_alias = Some(2);
        for version in [V311, V5] {
            let mut out = BytesMut::new();
            let n = encode_publish(&r, version, &mut out);
            assert_eq!(n, publish_encoded_len(&r, version));
            assert_eq!(
                &out[..],
                &enc(&Packet::Publish(expected.clone()), version)[..]
            );
        }
        let mut out = BytesMut::new();
        encode_publish(&PublishRef::new(&stored), V5, &mut out);
        assert_eq!(
            &out[..],
            &enc(&Packet::Publish(stored), V5)[..],
            "unpatched"
        );
    }
    use crate::packet::{
        Auth, ConnAck, Disconnect, PubResp, QoS, SubAck, Subscribe, UnsubAck, Will,
    };
    use crate::{decode, reason};
    use ProtocolVersion::{V31, V311, V5};

    fn enc(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
        let mut out = BytesMut::new();
        let n = encode(packet, version, &mut out);
        assert_eq!(n, out.len());
        assert_eq!(n, encoded_len(packet, version));
        out.to_vec()
    }

    fn with_reason_string() -> Properties {
        Properties {
            reason_string: Some("why".into()),
            ..Properties::default()
        }
    }

    #[test]
    fn v3_connack_is_two_bytes_whatever_the_properties() {
        let ack = Packet::ConnAck(ConnAck {
            session_present: true,
            code: reason::v3::NOT_AUTHORIZED,
            properties: with_reason_string(),
        });
        for v in [V31, V311] {
            assert_eq!(enc(&ack, v), [0x20, 0x02, 0x01, 0x05]);
        }
        assert_eq!(
            enc(&ack, V5),
            [0x20, 0x09, 0x01, 0x05, 0x06, 0x1F, 0x00, 0x03, b'w', b'h', b'y']
        );
    }

    #[test]
    fn v3_drops_reasons_and_properties_from_acks_and_disconnect() {
        let resp = PubResp {
            packet_id: 7,
            reason: 0x10,
            properties: with_reason_string(),
        };
        assert_eq!(
            enc(&Packet::PubAck(resp.clone()), V311),
            [0x40, 0x02, 0x00, 0x07]
        );
        assert_eq!(enc(&Packet::PubRel(resp), V311), [0x62, 0x02, 0x00, 0x07]);
        let d = Disconnect {
            reason: 0x8E,
            properties: with_reason_string(),
        };
        assert_eq!(enc(&Packet::Disconnect(d), V311), [0xE0, 0x00]);
        let u = UnsubAck {
            packet_id: 3,
            codes: vec![0, 0x11],
            properties: with_reason_string(),
        };
        assert_eq!(enc(&Packet::UnsubAck(u), V311), [0xB0, 0x02, 0x00, 0x03]);
        let s = SubAck {
            packet_id: 3,
            codes: vec![1, 0x80],
            properties: with_reason_string(),
        };
        assert_eq!(
            enc(&Packet::SubAck(s), V311),
            [0x90, 0x04, 0x00, 0x03, 0x01, 0x80]
        );
    }

    #[test]
    fn v5_uses_short_forms_3_4_2_1_and_3_14_2_1() {
        assert_eq!(
            enc(&Packet::PubComp(PubResp::new(1)), V5),
            [0x70, 0x02, 0x00, 0x01]
        );
        let r = PubResp {
            packet_id: 1,
            reason: 0x10,
            properties: Properties::default(),
        };
        assert_eq!(enc(&Packet::PubAck(r), V5), [0x40, 0x03, 0x00, 0x01, 0x10]);
        assert_eq!(
            enc(&Packet::Disconnect(Disconnect::default()), V5),
            [0xE0, 0x00]
        );
        let d = Disconnect {
            reason: 0x04,
            properties: Properties::default(),
        };
        assert_eq!(enc(&Packet::Disconnect(d), V5), [0xE0, 0x01, 0x04]);
        assert_eq!(enc(&Packet::Auth(Auth::default()), V5), [0xF0, 0x00]);
        // Reason 0 with properties needs the reason byte.
        let r = PubResp {
            packet_id: 1,
            reason: 0,
            properties: with_reason_string(),
        };
        assert_eq!(
            enc(&Packet::PubRec(r), V5),
            [0x50, 0x0A, 0x00, 0x01, 0x00, 0x06, 0x1F, 0x00, 0x03, b'w', b'h', b'y']
        );
    }

    #[test]
    fn auth_does_not_exist_before_v5() {
        let mut out = BytesMut::from(&b"xy"[..]);
        assert_eq!(encode(&Packet::Auth(Auth::default()), V311, &mut out), 0);
        assert_eq!(encoded_len(&Packet::Auth(Auth::default()), V31), 0);
        assert_eq!(&out[..], b"xy");
    }

    #[test]
    fn v3_subscribe_carries_the_requested_qos_only() {
        let opts = SubOptions {
            qos: QoS::AtLeastOnce,
            no_local: true,
            retain_as_published: true,
            retain_handling: RetainHandling::SendIfNew,
        };
        let sub = Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![("a".into(), opts)],
            properties: Properties::default(),
        });
        assert_eq!(
            enc(&sub, V311),
            [0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x01]
        );
        assert_eq!(
            enc(&sub, V5),
            [0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x1D]
        );
    }

    #[test]
    fn connect_uses_its_own_version_name_and_level_mqtt_3_1_2_1() {
        let mut c = Connect {
            version: V31,
            clean_start: true,
            keep_alive: 30,
            client_id: "id".into(),
            will: Some(Will {
                topic: "w".into(),
                payload: Bytes::from_static(b"x"),
                qos: QoS::ExactlyOnce,
                retain: false,
                properties: Properties::default(),
            }),
            username: None,
            password: None,
            properties: Properties {
                session_expiry_interval: Some(1),
                ..Default::default()
            },
        };
        let v31 = [
            0x10, 0x16, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x16, 0x00, 0x1E,
            0x00, 0x02, b'i', b'd', 0x00, 0x01, b'w', 0x00, 0x01, b'x',
        ];
        // The `version` argument does not matter for CONNECT.
        assert_eq!(enc(&Packet::Connect(c.clone()), V5), v31);
        c.version = V5;
        let bytes = enc(&Packet::Connect(c.clone()), V311);
        assert_eq!(&bytes[2..9], &[0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05]);
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(decode(&mut buf, None, 0), Ok(Some(Packet::Connect(c))));
    }

    #[test]
    fn remaining_length_uses_the_fewest_bytes_mqtt_1_5_5_1() {
        // (body length, fixed header length): a 1-byte type and 1 to 4 length bytes.
        for (body, header) in [
            (3usize, 2usize),
            (127, 2),
            (128, 3),
            (16_383, 3),
            (16_384, 4),
            (2_097_152, 5),
        ] {
            // Topic "t" takes 3 bytes of the body.
            let p = Packet::Publish(Publish {
                topic: "t".into(),
                payload: Bytes::from(vec![0u8; body - 3]),
                ..Publish::default()
            });
            assert_eq!(encoded_len(&p, V311), header + body, "{body}");
        }
        let mut out = BytesMut::new();
        for v in [
            0usize,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            268_435_455,
        ] {
            out.clear();
            put_var_int(&mut out, v);
            assert_eq!(out.len(), var_int_len(v));
            assert_ne!(out[out.len() - 1] & 0x80, 0x80);
        }
    }

    #[test]
    fn encode_appends_without_reallocating_a_buffer_that_has_room() {
        let p = Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            packet_id: 9,
            topic: "a/b".into(),
            payload: Bytes::from_static(b"hello"),
            properties: Properties {
                subscription_identifiers: vec![1, 300],
                user_properties: vec![("k".into(), "v".into())],
                ..Properties::default()
            },
            ..Publish::default()
        });
        let mut out = BytesMut::with_capacity(256);
        out.extend_from_slice(b"prev");
        let ptr = out.as_ptr();
        let n = encode(&p, V5, &mut out);
        assert_eq!(out.as_ptr(), ptr, "no reallocation");
        assert_eq!(&out[..4], b"prev");
        assert_eq!(out.len(), 4 + n);
        let mut frame = out.split_off(4);
        assert_eq!(decode(&mut frame, Some(V5), 0), Ok(Some(p)));
    }
}
