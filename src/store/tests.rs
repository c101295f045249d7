use std::fs;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use super::*;
use crate::message::Message;
use crate::protocol::{Properties, QoS, RetainHandling, SubOptions};

const BACKENDS: [Backend; 2] = [Backend::Log, Backend::Redb];

fn opts(backend: Backend) -> Options {
    Options {
        backend,
        ..Options::new(SyncPolicy::EveryBatch)
    }
}

fn open_b(dir: &Path, backend: Backend) -> Box<dyn Store> {
    open_with(dir, opts(backend)).unwrap()
}

fn msg(topic: &str, payload: &[u8], qos: QoS) -> SharedMessage {
    Arc::new(Message {
        topic: topic.into(),
        payload: Bytes::copy_from_slice(payload),
        qos,
        retain: false,
        properties: Properties::default(),
        expires_at: None,
        origin: None,
    })
}

fn cid(s: &str) -> ByteStr {
    ByteStr::from(s)
}

fn session() -> StoredSession {
    StoredSession {
        expiry_interval: 3600,
        expires_at: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_900_000_000_123)),
        version: ProtocolVersion::V5,
        subscriptions: vec![
            (
                "a/+".into(),
                Subscription {
                    options: SubOptions {
                        qos: QoS::ExactlyOnce,
                        no_local: true,
                        retain_as_published: true,
                        retain_handling: RetainHandling::DoNotSend,
                    },
                    identifier: Some(42),
                },
            ),
            (
                "$share/g/b/#".into(),
                Subscription {
                    options: SubOptions::default(),
                    identifier: None,
                },
            ),
        ],
        pending_will: Some((
            SystemTime::UNIX_EPOCH + Duration::from_millis(1_900_000_000_456),
            Will {
                topic: "will/t".into(),
                payload: Bytes::from_static(b"bye"),
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: Properties {
                    will_delay_interval: Some(30),
                    content_type: Some("text/plain".into()),
                    ..Properties::default()
                },
            },
        )),
    }
}

fn payloads(r: &RecoveredSession) -> Vec<(u64, Vec<u8>)> {
    r.queued
        .iter()
        .map(|(s, d)| (*s, d.delivery.msg.payload.to_vec()))
        .collect()
}

fn find<'a>(r: &'a Recovered, c: &str) -> Option<&'a RecoveredSession> {
    r.sessions.iter().find(|s| s.client_id.as_str() == c)
}

#[test]
fn every_record_type_round_trips_through_a_reopen() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let mut props = Properties {
            content_type: Some("application/json".into()),
            correlation_data: Some(Bytes::from_static(b"\x01\x02")),
            response_topic: Some("resp".into()),
            user_properties: vec![("k".into(), "v".into())],
            message_expiry_interval: Some(100),
            ..Properties::default()
        };
        props.payload_format_indicator = Some(1);
        let retained = Arc::new(Message {
            topic: "r/1".into(),
            payload: Bytes::from_static(b"retained"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: props.clone(),
            expires_at: Some(Instant::now() + Duration::from_secs(100)),
            origin: None,
        });
        let m = Arc::new(Message {
            topic: "a/b".into(),
            payload: Bytes::from_static(b"hello"),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: props,
            expires_at: Some(Instant::now() + Duration::from_secs(50)),
            origin: None,
        });
        let d = Delivery {
            msg: m.clone(),
            qos: QoS::AtLeastOnce,
            retain: true,
            subscription_ids: vec![7, 9].into(),
            shared: Some("$share/g/a/+".into()),
        };
        let flow = Some(Flow {
            packet_id: 12,
            state: OutState::AwaitPubComp,
        });
        {
            let s = open_b(dir.path(), backend);
            assert!(s.load().unwrap().sessions.is_empty());
            let mut b = Batch::new();
            b.put_retained(&retained, 0);
            b.put_session(&cid("c1"), &session());
            b.put_queued(&cid("c1"), 1, &d, flow);
            b.put_queued(
                &cid("c1"),
                2,
                &Delivery::new(m.clone(), QoS::ExactlyOnce, false),
                None,
            );
            b.put_incoming_qos2(&cid("c1"), 300);
            b.put_incoming_qos2(&cid("c1"), 5);
            s.commit(&mut b).unwrap();
            assert!(b.is_empty(), "commit clears the batch");
        }
        let s = open_b(dir.path(), backend);
        let r = s.load().unwrap();
        assert!(r.dropped.is_empty(), "{:?}", r.dropped);
        assert_eq!(r.retained.len(), 1);
        let rm = &r.retained[0];
        assert_eq!(
            (&rm.topic, &rm.payload, rm.qos, rm.retain, &rm.properties),
            (
                &retained.topic,
                &retained.payload,
                retained.qos,
                retained.retain,
                &retained.properties
            )
        );
        let left = rm.expires_at.unwrap() - Instant::now();
        assert!(left > Duration::from_secs(98) && left <= Duration::from_secs(100));
        assert_eq!(r.sessions.len(), 1);
        let rs = &r.sessions[0];
        assert_eq!(rs.client_id.as_str(), "c1");
        assert_eq!(rs.session, session());
        assert_eq!(rs.incoming_qos2, vec![5, 300]);
        assert_eq!(rs.queued.len(), 2);
        let (seq, got) = &rs.queued[0];
        assert_eq!(*seq, 1);
        assert_eq!(got.flow, flow);
        assert_eq!(got.delivery.qos, d.qos);
        assert_eq!(got.delivery.retain, d.retain);
        assert_eq!(got.delivery.subscription_ids, d.subscription_ids);
        assert_eq!(got.delivery.shared, d.shared);
        assert_eq!(got.delivery.msg.topic, m.topic);
        assert_eq!(got.delivery.msg.payload, m.payload);
        assert_eq!(got.delivery.msg.properties, m.properties);
        assert_eq!(got.delivery.msg.qos, m.qos);
        assert!(got.delivery.msg.retain);
        assert_eq!(rs.queued[1].1.flow, None);
        assert!(
            Arc::ptr_eq(&rs.queued[0].1.delivery.msg, &rs.queued[1].1.delivery.msg),
            "one message body, shared again after recovery"
        );
    }
}

