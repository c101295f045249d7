//! Decoder property tests: encode -> decode gives the packet back, and arbitrary bytes never
//! panic.

use super::*;

fn arb_str() -> impl Strategy<Value = ByteStr> {
    "[a-zA-Z0-9/ $é€\u{1F600}]{0,10}".prop_map(ByteStr::from)
}

fn arb_topic() -> impl Strategy<Value = ByteStr> {
    "[a-z0-9/$ é]{1,10}".prop_map(ByteStr::from)
}

fn arb_bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

/// Clears every property `ctx` does not allow.
fn keep_allowed(p: &mut Properties, ctx: Ctx) {
    let a = ctx.allowed();
    let ok = |pid: u8| a & (1 << pid) != 0;
    macro_rules! clear {
        ($($pid:ident => $field:ident),* $(,)?) => {
            $(if !ok(id::$pid) { p.$field = Default::default(); })*
        };
    }
    clear!(
        PAYLOAD_FORMAT_INDICATOR => payload_format_indicator,
        MESSAGE_EXPIRY_INTERVAL => message_expiry_interval,
        CONTENT_TYPE => content_type,
        RESPONSE_TOPIC => response_topic,
        CORRELATION_DATA => correlation_data,
        SUBSCRIPTION_IDENTIFIER => subscription_identifiers,
        SESSION_EXPIRY_INTERVAL => session_expiry_interval,
        ASSIGNED_CLIENT_IDENTIFIER => assigned_client_identifier,
        SERVER_KEEP_ALIVE => server_keep_alive,
        AUTHENTICATION_METHOD => authentication_method,
        AUTHENTICATION_DATA => authentication_data,
        REQUEST_PROBLEM_INFORMATION => request_problem_information,
        WILL_DELAY_INTERVAL => will_delay_interval,
        REQUEST_RESPONSE_INFORMATION => request_response_information,
        RESPONSE_INFORMATION => response_information,
        SERVER_REFERENCE => server_reference,
        REASON_STRING => reason_string,
        RECEIVE_MAXIMUM => receive_maximum,
        TOPIC_ALIAS_MAXIMUM => topic_alias_maximum,
        TOPIC_ALIAS => topic_alias,
        MAXIMUM_QOS => maximum_qos,
        RETAIN_AVAILABLE => retain_available,
        USER_PROPERTY => user_properties,
        MAXIMUM_PACKET_SIZE => maximum_packet_size,
        WILDCARD_SUBSCRIPTION_AVAILABLE => wildcard_subscription_available,
        SUBSCRIPTION_IDENTIFIER_AVAILABLE => subscription_identifier_available,
        SHARED_SUBSCRIPTION_AVAILABLE => shared_subscription_available,
    );
    if ctx == Ctx::Subscribe {
        p.subscription_identifiers.truncate(1);
    }
    if p.authentication_method.is_none() {
        p.authentication_data = None;
    }
}

/// Valid MQTT 5 properties for `ctx`.
fn arb_props(ctx: Ctx) -> BoxedStrategy<Properties> {
    use proptest::collection::vec;
    use proptest::option::of;
    let flag = || of(0u8..=1);
    let a = (
        flag(),
        of(any::<u32>()),
        of(arb_str()),
        of(arb_topic()),
        of(arb_bytes(6)),
        vec(1u32..=268_435_455, 0..3),
        of(any::<u32>()),
        of(arb_str()),
        of(any::<u16>()),
        of(arb_str()),
    );
    let b = (
        of(arb_bytes(6)),
        flag(),
        of(any::<u32>()),
        flag(),
        of(arb_str()),
        of(arb_str()),
        of(arb_str()),
        of(1u16..),
        of(any::<u16>()),
        of(1u16..),
    );
    let c = (
        flag(),
        flag(),
        vec((arb_str(), arb_str()), 0..3),
        of(1u32..),
        flag(),
        flag(),
        flag(),
    );
    (a, b, c)
        .prop_map(move |(a, b, c)| {
            let mut p = Properties {
                payload_format_indicator: a.0,
                message_expiry_interval: a.1,
                content_type: a.2,
                response_topic: a.3,
                correlation_data: a.4,
                subscription_identifiers: a.5,
                session_expiry_interval: a.6,
                assigned_client_identifier: a.7,
                server_keep_alive: a.8,
                authentication_method: a.9,
                authentication_data: b.0,
                request_problem_information: b.1,
                will_delay_interval: b.2,
                request_response_information: b.3,
                response_information: b.4,
                server_reference: b.5,
                reason_string: b.6,
                receive_maximum: b.7,
                topic_alias_maximum: b.8,
                topic_alias: b.9,
                maximum_qos: c.0,
                retain_available: c.1,
                user_properties: c.2,
                maximum_packet_size: c.3,
                wildcard_subscription_available: c.4,
                subscription_identifier_available: c.5,
                shared_subscription_available: c.6,
            };
            keep_allowed(&mut p, ctx);
            p
        })
        .boxed()
}

fn arb_props_for(v: ProtocolVersion, ctx: Ctx) -> BoxedStrategy<Properties> {
    if v.is_v5() {
        arb_props(ctx)
    } else {
        Just(Properties::default()).boxed()
    }
}

