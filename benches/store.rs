//! The store under the broker's write pattern (issue 6): one cycle = one commit of N QoS 1
//! messages (64 B..1 KiB) queued for S offline sessions, then one commit deleting them (the
//! acks), with `SyncPolicy::EveryBatch`. Reports time per cycle (criterion), and prints
//! commits/s, messages/s and bytes on disk after a fixed number of cycles, plus group-commit
//! coalescing with 4 committing threads. Short on purpose (2 shared cores):
//! `cargo bench --bench store`.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use midge::message::{Delivery, Message};
use midge::protocol::{ByteStr, Properties, QoS};
use midge::store::{open_with, Backend, Batch, Options, Store, SyncPolicy};

/// `MIDGE_BENCH_SYNC=os` measures the CPU cost alone (no fsync).
fn opts(backend: Backend) -> Options {
    let sync = match std::env::var("MIDGE_BENCH_SYNC").as_deref() {
        Ok("os") => SyncPolicy::Os,
        _ => SyncPolicy::EveryBatch,
    };
    Options {
        backend,
        ..Options::new(sync)
    }
}

struct Workload {
    clients: Vec<ByteStr>,
    n: usize,
    seq: u64,
    rng: u64,
}

impl Workload {
    fn new(n: usize, s: usize) -> Workload {
        Workload {
            clients: (0..s)
                .map(|i| ByteStr::from(format!("client-{i}")))
                .collect(),
            n,
            seq: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
        }
    }

    fn size(&mut self) -> usize {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        64 + (self.rng % 961) as usize
    }

    /// One cycle: queue, commit, delete, commit. Returns payload bytes queued.
    fn cycle(&mut self, store: &dyn Store, b: &mut Batch) -> usize {
        let first = self.seq;
        let mut bytes = 0;
        for _ in 0..self.n {
            let len = self.size();
            bytes += len;
            let msg = Arc::new(Message {
                topic: "sensors/plant-1/line-4/temperature".into(),
                payload: Bytes::from(vec![0x5a; len]),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: Properties::default(),
                expires_at: None,
                origin: None,
            });
            for c in &self.clients {
                b.put_queued(
                    c,
                    self.seq,
                    &Delivery::new(msg.clone(), QoS::AtLeastOnce, false),
                    None,
                );
            }
            self.seq += 1;
        }
        store.commit(b).unwrap();
        for seq in first..self.seq {
            for c in &self.clients {
                b.delete_queued(c, seq);
            }
        }
        store.commit(b).unwrap();
        bytes
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

const SHAPES: [(usize, usize); 5] = [(1, 1), (10, 1), (10, 10), (100, 10), (1, 1000)];
const BACKENDS: [(Backend, &str); 2] = [(Backend::Log, "log"), (Backend::Redb, "redb")];

fn cycles(c: &mut Criterion) {
    let mut g = c.benchmark_group("store_cycle");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    for (backend, name) in BACKENDS {
        for (n, s) in SHAPES {
            let dir = tempfile::tempdir().unwrap();
            let store = open_with(dir.path(), opts(backend)).unwrap();
            let mut w = Workload::new(n, s);
            let mut b = Batch::new();
            g.bench_with_input(
                BenchmarkId::new(name, format!("{n}x{s}")),
                &(),
                |bench, _| bench.iter(|| black_box(w.cycle(&*store, &mut b))),
            );
        }
    }
    g.finish();
}

/// Plain timed runs: the numbers recorded in the store's module documentation.
fn report(_c: &mut Criterion) {
    const CYCLES: usize = 300;
    eprintln!("\nstore: {CYCLES} cycles each, EveryBatch");
    eprintln!("backend | N x S | commits/s | messages/s | MB/s payload | disk bytes after");
    for (backend, name) in BACKENDS {
        for (n, s) in SHAPES {
            let dir = tempfile::tempdir().unwrap();
            let store = open_with(dir.path(), opts(backend)).unwrap();
            let mut w = Workload::new(n, s);
            let mut b = Batch::new();
            let t = Instant::now();
            let mut bytes = 0;
            for _ in 0..CYCLES {
                bytes += w.cycle(&*store, &mut b);
            }
            let secs = t.elapsed().as_secs_f64();
            eprintln!(
                "{name} | {n}x{s} | {:.0} | {:.0} | {:.2} | {}",
                2.0 * CYCLES as f64 / secs,
                (CYCLES * n) as f64 / secs,
                bytes as f64 * s as f64 / secs / 1e6,
                dir_bytes(dir.path())
            );
        }
    }
    // Group commit: 4 threads (shards) committing at once.
    for (backend, name) in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::from(open_with(dir.path(), opts(backend)).unwrap());
        let t = Instant::now();
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let mut w = Workload::new(10, 1);
                    w.clients = vec![ByteStr::from(format!("shard-{i}"))];
                    let mut b = Batch::new();
                    for _ in 0..CYCLES / 2 {
                        w.cycle(&*store, &mut b);
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        let secs = t.elapsed().as_secs_f64();
        let st = store.stats();
        eprintln!(
            "{name} | 4 threads x 10x1 | {:.0} commits/s | {:.0} messages/s | {} batches in {} \
             groups ({:.2} batches per fsync)",
            st.batches as f64 / secs,
            (4 * CYCLES / 2 * 10) as f64 / secs,
            st.batches,
            st.groups,
            st.batches as f64 / st.groups.max(1) as f64
        );
    }
    eprintln!();
}

criterion_group!(benches, report, cycles);
criterion_main!(benches);