#[test]
fn deletes_updates_and_refcounted_bodies() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let m = msg("t", b"shared body", QoS::AtLeastOnce);
        let other = msg("t", b"other", QoS::AtLeastOnce);
        {
            let s = open_b(dir.path(), backend);
            let mut b = Batch::new();
            for c in ["a", "b", "c"] {
                b.put_session(&cid(c), &session());
                b.put_queued(
                    &cid(c),
                    1,
                    &Delivery::new(m.clone(), QoS::AtLeastOnce, false),
                    None,
                );
                b.put_queued(
                    &cid(c),
                    2,
                    &Delivery::new(other.clone(), QoS::AtLeastOnce, false),
                    None,
                );
                b.put_incoming_qos2(&cid(c), 1);
            }
            b.put_retained(&msg("keep", b"1", QoS::AtMostOnce), 0);
            b.put_retained(&msg("gone", b"1", QoS::AtMostOnce), 0);
            s.commit(&mut b).unwrap();
            b.delete_queued(&cid("a"), 1);
            b.delete_queued(&cid("b"), 1);
            b.update_queued(
                &cid("c"),
                1,
                Some(Flow {
                    packet_id: 3,
                    state: OutState::AwaitPubAck,
                }),
            );
            b.delete_session(&cid("a"));
            b.delete_incoming_qos2(&cid("b"), 1);
            b.delete_retained(&cid("gone"), 0);
            // Operations on things that do not exist are no-ops.
            b.delete_queued(&cid("nobody"), 9);
            b.update_queued(&cid("nobody"), 9, None);
            b.delete_incoming_qos2(&cid("nobody"), 9);
            b.delete_session(&cid("nobody"));
            b.delete_retained(&cid("nothing"), 0);
            s.commit(&mut b).unwrap();
        }
        let s = open_b(dir.path(), backend);
        let r = s.load().unwrap();
        assert!(r.dropped.is_empty(), "{:?}", r.dropped);
        let topics: Vec<&str> = r.retained.iter().map(|m| m.topic.as_str()).collect();
        assert_eq!(topics, ["keep"]);
        assert!(find(&r, "a").is_none());
        let b_ = find(&r, "b").unwrap();
        assert_eq!(payloads(b_), vec![(2, b"other".to_vec())]);
        assert!(b_.incoming_qos2.is_empty());
        let c = find(&r, "c").unwrap();
        assert_eq!(
            payloads(c),
            vec![(1, b"shared body".to_vec()), (2, b"other".to_vec())]
        );
        assert_eq!(c.queued[0].1.flow.unwrap().packet_id, 3);
        assert_eq!(c.incoming_qos2, vec![1]);
        // Deleting the last references deletes the bodies; the store shrinks back.
        let mut b = Batch::new();
        b.delete_session(&cid("b"));
        b.delete_session(&cid("c"));
        b.delete_retained(&cid("keep"), 0);
        s.commit(&mut b).unwrap();
        assert_eq!(s.stats().live_bytes, 0, "{backend:?}");
        drop(s);
        let r = open_b(dir.path(), backend).load().unwrap();
        assert!(r.sessions.is_empty() && r.retained.is_empty());
    }
}

