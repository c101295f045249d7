//! `summary.md`: one table per cell with the brokers side by side and their ratios to the first
//! broker, the charts, the exact command line, and every failure and warning spelled out.

use std::fmt::Write;

use super::charts::{cells_and_brokers, fmt_us, ChartFiles};
use super::json::{RunRecord, Status};
use crate::scenario::Mode;

/// "1.23×" of `v` against the first broker's `base`, if both exist.
fn ratio(v: f64, base: Option<f64>) -> String {
    match base {
        Some(b) if b > 0.0 && v.is_finite() => format!(" ({:.2}×)", v / b),
        _ => String::new(),
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The Markdown summary of `runs` (in order), linking `charts`.
pub fn summary(runs: &[RunRecord], charts: &ChartFiles) -> String {
    let mut md = String::new();
    let Some(first) = runs.first() else {
        return "# loadgen\n\nNo runs.\n".into();
    };
    let (cells, brokers) = cells_and_brokers(runs);
    let _ = writeln!(md, "# loadgen results: {}\n", first.suite);
    let _ = writeln!(md, "Command:\n\n```\n{}\n```\n", first.command);
    let m = &first.machine;
    let _ = writeln!(
        md,
        "Machine: {} ({} cores, {} RAM), Linux {}; loadgen {}. Broker and loadgen share this machine.\n",
        if m.cpu_model.is_empty() { "unknown CPU" } else { &m.cpu_model },
        m.cores,
        mib(m.mem_total_kib),
        m.kernel,
        first.loadgen_version
    );
    let _ = writeln!(
        md,
        "| broker | version | started by loadgen |\n|---|---|---|"
    );
    for b in &brokers {
        if let Some(r) = runs
            .iter()
            .find(|r| &r.broker.name == b && !r.broker.version.is_empty())
        {
            let _ = writeln!(
                md,
                "| {b} | {} | {} |",
                r.broker.version,
                if r.broker.managed {
                    "yes"
                } else {
                    "no (external)"
                }
            );
        } else {
            let _ = writeln!(md, "| {b} | (not run) | |");
        }
    }
    let failed = runs.iter().filter(|r| r.status == Status::Failed).count();
    let ok = runs.iter().filter(|r| r.status == Status::Ok).count();
    let skipped = runs.iter().filter(|r| r.status == Status::Skipped).count();
    let _ = writeln!(md, "\nRuns: {ok} ok, {failed} failed, {skipped} skipped.\n");
    if failed > 0 {
        let _ = writeln!(md, "> **FAILED:** {failed} run(s) lost or duplicated messages beyond what their QoS allows, or dropped connections. See *Failures* below.\n");
    }
    let _ = writeln!(
        md,
        "Latency is measured from each message's *intended* send time (open loop, no coordinated omission); \
         throughput counts distinct measured deliveries per second; broker CPU is user+system time of all its threads \
         over the measured interval. Ratios are against the first broker (**{}**).\n",
        brokers[0]
    );
    if let Some(t) = &charts.throughput {
        let _ = writeln!(md, "![throughput]({t})\n");
    }
    if let Some(c) = &charts.cpu_per_msg {
        let _ = writeln!(md, "![CPU per message]({c})\n");
    }

    for (ci, name) in &cells {
        let cell_runs: Vec<&RunRecord> = brokers
            .iter()
            .filter_map(|b| {
                runs.iter()
                    .find(|r| r.cell_index == *ci && &r.broker.name == b)
            })
            .collect();
        let Some(r0) = cell_runs.first() else {
            continue;
        };
        let s = &r0.scenario;
        let pace = match s.mode {
            Mode::Rate => format!("open loop, {} msg/s per publisher", s.rate),
            Mode::Max => format!("closed loop (max throughput), window {}", s.window),
        };
        let _ = writeln!(md, "## {name}\n");
        let _ = writeln!(
            md,
            "{} with {} clients ({} connections), QoS {}, {} B payload, MQTT {}, {pace}; warm-up {} s, measured {} s.\n",
            s.shape.name(),
            s.clients,
            r0.connections,
            s.qos,
            s.payload,
            s.protocol,
            s.warmup_s,
            s.duration_s
        );
        let _ = writeln!(
            md,
            "| broker | delivered msg/s | p50 | p90 | p99 | p99.9 | max | lost | dup | broker CPU | CPU µs/msg | RSS max | RSS peak | loadgen CPU | result |"
        );
        let _ = writeln!(
            md,
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"
        );
        let base = cell_runs
            .iter()
            .find(|r| r.status != Status::Skipped)
            .copied();
        for r in &cell_runs {
            if r.status == Status::Skipped {
                let _ = writeln!(
                    md,
                    "| {} | | | | | | | | | | | | | | skipped: {} |",
                    r.broker.name,
                    r.note.as_deref().unwrap_or("")
                );
                continue;
            }
            let b = base.filter(|b| b.status != Status::Skipped);
            let lat = |v: f64, bv: Option<f64>| format!("{}{}", fmt_us(v), ratio(v, bv));
            let cpu = match (r.broker_cpu, b.and_then(|b| b.broker_cpu)) {
                (Some(c), bc) => (
                    format!("{:.0}%", c.cpu_pct),
                    format!(
                        "{:.2}{}",
                        c.us_per_msg,
                        ratio(c.us_per_msg, bc.map(|x| x.us_per_msg))
                    ),
                ),
                (None, _) => ("not measured".into(), "not measured".into()),
            };
            let mem = match (r.broker_mem, b.and_then(|b| b.broker_mem)) {
                (Some(m), bm) => (
                    format!(
                        "{}{}",
                        mib(m.rss_max_kib),
                        ratio(m.rss_max_kib as f64, bm.map(|x| x.rss_max_kib as f64))
                    ),
                    mib(m.peak_kib),
                ),
                (None, _) => ("not measured".into(), "not measured".into()),
            };
            let lg = format!(
                "{:.0}%{}",
                r.loadgen_cpu.process_pct,
                if r.loadgen_cpu.saturated {
                    " ⚠ saturated"
                } else {
                    ""
                }
            );
            let result = match r.status {
                Status::Failed => "**FAILED**".to_string(),
                _ if r.counters.unsent > 0 => "ok, ⚠ backlog".to_string(),
                _ => "ok".to_string(),
            };
            let _ = writeln!(
                md,
                "| {} | {:.0}{} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.broker.name,
                r.throughput_msgs_s,
                ratio(r.throughput_msgs_s, b.map(|b| b.throughput_msgs_s)),
                lat(r.latency.p50_us, b.map(|b| b.latency.p50_us)),
                fmt_us(r.latency.p90_us),
                lat(r.latency.p99_us, b.map(|b| b.latency.p99_us)),
                fmt_us(r.latency.p999_us),
                fmt_us(r.latency.max_us),
                r.lost,
                r.counters.duplicates,
                cpu.0,
                cpu.1,
                mem.0,
                mem.1,
                lg,
                result
            );
        }
        if let Some(f) = charts.latency.get(ci) {
            let _ = writeln!(md, "\n![latency percentiles: {name}]({f})");
        }
        let _ = writeln!(md);
    }

    let issues: Vec<&RunRecord> = runs
        .iter()
        .filter(|r| !r.failures.is_empty() || !r.warnings.is_empty())
        .collect();
    if !issues.is_empty() {
        let _ = writeln!(md, "## Failures and warnings\n");
        for r in issues {
            for f in &r.failures {
                let _ = writeln!(
                    md,
                    "- **FAILED** {} @ {}: {f}",
                    r.scenario.name, r.broker.name
                );
            }
            for w in &r.warnings {
                let _ = writeln!(md, "- warning {} @ {}: {w}", r.scenario.name, r.broker.name);
            }
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(
        md,
        "Every run's JSON (with the HDR histogram, HdrHistogram V2 compressed + base64, in ns) is in `runs/`; \
         `loadgen report DIR` regenerates this page and the charts from them."
    );
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::json::{BrokerCpu, BrokerInfo, BrokerMem, LoadgenCpu, MachineInfo, SCHEMA};
    use crate::scenario::Scenario;
    use crate::stats::{Counters, LatencyHistogram};

    /// A record as a run would produce it, with latencies `base_us`..`base_us*2`.
    pub(crate) fn record(
        cell: usize,
        broker: &str,
        base_us: u64,
        tp: f64,
        cpu_us: f64,
    ) -> RunRecord {
        let mut h = LatencyHistogram::new();
        for i in 0..1000 {
            h.record((base_us + base_us * i / 1000) * 1000);
        }
        RunRecord {
            schema: SCHEMA,
            suite: "unit".into(),
            cell_index: cell,
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
                expected: 1000,
                received: 1000,
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
        }
    }

    #[test]
    fn summary_puts_brokers_side_by_side_with_ratios_to_the_first() {
        let runs = vec![
            record(0, "alpha", 100, 1000.0, 2.0),
            record(0, "beta", 200, 500.0, 8.0),
        ];
        let md = summary(&runs, &ChartFiles::default());
        assert!(md.contains("loadgen suite x.toml"), "the exact command");
        let alpha = md
            .lines()
            .rev()
            .find(|l| l.starts_with("| alpha |"))
            .unwrap();
        let beta = md
            .lines()
            .rev()
            .find(|l| l.starts_with("| beta |"))
            .unwrap();
        assert!(alpha.contains("1000 (1.00×)"), "{md}");
        assert!(beta.contains("500 (0.50×)"), "{beta}");
        assert!(
            beta.contains("8.00 (4.00×)"),
            "CPU per message ratio: {beta}"
        );
        assert!(beta.contains("2.0 MiB"));
    }

    #[test]
    fn failures_are_loud_and_skips_are_explained() {
        let mut bad = record(0, "beta", 100, 1.0, 1.0);
        bad.status = Status::Failed;
        bad.failures
            .push("lost 3 of 10 expected deliveries: QoS 1 must not lose messages".into());
        let mut skip = record(0, "gamma", 100, 1.0, 1.0);
        skip.status = Status::Skipped;
        skip.note = Some("skipped: gamma not found".into());
        let md = summary(
            &[record(0, "alpha", 100, 1.0, 1.0), bad, skip],
            &ChartFiles::default(),
        );
        assert!(md.contains("> **FAILED:** 1 run(s)"));
        assert!(md.contains("**FAILED** cell0 @ beta: lost 3"));
        assert!(md.contains("skipped: gamma not found"));
    }

    #[test]
    fn an_external_broker_without_pid_says_not_measured() {
        let mut ext = record(0, "ext", 100, 1.0, 1.0);
        ext.broker_cpu = None;
        ext.broker_mem = None;
        let md = summary(
            &[record(0, "alpha", 100, 1.0, 1.0), ext],
            &ChartFiles::default(),
        );
        let row = md.lines().rev().find(|l| l.starts_with("| ext |")).unwrap();
        assert!(row.contains("not measured"));
    }
}
