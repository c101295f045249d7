//! Retained-message lookup on SUBSCRIBE over 100k retained messages (`flood/N/v`), the
//! trie (`RetainedStore::matching`) against the linear scan it replaced (every retained
//! topic tested with `filter_matches`, kept here as the baseline).
//!
//! Filters (`retained/<impl>/<filter>`):
//! - `nomatch/+/#`: a wildcard filter whose first level matches nothing;
//! - `flood/7/v`: exact;
//! - `flood/+/nomatch`: `+` over the 100k children of `flood` (the trie's worst case: it
//!   visits them all, as mosquitto's retain tree does);
//! - `#`: everything.
//!
//! Run `cargo bench --bench retained`.
//!
//! Measured on the shared 2-core machine while four other builds ran (ranges of the
//! criterion estimates over three runs; noisy, the ratios are what matter):
//!
//! | filter | trie | linear scan |
//! |---|---|---|
//! | `nomatch/+/#` | 0.21-0.38 us | 5.8-25 ms |
//! | `flood/7/v` | 0.28-0.67 us | (the old code used a hash probe for exact filters) |
//! | `flood/+/nomatch` | 4.7-5.6 ms | 18-55 ms |
//! | `#` (100k results) | 15-31 ms | 10-37 ms |

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use midge::message::{Message, SharedMessage};
use midge::protocol::topic::filter_matches;
use midge::protocol::QoS;
use midge::retain::RetainedStore;

const N: usize = 100_000;

fn msg(topic: &str) -> SharedMessage {
    Arc::new(Message {
        topic: topic.into(),
        payload: bytes::Bytes::from_static(b"r"),
        qos: QoS::AtMostOnce,
        retain: true,
        properties: Default::default(),
        expires_at: None,
        origin: None,
    })
}

fn bench_retained(c: &mut Criterion) {
    let msgs: Vec<SharedMessage> = (0..N).map(|i| msg(&format!("flood/{i}/v"))).collect();
    let store = RetainedStore::new();
    for m in &msgs {
        store.set(m);
    }
    let mut g = c.benchmark_group("retained");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for filter in ["nomatch/+/#", "flood/7/v", "flood/+/nomatch", "#"] {
        g.bench_with_input(BenchmarkId::new("trie", filter), filter, |b, f| {
            let mut out = Vec::new();
            b.iter(|| {
                out.clear();
                store.matching(black_box(f), &mut out);
                out.len()
            })
        });
        g.bench_with_input(BenchmarkId::new("linear", filter), filter, |b, f| {
            let mut out: Vec<SharedMessage> = Vec::new();
            b.iter(|| {
                out.clear();
                out.extend(
                    msgs.iter()
                        .filter(|m| filter_matches(black_box(f), &m.topic))
                        .cloned(),
                );
                out.len()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_retained);
criterion_main!(benches);
