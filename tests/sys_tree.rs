//! The `$SYS/broker/...` tree, read as operators read mosquitto's: `mosquitto_sub -t '$SYS/#'`.
//! Topic names are mosquitto 2.0's (`src/sys_tree.c`); with `MIDGE_TEST_BROKER=mosquitto` the
//! same test runs against mosquitto, which is how the names are checked.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::auth_files::AuthFiles;
use common::clients::{mosquitto_pub, MosqSub, Rumq};
use common::raw::{self, Connect, Raw, RecvError};
use common::v5::{opts, V5};
use common::Broker;
use midge::protocol::Packet;

/// Every counter topic of mosquitto 2.0's tree that midge publishes, all numbers but the
/// first two.
const TOPICS: &[&str] = &[
    "$SYS/broker/version",
    "$SYS/broker/uptime",
    "$SYS/broker/clients/total",
    "$SYS/broker/clients/maximum",
    "$SYS/broker/clients/connected",
    "$SYS/broker/clients/active",
    "$SYS/broker/clients/disconnected",
    "$SYS/broker/clients/inactive",
    "$SYS/broker/clients/expired",
    "$SYS/broker/messages/received",
    "$SYS/broker/messages/sent",
    "$SYS/broker/publish/messages/received",
    "$SYS/broker/publish/messages/sent",
    "$SYS/broker/publish/messages/dropped",
    "$SYS/broker/publish/bytes/received",
    "$SYS/broker/publish/bytes/sent",
    "$SYS/broker/bytes/received",
    "$SYS/broker/bytes/sent",
    "$SYS/broker/subscriptions/count",
    "$SYS/broker/shared_subscriptions/count",
    "$SYS/broker/retained messages/count",
    "$SYS/broker/store/messages/count",
    "$SYS/broker/store/messages/bytes",
    "$SYS/broker/messages/stored",
];

/// The counters behind mosquitto's `load/<name>/{1min,5min,15min}` moving averages.
const LOADS: &[&str] = &[
    "messages/received",
    "messages/sent",
    "publish/dropped",
    "publish/received",
    "publish/sent",
    "bytes/received",
    "bytes/sent",
    "sockets",
    "connections",
];

/// The 27 load topics.
fn load_topics() -> Vec<String> {
    let mut out = Vec::new();
    for name in LOADS {
        for window in ["1min", "5min", "15min"] {
            out.push(format!("$SYS/broker/load/{name}/{window}"));
        }
    }
    out
}

/// midge's own figures for shard `shard` (not persisted: no store latency).
fn midge_topics(shard: usize) -> Vec<String> {
    [
        "connections",
        "messages/per_second",
        "loop/busy",
        "cross_shard/sent",
        "cross_shard/received",
        "cross_shard/handoffs",
        "dormancy/hosted_turns",
        "dormancy/dozes",
        "publish/dropped_qos0",
        "queued/messages",
        "queued/bytes",
    ]
    .iter()
    .map(|t| format!("$SYS/broker/midge/shard/{shard}/{t}"))
    .collect()
}

/// Every topic this test expects from the broker under test.
fn expected_topics(shards: usize) -> Vec<String> {
    let mut all: Vec<String> = TOPICS.iter().map(|t| t.to_string()).collect();
    all.extend(load_topics());
    if common::is_midge() {
        all.push("$SYS/broker/midge/shards".into());
        (0..shards).for_each(|s| all.extend(midge_topics(s)));
    }
    all
}

const RETAINED_COUNT: &str = "$SYS/broker/retained messages/count";

/// A `$SYS/#` subscriber that remembers the latest value of each topic and every topic seen.
struct SysWatch {
    sub: MosqSub,
    latest: HashMap<String, String>,
    uptimes: usize,
}

impl SysWatch {
    fn start(port: u16, extra: &[&str]) -> SysWatch {
        let mut args = vec!["-t", "$SYS/#", "-W", "60"];
        args.extend_from_slice(extra);
        SysWatch {
            sub: MosqSub::start(port, &args),
            latest: HashMap::new(),
            uptimes: 0,
        }
    }

