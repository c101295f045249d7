//! Hostile clients (issue 11): what one client can do to the broker with valid or invalid
//! bytes must never crash it, stall the other clients or leak memory or descriptors.
//!
//! Every scenario asserts the same four things:
//! - the broker process lives (and midge's log has no panic or stack overflow);
//! - a bystander client keeps round-tripping (a QoS 0 PUBLISH to its own topic comes back)
//!   during the attack, within a generous bound, and after it;
//! - memory (VmRSS) returns near the baseline taken before the attack;
//! - the broker's descriptors (/proc/PID/fd) are back to the baseline once the attackers leave.
//!
//! Hostile bytes go through raw sockets ([`common::raw`]). Every loop is bounded in count and
//! time. The same tests run against mosquitto 2.0.11 (`MIDGE_TEST_BROKER=mosquitto`); the one
//! that needs a midge-only option (`connect_timeout`) says so and returns early there.

mod common;

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::auth_files::AuthFiles;
use common::raw::{
    encode_len, mqtt_str, publish, subscribe, unsubscribe, Connect, Packet, Raw, RecvError,
    CONNACK, PINGRESP, PUBLISH, SUBACK, UNSUBACK,
};
use common::{eventually, fd_count, rss_kib, unique_id, Broker};

/// Options of midge that mosquitto does not know (beyond those `common` already drops).
const MIDGE_ONLY_HERE: &[&str] = &["connect_timeout"];

/// How long a bystander round trip may take while an attack runs (generous: the machine is
/// shared and the tests of this file run in parallel). A stalled event loop exceeds it.
const ROUND_TRIP: Duration = Duration::from_secs(5);

/// How much resident memory may stay above the baseline once an attack is over.
const RSS_SLACK_KIB: u64 = 16 * 1024;

/// How long the broker has to give back descriptors and memory after the attackers leave.
const SETTLE: Duration = Duration::from_secs(15);

fn start(lines: &[&str]) -> Broker {
    let kept: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| {
            common::is_midge()
                || !MIDGE_ONLY_HERE.contains(&l.split_whitespace().next().unwrap_or(""))
        })
        .collect();
    Broker::start_with(&kept)
}

/// Sockets of the broker's port in CLOSE-WAIT: the peer closed, the broker has not.
fn close_wait_count(port: u16) -> usize {
    let mut n = 0;
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 4 {
                continue;
            }
            let local_port = f[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && f[3] == "08" {
                n += 1;
            }
        }
    }
    n
}

/// `n` levels of `level` joined by `/`.
fn levels(level: &str, n: usize) -> String {
    vec![level; n].join("/")
}

// ---------------------------------------------------------------- bystander

/// A well-behaved client that publishes to its own topic and waits for the message.
struct Bystander {
    raw: Raw,
    topic: String,
    seq: u64,
}

impl Bystander {
    fn new(port: u16) -> Bystander {
        Bystander::under(port, "")
    }

    /// A bystander whose topic starts with `prefix` (for brokers with an ACL).
    fn under(port: u16, prefix: &str) -> Bystander {
        let id = unique_id("bystander");
        let mut raw = Raw::connected(port, &id);
        let topic = format!("{prefix}bystander/{id}");
        let codes = raw.subscribe(1, &[(&topic, 0)]);
        assert_eq!(codes, vec![0], "bystander SUBACK");
        Bystander { raw, topic, seq: 0 }
    }

    /// One round trip; its duration, or why it failed.
    fn round_trip(&mut self, limit: Duration) -> Result<Duration, String> {
        self.seq += 1;
        let want = self.seq.to_string().into_bytes();
        let t0 = Instant::now();
        self.raw.send(&publish(&self.topic, &want, 0, false, 0));
        let deadline = t0 + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.raw.recv(left) {
                Ok(p) if p.kind() == PUBLISH && p.publish().payload == want => {
                    return Ok(t0.elapsed())
                }
                Ok(_) => continue, // an older round trip's late message
                Err(e) => return Err(format!("round trip {}: {e:?} after {limit:?}", self.seq)),
            }
        }
    }

    fn assert_round_trip(&mut self) {
        if let Err(e) = self.round_trip(ROUND_TRIP) {
            panic!("bystander: {e}");
        }
    }

    /// Round-trips in a thread until [`Watch::finish`].
    fn watch(self) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = thread::spawn(move || {
            let mut by = self;
            let mut stats = WatchStats::default();
            // Bounded: at most 10 minutes of round trips, whatever the caller does.
            let end = Instant::now() + Duration::from_secs(600);
            while !flag.load(Ordering::Relaxed) && Instant::now() < end {
                match by.round_trip(Duration::from_secs(10)) {
                    Ok(d) => {
                        stats.rounds += 1;
                        stats.max = stats.max.max(d);
                    }
                    Err(e) => {
                        stats.failure = Some(e);
                        break;
                    }
                }
                thread::sleep(Duration::from_millis(50));
            }
            (by, stats)
        });
        Watch { stop, handle }
    }
}

