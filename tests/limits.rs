//! Limits with safe defaults, at the I/O level and on what a client can make the broker hold:
//! `max_packet_size` (default 1 MiB, 0 = the protocol maximum) and the 5.0 Maximum Packet Size
//! both ways, packets refused at their fixed header, `connect_timeout`,
//! `max_connections_per_ip`, large packets read intact, a client that keeps sending after its
//! connection is refused, `max_queued_bytes` and `memory_limit`. (The subscription quota and
//! topic depth: `deep_topics.rs`; slow consumers: `backpressure.rs`.)

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use common::raw::{self, tcp_stream as tcp, Connect, Raw};
use common::v5::{self, connect, opts, rc, V5};
use common::{eventually, is_midge, unique_id, Broker, STEP};
use midge::protocol::Packet;

// ---------------------------------------------------------------- packet size and the fixed header

/// A PUBLISH QoS 0 on `topic` carrying `payload`.
fn publish(topic: &str, payload: &[u8]) -> Vec<u8> {
    raw::publish(topic, payload, 0, false, 0)
}

/// A first packet that is not CONNECT is refused at its first byte: the broker does not wait
/// for the 256 MB body it announces [MQTT-3.1.0-1].
#[test]
fn a_first_packet_that_is_not_connect_is_refused_at_its_fixed_header() {
    // The protocol maximum, said in a way mosquitto accepts too.
    let b = Broker::start_with(&["max_packet_size 268435460"]);
    for first in [0x30u8, 0xC0, 0x82] {
        let mut c = Raw::tcp(b.port());
        // Remaining length 268435455, then a few bytes of body.
        c.send(&[first, 0xFF, 0xFF, 0xFF, 0x7F, 0, 1, b'a']);
        assert!(
            c.is_closed_within(Duration::from_secs(3)),
            "first byte {first:#04x}: still open"
        );
    }
    Raw::connected(b.port(), "still-serving").ping();
}

/// A CONNECT that announces more than `max_packet_size` is refused at its header.
#[test]
fn a_connect_larger_than_max_packet_size_is_refused_at_its_header() {
    let b = Broker::start_with(&["max_packet_size 1048576"]);
    let mut c = Raw::tcp(b.port());
    // CONNECT announcing 2 MiB (0x80 0x80 0x80 0x01), then the start of its body.
    c.send(&[
        0x10, 0x80, 0x80, 0x80, 0x01, 0, 4, b'M', b'Q', b'T', b'T', 4,
    ]);
    assert!(c.is_closed_within(Duration::from_secs(3)), "still open");
}

/// `max_packet_size` defaults to 1 MiB: a larger PUBLISH closes the connection and is not
/// delivered; `max_packet_size 0` is the protocol maximum.
#[test]
fn max_packet_size_defaults_to_one_mib_and_zero_means_the_protocol_maximum() {
    if !is_midge() {
        eprintln!("note: mosquitto's default is no limit");
        return;
    }
    let big = vec![7u8; 2 * 1024 * 1024];
    let b = Broker::start();
    let mut sub = Raw::subscribed(b.port(), "sub", &[("big", 0)]);
    let mut p = Raw::connected(b.port(), "pub");
    p.send(&publish("big", &[1u8; 512 * 1024]));
    assert_eq!(
        sub.expect_publish().payload.len(),
        512 * 1024,
        "under 1 MiB"
    );
    p.send(&publish("big", &big));
    assert!(p.is_closed_within(STEP), "a 2 MiB PUBLISH was accepted");
    sub.expect_nothing(Duration::from_millis(300));

    let b = Broker::start_with(&["max_packet_size 0"]);
    let mut sub = Raw::subscribed(b.port(), "sub", &[("big", 0)]);
    let mut p = Raw::connected(b.port(), "pub");
    p.send(&publish("big", &big));
    let got = sub
        .recv(Duration::from_secs(20))
        .expect("the 2 MiB message");
    assert_eq!(got.publish().payload.len(), big.len());
}

