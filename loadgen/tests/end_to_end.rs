//! End to end: a tiny suite against Debian's mosquitto through the same code path as
//! `loadgen suite`, then `loadgen report` regenerating the Markdown and charts from the JSON.

use std::path::Path;

use loadgen::broker;
use loadgen::report::{self, json};
use loadgen::suite;

#[test]
fn a_tiny_suite_writes_json_summary_and_charts_and_report_regenerates_them() {
    let def = broker::known("mosquitto", None).unwrap();
    if let Some(why) = def.unavailable() {
        panic!("this test needs Debian's mosquitto (apt-get install -y mosquitto): {why}");
    }
    let s = suite::parse(
        r#"
        name = "tiny"
        [defaults]
        warmup_s = 0.3
        duration_s = 1
        drain_s = 1
        rate = 50
        [[cell]]
        name = "p2p"
        shape = "p2p"
        clients = [2, 4]
        qos = 1
        [[cell]]
        name = "fanout"
        shape = "fan-out"
        clients = 3
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
    // A second "broker" that is the same mosquitto under another name would need a second
    // process; instead, compare mosquitto with a broker that is missing, which must be skipped.
    let missing = broker::known("midge", Some(Path::new("/nonexistent/midge"))).unwrap();
    let records = suite::run(&s, &[def, missing], &dir, "loadgen suite tiny.toml", true).unwrap();

    assert_eq!(records.len(), 3 * 2, "3 cells x 2 brokers");
    for r in &records {
        match r.broker.name.as_str() {
            "mosquitto" => {
                assert_eq!(
                    r.status,
                    json::Status::Ok,
                    "{}: {:?}",
                    r.scenario.name,
                    r.failures
                );
                assert_eq!(r.lost, 0);
                assert!(r.throughput_msgs_s > 0.0);
                assert!(
                    r.broker_cpu.is_some() && r.broker_mem.is_some(),
                    "a managed broker is measured"
                );
                assert!(r.broker.config.as_deref().unwrap().contains("listener"));
                assert_eq!(r.histogram().unwrap().count(), r.counters.received);
            }
            _ => {
                assert_eq!(r.status, json::Status::Skipped);
                assert!(r.note.as_deref().unwrap().contains("not found"));
            }
        }
    }
    // Files: one JSON per run, the summary, the charts.
    let jsons = std::fs::read_dir(dir.join("runs")).unwrap().count();
    assert_eq!(jsons, 6);
    let md = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(md.contains("loadgen suite tiny.toml"));
    assert!(md.contains("## p2p.c2") && md.contains("## p2p.c4") && md.contains("## fanout"));
    for chart in [
        "charts/throughput.svg",
        "charts/cpu_per_msg.svg",
        "charts/latency-000.svg",
    ] {
        let svg = std::fs::read_to_string(dir.join(chart)).unwrap();
        assert!(svg.contains("<svg") && svg.contains("mosquitto"), "{chart}");
        assert!(md.contains(chart), "summary links {chart}");
    }
    // `report` rebuilds the same summary from the JSON alone.
    std::fs::remove_file(dir.join("summary.md")).unwrap();
    std::fs::remove_dir_all(dir.join("charts")).unwrap();
    assert_eq!(report::regenerate(&dir).unwrap(), 6);
    assert_eq!(std::fs::read_to_string(dir.join("summary.md")).unwrap(), md);
    assert!(dir.join("charts/latency-001.svg").is_file());
    std::fs::remove_dir_all(&root).unwrap();
}
