//! Measurements of one run: latency histograms, loss and duplicate bookkeeping, counters.
//!
//! Latencies are recorded in nanoseconds in an HDR histogram (3 significant digits, up to one
//! hour), so percentiles are exact to 0.1% at every scale and histograms of several worker
//! threads merge without loss. Loss and duplicates are tracked per (subscriber, publisher,
//! sequence) with a bitmap, which costs one bit per delivered message.

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency the histogram holds (larger values saturate): one hour in nanoseconds.
const MAX_NS: u64 = 3_600 * 1_000_000_000;

/// An HDR histogram of latencies in nanoseconds.
#[derive(Debug, Clone)]
pub struct LatencyHistogram(Histogram<u64>);

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

/// The percentiles every report shows, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub min_us: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub p9999_us: f64,
    pub max_us: f64,
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> LatencyHistogram {
        LatencyHistogram(Histogram::new_with_bounds(1, MAX_NS, 3).expect("valid HDR bounds"))
    }

    /// Records one latency; values beyond an hour saturate rather than fail.
    pub fn record(&mut self, ns: u64) {
        self.0.saturating_record(ns.max(1));
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        self.0.add(&other.0).expect("histograms share bounds");
    }

    /// Latency at quantile `q` (0..=1), in nanoseconds.
    pub fn value_at_quantile_ns(&self, q: f64) -> u64 {
        self.0.value_at_quantile(q)
    }

    /// The standard percentiles (all zero for an empty histogram).
    pub fn percentiles(&self) -> Percentiles {
        if self.count() == 0 {
            return Percentiles::default();
        }
        let us = |ns: u64| ns as f64 / 1_000.0;
        let q = |x: f64| us(self.0.value_at_quantile(x));
        Percentiles {
            count: self.count(),
            min_us: us(self.0.min()),
            mean_us: self.0.mean() / 1_000.0,
            p50_us: q(0.50),
            p90_us: q(0.90),
            p99_us: q(0.99),
            p999_us: q(0.999),
            p9999_us: q(0.9999),
            max_us: us(self.0.max()),
        }
    }

    /// The percentile curve as (percentile in %, latency in us), sampled evenly on the
    /// "number of nines" scale from p0 up to the highest percentile the sample count supports.
    /// This is the shape HdrHistogram plots use: the x axis is `1 / (1 - p)` on a log scale.
    pub fn percentile_curve(&self) -> Vec<(f64, f64)> {
        let n = self.count();
        if n == 0 {
            return Vec::new();
        }
        // With n samples, quantiles finer than 1/n say nothing new.
        let max_nines = (n as f64).log10().clamp(1.0, 6.0);
        let steps = 60;
        let mut out = Vec::with_capacity(steps + 1);
        for i in 0..=steps {
            let nines = max_nines * i as f64 / steps as f64;
            let q = 1.0 - 10f64.powf(-nines);
            out.push((q * 100.0, self.0.value_at_quantile(q) as f64 / 1_000.0));
        }
        out
    }

    /// Serialises as HdrHistogram's compressed V2 format in standard base64: the form every
    /// HdrHistogram implementation (Java, C, Go, Rust, the online plotter) reads back.
    pub fn to_base64(&self) -> String {
        let mut buf = Vec::new();
        V2DeflateSerializer::new()
            .serialize(&self.0, &mut buf)
            .expect("serialising to a Vec cannot fail");
        base64::engine::general_purpose::STANDARD.encode(buf)
    }

    /// Reads what [`LatencyHistogram::to_base64`] wrote.
    pub fn from_base64(s: &str) -> Result<LatencyHistogram, String> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|e| format!("histogram base64: {e}"))?;
        let h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut &raw[..])
            .map_err(|e| format!("histogram: {e:?}"))?;
        Ok(LatencyHistogram(h))
    }
}

/// The sequence numbers seen from one publisher: a growable bitmap.
#[derive(Debug, Clone, Default)]
pub struct SeqSet {
    bits: Vec<u64>,
    unique: u64,
}

impl SeqSet {
    /// Marks `seq` seen; returns false if it had been seen before (a duplicate).
    pub fn insert(&mut self, seq: u32) -> bool {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.bits.len() {
            self.bits.resize((word + 1).next_power_of_two(), 0);
        }
        let mask = 1u64 << bit;
        let new = self.bits[word] & mask == 0;
        self.bits[word] |= mask;
        self.unique += new as u64;
        new
    }

    /// Distinct sequence numbers seen.
    pub fn unique(&self) -> u64 {
        self.unique
    }
}

