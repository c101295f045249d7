//! `summary.md`: one table per cell with the brokers side by side (medians over repeats, with
//! their range), ratios to the baseline broker with a verdict, the charts, the exact command
//! line, and every failure and warning spelled out. An unreliable figure carries ⚠ and the
//! reason is listed under its table.

use std::fmt::Write;

use super::aggregate::{BrokerCell, Figure, Metric, Ratio, Verdict};
use super::charts::{fmt_us, ChartFiles};
use super::json::Status;
use super::Report;
use crate::scenario::Mode;

/// The marker of an unreliable figure.
pub const UNRELIABLE: &str = "⚠";

fn mib(kib: f64) -> String {
    format!("{:.1} MiB", kib / 1024.0)
}

/// "1000" for a rate, with its repeats' range and the unreliable marker.
fn with_range(f: &Figure, fmt: &dyn Fn(f64) -> String) -> String {
    let mut s = fmt(f.median);
    if f.values.len() > 1 {
        s += &format!(" [{}–{}]", fmt(f.min), fmt(f.max));
    }
    if f.unreliable {
        s += " ";
        s += UNRELIABLE;
    }
    s
}

/// A ratio with its verdict: "no difference" whenever the repeats straddle 1.
pub fn fmt_ratio(r: &Ratio) -> String {
    let mark = if r.unreliable {
        format!(" {UNRELIABLE}")
    } else {
        String::new()
    };
    match r.verdict {
        Verdict::NoDifference => {
            format!("no difference ({:.2}–{:.2}×){mark}", r.lo, r.hi)
        }
        Verdict::SingleRun => format!("{:.2}× (1 run){mark}", r.median),
        v => format!(
            "{:.2}× [{:.2}–{:.2}] {}{mark}",
            r.median,
            r.lo,
            r.hi,
            v.label()
        ),
    }
}

fn rate(v: f64) -> String {
    format!("{v:.0}")
}

fn cpu(v: f64) -> String {
    format!("{v:.2}")
}

fn opt(f: Option<&Figure>, fmt: &dyn Fn(f64) -> String) -> String {
    f.map_or("not measured".into(), |f| with_range(f, fmt))
}

