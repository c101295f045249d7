//! Decoder tests: SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK (3.8-3.11).

use super::*;

/// [MQTT-4.7.1-1], [MQTT-4.7.3-1]: a misplaced wildcard or an empty filter makes
/// SUBSCRIBE and UNSUBSCRIBE malformed, in every version (0x8F in 5.0).
#[test]
fn invalid_filters_are_malformed_in_subscribe_and_unsubscribe() {
    for bad in ["a/#/b", "#/x", "a+", "a/b#", "+a", ""] {
        let mut sub = vec![0x00, 0x01];
        let mut unsub = vec![0x00, 0x01];
        for body in [&mut sub, &mut unsub] {
            body.extend_from_slice(&(bad.len() as u16).to_be_bytes());
            body.extend_from_slice(bad.as_bytes());
        }
        sub.push(0x00);
        for v in [Some(V31), Some(V311), Some(V5)] {
            let props = |b: &[u8]| {
                let mut b = b.to_vec();
                if v == Some(V5) {
                    b.insert(2, 0x00);
                }
                b
            };
            let e = err(&frame(0x82, &props(&sub)), v);
            assert_eq!(
                e,
                DecodeError::TopicFilterInvalid,
                "SUBSCRIBE {bad:?} {v:?}"
            );
            assert_eq!(e.reason_code(), rc::TOPIC_FILTER_INVALID);
            let e = err(&frame(0xA2, &props(&unsub)), v);
            assert_eq!(
                e,
                DecodeError::TopicFilterInvalid,
                "UNSUBSCRIBE {bad:?} {v:?}"
            );
        }
    }
}

#[test]
fn subscribe_v311_mqtt_3_8() {
    let bytes = [
        0x82, 0x0C, 0x00, 0x0A, 0x00, 0x03, b'a', b'/', b'b', 0x01, 0x00, 0x01, b'#', 0x02,
    ];
    let Packet::Subscribe(sub) = canonical(&bytes, Some(V311)) else {
        panic!()
    };
    assert_eq!(sub.packet_id, 10);
    assert_eq!(sub.filters.len(), 2);
    assert_eq!(
        (&*sub.filters[0].0, sub.filters[0].1.qos),
        ("a/b", QoS::AtLeastOnce)
    );
    assert_eq!(
        (&*sub.filters[1].0, sub.filters[1].1.qos),
        ("#", QoS::ExactlyOnce)
    );
}

#[test]
fn subscribe_v5_options_and_subscription_identifier() {
    let bytes = [
        0x82, 0x0B, 0x00, 0x0A, 0x02, 0x0B, 0x07, 0x00, 0x03, b'a', b'/', b'b', 0x2D,
    ];
    let Packet::Subscribe(sub) = canonical(&bytes, Some(V5)) else {
        panic!()
    };
    assert_eq!(sub.properties.subscription_identifiers, vec![7]);
    assert_eq!(
        sub.filters[0].1,
        SubOptions {
            qos: QoS::AtLeastOnce,
            no_local: true,
            retain_as_published: true,
            retain_handling: RetainHandling::DoNotSend,
        }
    );
}

#[test]
fn subscribe_without_filter_is_a_protocol_error_mqtt_3_8_3_3() {
    for v in ALL {
        let body: &[u8] = if v == Some(V5) { &[0, 1, 0] } else { &[0, 1] };
        let e = err(&frame(0x82, body), v);
        assert!(matches!(e, DecodeError::ProtocolError(_)), "{v:?}");
        assert_eq!(e.reason_code(), rc::PROTOCOL_ERROR);
    }
}

#[test]
fn subscribe_option_reserved_bits_mqtt_3_8_3_4_and_5() {
    let sub = |v5: bool, opt: u8| {
        let mut body = vec![0, 1];
        if v5 {
            body.push(0);
        }
        body.extend_from_slice(&[0, 1, b'a', opt]);
        frame(0x82, &body)
    };
    // 3.x: upper 6 bits reserved.
    for opt in [0x04, 0x08, 0x10, 0x80] {
        assert!(matches!(
            err(&sub(false, opt), Some(V311)),
            DecodeError::Malformed(_)
        ));
    }
    // 5.0: bits 6-7 reserved, retain handling 3 malformed.
    for opt in [0x40, 0x80, 0x30] {
        assert!(matches!(
            err(&sub(true, opt), Some(V5)),
            DecodeError::Malformed(_)
        ));
    }
    assert_eq!(err(&sub(false, 3), Some(V311)), DecodeError::InvalidQoS);
    assert_eq!(err(&sub(true, 3), Some(V5)), DecodeError::InvalidQoS);
    // Filters are not validated here: the broker answers an invalid one in SUBACK.
    assert!(
        ok(
            &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'#', 0x00],
            Some(V311)
        ) != Packet::PingReq
    );
}

