//! Helpers for the tests of work between shards (`handoff`, `dormancy`): midge's per-shard
//! `$SYS` counters and a stream of messages from a client homed on one shard to a client
//! homed on another.

use std::thread;
use std::time::{Duration, Instant};

use super::clients::Rumq;

const LIMIT: Duration = Duration::from_secs(20);

/// The number published on `topic` (a `$SYS` counter, published every second with
/// `sys_interval 1`) once it is at least `at_least`, or the last value seen within `within`.
pub fn sys_counter(port: u16, topic: &str, at_least: u64, within: Duration) -> u64 {
    let (mut c, _) = Rumq::connect(port, &super::unique_id("sys"), true);
    c.subscribe(topic, 0);
    let deadline = Instant::now() + within;
    let mut last = 0;
    while Instant::now() < deadline {
        for m in c.messages(1, Duration::from_millis(1500)) {
            last = m.payload.parse().expect("a number");
        }
        if last >= at_least {
            break;
        }
    }
    c.disconnect();
    last
}

/// `n` messages at each QoS on `{prefix}/{qos}` from client `publisher` to client
/// `subscriber`, a few milliseconds apart (so that a shard sleeps between them): every one
/// arrives once, in order per QoS, and nothing after the last.
pub fn publish_between(port: u16, publisher: &str, subscriber: &str, prefix: &str, n: usize) {
    let (mut sub, _) = Rumq::connect(port, subscriber, true);
    sub.subscribe(&format!("{prefix}/#"), 2);
    let (mut publisher, _) = Rumq::connect(port, publisher, true);
    for q in 0..=2u8 {
        let topic = format!("{prefix}/{q}");
        let sent: Vec<String> = (0..n).map(|i| format!("q{q}-{i}")).collect();
        for p in &sent {
            publisher.publish(&topic, p, q, false);
            thread::sleep(Duration::from_millis(3));
        }
        let got: Vec<String> = sub
            .messages(n, LIMIT)
            .into_iter()
            .map(|m| {
                assert_eq!(m.topic, topic);
                assert_eq!(m.qos, q);
                m.payload
            })
            .collect();
        assert_eq!(got, sent, "QoS {q}: every message once, in order");
    }
    assert!(
        sub.messages(1, Duration::from_millis(300)).is_empty(),
        "no duplicate after the last message"
    );
    publisher.disconnect();
    sub.disconnect();
}