#[test]
fn operations_in_one_batch_apply_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = open_b(dir.path(), Backend::Log);
    let m = msg("t", b"x", QoS::AtLeastOnce);
    let mut b = Batch::new();
    b.put_session(&cid("c"), &session());
    b.put_queued(
        &cid("c"),
        1,
        &Delivery::new(m.clone(), QoS::AtLeastOnce, false),
        None,
    );
    b.delete_queued(&cid("c"), 1);
    b.put_queued(
        &cid("c"),
        2,
        &Delivery::new(m.clone(), QoS::AtLeastOnce, false),
        None,
    );
    b.delete_session(&cid("c"));
    b.put_session(&cid("c"), &session());
    b.put_queued(
        &cid("c"),
        3,
        &Delivery::new(m, QoS::AtLeastOnce, false),
        None,
    );
    s.commit(&mut b).unwrap();
    drop(s);
    let r = open_b(dir.path(), Backend::Log).load().unwrap();
    assert_eq!(payloads(&r.sessions[0]), vec![(3, b"x".to_vec())]);
}

#[test]
fn a_message_queued_for_many_sessions_is_stored_once() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let s = open_b(dir.path(), backend);
        let m = msg("fan/out", &[7u8; 1024], QoS::AtLeastOnce);
        let mut b = Batch::new();
        for i in 0..1000 {
            b.put_queued(
                &cid(&format!("client-{i}")),
                1,
                &Delivery::new(m.clone(), QoS::AtLeastOnce, false),
                None,
            );
        }
        s.commit(&mut b).unwrap();
        let live = s.stats().live_bytes;
        assert!(
            live < 100_000,
            "{backend:?}: {live} live bytes for 1000 x 1 KiB"
        );
        if backend == Backend::Log {
            assert!(s.stats().disk_bytes < 100_000);
        }
    }
}

/// The log file of a log store.
fn log_file(dir: &Path) -> PathBuf {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "mlog"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.pop().unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn a_torn_tail_is_cut_at_every_offset_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let m = msg("t", b"0123456789", QoS::AtLeastOnce);
    let good_len;
    let end;
    {
        let s = open_b(dir.path(), Backend::Log);
        let mut b = Batch::new();
        b.put_session(&cid("c"), &session());
        b.put_queued(
            &cid("c"),
            1,
            &Delivery::new(m.clone(), QoS::AtLeastOnce, false),
            None,
        );
        s.commit(&mut b).unwrap();
        // The data's end (the file itself is preallocated beyond it).
        good_len = s.stats().disk_bytes;
        // The last record: a new message for two queues, a delete and a retained message.
        let m2 = msg("t", b"second", QoS::AtLeastOnce);
        b.put_queued(
            &cid("c"),
            2,
            &Delivery::new(m2.clone(), QoS::AtLeastOnce, false),
            None,
        );
        b.put_queued(
            &cid("d"),
            1,
            &Delivery::new(m2, QoS::AtLeastOnce, false),
            None,
        );
        b.delete_queued(&cid("c"), 1);
        b.put_retained(&msg("r", b"x", QoS::AtMostOnce), 0);
        s.commit(&mut b).unwrap();
        end = s.stats().disk_bytes as usize;
    }
    let path = log_file(dir.path());
    let full = fs::read(&path).unwrap()[..end].to_vec();
    assert!(full.len() as u64 > good_len + 20);
    let check_prefix = |r: &Recovered, what: &str| {
        assert_eq!(
            payloads(&r.sessions[0]),
            vec![(1, b"0123456789".to_vec())],
            "{what}"
        );
        assert_eq!(r.sessions.len(), 1, "{what}");
        assert!(r.retained.is_empty(), "{what}");
    };
    // Truncated at every byte of the last frame.
    for cut in good_len as usize..full.len() {
        let d = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), d.path());
        fs::write(log_file(d.path()), &full[..cut]).unwrap();
        let s = open_b(d.path(), Backend::Log);
        let r = s.load().unwrap();
        check_prefix(&r, &format!("cut at {cut}"));
        if cut == good_len as usize {
            assert!(r.dropped.is_empty());
        } else {
            assert_eq!(r.dropped.len(), 1, "cut at {cut}: {:?}", r.dropped);
            assert!(r.dropped[0].contains(&format!("{} byte", cut as u64 - good_len)));
            assert!(r.dropped[0].contains(".mlog"));
        }
        // The store goes on from the valid prefix.
        let mut b = Batch::new();
        b.put_queued(
            &cid("c"),
            9,
            &Delivery::new(m.clone(), QoS::AtLeastOnce, false),
            None,
        );
        s.commit(&mut b).unwrap();
        drop(s);
        let r = open_b(d.path(), Backend::Log).load().unwrap();
        assert!(r.dropped.is_empty(), "cut at {cut}: the cut was persisted");
        assert_eq!(r.sessions[0].queued.len(), 2, "cut at {cut}");
    }
    // A flipped byte anywhere in the last frame.
    for at in good_len as usize..full.len() {
        let d = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), d.path());
        let mut bad = full.clone();
        bad[at] ^= 0x10;
        fs::write(log_file(d.path()), &bad).unwrap();
        let r = open_b(d.path(), Backend::Log).load().unwrap();
        check_prefix(&r, &format!("flip at {at}"));
        assert_eq!(r.dropped.len(), 1, "flip at {at}");
    }
}

