//! Issue #7: the broker does no heap allocation per message in steady state.
//!
//! A counting `#[global_allocator]` counts every allocation and reallocation in the process.
//! An in-process broker with two shards is driven by raw `std::net::TcpStream` clients that
//! allocate nothing once connected (pre-encoded PUBLISH frames, fixed read buffers,
//! hand-parsed acknowledgements), so every allocation counted in the measured window is the
//! broker's. Four publishers (two per shard) publish to one topic that has a subscriber on
//! each shard, so every message is delivered once locally and once across shards. After a
//! warm-up (buffers, queues and pools reach their working size), allocations are counted over
//! at least [`MEASURED`] routed deliveries and must stay below [`MAX_ALLOCS_PER_DELIVERY`]
//! (amortised: a rare growth or a new pooled object is allowed, one per message is not).
//!
//! Everything is bounded: sockets have read and write time-outs, every phase has a deadline,
//! and a failure stops the clients before the assertion.
//!
//! A second pair of phases has MQTT 5 subscribers whose subscriptions carry a subscription
//! identifier, which every delivery to them repeats ([MQTT-3.3.4-3]): building those
//! deliveries must not allocate either (`message::SubscriptionIds`).
//!
//! Run alone it takes a few seconds: `cargo test --release --test alloc -- --nocapture`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use midge::config::Config;
use midge::shard::home_shard;
use midge::Broker;

/// Counts allocations (including reallocations: a growing buffer is an allocation too).
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
/// Allocations by size class (bucket i: sizes in [2^i, 2^(i+1))), to name the culprit when
/// the test fails (a 32-byte `bytes` header, a 4 KiB read buffer, a ~600-byte message...).
static BY_SIZE: [AtomicU64; 32] = [const { AtomicU64::new(0) }; 32];

fn count(size: usize) {
    ALLOCS.fetch_add(1, Ordering::Relaxed);
    let bucket = (usize::BITS - 1 - size.max(1).leading_zeros()) as usize;
    BY_SIZE[bucket.min(31)].fetch_add(1, Ordering::Relaxed);
}

/// The size classes allocated between two snapshots, as "size+: count" pairs.
fn sizes_between(before: &[u64; 32], after: &[u64; 32]) -> String {
    let mut out = String::new();
    for i in 0..32 {
        let n = after[i] - before[i];
        if n > 0 {
            out += &format!(" {}+: {n};", 1u64 << i);
        }
    }
    out
}

fn sizes_now() -> [u64; 32] {
    std::array::from_fn(|i| BY_SIZE[i].load(Ordering::Relaxed))
}

