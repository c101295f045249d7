//! A fixed routing workload for instruction counts (callgrind): routes MESSAGES QoS 0
//! messages (argument 1, default 20000) from shard 0 to SUBSCRIBERS subscribers (argument 2,
//! default 100) dealt over 2 shards, through `midge::shard::bench::RouteBench`. Argument 3
//! `acl-plugin` adds one trivial ACL plugin through the Rust trait (it refuses one topic the
//! workload never uses, so every delivery asks it and it passes): the plugin chain's cost.
//! A path ending in `.so` loads that C plugin instead (tests/data/plugins/acl_trivial.c, the
//! same rule through the C ABI; results/cabi-20261206/README.md).
//!
//! Instructions per routed message = (Ir of a run with MESSAGES=N - Ir with MESSAGES=0) / N:
//! ```sh
//! cargo build --release --example route_instructions
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/route_instructions 0 100
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/route_instructions 20000 100
//! # the same with a third argument `acl-plugin`
//! ```

use std::sync::Arc;

use bytes::Bytes;
use midge::plugin::{Plugin, PluginOptions};
use midge::protocol::ByteStr;
use midge::shard::bench::RouteBench;

#[path = "support/deny_one.rs"]
mod deny_one;

use deny_one::DenyOne;

fn main() {
    let mut args = std::env::args().skip(1);
    let messages: usize = args.next().map_or(20_000, |a| a.parse().expect("MESSAGES"));
    let subscribers: usize = args.next().map_or(100, |a| a.parse().expect("SUBSCRIBERS"));
    let plugins: Vec<Arc<dyn Plugin>> = match args.next().as_deref() {
        None => Vec::new(),
        Some("acl-plugin") => vec![Arc::new(DenyOne)],
        // The same rule through the C ABI: tests/data/plugins/acl_trivial.c built as a .so.
        Some(path) if path.ends_with(".so") => {
            vec![
                midge::plugin::cabi::load(std::path::Path::new(path), &PluginOptions::new())
                    .unwrap_or_else(|e| panic!("{e}")),
            ]
        }
        Some(other) => panic!("unknown variant {other}: expected acl-plugin or a C plugin .so"),
    };
    let mut bench =
        RouteBench::with_plugins(2, subscribers, "site/+/device-42/#", plugins).expect("setup");
    // On the heap (malloc-aligned), not in the binary's read-only data: `from_utf8`, run per
    // delivery, costs more on an unaligned topic, and the address of a static string moves
    // with unrelated code changes, which would show up here as a change in routing cost.
    let topic = ByteStr::from("site/7/device-42/telemetry");
    let payload = Bytes::from(vec![0x5A; 64]);
    let mut written = 0;
    for _ in 0..messages {
        written += bench.route(&topic, &payload);
    }
    println!("{messages} messages to {subscribers} subscribers: {written} bytes encoded");
}
