//! Records as a run would produce them, for the report and statistics tests.

use super::json::{
    BrokerCpu, BrokerInfo, BrokerMem, LoadgenCpu, MachineInfo, RunRecord, Status, SCHEMA,
};
use crate::procstat::CpuSource;
use crate::scenario::Scenario;
use crate::stats::{Counters, LatencyHistogram};

/// A record as a run would produce it, with latencies `base_us`..`base_us*2`.
pub fn record(cell: usize, broker: &str, base_us: u64, tp: f64, cpu_us: f64) -> RunRecord {
    let mut h = LatencyHistogram::new();
    for i in 0..1000 {
        h.record((base_us + base_us * i / 1000) * 1000);
    }
    RunRecord {
        schema: SCHEMA,
        suite: "unit".into(),
        cell_index: cell,
        repeat: 0,
        scenario: Scenario {
            name: format!("cell{cell}"),
            ..Default::default()
        },
        broker: BrokerInfo {
            name: broker.into(),
            version: format!("{broker} 1.0"),
            managed: true,
            ..Default::default()
        },
        status: Status::Ok,
        note: None,
        started_unix: 1,
        command: "loadgen suite x.toml".into(),
        loadgen_version: "0".into(),
        machine: MachineInfo::default(),
        connections: 20,
        setup_s: 0.1,
        measured_s: 5.0,
        counters: Counters {
            expected: 5000,
            received: 5000,
            ..Default::default()
        },
        lost: 0,
        throughput_msgs_s: tp,
        offered_msgs_s: tp,
        latency: h.percentiles(),
        latency_hdr: h.to_base64(),
        send_lag: Default::default(),
        broker_cpu: Some(BrokerCpu {
            cpu_s: 1.0,
            cpu_pct: 20.0,
            us_per_msg: cpu_us,
            threads: 1,
            source: CpuSource::Schedstat,
            raw: 1_000_000_000,
        }),
        broker_mem: Some(BrokerMem {
            rss_mean_kib: 1024,
            rss_max_kib: 2048,
            peak_kib: 4096,
            samples: 3,
        }),
        broker_not_measured: None,
        loadgen_cpu: LoadgenCpu::default(),
        failures: Vec::new(),
        warnings: Vec::new(),
        signal: Default::default(),
        signal_rule: Default::default(),
        extended: None,
        tls: None,
    }
}
