//! Suite files: a matrix of cells run against several brokers.
//!
//! ```toml
//! name = "quick"
//! brokers = ["midge", "mosquitto"]
//! repeat = 3                    # runs of each cell per broker, brokers alternating
//! baseline = "mosquitto"        # ratios are to this broker (default: the first)
//! [limits]                      # written into every broker's config
//! max_queued_messages = 100000
//! [defaults]                    # any Scenario field
//! duration_s = 5
//! [stop]
//! p99_ms = 1000                 # a growing series stops for a broker past this p99
//! [signal]                      # minimum signal per run (see signal.rs); all optional
//! min_messages = 2000
//! [[cell]]
//! name = "p2p"
//! shape = "p2p"
//! clients = [10, 100, 1000]     # a list makes a dimension: the cell expands to the product
//! qos = [0, 1, 2]
//! ```
//! Cells expand in file order; within a cell, `clients` varies fastest, so a growing series
//! (Bevywise / Mishra et al. method: fix QoS, rate and payload, grow the clients) runs in order
//! and can stop for a broker once it saturates, fails, or passes the latency threshold.
//! Every cell runs against every broker before the next cell, and its repeats alternate the
//! brokers (A B A B A B, not A A A B B B), so slow drift of the machine affects all brokers
//! alike and repeat *i* of two brokers can be compared pairwise.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use crate::broker::{BrokerDef, Limits};
use crate::progress::Progress;
use crate::report::json::{self, RunRecord, Status};
use crate::runner::{self, RunContext};
use crate::scenario::Scenario;
use crate::signal::{self, SignalRule};

/// Repeats of each cell when a suite file does not say.
pub const DEFAULT_REPEAT: u32 = 3;

/// When a growing series stops for a broker.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopRule {
    /// p99 latency threshold in milliseconds.
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SuiteFile {
    name: Option<String>,
    #[serde(default)]
    brokers: Vec<String>,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    defaults: toml::Table,
    #[serde(default)]
    stop: StopRule,
    repeat: Option<u32>,
    baseline: Option<String>,
    #[serde(default)]
    signal: SignalRule,
    #[serde(default)]
    cell: Vec<toml::Table>,
}

/// One expanded cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub scenario: Scenario,
    /// Cells of one series differ only in `clients`.
    pub series: String,
    /// True if the cell belongs to a series that grows `clients`.
    pub grows: bool,
}

/// A parsed, expanded suite.
#[derive(Debug, Clone, PartialEq)]
pub struct Suite {
    pub name: String,
    pub brokers: Vec<String>,
    pub limits: Limits,
    pub stop: StopRule,
    /// Runs of each cell per broker.
    pub repeat: u32,
    pub signal: SignalRule,
    /// The broker ratios are computed against (default: the first).
    pub baseline: Option<String>,
    pub cells: Vec<Cell>,
}

/// Short labels for the dimensions in generated cell names.
fn abbrev(key: &str, v: &toml::Value) -> String {
    let val = match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match key {
        "clients" => format!("c{val}"),
        "qos" => format!("q{val}"),
        "payload" => format!("{val}B"),
        "rate" => format!("r{val}"),
        "protocol" => format!("v{val}"),
        "subscribers" => format!("s{val}"),
        "publishers" => format!("p{val}"),
        "window" => format!("w{val}"),
        "threads" => format!("t{val}"),
        "shape" | "mode" => val,
        _ => format!("{key}{val}"),
    }
}

