//! The loader and adapter against tests/data/plugins/deny.c, compiled here with gcc (the
//! end-to-end tests with real clients are in tests/c_plugins.rs).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use super::*;
use crate::auth::Access;
use crate::plugin::api::{
    ClientInfo, Credentials, Decision, Events, ExtendedAuth, Later, LaterSink, PluginOptions,
};
use crate::protocol::ProtocolVersion;

/// Compiles `tests/data/plugins/NAME.c` (or `source` if given) into `dir/NAME.so`.
fn compile(dir: &Path, name: &str, source: Option<&str>) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = match source {
        Some(text) => {
            let p = dir.join(format!("{name}.c"));
            std::fs::write(&p, text).unwrap();
            p
        }
        None => root.join(format!("tests/data/plugins/{name}.c")),
    };
    let out = dir.join(format!("{name}.so"));
    let status = Command::new("gcc")
        .args([
            "-std=c99",
            "-D_POSIX_C_SOURCE=200809L",
            "-Wall",
            "-Wextra",
            "-Werror",
        ])
        .args(["-shared", "-fPIC", "-I"])
        .arg(root.join("include"))
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .arg("-lpthread")
        .status()
        .expect("gcc");
    assert!(status.success(), "gcc failed on {}", src.display());
    out
}

fn opts(pairs: &[(&str, &str)]) -> PluginOptions {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn info() -> ClientInfo<'static> {
    ClientInfo {
        client_id: "c1",
        username: Some("bob"),
        protocol: ProtocolVersion::V5,
        peer: Some("127.0.0.1:5555".parse().unwrap()),
        listener_port: 1883,
        certificate_identity: None,
    }
}

/// A [`Later`] whose answer arrives on a channel.
struct Sink(mpsc::Sender<Decision>);

impl LaterSink for Sink {
    fn basic(self: Box<Self>, decision: Decision) {
        let _ = self.0.send(decision);
    }
    fn extended(self: Box<Self>, _answer: ExtendedAuth) {}
}

#[test]
fn acl_denies_the_configured_topic_and_passes_others() {
    let dir = tempfile::tempdir().unwrap();
    let so = compile(dir.path(), "deny", None);
    let plugin = load(&so, &opts(&[("deny_topic", "secret/t")])).unwrap();
    plugin
        .configure(&opts(&[("deny_topic", "secret/t")]))
        .unwrap();
    let mut shard = plugin.shard(0, 2);
    assert!(shard.events().contains(Events::ACL_CHECK));
    assert!(!shard.events().contains(Events::BASIC_AUTH));
    let c = info();
    assert_eq!(
        shard.acl_check(&c, "secret/t", Access::Write),
        Decision::Deny
    );
    assert_eq!(
        shard.acl_check(&c, "secret/t", Access::Subscribe),
        Decision::Deny
    );
    assert_eq!(shard.acl_check(&c, "other", Access::Write), Decision::Pass);
}

#[test]
fn later_basic_auth_is_answered_from_another_thread() {
    let dir = tempfile::tempdir().unwrap();
    let so = compile(dir.path(), "deny", None);
    let plugin = load(&so, &opts(&[("later_user", "bob")])).unwrap();
    let mut shard = plugin.shard(0, 1);
    for (password, want) in [(&b"good"[..], Decision::Allow), (b"bad", Decision::Deny)] {
        let (tx, rx) = mpsc::channel();
        let later = Later {
            inner: Some(Box::new(Sink(tx))),
        };
        let creds = Credentials {
            username: Some("bob"),
            password: Some(password),
        };
        assert_eq!(shard.basic_auth(&info(), &creds, later), Decision::Later);
        let got = rx.recv_timeout(Duration::from_secs(5)).expect("an answer");
        assert_eq!(got, want);
    }
    // Another user: the plugin defers, and the handle it did not keep sends nothing.
    let (tx, rx) = mpsc::channel();
    let creds = Credentials {
        username: Some("alice"),
        password: None,
    };
    let later = Later {
        inner: Some(Box::new(Sink(tx))),
    };
    assert_eq!(shard.basic_auth(&info(), &creds, later), Decision::Pass);
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
}

#[test]
fn failures_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let so = compile(dir.path(), "deny", None);
    let err = load(&so, &opts(&[("fail_init", "1")])).err().unwrap();
    assert!(err.contains(&so.display().to_string()), "{err}");
    assert!(err.contains("midge_plugin_init failed"), "{err}");

    let missing = dir.path().join("missing.so");
    let err = load(&missing, &PluginOptions::new()).err().unwrap();
    assert!(
        err.contains("missing.so") && err.contains("cannot load"),
        "{err}"
    );

    let nosym = compile(
        dir.path(),
        "nosym",
        Some("int not_a_plugin(void) { return 0; }\n"),
    );
    let err = load(&nosym, &PluginOptions::new()).err().unwrap();
    assert!(
        err.contains("nosym.so") && err.contains("midge_plugin_version"),
        "{err}"
    );

    let wrong = compile(
        dir.path(),
        "wrongversion",
        Some(
            "int midge_plugin_version(int n, const int *v) { (void)n; (void)v; return 99; }\n\
             int midge_plugin_init(void) { return 0; }\n\
             int midge_plugin_cleanup(void) { return 0; }\n",
        ),
    );
    let err = load(&wrong, &PluginOptions::new()).err().unwrap();
    assert!(
        err.contains("wrongversion.so") && err.contains("version 99"),
        "{err}"
    );
}