#[derive(Default, Debug)]
struct WatchStats {
    rounds: u32,
    max: Duration,
    failure: Option<String>,
}

struct Watch {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(Bystander, WatchStats)>,
}

impl Watch {
    fn failed(&self) -> bool {
        self.handle.is_finished()
    }

    /// Stops the round trips; panics if one failed or took longer than `bound`.
    fn finish(self, bound: Duration, what: &str) -> Bystander {
        self.stop.store(true, Ordering::Relaxed);
        let (by, stats) = self.handle.join().expect("bystander thread");
        eprintln!("{what}: bystander {stats:?}");
        if let Some(f) = &stats.failure {
            panic!(
                "{what}: the bystander stalled: {f} ({} round trips before)",
                stats.rounds
            );
        }
        assert!(
            stats.max <= bound,
            "{what}: a bystander round trip took {:?} (bound {bound:?}); {stats:?}",
            stats.max
        );
        by
    }
}

// ---------------------------------------------------------------- baseline and recovery

struct Baseline {
    rss_kib: u64,
    fds: usize,
}

/// Memory and descriptors once the broker has settled with its long-lived clients connected.
fn baseline(b: &Broker) -> Baseline {
    thread::sleep(Duration::from_millis(300));
    let base = Baseline {
        rss_kib: rss_kib(b.pid()),
        fds: fd_count(b.pid()),
    };
    eprintln!(
        "baseline: rss {} KiB, {} descriptors",
        base.rss_kib, base.fds
    );
    base
}

/// The broker lives, has not panicked, serves the bystander, and gives back descriptors and
/// memory (within `rss_slack_kib`).
fn assert_recovered(b: &mut Broker, by: &mut Bystander, base: &Baseline, rss_slack_kib: u64) {
    b.assert_running();
    assert_no_panic(b);
    by.assert_round_trip();
    let pid = b.pid();
    let fds_ok = eventually(SETTLE, || fd_count(pid) <= base.fds);
    assert!(
        fds_ok,
        "the broker holds {} descriptors, {} before the attack (attackers are gone)",
        fd_count(pid),
        base.fds
    );
    let limit = base.rss_kib + rss_slack_kib;
    let rss_ok = eventually(SETTLE, || rss_kib(pid) <= limit);
    assert!(
        rss_ok,
        "RSS {} KiB did not return near the baseline {} KiB (allowed {} KiB)",
        rss_kib(pid),
        base.rss_kib,
        limit
    );
    b.assert_running();
    by.assert_round_trip();
}

fn assert_no_panic(b: &Broker) {
    if b.is_midge() {
        let log = b.log();
        for bad in ["panicked", "overflowed its stack", "fatal runtime error"] {
            assert!(!log.contains(bad), "midge log contains {bad:?}:\n{log}");
        }
    }
}

/// Sends CONNECT; the CONNACK return code, or None if the broker closed without one.
fn try_connect(port: u16, c: &Connect) -> (Raw, Option<u8>) {
    let mut raw = Raw::tcp(port);
    raw.send(&c.encode());
    match raw.recv(Duration::from_secs(5)) {
        Ok(p) if p.kind() == CONNACK => (raw, Some(p.body[1])),
        Ok(p) => panic!("expected CONNACK, got {p:?}"),
        Err(RecvError::Closed) => (raw, None),
        Err(RecvError::Timeout) => panic!("no CONNACK and no close within 5 s for {c:?}"),
    }
}

/// The response to a request that may be refused by closing: the packet, or None if closed.
fn reply_or_close(raw: &mut Raw, limit: Duration) -> Option<Packet> {
    match raw.recv(limit) {
        Ok(p) => Some(p),
        Err(RecvError::Closed) => None,
        Err(RecvError::Timeout) => panic!("neither a reply nor a close within {limit:?}"),
    }
}

// ---------------------------------------------------------------- deep and long topics

