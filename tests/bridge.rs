//! Bridges (`connection NAME` blocks): midge bridged to Debian's mosquitto, started by the
//! test on a free port, and to a second midge. Messages are published and read with
//! mosquitto_pub/mosquitto_sub on either side; the link's state is read from its
//! notification topic on the local side.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::clients::{mosquitto_pub, MosqSub, Msg};
use common::tls::{strs, Certs};
use common::{config_text, Broker, BrokerKind, STEP};

const STATE: &str = "bridges/r/state";

/// The remote broker (plain config; `extra` lines after it).
fn remote(kind: BrokerKind, extra: &[&str]) -> Broker {
    Broker::start_config_as(kind, |port| config_text(kind, port, extra))
}

/// midge with one bridge `r`: `lines` are the block after `connection r` (a restart time of
/// one second and the notification topic [`STATE`] come first).
fn local(lines: &[String]) -> Broker {
    let mut all = vec![
        "connection r".to_string(),
        "restart_timeout 1".to_string(),
        format!("notification_topic {STATE}"),
    ];
    all.extend(lines.iter().cloned());
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    Broker::start_config_as(BrokerKind::Midge, |port| {
        config_text(BrokerKind::Midge, port, &refs)
    })
}

fn address(b: &Broker) -> String {
    format!("address 127.0.0.1:{}", b.port())
}

/// Waits until the local notification topic says `state` ("1" up, "0" down).
fn wait_state(local: &Broker, state: &str, limit: Duration) {
    wait_payload(local, STATE, state, limit);
}

/// Waits until `topic` on `broker` carries `payload` (its retained message, or a new one).
fn wait_payload(broker: &Broker, topic: &str, payload: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut sub = MosqSub::start(broker.port(), &["-t", topic, "-q", "1", "-W", "30"]);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        let got = sub.messages(seen.len() + 1, left.min(Duration::from_millis(500)));
        if got.iter().any(|m| m.payload == payload) {
            return;
        }
        seen.extend(got);
    }
    panic!(
        "{topic} did not become {payload} within {limit:?} (saw {seen:?}); log:\n{}",
        broker.log()
    );
}

fn relay_in_and_out_with_prefixes(remote_kind: BrokerKind, version: &str) {
    let r = remote(remote_kind, &[]);
    let l = local(&[
        address(&r),
        format!("bridge_protocol_version {version}"),
        "topic sensors/# out 1 here/ there/".into(),
        "topic cmd/# in 2 here/ there/".into(),
        "topic both/# both 1".into(),
    ]);
    wait_state(&l, "1", STEP * 2);
    // Out: published here on here/sensors/..., arrives there on there/sensors/....
    let mut there = MosqSub::start(r.port(), &["-t", "there/#", "-t", "both/#", "-q", "2"]);
    let mut here = MosqSub::start(l.port(), &["-t", "here/#", "-t", "both/#", "-q", "2"]);
    mosquitto_pub(l.port(), &["-t", "here/sensors/a", "-m", "s0", "-q", "0"]);
    mosquitto_pub(l.port(), &["-t", "here/sensors/a", "-m", "s1", "-q", "1"]);
    mosquitto_pub(l.port(), &["-t", "here/sensors/b", "-m", "s2", "-q", "2"]);
    // In: published there on there/cmd/..., arrives here on here/cmd/....
    mosquitto_pub(r.port(), &["-t", "there/cmd/x", "-m", "c1", "-q", "1"]);
    mosquitto_pub(r.port(), &["-t", "there/cmd/y", "-m", "c2", "-q", "2"]);
    // Not bridged: in-only topics do not go out, out-only topics do not come in.
    mosquitto_pub(l.port(), &["-t", "here/cmd/z", "-m", "not-out", "-q", "1"]);
    mosquitto_pub(
        r.port(),
        &["-t", "there/sensors/z", "-m", "not-in", "-q", "1"],
    );
    // Both ways, no prefixes: one copy on each side, no echo.
    mosquitto_pub(l.port(), &["-t", "both/l", "-m", "from-local", "-q", "1"]);
    mosquitto_pub(r.port(), &["-t", "both/r", "-m", "from-remote", "-q", "1"]);

    let got_there = there.messages(9, STEP);
    let got_here = here.messages(9, STEP);
    let m = |topic: &str, payload: &str, qos: u8| Msg {
        topic: topic.into(),
        payload: payload.into(),
        qos,
        retain: false,
    };
    for want in [
        m("there/sensors/a", "s0", 0),
        m("there/sensors/a", "s1", 1),
        m("there/sensors/b", "s2", 1),
        m("there/sensors/z", "not-in", 1),
        m("both/l", "from-local", 1),
        m("both/r", "from-remote", 1),
    ] {
        assert!(
            got_there.contains(&want),
            "{want:?} missing there: {got_there:?}"
        );
    }
    for want in [
        m("here/cmd/x", "c1", 1),
        m("here/cmd/y", "c2", 2),
        m("here/sensors/a", "s1", 1),
        m("both/l", "from-local", 1),
        m("both/r", "from-remote", 1),
    ] {
        assert!(
            got_here.contains(&want),
            "{want:?} missing here: {got_here:?}"
        );
    }
    let count = |msgs: &[Msg], payload: &str| msgs.iter().filter(|m| m.payload == payload).count();
    assert_eq!(count(&got_there, "not-out"), 0, "{got_there:?}");
    assert_eq!(count(&got_here, "not-in"), 0, "{got_here:?}");
    for p in ["from-local", "from-remote"] {
        assert_eq!(count(&got_there, p), 1, "{p} there: {got_there:?}");
        assert_eq!(count(&got_here, p), 1, "{p} here: {got_here:?}");
    }
}

