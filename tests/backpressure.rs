//! Slow consumers: a subscriber that stops reading must neither grow the broker's memory
//! without bound nor slow the other subscribers of the same topic.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::raw::{self, Connect, Raw};
use common::Broker;

/// 64 MiB of QoS 0 messages to a topic with one subscriber that never reads and one that
/// keeps up: the reader gets every message in order, and midge's memory stays far below what
/// buffering everything for the stalled one would take (its backlog is capped at 16 MiB).
///
/// The cap is checked two ways. Memory: the broker's RSS may grow by less than the 64 MiB that
/// buffering every message would hold (measured capped, debug build: 36-41 MiB while grown read
/// buffers were not reused, 21-31 MiB since; the 16 MiB backlog plus the reader's window and
/// allocator slack; an absolute limit of 48 MiB RSS was too close to the first and failed CI). Behaviour: once the stalled client reads again it gets what was
/// kept plus what the kernel's socket buffers held, far fewer than all 4096 messages.
#[test]
fn stalled_subscriber_does_not_grow_memory_or_slow_others() {
    let b = Broker::start();
    let mut stalled = Raw::tcp(b.port());
    stalled.handshake(&Connect::new("stalled"));
    stalled.subscribe(1, &[("bulk/t", 0)]);
    let mut reader = Raw::connected(b.port(), "reader");
    reader.subscribe(1, &[("bulk/t", 0)]);
    let mut publisher = Raw::connected(b.port(), "publisher");
    let rss_before = if b.is_midge() {
        common::rss_kib(b.pid())
    } else {
        0
    };

    let count = 4096u32; // of 16 KiB: 64 MiB
    let progress = Arc::new(AtomicU32::new(0));
    let seen_by_reader = progress.clone();
    let receiver = std::thread::spawn(move || {
        let mut seen = 0u32;
        while seen < count {
            let p = reader.recv_publish_ack();
            assert_eq!(
                &p.payload[..4],
                &seen.to_be_bytes(),
                "in order, none missing"
            );
            seen += 1;
            seen_by_reader.store(seen, Ordering::Relaxed);
        }
        seen
    });
    const SIZE: u32 = 16 * 1024;
    let mut payload = vec![0x42u8; SIZE as usize];
    for i in 0..count {
        // Stay at most 4 MiB ahead of the reader: it keeps up, the stalled one does not.
        let deadline = Instant::now() + Duration::from_secs(30);
        while i > progress.load(Ordering::Relaxed) + 256 {
            assert!(
                Instant::now() < deadline,
                "the reader stopped receiving at {i}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        payload[..4].copy_from_slice(&i.to_be_bytes());
        publisher.publish_complete("bulk/t", &payload, 0, false, 0);
    }
    assert_eq!(receiver.join().expect("reader thread"), count);
    publisher.ping();
    if b.is_midge() {
        let rss = common::rss_kib(b.pid());
        let grown = rss.saturating_sub(rss_before);
        assert!(
            grown < u64::from(count * SIZE / 1024),
            "broker RSS grew {grown} kB ({rss_before} -> {rss} kB) for {count} messages of {SIZE} B: \
             the stalled subscriber's backlog must be capped"
        );
    }
    // The stalled connection is still open: once its client reads again it catches up
    // (whatever was kept) and gets its PINGRESP. Against mosquitto 2.0.11 the PINGRESP did not
    // come within 20 s (not investigated further), so this part is checked for midge only.
    if b.is_mosquitto() {
        return;
    }
    stalled.send(&raw::pingreq());
    let mut kept = 0u32;
    loop {
        match stalled.recv(Duration::from_secs(20)) {
            Ok(p) if p.kind() == raw::PINGRESP => break,
            Ok(p) if p.kind() == raw::PUBLISH => kept += 1,
            Ok(_) => continue,
            Err(e) => panic!("the stalled subscriber should still be served: {e:?}"),
        }
    }
    // 16 MiB kept by midge plus at most a few MiB in the loopback socket buffers (tcp_wmem and
    // tcp_rmem): well under half of the 4096 messages. Without the cap it would get them all.
    assert!(
        kept > 0 && kept < count / 2,
        "the stalled subscriber got {kept} of {count} messages: the backlog must be capped"
    );
}

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
