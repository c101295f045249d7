//! A child process commits batches in a loop from two threads (two "shards") and is SIGKILLed
//! at a random moment, several rounds over the same store: after each reopen, everything whose
//! commit returned Ok is there (and everything whose deletion returned Ok is gone).
//!
//! The child is this test binary re-executed with `MIDGE_STORE_CHILD` set.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use midge::message::{Delivery, Message};
use midge::protocol::{ByteStr, Properties, ProtocolVersion, QoS};
use midge::store::{open_with, Batch, Options, StoredSession, SyncPolicy};

const THREADS: u64 = 2;

fn options() -> Options {
    Options {
        // Small, so that compactions (file rewrite + rename) happen while being killed.
        compact_min_bytes: 64 << 10,
        ..Options::new(SyncPolicy::EveryBatch)
    }
}

fn payload(t: u64, i: u64) -> Vec<u8> {
    let mut p = format!("{t}:{i}:").into_bytes();
    p.resize(200, b'.');
    p
}

fn client(t: u64) -> ByteStr {
    ByteStr::from(format!("shard-{t}"))
}

/// The child: commits forever, printing `ACK t i` after each commit that returned Ok. Batch i
/// of thread t queues message i and deletes message i-2 when i is even.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var("MIDGE_STORE_CHILD") else {
        return;
    };
    let start: u64 = std::env::var("MIDGE_STORE_START").unwrap().parse().unwrap();
    let store: Arc<dyn midge::store::Store> =
        Arc::from(open_with(Path::new(&dir), options()).unwrap());
    store.load().unwrap();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let c = client(t);
                let mut b = Batch::new();
                b.put_session(
                    &c,
                    &StoredSession {
                        expiry_interval: u32::MAX,
                        expires_at: None,
                        version: ProtocolVersion::V311,
                        subscriptions: Vec::new(),
                        pending_will: None,
                    },
                );
                for i in start.. {
                    let msg = Arc::new(Message {
                        topic: "t".into(),
                        payload: Bytes::from(payload(t, i)),
                        qos: QoS::AtLeastOnce,
                        retain: false,
                        properties: Properties::default(),
                        expires_at: None,
                        origin: None,
                    });
                    b.put_queued(&c, i, &Delivery::new(msg, QoS::AtLeastOnce, false), None);
                    if i % 2 == 0 && i >= start + 2 {
                        b.delete_queued(&c, i - 2);
                    }
                    store.commit(&mut b).unwrap();
                    println!("ACK {t} {i}");
                }
            })
        })
        .collect();
    println!("READY");
    for t in threads {
        t.join().unwrap();
    }
}

fn random_ms(lo: u64, hi: u64) -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    lo + u64::from_le_bytes(b) % (hi - lo)
}

/// (thread, seq) of every queued entry in the store, checking payloads.
fn recovered(dir: &Path) -> BTreeSet<(u64, u64)> {
    let store = open_with(dir, options()).unwrap();
    let r = store.load().unwrap();
    for d in &r.dropped {
        eprintln!("recovery: {d}");
    }
    let mut out = BTreeSet::new();
    for s in &r.sessions {
        let t: u64 = s.client_id.strip_prefix("shard-").unwrap().parse().unwrap();
        for (seq, d) in &s.queued {
            assert_eq!(
                d.delivery.msg.payload.as_ref(),
                payload(t, *seq),
                "payload of {t}:{seq}"
            );
            out.insert((t, *seq));
        }
    }
    out
}

#[test]
fn everything_acknowledged_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut model: BTreeSet<(u64, u64)> = BTreeSet::new();
    let mut total_acks = 0;
    for round in 0..6u64 {
        let start = round * 1_000_000;
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env("MIDGE_STORE_CHILD", dir.path())
            .env("MIDGE_STORE_START", start.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut acked: Vec<Vec<u64>> = vec![Vec::new(); THREADS as usize];
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.ends_with("READY") {
                    let _ = ready_tx.send(());
                }
                let mut w = line.split_whitespace();
                if w.next() == Some("ACK") {
                    let t: usize = w.next().unwrap().parse().unwrap();
                    acked[t].push(w.next().unwrap().parse().unwrap());
                }
            }
            acked
        });
        // Recovery time grows with the store and with machine load: the kill timer starts once
        // the child has reopened the store and begun committing, not at spawn.
        let ready = ready_rx.recv_timeout(Duration::from_secs(60));
        if ready.is_ok() {
            std::thread::sleep(Duration::from_millis(random_ms(150, 700)));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let acked = reader.join().unwrap();
        assert!(ready.is_ok(), "round {round}: the child never started");

        // Expected: the model plus acknowledged batches; the batch in flight may or may not be.
        let mut maybe_present = BTreeSet::new();
        let mut maybe_absent = BTreeSet::new();
        for t in 0..THREADS {
            let a = &acked[t as usize];
            total_acks += a.len();
            for &i in a {
                model.insert((t, i));
                if i % 2 == 0 && i >= start + 2 {
                    model.remove(&(t, i - 2));
                }
            }
            let next = a.last().map_or(start, |&i| i + 1);
            maybe_present.insert((t, next));
            if next % 2 == 0 && next >= start + 2 {
                maybe_absent.insert((t, next - 2));
            }
        }
        let got = recovered(dir.path());
        for e in &model {
            assert!(
                got.contains(e) || maybe_absent.contains(e),
                "round {round}: acknowledged {e:?} is missing"
            );
        }
        for e in &got {
            assert!(
                model.contains(e) || maybe_present.contains(e),
                "round {round}: {e:?} is present but was deleted (or never written)"
            );
        }
        model = got;
    }
    assert!(
        total_acks > 10,
        "the child made too little progress ({total_acks} commits)"
    );
}