#[test]
fn an_unreadable_store_refuses_to_open_naming_the_file() {
    // Garbage where the header should be.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("0000000000000001.mlog");
    fs::write(&f, b"this is not a midge store at all, just text").unwrap();
    let e = open_with(dir.path(), opts(Backend::Log)).err().unwrap();
    let text = e.to_string();
    assert!(
        text.contains("0000000000000001.mlog") && text.contains("magic"),
        "{text}"
    );
    assert!(matches!(e, StoreError::Corrupt { .. }));
    // A header cut short.
    fs::write(&f, &codec::header(1)[..10]).unwrap();
    let text = open_with(dir.path(), opts(Backend::Log))
        .err()
        .unwrap()
        .to_string();
    assert!(text.contains("shorter than"), "{text}");
    // A newer format.
    let mut h = codec::header(1);
    h[8] = 99;
    let crc = crc32fast::hash(&h[..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    fs::write(&f, h).unwrap();
    let text = open_with(dir.path(), opts(Backend::Log))
        .err()
        .unwrap()
        .to_string();
    assert!(text.contains("format 99"), "{text}");
    // A stray file that looks like a segment.
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("junk.mlog"), b"x").unwrap();
    let text = open_with(dir.path(), opts(Backend::Log))
        .err()
        .unwrap()
        .to_string();
    assert!(text.contains("junk.mlog"), "{text}");
    // The store path is a file.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("file");
    fs::write(&f, b"x").unwrap();
    let text = open_with(&f, opts(Backend::Log)).err().unwrap().to_string();
    assert!(text.contains("file"), "{text}");
    // A valid frame whose records do not decode is corruption, not a torn tail.
    let dir = tempfile::tempdir().unwrap();
    let mut data = codec::header(1).to_vec();
    codec::put_frame(&mut data, &[200, 1, 2, 3]);
    fs::write(dir.path().join("0000000000000001.mlog"), &data).unwrap();
    let text = open_with(dir.path(), opts(Backend::Log))
        .err()
        .unwrap()
        .to_string();
    assert!(text.contains("unknown operation tag 200"), "{text}");
    // redb: garbage in its file.
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("midge.redb"), vec![0x5a; 8192]).unwrap();
    let text = open_with(dir.path(), opts(Backend::Redb))
        .err()
        .unwrap()
        .to_string();
    assert!(text.contains("midge.redb"), "{text}");
}

