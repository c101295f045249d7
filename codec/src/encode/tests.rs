//! Encoder tests: short forms, 3.x versus 5.0, exact lengths, patched PUBLISHes.

use super::*;
use crate::packet::{
    Auth, ConnAck, Connect, Disconnect, PubResp, Publish, QoS, SubAck, Subscribe, UnsubAck, Will,
};
use crate::properties::PropertiesPatch;
use crate::{decode, reason};
use bytes::{Bytes, BytesMut};
use ProtocolVersion::{V31, V311, V5};

#[test]
fn a_patched_publish_ref_encodes_as_the_patched_publish() {
    let stored = Publish {
        qos: QoS::AtLeastOnce,
        topic: "a/b".into(),
        packet_id: 7,
        properties: Properties {
            message_expiry_interval: Some(60),
            content_type: Some("text/plain".into()),
            user_properties: vec![("k".into(), "v".into())],
            ..Default::default()
        },
        payload: Bytes::from_static(b"hello"),
        ..Default::default()
    };
    let ids = [3u32, 200];
    let mut r = PublishRef::new(&stored);
    r.dup = true;
    r.topic = b"";
    r.patch = PropertiesPatch {
        message_expiry_interval: Some(59),
        subscription_identifiers: Some(&ids),
        topic_alias: Some(2),
    };
    let mut expected = stored.clone();
    expected.dup = true;
    expected.topic = "".into();
    expected.properties.message_expiry_interval = Some(59);
    expected.properties.subscription_identifiers = ids.to_vec();
    expected.properties.topic_alias = Some(2);
    for version in [V311, V5] {
        let mut out = BytesMut::new();
        let n = encode_publish(&r, version, &mut out);
        assert_eq!(n, publish_encoded_len(&r, version));
        assert_eq!(
            &out[..],
            &enc(&Packet::Publish(expected.clone()), version)[..]
        );
    }
    let mut out = BytesMut::new();
    encode_publish(&PublishRef::new(&stored), V5, &mut out);
    assert_eq!(
        &out[..],
        &enc(&Packet::Publish(stored), V5)[..],
        "unpatched"
    );
}

fn enc(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
    let mut out = BytesMut::new();
    let n = encode(packet, version, &mut out);
    assert_eq!(n, out.len());
    assert_eq!(n, encoded_len(packet, version));
    out.to_vec()
}

fn with_reason_string() -> Properties {
    Properties {
        reason_string: Some("why".into()),
        ..Properties::default()
    }
}

#[test]
fn v3_connack_is_two_bytes_whatever_the_properties() {
    let ack = Packet::ConnAck(ConnAck {
        session_present: true,
        code: reason::v3::NOT_AUTHORIZED,
        properties: with_reason_string(),
    });
    for v in [V31, V311] {
        assert_eq!(enc(&ack, v), [0x20, 0x02, 0x01, 0x05]);
    }
    assert_eq!(
        enc(&ack, V5),
        [0x20, 0x09, 0x01, 0x05, 0x06, 0x1F, 0x00, 0x03, b'w', b'h', b'y']
    );
}

#[test]
fn v3_drops_reasons_and_properties_from_acks_and_disconnect() {
    let resp = PubResp {
        packet_id: 7,
        reason: 0x10,
        properties: with_reason_string(),
    };
    assert_eq!(
        enc(&Packet::PubAck(resp.clone()), V311),
        [0x40, 0x02, 0x00, 0x07]
    );
    assert_eq!(enc(&Packet::PubRel(resp), V311), [0x62, 0x02, 0x00, 0x07]);
    let d = Disconnect {
        reason: 0x8E,
        properties: with_reason_string(),
    };
    assert_eq!(enc(&Packet::Disconnect(d), V311), [0xE0, 0x00]);
    let u = UnsubAck {
        packet_id: 3,
        codes: vec![0, 0x11],
        properties: with_reason_string(),
    };
    assert_eq!(enc(&Packet::UnsubAck(u), V311), [0xB0, 0x02, 0x00, 0x03]);
    let s = SubAck {
        packet_id: 3,
        codes: vec![1, 0x80],
        properties: with_reason_string(),
    };
    assert_eq!(
        enc(&Packet::SubAck(s), V311),
        [0x90, 0x04, 0x00, 0x03, 0x01, 0x80]
    );
}

