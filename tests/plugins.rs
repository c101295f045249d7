//! Plugins through the library (issue 17): a Rust test plugin (tests/plugin_support) given to
//! `Broker::start_with_plugins`, every hook exercised by real clients (mosquitto_pub /
//! mosquitto_sub, paho-mqtt 5 through tests/py/v5_client.py, rumqttc); a deferred answer that
//! holds up nobody else; a panicking plugin; plugin lines that stop start-up.

mod common;
mod plugin_support;

use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::auth_files::AuthFiles;
use common::clients::{MosqSub, Paho, Rumq};
use common::{eventually, run, QUIET, STEP};
use midge::config::Config;
use plugin_support::{logger, Seen, TestPlugin};

/// An in-process broker with the test plugin, its configuration in a file (for reload).
struct Running {
    broker: Option<midge::Broker>,
    port: u16,
    seen: Arc<Seen>,
    _dir: tempfile::TempDir,
    _files: AuthFiles,
}

impl Running {
    /// `shards` shards, anonymous clients allowed, a password file with alice/secret and an
    /// ACL file that allows everything, and the test plugin first in the chain.
    fn start(shards: usize) -> Running {
        Running::start_files(shards, true)
    }

    /// [`Running::start`], with the password and ACL files or without them.
    fn start_files(shards: usize, with_files: bool) -> Running {
        let files = AuthFiles::new(
            &[("alice", "secret"), ("slowpass", "pw")],
            "pattern readwrite #\n",
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("midge.conf");
        let mut text = format!(
            "listener 0 127.0.0.1\nshards {shards}\nsys_interval 0\nallow_anonymous true\n"
        );
        if with_files {
            text += &format!(
                "password_file {}\nacl_file {}\n",
                files.path("passwd"),
                files.path("acl")
            );
        }
        std::fs::write(&path, text).unwrap();
        let config = Config::from_file(&path).unwrap();
        let seen = Arc::new(Seen::default());
        let plugin = Arc::new(TestPlugin { seen: seen.clone() });
        let broker = midge::Broker::start_with_plugins(config, vec![plugin]).expect("start");
        let port = broker.local_addrs()[0].port();
        Running {
            broker: Some(broker),
            port,
            seen,
            _dir: dir,
            _files: files,
        }
    }

    fn broker(&self) -> &midge::Broker {
        self.broker.as_ref().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(b) = self.broker.take() {
            let _ = b.shutdown();
        }
    }
}

/// `mosquitto_pub ARGS` against `port`, bounded; whether it succeeded and how long it took.
fn try_pub(port: u16, args: &[&str]) -> (bool, Duration) {
    try_pub_for(port, args, Duration::from_secs(10))
}

/// [`try_pub`] with its own bound.
fn try_pub_for(port: u16, args: &[&str], limit: Duration) -> (bool, Duration) {
    let start = Instant::now();
    let out = run(
        Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args),
        limit,
    );
    (out.success(), start.elapsed())
}

fn paho(port: u16, steps: serde_json::Value) -> Paho {
    Paho::spawn("v5_client.py", port, &["--steps", &steps.to_string()])
}

#[test]
fn basic_auth_allows_refuses_and_passes_to_the_password_file() {
    let b = Running::start(2);
    let p = b.port;
    let msg = ["-t", "a/t", "-m", "x", "-q", "1"];
    let with = |user: &str, pw: &str| {
        let mut args = vec!["-u", user, "-P", pw, "-i"];
        args.push(user);
        args.extend(msg);
        try_pub(p, &args).0
    };
    assert!(with("good", "anything"), "the plugin allows 'good'");
    assert!(!with("bad", "anything"), "the plugin refuses 'bad'");
    let start = Instant::now();
    assert!(
        !with("lost", "anything"),
        "a deferral whose handle is dropped refuses"
    );
    assert!(start.elapsed() < Duration::from_secs(5), "and at once");
    assert!(with("alice", "secret"), "passed on to the password file");
    assert!(!with("alice", "wrong"), "the password file refuses");
    assert!(
        with("slowpass", "pw"),
        "a deferred Pass resumes the chain: the password file accepts"
    );
    assert!(
        !with("slowpass", "wrong"),
        "a deferred Pass resumes the chain: the password file refuses"
    );
    assert!(try_pub(p, &msg).0, "anonymous: passed on, allow_anonymous");
    let line = format!("auth good id=good port={p} peer=true");
    assert!(b.seen.has(&line), "{}", b.seen.dump());
    assert!(
        b.seen.has("connect good user=Some(\"good\")"),
        "{}",
        b.seen.dump()
    );
}