#[test]
fn permission_denied_refuses_to_open() {
    // Root reads everything: nothing to test then.
    if unsafe { libc::geteuid() } == 0 {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    drop(open_b(dir.path(), Backend::Log));
    let f = log_file(dir.path());
    fs::set_permissions(&f, fs::Permissions::from_mode(0o000)).unwrap();
    let text = open_with(dir.path(), opts(Backend::Log))
        .err()
        .unwrap()
        .to_string();
    assert!(
        text.contains(".mlog") && text.contains("ermission"),
        "{text}"
    );
}

#[test]
fn concurrent_commits_from_four_threads_all_land() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let s: Arc<dyn Store> = Arc::from(open_b(dir.path(), backend));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    let c = cid(&format!("shard-{t}"));
                    let mut b = Batch::new();
                    b.put_session(&c, &session());
                    for i in 0..200u64 {
                        let m = msg("t", format!("{t}:{i}").as_bytes(), QoS::AtLeastOnce);
                        b.put_queued(&c, i, &Delivery::new(m, QoS::AtLeastOnce, false), None);
                        if i % 3 == 0 {
                            b.delete_queued(&c, i);
                        }
                        s.commit(&mut b).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let stats = s.stats();
        assert_eq!(stats.batches, 800, "{backend:?}");
        assert!(stats.groups <= stats.batches);
        drop(s);
        let r = open_b(dir.path(), backend).load().unwrap();
        assert_eq!(r.sessions.len(), 4);
        for (t, rs) in r.sessions.iter().enumerate() {
            let want: Vec<(u64, Vec<u8>)> = (0..200u64)
                .filter(|i| i % 3 != 0)
                .map(|i| (i, format!("{t}:{i}").into_bytes()))
                .collect();
            assert_eq!(payloads(rs), want, "{backend:?}");
        }
    }
}

#[test]
fn compaction_keeps_the_store_bounded_by_live_data() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        // No fsync per commit: this is about sizes, and keeps the test short.
        let o = Options {
            compact_min_bytes: 256 << 10,
            sync: SyncPolicy::Os,
            ..opts(backend)
        };
        let s = open_with(dir.path(), o).unwrap();
        let mut b = Batch::new();
        // Some data that stays.
        b.put_session(&cid("keep"), &session());
        b.put_queued(
            &cid("keep"),
            0,
            &Delivery::new(msg("k", b"kept", QoS::AtLeastOnce), QoS::AtLeastOnce, false),
            None,
        );
        b.put_retained(&msg("keep", b"kept", QoS::AtMostOnce), 0);
        s.commit(&mut b).unwrap();
        let mut max = 0;
        // redb syncs twice per commit: fewer rounds keep the test short.
        let rounds = if backend == Backend::Log { 3000 } else { 300 };
        for i in 1..=rounds {
            let m = msg("t", &[i as u8; 512], QoS::AtLeastOnce);
            for c in ["x", "y"] {
                b.put_queued(
                    &cid(c),
                    i,
                    &Delivery::new(m.clone(), QoS::AtLeastOnce, false),
                    None,
                );
            }
            s.commit(&mut b).unwrap();
            for c in ["x", "y"] {
                b.delete_queued(&cid(c), i);
            }
            s.commit(&mut b).unwrap();
            max = max.max(s.stats().disk_bytes);
        }
        let stats = s.stats();
        if backend == Backend::Log {
            assert!(stats.compactions > 0, "{stats:?}");
        }
        // 3000 x 512 B were written; the log stays near its threshold.
        let bound = if backend == Backend::Log {
            300 << 10
        } else {
            2 << 20
        };
        assert!(max < bound, "{backend:?}: peak {max} bytes {stats:?}");
        s.compact().unwrap();
        let after = s.stats().disk_bytes;
        if backend == Backend::Log {
            assert!(after < 4096, "{after}");
        }
        drop(s);
        let r = open_b(dir.path(), backend).load().unwrap();
        assert_eq!(r.sessions.len(), 1);
        assert_eq!(payloads(&r.sessions[0]), vec![(0, b"kept".to_vec())]);
        assert_eq!(r.retained.len(), 1);
        if backend == Backend::Log {
            // Only the newest generation is left.
            log_file(dir.path());
        }
    }
}