fn arb_qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn arb_connect(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let will = (
        arb_topic(),
        arb_bytes(8),
        arb_qos(),
        any::<bool>(),
        arb_props_for(v, Ctx::Will),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| Will {
            topic,
            payload,
            qos,
            retain,
            properties,
        });
    (
        any::<bool>(),
        any::<u16>(),
        arb_str(),
        proptest::option::of(will),
        proptest::option::of(arb_str()),
        proptest::option::of(arb_bytes(8)),
        arb_props_for(v, Ctx::Connect),
    )
        .prop_map(
            move |(
                clean_start,
                keep_alive,
                client_id,
                will,
                mut username,
                password,
                properties,
            )| {
                // 3.x: a password needs a user name [MQTT-3.1.2-22].
                if !v.is_v5() && password.is_some() && username.is_none() {
                    username = Some(ByteStr::from_static("u"));
                }
                Packet::Connect(Connect {
                    version: v,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                })
            },
        )
}

fn arb_publish(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let topic = if v.is_v5() {
        prop_oneof![3 => arb_topic(), 1 => Just(ByteStr::default())].boxed()
    } else {
        arb_topic().boxed()
    };
    (
        arb_qos(),
        any::<bool>(),
        any::<bool>(),
        topic,
        1u16..,
        arb_props_for(v, Ctx::Publish),
        arb_bytes(40),
    )
        .prop_map(|(qos, dup, retain, topic, pid, mut properties, payload)| {
            if topic.is_empty() && properties.topic_alias.is_none() {
                properties.topic_alias = Some(1);
            }
            let qos0 = qos == QoS::AtMostOnce;
            Packet::Publish(Publish {
                dup: dup && !qos0,
                qos,
                retain,
                topic,
                packet_id: if qos0 { 0 } else { pid },
                properties,
                payload,
            })
        })
}

fn arb_options(v: ProtocolVersion) -> impl Strategy<Value = SubOptions> {
    let rh = prop_oneof![
        Just(RetainHandling::SendAtSubscribe),
        Just(RetainHandling::SendIfNew),
        Just(RetainHandling::DoNotSend)
    ];
    (arb_qos(), any::<bool>(), any::<bool>(), rh).prop_map(move |(qos, nl, rap, rh)| {
        if v.is_v5() {
            SubOptions {
                qos,
                no_local: nl,
                retain_as_published: rap,
                retain_handling: rh,
            }
        } else {
            SubOptions {
                qos,
                ..SubOptions::default()
            }
        }
    })
}

/// Any packet `v` can express, valid for the decoder.
fn arb_packet(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    use proptest::collection::vec;
    let v5 = v.is_v5();
    let reason = move || {
        if v5 {
            any::<u8>().boxed()
        } else {
            Just(0u8).boxed()
        }
    };
    let pub_resp = (0..4usize, 1u16.., reason(), arb_props_for(v, Ctx::PubResp)).prop_map(
        |(kind, packet_id, reason, properties)| {
            let r = PubResp {
                packet_id,
                reason,
                properties,
            };
            [
                Packet::PubAck,
                Packet::PubRec,
                Packet::PubRel,
                Packet::PubComp,
            ][kind](r)
        },
    );
    let connack = (
        any::<bool>(),
        if v5 {
            any::<u8>().boxed()
        } else {
            (0u8..=5).boxed()
        },
        arb_props_for(v, Ctx::ConnAck),
    )
        .prop_map(|(session_present, code, properties)| {
            Packet::ConnAck(ConnAck {
                session_present,
                code,
                properties,
            })
        });
    let subscribe = (
        1u16..,
        vec((arb_topic(), arb_options(v)), 1..4),
        arb_props_for(v, Ctx::Subscribe),
    )
        .prop_map(|(packet_id, filters, properties)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                filters,
                properties,
            })
        });
    let code = if v5 {
        any::<u8>().boxed()
    } else {
        prop::sample::select(vec![0u8, 1, 2, 0x80]).boxed()
    };
    let suback = (1u16.., vec(code, 1..4), arb_props_for(v, Ctx::SubAck)).prop_map(
        |(packet_id, codes, properties)| {
            Packet::SubAck(SubAck {
                packet_id,
                codes,
                properties,
            })
        },
    );
    let unsubscribe = (
        1u16..,
        vec(arb_topic(), 1..4),
        arb_props_for(v, Ctx::Unsubscribe),
    )
        .prop_map(|(packet_id, filters, properties)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                filters,
                properties,
            })
        });
    let unsuback = (
        1u16..,
        vec(any::<u8>(), 1..4),
        arb_props_for(v, Ctx::UnsubAck),
    )
        .prop_map(move |(packet_id, codes, properties)| {
            let codes = if v5 { codes } else { Vec::new() };
            Packet::UnsubAck(UnsubAck {
                packet_id,
                codes,
                properties,
            })
        });
    let disconnect = (reason(), arb_props_for(v, Ctx::Disconnect))
        .prop_map(|(reason, properties)| Packet::Disconnect(Disconnect { reason, properties }));
    let auth = (reason(), arb_props_for(v, Ctx::Auth))
        .prop_map(|(reason, properties)| Packet::Auth(Auth { reason, properties }));
    let mut all = vec![
        arb_connect(v).boxed(),
        connack.boxed(),
        arb_publish(v).boxed(),
        pub_resp.boxed(),
        subscribe.boxed(),
        suback.boxed(),
        unsubscribe.boxed(),
        unsuback.boxed(),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        disconnect.boxed(),
    ];
    if v5 {
        all.push(auth.boxed());
    }
    proptest::strategy::Union::new(all).boxed()
}