#[test]
fn a_named_client_no_plugin_accepts_is_refused_without_a_password_file() {
    // mosquitto's rule: when auth plugins are loaded and all of them pass on a client with a
    // user name, it is refused; only anonymous clients go by allow_anonymous.
    let b = Running::start_files(1, false);
    let p = b.port;
    let msg = ["-t", "a/t", "-m", "x", "-q", "1"];
    let with = |user: &str| {
        let mut args = vec!["-u", user, "-P", "pw", "-i", user];
        args.extend(msg);
        try_pub(p, &args).0
    };
    assert!(with("good"), "the plugin allows 'good'");
    assert!(!with("stranger"), "every plugin passed on a named client");
    assert!(
        !with("slowpass"),
        "a deferred Pass, then no plugin left: refused"
    );
    assert!(try_pub(p, &msg).0, "anonymous: allow_anonymous decides");
}

#[test]
fn a_deferral_never_answered_is_closed_after_30_s() {
    let b = Running::start(1);
    let p = b.port;
    let start = Instant::now();
    // mosquitto_pub waits for its CONNACK; the broker closes the connection instead.
    let (ok, took) = try_pub_for(
        p,
        &["-u", "forever", "-P", "x", "-t", "t", "-m", "x"],
        Duration::from_secs(60),
    );
    assert!(!ok, "never answered: not connected");
    assert!(
        took >= Duration::from_secs(30) && took < Duration::from_secs(45),
        "closed by the broker after its 30 s limit, not by the client: {:?}",
        start.elapsed()
    );
    assert!(try_pub(p, &["-t", "t", "-m", "x"]).0, "the broker goes on");
}

#[test]
fn a_deferred_answer_holds_up_no_other_client() {
    // One shard: the parked client and the other are served by the same thread.
    let b = Running::start(1);
    let p = b.port;
    let started = Instant::now();
    let slow = std::thread::spawn(move || {
        try_pub(
            p,
            &["-u", "slow", "-P", "x", "-t", "s/t", "-m", "x", "-q", "1"],
        )
    });
    assert!(
        eventually(STEP, || b.seen.has("auth slow")),
        "the slow CONNECT never reached the plugin"
    );
    let (mut other, _) = Rumq::connect(p, "other", true);
    other.subscribe("rt/x", 1);
    other.publish("rt/x", "ping", 1, false);
    let got = other.messages(1, STEP);
    let round_trip = started.elapsed();
    assert_eq!(got.len(), 1, "the QoS 1 round trip did not complete");
    assert!(
        round_trip < Duration::from_millis(1500),
        "the other client's QoS 1 round trip took {round_trip:?} from the slow CONNECT: held up"
    );
    let (ok, took) = slow.join().unwrap();
    assert!(ok, "the deferred Allow did not let the slow client in");
    assert!(
        took >= Duration::from_millis(1900),
        "the slow client was answered after {took:?}, before the plugin's 2 s"
    );
}

#[test]
fn an_answer_for_a_connection_closed_meanwhile_is_dropped() {
    // One shard, so the second connection may take the first one's slot: the first one's
    // Allow (at 2 s) must not let the second in early (its own comes at 2.5 s).
    let b = Running::start(1);
    let p = b.port;
    let args = [
        "-h",
        "127.0.0.1",
        "-p",
        &p.to_string(),
        "-u",
        "slow",
        "-P",
        "x",
        "-t",
        "s",
        "-m",
        "x",
    ];
    let mut first = common::Spawned::spawn(
        Command::new("mosquitto_pub")
            .args(args)
            .args(["-i", "gone"]),
    );
    assert!(eventually(STEP, || b.seen.has("auth slow id=gone")));
    first.kill();
    std::thread::sleep(Duration::from_millis(500));
    let (ok, took) = try_pub(
        p,
        &[
            "-u", "slow", "-P", "x", "-i", "second", "-t", "s", "-m", "x",
        ],
    );
    assert!(ok, "the second parked client was not let in");
    assert!(
        took >= Duration::from_millis(1900),
        "the second client was answered after {took:?}: by the first one's answer"
    );
}