#[test]
fn subscribe_and_unsubscribe_packet_id_zero_mqtt_2_3_1_1() {
    assert_eq!(
        err(&[0x82, 0x06, 0, 0, 0, 1, b'a', 0], None),
        DecodeError::ZeroPacketId
    );
    assert_eq!(
        err(&[0xA2, 0x05, 0, 0, 0, 1, b'a'], None),
        DecodeError::ZeroPacketId
    );
    assert_eq!(err(&[0x90, 0x03, 0, 0, 0], None), DecodeError::ZeroPacketId);
}

#[test]
fn suback_v311_v5() {
    let p = canonical(&[0x90, 0x04, 0x00, 0x0A, 0x01, 0x80], Some(V311));
    assert_eq!(
        p,
        Packet::SubAck(SubAck {
            packet_id: 10,
            codes: vec![1, 0x80],
            ..Default::default()
        })
    );
    let p = canonical(&[0x90, 0x04, 0x00, 0x0A, 0x00, 0x8F], Some(V5));
    assert_eq!(
        p,
        Packet::SubAck(SubAck {
            packet_id: 10,
            codes: vec![0x8F],
            ..Default::default()
        })
    );
    // 3.1.1 return codes other than 0, 1, 2, 0x80 are reserved [MQTT-3.9.3-2].
    assert!(matches!(
        err(&[0x90, 0x03, 0x00, 0x0A, 0x03], Some(V311)),
        DecodeError::Malformed(_)
    ));
    assert!(matches!(
        err(&[0x90, 0x02, 0x00, 0x0A], Some(V311)),
        DecodeError::ProtocolError(_)
    ));
}

#[test]
fn unsubscribe_v311_v5_mqtt_3_10() {
    let bytes = [0xA2, 0x07, 0x00, 0x0B, 0x00, 0x03, b'a', b'/', b'b'];
    let want = Unsubscribe {
        packet_id: 11,
        filters: vec![s("a/b")],
        ..Default::default()
    };
    assert_eq!(
        canonical(&bytes, Some(V311)),
        Packet::Unsubscribe(want.clone())
    );
    let bytes = [0xA2, 0x08, 0x00, 0x0B, 0x00, 0x00, 0x03, b'a', b'/', b'b'];
    assert_eq!(canonical(&bytes, Some(V5)), Packet::Unsubscribe(want));
}

#[test]
fn unsubscribe_without_filter_is_a_protocol_error_mqtt_3_10_3_2() {
    assert!(matches!(
        err(&[0xA2, 0x02, 0x00, 0x01], Some(V311)),
        DecodeError::ProtocolError(_)
    ));
    assert!(matches!(
        err(&[0xA2, 0x03, 0x00, 0x01, 0x00], Some(V5)),
        DecodeError::ProtocolError(_)
    ));
}

#[test]
fn unsuback_v311_is_the_packet_id_alone_and_v5_has_codes() {
    let p = canonical(&[0xB0, 0x02, 0x00, 0x0B], Some(V311));
    assert_eq!(
        p,
        Packet::UnsubAck(UnsubAck {
            packet_id: 11,
            ..Default::default()
        })
    );
    assert_eq!(
        err(&[0xB0, 0x03, 0x00, 0x0B, 0x00], Some(V311)),
        DecodeError::TrailingBytes
    );
    let p = canonical(&[0xB0, 0x05, 0x00, 0x0B, 0x00, 0x00, 0x11], Some(V5));
    assert_eq!(
        p,
        Packet::UnsubAck(UnsubAck {
            packet_id: 11,
            codes: vec![0, 0x11],
            ..Default::default()
        })
    );
}