fn arb_versioned_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    prop_oneof![Just(V31), Just(V311), Just(V5)].prop_flat_map(|v| (Just(v), arb_packet(v)))
}

/// After a successful decode: encoding the packet and decoding it again gives it back.
fn reencodes(packet: &Packet, version: Option<ProtocolVersion>) {
    let (enc_v, dec_v) = match packet {
        Packet::Connect(c) => (c.version, None),
        _ => (version.unwrap_or(V311), version),
    };
    let mut out = BytesMut::new();
    let n = encode(packet, enc_v, &mut out);
    assert_eq!(n, out.len());
    let again = decode(&mut out, dec_v, 0);
    assert_eq!(again.as_ref(), Ok(&Some(packet.clone())));
}

/// Decodes frames off `bytes` until incomplete or an error; must never panic.
fn decode_all(bytes: &[u8], version: Option<ProtocolVersion>) {
    let mut buf = BytesMut::from(bytes);
    loop {
        let before = buf.clone();
        match decode(&mut buf, version, 0) {
            Ok(Some(packet)) => {
                assert!(buf.len() < before.len());
                reencodes(&packet, version);
            }
            Ok(None) => {
                assert_eq!(buf, before, "incomplete must consume nothing");
                return;
            }
            Err(e) => {
                let _ = e.reason_code();
                return;
            }
        }
    }
}

/// First bytes with valid type and flags for `v`.
fn valid_first_bytes(v: Option<ProtocolVersion>) -> Vec<u8> {
    let mut firsts = vec![
        0x10, 0x20, 0x40, 0x50, 0x62, 0x70, 0x82, 0x90, 0xA2, 0xB0, 0xC0, 0xD0, 0xE0,
    ];
    firsts.extend((0x30..=0x3F).filter(|b| (b >> 1) & 3 != 3));
    if v == Some(V5) {
        firsts.push(0xF0);
    }
    firsts
}

fn arb_version() -> impl Strategy<Value = Option<ProtocolVersion>> {
    prop::sample::select(ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// (a) encode -> decode gives the packet back, for every type and version; the length
    /// is what encoded_len said; every prefix is incomplete.
    #[test]
    fn round_trip((v, packet) in arb_versioned_packet(), cut in any::<prop::sample::Index>()) {
        let mut out = BytesMut::new();
        let n = encode(&packet, v, &mut out);
        prop_assert_eq!(n, out.len());
        prop_assert_eq!(n, encoded_len(&packet, v));
        let dec_v = if matches!(packet, Packet::Connect(_)) { None } else { Some(v) };
        let full = out.clone();
        let mut prefix = BytesMut::from(&full[..cut.index(n)]);
        prop_assert_eq!(decode(&mut prefix, dec_v, 0), Ok(None));
        prop_assert_eq!(prefix.len(), cut.index(n));
        // Two frames back to back come out one at a time.
        encode(&packet, v, &mut out);
        prop_assert_eq!(decode(&mut out, dec_v, 0), Ok(Some(packet.clone())));
        prop_assert_eq!(decode(&mut out, dec_v, 0), Ok(Some(packet)));
        prop_assert!(out.is_empty());
    }

    /// (b) arbitrary bytes never panic, for every version.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), v in arb_version()) {
        decode_all(&bytes, v);
    }

    /// (b) arbitrary bodies behind a valid fixed header never panic.
    #[test]
    fn arbitrary_body_behind_valid_header_never_panics(
        v in arb_version(),
        first in any::<prop::sample::Index>(),
        prefix in prop::sample::select(vec![
            &b""[..],
            b"\x00\x04MQTT\x04",
            b"\x00\x04MQTT\x05",
            b"\x00\x06MQIsdp\x03",
            b"\x00\x04MQTT\x05\x02\x00\x00",
            b"\x00\x01a",
            b"\x00\x01a\x00\x01",
            b"\x00\x01",
        ]),
        body in proptest::collection::vec(any::<u8>(), 0..100),
    ) {
        let firsts = valid_first_bytes(v);
        let mut full = prefix.to_vec();
        full.extend_from_slice(&body);
        decode_all(&frame(firsts[first.index(firsts.len())], &full), v);
    }

    /// (b) v5 property blocks of arbitrary bytes never panic.
    #[test]
    fn arbitrary_v5_properties_never_panic(p in proptest::collection::vec(any::<u8>(), 0..60)) {
        decode_all(&v5_publish_with(&p), Some(V5));
        let mut body = vec![0, 0];
        body.extend(props(&p));
        decode_all(&frame(0x20, &body), Some(V5));
    }
}