/// A [`Later`] for extended auth whose answer arrives on a channel.
struct ExtSink(mpsc::Sender<ExtendedAuth>);

impl LaterSink for ExtSink {
    fn basic(self: Box<Self>, _decision: Decision) {}
    fn extended(self: Box<Self>, answer: ExtendedAuth) {
        let _ = self.0.send(answer);
    }
}

#[test]
fn every_event_reaches_a_c_plugin_with_its_shard_data() {
    use crate::plugin::api::{AuthStep, MessageIn, MessageOut, Verdict};
    use crate::protocol::{ByteStr, Properties, QoS};
    use bytes::Bytes;

    let dir = tempfile::tempdir().unwrap();
    let so = compile(dir.path(), "events", None);
    let plugin = load(&so, &PluginOptions::new()).unwrap();
    let mut shard = plugin.shard(0, 1);
    let events = shard.events();
    for e in [
        Events::EXTENDED_AUTH,
        Events::MESSAGE_IN,
        Events::MESSAGE_OUT,
        Events::SUBSCRIBE,
        Events::UNSUBSCRIBE,
        Events::CONNECT,
        Events::DISCONNECT,
        Events::TICK,
    ] {
        assert!(events.contains(e), "{e:?} not registered");
    }
    assert!(!events.contains(Events::ACL_CHECK) && !events.contains(Events::BASIC_AUTH));
    let c = info();

    // message in: renamed and rewritten through the setters (a bad topic refused), or dropped.
    let mut topic = ByteStr::from("rename");
    let mut payload = Bytes::from_static(b"x");
    let (mut qos, mut retain, mut props) = (QoS::AtLeastOnce, false, Properties::default());
    fn msg<'a>(
        topic: &'a mut ByteStr,
        payload: &'a mut Bytes,
        qos: &'a mut QoS,
        retain: &'a mut bool,
        properties: &'a mut Properties,
    ) -> MessageIn<'a> {
        MessageIn {
            topic,
            payload,
            qos,
            retain,
            properties,
        }
    }
    let v = shard.message_in(
        Some(&c),
        msg(&mut topic, &mut payload, &mut qos, &mut retain, &mut props),
    );
    assert_eq!(v, Verdict::Keep);
    assert_eq!((topic.as_str(), &payload[..]), ("renamed", &b"P"[..]));
    let mut topic = ByteStr::from("drop");
    let v = shard.message_in(
        None,
        msg(&mut topic, &mut payload, &mut qos, &mut retain, &mut props),
    );
    assert_eq!(v, Verdict::Drop);

    // notifications
    let out = MessageOut {
        topic: "t",
        payload: b"p",
        qos: QoS::AtMostOnce,
        retain: false,
    };
    shard.message_out(&c, &out);
    shard.subscribe(&c, "a/#", QoS::AtLeastOnce);
    shard.unsubscribe(&c, "a/#");
    shard.connect(&c);
    shard.disconnect(&c, true);
    shard.tick(std::time::Instant::now());

    // enhanced auth: a two-step exchange, an unknown method passed on, a deferred answer.
    let step = |method, data, start| AuthStep {
        method,
        data,
        start,
        reauthenticate: false,
    };
    let answer = shard.extended_auth(&c, &step("ECHO", None, true), Later::detached());
    assert_eq!(
        answer,
        ExtendedAuth::Continue(Bytes::from_static(b"challenge"))
    );
    let answer = shard.extended_auth(&c, &step("ECHO", Some(b"ok"), false), Later::detached());
    assert_eq!(
        answer,
        ExtendedAuth::Success(Some(Bytes::from_static(b"welcome")))
    );
    let answer = shard.extended_auth(&c, &step("ECHO", Some(b"no"), false), Later::detached());
    assert_eq!(answer, ExtendedAuth::Deny);
    let answer = shard.extended_auth(&c, &step("OTHER", None, true), Later::detached());
    assert_eq!(answer, ExtendedAuth::Pass);
    let (tx, rx) = mpsc::channel();
    let later = Later {
        inner: Some(Box::new(ExtSink(tx))),
    };
    let answer = shard.extended_auth(&c, &step("LATER", None, true), later);
    assert_eq!(answer, ExtendedAuth::Later);
    let late = rx.recv_timeout(Duration::from_secs(5)).expect("an answer");
    assert_eq!(
        late,
        ExtendedAuth::Success(Some(Bytes::from_static(b"late")))
    );

    // What the plugin counted (read through dlsym on the same, still loaded, library).
    // SAFETY: the plugin's own functions, `int f(int)` and `int f(void)`.
    unsafe {
        let lib = libloading::Library::new(&so).unwrap();
        let seen = *lib
            .get::<unsafe extern "C" fn(i32) -> i32>(b"events_seen\0")
            .unwrap();
        let ok = *lib
            .get::<unsafe extern "C" fn() -> i32>(b"events_shard_data_ok\0")
            .unwrap();
        let counts: Vec<i32> = (abi::EVT_EXTENDED_AUTH..=abi::EVT_TICK)
            .map(|e| seen(e))
            .collect();
        // extended auth 5, acl 0, message 2, out, sub, unsub, connect, disconnect, tick 1 each.
        assert_eq!(counts, vec![5, 0, 2, 1, 1, 1, 1, 1, 1]);
        assert_eq!(
            ok(),
            counts.iter().sum::<i32>(),
            "shard data missing in some call"
        );
    }
}