#[test]
fn relays_in_out_and_both_with_prefixes_to_mosquitto_over_3_1_1() {
    relay_in_and_out_with_prefixes(BrokerKind::Mosquitto, "mqttv311");
}

#[test]
fn relays_in_out_and_both_with_prefixes_to_mosquitto_over_5() {
    relay_in_and_out_with_prefixes(BrokerKind::Mosquitto, "mqttv50");
}

#[test]
fn relays_in_out_and_both_with_prefixes_to_midge_over_5() {
    relay_in_and_out_with_prefixes(BrokerKind::Midge, "mqttv50");
}

#[test]
fn two_brokers_bridged_both_ways_on_everything_see_each_message_once() {
    for version in ["mqttv311", "mqttv50"] {
        let r = remote(BrokerKind::Mosquitto, &[]);
        let l = local(&[
            address(&r),
            format!("bridge_protocol_version {version}"),
            "topic # both 2".into(),
        ]);
        wait_state(&l, "1", STEP * 2);
        let mut there = MosqSub::start(r.port(), &["-t", "loop/#", "-q", "2"]);
        let mut here = MosqSub::start(l.port(), &["-t", "loop/#", "-q", "2"]);
        for q in ["0", "1", "2"] {
            mosquitto_pub(l.port(), &["-t", "loop/l", "-m", &format!("l{q}"), "-q", q]);
            mosquitto_pub(r.port(), &["-t", "loop/r", "-m", &format!("r{q}"), "-q", q]);
        }
        // Six messages on each side; a seventh would be an echo (waited for in full).
        for (side, sub) in [("remote", &mut there), ("local", &mut here)] {
            let got = sub.messages(7, STEP);
            let mut payloads: Vec<String> = got.iter().map(|m| m.payload.clone()).collect();
            payloads.sort();
            assert_eq!(
                payloads,
                ["l0", "l1", "l2", "r0", "r1", "r2"],
                "{version}: {side} side saw {got:?}"
            );
        }
    }
}

#[test]
fn retained_messages_are_relayed_with_their_flag() {
    let r = remote(BrokerKind::Mosquitto, &[]);
    let l = local(&[
        address(&r),
        "topic out/# out 1".into(),
        "topic in/# in 1".into(),
        "bridge_bind_address 127.0.0.1".into(),
    ]);
    wait_state(&l, "1", STEP * 2);
    mosquitto_pub(
        l.port(),
        &["-t", "out/r", "-m", "kept-out", "-q", "1", "-r"],
    );
    mosquitto_pub(r.port(), &["-t", "in/r", "-m", "kept-in", "-q", "1", "-r"]);
    // Read by subscribers that arrive afterwards: from each broker's retained store.
    let retained = |port: u16, topic: &str, payload: &str| {
        let deadline = Instant::now() + STEP;
        while Instant::now() < deadline {
            let mut sub = MosqSub::start(port, &["-t", topic, "-q", "1", "-W", "5"]);
            let got = sub.messages(1, Duration::from_millis(500));
            if let Some(m) = got.first() {
                assert_eq!((m.payload.as_str(), m.retain), (payload, true), "{got:?}");
                return;
            }
        }
        panic!("no retained message on {topic}");
    };
    retained(r.port(), "out/r", "kept-out");
    retained(l.port(), "in/r", "kept-in");
}

