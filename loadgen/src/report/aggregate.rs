//! Repeats of a cell folded into medians with their spread, and ratios to a baseline broker
//! with a verdict that refuses to call noise a win.
//!
//! A figure is the median over the repeats of a (cell, broker) with its min-max range. It is
//! *unreliable* when any repeat lacked signal (too few messages or too little broker CPU, see
//! [`crate::signal`]) or when the range is wide against the median. A ratio to the baseline is
//! computed per repeat (repeats alternate brokers, so repeat *i* of both ran side by side) and
//! its min-max decides the verdict: a range that contains 1.0 is "no difference", whatever the
//! median ratio says.

use serde::{Deserialize, Serialize};

use super::json::{RunRecord, Status};
use crate::procstat::CpuSource;
use crate::scenario::{Mode, Scenario};
use crate::signal::SignalRule;

/// A median over repeats, with its range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// One value per repeat, in repeat order.
    pub values: Vec<f64>,
    /// The repeat number of each value.
    pub repeats: Vec<u32>,
    /// True if the spread or a repeat's signal makes the median untrustworthy.
    pub unreliable: bool,
    /// Why it is unreliable.
    pub reasons: Vec<String>,
}

/// The median of `v` (mean of the middle two for an even count); NaN for none.
pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

impl Figure {
    /// The figure of `(repeat, value)` pairs, judged against `max_spread`; `None` for none.
    pub fn of(pairs: &[(u32, f64)], max_spread: f64) -> Option<Figure> {
        if pairs.is_empty() {
            return None;
        }
        let values: Vec<f64> = pairs.iter().map(|p| p.1).collect();
        let med = median(&values);
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut f = Figure {
            median: med,
            min,
            max,
            values,
            repeats: pairs.iter().map(|p| p.0).collect(),
            unreliable: false,
            reasons: Vec::new(),
        };
        let spread = f.spread();
        if spread > max_spread {
            f.flag(format!(
                "repeats spread {:.0}% of the median (more than {:.0}%)",
                100.0 * spread,
                100.0 * max_spread
            ));
        }
        Some(f)
    }

    /// (max - min) / median; 0 for a single value, infinite around a zero median.
    pub fn spread(&self) -> f64 {
        if self.values.len() < 2 || self.max == self.min {
            0.0
        } else if self.median.abs() > 0.0 {
            (self.max - self.min) / self.median.abs()
        } else {
            f64::INFINITY
        }
    }

    /// Marks the figure unreliable for `why`.
    pub fn flag(&mut self, why: String) {
        self.unreliable = true;
        if !self.reasons.contains(&why) {
            self.reasons.push(why);
        }
    }

    /// The value of repeat `r`, if that repeat has one.
    pub fn at(&self, r: u32) -> Option<f64> {
        self.repeats
            .iter()
            .position(|&x| x == r)
            .map(|i| self.values[i])
    }
}

/// What a ratio to the baseline says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every repeat's ratio is above 1.
    Higher,
    /// Every repeat's ratio is below 1.
    Lower,
    /// The repeats' ratios straddle (or touch) 1.
    NoDifference,
    /// Only one repeat on a side: no range to judge by.
    SingleRun,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Higher => "higher",
            Verdict::Lower => "lower",
            Verdict::NoDifference => "no difference",
            Verdict::SingleRun => "single run",
        }
    }
}

/// A broker's figure divided by the baseline's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    pub median: f64,
    /// Min and max over repeats.
    pub lo: f64,
    pub hi: f64,
    pub verdict: Verdict,
    /// Either side's figure is unreliable.
    pub unreliable: bool,
}

