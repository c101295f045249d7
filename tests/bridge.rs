//! Bridges (`connection NAME` blocks): midge bridged to Debian's mosquitto, started by the
//! test on a free port, and to a second midge. Messages are published and read with
//! mosquitto_pub/mosquitto_sub on either side; the link's state is read from its
//! notification topic on the local side.

mod common;

use std::time::{Duration, Instant};

use common::clients::{mosquitto_pub, MosqSub, Msg};
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
    let deadline = Instant::now() + limit;
    let mut sub = MosqSub::start(local.port(), &["-t", STATE, "-q", "1", "-W", "30"]);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        let got = sub.messages(seen.len() + 1, left.min(Duration::from_millis(500)));
        if got.iter().any(|m| m.payload == state) {
            return;
        }
        seen.extend(got);
    }
    panic!(
        "the bridge's state did not become {state} within {limit:?} (saw {seen:?}); log:\n{}",
        local.log()
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