#[test]
fn a_crash_between_rename_and_delete_keeps_the_newest_generation() {
    let dir = tempfile::tempdir().unwrap();
    let s = open_b(dir.path(), Backend::Log);
    let mut b = Batch::new();
    b.put_retained(&msg("old", b"1", QoS::AtMostOnce), 0);
    s.commit(&mut b).unwrap();
    let old = fs::read(log_file(dir.path())).unwrap();
    b.delete_retained(&cid("old"), 0);
    b.put_retained(&msg("new", b"1", QoS::AtMostOnce), 0);
    s.commit(&mut b).unwrap();
    s.compact().unwrap();
    drop(s);
    // Put generation 1 back, as if its delete had not happened; and a half-written tmp.
    fs::write(dir.path().join("0000000000000001.mlog"), old).unwrap();
    fs::write(dir.path().join("0000000000000003.mlog.tmp"), b"half").unwrap();
    let r = open_b(dir.path(), Backend::Log).load().unwrap();
    let topics: Vec<&str> = r.retained.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(topics, ["new"]);
    assert!(log_file(dir.path()).ends_with("0000000000000002.mlog"));
}

#[test]
fn os_and_interval_policies_persist_too() {
    for backend in BACKENDS {
        for sync in [
            SyncPolicy::Os,
            SyncPolicy::Interval(Duration::from_millis(5)),
        ] {
            let dir = tempfile::tempdir().unwrap();
            {
                let s = open_with(
                    dir.path(),
                    Options {
                        sync,
                        ..opts(backend)
                    },
                )
                .unwrap();
                let mut b = Batch::new();
                b.put_retained(&msg("t", b"1", QoS::AtMostOnce), 0);
                s.commit(&mut b).unwrap();
                std::thread::sleep(Duration::from_millis(20));
                s.sync().unwrap();
            }
            let r = open_b(dir.path(), backend).load().unwrap();
            assert_eq!(r.retained.len(), 1, "{backend:?} {sync}");
        }
    }
}

#[test]
fn deadlines_are_wall_clock_and_expire_across_downtime() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open_b(dir.path(), Backend::Log);
        let m = Arc::new(Message {
            expires_at: Some(Instant::now() + Duration::from_millis(30)),
            ..(*msg("t", b"short-lived", QoS::AtLeastOnce)).clone()
        });
        let mut b = Batch::new();
        b.put_session(&cid("c"), &session());
        b.put_queued(
            &cid("c"),
            1,
            &Delivery::new(m, QoS::AtLeastOnce, false),
            None,
        );
        s.commit(&mut b).unwrap();
    }
    std::thread::sleep(Duration::from_millis(60));
    let r = open_b(dir.path(), Backend::Log).load().unwrap();
    let d = &r.sessions[0].queued[0].1.delivery;
    assert!(d.msg.is_expired(Instant::now()));
    // Conversions.
    let at = Instant::now() + Duration::from_secs(10);
    let back = instant_from_wall(wall_from_instant(at));
    assert!(back.max(at) - back.min(at) < Duration::from_millis(5));
    let past = SystemTime::now() - Duration::from_secs(3600);
    assert!(instant_from_wall(past) <= Instant::now());
}

#[test]
fn recovery_ignores_queues_without_a_session_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open_b(dir.path(), Backend::Log);
        let mut b = Batch::new();
        b.put_queued(
            &cid("ghost"),
            1,
            &Delivery::new(msg("t", b"x", QoS::AtLeastOnce), QoS::AtLeastOnce, false),
            None,
        );
        s.commit(&mut b).unwrap();
    }
    let r = open_b(dir.path(), Backend::Log).load().unwrap();
    assert!(r.sessions.is_empty());
    assert_eq!(r.dropped.len(), 1);
    assert!(r.dropped[0].contains("ghost"), "{:?}", r.dropped);
}

