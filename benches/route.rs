//! End-to-end routing of one QoS 0 PUBLISH, in process: the pooled message, the index match,
//! the cross-shard batch and its drain, the per-session offer and the PUBLISH encoding, for
//! 1, 100 and 10,000 subscribers dealt over 2 shards (with 1 subscriber, the delivery is
//! local). Sockets are not written (`midge::shard::bench`). Run `cargo bench --bench route`.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use midge::protocol::ByteStr;
use midge::shard::bench::RouteBench;
use std::hint::black_box;

fn bench_route(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_qos0_2_shards");
    let topic = ByteStr::from_static("site/7/device-42/telemetry");
    let payload = Bytes::from(vec![0x5A; 64]);
    for &subscribers in &[1usize, 100, 10_000] {
        let mut bench = RouteBench::new(2, subscribers, "site/+/device-42/#").expect("bench setup");
        // Every subscriber gets one copy: throughput is deliveries per second.
        group.throughput(Throughput::Elements(subscribers as u64));
        group.bench_function(BenchmarkId::from_parameter(subscribers), |b| {
            b.iter(|| black_box(bench.route(black_box(&topic), &payload)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_route);
criterion_main!(benches);
