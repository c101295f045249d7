//! Dormant shards (`src/shard/dormancy.rs`): under low load shard 1 of 2 sleeps and shard 0
//! runs its turns. Nothing a client sees may change: messages in both directions at every
//! QoS, keep-alive on the dormant shard, its resumption under load, a prompt shutdown, and
//! `shard_dormancy false`. midge only (the option and the counters are midge's). On io_uring
//! (`MIDGE_IO_BACKEND=io_uring`, CI's second pass) no shard dozes: the same tests then check
//! that it does not.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::raw::{self, Connect, Raw};
use common::shards::{publish_between, sys_counter};
use common::{id_on_shard, Broker};

/// Dormancy runs on epoll only.
fn dozing_expected() -> bool {
    std::env::var("MIDGE_IO_BACKEND").map_or(true, |b| b != "io_uring")
}

/// `$SYS/broker/midge/shard/{shard}/dormancy/{name}` once it is at least `at_least`, or
/// the last value seen within `within`.
fn counter(port: u16, shard: usize, name: &str, at_least: u64, within: Duration) -> u64 {
    let topic = format!("$SYS/broker/midge/shard/{shard}/dormancy/{name}");
    sys_counter(port, &topic, at_least, within)
}

/// Shard 1's doze count, waiting up to 10 s for it to reach `at_least`.
fn dozes(port: u16, at_least: u64) -> u64 {
    counter(port, 1, "dozes", at_least, Duration::from_secs(10))
}

/// `n` messages at each QoS from a client homed on shard `from` to one homed on the other
/// (see `publish_between`).
fn publish_between_shards(port: u16, from: usize, n: usize) {
    let to = 1 - from;
    let publisher = id_on_shard(&format!("dpub{from}"), from, 2);
    let subscriber = id_on_shard(&format!("dsub{to}"), to, 2);
    publish_between(port, &publisher, &subscriber, &format!("dormant/{from}"), n);
}

#[test]
fn a_quiet_shard_dozes_and_messages_still_cross_both_ways() {
    if !common::is_midge() {
        return;
    }
    let broker = Broker::start_with(&["shards 2", "sys_interval 1"]);
    let port = broker.port();
    if !dozing_expected() {
        publish_between_shards(port, 0, 20);
        assert_eq!(
            counter(port, 1, "dozes", u64::MAX, Duration::from_secs(3)),
            0
        );
        return;
    }
    assert!(
        dozes(port, 1) >= 1,
        "shard 1 did not doze on an idle broker"
    );
    let hosted = counter(port, 0, "hosted_turns", 0, Duration::from_secs(2));
    publish_between_shards(port, 0, 40);
    publish_between_shards(port, 1, 40);
    // The path under test ran: shard 0 ran shard 1's turns (its PUBACKs, PUBRECs, PUBCOMPs
    // and PUBLISHes arrived on shard 1's sockets).
    let after = counter(port, 0, "hosted_turns", hosted + 40, Duration::from_secs(4));
    assert!(after >= hosted + 40, "hosted turns {hosted} -> {after}");
}

#[test]
fn a_client_of_a_dormant_shard_is_held_to_its_keep_alive() {
    if !common::is_midge() || !dozing_expected() {
        return;
    }
    let broker = Broker::start_with(&["shards 2", "sys_interval 1"]);
    assert!(dozes(broker.port(), 1) >= 1);
    // Its session is homed on shard 1, whose ticks the host now runs.
    let (mut c, _) = Raw::connect(
        broker.port(),
        &Connect::new(&id_on_shard("sleepy", 1, 2)).keepalive(1),
    );
    let start = Instant::now();
    let limit = common::keepalive_expiry_limit(broker.kind());
    assert!(c.is_closed_within(limit), "still connected after {limit:?}");
    assert!(start.elapsed() >= Duration::from_secs(1));
}

/// A burst that keeps shard 0 busy resumes shard 1 (which dozes again once the burst is
/// over: its doze count grows), and every message of the burst arrives.
#[test]
fn load_resumes_a_dormant_shard() {
    if !common::is_midge() || !dozing_expected() {
        return;
    }
    let broker = Broker::start_with(&["shards 2", "sys_interval 1"]);
    let port = broker.port();
    let first = dozes(port, 1);
    assert!(first >= 1);
    let mut sub = Raw::subscribed(port, &id_on_shard("bsub", 1, 2), &[("burst/#", 0)]);
    let mut publisher = Raw::connected(port, &id_on_shard("bpub", 0, 2));
    // QoS 0 in large writes for about 2 s: shard 0 parses, routes and hands off without a
    // pause, well above half of each tick.
    let packet = raw::publish("burst/x", &[7u8; 32], 0, false, 0);
    let chunk: Vec<u8> = packet
        .iter()
        .copied()
        .cycle()
        .take(packet.len() * 500)
        .collect();
    let reader = thread::spawn(move || {
        let mut n = 0u64;
        while let Ok(p) = sub.recv(Duration::from_secs(3)) {
            if p.kind() == 3 {
                n += 1;
            }
        }
        n
    });
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < Duration::from_secs(2) {
        publisher.send(&chunk);
        sent += 500;
    }
    publisher.send(&raw::disconnect());
    let received = reader.join().unwrap();
    assert!(received > 0 && received <= sent, "{received} of {sent}");
    assert!(
        dozes(port, first + 1) > first,
        "shard 1 was not resumed by the burst (or did not doze again after it)"
    );
}

#[test]
fn a_broker_with_a_dormant_shard_stops_promptly() {
    if !common::is_midge() || !dozing_expected() {
        return;
    }
    let mut broker = Broker::start_with(&["shards 2", "sys_interval 1"]);
    assert!(dozes(broker.port(), 1) >= 1);
    let started = Instant::now();
    broker.terminate();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?} to stop",
        started.elapsed()
    );
    assert!(broker.log().contains("midge stopped"));
}

#[test]
fn with_shard_dormancy_false_no_shard_dozes() {
    if !common::is_midge() {
        return;
    }
    let broker = Broker::start_with(&["shards 2", "sys_interval 1", "shard_dormancy false"]);
    thread::sleep(Duration::from_secs(2));
    publish_between_shards(broker.port(), 0, 10);
    assert_eq!(
        counter(broker.port(), 1, "dozes", u64::MAX, Duration::from_secs(3)),
        0
    );
}