#[test]
fn a_panicking_plugin_is_a_refusal_logged_and_the_broker_goes_on() {
    let log = logger();
    let b = Running::start(2);
    let p = b.port;
    assert!(!try_pub(p, &["-u", "boom", "-P", "x", "-t", "t", "-m", "x"]).0);
    let mut c = paho(
        p,
        serde_json::json!([
            {"op": "connect", "id": "panics"},
            {"op": "subscribe", "subs": [{"topic": "boom/#", "qos": 1}]},
            {"op": "publish", "topic": "boom/x", "payload": "x", "qos": 1},
            {"op": "disconnect"}
        ]),
    );
    assert_eq!(
        c.expect_event("suback")["codes"][0],
        135,
        "refused as by a deny"
    );
    assert_eq!(c.expect_event("published")["rc"], 135);
    c.finish(STEP);
    let logged = |needle: &str| {
        log.lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("plugin test: panicked") && l.contains(needle))
    };
    assert!(
        logged("boom in basic_auth"),
        "{:?}",
        log.lines.lock().unwrap()
    );
    assert!(logged("boom in acl_check"));
    // Still serving, the plugin included.
    assert!(
        try_pub(
            p,
            &["-u", "good", "-P", "x", "-t", "t", "-m", "x", "-q", "1"]
        )
        .0
    );
}

#[test]
fn acl_hooks_refuse_publish_subscribe_and_receive_including_retained_and_wills() {
    let b = Running::start(2);
    let p = b.port;
    for topic in ["deny/recv/r", "ok/r"] {
        assert!(try_pub(p, &["-t", topic, "-m", "kept", "-r", "-q", "1"]).0);
    }
    let mut sub = paho(
        p,
        serde_json::json!([
            {"op": "connect", "id": "reader"},
            {"op": "subscribe", "subs": [
                {"topic": "deny/sub/a", "qos": 1},
                {"topic": "deny/recv/#", "qos": 1},
                {"topic": "deny/pub/#", "qos": 1},
                {"topic": "ok/#", "qos": 1}]},
            {"op": "publish", "topic": "deny/pub/x", "payload": "x", "qos": 1},
            {"op": "messages", "count": 3, "timeout": 10},
            {"op": "sleep", "secs": 0.3},
            {"op": "disconnect"}
        ]),
    );
    assert_eq!(
        sub.expect_event("suback")["codes"],
        serde_json::json!([135, 1, 1, 1])
    );
    // The retained messages follow the SUBACK, before the PUBACK of the refused publish.
    let retained = sub.messages(1, STEP);
    assert_eq!(retained.len(), 1);
    assert_eq!(
        (retained[0].topic.as_str(), retained[0].retain),
        ("ok/r", true)
    );
    assert_eq!(sub.expect_event("published")["rc"], 135, "publish refused");
    // Wills: one the publisher may not publish, one nobody may receive, one that goes.
    for will in ["deny/pub/w", "deny/recv/w", "ok/w"] {
        let mut w = MosqSub::start(
            p,
            &["-t", "x/y", "--will-topic", will, "--will-payload", "w"],
        );
        w.kill();
    }
    assert!(try_pub(p, &["-t", "deny/recv/live", "-m", "x", "-q", "1"]).0);
    assert!(try_pub(p, &["-t", "ok/end", "-m", "x", "-q", "1"]).0);
    let got = sub.messages(3, STEP);
    let topics: Vec<&str> = got.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(topics, ["ok/w", "ok/end"], "{got:?}");
    sub.finish(STEP);
    assert!(
        b.seen.has("acl deny Read deny/recv/r reader"),
        "{}",
        b.seen.dump()
    );
    assert!(b.seen.has("acl deny Read deny/recv/w reader"));
    assert!(b.seen.has("acl deny Write deny/pub/w"));
}