/// Publishes on `topic` here until one arrives on `remote` (the bridge may be switching).
fn relayed(local: &Broker, remote: &Broker, topic: &str, limit: Duration) -> bool {
    let mut sub = MosqSub::start(remote.port(), &["-t", topic, "-q", "1", "-W", "30"]);
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        mosquitto_pub(local.port(), &["-t", topic, "-m", "hello", "-q", "1"]);
        if !sub.messages(1, Duration::from_millis(500)).is_empty() {
            return true;
        }
    }
    false
}

#[test]
fn bridge_fails_over_to_the_second_address_and_back() {
    let mut first = remote(BrokerKind::Mosquitto, &[]);
    let second = remote(BrokerKind::Mosquitto, &[]);
    first.terminate();
    let l = local(&[
        format!(
            "addresses 127.0.0.1:{} 127.0.0.1:{}",
            first.port(),
            second.port()
        ),
        "topic f/# out 1".into(),
    ]);
    wait_state(&l, "1", STEP * 2);
    assert!(
        relayed(&l, &second, "f/x", STEP),
        "not relayed to the second address"
    );
    // The first address is back: the bridge returns to it (it probes every 5 s).
    first.restart();
    assert!(
        relayed(&l, &first, "f/y", STEP * 3),
        "not back on the first address; log:\n{}",
        l.log()
    );
}