/// Issue 11 item 1: a 5,000-level filter, subscribed then unsubscribed, subscribed then left
/// by a disconnect, and `a/.../a/#` with a matching PUBLISH: the broker refuses the filter
/// or handles it, and never crashes (the index walk is not a recursion the client controls).
#[test]
fn deep_filters_neither_crash_nor_stall_the_broker() {
    let mut b = start(&[]);
    let by = Bystander::new(b.port());
    let base = baseline(&b);
    let watch = by.watch();

    let deep_plus = levels("+", 5000);
    assert!(deep_plus.len() > 9_000);
    // SUBSCRIBE, UNSUBSCRIBE, DISCONNECT.
    {
        let mut a = Raw::connected(b.port(), &unique_id("deep1"));
        a.send(&subscribe(1, &[(&deep_plus, 0)]));
        if let Some(p) = reply_or_close(&mut a, Duration::from_secs(10)) {
            assert_eq!(p.kind(), SUBACK, "reply to a deep SUBSCRIBE: {p:?}");
            a.send(&unsubscribe(2, &[&deep_plus]));
            if let Some(p) = reply_or_close(&mut a, Duration::from_secs(10)) {
                assert_eq!(p.kind(), UNSUBACK, "reply to a deep UNSUBSCRIBE: {p:?}");
            }
        }
        a.disconnect();
    }
    thread::sleep(Duration::from_millis(200));
    b.assert_running();
    // SUBSCRIBE then vanish: the filter is removed by the disconnect.
    for _ in 0..3 {
        let mut a = Raw::connected(b.port(), &unique_id("deep2"));
        a.send(&subscribe(1, &[(&deep_plus, 1)]));
        let _ = reply_or_close(&mut a, Duration::from_secs(10));
        a.drop_abruptly();
    }
    thread::sleep(Duration::from_millis(200));
    b.assert_running();
    // `a/.../a/#` and PUBLISHes that match it (5,000 levels, and its parent level).
    {
        let filter = format!("{}/#", levels("a", 4999));
        let mut s = Raw::connected(b.port(), &unique_id("deep3"));
        s.send(&subscribe(1, &[(&filter, 0)]));
        let subscribed = reply_or_close(&mut s, Duration::from_secs(10));
        let mut p = Raw::connected(b.port(), &unique_id("deep3p"));
        p.send(&publish(&levels("a", 5000), b"deep", 0, false, 0));
        p.send(&publish(&levels("a", 4999), b"deep", 0, false, 0));
        if subscribed.is_some() {
            // Whatever arrives (or not), the broker must survive the match.
            let _ = s.recv(Duration::from_millis(500));
        }
        let _ = p.recv(Duration::from_millis(200));
        p.drop_abruptly();
        s.drop_abruptly();
    }
    b.assert_running();
    let mut by = watch.finish(ROUND_TRIP, "deep filters");
    assert_recovered(&mut b, &mut by, &base, RSS_SLACK_KIB);
}

/// A persistent session that asked for a deep filter does not abort the broker at shutdown
/// (SIGTERM) nor at the restart that loads it.
#[test]
fn deep_filter_in_a_persistent_session_survives_shutdown_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let location = format!("persistence_location {}/", dir.path().display());
    let mut b = start(&["persistence true", &location]);
    let id = unique_id("deep-persist");
    let mut a = Raw::connect(b.port(), &Connect::new(&id).clean(false)).0;
    a.send(&subscribe(1, &[(&levels("+", 5000), 1)]));
    let _ = reply_or_close(&mut a, Duration::from_secs(10));
    a.drop_abruptly();
    let (mut a, _) = Raw::connect(b.port(), &Connect::new(&id).clean(false));
    a.send(&subscribe(2, &[(&format!("{}/#", levels("a", 4999)), 1)]));
    let _ = reply_or_close(&mut a, Duration::from_secs(10));
    a.drop_abruptly();
    thread::sleep(Duration::from_millis(300));
    b.assert_running();
    b.terminate();
    assert_no_panic(&b);
    b.restart();
    let mut by = Bystander::new(b.port());
    by.assert_round_trip();
    // After the restart: a PUBLISH that would match, then the session is resumed clean
    // (its filters removed from the index).
    let mut p = Raw::connected(b.port(), &unique_id("deep-persist-pub"));
    p.send(&publish(&levels("a", 5000), b"deep", 1, false, 1));
    let _ = p.recv(Duration::from_millis(500));
    p.drop_abruptly();
    b.assert_running();
    // And once more, after a crash.
    b.kill9();
    b.restart();
    let (a, _) = try_connect(b.port(), &Connect::new(&id).clean(true));
    a.disconnect();
    let mut by = Bystander::new(b.port());
    by.assert_round_trip();
    b.assert_running();
    assert_no_panic(&b);
}

