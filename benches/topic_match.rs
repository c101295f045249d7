//! Topic matching against 1k, 100k and 1M subscriptions, exact and wildcard, and the cost of
//! one SUBSCRIBE-sized insert into a large index (must not grow with the index: DESIGN.md 1.2).
//! Run `cargo bench --bench topic_match`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use midge::index::{Entry, SubscriberId, TopicIndex};
use midge::protocol::SubOptions;
use std::hint::black_box;

fn entry(slot: u32) -> Entry {
    Entry {
        subscriber: SubscriberId {
            shard: 0,
            slot,
            generation: 1,
        },
        options: SubOptions::default(),
        identifier: None,
    }
}

/// `n` subscriptions shaped like an IoT fleet: one exact filter per device, plus (when
/// `wildcards`) one `site/+/device-N/#`-style filter per 100 devices.
fn index(n: u32, wildcards: bool) -> TopicIndex {
    let mut index = TopicIndex::new();
    for i in 0..n {
        index.insert(&format!("site/{}/device-{i}/telemetry", i % 100), entry(i));
        if wildcards && i % 100 == 0 {
            index.insert(&format!("site/+/device-{i}/#"), entry(n + i));
        }
    }
    index
}

fn bench_match(c: &mut Criterion) {
    let mut group = c.benchmark_group("topic_match");
    for &n in &[1_000u32, 100_000, 1_000_000] {
        for wildcards in [false, true] {
            let idx = index(n, wildcards);
            let topic = format!("site/{}/device-{}/telemetry", (n / 2) % 100, n / 2);
            let label = if wildcards { "wildcard" } else { "exact" };
            group.bench_with_input(BenchmarkId::new(label, n), &topic, |b, topic| {
                b.iter(|| {
                    let mut hits = 0u32;
                    idx.for_each_match(black_box(topic), true, |_, _| hits += 1);
                    hits
                })
            });
        }
    }
    group.finish();
}

fn bench_insert(c: &mut Criterion) {
    let mut group = c.benchmark_group("subscribe_into");
    for &n in &[1_000u32, 1_000_000] {
        let mut idx = index(n, true);
        let mut i = n * 2;
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                i += 1;
                let filter = format!("site/{}/device-{i}/telemetry", i % 100);
                idx.insert(&filter, entry(i));
                idx.remove(&filter, entry(i).subscriber);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_match, bench_insert);
criterion_main!(benches);