#[test]
fn message_in_rewrites_and_drops_and_message_out_counts() {
    let b = Running::start(2);
    let p = b.port;
    let (mut sub, _) = Rumq::connect(p, "rewrites", true);
    for f in ["rewrite/#", "rewritten/#", "drop/#", "ok/#"] {
        sub.subscribe(f, 1);
    }
    let out_before = b.seen.message_out.load(Ordering::Relaxed);
    assert!(try_pub(p, &["-t", "rewrite/in", "-m", "hello", "-q", "1"]).0);
    assert!(
        try_pub(p, &["-t", "drop/me", "-m", "x", "-q", "1"]).0,
        "QoS flow completes"
    );
    assert!(try_pub(p, &["-t", "ok/end", "-m", "end", "-q", "1"]).0);
    let got = sub.messages(3, Duration::from_secs(2));
    let got: Vec<(&str, &str)> = got
        .iter()
        .map(|m| (m.topic.as_str(), m.payload.as_str()))
        .collect();
    assert_eq!(got, [("rewritten/out", "HELLO"), ("ok/end", "end")]);
    let out = b.seen.message_out.load(Ordering::Relaxed) - out_before;
    assert_eq!(out, 2, "one message-out per PUBLISH written");
}

#[test]
fn notifications_and_reload_reach_the_plugin() {
    let b = Running::start(2);
    let p = b.port;
    let (mut c, _) = Rumq::connect(p, "note", true);
    c.subscribe("n/x", 1);
    c.client.unsubscribe("n/x").unwrap();
    assert!(c
        .wait(STEP, |p| matches!(p, rumqttc::Packet::UnsubAck(_)))
        .is_some());
    c.disconnect();
    // A session resumed with clean start is replaced; one with an expiry runs out.
    let (k, _) = Rumq::connect(p, "kept", false);
    k.disconnect();
    let (k, _) = Rumq::connect(p, "kept", true);
    k.disconnect();
    let e = paho(
        p,
        serde_json::json!([
            {"op": "connect", "id": "expires", "clean": true, "props": {"SessionExpiryInterval": 1}},
            {"op": "disconnect"}
        ]),
    );
    e.finish(STEP);
    for line in [
        "connect note user=None",
        "subscribe note n/x 1",
        "unsubscribe note n/x",
        "disconnect note graceful=true",
        "session_end note Closed",
        "session_end kept Replaced",
    ] {
        assert!(
            eventually(STEP, || b.seen.has(line)),
            "{line}:\n{}",
            b.seen.dump()
        );
    }
    assert!(
        eventually(Duration::from_secs(5), || b
            .seen
            .has("session_end expires Expired")),
        "{}",
        b.seen.dump()
    );
    assert!(b.seen.ticks.load(Ordering::Relaxed) > 0);
    let changes = b.broker().reload().expect("reload");
    let _ = changes;
    for shard in 0..2 {
        let line = format!("reload shard {shard}");
        assert!(eventually(STEP, || b.seen.has(&line)), "{line}");
    }
    std::thread::sleep(QUIET);
}

#[test]
fn an_unknown_builtin_or_a_misplaced_option_stops_start_up_with_its_line() {
    let config =
        Config::parse_str("listener 0 127.0.0.1\nplugin builtin:nope\n", "t.conf").unwrap();
    let e = midge::Broker::start(config).expect_err("start-up must fail");
    assert!(
        e.to_string()
            .starts_with("t.conf:2: plugin builtin:nope: no built-in plugin"),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    for (text, want) in [
        (
            "plugin builtin:nope\n",
            ":1: plugin builtin:nope: no built-in plugin",
        ),
        (
            "\nplugin_opt_key v\n",
            ":2: 'plugin_opt_key' before any plugin line",
        ),
        ("plugin /nonexistent/lib.so\n", ":1: "),
    ] {
        let path = dir.path().join("bad.conf");
        std::fs::write(&path, text).unwrap();
        let out = run(
            Command::new(env!("CARGO_BIN_EXE_midge"))
                .args(["check", "--config"])
                .arg(&path),
            STEP,
        );
        assert!(!out.success(), "{text:?} passed the check");
        assert!(
            out.stderr.contains(&format!("{}{want}", path.display())),
            "{text:?}: {}",
            out.stderr
        );
    }
}
