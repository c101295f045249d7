//! Decoder tests: MQTT 5 properties (2.2.2): where each is allowed, duplicates, value ranges.

use super::*;

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
        0x11, 0, 0, 0, 1, 0x12, 0, 1, b'c', 0x13, 0, 5, 0x15, 0, 1, b'm', 0x16, 0, 1, 1, 0x1A, 0,
        1, b'i', 0x1C, 0, 1, b's', 0x1F, 0, 1, b'r', 0x21, 0, 9, 0x22, 0, 9, 0x24, 0, 0x25, 1,
        0x27, 0, 0, 1, 0, 0x28, 1, 0x29, 0, 0x2A, 1,
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