    /// Reads messages until `done` holds or `limit` passes; returns whether it held.
    fn until(&mut self, limit: Duration, done: impl Fn(&SysWatch) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while !done(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            for m in self.sub.messages(1, left.min(Duration::from_millis(200))) {
                if m.topic == "$SYS/broker/uptime" {
                    self.uptimes += 1;
                }
                // The line format is "TOPIC PAYLOAD": put back the one topic with a space.
                let line = format!("{} {}", m.topic, m.payload);
                let (topic, payload) = match line.strip_prefix(RETAINED_COUNT) {
                    Some(value) => (RETAINED_COUNT.to_string(), value.trim_start().to_string()),
                    None => (m.topic, m.payload),
                };
                self.latest.insert(topic, payload);
            }
        }
        true
    }

    fn number(&self, topic: &str) -> u64 {
        let v = &self.latest[topic];
        v.parse()
            .unwrap_or_else(|_| panic!("{topic} is not a number: {v:?}"))
    }

    /// A figure with decimals (load averages, rates, fractions).
    fn decimal(&self, topic: &str) -> f64 {
        let v = &self.latest[topic];
        let x: f64 = v
            .parse()
            .unwrap_or_else(|_| panic!("{topic} is not a decimal: {v:?}"));
        assert!(x.is_finite() && x >= 0.0, "{topic}: {v}");
        x
    }

    /// Waits for the next tick (one more `uptime`) and two more, so that every counter the
    /// broker sums has been published since the last change the test made.
    fn settle(&mut self) {
        let want = self.uptimes + 2;
        assert!(
            self.until(Duration::from_secs(6), |w| w.uptimes >= want),
            "no uptime for 6 s with sys_interval 1"
        );
    }
}

