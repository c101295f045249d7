//! PUBLISH (3.3) from borrowed parts, the form every delivery is encoded from.

use bytes::{BufMut, BytesMut};

use super::{put_str, put_var_int, var_int_len};
use crate::decode::ptype;
use crate::packet::{ProtocolVersion, Publish};
use crate::properties::{
    properties_len_patched, put_properties_patched, Properties, PropertiesPatch,
};

/// A PUBLISH made of borrowed parts: the shared message's topic, properties and payload and
/// one delivery's fields. Why: encoding a delivery from this writes the bytes directly into
/// the connection's buffer; building a [`Publish`] per delivery cloned the whole
/// `Properties` (about 470 bytes) and, with topic aliases, cloned it again.
#[derive(Debug, Clone, Copy)]
pub struct PublishRef<'a> {
    pub dup: bool,
    pub qos: crate::packet::QoS,
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
///
/// `#[inline]` (here and on the helpers it calls): this runs once per delivery in the broker,
/// another crate, where it was inlined before the codec became its own crate.
#[inline]
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

#[inline]
pub(super) fn publish_len(p: &PublishRef, v5: bool) -> usize {
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

#[inline]
pub(super) fn put_publish(out: &mut BytesMut, p: &PublishRef, v5: bool) {
    put_str(out, p.topic);
    if p.qos as u8 > 0 {
        out.put_u16(p.packet_id);
    }
    if v5 {
        put_properties_patched(out, p.properties, &p.patch);
    }
    out.put_slice(p.payload);
}
