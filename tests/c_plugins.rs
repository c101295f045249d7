//! C plugins (include/midge_plugin.h) end to end: the Rust example plugin
//! (plugins/example, built here with cargo) and a plugin in C (tests/data/plugins/deny.c,
//! compiled here with gcc) loaded with `plugin PATH` + `plugin_opt_*` lines, checked with
//! mosquitto_pub / mosquitto_sub and paho-mqtt (MQTT 3.1.1 and 5); start-up failures (init
//! fails, missing file, no symbols) stop the broker with a message naming the file.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::clients::{mosquitto_pub, MosqSub, Paho};
use common::{is_midge, midge_bin, run, Broker};

/// Builds the example plugin (once per test binary) and returns its .so.
fn example_so() -> &'static Path {
    static SO: OnceLock<PathBuf> = OnceLock::new();
    SO.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = run(
            Command::new(cargo)
                .args(["build", "-p", "midge-plugin-example"])
                .current_dir(env!("CARGO_MANIFEST_DIR")),
            Duration::from_secs(300),
        );
        assert!(
            out.success(),
            "cargo build -p midge-plugin-example: {out:?}"
        );
        // The broker binary and the plugin share target/debug.
        let dir = Path::new(midge_bin()).parent().unwrap();
        let so = dir.join("libmidge_plugin_example.so");
        assert!(so.exists(), "{} not built", so.display());
        so
    })
}

/// Compiles a C plugin (`source` text, or tests/data/plugins/NAME.c) with gcc into `dir`.
fn gcc_plugin(dir: &Path, name: &str, source: Option<&str>) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = match source {
        Some(text) => {
            let p = dir.join(format!("{name}.c"));
            std::fs::write(&p, text).unwrap();
            p
        }
        None => root.join(format!("tests/data/plugins/{name}.c")),
    };
    let so = dir.join(format!("{name}.so"));
    let out = run(
        Command::new("gcc")
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
            .arg(&so)
            .arg(&src)
            .arg("-lpthread"),
        Duration::from_secs(60),
    );
    assert!(out.success(), "gcc {}: {out:?}", src.display());
    so
}

fn plugin_line(path: &Path) -> String {
    format!("plugin {}", path.display())
}