#[test]
fn sys_tree_names_values_and_movement() {
    let broker = Broker::start_with(&["sys_interval 1", "shards 2"]);
    let port = broker.port();
    // On shard 1, not the publishing shard 0: the tree crosses shards like any message.
    let id = common::id_on_shard("sys", 1, 2);
    let mut w = SysWatch::start(port, &["-i", &id]);
    let expected = expected_topics(2);
    let all = w.until(Duration::from_secs(6), |w| {
        expected.iter().all(|t| w.latest.contains_key(t))
    });
    let missing: Vec<_> = expected
        .iter()
        .filter(|t| !w.latest.contains_key(*t))
        .collect();
    assert!(all, "topics never published: {missing:?}");

    // Sane values, once the figures of a tick after this subscriber connected are in (the
    // retained ones it first gets may be from before).
    w.settle();
    assert!(!w.latest["$SYS/broker/version"].is_empty());
    let uptime = &w.latest["$SYS/broker/uptime"];
    let secs = uptime
        .strip_suffix(" seconds")
        .expect("uptime: 'N seconds'");
    assert!(secs.parse::<u64>().unwrap() < 60, "{uptime}");
    for t in &TOPICS[2..] {
        w.number(t);
    }
    for t in load_topics() {
        w.decimal(&t);
    }
    assert_eq!(
        w.latest["$SYS/broker/store/messages/count"],
        w.latest["$SYS/broker/messages/stored"]
    );
    // The store holds at least the retained messages (the tree's own among them).
    assert!(
        w.number("$SYS/broker/store/messages/count")
            >= w.number("$SYS/broker/retained messages/count")
    );
    if common::is_midge() {
        assert_eq!(w.number("$SYS/broker/midge/shards"), 2);
        let connected: u64 = (0..2)
            .map(|s| w.number(&format!("$SYS/broker/midge/shard/{s}/connections")))
            .sum();
        assert_eq!(connected, w.number("$SYS/broker/clients/connected"));
        for s in 0..2 {
            let busy = w.decimal(&format!("$SYS/broker/midge/shard/{s}/loop/busy"));
            assert!(busy <= 1.0, "shard {s} busy {busy}");
            w.decimal(&format!("$SYS/broker/midge/shard/{s}/messages/per_second"));
            w.number(&format!("$SYS/broker/midge/shard/{s}/publish/dropped_qos0"));
        }
        // The tree is published on shard 0 and crosses to this subscriber on shard 1.
        assert!(w.number("$SYS/broker/midge/shard/0/cross_shard/sent") > 0);
        assert!(w.number("$SYS/broker/midge/shard/1/cross_shard/received") > 0);
    }
    assert!(w.number("$SYS/broker/clients/connected") >= 1);
    assert_eq!(
        w.latest["$SYS/broker/clients/connected"],
        w.latest["$SYS/broker/clients/active"]
    );
    assert!(w.number("$SYS/broker/clients/maximum") >= w.number("$SYS/broker/clients/total"));
    assert!(w.number("$SYS/broker/messages/sent") >= w.number("$SYS/broker/publish/messages/sent"));
    assert!(w.number("$SYS/broker/bytes/received") > 0);

    let received = w.number("$SYS/broker/publish/messages/received");
    let packets = w.number("$SYS/broker/messages/received");
    let bytes = w.number("$SYS/broker/publish/bytes/received");
    let retained = w.number("$SYS/broker/retained messages/count");
    let subscriptions = w.number("$SYS/broker/subscriptions/count");
    let shared = w.number("$SYS/broker/shared_subscriptions/count");
    let stored = w.number("$SYS/broker/store/messages/count");
    let stored_bytes = w.number("$SYS/broker/store/messages/bytes");

    // Three retained messages and two subscriptions held open.
    for i in 0..3 {
        mosquitto_pub(port, &["-t", &format!("sys/test/{i}"), "-m", "12345", "-r"]);
    }
    let (mut holder, _) = Rumq::connect(port, "sys-holder", true);
    holder.subscribe("sys/a", 0);
    holder.subscribe("sys/b/#", 1);
    holder.subscribe("$share/g/sys/c", 1);
    // A client may not publish into $SYS: the `$SYS/#` subscriber never sees it.
    holder.publish("$SYS/x", "fake", 0, false);

    // Every PUBLISH read counts as received, refused or not (mosquitto 2.0.20; Debian's 2.0.11
    // misses retained ones: three retained mosquitto_pub runs and one more PUBLISH move it
    // by one there).
    let want_received = if common::is_midge() {
        received + 4
    } else {
        received + 1
    };
    let moved = w.until(Duration::from_secs(6), |w| {
        w.number("$SYS/broker/publish/messages/received") >= want_received
            && w.number("$SYS/broker/messages/received") > packets + 3
            && w.number("$SYS/broker/publish/bytes/received") >= bytes + 15
            && w.number("$SYS/broker/retained messages/count") == retained + 3
            && w.number("$SYS/broker/subscriptions/count") == subscriptions + 2
            && w.number("$SYS/broker/shared_subscriptions/count") == shared + 1
            && w.number("$SYS/broker/store/messages/count") >= stored + 3
            && w.number("$SYS/broker/store/messages/bytes") >= stored_bytes + 15
            && w.decimal("$SYS/broker/load/publish/received/1min") > 0.0
            && w.decimal("$SYS/broker/load/bytes/received/1min") > 0.0
            && w.decimal("$SYS/broker/load/sockets/1min") > 0.0
            && w.decimal("$SYS/broker/load/connections/1min") > 0.0
    });
    assert!(
        moved,
        "counters did not move as expected: {:?}",
        w.latest
            .iter()
            .filter(|(t, _)| t.contains("received") || t.contains("count") || t.contains("store"))
            .collect::<Vec<_>>()
    );
    w.settle();
    assert!(
        !w.latest.contains_key("$SYS/x"),
        "a client's $SYS publish was delivered"
    );
    assert_eq!(
        w.number("$SYS/broker/retained messages/count"),
        retained + 3,
        "retained count must stay as the test left it"
    );
}

#[test]
fn acl_without_a_read_rule_hides_the_tree() {
    let acl = "user alice\ntopic read $SYS/#\n\nuser bob\ntopic readwrite t/#\n";
    let files = AuthFiles::new(&[("alice", "pa"), ("bob", "pb")], acl);
    let broker = files.broker(false, &["sys_interval 1"]);
    let port = broker.port();
    let mut bob = SysWatch::start(port, &["-u", "bob", "-P", "pb"]);
    let mut alice = SysWatch::start(port, &["-u", "alice", "-P", "pa"]);
    assert!(
        alice.until(Duration::from_secs(4), |w| w.uptimes >= 2),
        "alice, who may read $SYS/#, got no uptime"
    );
    bob.until(Duration::from_secs(1), |_| false);
    assert!(bob.latest.is_empty(), "bob read {:?}", bob.latest);
}