/// Parses and expands suite text. `default_name` names a suite that has no `name`.
pub fn parse(text: &str, default_name: &str) -> Result<Suite, String> {
    let f: SuiteFile = toml::from_str(text).map_err(|e| format!("suite: {e}"))?;
    if f.cell.is_empty() {
        return Err("suite: no [[cell]]".into());
    }
    let mut cells = Vec::new();
    for (ci, cell) in f.cell.iter().enumerate() {
        let mut merged = f.defaults.clone();
        for (k, v) in cell {
            merged.insert(k.clone(), v.clone());
        }
        let base_name = match merged.remove("name") {
            Some(toml::Value::String(s)) => Some(s),
            Some(_) => return Err(format!("cell {}: name must be a string", ci + 1)),
            None => None,
        };
        // Dimensions: array-valued keys, `clients` last so it varies fastest.
        let mut dims: Vec<(String, Vec<toml::Value>)> = Vec::new();
        let mut fixed = toml::Table::new();
        for (k, v) in merged {
            match v {
                toml::Value::Array(a) if a.is_empty() => {
                    return Err(format!("cell {}: {k} is an empty list", ci + 1))
                }
                toml::Value::Array(a) => dims.push((k, a)),
                other => {
                    fixed.insert(k, other);
                }
            }
        }
        dims.sort_by_key(|(k, _)| (k == "clients", k.clone()));
        let grows = dims.iter().any(|(k, a)| k == "clients" && a.len() > 1);
        let total: usize = dims.iter().map(|(_, a)| a.len()).product();
        if total > 10_000 {
            return Err(format!(
                "cell {}: {total} combinations; split the matrix",
                ci + 1
            ));
        }
        for n in 0..total {
            let mut t = fixed.clone();
            let mut rest = n;
            let mut parts = Vec::new();
            let mut series = vec![format!("cell{ci}")];
            for (k, a) in dims.iter().rev() {
                let v = &a[rest % a.len()];
                rest /= a.len();
                t.insert(k.clone(), v.clone());
                parts.push(abbrev(k, v));
                if k != "clients" {
                    series.push(abbrev(k, v));
                }
            }
            parts.reverse();
            let mut sc: Scenario = toml::Value::Table(t)
                .try_into()
                .map_err(|e| format!("cell {}: {e}", ci + 1))?;
            sc.name = match (&base_name, parts.is_empty()) {
                (Some(b), true) => b.clone(),
                (Some(b), false) => format!("{b}.{}", parts.join(".")),
                (None, _) => sc.auto_name(),
            };
            sc.validate().map_err(|e| format!("cell {}: {e}", ci + 1))?;
            cells.push(Cell {
                scenario: sc,
                series: series.join("."),
                grows,
            });
        }
    }
    let mut names = HashSet::new();
    for c in &cells {
        if !names.insert(c.scenario.name.clone()) {
            return Err(format!(
                "suite: two cells are named {:?}; give them distinct names",
                c.scenario.name
            ));
        }
    }
    Ok(Suite {
        name: f.name.unwrap_or_else(|| default_name.to_string()),
        brokers: f.brokers,
        limits: f.limits,
        stop: f.stop,
        repeat: f.repeat.unwrap_or(DEFAULT_REPEAT).max(1),
        signal: f.signal,
        baseline: f.baseline,
        cells,
    })
}

/// Reads and expands a suite file.
pub fn load(path: &Path) -> Result<Suite, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("suite");
    parse(&text, stem).map_err(|e| format!("{}: {e}", path.display()))
}

