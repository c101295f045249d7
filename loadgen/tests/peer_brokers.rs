//! The peers loadgen compares midge with beyond mosquitto: nats-server's MQTT listener and
//! RabbitMQ's MQTT plugin, each started from its generated config, measured (the listening
//! process, which for RabbitMQ is the `beam.smp` child of its start script), and stopped by
//! PID with nothing left behind. A cell a broker cannot serve (MQTT 5 on either) is marked as
//! skipped, not counted as a loss.
//!
//! CI installs both (`.ci/run`). Elsewhere a missing one is reported and skipped, unless
//! `LOADGEN_REQUIRE_PEERS=1` (CI sets it) makes that a failure.

use std::path::Path;

use loadgen::broker;
use loadgen::report::json::Status;
use loadgen::suite;

/// The broker `name`, or `None` (after saying why) when it is not installed and not required.
fn peer(name: &str) -> Option<broker::BrokerDef> {
    let def = broker::known(name, None).expect("in the table");
    match def.unavailable() {
        None => Some(def),
        Some(why) if std::env::var_os("LOADGEN_REQUIRE_PEERS").is_some() => {
            panic!("LOADGEN_REQUIRE_PEERS is set and {name} is unavailable: {why}")
        }
        Some(why) => {
            eprintln!("skipping {name}: {why}");
            None
        }
    }
}

/// True while process `pid` exists (a zombie counts as gone).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

#[test]
fn nats_and_rabbitmq_run_measured_and_stop_cleanly_with_mqtt5_marked_unsupported() {
    let peers: Vec<_> = ["nats", "rabbitmq"].into_iter().filter_map(peer).collect();
    if peers.is_empty() {
        return;
    }
    let s = suite::parse(
        r#"
        name = "peers"
        repeat = 1
        [signal]
        min_messages = 50
        min_broker_cpu_ms = 0
        max_duration_s = 2
        [defaults]
        warmup_s = 0.3
        duration_s = 1
        drain_s = 1
        rate = 50
        [[cell]]
        name = "p2p-q1"
        shape = "p2p"
        clients = 2
        qos = 1
        [[cell]]
        name = "v5"
        shape = "p2p"
        clients = 2
        protocol = "5"
        "#,
        "peers",
    )
    .unwrap();
    let root = std::env::temp_dir().join(format!("loadgen-peers-{}", std::process::id()));
    let dir = suite::out_dir(&root, &s.name);
    let records = suite::run(&s, &peers, &dir, "loadgen suite peers.toml", true).unwrap();
    assert_eq!(records.len(), 2 * peers.len());
    for r in &records {
        let who = format!("{} @ {}", r.scenario.name, r.broker.name);
        if r.scenario.name == "v5" {
            assert_eq!(r.status, Status::Skipped, "{who}");
            assert!(
                r.note
                    .as_deref()
                    .unwrap()
                    .contains("not configured for MQTT 5"),
                "{who}: {:?}",
                r.note
            );
            continue;
        }
        assert_eq!(r.status, Status::Ok, "{who}: {:?}", r.failures);
        assert_eq!(r.lost, 0, "{who}");
        assert!(r.counters.received > 0, "{who}");
        let cpu = r.broker_cpu.as_ref().expect("a managed broker is measured");
        assert!(cpu.cpu_s > 0.0, "{who}: the measured PID is the broker's");
        assert!(r.broker.version != "unknown", "{who}");
        // Stopped: the measured process is gone, and so is its scratch directory.
        let pid = r.broker.pid.expect("managed");
        assert!(!alive(pid), "{who}: pid {pid} still running after the run");
    }
    let leftovers: Vec<String> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| {
            ["nats", "rabbitmq"]
                .iter()
                .any(|b| n.starts_with(&format!("loadgen-{b}-{}-", std::process::id())))
        })
        .collect();
    assert!(
        leftovers.is_empty(),
        "scratch directories left: {leftovers:?}"
    );
    let _ = std::fs::remove_dir_all(Path::new(&root));
}
