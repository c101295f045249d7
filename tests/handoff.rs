//! Handoffs between shards (`src/shard/handoff.rs`): a shard that sends messages to a shard
//! asleep in `poll` delivers them itself. What a subscriber on the sleeping shard receives must
//! not change: every message, once, in order, at every QoS, with persistence or without, and
//! for a fan-out large enough that the publishing shard backs off. midge only (the option and
//! the counter are midge's).

mod common;

use std::thread;
use std::time::Duration;

use common::clients::Rumq;
use common::shards::{publish_between, sys_counter};
use common::{id_on_shard, Broker};

const LIMIT: Duration = Duration::from_secs(20);

/// The number published on `$SYS/broker/midge/shard/N/cross_shard/handoffs` once it is at
/// least `at_least`, or the last value seen within a few seconds.
fn handoffs(port: u16, shard: usize, at_least: u64) -> u64 {
    let topic = format!("$SYS/broker/midge/shard/{shard}/cross_shard/handoffs");
    sys_counter(port, &topic, at_least, Duration::from_secs(4))
}

/// A subscriber homed on shard 1 and a publisher homed on shard 0 of 2, `n` messages at each
/// QoS, a few milliseconds apart so that shard 1 sleeps between them. Every message arrives, in
/// order per QoS.
fn publish_across_shards(broker: &Broker, n: usize) {
    let (publisher, subscriber) = (id_on_shard("hpub", 0, 2), id_on_shard("hsub", 1, 2));
    publish_between(broker.port(), &publisher, &subscriber, "handoff", n);
}

#[test]
fn a_sleeping_shard_gets_every_message_once_in_order_from_the_publishing_shard() {
    if !common::is_midge() {
        return;
    }
    let broker = Broker::start_with(&["shards 2", "sys_interval 1"]);
    publish_across_shards(&broker, 60);
    // The path under test ran: shard 0 delivered for shard 1 without waking it.
    assert!(handoffs(broker.port(), 0, 1) > 0);
}

#[test]
fn with_shard_handoff_false_the_sleeping_shard_is_woken_instead() {
    if !common::is_midge() {
        return;
    }
    let broker = Broker::start_with(&["shards 2", "sys_interval 1", "shard_handoff false"]);
    publish_across_shards(&broker, 20);
    assert_eq!(handoffs(broker.port(), 0, u64::MAX), 0);
    assert_eq!(handoffs(broker.port(), 1, u64::MAX), 0);
}

#[test]
fn handoffs_keep_persistent_qos_deliveries_and_their_acknowledgements() {
    if !common::is_midge() {
        return;
    }
    // Opened up: midge started as root drops to the mosquitto user.
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let broker = Broker::start_with(&[
        "shards 2",
        "sys_interval 1",
        "persistence true",
        &format!("persistence_location {}/", dir.path().display()),
    ]);
    // Rumq::publish waits for each PUBACK/PUBCOMP: they come while the subscriber's shard is
    // run by the publisher's.
    publish_across_shards(&broker, 30);
    assert!(handoffs(broker.port(), 0, 1) > 0);
}

#[test]
fn a_large_fan_out_on_the_sleeping_shard_reaches_every_subscriber() {
    if !common::is_midge() {
        return;
    }
    let broker = Broker::start_with(&["shards 2"]);
    let port = broker.port();
    let mut subs: Vec<Rumq> = (0..150)
        .map(|i| {
            let (mut s, _) = Rumq::connect(port, &id_on_shard(&format!("fan{i}"), 1, 2), true);
            s.subscribe("fan/out", 0);
            s
        })
        .collect();
    let (mut publisher, _) = Rumq::connect(port, &id_on_shard("fanpub", 0, 2), true);
    for i in 0..10 {
        publisher.publish("fan/out", &format!("m{i}"), 1, false);
        thread::sleep(Duration::from_millis(5));
    }
    let want: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    for (i, s) in subs.iter_mut().enumerate() {
        let got: Vec<String> = s
            .messages(10, LIMIT)
            .into_iter()
            .map(|m| m.payload)
            .collect();
        assert_eq!(got, want, "subscriber {i}");
    }
}