// ---------------------------------------------------------------- huge announced lengths

/// First packets announcing 256 MB, refused at their fixed header without waiting for the
/// body: one that is not a CONNECT, even with `max_packet_size` at the protocol maximum
/// (issue 11 item 7); a CONNECT past `max_packet_size` (midge's default 1 MiB; set explicitly
/// for mosquitto, whose default is unlimited).
#[test]
fn huge_announced_first_packet_is_refused_at_its_header() {
    let len_256mb = encode_len(268_435_455);
    let cases: [(&[&str], &[u8]); 2] = [
        (&["max_packet_size 268435455"], &[0x30, 0x82, 0xC0, 0x20]),
        (
            if common::is_midge() {
                &[]
            } else {
                &["max_packet_size 1048576"]
            },
            &[0x10],
        ),
    ];
    for (config, firsts) in cases {
        let mut b = start(config);
        let mut by = Bystander::new(b.port());
        let base = baseline(&b);
        for &first in firsts {
            let mut a = Raw::tcp(b.port());
            let mut bytes = vec![first];
            bytes.extend(&len_256mb);
            bytes.extend_from_slice(&[0u8; 64]);
            a.send(&bytes);
            let t0 = Instant::now();
            assert!(
                a.is_closed_within(Duration::from_secs(5)),
                "first packet {first:#04x} announcing 256 MB ({config:?}): the connection is \
                 still open after 5 s"
            );
            eprintln!("first packet {first:#04x}: closed after {:?}", t0.elapsed());
            by.assert_round_trip();
        }
        assert_recovered(&mut b, &mut by, &base, RSS_SLACK_KIB);
    }
}

/// A connected client announces a 200 MB PUBLISH (allowed by `max_packet_size`), sends a few
/// bytes and closes: nothing of the announced size stays, the close is seen.
#[test]
fn huge_announced_publish_then_close_leaves_nothing() {
    let mut b = start(&["max_packet_size 268435455"]);
    let by = Bystander::new(b.port());
    let base = baseline(&b);
    let watch = by.watch();
    for round in 0..3 {
        let mut attackers = Vec::new();
        for i in 0..10 {
            let mut a = Raw::connected(b.port(), &unique_id(&format!("huge{round}-{i}")));
            let mut bytes = vec![0x30];
            bytes.extend(encode_len(200_000_000));
            bytes.extend(mqtt_str(b"huge/topic"));
            bytes.extend_from_slice(&[0x55; 4096]);
            a.send(&bytes);
            attackers.push(a);
        }
        thread::sleep(Duration::from_millis(200));
        for a in attackers {
            a.drop_abruptly();
        }
    }
    let mut by = watch.finish(ROUND_TRIP, "200 MB announced");
    assert_recovered(&mut b, &mut by, &base, RSS_SLACK_KIB);
}

// ---------------------------------------------------------------- slowloris

/// Before CONNECT: silent TCP connections, and CONNECTs trickled one byte at a time, are
/// closed by `connect_timeout` (2 s here), and the broker serves everyone else meanwhile.
/// midge only: mosquitto has no CONNECT timeout (a silent socket is dropped by its default
/// 60 s keep-alive x 1.5, i.e. after 90 s, longer than this suite may take).
#[test]
fn slowloris_before_connect_is_closed_by_connect_timeout() {
    if !common::is_midge() {
        eprintln!("skipped against mosquitto: `connect_timeout` is a midge-only option");
        return;
    }
    let timeout = Duration::from_secs(2);
    let mut b = start(&["connect_timeout 2"]);
    let by = Bystander::new(b.port());
    let base = baseline(&b);
    let watch = by.watch();
    let t0 = Instant::now();
    let mut silent: Vec<Raw> = (0..50).map(|_| Raw::tcp(b.port())).collect();
    let connect = Connect::new(&unique_id("trickle")).encode();
    let mut tricklers: Vec<Raw> = (0..20).map(|_| Raw::tcp(b.port())).collect();
    // One byte of the CONNECT every 300 ms to each: it would take 6 s to complete.
    let mut i = 0;
    while t0.elapsed() < timeout + Duration::from_secs(3) && i < connect.len() {
        for t in tricklers.iter_mut() {
            t.send(&connect[i..i + 1]);
        }
        i += 1;
        thread::sleep(Duration::from_millis(300));
    }
    let limit = (timeout + Duration::from_secs(3)).saturating_sub(t0.elapsed());
    for (n, s) in silent.iter_mut().enumerate() {
        assert!(
            s.is_closed_within(limit.max(Duration::from_millis(100))),
            "silent connection {n} still open {:?} after connecting",
            t0.elapsed()
        );
    }
    for (n, t) in tricklers.iter_mut().enumerate() {
        assert!(
            t.is_closed_within(Duration::from_secs(1)),
            "trickled CONNECT {n} still open {:?} after connecting",
            t0.elapsed()
        );
    }
    drop(silent);
    drop(tricklers);
    let mut by = watch.finish(ROUND_TRIP, "slowloris before CONNECT");
    assert_recovered(&mut b, &mut by, &base, RSS_SLACK_KIB);
}

