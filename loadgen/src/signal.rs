//! How much a run must measure before its figures mean something.
//!
//! At 100 msg/s a 5 s run delivers 500 messages (a p99 from five samples above it) and a light
//! broker spends a few milliseconds of CPU, which `/proc/PID/stat` counts in 10 ms ticks: CPU
//! per message is then mostly rounding. So a run's measured interval is first lengthened so the
//! planned deliveries reach [`SignalRule::min_messages`]; if the run still falls short (closed
//! loop, whose rate is not known beforehand, or a broker too frugal for the CPU minimum), it is
//! done once more, longer, up to [`SignalRule::max_duration_s`]. What is still short is recorded
//! in [`SignalCheck`] and every report marks the figure as unreliable.

use serde::{Deserialize, Serialize};

use crate::procstat::CpuSource;
use crate::report::json::{RunRecord, Status};
use crate::scenario::{Mode, Scenario};

/// The minimum signal of a run; a suite's `[signal]` table, all fields optional.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SignalRule {
    /// Distinct measured deliveries a run needs for its throughput and percentiles.
    pub min_messages: u64,
    /// Broker CPU (milliseconds over the measured interval) needed for CPU per message.
    pub min_broker_cpu_ms: f64,
    /// Clock ticks needed when CPU comes from `/proc/PID/stat` (a tick either way at each end
    /// of the interval is then at most a few percent).
    pub min_cpu_ticks: u64,
    /// No run is lengthened beyond this many measured seconds.
    pub max_duration_s: f64,
    /// Spread over repeats, (max - min) / median, beyond which a median is unreliable.
    pub max_spread: f64,
}

impl Default for SignalRule {
    fn default() -> Self {
        SignalRule {
            min_messages: 2_000,
            min_broker_cpu_ms: 100.0,
            min_cpu_ticks: 50,
            max_duration_s: 60.0,
            max_spread: 0.25,
        }
    }
}

/// What a run lacked, if anything (empty: enough signal).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SignalCheck {
    /// Too few deliveries: throughput and latency figures are unreliable.
    pub few_messages: Option<String>,
    /// Too little broker CPU (or too few ticks): CPU figures are unreliable.
    pub little_cpu: Option<String>,
}

impl SignalCheck {
    pub fn is_short(&self) -> bool {
        self.few_messages.is_some() || self.little_cpu.is_some()
    }

    /// The reasons, for a report.
    pub fn reasons(&self) -> Vec<String> {
        self.few_messages
            .iter()
            .chain(self.little_cpu.iter())
            .cloned()
            .collect()
    }
}

/// The measured seconds for `sc`, lengthened so that `deliveries_per_s` (what the plan offers)
/// reaches the minimum message count; closed-loop runs keep their duration.
pub fn planned_duration(sc: &Scenario, deliveries_per_s: f64, rule: &SignalRule) -> f64 {
    if sc.mode != Mode::Rate || deliveries_per_s <= 0.0 {
        return sc.duration_s;
    }
    let need = rule.min_messages as f64 / deliveries_per_s;
    // Half-second steps keep durations readable in the reports.
    let need = (need * 2.0).ceil() / 2.0;
    sc.duration_s.max(need.min(rule.max_duration_s))
}

/// What `rec` lacks against `rule`.
pub fn check(rec: &RunRecord, rule: &SignalRule) -> SignalCheck {
    let mut c = SignalCheck::default();
    if rec.status == Status::Skipped {
        return c;
    }
    if rec.counters.received < rule.min_messages {
        c.few_messages = Some(format!(
            "{} deliveries measured (minimum {})",
            rec.counters.received, rule.min_messages
        ));
    }
    if let Some(cpu) = rec.broker_cpu {
        let ms = cpu.cpu_s * 1e3;
        if ms < rule.min_broker_cpu_ms {
            c.little_cpu = Some(format!(
                "{ms:.1} ms of broker CPU measured (minimum {} ms)",
                rule.min_broker_cpu_ms
            ));
        } else if cpu.source == CpuSource::Stat && cpu.raw < rule.min_cpu_ticks {
            c.little_cpu = Some(format!(
                "{} clock ticks of broker CPU (minimum {}; no schedstat here)",
                cpu.raw, rule.min_cpu_ticks
            ));
        }
    }
    c
}