#[test]
fn notifications_say_1_and_0_on_both_sides() {
    let mut r = remote(BrokerKind::Mosquitto, &[]);
    let mut l = local(&[address(&r), "topic n/# both 1".into()]);
    wait_state(&l, "1", STEP * 2);
    let remote_state = |r: &Broker| {
        let mut sub = MosqSub::start(r.port(), &["-t", STATE, "-q", "1", "-W", "5"]);
        sub.messages(1, STEP)
            .first()
            .map(|m| (m.payload.clone(), m.retain))
    };
    assert_eq!(remote_state(&r), Some(("1".into(), true)));
    // The remote goes away: the local side says 0.
    r.terminate();
    wait_state(&l, "0", STEP * 2);
    r.restart();
    wait_state(&l, "1", STEP * 3);
    // midge dies without DISCONNECT: the remote publishes the bridge's will, 0.
    l.kill9();
    let deadline = Instant::now() + STEP * 4;
    loop {
        if remote_state(&r) == Some(("0".into(), true)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no will on the remote; log:\n{}",
            r.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Publishes `n` messages at `qos` `0..n` on `topic` through one `mosquitto_pub -l`, in bursts
/// of `burst` lines `pause` apart; returns once every one was acknowledged.
fn publish_stream(port: u16, topic: &str, qos: &str, n: usize, burst: usize, pause: Duration) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            qos,
            "-t",
            topic,
            "-l",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("mosquitto_pub");
    let mut stdin = child.stdin.take().unwrap();
    for start in (0..n).step_by(burst) {
        let lines: String = (start..(start + burst).min(n))
            .map(|i| format!("{i}\n"))
            .collect();
        stdin.write_all(lines.as_bytes()).unwrap();
        stdin.flush().unwrap();
        std::thread::sleep(pause);
    }
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "mosquitto_pub -l failed: {status}");
            return;
        }
        assert!(Instant::now() < deadline, "mosquitto_pub -l did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_qos_1_stream_survives_a_remote_restart_without_loss() {
    stream_across_a_remote_restart("1");
}

#[test]
fn a_qos_2_stream_survives_a_remote_restart_without_loss_or_duplicates() {
    stream_across_a_remote_restart("2");
}

/// `N` messages at `qos` published here while the remote is stopped (SIGTERM) and started
/// again mid-stream: every one reaches a persistent reader on the remote; at QoS 2 once.
fn stream_across_a_remote_restart(qos: &'static str) {
    const N: usize = 10_000;
    let store = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        // mosquitto started as root writes its store as the mosquitto user.
        std::fs::set_permissions(store.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let mut r = remote(
        BrokerKind::Mosquitto,
        &[
            "persistence true",
            &format!("persistence_location {}/", store.path().display()),
            "max_queued_messages 0",
            "max_inflight_messages 20",
        ],
    );
    // The reader's persistent session exists before the stream starts; it reads afterwards.
    let mut reader = MosqSub::start(r.port(), &["-t", "s/#", "-q", qos, "-c", "-i", "reader"]);
    reader.kill();
    // The bridge's queue is bounded like a session's: room for the whole outage here.
    let l = local(&[
        address(&r),
        format!("topic s/# out {qos}"),
        "max_queued_messages 10000".into(),
    ]);
    wait_state(&l, "1", STEP * 2);
    let port = l.port();
    let publisher = std::thread::spawn(move || {
        publish_stream(port, "s/x", qos, N, 250, Duration::from_millis(100))
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !publisher.is_finished(),
        "the stream ended before the remote stopped"
    );
    r.terminate();
    std::thread::sleep(Duration::from_millis(500));
    r.restart();
    publisher.join().unwrap();
    let mut reader = MosqSub::start(
        r.port(),
        &["-t", "s/#", "-q", qos, "-c", "-i", "reader", "-W", "60"],
    );
    let mut seen: HashMap<usize, usize> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < N && Instant::now() < deadline {
        for m in reader.messages(N - seen.len(), Duration::from_secs(2)) {
            *seen
                .entry(m.payload.parse().expect("a number"))
                .or_default() += 1;
        }
    }
    let missing: Vec<usize> = (0..N).filter(|i| !seen.contains_key(i)).collect();
    assert!(
        missing.is_empty(),
        "{} of {N} acknowledged messages never arrived (first: {:?}); midge log:\n{}",
        missing.len(),
        &missing[..missing.len().min(10)],
        l.log()
    );
    assert!(
        l.log()
            .contains("Bridge r: connected to 127.0.0.1 (session present: true)"),
        "the bridge did not resume its remote session:\n{}",
        l.log()
    );
    if qos == "2" {
        let twice: Vec<usize> = (0..N).filter(|i| seen[i] > 1).collect();
        assert!(twice.is_empty(), "QoS 2 duplicates: {twice:?}");
    }
}

fn tls_bridge(ca: &str) -> (Certs, Broker, Broker) {
    tls_bridge_with(|certs| format!("bridge_cafile {}", certs.path(ca)))
}

/// A TLS remote that requires a client certificate, and a bridge to it whose CA line
/// `ca_line` makes.
fn tls_bridge_with(ca_line: impl Fn(&Certs) -> String) -> (Certs, Broker, Broker) {
    let certs = Certs::generate();
    certs.open_up();
    let mut lines = certs.require_certificate_lines();
    lines.push("use_identity_as_username false".into());
    let r = remote(BrokerKind::Mosquitto, &strs(&lines));
    let l = local(&[
        format!("address localhost:{}", r.port()),
        "topic t/# out 1".into(),
        ca_line(&certs),
        format!("bridge_certfile {}", certs.path("client.pem")),
        format!("bridge_keyfile {}", certs.path("client.key")),
    ]);
    (certs, r, l)
}

#[test]
fn bridges_over_tls_with_a_ca_and_a_client_certificate() {
    let (certs, r, l) = tls_bridge("ca.pem");
    wait_state(&l, "1", STEP * 2);
    let mut args = vec!["-t", "t/#", "-q", "1"];
    let tls = certs.client_args(Some("client"));
    args.extend(strs(&tls));
    let mut there = MosqSub::start(r.port(), &args);
    mosquitto_pub(l.port(), &["-t", "t/x", "-m", "secret", "-q", "1"]);
    let got = there.messages(1, STEP);
    assert_eq!(
        got.first().map(|m| m.payload.as_str()),
        Some("secret"),
        "{got:?}"
    );
}

#[test]
fn bridges_over_tls_with_a_ca_directory() {
    let (_certs, _r, l) =
        tls_bridge_with(|certs| format!("bridge_capath {}", certs.dir().display()));
    wait_state(&l, "1", STEP * 2);
}

#[test]
fn a_bridge_refuses_a_remote_its_ca_did_not_sign() {
    let (_certs, _r, l) = tls_bridge("other-ca.pem");
    assert!(
        l.wait_log_contains_any(&["TLS"], STEP * 2),
        "no TLS failure logged:\n{}",
        l.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !l.log().contains("Bridge r: connected"),
        "connected to an untrusted remote:\n{}",
        l.log()
    );
}

#[test]
fn with_persistence_messages_queued_for_a_down_remote_survive_a_midge_crash() {
    let got = queued_across_a_midge_crash(false);
    let mut payloads: Vec<String> = got.iter().map(|m| m.payload.clone()).collect();
    payloads.dedup();
    let want: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    assert_eq!(payloads, want, "in order, none lost");
}

#[test]
fn with_local_cleansession_the_queue_starts_empty_after_a_restart() {
    let got = queued_across_a_midge_crash(true);
    assert!(got.is_empty(), "{got:?}");
}

/// Twenty QoS 1 messages published here while the remote is down, then midge is killed
/// (SIGKILL) and both are started again: what the remote's reader gets.
fn queued_across_a_midge_crash(local_clean: bool) -> Vec<Msg> {
    let store = tempfile::tempdir().unwrap();
    let mut r = remote(BrokerKind::Mosquitto, &[]);
    let mut l = local(&[
        address(&r),
        "topic q/# out 1".into(),
        format!("local_cleansession {local_clean}"),
        "persistence true".into(),
        format!("persistence_location {}", store.path().display()),
    ]);
    wait_state(&l, "1", STEP * 2);
    r.terminate();
    wait_state(&l, "0", STEP * 2);
    // Acknowledged by midge (after its store has them) while the remote is down.
    for i in 0..20 {
        mosquitto_pub(l.port(), &["-t", "q/x", "-m", &format!("m{i}"), "-q", "1"]);
    }
    l.kill9();
    // The reader is subscribed before midge is back.
    r.restart();
    let mut there = MosqSub::start(r.port(), &["-t", "q/#", "-q", "1"]);
    l.restart();
    wait_state(&l, "1", STEP * 2);
    there.messages(20, STEP * 2)
}

#[test]
fn a_lazy_bridge_connects_at_its_threshold_and_leaves_when_idle() {
    let r = remote(BrokerKind::Mosquitto, &[]);
    let l = local(&[
        address(&r),
        "topic z/# out 1".into(),
        "start_type lazy".into(),
        "threshold 3".into(),
        "idle_timeout 2".into(),
    ]);
    let mut there = MosqSub::start(r.port(), &["-t", "z/#", "-q", "1"]);
    for i in 0..2 {
        mosquitto_pub(l.port(), &["-t", "z/x", "-m", &format!("z{i}"), "-q", "1"]);
    }
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !l.log().contains("Bridge r: connected"),
        "connected below the threshold:\n{}",
        l.log()
    );
    mosquitto_pub(l.port(), &["-t", "z/x", "-m", "z2", "-q", "1"]);
    let got = there.messages(3, STEP);
    let payloads: Vec<&str> = got.iter().map(|m| m.payload.as_str()).collect();
    assert_eq!(payloads, ["z0", "z1", "z2"]);
    wait_state(&l, "1", STEP);
    // Idle for idle_timeout: the bridge disconnects and waits for the threshold again.
    wait_state(&l, "0", STEP * 2);
    assert!(l.log().contains("idle, disconnecting"), "{}", l.log());
}

#[test]
fn local_username_puts_the_bridge_under_the_acl() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(
        &acl,
        "topic readwrite #\n\nuser bridge-user\ntopic read acl/ok/#\ntopic write acl/in-ok/#\n",
    )
    .unwrap();
    let r = remote(BrokerKind::Mosquitto, &[]);
    let l = local(&[
        address(&r),
        "topic acl/# both 1".into(),
        "local_username bridge-user".into(),
        format!("acl_file {}", acl.display()),
    ]);
    wait_state(&l, "1", STEP * 2);
    let mut there = MosqSub::start(r.port(), &["-t", "acl/#", "-q", "1"]);
    let mut here = MosqSub::start(l.port(), &["-t", "acl/#", "-q", "1"]);
    mosquitto_pub(l.port(), &["-t", "acl/ok/1", "-m", "out-ok", "-q", "1"]);
    mosquitto_pub(l.port(), &["-t", "acl/no/1", "-m", "out-no", "-q", "1"]);
    mosquitto_pub(r.port(), &["-t", "acl/in-ok/1", "-m", "in-ok", "-q", "1"]);
    mosquitto_pub(r.port(), &["-t", "acl/in-no/1", "-m", "in-no", "-q", "1"]);
    // There: both published there, and only what the bridge may read here.
    let mut got: Vec<String> = there
        .messages(4, STEP)
        .into_iter()
        .map(|m| m.payload)
        .collect();
    got.sort();
    assert_eq!(got, ["in-no", "in-ok", "out-ok"]);
    // Here: both published here, and only what the bridge may write here.
    let mut got: Vec<String> = here
        .messages(4, STEP)
        .into_iter()
        .map(|m| m.payload)
        .collect();
    got.sort();
    assert_eq!(got, ["in-ok", "out-no", "out-ok"]);
}

/// The lines of a bridge `name` to `remote` on `name/#` out at QoS 1, its local and remote
/// notifications on `bridges/NAME/state`.
fn bridge_block(name: &str, remote: &Broker) -> Vec<String> {
    vec![
        format!("connection {name}"),
        address(remote),
        "restart_timeout 1".into(),
        format!("notification_topic bridges/{name}/state"),
        format!("remote_clientid bridge-{name}"),
        format!("topic {name}/# out 1"),
    ]
}

/// Writes midge's configuration with these bridge blocks and sends it SIGHUP; returns once
/// the reload is logged as finished.
fn reload_with(local: &Broker, blocks: &[Vec<String>]) {
    let lines: Vec<String> = blocks.concat();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let text = config_text(BrokerKind::Midge, local.port(), &refs) + "\nuser root\n";
    std::fs::write(local.config_path(), text).unwrap();
    local.reload();
}

#[test]
fn sighup_adds_a_bridge_and_removes_another_while_clients_keep_publishing() {
    const N: usize = 1500;
    let r = remote(BrokerKind::Mosquitto, &[]);
    let keep = bridge_block("keep", &r);
    let gone = bridge_block("gone", &r);
    let added = bridge_block("added", &r);
    let changed = bridge_block("changed", &r);
    let mut changed_now = changed.clone();
    changed_now.push("keepalive_interval 30".into());
    let lines: Vec<String> = [keep.clone(), gone.clone(), changed].concat();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let l = Broker::start_config_as(BrokerKind::Midge, |port| {
        config_text(BrokerKind::Midge, port, &refs)
    });
    wait_payload(&l, "bridges/keep/state", "1", STEP * 2);
    wait_payload(&l, "bridges/gone/state", "1", STEP * 2);
    wait_payload(&l, "bridges/changed/state", "1", STEP * 2);
    assert!(relayed(&l, &r, "gone/x", STEP), "gone not relayed before");

    // Clients keep publishing through the unchanged bridge, and a local subscriber keeps
    // reading, across the reload.
    let mut there = MosqSub::start(r.port(), &["-t", "keep/#", "-q", "1"]);
    let mut here = MosqSub::start(l.port(), &["-t", "keep/#", "-q", "1"]);
    let port = l.port();
    let publisher = std::thread::spawn(move || {
        publish_stream(port, "keep/s", "1", N, 50, Duration::from_millis(40))
    });
    std::thread::sleep(Duration::from_millis(400));
    // `gone` removed, `added` added, `changed` changed, `keep` unchanged but moved to the
    // end of the file.
    reload_with(&l, &[added.clone(), changed_now, keep.clone()]);
    publisher.join().unwrap();

    wait_payload(&l, "bridges/added/state", "1", STEP * 2);
    assert!(
        relayed(&l, &r, "added/x", STEP),
        "the added bridge does not relay"
    );
    // The removed bridge said goodbye on both sides, as when midge stops, and relays no more.
    wait_payload(&l, "bridges/gone/state", "0", STEP);
    wait_payload(&r, "bridges/gone/state", "0", STEP);
    assert!(
        !relayed(&l, &r, "gone/y", Duration::from_secs(2)),
        "the removed bridge still relays"
    );
    // Nothing published through the unchanged bridge was lost, on either side.
    for (side, sub) in [("remote", &mut there), ("local", &mut here)] {
        let got = sub.messages(N, STEP * 2);
        let mut numbers: Vec<usize> = got.iter().map(|m| m.payload.parse().unwrap()).collect();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), N, "{side}: {} of {N} arrived", numbers.len());
    }
    let log = l.log();
    assert_eq!(
        log.matches("Bridge keep: connected").count(),
        1,
        "the unchanged bridge reconnected:\n{log}"
    );
    assert_eq!(log.matches("Bridge keep: connection").count(), 0, "{log}");
    assert!(log.contains("Reload: bridge gone removed."), "{log}");
    assert!(log.contains("Reload: bridge added added."), "{log}");
    // The changed bridge restarted with its new settings.
    assert!(
        common::eventually(STEP, || l
            .log()
            .matches("Bridge changed: connected")
            .count()
            == 2),
        "the changed bridge did not reconnect once:\n{}",
        l.log()
    );
    assert!(
        relayed(&l, &r, "changed/x", STEP),
        "the changed bridge does not relay"
    );
    // The remote saw the unchanged bridge's client connect once.
    let rlog = r.log();
    assert!(rlog.contains("as bridge-changed (p2, c0, k30"), "{rlog}");
    assert_eq!(
        rlog.matches("as bridge-keep").count(),
        1,
        "bridge-keep connected more than once to the remote:\n{rlog}"
    );
}

