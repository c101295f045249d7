//! Writes the seed inputs of every fuzz target into `DIR/<target>/`: packets from midge's own
//! encoder (every packet type, every version), configuration, password and ACL files like the
//! README's, and a store written by midge's own store. `fuzz/README.md` says how the committed
//! corpus was made from them.
//!
//! Run: `cargo run --example seeds -- DIR` (from `fuzz/`, without sanitizers).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use midge::auth::{HashAlgorithm, PasswordHash};
use midge::index::SubscriberId;
use midge::message::{Delivery, Message};
use midge::protocol::{
    encode, Auth, ConnAck, Connect, Disconnect, Packet, Properties, ProtocolVersion, PubResp,
    Publish, QoS, RetainHandling, SubAck, SubOptions, Subscribe, UnsubAck, Unsubscribe, Will,
};
use midge::session::{OutState, Subscription};
use midge::store::{self, codec, Batch, Flow, StoredSession, SyncPolicy};

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join(name), bytes).unwrap();
}

fn props(v5: bool, rich: bool) -> Properties {
    if !v5 || !rich {
        return Properties::default();
    }
    Properties {
        content_type: Some("application/json".into()),
        correlation_data: Some(Bytes::from_static(b"\x01\x02")),
        response_topic: Some("resp/t".into()),
        user_properties: vec![("k".into(), "v".into())],
        message_expiry_interval: Some(60),
        payload_format_indicator: Some(1),
        ..Properties::default()
    }
}

/// One of every packet a connection of `version` can carry after CONNECT.
fn packets(version: ProtocolVersion) -> Vec<(&'static str, Packet)> {
    let v5 = version.is_v5();
    let opts = SubOptions {
        qos: QoS::AtLeastOnce,
        no_local: v5,
        retain_as_published: v5,
        retain_handling: if v5 {
            RetainHandling::SendIfNew
        } else {
            RetainHandling::SendAtSubscribe
        },
    };
    let mut sub_props = Properties::default();
    if v5 {
        sub_props.subscription_identifiers = vec![7];
    }
    let resp = |id| PubResp {
        packet_id: id,
        reason: if v5 { 0x10 } else { 0 },
        properties: if v5 {
            Properties {
                reason_string: Some("why".into()),
                ..Properties::default()
            }
        } else {
            Properties::default()
        },
    };
    let mut out = vec![
        (
            "connack",
            Packet::ConnAck(ConnAck {
                session_present: true,
                code: 0,
                properties: if v5 {
                    Properties {
                        receive_maximum: Some(20),
                        maximum_packet_size: Some(1 << 20),
                        topic_alias_maximum: Some(10),
                        assigned_client_identifier: Some("auto-1".into()),
                        ..Properties::default()
                    }
                } else {
                    Properties::default()
                },
            }),
        ),
        (
            "publish0",
            Packet::Publish(Publish {
                topic: "sensors/room1/temp".into(),
                payload: Bytes::from_static(b"21.5"),
                ..Publish::default()
            }),
        ),
        (
            "publish1",
            Packet::Publish(Publish {
                qos: QoS::AtLeastOnce,
                retain: true,
                topic: "a/b".into(),
                packet_id: 1,
                properties: props(v5, true),
                payload: Bytes::from_static(b"hello"),
                ..Publish::default()
            }),
        ),
        (
            "publish2",
            Packet::Publish(Publish {
                dup: true,
                qos: QoS::ExactlyOnce,
                topic: "a/c".into(),
                packet_id: 2,
                properties: if v5 {
                    Properties {
                        topic_alias: Some(3),
                        ..Properties::default()
                    }
                } else {
                    Properties::default()
                },
                payload: Bytes::from_static(b"x"),
                ..Publish::default()
            }),
        ),
        ("puback", Packet::PubAck(resp(1))),
        ("pubrec", Packet::PubRec(resp(2))),
        ("pubrel", Packet::PubRel(resp(2))),
        ("pubcomp", Packet::PubComp(resp(2))),
        (
            "subscribe",
            Packet::Subscribe(Subscribe {
                packet_id: 3,
                filters: vec![
                    ("a/+/c".into(), opts),
                    ("$share/g/b/#".into(), SubOptions::default()),
                    ("#".into(), opts),
                ],
                properties: sub_props,
            }),
        ),
        (
            "suback",
            Packet::SubAck(SubAck {
                packet_id: 3,
                codes: vec![1, 0, 0x80],
                properties: Properties::default(),
            }),
        ),
        (
            "unsubscribe",
            Packet::Unsubscribe(Unsubscribe {
                packet_id: 4,
                filters: vec!["a/+/c".into(), "#".into()],
                properties: Properties::default(),
            }),
        ),
        (
            "unsuback",
            Packet::UnsubAck(UnsubAck {
                packet_id: 4,
                codes: if v5 { vec![0, 0x11] } else { vec![] },
                properties: Properties::default(),
            }),
        ),
        ("pingreq", Packet::PingReq),
        ("pingresp", Packet::PingResp),
        (
            "disconnect",
            Packet::Disconnect(Disconnect {
                reason: if v5 { 4 } else { 0 },
                properties: if v5 {
                    Properties {
                        session_expiry_interval: Some(0),
                        ..Properties::default()
                    }
                } else {
                    Properties::default()
                },
            }),
        ),
    ];
    if v5 {
        out.push((
            "auth",
            Packet::Auth(Auth {
                reason: 0x18,
                properties: Properties {
                    authentication_method: Some("SCRAM-SHA-1".into()),
                    authentication_data: Some(Bytes::from_static(b"data")),
                    ..Properties::default()
                },
            }),
        ));
    }
    out
}