/// After CONNECT: PUBLISHes trickled one byte at a time by 20 clients do not hold up anyone,
/// and each arrives intact once complete.
#[test]
fn slowloris_trickled_publish_stalls_no_one() {
    let mut b = start(&[]);
    let by = Bystander::new(b.port());
    let mut sub = Raw::connected(b.port(), &unique_id("slow-sub"));
    sub.subscribe(1, &[("slow/#", 0)]);
    let base = baseline(&b);
    let watch = by.watch();
    let mut tricklers: Vec<(Raw, Vec<u8>)> = (0..20)
        .map(|i| {
            let raw = Raw::connected(b.port(), &unique_id("slow"));
            // Same length for all: the trickle sends byte i of every packet in turn.
            let bytes = publish(&format!("slow/{i:02}"), &[b'x'; 60], 0, false, 0);
            (raw, bytes)
        })
        .collect();
    let len = tricklers[0].1.len();
    let t0 = Instant::now();
    for i in 0..len {
        for (raw, bytes) in tricklers.iter_mut() {
            raw.send(&bytes[i..i + 1]);
        }
        thread::sleep(Duration::from_millis(50));
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "trickling is bounded"
        );
    }
    let got = sub.collect_publishes(20, Duration::from_secs(10));
    let mut topics: Vec<String> = got.iter().map(|m| m.topic.clone()).collect();
    topics.sort();
    let mut want: Vec<String> = (0..20).map(|i| format!("slow/{i:02}")).collect();
    want.sort();
    assert_eq!(topics, want);
    assert!(got.iter().all(|m| m.payload == [b'x'; 60]));
    // Trickle a second PUBLISH half-way, then leave.
    for (raw, bytes) in tricklers.iter_mut() {
        raw.send(&bytes[..len / 2]);
    }
    thread::sleep(Duration::from_millis(200));
    for (raw, _) in tricklers {
        raw.drop_abruptly();
    }
    let mut by = watch.finish(ROUND_TRIP, "slowloris after CONNECT");
    assert_recovered(&mut b, &mut by, &base, RSS_SLACK_KIB);
}

// ---------------------------------------------------------------- publish-then-close fleets

/// Issue 11 item 2: 200 clients each CONNECT with a will, PUBLISH and close (FIN) in one go;
/// every will arrives and no connection is left in CLOSE-WAIT, with keep-alive 60 and 0.
#[test]
fn publish_then_close_fleet_leaves_no_connection_and_every_will() {
    let mut b = start(&[]);
    let mut by = Bystander::new(b.port());
    let mut sub = Raw::connected(b.port(), &unique_id("fleet-sub"));
    sub.subscribe(1, &[("fleet/will/#", 1)]);
    let base = baseline(&b);
    let addr = SocketAddr::from(([127, 0, 0, 1], b.port()));
    for keepalive in [60u16, 0] {
        let n = 200;
        // All the TCP connections first, then a burst of one write and a close each: the
        // broker is busy with the burst, so data and FIN are often both waiting when it reads.
        let fleet: Vec<(TcpStream, Vec<u8>)> = (0..n)
            .map(|i| {
                let id = unique_id(&format!("fleet{keepalive}"));
                let mut bytes = Connect::new(&id)
                    .keepalive(keepalive)
                    .will(&format!("fleet/will/{keepalive}/{i}"), b"gone", 1, false)
                    .encode();
                bytes.extend(publish(&format!("fleet/data/{i}"), b"reading", 0, false, 0));
                let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                    .unwrap_or_else(|e| panic!("fleet client {i}: {e}"));
                s.set_nodelay(true).ok();
                (s, bytes)
            })
            .collect();
        thread::sleep(Duration::from_millis(200));
        // "Close" is the FIN (shutdown of the write side); the sockets stay open for reading
        // until the checks are done, so the broker's CONNACK finds a socket and no reset
        // tells the broker what its read loop should have seen.
        let fleet: Vec<TcpStream> = fleet
            .into_iter()
            .map(|(mut s, bytes)| {
                s.write_all(&bytes).expect("fleet write");
                s.shutdown(Shutdown::Write).ok();
                s
            })
            .collect();
        let wills = sub.collect_publishes_until_quiet(Duration::from_secs(3));
        let mut ids: Vec<&str> = wills
            .iter()
            .filter(|m| m.topic.starts_with(&format!("fleet/will/{keepalive}/")))
            .map(|m| m.topic.as_str())
            .collect();
        ids.sort();
        ids.dedup();
        let port = b.port();
        let no_close_wait = eventually(Duration::from_secs(5), || close_wait_count(port) == 0);
        assert_eq!(
            ids.len(),
            n,
            "keep-alive {keepalive}: {} of {n} wills arrived; {} connections in CLOSE-WAIT",
            ids.len(),
            close_wait_count(port)
        );
        assert!(
            no_close_wait,
            "keep-alive {keepalive}: {} connections stay in CLOSE-WAIT",
            close_wait_count(port)
        );
        by.assert_round_trip();
        drop(fleet);
    }
    assert_recovered(&mut b, &mut by, &base, RSS_SLACK_KIB);
}

