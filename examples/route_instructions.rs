//! A fixed routing workload for instruction counts (callgrind): routes MESSAGES QoS 0
//! messages (argument 1, default 20000) from shard 0 to SUBSCRIBERS subscribers (argument 2,
//! default 100) dealt over 2 shards, through `midge::shard::bench::RouteBench`. Argument 3
//! `acl-plugin` adds one trivial ACL plugin through the Rust trait (it refuses one topic the
//! workload never uses, so every delivery asks it and it passes): the plugin chain's cost.
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
use midge::auth::Access;
use midge::plugin::{ClientInfo, Decision, Events, Plugin, PluginOptions, ShardPlugin};
use midge::protocol::ByteStr;
use midge::shard::bench::RouteBench;

/// The trivial ACL plugin: refuses reading `forbidden`, passes everything else.
struct DenyOne;

impl Plugin for DenyOne {
    fn name(&self) -> &str {
        "deny-one"
    }
    fn configure(&self, _: &PluginOptions) -> Result<(), String> {
        Ok(())
    }
    fn shard(&self, _: usize, _: usize) -> Box<dyn ShardPlugin> {
        Box::new(DenyOne)
    }
}

impl ShardPlugin for DenyOne {
    fn events(&self) -> Events {
        Events::ACL_CHECK
    }
    fn acl_check(&mut self, _: &ClientInfo<'_>, topic: &str, access: Access) -> Decision {
        if access == Access::Read && topic == "forbidden" {
            Decision::Deny
        } else {
            Decision::Pass
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let messages: usize = args.next().map_or(20_000, |a| a.parse().expect("MESSAGES"));
    let subscribers: usize = args.next().map_or(100, |a| a.parse().expect("SUBSCRIBERS"));
    let plugins: Vec<Arc<dyn Plugin>> = match args.next().as_deref() {
        None => Vec::new(),
        Some("acl-plugin") => vec![Arc::new(DenyOne)],
        Some(other) => panic!("unknown variant {other}: expected acl-plugin"),
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
