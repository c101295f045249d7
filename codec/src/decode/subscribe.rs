//! SUBSCRIBE, SUBACK, UNSUBSCRIBE and UNSUBACK (3.8-3.11).

use super::{DecodeError, Reader, Result};
use crate::packet::{
    ByteStr, ProtocolVersion, QoS, RetainHandling, SubAck, SubOptions, Subscribe, UnsubAck,
    Unsubscribe,
};
use crate::properties::{props_if_v5, read_properties, Ctx};

/// SUBSCRIBE (3.8).
pub(super) fn parse_subscribe(r: &mut Reader, version: ProtocolVersion) -> Result<Subscribe> {
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
    crate::topic::validate_topic_filter(&filter).map_err(|_| DecodeError::TopicFilterInvalid)?;
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
pub(super) fn parse_suback(r: &mut Reader, version: ProtocolVersion) -> Result<SubAck> {
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
pub(super) fn parse_unsubscribe(r: &mut Reader, version: ProtocolVersion) -> Result<Unsubscribe> {
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
pub(super) fn parse_unsuback(r: &mut Reader, version: ProtocolVersion) -> Result<UnsubAck> {
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
