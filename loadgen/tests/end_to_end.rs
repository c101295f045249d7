//! End to end: a tiny suite against Debian's mosquitto and midge (the workspace's release
//! binary, when built) through the same code path as `loadgen suite`, with two repeats and a
//! deliberately short cell, then `loadgen report` regenerating the reports from the JSON.

use std::path::Path;

use loadgen::broker;
use loadgen::report::{self, json};
use loadgen::suite;

#[test]
fn a_tiny_suite_repeats_alternating_brokers_flags_short_cells_and_report_regenerates() {
    let mosquitto = broker::known("mosquitto", None).unwrap();
    if let Some(why) = mosquitto.unavailable() {
        panic!("this test needs Debian's mosquitto (apt-get install -y mosquitto): {why}");
    }
    // midge when built; otherwise a broker that is missing, which must be skipped.
    let midge = broker::known("midge", None).unwrap();
    let midge = if midge.unavailable().is_none() {
        midge
    } else {
        eprintln!("target/release/midge not built: comparing mosquitto with a missing broker");
        broker::known("midge", Some(Path::new("/nonexistent/midge"))).unwrap()
    };
    let midge_runs = midge.unavailable().is_none();
    // p2p: 2 pairs x 50 msg/s = 100 deliveries/s. 150 messages would need 1.5 s, the maximum
    // is 1.2 s: the cell is lengthened from 1 s to 1.2 s and still flagged (about 120).
    // fan-out: 4 x 50 = 200/s, enough in 1 s.
    let s = suite::parse(
        r#"
        name = "tiny"
        repeat = 2
        [signal]
        min_messages = 150
        min_broker_cpu_ms = 0
        max_duration_s = 1.2
        [defaults]
        warmup_s = 0.3
        duration_s = 1
        drain_s = 0.5
        rate = 50
        [[cell]]
        name = "p2p"
        shape = "p2p"
        clients = 2
        qos = 1
        [[cell]]
        name = "fanout"
        shape = "fan-out"
        clients = 4
        protocol = "5"
        "#,
        "tiny",
    )
    .unwrap();
    let root = std::env::temp_dir().join(format!("loadgen-e2e-{}", std::process::id()));
    let dir = suite::out_dir(&root, &s.name);
    assert!(dir
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("tiny-"));
    let records = suite::run(
        &s,
        &[mosquitto, midge],
        &dir,
        "loadgen suite tiny.toml",
        true,
    )
    .unwrap();

    assert_eq!(records.len(), 2 * 2 * 2, "2 cells x 2 repeats x 2 brokers");
    let order: Vec<(usize, u32, &str)> = records
        .iter()
        .map(|r| (r.cell_index, r.repeat, r.broker.name.as_str()))
        .collect();
    assert_eq!(
        &order[..4],
        [
            (0, 0, "mosquitto"),
            (0, 0, "midge"),
            (0, 1, "mosquitto"),
            (0, 1, "midge")
        ],
        "brokers alternate between repeats"
    );
    for r in &records {
        if r.broker.name == "midge" && !midge_runs {
            assert_eq!(r.status, json::Status::Skipped);
            assert!(r.note.as_deref().unwrap().contains("not found"));
            continue;
        }
        assert_eq!(
            r.status,
            json::Status::Ok,
            "{} @ {}: {:?}",
            r.scenario.name,
            r.broker.name,
            r.failures
        );
        assert_eq!(r.lost, 0);
        assert!(r.throughput_msgs_s > 0.0);
        let cpu = r.broker_cpu.expect("a managed broker is measured");
        assert!(r.broker_mem.is_some());
        assert_eq!(
            cpu.source,
            loadgen::procstat::CpuSource::Schedstat,
            "this kernel has schedstat"
        );
        assert!(r.broker.config.as_deref().unwrap().contains("listener"));
        assert_eq!(r.histogram().unwrap().count(), r.counters.received);
        if r.scenario.name == "p2p" {
            assert_eq!(r.measured_s, 1.2, "lengthened towards 150 messages");
            assert!(
                r.signal.few_messages.is_some(),
                "still short: {:?}",
                r.counters
            );
        } else {
            assert_eq!(r.measured_s, 1.0);
            assert_eq!(r.signal.few_messages, None, "{:?}", r.counters);
        }
    }
    // Files: one JSON per run, the summaries, the charts.
    let jsons = std::fs::read_dir(dir.join("runs")).unwrap().count();
    assert_eq!(jsons, 8);
    let md = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(md.contains("loadgen suite tiny.toml"));
    assert!(md.contains("## p2p") && md.contains("## fanout"));
    let p2p_row = md
        .lines()
        .find(|l| l.starts_with("| mosquitto | 2 |"))
        .unwrap();
    assert!(p2p_row.contains('⚠'), "the short cell is marked: {p2p_row}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["baseline"], "mosquitto");
    let tp = &summary["cells"][0]["brokers"][0]["throughput"];
    assert_eq!(tp["unreliable"], true, "{tp}");
    assert_eq!(tp["values"].as_array().unwrap().len(), 2);
    for chart in [
        "charts/latency-000.svg",
        "charts/p2p-throughput.svg",
        "charts/p2p-cpu_per_msg.svg",
        "charts/fan-out-throughput.svg",
    ] {
        let svg = std::fs::read_to_string(dir.join(chart)).unwrap();
        assert!(svg.contains("<svg") && svg.contains("mosquitto"), "{chart}");
        assert!(md.contains(chart), "summary links {chart}");
    }
    // `report` rebuilds the same summary from the JSON alone.
    std::fs::remove_file(dir.join("summary.md")).unwrap();
    std::fs::remove_dir_all(dir.join("charts")).unwrap();
    assert_eq!(report::regenerate(&dir, None).unwrap(), 8);
    assert_eq!(std::fs::read_to_string(dir.join("summary.md")).unwrap(), md);
    assert!(dir.join("charts/latency-001.svg").is_file());
    std::fs::remove_dir_all(&root).unwrap();
}
