//! mosquitto's options about where a client's topics live and which retained messages it gets:
//! `mount_point` (a listener whose clients live under a prefix) and `check_retain_source` (a
//! retained message goes out only while its publisher may still publish it). Each test runs
//! the same steps against midge and Debian's mosquitto, and says where they differ.

mod common;

use std::fs;
use std::process::Command;
use std::time::Duration;

use common::clients::{mosquitto_pub, MosqSub, Msg};
use common::raw::{self, Connect, Raw};
use common::{free_port, run, Broker, BrokerKind, QUIET, STEP};

/// Whether `kind` takes the mount point off the topics its mounted clients receive: midge
/// does, and mosquitto since 2.0.12 ("Fix listener mount_point not being removed on outgoing
/// messages", #2244); Debian 12's 2.0.11 sends the full topic.
fn strips(kind: BrokerKind) -> bool {
    if kind == BrokerKind::Midge {
        return true;
    }
    let out = run(
        Command::new(common::mosquitto_bin()).arg("-h"),
        Duration::from_secs(5),
    );
    let text = format!("{}{}", out.stdout, out.stderr);
    let version = text
        .split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
        .unwrap_or_else(|| panic!("no version in mosquitto -h: {text}"));
    let parts: Vec<u32> = version.split('.').filter_map(|p| p.parse().ok()).collect();
    parts >= vec![2, 0, 12]
}

/// A broker with a plain listener (the harness's port) and a listener mounted at `mp/`, both
/// anonymous, under an ACL that lets `mp/in/#` be written from inside and `mp/out/#` and
/// `x/#` from outside, and everything be read.
fn mounted_broker(kind: BrokerKind, dir: &std::path::Path) -> (Broker, u16) {
    let acl = dir.join("acl");
    fs::write(
        &acl,
        "topic readwrite mp/in/#\ntopic write mp/out/#\ntopic write x/#\ntopic read #\n",
    )
    .unwrap();
    let inner = free_port();
    let b = Broker::start_config_as(kind, |port| {
        format!(
            "user root\nallow_anonymous true\nacl_file {}\n\
             listener {port} 127.0.0.1\n\
             listener {inner} 127.0.0.1\nmount_point mp/\n",
            acl.display()
        )
    });
    (b, inner)
}

fn topics(msgs: &[Msg]) -> Vec<String> {
    msgs.iter()
        .map(|m| format!("{} {}", m.topic, m.payload))
        .collect()
}

#[test]
fn mount_point_prefixes_what_a_client_publishes_and_subscribes_and_the_acl_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    for kind in [BrokerKind::Midge, BrokerKind::Mosquitto] {
        let (b, inner) = mounted_broker(kind, dir.path());
        let outer = b.port();
        let mut outside = MosqSub::start(outer, &["-t", "#"]);
        let mut inside = MosqSub::start(inner, &["-t", "#"]);

        // Published inside: the full topic, checked by the ACL as such (mp/in is writable,
        // mp/denied is not).
        mosquitto_pub(inner, &["-t", "denied/1", "-m", "no"]);
        mosquitto_pub(inner, &["-t", "in/1", "-m", "a"]);
        // Published outside: inside gets what is under mp/ only.
        mosquitto_pub(outer, &["-t", "x/2", "-m", "no"]);
        mosquitto_pub(outer, &["-t", "mp/out/2", "-m", "b"]);

        let seen = topics(&outside.messages(3, STEP));
        assert_eq!(
            seen,
            ["mp/in/1 a", "x/2 no", "mp/out/2 b"],
            "{kind:?} outside"
        );
        let prefix = if strips(kind) { "" } else { "mp/" };
        let seen = topics(&inside.messages(3, STEP));
        assert_eq!(
            seen,
            [format!("{prefix}in/1 a"), format!("{prefix}out/2 b")],
            "{kind:?} inside"
        );
        // Nothing else came: x/2 is outside the mount point, denied/1 was refused.
        assert!(outside.messages(1, QUIET).is_empty(), "{kind:?}");
        assert!(inside.messages(1, QUIET).is_empty(), "{kind:?}");
    }
}

#[test]
fn mount_point_applies_to_retained_messages_and_wills() {
    let dir = tempfile::tempdir().unwrap();
    for kind in [BrokerKind::Midge, BrokerKind::Mosquitto] {
        let (b, inner) = mounted_broker(kind, dir.path());
        let outer = b.port();
        mosquitto_pub(outer, &["-t", "mp/out/r", "-m", "kept", "-r"]);
        mosquitto_pub(outer, &["-t", "x/r", "-m", "no", "-r"]);
        let mut inside = MosqSub::start(inner, &["-t", "#"]);
        let prefix = if strips(kind) { "" } else { "mp/" };
        let got = inside.messages(2, STEP);
        assert_eq!(topics(&got), [format!("{prefix}out/r kept")], "{kind:?}");
        assert!(got[0].retain, "{kind:?}");

        // A will of a client inside goes to its full topic.
        let mut outside = MosqSub::start(outer, &["-t", "mp/in/#"]);
        let mut dying = MosqSub::start(
            inner,
            &[
                "-t",
                "in/none",
                "--will-topic",
                "in/will",
                "--will-payload",
                "gone",
            ],
        );
        dying.kill();
        let seen = topics(&outside.messages(1, STEP));
        assert_eq!(seen, ["mp/in/will gone"], "{kind:?}");
    }
}

