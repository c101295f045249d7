//! A fixed routing workload for instruction counts (callgrind): routes MESSAGES QoS 0
//! messages (argument 1, default 20000) from shard 0 to SUBSCRIBERS subscribers (argument 2,
//! default 100) dealt over 2 shards, through `midge::shard::bench::RouteBench`.
//!
//! Instructions per routed message = (Ir of a run with MESSAGES=N - Ir with MESSAGES=0) / N:
//! ```sh
//! cargo build --release --example route_instructions
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/route_instructions 0 100
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/route_instructions 20000 100
//! ```

use bytes::Bytes;
use midge::protocol::ByteStr;
use midge::shard::bench::RouteBench;

fn main() {
    let mut args = std::env::args().skip(1);
    let messages: usize = args.next().map_or(20_000, |a| a.parse().expect("MESSAGES"));
    let subscribers: usize = args.next().map_or(100, |a| a.parse().expect("SUBSCRIBERS"));
    let mut bench = RouteBench::new(2, subscribers, "site/+/device-42/#").expect("setup");
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