// ---------------------------------------------------------------- takeover by another user

/// Issue 11 item 3: alice's persistent session holds unacknowledged QoS 1 messages (in flight
/// and queued) on a topic only alice may read; bob connects with the same client id and gets
/// none of them.
#[test]
fn takeover_by_another_user_receives_nothing_it_may_not_read() {
    let f = AuthFiles::new(
        &[("alice", "a-pass"), ("bob", "b-pass")],
        "user alice\ntopic readwrite secret/#\ntopic readwrite public/#\n\
         user bob\ntopic readwrite public/#\n",
    );
    let mut b = f.broker(false, &["max_inflight_messages 2"]);
    let port = b.port();
    let id = unique_id("shared-id");
    let alice = |cid: &str| Connect::new(cid).login("alice", "a-pass");
    let bob = |cid: &str| Connect::new(cid).login("bob", "b-pass");

    let (mut a, _) = Raw::connect(port, &alice(&id).clean(false));
    a.subscribe(1, &[("secret/#", 1)]);
    let (mut p, _) = Raw::connect(port, &alice(&unique_id("apub")));
    for i in 1..=4u16 {
        p.publish_complete("secret/x", format!("s{i}").as_bytes(), 1, false, i);
    }
    for _ in 0..2 {
        assert_eq!(a.expect_publish().topic, "secret/x"); // in flight, never acknowledged
    }
    a.drop_abruptly();
    thread::sleep(Duration::from_millis(300));
    // More while the session is offline: queued.
    p.publish_complete("secret/x", b"s5", 1, false, 5);

    let (mut r, _) = Raw::connect(port, &bob(&id).clean(false));
    let leaked = r.collect_publishes_until_quiet(Duration::from_millis(1500));
    assert!(
        leaked.iter().all(|m| !m.topic.starts_with("secret/")),
        "bob took over alice's session and received {:?}",
        leaked
            .iter()
            .map(|m| (
                m.topic.clone(),
                String::from_utf8_lossy(&m.payload).into_owned()
            ))
            .collect::<Vec<_>>()
    );
    // The session still works for what bob may read. Not asserted against mosquitto 2.0.11,
    // which delivers nothing more to the resumed session here (observed with
    // `max_inflight_messages 2`); what bob must not get is the point of this test.
    r.subscribe(2, &[("public/#", 1)]);
    p.publish_complete("public/y", b"ok", 1, false, 6);
    if b.is_midge() {
        let m = r.recv_publish_ack();
        assert_eq!(m.topic, "public/y");
    }
    b.assert_running();
    assert_no_panic(&b);
}

// ---------------------------------------------------------------- wills everywhere