#[test]
fn sys_interval_zero_publishes_nothing() {
    let broker = Broker::start_with(&["sys_interval 0"]);
    let mut w = SysWatch::start(broker.port(), &[]);
    w.until(Duration::from_millis(2500), |_| false);
    assert!(w.latest.is_empty(), "published: {:?}", w.latest);
}

#[test]
fn wills_are_not_counted_as_received_publishes() {
    let broker = Broker::start_with(&["sys_interval 1"]);
    let port = broker.port();
    let mut w = SysWatch::start(port, &[]);
    let (mut watcher, _) = Rumq::connect(port, "sys-will-watch", true);
    watcher.subscribe("sys/will", 0);
    let mut dying = MosqSub::start(
        port,
        &[
            "-t",
            "sys/none",
            "-i",
            "sys-dying",
            "--will-topic",
            "sys/will",
            "--will-payload",
            "bye",
        ],
    );
    w.settle();
    let received = w.number("$SYS/broker/publish/messages/received");
    let bytes = w.number("$SYS/broker/publish/bytes/received");
    dying.kill();
    let wills = watcher.messages(1, Duration::from_secs(5));
    assert_eq!(wills.len(), 1, "the will was not published");
    w.settle();
    assert_eq!(
        w.number("$SYS/broker/publish/messages/received"),
        received,
        "a will is not a PUBLISH received"
    );
    assert_eq!(w.number("$SYS/broker/publish/bytes/received"), bytes);
}

#[test]
fn messages_queued_for_an_offline_session_are_in_the_store_count() {
    let broker = Broker::start_with(&["sys_interval 1", "shards 2"]);
    let port = broker.port();
    let mut w = SysWatch::start(port, &[]);
    let (mut offline, _) = Rumq::connect(port, "sys-offline", false);
    offline.subscribe("sys/q", 1);
    offline.disconnect();
    w.settle();
    let stored = w.number("$SYS/broker/store/messages/count");
    let stored_bytes = w.number("$SYS/broker/store/messages/bytes");
    for _ in 0..3 {
        mosquitto_pub(port, &["-t", "sys/q", "-q", "1", "-m", "abcd"]);
    }
    let queued = |w: &SysWatch, what: &str| -> u64 {
        (0..2)
            .map(|s| w.number(&format!("$SYS/broker/midge/shard/{s}/queued/{what}")))
            .sum()
    };
    let counted = w.until(Duration::from_secs(6), |w| {
        // At least: the count also holds the tree's own retained messages.
        w.number("$SYS/broker/store/messages/count") >= stored + 3
            && w.number("$SYS/broker/store/messages/bytes") >= stored_bytes + 12
            && (!common::is_midge() || (queued(w, "messages") == 3 && queued(w, "bytes") == 12))
    });
    assert!(
        counted,
        "{:?}",
        w.latest
            .iter()
            .filter(|(t, _)| t.contains("store") || t.contains("queued"))
            .collect::<Vec<_>>()
    );
}

/// The `$SYS` messages a new MQTT 5 subscriber to `filter` receives within `quiet` of
/// silence: (topic, retained, Message Expiry Interval), in arrival order.
fn v5_sys_messages(
    port: u16,
    id: &str,
    filter: &str,
    quiet: Duration,
) -> Vec<(String, bool, Option<u32>)> {
    let mut v5 = V5::subscribed(port, id, &[(filter, opts(0))]);
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match v5.recv(quiet) {
            Ok(Packet::Publish(p)) => out.push((
                p.topic.to_string(),
                p.retain,
                p.properties.message_expiry_interval,
            )),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(RecvError::Timeout) => break,
            Err(RecvError::Closed) => panic!("connection closed"),
        }
    }
    v5.disconnect();
    out
}