/// The Markdown summary of a report, linking `charts`.
pub fn summary(rep: &Report, charts: &ChartFiles) -> String {
    let mut md = String::new();
    let Some(first) = rep.runs.first() else {
        return "# loadgen\n\nNo runs.\n".into();
    };
    let _ = writeln!(md, "# loadgen results: {}\n", first.suite);
    let _ = writeln!(md, "Command:\n\n```\n{}\n```\n", first.command);
    let m = &first.machine;
    let _ = writeln!(
        md,
        "Machine: {} ({} cores, {} RAM), Linux {}; loadgen {}. Broker and loadgen share this machine.\n",
        if m.cpu_model.is_empty() { "unknown CPU" } else { &m.cpu_model },
        m.cores,
        mib(m.mem_total_kib as f64),
        m.kernel,
        first.loadgen_version
    );
    let _ = writeln!(
        md,
        "| broker | version | started by loadgen |\n|---|---|---|"
    );
    for b in &rep.brokers {
        if let Some(r) = rep
            .runs
            .iter()
            .find(|r| &r.broker.name == b && !r.broker.version.is_empty())
        {
            let _ = writeln!(
                md,
                "| {b} | {} | {} |",
                r.broker_label(),
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
    let count = |st: Status| rep.runs.iter().filter(|r| r.status == st).count();
    let failed = count(Status::Failed);
    let _ = writeln!(
        md,
        "\nRuns: {} ok, {failed} failed, {} skipped; up to {} repeats per cell and broker.\n",
        count(Status::Ok),
        count(Status::Skipped),
        rep.runs.iter().map(|r| r.repeat + 1).max().unwrap_or(1)
    );
    if failed > 0 {
        let _ = writeln!(md, "> **FAILED:** {failed} run(s) lost or duplicated messages beyond what their QoS allows, or dropped connections. See *Failures* below.\n");
    }
    let rule = &first.signal_rule;
    let _ = writeln!(
        md,
        "How to read: latency is measured from each message's *intended* send time (open loop, no coordinated omission); \
         throughput counts distinct measured deliveries per second; broker CPU is the run time of all its threads over the \
         measured interval. Each figure is the **median over repeats [min–max]**. {UNRELIABLE} marks an **unreliable** figure: \
         a repeat measured fewer than {} deliveries or less than {} ms of broker CPU ({} clock ticks without schedstat), \
         or the repeats spread more than {:.0}% of the median. Ratios are to **{}**, computed per repeat; when the repeats' \
         ratios straddle 1.0 the result is **no difference**, whatever the median says.\n",
        rule.min_messages,
        rule.min_broker_cpu_ms,
        rule.min_cpu_ticks,
        100.0 * rule.max_spread,
        rep.baseline
    );
    if let Some(h) = &charts.html {
        let _ = writeln!(md, "The full report with heat map and plots: [{h}]({h}).\n");
    }
    for (family, files) in &charts.families {
        for f in files {
            let _ = writeln!(md, "![{family}]({f})\n");
        }
    }

    for cell in &rep.cells {
        let s = &cell.scenario;
        let pace = match s.mode {
            Mode::Rate => format!("open loop, {} msg/s per publisher", s.rate),
            Mode::Max => format!("closed loop (max throughput), window {}", s.window),
        };
        let measured = cell
            .brokers
            .iter()
            .filter(|b| b.runs > 0)
            .fold((f64::INFINITY, 0.0f64), |(lo, hi), b| {
                (lo.min(b.measured_s.0), hi.max(b.measured_s.1))
            });
        let measured = if measured.0 > measured.1 {
            format!("{} s", s.duration_s)
        } else if (measured.1 - measured.0).abs() < 1e-9 {
            format!("{} s", measured.0)
        } else {
            format!("{}–{} s", measured.0, measured.1)
        };
        let _ = writeln!(md, "## {}\n", cell.name);
        let _ = writeln!(
            md,
            "{} with {} clients ({} connections), QoS {}, {} B payload, MQTT {}, {pace}; warm-up {} s, measured {measured}.\n",
            s.shape.name(),
            s.clients,
            cell.connections,
            s.qos,
            s.payload,
            s.protocol,
            s.warmup_s,
        );
        let _ = writeln!(
            md,
            "| broker | runs | delivered msg/s | p50 | p99 | p99.9 | max | lost | dup | broker CPU | CPU µs/msg | RSS max | loadgen CPU | msg/s vs {b} | p99 vs {b} | CPU/msg vs {b} | result |",
            b = rep.baseline
        );
        let _ = writeln!(
            md,
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|---|---|---|"
        );
        let ratios = cell.ratios(&rep.baseline);
        let mut notes: Vec<String> = Vec::new();
        for b in &cell.brokers {
            if b.runs == 0 {
                let _ = writeln!(
                    md,
                    "| {} | 0 | | | | | | | | | | | | | | | skipped: {} |",
                    b.broker,
                    b.skipped.as_deref().unwrap_or("")
                );
                continue;
            }
            let r = ratios.iter().find(|r| r.broker == b.broker);
            let rc = |m: Metric| {
                if b.broker == rep.baseline {
                    "baseline".to_string()
                } else {
                    r.and_then(|r| r.get(m))
                        .map_or(String::new(), |x| fmt_ratio(&x))
                }
            };
            let us = |f: Option<&Figure>| f.map_or(String::new(), |f| fmt_us(f.median));
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                b.broker,
                b.runs,
                opt(b.throughput.as_ref(), &rate),
                us(b.p50.as_ref()),
                opt(b.p99.as_ref(), &fmt_us),
                us(b.p999.as_ref()),
                us(b.max.as_ref()),
                b.lost,
                b.duplicates,
                b.cpu_pct.as_ref().map_or("not measured".into(), |f| format!("{:.0}%", f.median)),
                opt(b.cpu_us_per_msg.as_ref(), &cpu),
                b.rss_max_kib.as_ref().map_or("not measured".into(), |f| mib(f.median)),
                loadgen(b),
                rc(Metric::Throughput),
                rc(Metric::P99),
                rc(Metric::CpuUsPerMsg),
                result(b)
            );
            for m in Metric::ALL {
                if let Some(f) = b.figure(m).filter(|f| f.unreliable) {
                    notes.push(format!(
                        "{UNRELIABLE} {} {}: {}",
                        b.broker,
                        m.title(),
                        f.reasons.join("; ")
                    ));
                }
            }
        }
        if !notes.is_empty() {
            let _ = writeln!(md);
            for n in notes {
                let _ = writeln!(md, "- {n}");
            }
        }
        if let Some(f) = charts.latency.get(&cell.index) {
            let _ = writeln!(md, "\n![latency percentiles: {}]({f})", cell.name);
        }
        let _ = writeln!(md);
    }

    let issues: Vec<(&str, &BrokerCell)> = rep
        .cells
        .iter()
        .flat_map(|c| c.brokers.iter().map(move |b| (c.name.as_str(), b)))
        .filter(|(_, b)| !b.failures.is_empty() || !b.warnings.is_empty())
        .collect();
    if !issues.is_empty() {
        let _ = writeln!(md, "## Failures and warnings\n");
        for (cell, b) in issues {
            for f in &b.failures {
                let _ = writeln!(md, "- **FAILED** {cell} @ {}: {f}", b.broker);
            }
            for w in &b.warnings {
                let _ = writeln!(md, "- warning {cell} @ {}: {w}", b.broker);
            }
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(
        md,
        "Every run's JSON (with the HDR histogram, HdrHistogram V2 compressed + base64, in ns) is in `runs/`, the medians, \
         ranges and ratios in `summary.json`; `loadgen report DIR [--baseline NAME]` regenerates the reports from them."
    );
    md
}

fn loadgen(b: &BrokerCell) -> String {
    let pct = b
        .loadgen_pct
        .as_ref()
        .map_or(String::new(), |f| format!("{:.0}%", f.median));
    if b.loadgen_saturated {
        format!("{pct} ⚠ saturated")
    } else {
        pct
    }
}

fn result(b: &BrokerCell) -> String {
    if b.failed > 0 {
        format!("**FAILED** ({} of {})", b.failed, b.runs)
    } else if b.backlog > 0 {
        "ok, ⚠ backlog".into()
    } else {
        "ok".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::testdata::record;

    fn md(runs: &[crate::report::json::RunRecord]) -> String {
        summary(&Report::new(runs, None).unwrap(), &ChartFiles::default())
    }

    #[test]
    fn summary_puts_brokers_side_by_side_with_ratios_to_the_first() {
        let runs = vec![
            record(0, "alpha", 100, 1000.0, 2.0),
            record(0, "beta", 200, 500.0, 8.0),
        ];
        let md = md(&runs);
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
        assert!(
            alpha.contains("| 1000 |") && alpha.contains("baseline"),
            "{md}"
        );
        assert!(beta.contains("| 500 |"), "{beta}");
        assert!(beta.contains("0.50× (1 run)"), "{beta}");
        assert!(
            beta.contains("4.00× (1 run)"),
            "CPU per message ratio: {beta}"
        );
        assert!(beta.contains("2.0 MiB"));
    }

    #[test]
    fn repeats_show_medians_ranges_verdicts_and_unreliable_marks() {
        let mut runs = Vec::new();
        // beta's throughput straddles alpha's over the repeats; its CPU is always 4x.
        for (rep, beta_tp) in [(0u32, 900.0), (1, 1100.0), (2, 950.0)] {
            for (b, tp, c) in [("alpha", 1000.0, 2.0), ("beta", beta_tp, 8.0)] {
                let mut r = record(0, b, 100, tp, c);
                r.repeat = rep;
                if b == "beta" && rep == 2 {
                    r.signal.little_cpu = Some("12 clock ticks".into());
                }
                runs.push(r);
            }
        }
        let md = md(&runs);
        let beta = md
            .lines()
            .rev()
            .find(|l| l.starts_with("| beta |"))
            .unwrap();
        assert!(beta.contains("| 3 | 950 [900–1100] |"), "{beta}");
        assert!(beta.contains("no difference (0.90–1.10×)"), "{beta}");
        assert!(
            beta.contains(&format!("8.00 [8.00–8.00] {UNRELIABLE}")),
            "{beta}"
        );
        assert!(
            beta.contains(&format!("4.00× [4.00–4.00] higher {UNRELIABLE}")),
            "{beta}"
        );
        assert!(
            md.contains("- ⚠ beta broker CPU per message: repeat 3: 12 clock ticks"),
            "{md}"
        );
        // Another baseline.
        let md = summary(
            &Report::new(&runs, Some("beta")).unwrap(),
            &ChartFiles::default(),
        );
        assert!(md.contains("msg/s vs beta"));
        assert!(Report::new(&runs, Some("gamma")).is_err());
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
        let md = md(&[record(0, "alpha", 100, 1.0, 1.0), bad, skip]);
        assert!(md.contains("> **FAILED:** 1 run(s)"));
        assert!(
            md.contains("**FAILED** cell0 @ beta: repeat 1: lost 3"),
            "{md}"
        );
        assert!(md.contains("skipped: gamma not found"));
    }

    #[test]
    fn an_external_broker_without_pid_says_not_measured() {
        let mut ext = record(0, "ext", 100, 1.0, 1.0);
        ext.broker_cpu = None;
        ext.broker_mem = None;
        let md = md(&[record(0, "alpha", 100, 1.0, 1.0), ext]);
        let row = md.lines().rev().find(|l| l.starts_with("| ext |")).unwrap();
        assert!(row.contains("not measured"));
    }
}