fn connect(version: ProtocolVersion, full: bool) -> Packet {
    let v5 = version.is_v5();
    Packet::Connect(Connect {
        version,
        clean_start: !full,
        keep_alive: 60,
        client_id: if full { "client-1".into() } else { "".into() },
        will: full.then(|| Will {
            topic: "will/topic".into(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: if v5 {
                Properties {
                    will_delay_interval: Some(5),
                    ..Properties::default()
                }
            } else {
                Properties::default()
            },
        }),
        username: full.then(|| "alice".into()),
        password: full.then(|| Bytes::from_static(b"secret")),
        properties: if v5 && full {
            Properties {
                session_expiry_interval: Some(3600),
                receive_maximum: Some(10),
                maximum_packet_size: Some(65536),
                topic_alias_maximum: Some(5),
                request_response_information: Some(1),
                user_properties: vec![("a".into(), "b".into())],
                ..Properties::default()
            }
        } else {
            Properties::default()
        },
    })
}

fn enc(p: &Packet, v: ProtocolVersion) -> Vec<u8> {
    let mut b = BytesMut::new();
    encode(p, v, &mut b);
    b.to_vec()
}

fn codec_seeds(dir: &Path) {
    // codec_v3 mode byte: 0 = before CONNECT, 1 = 3.1, 2 = 3.1.1 (+0x80: small maximum size).
    for (version, mode, tag) in [
        (ProtocolVersion::V31, 1u8, "v31"),
        (ProtocolVersion::V311, 2, "v311"),
    ] {
        let mut session = vec![0u8];
        session.extend(enc(&connect(version, true), version));
        for (name, p) in packets(version) {
            let bytes = enc(&p, version);
            session.extend(&bytes);
            let mut one = vec![mode];
            one.extend(&bytes);
            write(dir, "codec_v3", &format!("{tag}-{name}"), &one);
        }
        write(dir, "codec_v3", &format!("{tag}-session"), &session);
        let mut c = vec![0u8];
        c.extend(enc(&connect(version, false), version));
        write(dir, "codec_v3", &format!("{tag}-connect-min"), &c);
        let mut small = vec![0x80 | mode];
        small.extend(enc(&packets(version)[2].1, version));
        write(dir, "codec_v3", &format!("{tag}-too-large"), &small);
    }
    // codec_v5 mode byte: 0 = before CONNECT, 1 = 5.0.
    let v = ProtocolVersion::V5;
    let mut session = vec![0u8];
    session.extend(enc(&connect(v, true), v));
    for (name, p) in packets(v) {
        let bytes = enc(&p, v);
        session.extend(&bytes);
        let mut one = vec![1u8];
        one.extend(&bytes);
        write(dir, "codec_v5", &format!("v5-{name}"), &one);
    }
    write(dir, "codec_v5", "v5-session", &session);
    let mut c = vec![0u8];
    c.extend(enc(&connect(v, false), v));
    write(dir, "codec_v5", "v5-connect-min", &c);
}

const CONFIGS: &[(&str, &str)] = &[
    ("empty", ""),
    (
        "listeners",
        "# midge\nlistener 1883 127.0.0.1\nlistener 1884\nallow_anonymous true\n\
         per_listener_settings false\nmax_keepalive 120\nmax_inflight_messages 20\n\
         max_queued_messages 1000\nmax_queued_bytes 0\nmax_packet_size 1048576\n\
         message_size_limit 0\nretain_available true\nlog_dest stdout\nlog_type all\n\
         shards 2\nmax_qos 2\nmax_topic_alias 10\nconnection_rate_limit 0\n\
         read_buffer_growth 8388608\ntopic_alias_to_clients true\n\
         response_information resp/info\nserver_reference other:1883\n",
    ),
    (
        "persistence",
        "persistence true\npersistence_location /var/lib/midge/\n\
         persistence_sync interval 100\nautosave_interval 1800\npersistence_file x.db\n",
    ),
    (
        "tls",
        "listener 8883 0.0.0.0\ncertfile /etc/midge/server.pem\nkeyfile  /etc/midge/server.key\n\
         cafile   /etc/midge/ca.pem\nrequire_certificate true\nuse_identity_as_username true\n\
         tls_version tlsv1.3\npassword_file /etc/midge/passwd\nacl_file /etc/midge/acl\n\
         allow_anonymous false\n",
    ),
    (
        "per-listener",
        "per_listener_settings true\nlistener 1883\nallow_anonymous true\n\
         listener 1884 ::1\nsocket_domain ipv6\npassword_file p\nallow_anonymous false\n\
         max_connections 100\nciphers TLS13_AES_128_GCM_SHA256\n",
    ),
    ("bad", "listener 99999\nnot_an_option 1\n"),
];

const PASSWD_PLAIN: &[(&str, &str)] = &[("alice", "secret"), ("bob", ""), ("c:d", "x")];

fn auth_seeds(dir: &Path) {
    for (name, text) in CONFIGS {
        write(dir, "config", name, text.as_bytes());
    }
    let mut file = String::from("# users\n\n");
    for (i, (user, pw)) in PASSWD_PLAIN.iter().enumerate() {
        let alg = if i % 2 == 0 {
            HashAlgorithm::Sha512Pbkdf2 { iterations: 101 }
        } else {
            HashAlgorithm::Sha512
        };
        let h = PasswordHash::with_salt(pw.as_bytes(), alg, vec![i as u8; 12]);
        let user = user.replace(':', "_");
        file.push_str(&format!("{user}:{h}\n"));
        write(
            dir,
            "passwd",
            &format!("one-{i}"),
            format!("{user}:{h}\n").as_bytes(),
        );
    }
    write(dir, "passwd", "file", file.as_bytes());
    write(dir, "passwd", "plain", b"alice:secret\nbob:pw\n");
    write(dir, "passwd", "dup", b"a:$6$AAAA$AAAA\na:$6$AAAA$AAAA\r\n");

    let acl = "# anonymous\ntopic read public/#\n\nuser alice\ntopic readwrite alice/#\n\
               topic deny alice/secret\ntopic sensors/+/temp\n\nuser bob\ntopic write bob/+\n\
               pattern read devices/%c/#\npattern write users/%u/out\npattern deny %u/#\n";
    write(
        dir,
        "acl",
        "alice",
        format!("{acl}\0client-1\0alice\0alice/x\0alice/secret\0public/a\0devices/client-1/t\0$share/g/alice/#").as_bytes(),
    );
    write(
        dir,
        "acl",
        "anon",
        format!("{acl}\0c2\0\0public/news\0users//out").as_bytes(),
    );
    write(
        dir,
        "acl",
        "dangerous",
        format!("{acl}\0c+\0u#\0devices/c+/t").as_bytes(),
    );
    write(dir, "acl", "bad", b"user\ntopic nope a/b\n\0c\0u\0a");
}

fn store_seeds(dir: &Path) {
    let tmp = std::env::temp_dir().join(format!("midge-seeds-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    {
        let s = store::open(&tmp, SyncPolicy::Os).unwrap();
        s.load().unwrap();
        let msg = |topic: &str, qos| {
            Arc::new(Message {
                topic: topic.into(),
                payload: Bytes::from_static(b"payload"),
                qos,
                retain: true,
                properties: props(true, true),
                expires_at: Some(Instant::now() + Duration::from_secs(3600)),
                origin: Some(SubscriberId {
                    shard: 0,
                    slot: 1,
                    generation: 2,
                }),
            })
        };
        let session = StoredSession {
            expiry_interval: 3600,
            expires_at: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000)),
            version: ProtocolVersion::V5,
            subscriptions: vec![
                (
                    "a/+".into(),
                    Subscription {
                        options: SubOptions {
                            qos: QoS::ExactlyOnce,
                            no_local: true,
                            retain_as_published: true,
                            retain_handling: RetainHandling::DoNotSend,
                        },
                        identifier: Some(42),
                    },
                ),
                (
                    "$share/g/b/#".into(),
                    Subscription {
                        options: SubOptions::default(),
                        identifier: None,
                    },
                ),
            ],
            pending_will: Some((
                SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_001),
                Will {
                    topic: "will/t".into(),
                    payload: Bytes::from_static(b"bye"),
                    qos: QoS::AtLeastOnce,
                    retain: true,
                    properties: props(true, true),
                },
            )),
        };
        let c1 = "client-1".into();
        let c2 = "client-2".into();
        let mut b = Batch::new();
        b.put_retained(&msg("r/1", QoS::AtLeastOnce), 0);
        b.put_retained(&msg("r/2", QoS::AtMostOnce), 0);
        b.put_session(&c1, &session);
        b.put_session(
            &c2,
            &StoredSession {
                version: ProtocolVersion::V311,
                pending_will: None,
                ..session.clone()
            },
        );
        let m = msg("a/b", QoS::ExactlyOnce);
        let mut d = Delivery::new(m.clone(), QoS::AtLeastOnce, false);
        d.subscription_ids.push(42);
        d.shared = Some("$share/g/a/+".into());
        b.put_queued(&c1, 1, &d, None);
        b.put_queued(
            &c2,
            1,
            &d,
            Some(Flow {
                packet_id: 7,
                state: OutState::AwaitPubAck,
            }),
        );
        b.put_queued(
            &c1,
            2,
            &Delivery::new(msg("a/c", QoS::ExactlyOnce), QoS::ExactlyOnce, true),
            Some(Flow {
                packet_id: 8,
                state: OutState::AwaitPubRec,
            }),
        );
        b.put_incoming_qos2(&c1, 5);
        b.put_incoming_qos2(&c1, 6);
        s.commit(&mut b).unwrap();
        let mut b = Batch::new();
        b.update_queued(
            &c1,
            2,
            Some(Flow {
                packet_id: 8,
                state: OutState::AwaitPubComp,
            }),
        );
        b.delete_queued(&c2, 1);
        b.delete_incoming_qos2(&c1, 6);
        b.delete_retained(&"r/2".into(), 0);
        s.commit(&mut b).unwrap();
        let mut b = Batch::new();
        b.delete_session(&c2);
        s.commit(&mut b).unwrap();
    }
    let file: PathBuf = fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "mlog"))
        .unwrap();
    let bytes = fs::read(&file).unwrap();
    let generation = codec::check_header(&bytes).unwrap();
    // The target writes generation 1's file name.
    let mut raw = codec::header(1).to_vec();
    raw.extend_from_slice(&bytes[codec::HEADER_LEN..]);
    // Strip the preallocated zeros: the valid frames, then stop.
    let mut at = codec::HEADER_LEN;
    let mut framed = vec![1u8];
    while let codec::Frame::Ok(payload, len) = codec::next_frame(&raw[at..]) {
        if payload.len() <= usize::from(u16::MAX) {
            framed.extend_from_slice(&(payload.len() as u16).to_le_bytes());
            framed.extend_from_slice(payload);
        }
        at += len;
    }
    raw.truncate(at);
    let mut mode0 = vec![0u8];
    mode0.extend_from_slice(&raw);
    write(dir, "store", "log", &mode0);
    write(dir, "store", "frames", &framed);
    let mut torn = mode0.clone();
    torn.truncate(torn.len() - 3);
    write(dir, "store", "torn", &torn);
    write(dir, "store", "empty", &[0u8]);
    let _ = generation;
    fs::remove_dir_all(&tmp).unwrap();
}

