//! PUBLISH and its acknowledgements (3.3-3.7), and the "reason code, properties" tail that
//! PUBACK .. PUBCOMP share with DISCONNECT and AUTH.

use super::{DecodeError, Reader, Result};
use crate::packet::{ProtocolVersion, PubResp, Publish, QoS};
use crate::properties::{props_if_v5, read_properties, Ctx, Properties};

/// PUBLISH (3.3); `flags` were checked by [`super::check_fixed_header`].
pub(super) fn parse_publish(
    r: &mut Reader,
    flags: u8,
    version: ProtocolVersion,
) -> Result<Publish> {
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
pub(super) fn parse_pub_resp(r: &mut Reader, version: ProtocolVersion) -> Result<PubResp> {
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
pub(super) fn parse_reason_and_props(
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