/// `fig / base`: per repeat when both have the same repeats (they ran side by side), otherwise
/// the widest range the two ranges allow.
pub fn ratio(fig: &Figure, base: &Figure) -> Option<Ratio> {
    let paired: Vec<f64> = base
        .repeats
        .iter()
        .filter_map(|&r| Some(fig.at(r)? / base.at(r)?))
        .filter(|x| x.is_finite())
        .collect();
    let (median_r, lo, hi) = if paired.len() == base.values.len().max(fig.values.len()) {
        let lo = paired.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = paired.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (median(&paired), lo, hi)
    } else if base.min > 0.0 {
        (
            fig.median / base.median,
            fig.min / base.max,
            fig.max / base.min,
        )
    } else {
        return None;
    };
    if !median_r.is_finite() || !lo.is_finite() || !hi.is_finite() {
        return None;
    }
    let verdict = if fig.values.len() < 2 || base.values.len() < 2 {
        Verdict::SingleRun
    } else if lo <= 1.0 && hi >= 1.0 {
        Verdict::NoDifference
    } else if lo > 1.0 {
        Verdict::Higher
    } else {
        Verdict::Lower
    };
    Some(Ratio {
        median: median_r,
        lo,
        hi,
        verdict,
        unreliable: fig.unreliable || base.unreliable,
    })
}

/// The figures the report compares, in the order of [`Metric::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    CpuUsPerMsg,
    P99,
    Throughput,
}

impl Metric {
    pub const ALL: [Metric; 3] = [Metric::CpuUsPerMsg, Metric::P99, Metric::Throughput];

    pub fn key(self) -> &'static str {
        match self {
            Metric::CpuUsPerMsg => "cpu_us_per_msg",
            Metric::P99 => "p99",
            Metric::Throughput => "throughput",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Metric::CpuUsPerMsg => "broker CPU per message",
            Metric::P99 => "p99 latency",
            Metric::Throughput => "delivered throughput",
        }
    }

    /// True if a larger value is better.
    pub fn higher_is_better(self) -> bool {
        self == Metric::Throughput
    }
}

/// One broker in one cell, over its repeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BrokerCell {
    pub broker: String,
    /// Repeats measured (status ok or failed).
    pub runs: usize,
    pub failed: usize,
    /// Why the broker was not run here, when no repeat ran.
    pub skipped: Option<String>,
    pub throughput: Option<Figure>,
    pub offered: Option<Figure>,
    pub cpu_us_per_msg: Option<Figure>,
    pub cpu_pct: Option<Figure>,
    pub cpu_source: Option<CpuSource>,
    pub p50: Option<Figure>,
    pub p90: Option<Figure>,
    pub p99: Option<Figure>,
    pub p999: Option<Figure>,
    pub max: Option<Figure>,
    pub rss_max_kib: Option<Figure>,
    pub rss_peak_kib: Option<Figure>,
    pub loadgen_pct: Option<Figure>,
    pub loadgen_saturated: bool,
    /// Measured seconds, min and max over repeats (extended runs differ).
    pub measured_s: (f64, f64),
    pub lost: u64,
    pub duplicates: u64,
    pub backlog: u64,
    pub failures: Vec<String>,
    pub warnings: Vec<String>,
}

impl BrokerCell {
    pub fn figure(&self, m: Metric) -> Option<&Figure> {
        match m {
            Metric::CpuUsPerMsg => self.cpu_us_per_msg.as_ref(),
            Metric::P99 => self.p99.as_ref(),
            Metric::Throughput => self.throughput.as_ref(),
        }
    }

    /// True if any figure shown for this broker is unreliable.
    pub fn any_unreliable(&self) -> bool {
        [&self.throughput, &self.cpu_us_per_msg, &self.p99]
            .iter()
            .any(|f| f.as_ref().is_some_and(|f| f.unreliable))
    }
}

/// Ratios of one broker to the baseline in one cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BrokerRatios {
    pub broker: String,
    pub cpu_us_per_msg: Option<Ratio>,
    pub p99: Option<Ratio>,
    pub throughput: Option<Ratio>,
}

impl BrokerRatios {
    pub fn get(&self, m: Metric) -> Option<Ratio> {
        match m {
            Metric::CpuUsPerMsg => self.cpu_us_per_msg,
            Metric::P99 => self.p99,
            Metric::Throughput => self.throughput,
        }
    }
}