/// `web`: byte 0 % 4 = 0 a WebSocket request head, 1 a metrics request head, 2-3 frames (bits
/// 2-3: the size bound, 4-7: the read size). Heads as browsers, MQTT.js and Prometheus send
/// them and GETs of files; frames as a browser masks them: data split over frames, a ping
/// between fragments, a close.
fn web_seeds(dir: &Path) {
    let upgrade = b"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\
X-Forwarded-For: 10.0.0.1, 192.0.2.7\r\n\r\n";
    let mut head = vec![0u8];
    head.extend_from_slice(upgrade);
    write(dir, "web", "upgrade", &head);
    for (name, target) in [
        ("get-index", "/index.html"),
        ("get-sub", "/sub/a.js?v=1"),
        ("get-escaped", "/%2e%2e/secret.txt"),
        ("get-link", "/link"),
    ] {
        let mut get = vec![0u8];
        get.extend_from_slice(format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        write(dir, "web", name, &get);
    }
    let frame = |fin: bool, op: u8, payload: &[u8]| {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut f = vec![if fin { 0x80 } else { 0 } | op];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    };
    let connect = enc(
        &connect(ProtocolVersion::V311, false),
        ProtocolVersion::V311,
    );
    for (name, head) in [
        ("scrape", "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9234\r\nUser-Agent: Prometheus/2.45.0\r\nAccept: text/plain;version=0.0.4\r\n\r\n"),
        ("scrape-10", "\r\nGET /metrics?x=1 HTTP/1.0\nConnection: keep-alive\n\n"),
    ] {
        let mut b = vec![1u8];
        b.extend_from_slice(head.as_bytes());
        write(dir, "web", name, &b);
    }
    let mut frames = vec![0b0010_1110];
    frames.extend(frame(false, 2, &connect[..3]));
    frames.extend(frame(true, 9, b"hi"));
    frames.extend(frame(true, 0, &connect[3..]));
    frames.extend(frame(true, 2, &[0xc0, 0]));
    frames.extend(frame(true, 8, &1000u16.to_be_bytes()));
    write(dir, "web", "frames", &frames);
    let mut big = vec![0b0000_0110];
    big.extend(frame(true, 2, &[0x30; 300]));
    write(dir, "web", "frame-300", &big);
}

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).expect("usage: seeds DIR"));
    codec_seeds(&dir);
    auth_seeds(&dir);
    store_seeds(&dir);
    web_seeds(&dir);
    println!("seeds written to {}", dir.display());
}