/// A 32 MB message (read into room reserved for the whole packet at its header) arrives
/// intact, and the broker keeps serving others meanwhile.
#[test]
fn a_32_mb_message_arrives_intact() {
    const SIZE: usize = 32 * 1024 * 1024;
    let b = Broker::start_with(&["max_packet_size 40000000"]);
    let port = b.port();
    let mut sub = Raw::subscribed(port, "big-sub", &[("big/one", 0)]);
    let payload: Vec<u8> = (0..SIZE).map(|i| (i * 31 % 251) as u8).collect();
    let sent = payload.clone();
    let publisher = std::thread::spawn(move || {
        let mut p = Raw::connected(port, "big-pub");
        let bytes = publish("big/one", &sent);
        // In pieces, as a slow link would deliver it.
        for chunk in bytes.chunks(1024 * 1024) {
            p.send(chunk);
        }
        p.ping();
    });
    let got = sub
        .recv(Duration::from_secs(60))
        .expect("the 32 MB message");
    publisher.join().expect("publisher");
    let got = got.publish();
    assert_eq!(got.topic, "big/one");
    assert_eq!(got.payload.len(), SIZE);
    assert!(got.payload == payload, "payload differs");
    Raw::connected(port, "bystander").ping();
}

/// A large PUBLISH that takes longer than 1.5 x keep-alive to arrive is not cut off: its
/// bytes count as activity (as in mosquitto, which updates keep-alive while more than 1000
/// bytes of a packet are still to come).
#[test]
fn a_slow_large_publish_is_not_cut_off_by_keep_alive() {
    let b = Broker::start_with(&["max_packet_size 4000000"]);
    let port = b.port();
    let mut sub = Raw::subscribed(port, "slow-sub", &[("slow/big", 0)]);
    let (mut p, _) = Raw::connect(port, &Connect::new("slow-pub").keepalive(1));
    let bytes = publish("slow/big", &vec![3u8; 2_000_000]);
    // About 3 s for the whole packet, twice the 1.5 s the keep-alive allows between packets.
    let chunks: Vec<&[u8]> = bytes.chunks(bytes.len() / 30 + 1).collect();
    for chunk in chunks {
        p.send(chunk);
        std::thread::sleep(Duration::from_millis(100));
    }
    let got = sub.recv(Duration::from_secs(10)).expect("the slow message");
    assert_eq!(got.publish().payload.len(), 2_000_000);
    p.ping();
}

/// [MQTT-3.1.2-25] A message larger than the client's Maximum Packet Size is not sent to it
/// (dropped for that client); smaller messages still are, and other clients get it.
#[test]
fn message_larger_than_client_maximum_packet_size_is_not_sent() {
    let b = Broker::start();
    let mut c = connect(&unique_id("mpsc"));
    c.properties.maximum_packet_size = Some(128);
    let (mut small, _) = V5::connect(b.port(), &c);
    small.subscribe(&[("mps/t", opts(1))]);
    let mut big = V5::subscribed(b.port(), &unique_id("mpsb"), &[("mps/t", opts(1))]);
    let mut p = V5::connected(b.port(), &unique_id("mpsp"));
    p.publish_simple("mps/t", &[b'L'; 400], 1, false);
    p.publish_simple("mps/t", b"small", 1, false);
    assert_eq!(small.recv_publish_ack().payload.as_ref(), b"small");
    assert_eq!(big.recv_publish_ack().payload.len(), 400);
    assert_eq!(big.recv_publish_ack().payload.as_ref(), b"small");
    small.expect_nothing(Duration::from_millis(300));
}

/// (3.2.2.3.6, 4.13) A packet larger than the server's Maximum Packet Size
/// (`max_packet_size`): DISCONNECT 0x95 (Packet too large).
#[test]
fn packet_larger_than_server_maximum_is_disconnected_0x95() {
    let b = Broker::start_with(&["max_packet_size 200"]);
    let (mut p, ack) = V5::connect(b.port(), &connect(&unique_id("mpss")));
    assert_eq!(ack.properties.maximum_packet_size, Some(200));
    p.send(&Packet::Publish(v5::publish(
        "mps/big",
        &[b'x'; 500],
        1,
        false,
        1,
    )));
    p.expect_disconnect_code(rc::PACKET_TOO_LARGE, "oversized PUBLISH");
}

// ---------------------------------------------------------------- connections--------------------