#[test]
fn with_persistence_a_qos_1_message_from_the_remote_is_acknowledged_only_once_stored() {
    acknowledged_to_the_remote_only_once_stored("1");
}

#[test]
fn with_persistence_a_qos_2_message_from_the_remote_is_acknowledged_only_once_stored() {
    acknowledged_to_the_remote_only_once_stored("2");
}

/// With persistence a message from the remote is acknowledged to it (PUBACK/PUBREC) only once
/// midge's store has it, as a client's publish is: with the disk full, midge holds the
/// acknowledgement and the remote keeps the message; killed then (SIGKILL) and started again
/// with room, midge gets it again from the remote and its stored reader receives it. Had the
/// remote been acknowledged on receipt, the message would be lost.
fn acknowledged_to_the_remote_only_once_stored(qos: &str) {
    use common::v5::{self, V5};
    use common::Tmpfs;
    let base = tempfile::tempdir().unwrap();
    let Some(_fs) = Tmpfs::mount(base.path(), "2m") else {
        eprintln!("cannot mount a tmpfs here: disk-full test not run");
        return;
    };
    let store = base.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let r = remote(BrokerKind::Mosquitto, &[]);
    let mut l = local(&[
        address(&r),
        format!("topic in/# in {qos}"),
        "persistence true".into(),
        format!("persistence_location {}/", store.display()),
    ]);
    wait_state(&l, "1", STEP * 2);
    // A reader whose session (and what is queued for it) is kept in the store while away.
    let reader_args = ["-t", "in/#", "-q", qos, "-c", "-i", "reader"];
    MosqSub::start(l.port(), &reader_args).kill();
    // Fill the disk: a file takes what is left, then retained messages use up the room the
    // store's log keeps ahead of its data, until a write fails (PUBACK 0x80 to a 5.0 client).
    let filler = base.path().join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 << 10];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    drop(f);
    let (mut p5, _) = V5::connect(l.port(), &v5::connect("filler"));
    for n in 0.. {
        let ack = p5
            .publish(v5::publish("fill", &[5u8; 8192], 1, true, 1))
            .expect("a PUBACK");
        if ack.reason == 0x80 {
            break;
        }
        assert!(n < 200, "the store never filled up");
    }
    drop(p5);
    mosquitto_pub(r.port(), &["-t", "in/x", "-m", "kept", "-q", qos]);
    std::thread::sleep(Duration::from_millis(800));
    l.kill9();
    std::fs::remove_file(&filler).unwrap();
    l.restart();
    let mut reader = MosqSub::start(l.port(), &reader_args);
    let got = reader.messages(1, STEP * 2);
    assert_eq!(
        got.iter().map(|m| m.payload.as_str()).collect::<Vec<_>>(),
        ["kept"],
        "the remote's message was acknowledged before it was stored, and lost; log:\n{}",
        l.log()
    );
}