/// Counters of one run, summed over worker threads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// PUBLISH packets written, all phases.
    pub published: u64,
    /// PUBLISH packets whose intended time is in the measured interval.
    pub published_measured: u64,
    /// Deliveries the plan expects for the measured publishes (publishes x matching subscribers).
    pub expected: u64,
    /// Distinct measured messages received (per subscriber, publisher and sequence number).
    pub received: u64,
    /// Measured messages received more than once by the same subscriber.
    pub duplicates: u64,
    /// Messages received whose intended time is outside the measured interval (warm-up, drain).
    pub received_unmeasured: u64,
    /// Payloads that carried no loadgen stamp or came from an unknown publisher.
    pub foreign: u64,
    /// Publishes acknowledged (PUBACK / PUBCOMP) with success.
    pub acked: u64,
    /// Publishes refused by the broker (MQTT 5 reason code >= 0x80).
    pub refused: u64,
    /// Open-loop messages that were due in the measured interval but never sent because the
    /// window or socket stayed full: a sign of saturation.
    pub unsent: u64,
    /// Connections lost during the run.
    pub disconnects: u64,
}

impl Counters {
    /// Adds another thread's counters.
    pub fn add(&mut self, o: &Counters) {
        self.published += o.published;
        self.published_measured += o.published_measured;
        self.expected += o.expected;
        self.received += o.received;
        self.duplicates += o.duplicates;
        self.received_unmeasured += o.received_unmeasured;
        self.foreign += o.foreign;
        self.acked += o.acked;
        self.refused += o.refused;
        self.unsent += o.unsent;
        self.disconnects += o.disconnects;
    }

    /// Expected deliveries that never arrived.
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.received)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_uniform_distribution_are_exact_to_three_digits() {
        let mut h = LatencyHistogram::new();
        for us in 1..=10_000u64 {
            h.record(us * 1_000);
        }
        let p = h.percentiles();
        assert_eq!(p.count, 10_000);
        let close = |got: f64, want: f64| (got - want).abs() / want < 0.001;
        assert!(close(p.p50_us, 5_000.0), "{}", p.p50_us);
        assert!(close(p.p90_us, 9_000.0), "{}", p.p90_us);
        assert!(close(p.p99_us, 9_900.0), "{}", p.p99_us);
        assert!(close(p.max_us, 10_000.0), "{}", p.max_us);
        assert!(close(p.mean_us, 5_000.5), "{}", p.mean_us);
        assert!(p.min_us <= p.p50_us && p.p50_us <= p.p90_us && p.p999_us <= p.max_us);
    }

    #[test]
    fn merging_thread_histograms_equals_recording_into_one() {
        let (mut a, mut b, mut all) = (
            LatencyHistogram::new(),
            LatencyHistogram::new(),
            LatencyHistogram::new(),
        );
        for i in 0..5_000u64 {
            let v = (i * 7919) % 100_000 + 1;
            if i % 2 == 0 {
                a.record(v)
            } else {
                b.record(v)
            }
            all.record(v);
        }
        a.merge(&b);
        assert_eq!(a.percentiles(), all.percentiles());
    }

    #[test]
    fn histogram_survives_base64_serialisation() {
        let mut h = LatencyHistogram::new();
        for v in [1, 10, 100, 1_000_000, 3_000_000_000u64] {
            h.record(v);
        }
        let back = LatencyHistogram::from_base64(&h.to_base64()).unwrap();
        assert_eq!(back.percentiles(), h.percentiles());
        assert!(LatencyHistogram::from_base64("not base64!").is_err());
    }

    #[test]
    fn out_of_range_latencies_saturate_instead_of_being_dropped() {
        let mut h = LatencyHistogram::new();
        h.record(0);
        h.record(u64::MAX);
        assert_eq!(h.count(), 2);
    }

    #[test]
    fn percentile_curve_is_monotonic_and_reaches_the_tail() {
        let mut h = LatencyHistogram::new();
        for v in 1..=100_000u64 {
            h.record(v * 10);
        }
        let c = h.percentile_curve();
        assert!(c.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        assert!(
            c.last().unwrap().0 > 99.99,
            "100k samples support five nines"
        );
        assert!(LatencyHistogram::new().percentile_curve().is_empty());
    }

    #[test]
    fn seqset_counts_unique_and_flags_duplicates() {
        let mut s = SeqSet::default();
        assert!(s.insert(0));
        assert!(s.insert(1_000_000));
        assert!(!s.insert(0));
        assert!(s.insert(63));
        assert!(s.insert(64));
        assert_eq!(s.unique(), 4);
    }

    #[test]
    fn lost_is_expected_minus_received_and_never_negative() {
        let mut c = Counters {
            expected: 10,
            received: 7,
            ..Default::default()
        };
        assert_eq!(c.lost(), 3);
        c.add(&Counters {
            received: 5,
            ..Default::default()
        });
        assert_eq!(c.lost(), 0);
    }
}
