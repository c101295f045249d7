//! Decoder tests: the fixed header and frame (2.1): packet types, flags, remaining length,
//! the first packet; the body-less packets PINGREQ, PINGRESP, DISCONNECT and AUTH; error
//! texts.

use super::*;

#[test]
fn ping_and_disconnect_have_no_body() {
    for v in ALL {
        assert_eq!(canonical(&[0xC0, 0x00], v), Packet::PingReq);
        assert_eq!(canonical(&[0xD0, 0x00], v), Packet::PingResp);
        assert_eq!(
            canonical(&[0xE0, 0x00], v),
            Packet::Disconnect(Disconnect::default())
        );
        assert_eq!(err(&[0xC0, 0x01, 0x00], v), DecodeError::TrailingBytes);
    }
    assert_eq!(
        err(&[0xE0, 0x01, 0x00], Some(V311)),
        DecodeError::TrailingBytes
    );
}

#[test]
fn disconnect_v5_reason_and_properties_3_14_2_1() {
    let p = canonical(&[0xE0, 0x01, 0x04], Some(V5));
    assert_eq!(
        p,
        Packet::Disconnect(Disconnect {
            reason: 4,
            ..Default::default()
        })
    );
    let bytes = [0xE0, 0x07, 0x8E, 0x05, 0x11, 0x00, 0x00, 0x00, 0x00];
    let Packet::Disconnect(d) = canonical(&bytes, Some(V5)) else {
        panic!()
    };
    assert_eq!(
        (d.reason, d.properties.session_expiry_interval),
        (0x8E, Some(0))
    );
}

#[test]
fn auth_is_v5_only_3_15() {
    assert_eq!(
        canonical(&[0xF0, 0x00], Some(V5)),
        Packet::Auth(Auth::default())
    );
    let bytes = [0xF0, 0x06, 0x18, 0x04, 0x15, 0x00, 0x01, b'm'];
    let Packet::Auth(a) = canonical(&bytes, Some(V5)) else {
        panic!()
    };
    assert_eq!(
        (a.reason, a.properties.authentication_method.as_deref()),
        (0x18, Some("m"))
    );
    for v in [None, Some(V31), Some(V311)] {
        assert_eq!(err(&[0xF0, 0x00], v), DecodeError::InvalidPacketType(15));
    }
}

#[test]
fn packet_type_0_is_invalid() {
    for v in ALL {
        assert_eq!(err(&[0x00, 0x00], v), DecodeError::InvalidPacketType(0));
    }
}

#[test]
fn reserved_fixed_header_flags_are_checked_mqtt_2_2_2_1_and_2() {
    for v in ALL {
        for t in [1u8, 2, 4, 5, 7, 9, 11, 12, 13, 14] {
            for flags in [0x1, 0x2, 0x8] {
                let e = err(&[t << 4 | flags], v);
                assert_eq!(
                    e,
                    DecodeError::InvalidFlags {
                        packet_type: t,
                        flags
                    }
                );
            }
        }
        for t in [6u8, 8, 10] {
            for flags in [0x0, 0x3, 0x6] {
                let e = err(&[t << 4 | flags], v);
                assert_eq!(
                    e,
                    DecodeError::InvalidFlags {
                        packet_type: t,
                        flags
                    }
                );
            }
        }
    }
    assert!(matches!(
        err(&[0xF1], Some(V5)),
        DecodeError::InvalidFlags { .. }
    ));
}

#[test]
fn remaining_length_is_at_most_4_bytes_and_minimal_mqtt_1_5_5_1() {
    for v in ALL {
        assert_eq!(
            err(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F], v),
            DecodeError::MalformedVarInt
        );
        assert_eq!(
            err(&[0x30, 0xFF, 0xFF, 0xFF, 0x80], v),
            DecodeError::MalformedVarInt
        );
        assert_eq!(err(&[0xC0, 0x80, 0x00], v), DecodeError::MalformedVarInt);
        // Four bytes with the last continuation bit clear is only incomplete.
        let mut buf = BytesMut::from(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F][..]);
        assert_eq!(decode(&mut buf, v, 0), Ok(None));
    }
}

#[test]
fn remaining_length_boundaries_decode() {
    for len in [0usize, 127, 128, 16_383, 16_384] {
        let mut body = vec![0x00, 0x01, b'a'];
        body.resize(3 + len, 7);
        let bytes = frame(0x30, &body);
        let Packet::Publish(p) = canonical(&bytes, Some(V311)) else {
            panic!()
        };
        assert_eq!(p.payload.len(), len);
    }
}

#[test]
fn frame_size_needs_the_whole_fixed_header() {
    assert_eq!(frame_size(&[]), None);
    assert_eq!(frame_size(&[0x30]), None);
    assert_eq!(frame_size(&[0x30, 0x80]), None, "length continues");
    assert_eq!(frame_size(&[0x30, 0x05]), Some(7));
    // 8 MiB: 0x80 0x80 0x80 0x04.
    assert_eq!(
        frame_size(&[0x30, 0x80, 0x80, 0x80, 0x04]),
        Some(1 + 4 + 8 * 1024 * 1024)
    );
    assert_eq!(frame_size(&[0x30, 0x80, 0x00]), None, "not minimal");
}

#[test]
fn first_packet_must_be_connect_mqtt_3_1_0_1() {
    assert_eq!(check_first_packet(&[]), Ok(()));
    assert_eq!(check_first_packet(&[0x10]), Ok(()));
    for first in [0x30u8, 0xC0, 0x82, 0x00, 0xF0] {
        assert!(check_first_packet(&[first]).is_err(), "{first:#04x}");
    }
}

#[test]
fn connect_level_is_read_from_the_header_only() {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0, 0, 0];
    body.extend_from_slice(&[1, 0x21, 0, 0]); // receive maximum 0: invalid
    let bytes = frame(0x10, &body);
    assert_eq!(connect_level(&bytes), Some(5));
    assert_eq!(connect_level(&bytes[..7]), None, "name not complete");
    assert_eq!(connect_level(&[0x30, 0]), None, "not a CONNECT");
    assert_eq!(connect_level(&[0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]), None);
}

#[test]
fn errors_display_what_was_wrong() {
    let e = DecodeError::PropertyNotAllowed {
        id: 0x23,
        packet: "CONNECT",
    };
    assert_eq!(e.to_string(), "property 0x23 is not allowed in CONNECT");
    let e: Box<dyn std::error::Error> = Box::new(DecodeError::InvalidQoS);
    assert!(!e.to_string().is_empty());
}