/// A queued entry put and deleted in the same group (a QoS 1 delivery acknowledged before it
/// was written) is never written; one deleted in a later group is written and deleted as
/// before; either way nothing of it is recovered.
#[test]
fn put_and_delete_in_one_group_cancel_out() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let m = msg("a/b", &[7u8; 1000], QoS::AtLeastOnce);
        let d = Delivery::new(m.clone(), QoS::AtLeastOnce, false);
        let flow = Some(Flow {
            packet_id: 1,
            state: OutState::AwaitPubAck,
        });
        let s = open_b(dir.path(), backend);
        // One client id for every operation, as a session's operations carry.
        let c = cid("c");
        let mut b = Batch::new();
        b.put_session(&c, &session());
        s.commit(&mut b).unwrap();
        let before = s.stats();
        // One group: put, in flight, acknowledged.
        for seq in 1..=50 {
            b.put_queued(&c, seq, &d, None);
            b.update_queued(&c, seq, flow);
            b.delete_queued(&c, seq);
        }
        s.commit(&mut b).unwrap();
        let cancelled = s.stats();
        assert_eq!(cancelled.live_bytes, before.live_bytes, "{backend:?}");
        if backend == Backend::Log {
            assert!(
                cancelled.disk_bytes < before.disk_bytes + 1000,
                "{backend:?}: 50 x 1000 B payloads were written: {before:?} -> {cancelled:?}"
            );
        }
        // Two groups: written, then deleted.
        b.put_queued(&c, 51, &d, flow);
        s.commit(&mut b).unwrap();
        assert!(s.stats().live_bytes > before.live_bytes, "{backend:?}");
        b.delete_queued(&c, 51);
        s.commit(&mut b).unwrap();
        assert_eq!(s.stats().live_bytes, before.live_bytes, "{backend:?}");
        drop(s);
        let r = open_b(dir.path(), backend).load().unwrap();
        assert!(r.dropped.is_empty(), "{:?}", r.dropped);
        assert_eq!(r.sessions.len(), 1);
        assert!(r.sessions[0].queued.is_empty(), "{backend:?}");
    }
}

/// Two shards set one retained topic, version 1 then 2, but submit in the other order: the
/// store keeps version 2, as the broker's memory does, also across a restart; a stale clear
/// does not remove a newer message either.
#[test]
fn retained_changes_keep_their_version_order_whatever_the_submit_order() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let s = open_b(dir.path(), backend);
        let mut b = Batch::new();
        b.put_retained(&msg("t", b"newer", QoS::AtMostOnce), 2);
        s.commit(&mut b).unwrap();
        b.put_retained(&msg("t", b"older", QoS::AtMostOnce), 1);
        s.commit(&mut b).unwrap();
        b.put_retained(&msg("u", b"kept", QoS::AtMostOnce), 4);
        s.commit(&mut b).unwrap();
        b.delete_retained(&cid("u"), 3);
        s.commit(&mut b).unwrap();
        drop(s);
        let r = open_b(dir.path(), backend).load().unwrap();
        let got: Vec<_> = r
            .retained
            .iter()
            .map(|m| (m.topic.to_string(), m.payload.to_vec()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("t".to_string(), b"newer".to_vec()),
                ("u".to_string(), b"kept".to_vec())
            ],
            "{backend:?}"
        );
    }
}

/// The log file is extended ahead of its data with zeros (fdatasync then has no size to
/// write); the zeros read as the clean end of the log, and appends go on at the data's end.
#[test]
fn the_preallocated_tail_is_a_clean_end() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open_b(dir.path(), Backend::Log);
        let mut b = Batch::new();
        b.put_retained(&msg("a", b"1", QoS::AtMostOnce), 0);
        s.commit(&mut b).unwrap();
        let data = s.stats().disk_bytes;
        let file = fs::metadata(log_file(dir.path())).unwrap().len();
        assert!(file > data, "preallocated: file {file} B, data {data} B");
    }
    for round in 0..2 {
        let s = open_b(dir.path(), Backend::Log);
        let r = s.load().unwrap();
        assert!(r.dropped.is_empty(), "round {round}: {:?}", r.dropped);
        assert_eq!(r.retained.len(), 1 + round, "round {round}");
        let mut b = Batch::new();
        b.put_retained(&msg(&format!("b{round}"), b"2", QoS::AtMostOnce), 0);
        s.commit(&mut b).unwrap();
    }
    // Garbage in the zeros is a damaged tail, and said so.
    let path = log_file(dir.path());
    let mut data = fs::read(&path).unwrap();
    let n = data.len();
    data[n - 10] = 0xff;
    fs::write(&path, &data).unwrap();
    let r = open_b(dir.path(), Backend::Log).load().unwrap();
    assert_eq!(r.retained.len(), 3);
    assert_eq!(r.dropped.len(), 1, "{:?}", r.dropped);
}

