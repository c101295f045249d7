//! mosquitto's 27 `load/.../{1min,5min,15min}` moving averages: per-minute rates of nine
//! counters, smoothed exponentially over one, five and fifteen minutes, with mosquitto's
//! formula (`calc_load` in `src/sys_tree.c`): at each update `dt` seconds after the previous
//! one, `rate = increase * 60 / dt` and `load = rate + exp(-dt / window) * (load - rate)`.
//! The first update publishes 0.00 everywhere and takes the counters as the baseline.

use super::snapshot::Topic;
use crate::shard::stats::Stats;
use std::borrow::Cow;
use std::time::Instant;

/// The smoothing windows, in seconds, in the order of [`TOPICS`].
const WINDOWS: [f64; 3] = [60.0, 300.0, 900.0];

/// The topics, by window then by counter (mosquitto's publication order).
const TOPICS: [[&str; 9]; 3] = [
    [
        "$SYS/broker/load/messages/received/1min",
        "$SYS/broker/load/messages/sent/1min",
        "$SYS/broker/load/publish/dropped/1min",
        "$SYS/broker/load/publish/received/1min",
        "$SYS/broker/load/publish/sent/1min",
        "$SYS/broker/load/bytes/received/1min",
        "$SYS/broker/load/bytes/sent/1min",
        "$SYS/broker/load/sockets/1min",
        "$SYS/broker/load/connections/1min",
    ],
    [
        "$SYS/broker/load/messages/received/5min",
        "$SYS/broker/load/messages/sent/5min",
        "$SYS/broker/load/publish/dropped/5min",
        "$SYS/broker/load/publish/received/5min",
        "$SYS/broker/load/publish/sent/5min",
        "$SYS/broker/load/bytes/received/5min",
        "$SYS/broker/load/bytes/sent/5min",
        "$SYS/broker/load/sockets/5min",
        "$SYS/broker/load/connections/5min",
    ],
    [
        "$SYS/broker/load/messages/received/15min",
        "$SYS/broker/load/messages/sent/15min",
        "$SYS/broker/load/publish/dropped/15min",
        "$SYS/broker/load/publish/received/15min",
        "$SYS/broker/load/publish/sent/15min",
        "$SYS/broker/load/bytes/received/15min",
        "$SYS/broker/load/bytes/sent/15min",
        "$SYS/broker/load/sockets/15min",
        "$SYS/broker/load/connections/15min",
    ],
];

/// The nine counters of [`TOPICS`]' columns, from the broker-wide counters.
fn counters(s: &Stats) -> [u64; 9] {
    [
        s.packets_in,
        s.packets_out,
        s.publishes_dropped,
        s.messages_in,
        s.messages_out,
        s.bytes_in,
        s.bytes_out,
        s.sockets_accepted,
        s.connects,
    ]
}

/// The averages and the counters at their last update.
#[derive(Debug, Default)]
pub(super) struct Loads {
    /// When the averages were last updated and the counters then; `None` before the first.
    last: Option<(Instant, [u64; 9])>,
    values: [[f64; 9]; 3],
}

impl Loads {
    /// Updates the averages at `now` with the broker-wide counters `total`.
    pub(super) fn update(&mut self, now: Instant, total: &Stats) {
        let current = counters(total);
        if let Some((at, before)) = self.last {
            let dt = now.saturating_duration_since(at).as_secs_f64();
            if dt <= 0.0 {
                return;
            }
            for (window, values) in WINDOWS.iter().zip(self.values.iter_mut()) {
                let exponent = (-dt / window).exp();
                for ((load, now), then) in values.iter_mut().zip(current).zip(before) {
                    let rate = now.saturating_sub(then) as f64 * 60.0 / dt;
                    *load = rate + exponent * (*load - rate);
                }
            }
        }
        self.last = Some((now, current));
    }

    /// Appends the 27 topics with their values (two decimals, as mosquitto prints them).
    pub(super) fn topics(&self, out: &mut Vec<(Topic, String)>) {
        for (names, values) in TOPICS.iter().zip(&self.values) {
            for (name, value) in names.iter().zip(values) {
                out.push((Cow::Borrowed(name), format!("{value:.2}")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn value(loads: &Loads, topic: &str) -> f64 {
        let mut out = Vec::new();
        loads.topics(&mut out);
        out.iter()
            .find(|(t, _)| t == topic)
            .map(|(_, v)| v.parse().unwrap())
            .unwrap()
    }

    #[test]
    fn twenty_seven_topics_zero_at_first() {
        let mut loads = Loads::default();
        loads.update(
            Instant::now(),
            &Stats {
                messages_in: 500,
                ..Stats::default()
            },
        );
        let mut out = Vec::new();
        loads.topics(&mut out);
        assert_eq!(out.len(), 27);
        assert!(out.iter().all(|(_, v)| v == "0.00"));
        let unique: std::collections::HashSet<_> = out.iter().map(|(t, _)| t.clone()).collect();
        assert_eq!(unique.len(), 27);
    }

    #[test]
    fn a_steady_rate_is_approached_as_mosquitto_computes_it() {
        let t0 = Instant::now();
        let mut loads = Loads::default();
        loads.update(t0, &Stats::default());
        // 10 PUBLISH a second for 10 s: 600 a minute.
        loads.update(
            t0 + Duration::from_secs(10),
            &Stats {
                messages_in: 100,
                ..Stats::default()
            },
        );
        let one = 600.0 * (1.0 - (-10.0f64 / 60.0).exp());
        let fifteen = 600.0 * (1.0 - (-10.0f64 / 900.0).exp());
        let got = value(&loads, "$SYS/broker/load/publish/received/1min");
        assert!((got - one).abs() < 0.01, "{got} vs {one}");
        let got = value(&loads, "$SYS/broker/load/publish/received/15min");
        assert!((got - fifteen).abs() < 0.01, "{got} vs {fifteen}");
        assert_eq!(value(&loads, "$SYS/broker/load/publish/sent/1min"), 0.0);
        // After an hour at that rate the 1-minute average is the rate.
        let mut n = 100;
        for i in 2..=360 {
            n += 100;
            loads.update(
                t0 + Duration::from_secs(10 * i),
                &Stats {
                    messages_in: n,
                    ..Stats::default()
                },
            );
        }
        let got = value(&loads, "$SYS/broker/load/publish/received/1min");
        assert!((got - 600.0).abs() < 0.01, "{got}");
    }
}