/// One cell over all brokers and repeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellSummary {
    pub index: usize,
    pub name: String,
    /// p2p, fan-in, fan-out, iot or max: which small-multiple figure it belongs to.
    pub family: String,
    /// Everything but the client count: cells with the same series form one line per broker.
    pub series: String,
    pub scenario: Scenario,
    pub connections: u32,
    pub brokers: Vec<BrokerCell>,
}

impl CellSummary {
    pub fn broker(&self, name: &str) -> Option<&BrokerCell> {
        self.brokers.iter().find(|b| b.broker == name)
    }

    /// Every broker's ratios to `baseline` (none if the baseline has no figures here).
    pub fn ratios(&self, baseline: &str) -> Vec<BrokerRatios> {
        let Some(base) = self.broker(baseline) else {
            return Vec::new();
        };
        self.brokers
            .iter()
            .map(|b| {
                let r = |m: Metric| ratio(b.figure(m)?, base.figure(m)?);
                BrokerRatios {
                    broker: b.broker.clone(),
                    cpu_us_per_msg: r(Metric::CpuUsPerMsg),
                    p99: r(Metric::P99),
                    throughput: r(Metric::Throughput),
                }
            })
            .collect()
    }
}

/// The scenario family of a cell, for grouping charts.
pub fn family(sc: &Scenario) -> &'static str {
    if sc.mode == Mode::Max {
        "max"
    } else {
        sc.shape.name()
    }
}

/// A cell's series: its parameters except the client count, readable.
pub fn series_label(sc: &Scenario) -> String {
    let mut s = format!("QoS {}, {} B", sc.qos, sc.payload);
    match sc.mode {
        Mode::Rate => s += &format!(", {} msg/s each", sc.rate),
        Mode::Max => s += &format!(", window {}", sc.window),
    }
    if sc.protocol == "5" {
        s += ", MQTT 5";
    }
    if sc.subscribers > 0 {
        s += &format!(", {} subscribers", sc.subscribers);
    }
    if sc.publishers > 0 {
        s += &format!(", {} publishers", sc.publishers);
    }
    if sc.persistent {
        s += ", persistent";
    }
    s
}

/// Folds the repeats of every (cell, broker) of `runs`; cells in index order, brokers in order
/// of first appearance.
pub fn summarize(runs: &[RunRecord], rule: &SignalRule) -> (Vec<CellSummary>, Vec<String>) {
    let (cells, brokers) = super::charts::cells_and_brokers(runs);
    let mut out = Vec::new();
    for (ci, name) in cells {
        let in_cell: Vec<&RunRecord> = runs.iter().filter(|r| r.cell_index == ci).collect();
        let Some(first) = in_cell.first() else {
            continue;
        };
        let mut bcs = Vec::new();
        for b in &brokers {
            let rs: Vec<&RunRecord> = in_cell
                .iter()
                .copied()
                .filter(|r| &r.broker.name == b)
                .collect();
            if rs.is_empty() {
                continue;
            }
            bcs.push(broker_cell(b, &rs, rule));
        }
        let mut sc = first.scenario.clone();
        sc.duration_s = first.scenario.duration_s;
        out.push(CellSummary {
            index: ci,
            name,
            family: family(&sc).to_string(),
            series: series_label(&sc),
            connections: first.connections,
            scenario: sc,
            brokers: bcs,
        });
    }
    (out, brokers)
}