#[test]
fn example_plugin_denies_a_topic_and_rewrites_payloads() {
    if !is_midge() {
        return;
    }
    let so = example_so();
    let broker = Broker::start_with(&[
        &plugin_line(so),
        "plugin_opt_deny_topic secret/t",
        "plugin_opt_rewrite_topic shout",
    ]);
    let port = broker.port();

    // mosquitto_sub on everything: gets the rewritten payload and the plain message, never
    // the denied topic.
    let mut sub = MosqSub::start(port, &["-t", "#", "-q", "1", "-V", "311"]);
    // paho 3.1.1: SUBSCRIBE to the denied topic is refused with 0x80.
    let mut v311 = Paho::spawn("sub.py", port, &["--topic", "secret/t:1", "--timeout", "5"]);
    let suback = v311.expect_event("suback");
    assert_eq!(suback["granted"], serde_json::json!([128]), "{suback}");
    // paho 5: SUBSCRIBE refused with 0x87, PUBLISH QoS 1 to it answered PUBACK 0x87.
    let steps = serde_json::json!([
        {"op": "connect", "id": "v5"},
        {"op": "subscribe", "subs": [{"topic": "secret/t", "qos": 1}]},
        {"op": "publish", "topic": "secret/t", "payload": "no", "qos": 1},
        {"op": "disconnect"}
    ]);
    let mut v5 = Paho::spawn("v5_client.py", port, &["--steps", &steps.to_string()]);
    let suback = v5.expect_event("suback");
    assert_eq!(suback["codes"], serde_json::json!([0x87]), "{suback}");
    let published = v5.expect_event("published");
    assert_eq!(published["rc"], 0x87, "{published}");

    mosquitto_pub(port, &["-t", "secret/t", "-m", "denied", "-q", "1"]);
    mosquitto_pub(port, &["-t", "shout", "-m", "hello plugin", "-q", "1"]);
    mosquitto_pub(port, &["-t", "plain", "-m", "as is", "-q", "1"]);
    let got = sub.messages(2, Duration::from_secs(5));
    let seen: Vec<(&str, &str)> = got
        .iter()
        .map(|m| (m.topic.as_str(), m.payload.as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![("shout", "HELLO PLUGIN"), ("plain", "as is")],
        "{}",
        sub.describe()
    );
    // Nothing more (the denied publish never arrives late).
    assert!(sub.messages(1, Duration::from_millis(500)).is_empty());
}

#[test]
fn example_plugin_replaces_the_payload_with_a_fixed_string() {
    if !is_midge() {
        return;
    }
    let broker = Broker::start_with(&[
        &plugin_line(example_so()),
        "plugin_opt_rewrite_topic r/t",
        "plugin_opt_rewrite_payload [redacted]",
    ]);
    let mut sub = Paho::spawn(
        "sub.py",
        broker.port(),
        &["--topic", "r/#:1", "--count", "1"],
    );
    sub.expect_event("suback");
    mosquitto_pub(broker.port(), &["-t", "r/t", "-m", "secret", "-q", "1"]);
    let got = sub.messages(1, Duration::from_secs(5));
    assert_eq!(got.len(), 1, "{}", sub.describe());
    assert_eq!(got[0].payload, "[redacted]");
}

#[test]
fn a_c_plugin_compiled_with_gcc_denies_its_topic() {
    if !is_midge() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let so = gcc_plugin(dir.path(), "deny", None);
    let mut broker = Broker::start_with(&[&plugin_line(&so), "plugin_opt_deny_topic c/denied"]);
    let port = broker.port();
    let mut sub = Paho::spawn(
        "sub.py",
        port,
        &["--topic", "c/denied:1", "--topic", "c/ok:1", "--count", "1"],
    );
    let suback = sub.expect_event("suback");
    assert_eq!(suback["granted"], serde_json::json!([128, 1]), "{suback}");
    mosquitto_pub(port, &["-t", "c/denied", "-m", "x", "-q", "1"]);
    mosquitto_pub(port, &["-t", "c/ok", "-m", "y", "-q", "1"]);
    let got = sub.messages(1, Duration::from_secs(5));
    assert_eq!(got.len(), 1, "{}", sub.describe());
    assert_eq!(
        (got[0].topic.as_str(), got[0].payload.as_str()),
        ("c/ok", "y")
    );
    assert!(broker.log().contains("deny.c: loaded"), "{}", broker.log());
    // midge_plugin_cleanup at shutdown.
    broker.terminate();
    assert!(broker.log().contains("deny.c: cleanup"), "{}", broker.log());
}

#[test]
fn later_basic_auth_is_answered_from_a_plugin_thread() {
    if !is_midge() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let so = gcc_plugin(dir.path(), "deny", None);
    let broker = Broker::start_with(&[&plugin_line(&so), "plugin_opt_later_user bob"]);
    let port = broker.port().to_string();
    let publish = |password: &str| {
        run(
            Command::new("mosquitto_pub").args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-u",
                "bob",
                "-P",
                password,
                "-t",
                "a",
                "-m",
                "x",
            ]),
            Duration::from_secs(10),
        )
    };
    assert!(
        publish("good").success(),
        "good password refused: {}",
        broker.log()
    );
    let bad = publish("bad");
    assert!(!bad.success() && !bad.timed_out, "bad password: {bad:?}");
}

/// Runs midge on a config that must not start: (exit status success?, stderr).
fn start_fails(lines: &[String]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("midge.conf");
    let port = common::free_port();
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\n{}\n",
            lines.join("\n")
        ),
    )
    .unwrap();
    let out = run(
        Command::new(midge_bin()).arg("-c").arg(&conf),
        Duration::from_secs(20),
    );
    assert!(!out.timed_out, "midge kept running: {out:?}");
    (out.success(), out.stderr)
}