#[test]
fn sys_messages_carry_a_60_second_expiry_but_version() {
    let broker = Broker::start_with(&["sys_interval 1"]);
    let port = broker.port();
    assert!(
        common::eventually(Duration::from_secs(5), || {
            let got = v5_sys_messages(
                port,
                "sys-exp-wait",
                "$SYS/broker/uptime",
                Duration::from_millis(300),
            );
            !got.is_empty()
        }),
        "no uptime published"
    );
    // The retained tree first, then at least one tick of live values. mosquitto's loop may
    // publish a tick up to ~2 s after the last on a loaded machine: wait that long for it.
    let got = v5_sys_messages(port, "sys-expiry", "$SYS/#", Duration::from_millis(3000));
    let version: Vec<_> = got
        .iter()
        .filter(|m| m.0 == "$SYS/broker/version")
        .collect();
    assert!(!version.is_empty(), "no version: {got:?}");
    assert!(
        version.iter().all(|m| m.2.is_none()),
        "version is published once and never expires: {version:?}"
    );
    let uptime: Vec<_> = got.iter().filter(|m| m.0 == "$SYS/broker/uptime").collect();
    assert!(uptime.len() >= 2, "retained and live uptime: {got:?}");
    for (topic, _, expiry) in got.iter().filter(|m| m.0 != "$SYS/broker/version") {
        assert!(
            matches!(expiry, Some(n) if (1..=60).contains(n)),
            "{topic}: Message Expiry Interval {expiry:?}, want 60 s or what is left of it"
        );
    }
    assert!(
        got.iter().any(|m| !m.1 && m.2 == Some(60)),
        "a live value carries the whole 60 s: {got:?}"
    );
}

#[test]
fn a_sys_value_not_refreshed_for_60_seconds_is_no_longer_retained() {
    let broker = Broker::start_with(&["sys_interval 1"]);
    let port = broker.port();
    let started = Instant::now();
    // `clients/expired` stays 0, so it is published once (only changed values are);
    // `uptime` changes at every tick; `version` never expires.
    let retained = |id: &str| -> Vec<String> {
        let mut topics: Vec<String> = [
            "$SYS/broker/clients/expired",
            "$SYS/broker/uptime",
            "$SYS/broker/version",
        ]
        .iter()
        .flat_map(|t| v5_sys_messages(port, id, t, Duration::from_millis(300)))
        .filter(|m| m.1)
        .map(|m| m.0)
        .collect();
        topics.sort();
        topics.dedup();
        topics
    };
    assert!(
        common::eventually(Duration::from_secs(5), || retained("sys-early").len() == 3),
        "the tree was not retained: {:?}",
        retained("sys-early")
    );
    std::thread::sleep(Duration::from_secs(62).saturating_sub(started.elapsed()));
    assert_eq!(
        retained("sys-late"),
        ["$SYS/broker/uptime", "$SYS/broker/version"],
        "after 62 s only the refreshed values and version are retained"
    );
}

#[test]
fn a_message_queued_for_several_sessions_is_stored_once() {
    let broker = Broker::start_with(&["sys_interval 1", "shards 2"]);
    let port = broker.port();
    let mut w = SysWatch::start(port, &[]);
    // Two offline sessions on shard 0 and one on shard 1 (midge): the same message is held
    // by sessions of one shard and of two.
    for (prefix, shard) in [("sys-many-a", 0), ("sys-many-b", 0), ("sys-many-c", 1)] {
        let id = common::id_on_shard(prefix, shard, 2);
        let (mut offline, _) = Rumq::connect(port, &id, false);
        offline.subscribe("sys/many", 1);
        offline.disconnect();
    }
    // Twice: the first tick's figures predate the tree's own retained values.
    w.settle();
    w.settle();
    let stored = w.number("$SYS/broker/store/messages/count");
    let stored_bytes = w.number("$SYS/broker/store/messages/bytes");
    let payload = "x".repeat(100);
    for _ in 0..3 {
        mosquitto_pub(port, &["-t", "sys/many", "-q", "1", "-m", &payload]);
    }
    // The tree's own retained values change length as they change: a few bytes either way.
    let counted = w.until(Duration::from_secs(8), |w| {
        let bytes = w.number("$SYS/broker/store/messages/bytes");
        w.number("$SYS/broker/store/messages/count") == stored + 3
            && bytes.abs_diff(stored_bytes + 300) < 30
    });
    assert!(
        counted,
        "three messages held by three sessions each: count {} -> {}, bytes {} -> {}",
        stored,
        w.number("$SYS/broker/store/messages/count"),
        stored_bytes,
        w.number("$SYS/broker/store/messages/bytes")
    );
    w.settle();
    assert_eq!(w.number("$SYS/broker/store/messages/count"), stored + 3);
    if common::is_midge() {
        let queued: u64 = (0..2)
            .map(|s| w.number(&format!("$SYS/broker/midge/shard/{s}/queued/messages")))
            .sum();
        assert_eq!(queued, 9, "each session queues its copy");
    }
}

