//! `max_queued_bytes`: the bound on a session's queue in payload bytes, and on a connected
//! client's unsent QoS 0 output. Apart from `tests/backpressure.rs`, whose memory test must
//! run alone: these tests flood brokers of their own, and run beside each other in one binary
//! they made that test's RSS reading jump (53 and 84 MiB of growth in 2 of 30 runs, against
//! 20-34 MiB alone).

mod common;

use std::time::Duration;

use common::raw::{self, Connect, Raw};
use common::Broker;

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
    let mut stalled = Raw::connected(b.port(), "stalled0");
    stalled.subscribe(1, &[("bulk/q0", 0)]);
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
    let mut sub = Raw::connected(b.port(), "burst-sub");
    sub.subscribe(1, &[("burst/t", 0)]);
    let mut publisher = Raw::connected(b.port(), "burst-pub");
    let mut burst = Vec::new();
    for i in 0..200 {
        burst.extend_from_slice(&raw::publish("burst/t", &numbered(i, 100), 0, false, 0));
    }
    publisher.send(&burst);
    let got = sub.collect_publishes(200, Duration::from_secs(10));
    assert_eq!(numbers(&got), (0..200).collect::<Vec<u32>>());
}