/// How long to re-run `rec`'s scenario when it gathered too little signal and a longer run
/// would help; `None` when it had enough, failed, or was already at the maximum.
pub fn extension(rec: &RunRecord, rule: &SignalRule) -> Option<f64> {
    if rec.status != Status::Ok || rec.measured_s >= rule.max_duration_s {
        return None;
    }
    let mut factor: f64 = 1.0;
    let received = rec.counters.received;
    if received > 0 && received < rule.min_messages {
        factor = factor.max(rule.min_messages as f64 / received as f64);
    }
    if let Some(cpu) = rec.broker_cpu {
        let ms = cpu.cpu_s * 1e3;
        if ms > 0.0 && ms < rule.min_broker_cpu_ms {
            factor = factor.max(rule.min_broker_cpu_ms / ms);
        }
        if cpu.source == CpuSource::Stat && cpu.raw > 0 && cpu.raw < rule.min_cpu_ticks {
            factor = factor.max(rule.min_cpu_ticks as f64 / cpu.raw as f64);
        }
    }
    if factor <= 1.0 {
        return None;
    }
    // 20% margin: rates vary between runs.
    let d = ((rec.measured_s * factor * 1.2 * 2.0).ceil() / 2.0).min(rule.max_duration_s);
    (d > rec.measured_s * 1.1).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::json::BrokerCpu;
    use crate::stats::Counters;

    fn rec(received: u64, measured_s: f64, cpu: Option<(f64, CpuSource, u64)>) -> RunRecord {
        let mut r = crate::report::testdata::record(0, "b", 100, 1.0, 1.0);
        r.measured_s = measured_s;
        r.counters = Counters {
            expected: received,
            received,
            ..Default::default()
        };
        r.broker_cpu = cpu.map(|(cpu_s, source, raw)| BrokerCpu {
            cpu_s,
            source,
            raw,
            ..Default::default()
        });
        r
    }

    #[test]
    fn a_slow_open_loop_cell_is_planned_long_enough_for_the_minimum_messages() {
        let rule = SignalRule::default();
        let sc = Scenario {
            duration_s: 5.0,
            ..Default::default()
        };
        // 100 deliveries/s: 2000 messages need 20 s.
        assert_eq!(planned_duration(&sc, 100.0, &rule), 20.0);
        // Fast enough already: unchanged.
        assert_eq!(planned_duration(&sc, 10_000.0, &rule), 5.0);
        // Never past the maximum.
        assert_eq!(planned_duration(&sc, 1.0, &rule), 60.0);
        let max = Scenario {
            mode: Mode::Max,
            ..sc
        };
        assert_eq!(planned_duration(&max, 100.0, &rule), 5.0);
    }

    #[test]
    fn a_short_run_is_extended_and_flagged_until_it_has_enough() {
        let rule = SignalRule::default();
        // 500 messages in 5 s: four times too few; re-run ~24 s.
        let r = rec(500, 5.0, Some((1.0, CpuSource::Schedstat, 1_000_000_000)));
        assert!(check(&r, &rule).few_messages.is_some());
        assert_eq!(extension(&r, &rule), Some(24.0));
        // 10 ms of CPU: too little even with 5000 messages; capped at the maximum.
        let r = rec(5_000, 5.0, Some((0.010, CpuSource::Schedstat, 10_000_000)));
        let c = check(&r, &rule);
        assert!(c.little_cpu.is_some() && c.few_messages.is_none(), "{c:?}");
        assert_eq!(extension(&r, &rule), Some(60.0));
        // At the maximum already: no extension, still flagged.
        let r = rec(500, 60.0, None);
        assert_eq!(extension(&r, &rule), None);
        assert!(check(&r, &rule).is_short());
        // Enough of everything.
        let r = rec(5_000, 5.0, Some((0.5, CpuSource::Schedstat, 500_000_000)));
        assert_eq!(check(&r, &rule), SignalCheck::default());
        assert_eq!(extension(&r, &rule), None);
    }

    #[test]
    fn few_clock_ticks_make_cpu_unreliable_even_above_the_cpu_minimum() {
        let rule = SignalRule::default();
        // 200 ms measured as 20 ticks of 10 ms.
        let r = rec(5_000, 5.0, Some((0.2, CpuSource::Stat, 20)));
        assert!(check(&r, &rule).little_cpu.unwrap().contains("ticks"));
        assert_eq!(extension(&r, &rule), Some(15.0));
        // The same CPU from schedstat is fine.
        let r = rec(5_000, 5.0, Some((0.2, CpuSource::Schedstat, 200_000_000)));
        assert!(!check(&r, &rule).is_short());
    }

    #[test]
    fn failed_runs_are_not_extended() {
        let mut r = rec(10, 5.0, None);
        r.status = Status::Failed;
        assert_eq!(extension(&r, &SignalRule::default()), None);
    }
}