/// Issue 11 item 4: a will on `$SYS/broker/version` (retained) is neither published nor
/// retained: clients never publish into `$SYS`.
#[test]
fn will_into_sys_is_not_published_nor_retained() {
    let mut b = start(&[]);
    let mut by = Bystander::new(b.port());
    let base = baseline(&b);
    let mut watcher = Raw::connected(b.port(), &unique_id("sys-watch"));
    watcher.subscribe(1, &[("$SYS/broker/version", 0), ("$SYS/#", 0)]);
    let planted = b"planted by a client".to_vec();
    let (w, rc) = try_connect(
        b.port(),
        &Connect::new(&unique_id("sys-will")).will("$SYS/broker/version", &planted, 1, true),
    );
    w.drop_abruptly();
    eprintln!("will on $SYS: CONNACK {rc:?}");
    let got = watcher.collect_publishes_until_quiet(Duration::from_millis(1500));
    assert!(
        got.iter().all(|m| m.payload != planted),
        "a client's will was published into $SYS: {got:?}"
    );
    let mut late = Raw::connected(b.port(), &unique_id("sys-late"));
    late.subscribe(1, &[("$SYS/broker/version", 0)]);
    let retained = late.collect_publishes_until_quiet(Duration::from_millis(1000));
    assert!(
        retained.iter().all(|m| m.payload != planted),
        "a client's will was retained in $SYS: {retained:?}"
    );
    drop(watcher);
    drop(late);
    assert_recovered(&mut b, &mut by, &base, RSS_SLACK_KIB);
}

/// Wills the client could not publish as a PUBLISH: on a topic the ACL forbids, larger than
/// `message_size_limit`, 5,000 levels deep. None reaches a reader allowed to read everything;
/// the oversize one refuses the CONNECT (as mosquitto: rc 5), the deep one is refused too.
#[test]
fn wills_get_the_checks_of_a_publish() {
    let f = AuthFiles::new(
        &[("watcher", "w-pass")],
        "topic readwrite public/#\n\
         user watcher\ntopic read #\ntopic read $SYS/#\n",
    );
    let mut b = f.broker(true, &["message_size_limit 100"]);
    let port = b.port();
    let mut by = Bystander::under(port, "public/");
    let (mut watcher, _) = Raw::connect(
        port,
        &Connect::new(&unique_id("watcher")).login("watcher", "w-pass"),
    );
    watcher.subscribe(1, &[("#", 1)]);
    let base = baseline(&b);

    // A forbidden topic: the CONNECT may be refused or accepted; the will is never published.
    let (w, rc) = try_connect(
        port,
        &Connect::new(&unique_id("w-acl")).will("forbidden/w", b"acl", 1, false),
    );
    eprintln!("will on a forbidden topic: CONNACK {rc:?}");
    w.drop_abruptly();
    // Oversize: refused.
    let (w, rc) = try_connect(
        port,
        &Connect::new(&unique_id("w-big")).will("public/big", &[b'b'; 1000], 1, false),
    );
    assert!(
        rc != Some(0),
        "a will of 1000 bytes with message_size_limit 100 was accepted (CONNACK 0)"
    );
    w.drop_abruptly();
    // 5,000 levels: refused (a topic past max_topic_levels, as mosquitto's hierarchy limit).
    let deep = format!("public/{}", levels("d", 4999));
    let (w, rc) = try_connect(
        port,
        &Connect::new(&unique_id("w-deep")).will(&deep, b"deep", 1, false),
    );
    eprintln!("will with 5,000 levels: CONNACK {rc:?}");
    if b.is_midge() {
        assert!(rc != Some(0), "a will of 5,000 levels was accepted");
    }
    w.drop_abruptly();

    // An allowed will does arrive: the watcher is listening.
    let (w, rc) = try_connect(
        port,
        &Connect::new(&unique_id("w-ok")).will("public/ok", b"ok", 1, false),
    );
    assert_eq!(rc, Some(0));
    w.drop_abruptly();
    let got = watcher.collect_publishes_until_quiet(Duration::from_millis(1500));
    let topics: Vec<String> = got
        .iter()
        .filter(|m| !m.topic.starts_with("public/bystander/"))
        .map(|m| m.topic.chars().take(40).collect())
        .collect();
    assert_eq!(
        topics,
        vec!["public/ok".to_string()],
        "only the allowed will may be published"
    );
    assert_recovered(&mut b, &mut by, &base, RSS_SLACK_KIB);
}

// ---------------------------------------------------------------- retained floods