/// `connect_timeout`: a client that trickles its CONNECT one byte at a time is closed once
/// the timeout passes since accept, and so is a TLS client that never finishes its handshake.
#[test]
fn connect_timeout_closes_a_slow_connect_and_a_stalled_tls_handshake() {
    if !is_midge() {
        eprintln!("note: connect_timeout is a midge option");
        return;
    }
    let b = Broker::start_with(&["connect_timeout 2"]);
    let mut s = tcp(b.port());
    let connect = Connect::new(&"slowloris".repeat(8)).encode();
    let started = Instant::now();
    let mut closed_after = None;
    for byte in &connect {
        // Bounded: at most one byte per 250 ms for the whole CONNECT (about 20 s).
        if s.write_all(&[*byte]).is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        s.set_read_timeout(Some(Duration::from_millis(250))).ok();
        let mut buf = [0u8; 16];
        match s.read(&mut buf) {
            Ok(0) => {
                closed_after = Some(started.elapsed());
                break;
            }
            Ok(_) => panic!("the broker answered an incomplete CONNECT"),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {
                closed_after = Some(started.elapsed());
                break;
            }
        }
    }
    let closed_after = closed_after.expect("a CONNECT trickled over 20 s was waited for");
    assert!(
        closed_after >= Duration::from_millis(1500),
        "closed after {closed_after:?}, before its connect_timeout"
    );

    // TLS: the TCP connection is made, the handshake never starts.
    let certs = common::tls::Certs::generate();
    let mut lines = certs.server_lines();
    lines.push("connect_timeout 2".into());
    let b = Broker::start_with(&common::tls::strs(&lines));
    let mut c = Raw::tcp(b.port());
    assert!(
        c.is_closed_within(Duration::from_secs(6)),
        "a TLS connection without a handshake stayed open"
    );
}

/// `max_connections_per_ip 3`: a fourth connection from 127.0.0.1 is closed at accept; once
/// one closes, a new one gets in.
#[test]
fn max_connections_per_ip_refuses_the_excess_and_frees_slots_on_close() {
    if !is_midge() {
        eprintln!("note: max_connections_per_ip is a midge option");
        return;
    }
    let b = Broker::start_with(&["max_connections_per_ip 3"]);
    let port = b.port();
    let mut first: Vec<Raw> = (0..3)
        .map(|i| Raw::connected(port, &format!("ip-{i}")))
        .collect();
    let mut fourth = Raw::tcp(port);
    fourth.send(&Connect::new("ip-3").encode());
    assert!(
        fourth.is_closed_within(STEP),
        "a fourth connection from one address was served"
    );
    first.pop().expect("one").disconnect();
    assert!(
        eventually(STEP, || {
            let mut c = Raw::tcp(port);
            c.send(&Connect::new("ip-again").encode());
            matches!(c.recv(Duration::from_secs(1)), Ok(p) if p.kind() == raw::CONNACK)
        }),
        "no slot came back after a close"
    );
    for c in &mut first {
        c.ping();
    }
}

