//! Topic matching against 1k, 100k and 1M subscriptions, and the cost of one SUBSCRIBE-sized
//! insert into a large index (must not grow with the index: ARCHITECTURE.md §1.2).
//!
//! Shapes (`topic_match/<shape>/<subscriptions>`):
//! - `exact`: one exact filter per device (`site/S/device-N/telemetry`), one topic published.
//! - `wildcard`: the same plus one `site/+/device-N/#` per 100 devices.
//! - `deep`: 7-level vehicle topics, one exact filter per vehicle, one
//!   `fleet/+/+/+/vehicle-N/#` per 100 vehicles and a dozen broad wildcard filters that all
//!   branch at every level (the walk visits many nodes; what a match cache is for).
//! - `deep_rotating`: the `deep` index, but every iteration publishes on the next of 8,192
//!   distinct topics (more topics than a small cache holds: measures what a cache costs when
//!   it cannot help).
//! - `short`: two-level topics `a/N` with `a/+`, `+/N`-style filters: a walk that is already
//!   short.
//!
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

fn vehicle_topic(i: u32) -> String {
    let region = ["eu", "us", "ap"][(i % 3) as usize];
    format!(
        "fleet/{region}/c{}/city{}/vehicle-{i}/engine/temp",
        i % 7,
        i % 50
    )
}

/// `n` exact filters on 7-level topics, one per-vehicle wildcard per 100 vehicles, and broad
/// wildcard filters that overlap at every level.
fn deep_index(n: u32) -> TopicIndex {
    let mut index = TopicIndex::new();
    for i in 0..n {
        index.insert(&vehicle_topic(i), entry(i));
        if i % 100 == 0 {
            index.insert(&format!("fleet/+/+/+/vehicle-{i}/#"), entry(n + i));
        }
    }
    let broad = [
        "fleet/#",
        "fleet/eu/#",
        "fleet/+/+/+/+/engine/#",
        "fleet/+/+/+/+/engine/temp",
        "fleet/+/+/+/+/+/temp",
        "+/eu/+/+/+/+/temp",
        "+/+/+/+/+/engine/+",
        "fleet/eu/+/+/+/engine/+",
        "fleet/+/c0/#",
        "fleet/+/+/city0/#",
        "+/+/+/+/+/+/+",
        "$share/dash/fleet/+/+/+/+/engine/temp",
    ];
    for (k, f) in broad.iter().enumerate() {
        index.insert(f, entry(3 * n + k as u32));
    }
    index
}

fn short_index(n: u32) -> TopicIndex {
    let mut index = TopicIndex::new();
    for i in 0..n {
        index.insert(&format!("a/{i}"), entry(i));
    }
    index.insert("a/+", entry(n));
    index.insert("+/7", entry(n + 1));
    index.insert("a/#", entry(n + 2));
    index
}

fn bench_match(c: &mut Criterion) {
    let mut group = c.benchmark_group("topic_match");
    for &n in &[1_000u32, 100_000, 1_000_000] {
        let match_one = |idx: &TopicIndex, topic: &str| {
            let mut hits = 0u32;
            idx.for_each_match(black_box(topic), true, |_, _| hits += 1);
            hits
        };
        for wildcards in [false, true] {
            let idx = index(n, wildcards);
            let topic = format!("site/{}/device-{}/telemetry", (n / 2) % 100, n / 2);
            let label = if wildcards { "wildcard" } else { "exact" };
            group.bench_with_input(BenchmarkId::new(label, n), &topic, |b, topic| {
                b.iter(|| match_one(&idx, topic))
            });
        }
        {
            let idx = deep_index(n);
            let topic = vehicle_topic(n / 2);
            group.bench_with_input(BenchmarkId::new("deep", n), &topic, |b, topic| {
                b.iter(|| match_one(&idx, topic))
            });
            // Spread over the index; at least 8,192 distinct topics even when n is smaller
            // (topics past n only match the broad filters).
            let stride = (n / 8192).max(1);
            let topics: Vec<String> = (0..8192).map(|k| vehicle_topic(k * stride)).collect();
            let mut next = 0usize;
            group.bench_function(BenchmarkId::new("deep_rotating", n), |b| {
                b.iter(|| {
                    next = (next + 1) % topics.len();
                    match_one(&idx, &topics[next])
                })
            });
        }
        {
            let idx = short_index(n);
            let topic = "a/7".to_string();
            group.bench_with_input(BenchmarkId::new("short", n), &topic, |b, topic| {
                b.iter(|| match_one(&idx, topic))
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