/// Issue 11 item 5a: with 100k retained messages, 2,000 wildcard SUBSCRIBEs that match none
/// of them do not stall the bystander (round trips stay under 1 s). midge runs one shard so
/// the attacker and the bystander share an event loop: a shard stalled by a retained scan is
/// seen, not hidden by the other shard. Two shapes of filter, pipelined: `+/nomatch-N/#`,
/// which a retained trie answers at once, and `flood/+/nomatch-N`, under which every one of
/// the 100k `flood/N` levels has to be looked at (a trie walks them too): there the broker
/// must yield to the loop between packets, as mosquitto does (it serves one packet per
/// client per loop turn; its bystander saw at most 26 ms here).
#[test]
fn retained_flood_with_wildcard_subscribers_stalls_no_one() {
    let mut b = start(&["shards 1"]);
    let port = b.port();
    let by = Bystander::new(port);

    // 100k retained messages, pipelined at QoS 0 in one stream; a PINGRESP after them says
    // the broker has read them all.
    let n = 100_000;
    let mut flood = Raw::connected(port, &unique_id("flood"));
    let mut bytes = Vec::with_capacity(n * 24);
    for i in 0..n {
        bytes.extend(publish(&format!("flood/{i}/v"), b"ret", 0, true, 0));
    }
    let t0 = Instant::now();
    flood.send(&bytes);
    flood.send(&common::raw::pingreq());
    match flood.recv(Duration::from_secs(60)) {
        Ok(p) if p.kind() == PINGRESP => {}
        other => panic!("100k retained PUBLISHes then PINGREQ: {other:?}"),
    }
    eprintln!("100k retained messages published in {:?}", t0.elapsed());
    flood.disconnect();
    let mut check = Raw::connected(port, &unique_id("flood-check"));
    check.subscribe(1, &[(&format!("flood/{}/v", n - 1), 0)]);
    let last = check.expect_publish();
    assert!(last.retain, "the last retained message is stored");
    check.disconnect();

    let base = baseline(&b);
    let watch = by.watch();
    let mut attacker = Raw::connected(port, &unique_id("wild"));
    let mut subs = Vec::new();
    for i in 0..2000u16 {
        let filter = if i % 2 == 0 {
            format!("+/nomatch-{i}/#")
        } else {
            format!("flood/+/nomatch-{i}")
        };
        subs.extend(subscribe(i + 1, &[(&filter, 0)]));
    }
    let t0 = Instant::now();
    attacker.send(&subs);
    let mut acks = 0;
    let deadline = Instant::now() + Duration::from_secs(90);
    while acks < 2000 && Instant::now() < deadline && !watch.failed() {
        match attacker.recv(Duration::from_secs(1)) {
            Ok(p) if p.kind() == SUBACK => acks += 1,
            Ok(p) => panic!("unexpected reply to a non-matching SUBSCRIBE: {p:?}"),
            Err(RecvError::Timeout) => {}
            Err(RecvError::Closed) => panic!("the attacker was closed after {acks} SUBACKs"),
        }
    }
    eprintln!("{acks} SUBACKs in {:?}", t0.elapsed());
    let mut by = watch.finish(Duration::from_secs(1), "2,000 wildcard SUBSCRIBEs");
    assert_eq!(acks, 2000, "SUBACKs within 90 s");
    attacker.disconnect();
    assert_recovered(&mut b, &mut by, &base, RSS_SLACK_KIB);
}

// ---------------------------------------------------------------- big packets

/// Issue 11 items 2 and 5b: 16 clients each send 7 of an announced 8 MB PUBLISH and close,
/// six rounds: the buffers are freed, RSS returns near the baseline, the bystander is served.
/// "Near" is 96 MiB here, less than one round's 128 MB: the allocator may keep freed pages
/// (mosquitto 2.0.11 keeps 65-110 MiB after these rounds); what must not happen is memory
/// that grows with every round (midge kept ~120 MiB per round, 1.3 GiB after eight).
#[test]
fn big_partial_publishes_then_close_give_memory_back() {
    let mut b = start(&["max_packet_size 16777216"]);
    let port = b.port();
    let by = Bystander::new(port);
    let base = baseline(&b);
    let watch = by.watch();
    let body_len = 8 * 1024 * 1024;
    for round in 0..6 {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                thread::spawn(move || {
                    let mut a = Raw::connected(port, &unique_id(&format!("big{round}-{i}")));
                    let mut bytes = vec![0x30];
                    bytes.extend(encode_len(body_len));
                    bytes.extend(mqtt_str(b"big/topic"));
                    a.send(&bytes);
                    let chunk = vec![0xAB; 1024 * 1024];
                    for _ in 0..7 {
                        a.send(&chunk);
                    }
                    a.drop_abruptly();
                })
            })
            .collect();
        for h in handles {
            h.join().expect("big publisher");
        }
        let pid = b.pid();
        eprintln!(
            "round {round}: rss {} KiB, peak {} KiB",
            rss_kib(pid),
            peak_kib(pid)
        );
    }
    let mut by = watch.finish(ROUND_TRIP, "8 MB partial PUBLISHes");
    assert_recovered(&mut b, &mut by, &base, 96 * 1024);
}

fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
