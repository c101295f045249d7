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
