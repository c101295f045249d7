//! Idle connections cost little memory (issue #7: "10k idle connections: RSS per connection
//! <= mosquitto's"). An idle connection must not hold read or write buffers (they go back to
//! its shard's pool), and what a session keeps (client id, subscription filters) must not pin
//! the read buffer it was decoded from.

mod common;

use std::time::Duration;

use common::raw::{Connect, Raw};
use common::Broker;

/// 2000 connections that connect and then stay silent. Measured on a release build with 10k
/// such connections (loadgen/scripts/idle_rss.py): about 12 KiB each before buffer pooling
/// (two 4 KiB buffers per connection, plus the read buffer the client id kept alive), under
/// 1 KiB after (also in this debug-build test), mosquitto 2.0 about 0.75 KiB. The bound is
/// generous (allocator slack, page granularity) but below what even one 4 KiB buffer per
/// connection would cost.
#[test]
fn idle_connections_hold_no_buffers() {
    const BOUND_PER_CONNECTION: u64 = 2 * 1024;
    // This process holds one socket per connection (midge raises its own limit to the hard
    // one, which it inherits from us): 2000, or what a low hard limit leaves, at least 800.
    let mut connections = 2000;
    while !common::raise_open_file_limit(connections as u64 + 100) {
        connections -= 100;
        assert!(
            connections >= 800,
            "need at least 900 open files for this test (ulimit -Hn)"
        );
    }
    let connections = connections;
    let b = Broker::start_with(&["shards 2"]);
    // One connection first, so that start-up allocations (pools, first slab pages) are in the
    // baseline.
    let mut clients = vec![Raw::connect(b.port(), &Connect::new("warm-up").keepalive(600)).0];
    std::thread::sleep(Duration::from_millis(300));
    let before = common::rss_kib(b.pid());
    for i in 0..connections {
        let id = format!("idle-{i:05}");
        let (c, _) = Raw::connect(b.port(), &Connect::new(&id).keepalive(600));
        clients.push(c);
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = common::rss_kib(b.pid());
    let per_connection = (after.saturating_sub(before)) * 1024 / connections as u64;
    assert!(
        per_connection <= BOUND_PER_CONNECTION,
        "{per_connection} bytes of RSS per idle connection (bound {BOUND_PER_CONNECTION}; \
         {before} KiB before, {after} KiB after {connections} connections)"
    );
    // Still served: an idle connection gets its buffers back when traffic comes.
    clients[8].subscribe(1, &[("idle/idle-00007/cmd", 1)]);
    let mut publisher = Raw::connected(b.port(), "publisher");
    publisher.send(&common::raw::publish(
        "idle/idle-00007/cmd",
        b"wake",
        0,
        false,
        0,
    ));
    let p = clients[8].expect_publish();
    assert_eq!(p.payload, b"wake");
}