#[test]
fn v5_uses_short_forms_3_4_2_1_and_3_14_2_1() {
    assert_eq!(
        enc(&Packet::PubComp(PubResp::new(1)), V5),
        [0x70, 0x02, 0x00, 0x01]
    );
    let r = PubResp {
        packet_id: 1,
        reason: 0x10,
        properties: Properties::default(),
    };
    assert_eq!(enc(&Packet::PubAck(r), V5), [0x40, 0x03, 0x00, 0x01, 0x10]);
    assert_eq!(
        enc(&Packet::Disconnect(Disconnect::default()), V5),
        [0xE0, 0x00]
    );
    let d = Disconnect {
        reason: 0x04,
        properties: Properties::default(),
    };
    assert_eq!(enc(&Packet::Disconnect(d), V5), [0xE0, 0x01, 0x04]);
    assert_eq!(enc(&Packet::Auth(Auth::default()), V5), [0xF0, 0x00]);
    // Reason 0 with properties needs the reason byte.
    let r = PubResp {
        packet_id: 1,
        reason: 0,
        properties: with_reason_string(),
    };
    assert_eq!(
        enc(&Packet::PubRec(r), V5),
        [0x50, 0x0A, 0x00, 0x01, 0x00, 0x06, 0x1F, 0x00, 0x03, b'w', b'h', b'y']
    );
}

#[test]
fn auth_does_not_exist_before_v5() {
    let mut out = BytesMut::from(&b"xy"[..]);
    assert_eq!(encode(&Packet::Auth(Auth::default()), V311, &mut out), 0);
    assert_eq!(encoded_len(&Packet::Auth(Auth::default()), V31), 0);
    assert_eq!(&out[..], b"xy");
}

#[test]
fn v3_subscribe_carries_the_requested_qos_only() {
    let opts = SubOptions {
        qos: QoS::AtLeastOnce,
        no_local: true,
        retain_as_published: true,
        retain_handling: RetainHandling::SendIfNew,
    };
    let sub = Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![("a".into(), opts)],
        properties: Properties::default(),
    });
    assert_eq!(
        enc(&sub, V311),
        [0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x01]
    );
    assert_eq!(
        enc(&sub, V5),
        [0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x1D]
    );
}

#[test]
fn connect_uses_its_own_version_name_and_level_mqtt_3_1_2_1() {
    let mut c = Connect {
        version: V31,
        clean_start: true,
        keep_alive: 30,
        client_id: "id".into(),
        will: Some(Will {
            topic: "w".into(),
            payload: Bytes::from_static(b"x"),
            qos: QoS::ExactlyOnce,
            retain: false,
            properties: Properties::default(),
        }),
        username: None,
        password: None,
        properties: Properties {
            session_expiry_interval: Some(1),
            ..Default::default()
        },
    };
    let v31 = [
        0x10, 0x16, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x16, 0x00, 0x1E, 0x00,
        0x02, b'i', b'd', 0x00, 0x01, b'w', 0x00, 0x01, b'x',
    ];
    // The `version` argument does not matter for CONNECT.
    assert_eq!(enc(&Packet::Connect(c.clone()), V5), v31);
    c.version = V5;
    let bytes = enc(&Packet::Connect(c.clone()), V311);
    assert_eq!(&bytes[2..9], &[0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05]);
    let mut buf = BytesMut::from(&bytes[..]);
    assert_eq!(decode(&mut buf, None, 0), Ok(Some(Packet::Connect(c))));
}

#[test]
fn remaining_length_uses_the_fewest_bytes_mqtt_1_5_5_1() {
    // (body length, fixed header length): a 1-byte type and 1 to 4 length bytes.
    for (body, header) in [
        (3usize, 2usize),
        (127, 2),
        (128, 3),
        (16_383, 3),
        (16_384, 4),
        (2_097_152, 5),
    ] {
        // Topic "t" takes 3 bytes of the body.
        let p = Packet::Publish(Publish {
            topic: "t".into(),
            payload: Bytes::from(vec![0u8; body - 3]),
            ..Publish::default()
        });
        assert_eq!(encoded_len(&p, V311), header + body, "{body}");
    }
    let mut out = BytesMut::new();
    for v in [
        0usize,
        127,
        128,
        16_383,
        16_384,
        2_097_151,
        2_097_152,
        268_435_455,
    ] {
        out.clear();
        put_var_int(&mut out, v);
        assert_eq!(out.len(), var_int_len(v));
        assert_ne!(out[out.len() - 1] & 0x80, 0x80);
    }
}

#[test]
fn encode_appends_without_reallocating_a_buffer_that_has_room() {
    let p = Packet::Publish(Publish {
        qos: QoS::AtLeastOnce,
        packet_id: 9,
        topic: "a/b".into(),
        payload: Bytes::from_static(b"hello"),
        properties: Properties {
            subscription_identifiers: vec![1, 300],
            user_properties: vec![("k".into(), "v".into())],
            ..Properties::default()
        },
        ..Publish::default()
    });
    let mut out = BytesMut::with_capacity(256);
    out.extend_from_slice(b"prev");
    let ptr = out.as_ptr();
    let n = encode(&p, V5, &mut out);
    assert_eq!(out.as_ptr(), ptr, "no reallocation");
    assert_eq!(&out[..4], b"prev");
    assert_eq!(out.len(), 4 + n);
    let mut frame = out.split_off(4);
    assert_eq!(decode(&mut frame, Some(V5), 0), Ok(Some(p)));
}