/// `YYYYMMDD-HHMMSS` in UTC.
pub fn timestamp(unix: u64) -> String {
    let (days, secs) = (unix / 86_400, unix % 86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The results directory for a suite started now.
pub fn out_dir(root: &Path, suite: &str) -> PathBuf {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    root.join(format!("{suite}-{}", timestamp(now)))
}

/// Why a run ends its series for that broker, if it does.
fn stops_series(rec: &RunRecord, stop: &StopRule) -> Option<String> {
    if rec.status == Status::Failed {
        return Some("failed".into());
    }
    if rec.counters.unsent > 0 {
        return Some("saturated (backlog)".into());
    }
    match stop.p99_ms {
        Some(ms) if rec.latency.p99_us > ms * 1000.0 => Some(format!(
            "p99 {:.1} ms > {ms} ms",
            rec.latency.p99_us / 1000.0
        )),
        _ => None,
    }
}

/// The order of runs: cells in order; within a cell, each repeat runs every broker before the
/// next repeat. Items are (cell, repeat, broker) indices.
pub fn schedule(cells: usize, repeat: u32, brokers: usize) -> Vec<(usize, u32, usize)> {
    let mut out = Vec::with_capacity(cells * repeat as usize * brokers);
    for c in 0..cells {
        for r in 0..repeat {
            for b in 0..brokers {
                out.push((c, r, b));
            }
        }
    }
    out
}

/// The measured seconds planned for `sc`: lengthened when its offered rate is too low for the
/// minimum message count.
fn planned_measure_s(sc: &Scenario, rule: &SignalRule) -> f64 {
    let offered = sc
        .plan("probe")
        .map(|p| sc.rate * p.total_fanout() as f64)
        .unwrap_or(0.0);
    signal::planned_duration(sc, offered, rule)
}

/// Seconds a run of `sc` is expected to take, for the ETA: warm-up, measured interval, drain,
/// and a guess at broker start and connection set-up.
fn planned_run_s(sc: &Scenario, rule: &SignalRule) -> f64 {
    1.0 + sc.connections() as f64 / 500.0 + sc.warmup_s + planned_measure_s(sc, rule) + sc.drain_s
}

/// One repeat of a cell against one broker, measured long enough to mean something: planned
/// longer when the offered rate is low, re-run once longer when the signal still fell short,
/// and flagged when even that was not enough.
pub fn measure(
    ci: usize,
    cell: &Cell,
    b: &BrokerDef,
    ctx: &RunContext,
    rule: &SignalRule,
    repeat: u32,
) -> RunRecord {
    let mut sc = cell.scenario.clone();
    sc.duration_s = planned_measure_s(&sc, rule);
    let mut rec = runner::run_one(ci, &sc, b, ctx);
    if let Some(longer) = signal::extension(&rec, rule) {
        let why = signal::check(&rec, rule).reasons().join("; ");
        let short_s = rec.measured_s;
        sc.duration_s = longer;
        rec = runner::run_one(ci, &sc, b, ctx);
        rec.extended = Some(format!(
            "re-run for {longer} s: {short_s} s gave too little signal ({why})"
        ));
    }
    rec.signal = signal::check(&rec, rule);
    rec.signal_rule = *rule;
    rec.repeat = repeat;
    rec
}

/// Runs every cell of `suite` against every broker, `suite.repeat` times, writing each record
/// into `dir` as soon as it exists, then the reports. Returns the records.
pub fn run(
    suite: &Suite,
    brokers: &[BrokerDef],
    dir: &Path,
    command: &str,
    quiet: bool,
) -> Result<Vec<RunRecord>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let order = schedule(suite.cells.len(), suite.repeat, brokers.len());
    let total = order.len();
    let mut progress = Progress::new(
        order
            .iter()
            .map(|&(ci, _, _)| planned_run_s(&suite.cells[ci].scenario, &suite.signal))
            .collect(),
    );
    let mut records = Vec::new();
    let mut stopped: BTreeMap<(String, String), String> = BTreeMap::new();
    for (k, &(ci, rep, bi)) in order.iter().enumerate() {
        let (cell, b) = (&suite.cells[ci], &brokers[bi]);
        let k = k + 1;
        let ctx = RunContext {
            suite: suite.name.clone(),
            out_dir: dir.to_path_buf(),
            limits: suite.limits,
            command: command.to_string(),
            quiet,
            label: progress.head(&cell.scenario.name, b.name(), rep, suite.repeat),
        };
        let key = (cell.series.clone(), b.name().to_string());
        let mut rec = match stopped.get(&key) {
            Some(why) => runner::skipped(
                ci,
                &cell.scenario,
                b,
                &ctx,
                format!("series stopped: {why}"),
            ),
            None => measure(ci, cell, b, &ctx, &suite.signal, rep),
        };
        rec.repeat = rep;
        if cell.grows {
            if let Some(why) = stops_series(&rec, &suite.stop) {
                stopped
                    .entry(key)
                    .or_insert(format!("{why} at {} clients", cell.scenario.clients));
            }
        }
        if !quiet {
            eprintln!("[{k}/{total}] {}", one_line(&rec));
        }
        json::write(dir, &rec)?;
        records.push(rec);
        progress.finish_one();
    }
    crate::report::regenerate(dir, suite.baseline.as_deref())?;
    Ok(records)
}

/// A one-line result for the terminal.
pub fn one_line(r: &RunRecord) -> String {
    let head = format!(
        "{} @ {} (repeat {})",
        r.scenario.name,
        r.broker.name,
        r.repeat + 1
    );
    match r.status {
        Status::Skipped => format!("{head}: {}", r.note.as_deref().unwrap_or("skipped")),
        _ => {
            let cpu = r.broker_cpu.map_or("cpu n/m".to_string(), |c| {
                format!("cpu {:.0}% {:.2} us/msg", c.cpu_pct, c.us_per_msg)
            });
            let verdict = if r.status == Status::Failed {
                format!("FAILED: {}", r.failures.join("; "))
            } else {
                "ok".into()
            };
            format!(
                "{head}: {:.0} msg/s, p50 {:.0} us, p99 {:.0} us, max {:.0} us, lost {}, dup {}, {cpu}, loadgen {:.0}%: {verdict}",
                r.throughput_msgs_s, r.latency.p50_us, r.latency.p99_us, r.latency.max_us, r.lost, r.counters.duplicates, r.loadgen_cpu.process_pct
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_expand_to_their_product_with_clients_fastest() {
        let s = parse(
            r#"
            brokers = ["mosquitto"]
            [defaults]
            duration_s = 2
            [[cell]]
            name = "p2p"
            shape = "p2p"
            clients = [1, 10, 100]
            qos = [0, 1]
            "#,
            "t",
        )
        .unwrap();
        assert_eq!(s.name, "t");
        let names: Vec<_> = s.cells.iter().map(|c| c.scenario.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "p2p.q0.c1",
                "p2p.q0.c10",
                "p2p.q0.c100",
                "p2p.q1.c1",
                "p2p.q1.c10",
                "p2p.q1.c100"
            ]
        );
        assert!(s
            .cells
            .iter()
            .all(|c| c.scenario.duration_s == 2.0 && c.grows));
        assert_eq!(s.cells[0].series, s.cells[2].series);
        assert_ne!(s.cells[0].series, s.cells[3].series);
    }

    #[test]
    fn cell_values_override_defaults_and_unknown_fields_are_errors() {
        let s = parse(
            "[defaults]\nqos = 1\n[[cell]]\nqos = 2\nshape = \"fan-in\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(s.cells[0].scenario.qos, 2);
        assert!(!s.cells[0].grows);
        assert!(parse("[[cell]]\nqoss = 1\n", "t")
            .unwrap_err()
            .contains("qoss"));
        assert!(parse("[[cell]]\nqos = 7\n", "t")
            .unwrap_err()
            .contains("qos"));
        assert!(parse("name = \"x\"\n", "t")
            .unwrap_err()
            .contains("no [[cell]]"));
        assert!(parse("[[cell]]\nname=\"a\"\n[[cell]]\nname=\"a\"\n", "t")
            .unwrap_err()
            .contains("two cells"));
    }

    #[test]
    fn repeats_alternate_brokers_within_a_cell() {
        let names = ["A", "B"];
        let order: String = schedule(2, 3, 2)
            .iter()
            .map(|&(c, _, b)| format!("{c}{}", names[b]))
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(order, "0A 0B 0A 0B 0A 0B 1A 1B 1A 1B 1A 1B");
        assert_eq!(schedule(1, 2, 2)[2], (0, 1, 0), "repeat 2 starts with A");
    }

    #[test]
    fn repeat_and_signal_come_from_the_suite_file_with_defaults() {
        let s = parse("[[cell]]\nqos = 1\n", "t").unwrap();
        assert_eq!(s.repeat, DEFAULT_REPEAT);
        assert_eq!(s.signal, SignalRule::default());
        let s = parse(
            "repeat = 5\n[signal]\nmin_messages = 10\nmax_duration_s = 9\n[[cell]]\nqos = 1\n",
            "t",
        )
        .unwrap();
        assert_eq!(s.repeat, 5);
        assert_eq!((s.signal.min_messages, s.signal.max_duration_s), (10, 9.0));
        assert!(parse("[signal]\nmin_msgs = 1\n[[cell]]\n", "t").is_err());
    }

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(timestamp(0), "19700101-000000");
        assert_eq!(timestamp(951_782_400), "20000229-000000");
        assert_eq!(timestamp(1_700_000_000), "20231114-221320");
    }

    #[test]
    fn shipped_suites_parse() {
        for f in ["quick.toml", "bevywise.toml"] {
            let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("suites").join(f);
            let s = load(&p).unwrap();
            assert!(
                s.brokers.contains(&"midge".to_string())
                    && s.brokers.contains(&"mosquitto".to_string()),
                "{f}"
            );
            assert!(!s.cells.is_empty());
        }
    }
}