/// Found by the `store` fuzz target: a checksummed PUT_MSG record with id `u64::MAX` made the
/// replay compute `id + 1` (an overflow panic in debug builds; in release the next id
/// silently stayed below it). midge allocates ids upward from 1 and can never write that one,
/// so the record is corruption and the store refuses to open, naming the file.
#[test]
fn a_message_id_midge_cannot_have_written_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let mut record = Vec::new();
    codec::put_op(
        &mut record,
        &codec::Op::PutMsg {
            id: u64::MAX,
            msg: msg("t", b"p", QoS::AtLeastOnce),
            expires_ms: None,
        },
    );
    let mut data = codec::header(1).to_vec();
    codec::put_frame(&mut data, &record);
    fs::write(dir.path().join("0000000000000001.mlog"), &data).unwrap();
    let e = open_with(dir.path(), opts(Backend::Log)).err().unwrap();
    let text = e.to_string();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{text}");
    assert!(
        text.contains("0000000000000001.mlog") && text.contains("message id"),
        "{text}"
    );
}

/// A QoS 2 message's id (shard 1's batch) and its copy for a subscriber on shard 0 (shard 0's
/// batch): the first is held until its partner arrives, the two are written as one frame,
/// and a crash anywhere in that frame keeps both or neither.
#[test]
fn paired_batches_are_one_frame_recovered_whole_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let m = msg("q2", b"exactly once", QoS::ExactlyOnce);
    let (good_len, end);
    {
        let s = open_b(dir.path(), Backend::Log);
        let mut b = Batch::new();
        b.put_session(&cid("pub"), &session());
        b.put_session(&cid("sub"), &session());
        s.commit(&mut b).unwrap();
        good_len = s.stats().disk_bytes;
        let groups = s.stats().groups;

        let mut id = Batch::new();
        id.put_incoming_qos2(&cid("pub"), 7);
        assert!(id.receives_qos2());
        id.awaits(0, 1);
        let t_id = s.submit(1, &mut id);
        assert!(
            !id.receives_qos2() && id.is_empty(),
            "submit takes everything"
        );
        std::thread::sleep(Duration::from_millis(20));
        assert!(s.finished() < t_id, "held until its partner arrives");

        // A batch covering an older ticket of shard 1 is not the partner.
        let mut other = Batch::new();
        other.covers(1, 0);
        s.submit(0, &mut other);
        std::thread::sleep(Duration::from_millis(10));
        assert!(s.finished() < t_id, "still held");

        let mut copy = Batch::new();
        copy.put_queued(
            &cid("sub"),
            1,
            &Delivery::new(m.clone(), QoS::ExactlyOnce, false),
            None,
        );
        copy.covers(1, 1);
        let t_copy = s.submit(0, &mut copy);
        s.wait(t_copy).unwrap();
        assert!(s.durable() >= t_id);
        assert_eq!(s.stats().groups, groups + 1, "one frame for both");
        end = s.stats().disk_bytes as usize;
    }
    let full = fs::read(log_file(dir.path())).unwrap()[..end].to_vec();
    for cut in good_len as usize..=full.len() {
        let d = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), d.path());
        fs::write(log_file(d.path()), &full[..cut]).unwrap();
        let r = open_b(d.path(), Backend::Log).load().unwrap();
        let id = find(&r, "pub").unwrap().incoming_qos2.clone();
        let copies = find(&r, "sub").unwrap().queued.len();
        if cut == full.len() {
            assert_eq!((id, copies), (vec![7], 1), "the whole frame");
        } else {
            assert_eq!((id, copies), (vec![], 0), "cut at {cut}: neither");
        }
    }
}

/// A batch whose partner never comes (the other shard stalled) is written after
/// `PAIR_WAIT`, not held for ever; so is everything queued behind it.
#[test]
fn a_batch_whose_partner_never_comes_is_written_after_the_cap() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let s = open_b(dir.path(), backend);
        let start = Instant::now();
        let mut id = Batch::new();
        id.put_incoming_qos2(&cid("pub"), 1);
        id.awaits(0, 1);
        let t_id = s.submit(1, &mut id);
        let mut behind = Batch::new();
        behind.put_incoming_qos2(&cid("other"), 2);
        let t_behind = s.submit(2, &mut behind);
        s.wait(t_behind).unwrap();
        let waited = start.elapsed();
        assert!(s.durable() >= t_id, "{backend:?}");
        assert!(
            waited >= pairing::PAIR_WAIT - Duration::from_millis(5),
            "{backend:?}: held {waited:?}"
        );
        assert!(
            waited < Duration::from_secs(5),
            "{backend:?}: held {waited:?}"
        );
    }
}