// SAFETY: forwards to the system allocator; the counter has no effect on the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const SHARDS: usize = 2;
const PUBLISHERS: usize = 4;
/// Routed deliveries before counting starts.
const WARM_UP: u64 = 40_000;
/// Routed deliveries counted.
const MEASURED: u64 = 100_000;
/// The target of issue #7.
const MAX_ALLOCS_PER_DELIVERY: f64 = 0.01;
/// PUBLISH frames written per `write` (and, at QoS 1, acknowledged before the next batch).
const BATCH: usize = 32;
/// Flow control: messages published but not yet received by every subscriber. Keeps the
/// subscribers' write buffers and session queues (below `max_queued_messages`, so nothing is
/// dropped) at a steady size: the broker acknowledges a QoS 1 PUBLISH once it is routed, not
/// once it is delivered, so QoS 1 publishers need it as much as QoS 0 ones.
const WINDOW: u64 = 800;
/// Every phase ends within this, pass or fail.
const PHASE_LIMIT: Duration = Duration::from_secs(60);
const IO_TIMEOUT: Duration = Duration::from_millis(200);
const PAYLOAD: &[u8] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Appends a 3.1.1 packet: fixed header (type and flags, remaining length), then `body`.
fn frame(out: &mut Vec<u8>, first: u8, body: &[u8]) {
    out.push(first);
    let mut n = body.len();
    loop {
        let mut b = (n & 0x7F) as u8;
        n >>= 7;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// The PUBLISH frame of `topic` at `qos` with packet id `id` (ignored at QoS 0).
fn publish_frame(out: &mut Vec<u8>, topic: &str, qos: u8, id: u16) {
    let mut body = Vec::new();
    string(&mut body, topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&id.to_be_bytes());
    }
    body.extend_from_slice(PAYLOAD);
    frame(out, 0x30 | qos << 1, &body);
}

/// A client id, numbered from `n`, whose session lives on `shard`.
fn id_on_shard(prefix: &str, shard: usize, n: &mut u32) -> String {
    loop {
        *n += 1;
        let id = format!("{prefix}-{n}");
        if home_shard(id.as_bytes(), SHARDS) == shard {
            return id;
        }
    }
}

/// Reads one packet whose remaining length is under 128 (CONNACK, SUBACK): its first byte
/// and its body.
fn read_small_packet(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut header = [0u8; 2];
    s.read_exact(&mut header).expect("packet header");
    assert!(header[1] < 0x80, "a small packet");
    let mut body = vec![0u8; usize::from(header[1])];
    s.read_exact(&mut body).expect("packet body");
    (header[0], body)
}

/// Connects (clean session, no keep-alive) and waits for CONNACK 0; then subscribes to
/// `filter` at `qos` when given and waits for its SUBACK. With `v5`, it connects with MQTT 5
/// and the subscription carries identifier `id` (1..=127).
fn connect(
    addr: SocketAddr,
    client_id: &str,
    subscribe: Option<(&str, u8)>,
    v5: Option<u8>,
) -> TcpStream {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut body = Vec::new();
    string(&mut body, b"MQTT");
    match v5 {
        // Level 5, clean start, keep-alive 0, no properties.
        Some(_) => body.extend_from_slice(&[5, 0x02, 0, 0, 0]),
        None => body.extend_from_slice(&[4, 0x02, 0, 0]),
    }
    string(&mut body, client_id.as_bytes());
    let mut out = Vec::new();
    frame(&mut out, 0x10, &body);
    s.write_all(&out).unwrap();
    let (first, connack) = read_small_packet(&mut s);
    assert!(
        first == 0x20 && connack.len() >= 2 && connack[1] == 0,
        "CONNACK for {client_id}: {first:#x} {connack:?}"
    );
    if let Some((filter, qos)) = subscribe {
        let mut body = vec![0, 1];
        if let Some(id) = v5 {
            // Properties: Subscription Identifier `id` (a one-byte variable integer).
            assert!((1..0x80).contains(&id));
            body.extend_from_slice(&[2, 0x0B, id]);
        }
        string(&mut body, filter.as_bytes());
        body.push(qos);
        let mut out = Vec::new();
        frame(&mut out, 0x82, &body);
        s.write_all(&out).unwrap();
        let (first, suback) = read_small_packet(&mut s);
        assert!(
            first == 0x90 && suback[..2] == [0, 1] && suback.last() == Some(&qos),
            "SUBACK for {client_id}: {first:#x} {suback:?}"
        );
    }
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Counters shared by the clients of one phase; atomics only (no allocation).
struct Progress {
    /// PUBLISHes written by all publishers.
    sent: AtomicU64,
    /// PUBLISHes received, per subscriber.
    received: [AtomicU64; SHARDS],
    stop: AtomicBool,
    /// A client hit an error (the reason is printed by that client before it stops).
    failed: AtomicBool,
}

impl Progress {
    fn delivered(&self) -> u64 {
        self.received
            .iter()
            .map(|r| r.load(Ordering::Relaxed))
            .sum()
    }
    fn slowest(&self) -> u64 {
        self.received
            .iter()
            .map(|r| r.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    }
    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed) && !self.failed.load(Ordering::Relaxed)
    }
}

/// A subscriber: reads PUBLISH frames into a fixed buffer, counts them and, at QoS 1,
/// answers each with a PUBACK (written once per read). With `sub_id` (MQTT 5), every
/// PUBLISH must carry exactly that subscription identifier as its properties.
fn subscriber(mut s: TcpStream, me: usize, sub_id: Option<u8>, progress: &Progress) {
    let mut buf = vec![0u8; 1 << 16];
    let mut acks = vec![0u8; 1 << 16];
    let (mut start, mut end) = (0usize, 0usize);
    while progress.running() {
        if start == end {
            (start, end) = (0, 0);
        } else if end == buf.len() {
            buf.copy_within(start..end, 0);
            (start, end) = (0, end - start);
        }
        let n = match s.read(&mut buf[end..]) {
            Ok(0) => {
                eprintln!("subscriber {me}: connection closed by the broker");
                progress.failed.store(true, Ordering::Relaxed);
                return;
            }
            Ok(n) => n,
            Err(e) if timed_out(&e) => continue,
            Err(e) => {
                eprintln!("subscriber {me}: read failed: {e}");
                progress.failed.store(true, Ordering::Relaxed);
                return;
            }
        };
        end += n;
        let (mut got, mut nacks) = (0u64, 0usize);
        // Parse every complete frame: first byte, remaining length, body.
        loop {
            let avail = &buf[start..end];
            if avail.len() < 2 {
                break;
            }
            let (mut len, mut shift, mut i) = (0usize, 0u32, 1usize);
            let complete = loop {
                if i >= avail.len() {
                    break false;
                }
                let b = avail[i];
                len |= usize::from(b & 0x7F) << shift;
                i += 1;
                if b & 0x80 == 0 {
                    break true;
                }
                shift += 7;
            };
            if !complete || avail.len() < i + len {
                break;
            }
            let first = avail[0];
            if first >> 4 != 3 {
                eprintln!("subscriber {me}: unexpected packet type {first:#x}");
                progress.failed.store(true, Ordering::Relaxed);
                return;
            }
            let body = &avail[i..i + len];
            let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
            let mut at = 2 + topic_len;
            if (first >> 1) & 3 == 1 {
                let id = &body[at..at + 2];
                acks[nacks..nacks + 4].copy_from_slice(&[0x40, 2, id[0], id[1]]);
                nacks += 4;
                at += 2;
            }
            if let Some(sub_id) = sub_id {
                if body[at..at + 3] != [2, 0x0B, sub_id] {
                    eprintln!(
                        "subscriber {me}: properties {:?}, expected subscription identifier {sub_id}",
                        &body[at..at + 3]
                    );
                    progress.failed.store(true, Ordering::Relaxed);
                    return;
                }
            }
            got += 1;
            start += i + len;
        }
        if nacks > 0 {
            if let Err(e) = s.write_all(&acks[..nacks]) {
                eprintln!("subscriber {me}: PUBACK write failed: {e}");
                progress.failed.store(true, Ordering::Relaxed);
                return;
            }
        }
        progress.received[me].fetch_add(got, Ordering::Relaxed);
    }
}

/// A publisher: writes `frames` (BATCH pre-encoded PUBLISHes) over and over, waiting while
/// the slowest subscriber is more than WINDOW behind; at QoS 1 it also reads the BATCH
/// PUBACKs (4 bytes each) of one batch before the next.
fn publisher(mut s: TcpStream, me: usize, frames: &[u8], qos: u8, progress: &Progress) {
    let mut acks = [0u8; 4 * BATCH];
    while progress.running() {
        let sent = progress.sent.load(Ordering::Relaxed);
        if sent.saturating_sub(progress.slowest()) > WINDOW {
            thread::sleep(Duration::from_micros(200));
            continue;
        }
        if let Err(e) = s.write_all(frames) {
            eprintln!("publisher {me}: write failed: {e}");
            progress.failed.store(true, Ordering::Relaxed);
            return;
        }
        progress.sent.fetch_add(BATCH as u64, Ordering::Relaxed);
        if qos == 1 {
            let mut have = 0;
            while have < acks.len() {
                match s.read(&mut acks[have..]) {
                    Ok(0) => {
                        eprintln!("publisher {me}: connection closed by the broker");
                        progress.failed.store(true, Ordering::Relaxed);
                        return;
                    }
                    Ok(n) => have += n,
                    Err(e) if timed_out(&e) && progress.running() => continue,
                    Err(e) => {
                        if progress.running() {
                            eprintln!("publisher {me}: PUBACK read failed: {e}");
                            progress.failed.store(true, Ordering::Relaxed);
                        }
                        return;
                    }
                }
            }
            for (i, ack) in acks.chunks(4).enumerate() {
                // Packet ids are 1..=BATCH, acknowledged in order.
                let id = (i + 1) as u16;
                if ack != [0x40, 2, (id >> 8) as u8, id as u8] {
                    eprintln!("publisher {me}: bad PUBACK {ack:?}");
                    progress.failed.store(true, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
}

/// Waits until `f` holds, the clients failed, or the phase deadline passed.
fn wait_for(deadline: Instant, progress: &Progress, f: impl Fn() -> bool) -> bool {
    while !f() {
        if !progress.running() || Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
    true
}

/// One phase at `qos` (with MQTT 5 subscribers using subscription identifiers when `v5`):
/// returns (allocations, routed deliveries, allocations by size) in the measured window.
fn measure(addr: SocketAddr, qos: u8, v5: bool) -> (u64, u64, String) {
    let phase = format!("q{qos}{}", if v5 { "-v5" } else { "" });
    let topic = format!("alloc/{phase}");
    let progress = Arc::new(Progress {
        sent: AtomicU64::new(0),
        received: [AtomicU64::new(0), AtomicU64::new(0)],
        stop: AtomicBool::new(false),
        failed: AtomicBool::new(false),
    });
    let mut n = 0;
    let mut threads = Vec::new();
    for shard in 0..SHARDS {
        let id = id_on_shard(&format!("sub-{phase}"), shard, &mut n);
        let sub_id = v5.then_some(shard as u8 + 1);
        let s = connect(addr, &id, Some((&topic, qos)), sub_id);
        let p = progress.clone();
        threads.push(thread::spawn(move || subscriber(s, shard, sub_id, &p)));
    }
    for i in 0..PUBLISHERS {
        let id = id_on_shard(&format!("pub-{phase}"), i % SHARDS, &mut n);
        let s = connect(addr, &id, None, None);
        let mut frames = Vec::new();
        for k in 0..BATCH {
            publish_frame(&mut frames, &topic, qos, k as u16 + 1);
        }
        let p = progress.clone();
        threads.push(thread::spawn(move || publisher(s, i, &frames, qos, &p)));
    }
    let deadline = Instant::now() + PHASE_LIMIT;
    let warmed = wait_for(deadline, &progress, || progress.delivered() >= WARM_UP);
    let sizes0 = sizes_now();
    let (allocs0, delivered0) = (ALLOCS.load(Ordering::SeqCst), progress.delivered());
    let measured = warmed
        && wait_for(deadline, &progress, || {
            progress.delivered() >= delivered0 + MEASURED
        });
    let (allocs1, delivered1) = (ALLOCS.load(Ordering::SeqCst), progress.delivered());
    let sizes1 = sizes_now();
    progress.stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("client thread panicked");
    }
    assert!(
        !progress.failed.load(Ordering::Relaxed),
        "{phase}: a client failed (see its message above)"
    );
    assert!(
        measured,
        "{phase}: no steady state within {PHASE_LIMIT:?}: {} deliveries",
        progress.delivered()
    );
    let sizes = sizes_between(&sizes0, &sizes1);
    (allocs1 - allocs0, delivered1 - delivered0, sizes)
}

#[test]
fn routing_does_not_allocate_per_message_in_steady_state() {
    let config = Config::parse_str(
        // No `$SYS` tree: its publications (some seventy topics every `sys_interval`) allocate
        // per publication, not per message, and one landing in a phase would be counted here.
        &format!("listener 0 127.0.0.1\nshards {SHARDS}\nsys_interval 0\n"),
        "alloc-test",
    )
    .expect("config");
    let broker = Broker::start(config).expect("start broker");
    let addr = broker.local_addrs()[0];
    let mut report = Vec::new();
    for (qos, v5) in [(0u8, false), (1, false), (0, true), (1, true)] {
        let (allocs, deliveries, sizes) = measure(addr, qos, v5);
        let per = allocs as f64 / deliveries as f64;
        let phase = format!(
            "QoS {qos}{}",
            if v5 { ", MQTT 5 + subscription id" } else { "" }
        );
        println!(
            "{phase}: {allocs} allocations over {deliveries} routed deliveries = {per:.5} per delivery; by size:{sizes}"
        );
        report.push((phase, allocs, deliveries, per));
    }
    broker.shutdown().expect("shutdown");
    for (phase, allocs, deliveries, per) in report {
        assert!(
            per < MAX_ALLOCS_PER_DELIVERY,
            "{phase}: {allocs} allocations for {deliveries} routed deliveries ({per:.4} per delivery, limit {MAX_ALLOCS_PER_DELIVERY})"
        );
    }
}