/// A remote broker played by the test on its own listener, for flows no real broker can be
/// made to produce on demand (such as a resend after a reconnect).
struct FakeRemote {
    listener: std::net::TcpListener,
}

impl FakeRemote {
    fn start() -> FakeRemote {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        FakeRemote { listener }
    }

    fn port(&self) -> u16 {
        self.listener.local_addr().unwrap().port()
    }

    /// The bridge's next connection: its CONNECT read (it must ask to keep its session), a
    /// CONNACK with `session_present` sent, and its SUBSCRIBE answered.
    fn accept(&self, local: &Broker, session_present: bool) -> common::raw::Raw {
        use common::raw::{self, Raw};
        let deadline = Instant::now() + STEP;
        let stream = loop {
            match self.listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(
                        Instant::now() < deadline,
                        "the bridge did not connect; log:\n{}",
                        local.log()
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        let mut conn = Raw::accepted(stream);
        let connect = conn.expect(raw::CONNECT);
        // Variable header: protocol name (2 + 4 bytes), level, then the connect flags.
        assert_eq!(connect.body[7] & 0x02, 0, "cleansession false sent clean");
        conn.send(&[raw::CONNACK << 4, 2, u8::from(session_present), 0]);
        let subscribe = Self::until(&mut conn, raw::SUBSCRIBE, local);
        // QoS 2 granted to the bridge's one filter.
        let id = subscribe.pid().to_be_bytes();
        conn.send(&raw::packet(raw::SUBACK << 4, &[id[0], id[1], 2]));
        conn
    }

    /// Reads until a packet of `kind` (answering pings and skipping the rest: the bridge's
    /// notification and anything else not asked for).
    fn until(conn: &mut common::raw::Raw, kind: u8, local: &Broker) -> common::raw::Packet {
        use common::raw;
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match conn.recv(left) {
                Ok(p) if p.kind() == kind => return p,
                Ok(p) if p.kind() == raw::PINGREQ => conn.send(&[raw::PINGRESP << 4, 0]),
                Ok(_) => {}
                Err(e) => panic!(
                    "no {} from the bridge: {e:?}; log:\n{}",
                    raw::type_name(kind),
                    local.log()
                ),
            }
        }
    }
}

/// The remote sends QoS 2 message id 7 on t/a, gets its PUBREC, and the connection drops
/// before its PUBREL. On the bridge's reconnect the remote says whether it kept the session
/// (`session_present`) and sends id 7 again: with the session kept it is the same message
/// resent (DUP), which must not be delivered twice; without it, a new message. Returns what
/// a local QoS 2 subscriber received.
fn qos2_id_across_a_reconnect(session_present: bool) -> Vec<Msg> {
    use common::raw::{self, publish_raw};
    let remote = FakeRemote::start();
    let l = local(&[
        format!("address 127.0.0.1:{}", remote.port()),
        "topic t/# in 2".into(),
        "cleansession false".into(),
    ]);
    let mut first = remote.accept(&l, false);
    let mut sub = MosqSub::start(l.port(), &["-t", "t/#", "-q", "2"]);
    first.send(&publish_raw(b"t/a", b"first", 2, false, false, 7));
    assert_eq!(FakeRemote::until(&mut first, raw::PUBREC, &l).pid(), 7);
    drop(first);

    let mut second = remote.accept(&l, session_present);
    let (payload, dup) = match session_present {
        true => (&b"first"[..], true),
        false => (&b"second"[..], false),
    };
    second.send(&publish_raw(b"t/a", payload, 2, false, dup, 7));
    assert_eq!(FakeRemote::until(&mut second, raw::PUBREC, &l).pid(), 7);
    second.send(&raw::pubrel(7));
    assert_eq!(FakeRemote::until(&mut second, raw::PUBCOMP, &l).pid(), 7);
    // Whatever was to be delivered has been by the time the flow is complete; a second
    // copy would come within this wait.
    sub.messages(3, Duration::from_secs(1))
}

#[test]
fn a_qos_2_message_resent_after_a_reconnect_is_delivered_once() {
    let got = qos2_id_across_a_reconnect(true);
    let payloads: Vec<&str> = got.iter().map(|m| m.payload.as_str()).collect();
    assert_eq!(payloads, ["first"], "QoS 2 duplicate: {got:?}");
}

#[test]
fn a_qos_2_id_is_new_again_when_the_remote_starts_a_new_session() {
    let got = qos2_id_across_a_reconnect(false);
    let payloads: Vec<&str> = got.iter().map(|m| m.payload.as_str()).collect();
    assert_eq!(payloads, ["first", "second"], "{got:?}");
}