const SENT: &str = "$SYS/broker/publish/messages/sent";
const SENT_BYTES: &str = "$SYS/broker/publish/bytes/sent";

/// The PUBLISH counters as a new client finds them (their retained values, as of the last
/// tick), and the PUBLISHes that reading cost (the client's own deliveries count as sent
/// too): (sent, bytes sent, PUBLISHes received, their payload bytes). The client reads until
/// the broker closes the connection after its DISCONNECT, so it sees every PUBLISH the broker
/// wrote to it.
fn read_sent(port: u16, id: &str) -> (u64, u64, u64, u64) {
    let mut r = Raw::connected(port, id);
    r.send(&raw::subscribe(1, &[(SENT, 0), (SENT_BYTES, 0)]));
    let mut values: HashMap<String, u64> = HashMap::new();
    let (mut received, mut bytes) = (0, 0);
    let mut note = |p: &raw::Packet, values: &mut HashMap<String, u64>| {
        if p.kind() == raw::PUBLISH {
            let m = p.publish();
            received += 1;
            bytes += m.payload.len() as u64;
            let value = String::from_utf8(m.payload).unwrap().parse().unwrap();
            values.entry(m.topic).or_insert(value);
        }
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while values.len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        match r.recv(left) {
            Ok(p) => note(&p, &mut values),
            Err(e) => panic!("no retained {SENT} and {SENT_BYTES}: {e:?}, got {values:?}"),
        }
    }
    r.send(&raw::disconnect());
    for p in r.expect_closed(Duration::from_secs(5)) {
        note(&p, &mut values);
    }
    (values[SENT], values[SENT_BYTES], received, bytes)
}

#[test]
fn publishes_sent_are_counted_as_mosquitto_counts_them() {
    let broker = Broker::start_with(&["sys_interval 1", "shards 2"]);
    let port = broker.port();
    let tick = || std::thread::sleep(Duration::from_millis(2500));
    tick();
    let (sent, sent_bytes, read_n, read_bytes) = read_sent(port, "sys-sent-before");

    // Every PUBLISH written to a client counts once with its payload, whatever its QoS
    // (mosquitto from 2.0.4 on; 2.0.0-2.0.3 counted QoS 0 only): live ones at each QoS...
    let mut live = Raw::subscribed(port, "sys-sent-live", &[("sent/live/#", 2)]);
    for (qos, payload) in [("0", 10), ("1", 20), ("2", 30)] {
        let payload = "p".repeat(payload);
        mosquitto_pub(port, &["-t", "sent/live/x", "-q", qos, "-m", &payload]);
    }
    let got = live.collect_publishes(3, Duration::from_secs(5));
    assert_eq!(got.iter().map(|m| m.qos).collect::<Vec<_>>(), [0, 1, 2]);
    live.disconnect();
    // ... a retained message sent to a new subscription...
    mosquitto_pub(port, &["-t", "sent/ret", "-r", "-q", "1", "-m", "retained"]);
    let mut late = Raw::subscribed(port, "sys-sent-ret", &[("sent/ret", 1)]);
    assert_eq!(late.collect_publishes(1, Duration::from_secs(5)).len(), 1);
    late.disconnect();
    // ... and messages queued for an offline session, sent when it comes back.
    let resume = Connect::new("sys-sent-queue").clean(false);
    let (mut queue, _) = Raw::connect(port, &resume);
    queue.subscribe(1, &[("sent/queue", 1)]);
    queue.disconnect();
    for _ in 0..2 {
        mosquitto_pub(port, &["-t", "sent/queue", "-q", "1", "-m", "abcde"]);
    }
    let (mut queue, _) = Raw::connect(port, &resume);
    assert_eq!(queue.collect_publishes(2, Duration::from_secs(5)).len(), 2);
    queue.disconnect();
    let (want_n, want_bytes) = (3 + 1 + 2, 60 + 8 + 10);

    tick();
    let (sent_after, bytes_after, _, _) = read_sent(port, "sys-sent-after");
    assert_eq!(
        (sent_after - sent, bytes_after - sent_bytes),
        (read_n + want_n, read_bytes + want_bytes),
        "PUBLISHes sent (and their payload bytes) since the first reading: its own {read_n} \
         ({read_bytes} bytes) and the test's {want_n} ({want_bytes} bytes)"
    );
}
