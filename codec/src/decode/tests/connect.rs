//! Decoder tests: CONNECT and CONNACK (3.1, 3.2).

use super::*;

#[test]
fn connect_v311_minimal_mqtt_3_1_0_1() {
    let bytes = [
        0x10, 0x0F, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x03, b'a',
        b'b', b'c',
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
        0x10, 0x11, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x02, 0x00, 0x3C, 0x00,
        0x03, b'a', b'b', b'c',
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