fn broker_cell(name: &str, rs: &[&RunRecord], rule: &SignalRule) -> BrokerCell {
    let measured: Vec<&RunRecord> = rs
        .iter()
        .copied()
        .filter(|r| r.status != Status::Skipped)
        .collect();
    // Failed runs count as failures but their figures are not averaged with good ones.
    let ok: Vec<&RunRecord> = measured
        .iter()
        .copied()
        .filter(|r| r.status == Status::Ok)
        .collect();
    let fig = |f: &dyn Fn(&RunRecord) -> Option<f64>| {
        let pairs: Vec<(u32, f64)> = ok.iter().filter_map(|r| Some((r.repeat, f(r)?))).collect();
        Figure::of(&pairs, rule.max_spread)
    };
    let mut throughput = fig(&|r| Some(r.throughput_msgs_s));
    let mut p99 = fig(&|r| Some(r.latency.p99_us));
    let mut cpu = fig(&|r| r.broker_cpu.map(|c| c.us_per_msg));
    for r in &ok {
        if let Some(why) = &r.signal.few_messages {
            let why = format!("repeat {}: {why}", r.repeat + 1);
            for f in [&mut throughput, &mut p99].into_iter().flatten() {
                f.flag(why.clone());
            }
        }
        if let Some(why) = &r.signal.little_cpu {
            if let Some(f) = &mut cpu {
                f.flag(format!("repeat {}: {why}", r.repeat + 1));
            }
        }
    }
    let join = |f: &dyn Fn(&RunRecord) -> &Vec<String>| {
        let mut v: Vec<String> = Vec::new();
        for r in &measured {
            for s in f(r) {
                let s = format!("repeat {}: {s}", r.repeat + 1);
                if !v.contains(&s) {
                    v.push(s);
                }
            }
        }
        v
    };
    let mut warnings = join(&|r| &r.warnings);
    for r in &measured {
        if let Some(e) = &r.extended {
            warnings.push(format!("repeat {}: {e}", r.repeat + 1));
        }
    }
    let lo = measured
        .iter()
        .map(|r| r.measured_s)
        .fold(f64::INFINITY, f64::min);
    let hi = measured.iter().map(|r| r.measured_s).fold(0.0, f64::max);
    BrokerCell {
        broker: name.to_string(),
        runs: measured.len(),
        failed: measured.len() - ok.len(),
        skipped: if measured.is_empty() {
            rs.first().and_then(|r| r.note.clone())
        } else {
            None
        },
        throughput,
        offered: fig(&|r| Some(r.offered_msgs_s)),
        cpu_us_per_msg: cpu,
        cpu_pct: fig(&|r| r.broker_cpu.map(|c| c.cpu_pct)),
        cpu_source: ok.iter().find_map(|r| r.broker_cpu.map(|c| c.source)),
        p50: fig(&|r| Some(r.latency.p50_us)),
        p90: fig(&|r| Some(r.latency.p90_us)),
        p99,
        p999: fig(&|r| Some(r.latency.p999_us)),
        max: fig(&|r| Some(r.latency.max_us)),
        rss_max_kib: fig(&|r| r.broker_mem.map(|m| m.rss_max_kib as f64)),
        rss_peak_kib: fig(&|r| r.broker_mem.map(|m| m.peak_kib as f64)),
        loadgen_pct: fig(&|r| Some(r.loadgen_cpu.process_pct)),
        loadgen_saturated: measured.iter().any(|r| r.loadgen_cpu.saturated),
        measured_s: if measured.is_empty() {
            (0.0, 0.0)
        } else {
            (lo, hi)
        },
        lost: measured.iter().map(|r| r.lost).sum(),
        duplicates: measured.iter().map(|r| r.counters.duplicates).sum(),
        backlog: measured.iter().map(|r| r.counters.unsent).sum(),
        failures: join(&|r| &r.failures),
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::testdata::record;

    fn fig(v: &[f64]) -> Figure {
        let pairs: Vec<(u32, f64)> = v.iter().enumerate().map(|(i, &x)| (i as u32, x)).collect();
        Figure::of(&pairs, 0.25).unwrap()
    }

    #[test]
    fn medians_and_ranges() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        let f = fig(&[10.0, 12.0, 11.0]);
        assert_eq!((f.median, f.min, f.max), (11.0, 10.0, 12.0));
        assert!(!f.unreliable, "18% spread is within 25%");
        let f = fig(&[10.0, 20.0, 11.0]);
        assert!(f.unreliable && f.reasons[0].contains("spread"), "{f:?}");
    }

    #[test]
    fn a_ratio_whose_repeats_straddle_one_is_no_difference() {
        // Median ratio 0.9 looks like a 10% win, but one repeat went the other way.
        let base = fig(&[100.0, 100.0, 100.0]);
        let b = fig(&[90.0, 85.0, 104.0]);
        let r = ratio(&b, &base).unwrap();
        assert_eq!(r.verdict, Verdict::NoDifference);
        assert!((r.median - 0.9).abs() < 1e-9);
        assert_eq!((r.lo, r.hi), (0.85, 1.04));
        // Every repeat lower: a real difference.
        let b = fig(&[90.0, 85.0, 95.0]);
        assert_eq!(ratio(&b, &base).unwrap().verdict, Verdict::Lower);
        let b = fig(&[190.0, 185.0, 195.0]);
        assert_eq!(ratio(&b, &base).unwrap().verdict, Verdict::Higher);
        // Against itself: exactly 1, no difference.
        assert_eq!(ratio(&base, &base).unwrap().verdict, Verdict::NoDifference);
    }

    #[test]
    fn ratios_pair_repeats_that_ran_side_by_side() {
        // The machine got slower in repeat 2 for both brokers: paired ratios stay tight and
        // the difference is real, although the two ranges overlap.
        let base = fig(&[100.0, 150.0, 100.0]);
        let b = fig(&[80.0, 120.0, 80.0]);
        let r = ratio(&b, &base).unwrap();
        assert_eq!(r.verdict, Verdict::Lower);
        assert!((r.hi - 0.8).abs() < 1e-9);
        // Unpaired (repeat sets differ): the conservative range, here straddling 1.
        let b = Figure::of(&[(0, 80.0), (1, 120.0)], 0.25 * 10.0).unwrap();
        let base3 = fig(&[100.0, 150.0, 100.0]);
        assert_eq!(ratio(&b, &base3).unwrap().verdict, Verdict::NoDifference);
        // One repeat: a ratio, but no verdict.
        assert_eq!(
            ratio(&fig(&[50.0]), &fig(&[100.0])).unwrap().verdict,
            Verdict::SingleRun
        );
    }

    #[test]
    fn repeats_fold_into_one_cell_with_flags_from_short_runs() {
        let rule = SignalRule::default();
        let mut runs = Vec::new();
        for rep in 0..3u32 {
            for (b, tp, cpu) in [("alpha", 1000.0, 2.0), ("beta", 500.0, 8.0)] {
                let mut r = record(0, b, 100, tp + rep as f64, cpu);
                r.repeat = rep;
                if b == "beta" && rep == 1 {
                    r.signal.little_cpu = Some("3 clock ticks".into());
                }
                runs.push(r);
            }
        }
        let (cells, brokers) = summarize(&runs, &rule);
        assert_eq!(brokers, ["alpha", "beta"]);
        assert_eq!(cells.len(), 1);
        let alpha = cells[0].broker("alpha").unwrap();
        assert_eq!(alpha.runs, 3);
        assert_eq!(alpha.throughput.as_ref().unwrap().median, 1001.0);
        assert!(!alpha.any_unreliable());
        let beta = cells[0].broker("beta").unwrap();
        let cpu = beta.cpu_us_per_msg.as_ref().unwrap();
        assert!(cpu.unreliable && cpu.reasons[0].contains("repeat 2: 3 clock ticks"));
        assert!(!beta.throughput.as_ref().unwrap().unreliable);
        let ratios = cells[0].ratios("alpha");
        let r = ratios[1].cpu_us_per_msg.unwrap();
        assert_eq!((r.verdict, r.unreliable), (Verdict::Higher, true));
        assert_eq!(ratios[1].throughput.unwrap().verdict, Verdict::Lower);
        assert!(cells[0].ratios("gamma").is_empty());
    }
}
