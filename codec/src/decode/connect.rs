//! CONNECT and CONNACK (3.1, 3.2).

use super::{DecodeError, Reader, Result};
use crate::packet::{ConnAck, Connect, ProtocolVersion, QoS, Will};
use crate::properties::{props_if_v5, Ctx};

/// CONNECT (3.1). Decoded with the version it names, whatever the connection's state.
pub(super) fn parse_connect(r: &mut Reader) -> Result<Connect> {
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
pub(super) fn parse_connack(r: &mut Reader, version: ProtocolVersion) -> Result<ConnAck> {
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