#[test]
fn start_up_stops_with_the_file_named_when_a_plugin_cannot_be_used() {
    if !is_midge() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let deny = gcc_plugin(dir.path(), "deny", None);
    let (ok, err) = start_fails(&[plugin_line(&deny), "plugin_opt_fail_init 1".into()]);
    assert!(!ok, "{err}");
    assert!(
        err.contains(&deny.display().to_string()) && err.contains("midge_plugin_init failed"),
        "{err}"
    );

    let missing = dir.path().join("nothere.so");
    let (ok, err) = start_fails(&[plugin_line(&missing)]);
    assert!(
        !ok && err.contains("nothere.so") && err.contains("cannot load"),
        "{err}"
    );

    let nosym = gcc_plugin(
        dir.path(),
        "nosym",
        Some("int not_a_plugin(void) { return 1; }\n"),
    );
    let (ok, err) = start_fails(&[plugin_line(&nosym)]);
    assert!(
        !ok && err.contains("nosym.so") && err.contains("no symbol midge_plugin_version"),
        "{err}"
    );
}

#[test]
fn the_broker_exports_the_functions_plugins_call() {
    let out = run(
        Command::new("nm").args(["-D", midge_bin()]),
        Duration::from_secs(30),
    );
    assert!(out.success(), "nm: {out:?}");
    for name in midge::plugin::cabi::EXPORTED
        .iter()
        .chain(midge::plugin::cabi::mosq::EXPORTED)
    {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.ends_with(&format!(" T {name}"))),
            "{name} is not in midge's dynamic symbols"
        );
    }
}

#[test]
fn the_header_compiles_cleanly_and_matches_the_rust_layout() {
    use midge::plugin::cabi::abi;
    use std::mem::size_of;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("layout.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\n#include \"midge_plugin.h\"\n\
         int main(void) {\n\
           printf(\"%zu %zu %zu %zu %zu %zu %zu %zu %zu %zu %zu %zu %zu\\n\",\n\
             sizeof(struct midge_client), sizeof(struct midge_evt_basic_auth),\n\
             sizeof(struct midge_evt_extended_auth), sizeof(struct midge_evt_acl_check),\n\
             sizeof(struct midge_evt_message), sizeof(struct midge_evt_message_out),\n\
             sizeof(struct midge_evt_subscribe), sizeof(struct midge_evt_unsubscribe),\n\
             sizeof(struct midge_evt_connect), sizeof(struct midge_evt_disconnect),\n\
             sizeof(struct midge_evt_tick), sizeof(struct midge_evt_reload),\n\
             offsetof(struct midge_evt_message, broker_private));\n\
           return 0;\n}\n",
    )
    .unwrap();
    let exe = dir.path().join("layout");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = run(
        Command::new("gcc")
            .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-I"])
            .arg(root.join("include"))
            .arg("-o")
            .arg(&exe)
            .arg(&src),
        Duration::from_secs(60),
    );
    assert!(out.success(), "gcc: {out:?}");
    let out = run(&mut Command::new(&exe), Duration::from_secs(10));
    let want = [
        size_of::<abi::Client>(),
        size_of::<abi::EvtBasicAuth>(),
        size_of::<abi::EvtExtendedAuth>(),
        size_of::<abi::EvtAclCheck>(),
        size_of::<abi::EvtMessage>(),
        size_of::<abi::EvtMessageOut>(),
        size_of::<abi::EvtSubscribe>(),
        size_of::<abi::EvtUnsubscribe>(),
        size_of::<abi::EvtConnect>(),
        size_of::<abi::EvtDisconnect>(),
        size_of::<abi::EvtTick>(),
        size_of::<abi::EvtReload>(),
        std::mem::offset_of!(abi::EvtMessage, broker_private),
    ]
    .map(|n| n.to_string())
    .join(" ");
    assert_eq!(out.stdout.trim(), want);
}

