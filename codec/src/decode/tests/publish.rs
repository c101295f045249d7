//! Decoder tests: PUBLISH (3.3), UTF-8 strings, the maximum packet size, and PUBACK ..
//! PUBCOMP (3.4-3.7).

use super::*;

#[test]
fn publish_v311_qos0() {
    let bytes = [0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'];
    for v in [None, Some(V31), Some(V311)] {
        let Packet::Publish(p) = canonical(&bytes, v) else {
            panic!()
        };
        assert_eq!(
            (&*p.topic, &p.payload[..], p.qos, p.packet_id),
            ("a/b", &b"hi"[..], QoS::AtMostOnce, 0)
        );
    }
}

#[test]
fn publish_v311_qos1_dup_retain() {
    let bytes = [
        0x3B, 0x09, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A, b'h', b'i',
    ];
    let Packet::Publish(p) = canonical(&bytes, Some(V311)) else {
        panic!()
    };
    assert!(p.dup && p.retain);
    assert_eq!((p.qos, p.packet_id), (QoS::AtLeastOnce, 10));
}

#[test]
fn publish_v5_without_and_with_properties() {
    let bytes = [
        0x34, 0x0A, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x01, 0x00, b'h', b'i',
    ];
    let Packet::Publish(p) = canonical(&bytes, Some(V5)) else {
        panic!()
    };
    assert_eq!((p.qos, p.packet_id), (QoS::ExactlyOnce, 1));
    // Empty topic with a Topic Alias (3.3.2.3.4).
    let bytes = [
        0x32, 0x09, 0x00, 0x00, 0x00, 0x01, 0x03, 0x23, 0x00, 0x05, b'x',
    ];
    let Packet::Publish(p) = canonical(&bytes, Some(V5)) else {
        panic!()
    };
    assert!(p.topic.is_empty());
    assert_eq!(p.properties.topic_alias, Some(5));
}

#[test]
fn publish_payload_and_topic_are_slices_of_the_read_buffer() {
    let mut buf = BytesMut::from(&[0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'][..]);
    let base = buf.as_ptr() as usize;
    let Some(Packet::Publish(p)) = decode(&mut buf, Some(V311), 0).unwrap() else {
        panic!()
    };
    assert_eq!(p.topic.as_bytes().as_ptr() as usize, base + 4);
    assert_eq!(p.payload.as_ptr() as usize, base + 7);
}

#[test]
fn publish_qos3_is_malformed_on_first_byte_mqtt_3_3_1_4() {
    for v in ALL {
        assert_eq!(err(&[0x36], v), DecodeError::InvalidQoS);
        assert_eq!(err(&[0x36], v).reason_code(), rc::MALFORMED_PACKET);
    }
}

#[test]
fn publish_packet_id_zero_is_rejected_mqtt_2_3_1_1() {
    for v in ALL {
        let e = err(&[0x32, 0x05, 0x00, 0x01, b'a', 0x00, 0x00], v);
        assert_eq!(e, DecodeError::ZeroPacketId);
        assert_eq!(e.reason_code(), rc::PROTOCOL_ERROR);
    }
}

#[test]
fn publish_topic_with_wildcards_is_invalid_mqtt_3_3_2_2() {
    for v in ALL {
        for topic in [b'+', b'#'] {
            let e = err(&[0x30, 0x05, 0x00, 0x03, b'a', b'/', topic], v);
            assert_eq!(e, DecodeError::TopicNameInvalid);
            assert_eq!(e.reason_code(), rc::TOPIC_NAME_INVALID);
        }
    }
}

#[test]
fn publish_empty_topic_needs_v5_topic_alias_mqtt_4_7_3_1() {
    for v in [None, Some(V31), Some(V311)] {
        assert_eq!(
            err(&[0x30, 0x02, 0x00, 0x00], v),
            DecodeError::TopicNameInvalid
        );
    }
    assert_eq!(
        err(&[0x30, 0x03, 0x00, 0x00, 0x00], Some(V5)),
        DecodeError::TopicNameInvalid
    );
}

#[test]
fn publish_dup_on_qos0_is_malformed_mqtt_3_3_1_2() {
    let e = err(&[0x38, 0x03, 0x00, 0x01, b'a'], Some(V311));
    assert!(matches!(e, DecodeError::Malformed(_)));
}

#[test]
fn strings_must_be_utf8_without_nul_mqtt_1_5_3_1_and_2() {
    for topic in [
        &[0xFFu8][..],
        &[b'a', 0x00],
        &[0xED, 0xA0, 0x80],
        &[0xC0, 0x80],
    ] {
        let mut body = vec![0, topic.len() as u8];
        body.extend_from_slice(topic);
        for v in ALL {
            assert_eq!(
                err(&frame(0x30, &body), v),
                DecodeError::InvalidUtf8,
                "{topic:x?}"
            );
        }
    }
    // Also in CONNECT's client id and in a SUBSCRIBE filter.
    let mut bytes = connect_with(b"MQTT", 4, 0, &[]);
    let n = bytes.len();
    bytes[n - 1] = 0;
    assert_eq!(err(&bytes, None), DecodeError::InvalidUtf8);
    assert_eq!(
        err(&[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 0xFF, 0x00], None),
        DecodeError::InvalidUtf8
    );
}

#[test]
fn publish_larger_than_max_packet_size_is_refused_before_its_bytes_arrive() {
    // Only the fixed header: a 2,097,152-byte remaining length.
    let mut buf = BytesMut::from(&[0x30, 0x80, 0x80, 0x80, 0x01][..]);
    let e = decode(&mut buf, Some(V311), 1000).unwrap_err();
    assert_eq!(
        e,
        DecodeError::PacketTooLarge {
            size: 5 + 2_097_152,
            max: 1000
        }
    );
    assert_eq!(e.reason_code(), rc::PACKET_TOO_LARGE);
    // The limit is on the whole packet, fixed header included.
    let bytes = [0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'];
    assert!(decode(&mut BytesMut::from(&bytes[..]), Some(V311), 9)
        .unwrap()
        .is_some());
    let e = decode(&mut BytesMut::from(&bytes[..]), Some(V311), 8).unwrap_err();
    assert_eq!(e, DecodeError::PacketTooLarge { size: 9, max: 8 });
}

#[test]
fn pub_responses_v311() {
    for (first, make) in [
        (0x40u8, Packet::PubAck as fn(PubResp) -> Packet),
        (0x50, Packet::PubRec),
        (0x62, Packet::PubRel),
        (0x70, Packet::PubComp),
    ] {
        for v in [None, Some(V31), Some(V311), Some(V5)] {
            assert_eq!(
                canonical(&[first, 0x02, 0x12, 0x34], v),
                make(PubResp::new(0x1234))
            );
        }
        // 3.x has no reason code: a third byte is left over.
        assert_eq!(
            err(&[first, 0x03, 0x00, 0x01, 0x00], Some(V311)),
            DecodeError::TrailingBytes
        );
        assert_eq!(
            err(&[first, 0x02, 0x00, 0x00], Some(V311)),
            DecodeError::ZeroPacketId
        );
    }
}

#[test]
fn pub_responses_v5_short_forms_3_4_2_1() {
    let p = canonical(&[0x40, 0x03, 0x00, 0x01, 0x10], Some(V5));
    assert_eq!(
        p,
        Packet::PubAck(PubResp {
            packet_id: 1,
            reason: 0x10,
            ..Default::default()
        })
    );
    // Reason 0 and an empty property block: the long form of the 2-byte packet.
    assert_eq!(
        ok(&[0x50, 0x04, 0x00, 0x01, 0x00, 0x00], Some(V5)),
        Packet::PubRec(PubResp::new(1))
    );
    let bytes = [
        0x62, 0x09, 0x00, 0x01, 0x92, 0x05, 0x1F, 0x00, 0x02, b'n', b'o',
    ];
    let Packet::PubRel(r) = canonical(&bytes, Some(V5)) else {
        panic!()
    };
    assert_eq!(
        (r.reason, r.properties.reason_string.as_deref()),
        (0x92, Some("no"))
    );
}

#[test]
fn pubrel_in_v31_may_carry_dup() {
    assert_eq!(
        ok(&[0x6A, 0x02, 0x00, 0x01], Some(V31)),
        Packet::PubRel(PubResp::new(1))
    );
    assert!(matches!(
        err(&[0x6A, 0x02, 0x00, 0x01], Some(V311)),
        DecodeError::InvalidFlags { .. }
    ));
}