/// Goes on sending PINGREQs for half a second, as a client that has not noticed the error
/// yet does; the first write error (the broker reset the connection) if any.
fn keep_sending(s: &mut TcpStream) -> Result<(), String> {
    let ping = [0xC0u8, 0x00].repeat(32);
    for _ in 0..25 {
        s.write_all(&ping).map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Reads what the broker sends until it closes: (bytes, whether it ended with a clean end of
/// stream rather than a reset or a time-out).
fn read_to_end(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, Result<(), String>) {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (out, Err("time-out".into()));
        }
        s.set_read_timeout(Some(left)).ok();
        match s.read(&mut buf) {
            Ok(0) => return (out, Ok(())),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return (out, Err(e.to_string())),
        }
    }
}

/// After a protocol error the broker shuts down its side and drains what the client still
/// sends (for a bounded time), so a client that keeps sending is not reset and reads the
/// DISCONNECT and a clean end of stream (MQTT 5, malformed PUBLISH: DISCONNECT 0x81).
#[test]
fn a_client_that_keeps_sending_after_a_protocol_error_reads_the_disconnect() {
    if !is_midge() {
        eprintln!("note: mosquitto closes at once (a reset when the client sends more)");
        return;
    }
    let b = Broker::start();
    let mut s = tcp(b.port());
    s.write_all(&common::v5::enc(&midge::protocol::Packet::Connect(
        common::v5::connect("keeps-sending"),
    )))
    .unwrap();
    s.set_read_timeout(Some(STEP)).ok();
    let mut connack = [0u8; 64];
    let n = s.read(&mut connack).expect("CONNACK");
    assert!(
        n >= 2 && connack[0] == 0x20,
        "CONNACK: {:02x?}",
        &connack[..n]
    );
    // PUBLISH with QoS 3: malformed at its first byte.
    s.write_all(&[0x36, 0x02, 0x00, 0x00]).unwrap();
    let sending = keep_sending(&mut s);
    let (got, end) = read_to_end(&mut s, Duration::from_secs(5));
    assert!(
        got.len() >= 3 && got[0] == 0xE0 && got[2] == 0x81,
        "expected DISCONNECT 0x81 first, got {:02x?} ({end:?})",
        &got[..got.len().min(16)]
    );
    assert_eq!(sending, Ok(()), "the client's writes were reset");
    assert_eq!(end, Ok(()), "the connection did not end cleanly");
}

/// The same for a CONNECT refused with a CONNACK code (3.1.1, unsupported protocol level:
/// return code 1).
#[test]
fn a_client_that_keeps_sending_after_a_refused_connect_reads_the_connack() {
    if !is_midge() {
        eprintln!("note: mosquitto closes at once (a reset when the client sends more)");
        return;
    }
    let b = Broker::start();
    let mut s = tcp(b.port());
    s.write_all(&Connect::new("bad-level").protocol(b"MQTT", 7).encode())
        .unwrap();
    let sending = keep_sending(&mut s);
    let (got, end) = read_to_end(&mut s, Duration::from_secs(5));
    assert_eq!(
        &got[..got.len().min(4)],
        &[0x20, 0x02, 0x00, 0x01],
        "CONNACK return code 1 ({end:?})"
    );
    assert_eq!(sending, Ok(()), "the client's writes were reset");
    assert_eq!(end, Ok(()), "the connection did not end cleanly");
    let _ = s.shutdown(Shutdown::Both);
}

// ---------------------------------------------------------------- held messages: max_queued_bytes, memory_limit

/// A payload of `len` bytes that starts with `n` (big-endian), so that receivers can check
/// which messages arrived and in what order.
fn numbered(n: u32, len: usize) -> Vec<u8> {
    let mut payload = vec![0x5a; len];
    payload[..4].copy_from_slice(&n.to_be_bytes());
    payload
}

/// The numbers of [`numbered`] payloads, in arrival order.
fn numbers(got: &[raw::Publish]) -> Vec<u32> {
    got.iter()
        .map(|p| u32::from_be_bytes(p.payload[..4].try_into().expect("numbered payload")))
        .collect()
}

/// `max_queued_bytes` bounds the queue of an offline persistent session by payload bytes, the
/// way mosquitto does: a message is queued while the queue holds less than the limit. With
/// 1000 bytes and messages of 100, the first ten are kept and the rest dropped.
#[test]
fn max_queued_bytes_bounds_an_offline_sessions_queue() {
    let b = Broker::start_with(&["max_queued_messages 0", "max_queued_bytes 1000"]);
    let (mut sub, _) = Raw::connect(b.port(), &Connect::new("bytes-sub").clean(false));
    sub.subscribe(1, &[("q/bytes", 1)]);
    sub.disconnect();
    let mut publisher = Raw::connected(b.port(), "bytes-pub");
    for i in 0..20u16 {
        publisher.publish_complete("q/bytes", &numbered(i.into(), 100), 1, false, i + 1);
    }
    let (mut sub, present) = Raw::connect(b.port(), &Connect::new("bytes-sub").clean(false));
    assert!(present, "the session was kept");
    let got = sub.collect_publishes_until_quiet(Duration::from_millis(500));
    assert_eq!(
        numbers(&got),
        (0..10).collect::<Vec<u32>>(),
        "the first 1000 bytes of messages are queued, in order; the rest dropped"
    );
}

/// A set `max_queued_bytes` also bounds what a connected subscriber that stopped reading may
/// have unsent at QoS 0 (midge's own bound is 16 MiB otherwise). 8 MiB to a stalled
/// subscriber under a 1 MiB limit: some are dropped, which the default bound would not have
/// done. midge's choice: mosquitto 2.0.11 kept all 512 here (checked for midge only).
#[test]
fn max_queued_bytes_bounds_a_stalled_subscribers_qos0_backlog() {
    let b = Broker::start_with(&["max_queued_bytes 1048576"]);
    let mut stalled = Raw::subscribed(b.port(), "stalled0", &[("bulk/q0", 0)]);
    let mut publisher = Raw::connected(b.port(), "bulk-pub");
    let count = 512u32; // of 16 KiB: 8 MiB
    for i in 0..count {
        publisher.publish_complete("bulk/q0", &numbered(i, 16 * 1024), 0, false, 0);
    }
    publisher.ping();
    if b.is_midge() {
        assert!(
            b.wait_log_contains_any(
                &["Dropping QoS 0 messages for a slow consumer"],
                Duration::from_secs(5)
            ),
            "the broker says it drops: {}",
            b.log()
        );
    }
    let kept = stalled.collect_publishes_until_quiet(Duration::from_millis(1000));
    assert!(numbers(&kept).windows(2).all(|w| w[0] < w[1]), "in order");
    if b.is_midge() {
        assert!(
            !kept.is_empty() && kept.len() < count as usize,
            "kept {} of {count}",
            kept.len()
        );
    }
}

/// The QoS 0 bound is on output the subscriber's socket refused, not on what one loop turn
/// gathers: 200 messages of 100 bytes arriving in one TCP segment burst are routed in one
/// turn, 20 KB for the subscriber before the turn's flush, twenty times a `max_queued_bytes`
/// of 1000; a subscriber that reads gets every one of them.
#[test]
fn a_reading_subscriber_loses_nothing_to_a_small_max_queued_bytes() {
    let b = Broker::start_with(&["max_queued_bytes 1000"]);
    let mut sub = Raw::subscribed(b.port(), "burst-sub", &[("burst/t", 0)]);
    let mut publisher = Raw::connected(b.port(), "burst-pub");
    let mut burst = Vec::new();
    for i in 0..200 {
        burst.extend_from_slice(&raw::publish("burst/t", &numbered(i, 100), 0, false, 0));
    }
    publisher.send(&burst);
    let got = sub.collect_publishes(200, Duration::from_secs(10));
    assert_eq!(numbers(&got), (0..200).collect::<Vec<u32>>());
}

/// Payload size and `memory_limit` of the test below: room for ten held messages.
const PAYLOAD: usize = 300;
const LIMIT: usize = 3000;

/// An offline subscriber's queue fills until the broker holds `memory_limit` bytes: then
/// 5.0 publishers get PUBACK 0x97 and nothing more is queued; once the subscriber has taken
/// its messages, publishing succeeds again. midge only: mosquitto's `memory_limit` caps its
/// whole heap, a different measure.
#[test]
fn memory_limit_bounds_held_messages_and_tells_5_0_publishers() {
    if !common::is_midge() {
        return;
    }
    let limit = format!("memory_limit {LIMIT}");
    let b = Broker::start_with(&[&limit, "max_queued_messages 100000"]);
    let id = unique_id("memsub");
    let (mut s, _) = Raw::connect(b.port(), &Connect::new(&id).clean(false));
    s.subscribe(1, &[("mem/#", 1)]);
    s.disconnect();

    let mut p = V5::connected(b.port(), &unique_id("mempub"));
    let payload = vec![b'm'; PAYLOAD];
    let mut accepted = 0;
    let mut refused = false;
    // The shards exchange their totals once per loop turn: a few messages more may get in.
    for _ in 0..200 {
        match p.publish_simple("mem/t", &payload, 1, false) {
            0 => accepted += 1,
            code => {
                assert_eq!(code, rc::QUOTA_EXCEEDED, "{}", rc::name(code));
                refused = true;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(refused, "never refused after {accepted} messages");
    assert!(
        accepted * PAYLOAD >= LIMIT,
        "refused before the limit: {accepted} messages"
    );

    let (mut s, present) = Raw::connect(b.port(), &Connect::new(&id).clean(false));
    assert!(present);
    let got = s.collect_publishes_until_quiet(Duration::from_millis(800));
    // Kept up to the limit; a message the publisher's shard accepted while another shard's
    // newest total had not reached it yet may still be dropped at the subscriber's shard (as
    // when a subscriber's own queue is full: the publisher is not told).
    // The subscriber's shard sees its own holdings at once: it keeps exactly up to the limit.
    assert_eq!(got.len(), LIMIT.div_ceil(PAYLOAD), "{accepted} accepted");

    // Delivered and acknowledged: room again (seen by the publisher's shard within a turn).
    let mut ok = false;
    for _ in 0..100 {
        if p.publish_simple("mem/t", &payload, 1, false) == 0 {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ok, "still refused after the queue was delivered");
    assert_eq!(s.recv_publish_ack().payload.len(), PAYLOAD);
}