#[test]
fn reload_hands_the_new_options_to_the_plugin() {
    if !is_midge() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let so = gcc_plugin(dir.path(), "deny", None);
    let broker = Broker::start_with(&[&plugin_line(&so), "plugin_opt_deny_topic one"]);
    let conf = std::fs::read_to_string(broker.config_path()).unwrap();
    std::fs::write(
        broker.config_path(),
        conf.replace("plugin_opt_deny_topic one", "plugin_opt_deny_topic two"),
    )
    .unwrap();
    broker.reload();
    assert!(
        broker.wait_log_contains_any(
            &["deny.c: reloaded, deny_topic two"],
            Duration::from_secs(5)
        ),
        "{}",
        broker.log()
    );
    // New options the plugin refuses: logged, the broker goes on.
    let conf = std::fs::read_to_string(broker.config_path()).unwrap();
    std::fs::write(
        broker.config_path(),
        format!("{conf}\nplugin_opt_refuse_reload 1\n"),
    )
    .unwrap();
    broker.reload();
    assert!(
        broker.wait_log_contains_any(&["refused the new options"], Duration::from_secs(5)),
        "{}",
        broker.log()
    );
    mosquitto_pub(broker.port(), &["-t", "still/up", "-m", "x"]);
}

/// Debian's mosquitto 2.0 dynamic security plugin, loaded unchanged through the
/// `mosquitto_*` exports (src/plugin/cabi/mosq.rs): its users and roles authenticate and
/// authorise; its default "deny" for publishing holds (mosquitto's all-deferred rule).
#[test]
fn mosquitto_dynamic_security_plugin_loads_unchanged() {
    const DYNSEC: &str = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so";
    let ctrl = Path::new("/usr/bin/mosquitto_ctrl");
    if !is_midge() || !Path::new(DYNSEC).exists() || !ctrl.exists() {
        eprintln!("skipped: {DYNSEC} or mosquitto_ctrl not installed (packages mosquitto, mosquitto-clients)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("dynsec.json");
    let json_text = json.display().to_string();
    let init = run(
        Command::new("mosquitto_ctrl").args(["dynsec", "init", &json_text, "admin", "adminpw"]),
        Duration::from_secs(20),
    );
    assert!(
        init.success() && json.exists(),
        "mosquitto_ctrl dynsec init: {init:?}"
    );
    let broker = Broker::start_with(&[
        &format!("plugin {DYNSEC}"),
        &format!("plugin_opt_config_file {json_text}"),
    ]);
    let port = broker.port();

    // The admin role may subscribe to '#' and publish on $CONTROL/dynamic-security/#, not
    // elsewhere (defaultACLAccess publishClientSend false).
    let mut sub = MosqSub::start(
        port,
        &[
            "-t",
            "#",
            "-t",
            "$CONTROL/dynamic-security/#",
            "-u",
            "admin",
            "-P",
            "adminpw",
            "-q",
            "1",
            "-V",
            "311",
        ],
    );
    let denied = run(
        Command::new("mosquitto_pub").args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-u",
            "admin",
            "-P",
            "adminpw",
            "-V",
            "5",
            "-q",
            "1",
            "-t",
            "t/x",
            "-m",
            "no",
            "-d",
        ]),
        Duration::from_secs(10),
    );
    assert!(
        denied.stdout.contains("RC:135"),
        "publish to t/x: {denied:?}"
    );
    mosquitto_pub(
        port,
        &[
            "-u",
            "admin",
            "-P",
            "adminpw",
            "-q",
            "1",
            "-t",
            "$CONTROL/dynamic-security/v1",
            "-m",
            "{}",
        ],
    );
    let got = sub.messages(1, Duration::from_secs(5));
    assert_eq!(got.len(), 1, "{}", sub.describe());
    assert_eq!(got[0].topic, "$CONTROL/dynamic-security/v1");

    // A wrong password and a user dynamic security does not know are refused.
    for (user, password) in [("admin", "wrong"), ("nobody", "x")] {
        let out = run(
            Command::new("mosquitto_pub").args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-u",
                user,
                "-P",
                password,
                "-t",
                "a",
                "-m",
                "x",
            ]),
            Duration::from_secs(10),
        );
        assert!(
            !out.success() && !out.timed_out,
            "{user}/{password}: {out:?}"
        );
    }
    assert!(
        broker.log().contains("mosquitto event 6 is not supported"),
        "{}",
        broker.log()
    );
}