/// What mosquitto 2.0 does not do and midge does: UNSUBSCRIBE is mounted like SUBSCRIBE (a
/// mounted mosquitto client cannot unsubscribe), a shared subscription is shared under the
/// mount point, and a session subscribed from outside and resumed inside gets nothing
/// outside its mount point.
#[test]
fn midge_mounts_unsubscribe_and_shared_subscriptions_and_keeps_resumed_sessions_inside() {
    let dir = tempfile::tempdir().unwrap();
    let (b, inner) = mounted_broker(BrokerKind::Midge, dir.path());
    let outer = b.port();

    let mut c = Raw::subscribed(inner, "unsub", &[("out/#", 0)]);
    c.send(&raw::unsubscribe(2, &["out/#"]));
    c.expect(raw::UNSUBACK);
    mosquitto_pub(outer, &["-t", "mp/out/u", "-m", "after"]);
    assert!(c.recv(QUIET).is_err(), "delivered after UNSUBSCRIBE");

    let mut shared = Raw::connected(inner, "shared");
    assert_eq!(shared.subscribe(1, &[("$share/g/out/#", 0)]), [0]);
    mosquitto_pub(outer, &["-t", "mp/out/s", "-m", "one"]);
    let p = shared.expect(raw::PUBLISH).publish();
    assert_eq!(p.topic, "out/s");

    // Subscribed to everything from outside, then resumed through the mount point.
    let (mut s, _) = Raw::connect(outer, &Connect::new("wanderer").clean(false));
    assert_eq!(s.subscribe(1, &[("#", 1)]), [1]);
    s.send(&raw::disconnect());
    let (mut s, present) = Raw::connect(inner, &Connect::new("wanderer").clean(false));
    assert!(present);
    mosquitto_pub(outer, &["-t", "x/secret", "-m", "no", "-q", "1"]);
    mosquitto_pub(outer, &["-t", "mp/out/w", "-m", "yes", "-q", "1"]);
    let p = s.expect(raw::PUBLISH).publish();
    assert_eq!((p.topic.as_str(), &p.payload[..]), ("out/w", &b"yes"[..]));
    assert!(s.recv(QUIET).is_err(), "a message outside the mount point");
}

#[test]
fn mount_point_must_be_a_topic() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("m.conf");
    fs::write(&conf, "listener 1883\nmount_point a/+/\n").unwrap();
    let out = run(
        Command::new(common::midge_bin()).args(["check", "-c", conf.to_str().unwrap()]),
        STEP,
    );
    assert!(!out.success());
    assert!(
        out.stderr.contains("m.conf:2:") && out.stderr.contains("mount_point"),
        "{out:?}"
    );
}

/// `check_retain_source`: with it, a retained message is not sent to a new subscriber once
/// its publisher lost the right to publish it (here: by a reload of the ACL); without it
/// (mosquitto's actual default, whatever its manual says) it still is. Live messages are not
/// re-checked.
#[test]
fn check_retain_source_rechecks_the_publishers_rights_when_a_retained_message_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    for kind in [BrokerKind::Midge, BrokerKind::Mosquitto] {
        for check in [None, Some(true), Some(false)] {
            // Patterns: each client's rights follow from its id, as mosquitto computes them
            // for the publisher of a retained message.
            fs::write(
                &acl,
                "pattern write t/%c/#\npattern write u/%c/#\ntopic read #\n",
            )
            .unwrap();
            let line = check.map_or(String::new(), |c| format!("check_retain_source {c}\n"));
            let b = Broker::start_config_as(kind, |port| {
                format!(
                    "user root\nlistener {port} 127.0.0.1\nallow_anonymous true\nacl_file {}\n{line}",
                    acl.display()
                )
            });
            let port = b.port();
            mosquitto_pub(port, &["-i", "pub1", "-t", "t/pub1/a", "-m", "one", "-r"]);
            mosquitto_pub(port, &["-i", "pub2", "-t", "u/pub2/b", "-m", "two", "-r"]);
            // pub1 may no longer publish under t/: pub2 still may under u/.
            fs::write(&acl, "pattern write u/%c/#\ntopic read #\n").unwrap();
            b.reload();
            let mut sub = MosqSub::start(port, &["-i", "reader", "-t", "t/#", "-t", "u/#"]);
            let mut got = topics(&sub.messages(2, if check == Some(true) { QUIET } else { STEP }));
            got.sort();
            let expected: &[&str] = if check == Some(true) {
                &["u/pub2/b two"]
            } else {
                &["t/pub1/a one", "u/pub2/b two"]
            };
            assert_eq!(got, expected, "{kind:?} check_retain_source {check:?}");
        }
    }
}
