//! MQTT 5 properties (section 2.2.2 of the 5.0 specification).
//!
//! One struct holds every property any packet can carry; the decoder rejects a property that
//! is not allowed in the packet it arrived in, and one that appears twice where the
//! specification allows it once (Protocol Error). An empty `Properties` allocates nothing, so
//! 3.x packets and property-less 5.0 packets pay nothing for it.
//!
//! Both directions live here: `read_properties` (what each packet may carry, table 2-4,
//! and each value's range) and the writers (exact length first, then the bytes, with the
//! per-delivery [`PropertiesPatch`] applied on the way out).

use bytes::{BufMut, Bytes, BytesMut};

use crate::decode::{DecodeError, Reader, Result};
use crate::encode::{put_str, put_var_int, var_int_len};
use crate::packet::{ByteStr, ProtocolVersion};

/// Property identifiers (MQTT 5.0, table 2-4).
pub mod id {
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// Every MQTT 5 property. `None`/empty means absent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Properties {
    pub payload_format_indicator: Option<u8>,
    pub message_expiry_interval: Option<u32>,
    pub content_type: Option<ByteStr>,
    pub response_topic: Option<ByteStr>,
    pub correlation_data: Option<Bytes>,
    /// Several in a PUBLISH sent to a client (one per matching subscription); at most one in
    /// SUBSCRIBE. Values are 1..=268,435,455.
    pub subscription_identifiers: Vec<u32>,
    pub session_expiry_interval: Option<u32>,
    pub assigned_client_identifier: Option<ByteStr>,
    pub server_keep_alive: Option<u16>,
    pub authentication_method: Option<ByteStr>,
    pub authentication_data: Option<Bytes>,
    pub request_problem_information: Option<u8>,
    pub will_delay_interval: Option<u32>,
    pub request_response_information: Option<u8>,
    pub response_information: Option<ByteStr>,
    pub server_reference: Option<ByteStr>,
    pub reason_string: Option<ByteStr>,
    pub receive_maximum: Option<u16>,
    pub topic_alias_maximum: Option<u16>,
    pub topic_alias: Option<u16>,
    pub maximum_qos: Option<u8>,
    pub retain_available: Option<u8>,
    /// In order of appearance; forwarded unchanged ([MQTT-3.3.2-17], [MQTT-3.3.2-18]).
    pub user_properties: Vec<(ByteStr, ByteStr)>,
    pub maximum_packet_size: Option<u32>,
    pub wildcard_subscription_available: Option<u8>,
    pub subscription_identifier_available: Option<u8>,
    pub shared_subscription_available: Option<u8>,
}

impl Properties {
    /// True when no property is set (the common case for 3.x and for most PUBLISHes).
    pub fn is_empty(&self) -> bool {
        *self == Properties::default()
    }
}

// ---------------------------------------------------------------- decoding

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
pub(crate) fn read_properties(r: &mut Reader, ctx: Ctx) -> Result<Properties> {
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

pub(crate) fn props_if_v5(
    r: &mut Reader,
    version: ProtocolVersion,
    ctx: Ctx,
) -> Result<Properties> {
    if version.is_v5() {
        read_properties(r, ctx)
    } else {
        Ok(Properties::default())
    }
}

// ---------------------------------------------------------------- encoding

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

/// Property length plus properties (2.2.2).
pub(crate) fn properties_block_len(p: &Properties) -> usize {
    let n = properties_len(p);
    var_int_len(n) + n
}

/// The length of the properties themselves, without the property length prefix.
pub(crate) fn properties_len(p: &Properties) -> usize {
    properties_len_patched(p, &PropertiesPatch::default())
}

/// [`properties_len`] of `p` with `patch` applied.
pub(crate) fn properties_len_patched(p: &Properties, patch: &PropertiesPatch) -> usize {
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
pub(crate) fn put_properties(out: &mut BytesMut, p: &Properties) {
    put_properties_patched(out, p, &PropertiesPatch::default())
}

/// [`put_properties`] of `p` with `patch` applied.
pub(crate) fn put_properties_patched(out: &mut BytesMut, p: &Properties, patch: &PropertiesPatch) {
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
