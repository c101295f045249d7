//! Disk full: on a small tmpfs, commits fail with an error the broker maps to "publish
//! failed", and once there is room again the store carries on with nothing acknowledged lost.
//!
//! Needs to mount a tmpfs (root in a Linux sandbox, as on the project's machines and CI); where
//! that is not allowed the test says so and passes without checking anything.

use std::sync::Arc;

use bytes::Bytes;
mod common;

use common::Tmpfs;
use midge::message::{Delivery, Message};
use midge::protocol::{ByteStr, Properties, ProtocolVersion, QoS};
use midge::store::{open_with, Backend, Batch, Options, StoredSession, SyncPolicy};

fn msg(i: u64) -> Arc<Message> {
    Arc::new(Message {
        topic: "t".into(),
        payload: Bytes::from(vec![(i % 251) as u8; 4000]),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Properties::default(),
        expires_at: None,
        origin: None,
    })
}

fn disk_full_then_recovers(backend: Backend) {
    let base = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(base.path(), "512k") else {
        eprintln!("cannot mount a tmpfs here: disk-full test not run");
        return;
    };
    let dir = base.path().join("store");
    let c = ByteStr::from("c");
    let opts = Options {
        backend,
        ..Options::new(SyncPolicy::EveryBatch)
    };
    let mut acked = Vec::new();
    {
        let store = open_with(&dir, opts).unwrap();
        let mut b = Batch::new();
        b.put_session(
            &c,
            &StoredSession {
                expiry_interval: u32::MAX,
                expires_at: None,
                version: ProtocolVersion::V5,
                subscriptions: Vec::new(),
                pending_will: None,
            },
        );
        store.commit(&mut b).unwrap();
        let mut failed_at = None;
        for i in 0..1000u64 {
            b.put_queued(&c, i, &Delivery::new(msg(i), QoS::AtLeastOnce, false), None);
            match store.commit(&mut b) {
                Ok(()) => acked.push(i),
                Err(e) => {
                    assert!(e.is_disk_full(), "{backend:?}: {e}");
                    assert!(b.is_empty());
                    failed_at = Some(i);
                    break;
                }
            }
        }
        let failed_at = failed_at.expect("the disk never filled up");
        assert!(!acked.is_empty());
        // Still full: still failing, still an error and not a panic.
        b.put_queued(
            &c,
            5000,
            &Delivery::new(msg(5000), QoS::AtLeastOnce, false),
            None,
        );
        assert!(store.commit(&mut b).is_err());
        // Room again: the store goes on.
        fs.resize("16m");
        b.put_queued(
            &c,
            6000,
            &Delivery::new(msg(6000), QoS::AtLeastOnce, false),
            None,
        );
        store.commit(&mut b).unwrap();
        acked.push(6000);
        let _ = failed_at;
    }
    let store = open_with(&dir, opts).unwrap();
    let r = store.load().unwrap();
    let seqs: Vec<u64> = r.sessions[0].queued.iter().map(|(s, _)| *s).collect();
    for a in &acked {
        assert!(
            seqs.contains(a),
            "{backend:?}: acknowledged {a} lost; have {seqs:?}"
        );
    }
    for (seq, d) in &r.sessions[0].queued {
        assert_eq!(d.delivery.msg.payload, msg(*seq).payload);
    }
}

#[test]
fn disk_full_fails_commits_and_the_log_store_recovers() {
    disk_full_then_recovers(Backend::Log);
}

#[test]
fn disk_full_fails_commits_and_the_redb_store_recovers() {
    disk_full_then_recovers(Backend::Redb);
}
