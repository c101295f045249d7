//! Scenarios (what traffic to generate) and the plan they expand to (which clients exist).
//!
//! A [`Scenario`] is one cell of a suite: a shape, a size, a QoS, a payload, a pace and the
//! timing. [`Scenario::plan`] turns it into a [`Plan`], the exact list of client connections,
//! their subscriptions and their publications. The plan also knows, for every publisher, how
//! many subscribers match its topic: that is what loss is measured against. It is computed
//! by matching topics against filters, not assumed from the shape.

use std::collections::HashMap;

use midge_codec::topic::filter_matches;
use serde::{Deserialize, Serialize};

use crate::clock::{NS_PER_SEC, STAMP_LEN};
use crate::schedule::Pace;

/// The traffic pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Shape {
    /// `clients` publishers -> one topic -> `subscribers` subscribers (default 1).
    FanIn,
    /// `publishers` publishers (default 1) -> one topic -> `clients` subscribers.
    FanOut,
    /// `clients` pairs, one topic per pair.
    P2p,
    /// `clients` devices publish to their own topic `.../g<G>/d<I>/telemetry`; `subscribers`
    /// backends (default 2) each subscribe with a wildcard to one group of devices.
    Iot,
}

impl Shape {
    /// The name used in suite files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Shape::FanIn => "fan-in",
            Shape::FanOut => "fan-out",
            Shape::P2p => "p2p",
            Shape::Iot => "iot",
        }
    }
}

/// How publishers are paced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Open loop at `rate` messages per second per publisher.
    Rate,
    /// Closed loop: as fast as a window of `window` undelivered messages per publisher allows.
    Max,
}

/// One cell: everything that defines a run except the broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    /// Name of the cell (unique in a suite; used in file names).
    pub name: String,
    pub shape: Shape,
    /// The size that grows in a Bevywise-style series (meaning depends on the shape).
    pub clients: u32,
    /// Fan-in subscribers, or IoT backends; 0 means the shape's default.
    pub subscribers: u32,
    /// Fan-out publishers; 0 means the shape's default (1).
    pub publishers: u32,
    /// QoS of every PUBLISH and subscription.
    pub qos: u8,
    /// Payload size in bytes (at least the 16-byte stamp).
    pub payload: usize,
    /// "3.1.1" or "5".
    pub protocol: String,
    pub mode: Mode,
    /// Messages per second per publisher (rate mode).
    pub rate: f64,
    /// Messages in flight per publisher: the QoS 1/2 inflight window, and in max mode also the
    /// end-to-end window (sent but not yet delivered to every subscriber).
    pub window: u32,
    /// Seconds of traffic before measuring (excluded: connection set-up, caches, JIT-less but
    /// still cold brokers).
    pub warmup_s: f64,
    /// Seconds measured.
    pub duration_s: f64,
    /// Seconds to wait after the measured interval for late deliveries before counting loss.
    pub drain_s: f64,
    /// loadgen worker threads (one mio Poll each).
    pub threads: u32,
    /// Clients keep persistent sessions (3.1.1 clean session 0; 5.0 Clean Start 0 and a
    /// Session Expiry Interval of one hour): what a broker with persistence has to store.
    pub persistent: bool,
    /// `tcp` (the default) or `ws`: MQTT over WebSocket to a `protocol websockets` listener.
    pub transport: crate::engine::ws::Transport,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            name: String::new(),
            shape: Shape::P2p,
            clients: 10,
            subscribers: 0,
            publishers: 0,
            qos: 0,
            payload: 64,
            protocol: "3.1.1".into(),
            mode: Mode::Rate,
            rate: 100.0,
            window: 16,
            warmup_s: 1.0,
            duration_s: 5.0,
            drain_s: 2.0,
            threads: 1,
            persistent: false,
            transport: crate::engine::ws::Transport::Tcp,
        }
    }
}

/// One client connection of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientSpec {
    pub client_id: String,
    /// Topic filters it subscribes to (at the scenario's QoS).
    pub subscriptions: Vec<String>,
    /// Index into [`Plan::publishers`] if this client publishes.
    pub publisher: Option<u32>,
}

/// One publishing client of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PublisherSpec {
    pub topic: String,
    /// Subscriptions (across all clients) that match `topic`: deliveries expected per message.
    pub fanout: u32,
    /// Offset of this publisher's schedule within one interval, so publishers do not fire in
    /// lock-step.
    pub phase_ns: u64,
}

/// The clients of a run and what each does.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub clients: Vec<ClientSpec>,
    pub publishers: Vec<PublisherSpec>,
    pub pace: Pace,
}

impl Scenario {
    /// A name derived from the parameters, for cells that do not set one.
    pub fn auto_name(&self) -> String {
        let pace = match self.mode {
            Mode::Rate => format!("r{}", self.rate),
            Mode::Max => "max".into(),
        };
        let v = if self.protocol == "5" { "v5" } else { "v311" };
        let session = if self.persistent { "-persistent" } else { "" };
        let transport = match self.transport {
            crate::engine::ws::Transport::Tcp => "",
            crate::engine::ws::Transport::Ws => "-ws",
        };
        format!(
            "{}-c{}-q{}-{}B-{}-{}{session}{transport}",
            self.shape.name(),
            self.clients,
            self.qos,
            self.payload,
            pace,
            v
        )
    }

    /// The MQTT protocol version.
    pub fn version(&self) -> Result<midge_codec::ProtocolVersion, String> {
        use midge_codec::ProtocolVersion;
        match self.protocol.as_str() {
            "3.1.1" | "311" | "4" => Ok(ProtocolVersion::V311),
            "5" | "5.0" => Ok(ProtocolVersion::V5),
            other => Err(format!("protocol {other:?}: expected \"3.1.1\" or \"5\"")),
        }
    }

    /// Checks every field; the error names the field and the problem.
    pub fn validate(&self) -> Result<(), String> {
        let n = &self.name;
        if self.clients == 0 {
            return Err(format!("{n}: clients must be at least 1"));
        }
        if self.qos > 2 {
            return Err(format!("{n}: qos {} is not 0, 1 or 2", self.qos));
        }
        if self.payload < STAMP_LEN || self.payload > 16 << 20 {
            return Err(format!("{n}: payload {} outside {STAMP_LEN}..=16777216 bytes (the stamp needs {STAMP_LEN})", self.payload));
        }
        self.version().map_err(|e| format!("{n}: {e}"))?;
        if self.mode == Mode::Rate && !(self.rate > 0.0 && self.rate <= 1e7) {
            return Err(format!(
                "{n}: rate {} must be in (0, 1e7] messages/s per publisher",
                self.rate
            ));
        }
        if self.window == 0 || self.window > 65_535 {
            return Err(format!("{n}: window {} outside 1..=65535", self.window));
        }
        if self.duration_s.is_nan()
            || self.duration_s <= 0.0
            || self.warmup_s < 0.0
            || self.drain_s < 0.0
        {
            return Err(format!(
                "{n}: duration_s must be > 0, warmup_s and drain_s >= 0"
            ));
        }
        if self.warmup_s + self.duration_s + self.drain_s > 24.0 * 3600.0 {
            return Err(format!("{n}: a run longer than a day is not a benchmark"));
        }
        if self.threads == 0 || self.threads > 64 {
            return Err(format!("{n}: threads {} outside 1..=64", self.threads));
        }
        Ok(())
    }

    /// Total connections the plan opens.
    pub fn connections(&self) -> u32 {
        let (p, s) = self.sizes();
        p + s
    }

    /// (publishers, subscribers) for the shape.
    fn sizes(&self) -> (u32, u32) {
        let or = |v: u32, d: u32| if v == 0 { d } else { v };
        match self.shape {
            Shape::FanIn => (self.clients, or(self.subscribers, 1)),
            Shape::FanOut => (or(self.publishers, 1), self.clients),
            Shape::P2p => (self.clients, self.clients),
            Shape::Iot => (self.clients, or(self.subscribers, 2).min(self.clients)),
        }
    }

    /// Expands the scenario into clients. `tag` makes client ids and topics unique to this run,
    /// so that nothing left over from an earlier run (a lingering session, a queued message)
    /// can be counted.
    pub fn plan(&self, tag: &str) -> Result<Plan, String> {
        self.validate()?;
        let (np, ns) = self.sizes();
        let root = format!("lg/{tag}");
        let mut subs: Vec<Vec<String>> = Vec::with_capacity(ns as usize);
        let mut topics: Vec<String> = Vec::with_capacity(np as usize);
        match self.shape {
            Shape::FanIn | Shape::FanOut => {
                let t = format!("{root}/{}", self.shape.name());
                subs.resize(ns as usize, vec![t.clone()]);
                topics.resize(np as usize, t);
            }
            Shape::P2p => {
                for i in 0..np {
                    let t = format!("{root}/p2p/{i}");
                    subs.push(vec![t.clone()]);
                    topics.push(t);
                }
            }
            Shape::Iot => {
                for g in 0..ns {
                    subs.push(vec![format!("{root}/iot/g{g}/+/telemetry")]);
                }
                for i in 0..np {
                    topics.push(format!("{root}/iot/g{}/d{i}/telemetry", i % ns));
                }
            }
        }
        let interval_ns = match self.mode {
            Mode::Rate => Some((NS_PER_SEC as f64 / self.rate).round().max(1.0) as u64),
            Mode::Max => None,
        };
        let mut clients = Vec::with_capacity((np + ns) as usize);
        for (j, filters) in subs.iter().enumerate() {
            clients.push(ClientSpec {
                client_id: format!("lg{tag}s{j}"),
                subscriptions: filters.clone(),
                publisher: None,
            });
        }
        let matching = MatchCount::new(subs.iter().flatten());
        let mut publishers = Vec::with_capacity(np as usize);
        for (i, topic) in topics.into_iter().enumerate() {
            let fanout = matching.count(&topic);
            let phase_ns = interval_ns.map_or(0, |iv| iv * i as u64 / np as u64);
            clients.push(ClientSpec {
                client_id: format!("lg{tag}p{i}"),
                subscriptions: Vec::new(),
                publisher: Some(i as u32),
            });
            publishers.push(PublisherSpec {
                topic,
                fanout,
                phase_ns,
            });
        }
        let pace = match interval_ns {
            Some(interval_ns) => Pace::Fixed { interval_ns },
            None => Pace::Max,
        };
        Ok(Plan {
            clients,
            publishers,
            pace,
        })
    }
}

impl Plan {
    /// Deliveries expected per message of every publisher, summed (for a sanity check).
    pub fn total_fanout(&self) -> u64 {
        self.publishers.iter().map(|p| p.fanout as u64).sum()
    }
}

/// How many of a plan's subscription filters match a topic. A suite plans every cell of every
/// repeat up front (for its ETA) and each run again: with 5,000 point-to-point pairs, matching
/// every topic against every filter is 25 million comparisons per plan, minutes for a suite.
/// Filters without wildcards (all of them in p2p, fan-in and fan-out) are counted in a map, so
/// a topic costs one lookup plus one match per wildcard filter (IoT's few group filters).
struct MatchCount<'a> {
    exact: HashMap<&'a str, u32>,
    wildcard: Vec<&'a str>,
}

impl<'a> MatchCount<'a> {
    fn new(filters: impl Iterator<Item = &'a String>) -> Self {
        let mut exact = HashMap::new();
        let mut wildcard = Vec::new();
        for f in filters {
            if f.contains(['+', '#']) {
                wildcard.push(f.as_str());
            } else {
                *exact.entry(f.as_str()).or_insert(0) += 1;
            }
        }
        MatchCount { exact, wildcard }
    }

    fn count(&self, topic: &str) -> u32 {
        let exact = self.exact.get(topic).copied().unwrap_or(0);
        let wild = self
            .wildcard
            .iter()
            .filter(|f| filter_matches(f, topic))
            .count() as u32;
        exact + wild
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sc(shape: Shape, clients: u32) -> Scenario {
        Scenario {
            name: "t".into(),
            shape,
            clients,
            ..Default::default()
        }
    }

    #[test]
    fn fan_in_sends_every_publisher_to_every_subscriber() {
        let s = Scenario {
            subscribers: 2,
            ..sc(Shape::FanIn, 5)
        };
        let p = s.plan("x").unwrap();
        assert_eq!(p.clients.len(), 7);
        assert_eq!(p.publishers.len(), 5);
        assert!(p.publishers.iter().all(|p| p.fanout == 2));
    }

    #[test]
    fn fan_out_defaults_to_one_publisher_for_all_subscribers() {
        let p = sc(Shape::FanOut, 50).plan("x").unwrap();
        assert_eq!(p.publishers.len(), 1);
        assert_eq!(p.publishers[0].fanout, 50);
        assert_eq!(p.clients.len(), 51);
    }

    #[test]
    fn p2p_gives_each_pair_its_own_topic() {
        let p = sc(Shape::P2p, 4).plan("x").unwrap();
        assert_eq!(p.clients.len(), 8);
        assert!(p.publishers.iter().all(|p| p.fanout == 1));
        let mut topics: Vec<_> = p.publishers.iter().map(|p| &p.topic).collect();
        topics.dedup();
        assert_eq!(topics.len(), 4);
    }

    #[test]
    fn iot_devices_reach_exactly_one_wildcard_backend() {
        let s = Scenario {
            subscribers: 3,
            ..sc(Shape::Iot, 10)
        };
        let p = s.plan("x").unwrap();
        assert_eq!(p.clients.len(), 13);
        assert!(p.publishers.iter().all(|p| p.fanout == 1));
        assert!(p
            .clients
            .iter()
            .any(|c| c.subscriptions.iter().any(|f| f.contains('+'))));
    }

    #[test]
    fn match_counts_agree_with_matching_every_filter() {
        let filters: Vec<String> = [
            "a/b",
            "a/b",
            "a/+",
            "a/#",
            "#",
            "+/b",
            "$SYS/x",
            "$share/g/a/b",
            "a/b/c",
            "+",
        ]
        .map(String::from)
        .to_vec();
        let counts = MatchCount::new(filters.iter());
        for topic in ["a/b", "a", "a/b/c", "x/b", "$SYS/x", "b", "/b", "a/c"] {
            let brute = filters.iter().filter(|f| filter_matches(f, topic)).count() as u32;
            assert_eq!(counts.count(topic), brute, "{topic}");
        }
        assert_eq!(counts.count("a/b"), 6, "two exact, a/+, a/#, #, +/b");
    }

    #[test]
    fn open_loop_publishers_are_spread_over_one_interval() {
        let s = Scenario {
            rate: 10.0,
            ..sc(Shape::P2p, 4)
        };
        let p = s.plan("x").unwrap();
        assert_eq!(
            p.pace,
            Pace::Fixed {
                interval_ns: 100_000_000
            }
        );
        let phases: Vec<u64> = p.publishers.iter().map(|p| p.phase_ns).collect();
        assert_eq!(phases, vec![0, 25_000_000, 50_000_000, 75_000_000]);
    }

    #[test]
    fn invalid_cells_are_refused_with_the_field_named() {
        let bad = Scenario {
            payload: 8,
            ..sc(Shape::P2p, 1)
        };
        assert!(bad.validate().unwrap_err().contains("payload"));
        let bad = Scenario {
            qos: 3,
            ..sc(Shape::P2p, 1)
        };
        assert!(bad.validate().unwrap_err().contains("qos"));
        let bad = Scenario {
            protocol: "4.0".into(),
            ..sc(Shape::P2p, 1)
        };
        assert!(bad.validate().unwrap_err().contains("protocol"));
        let bad = Scenario {
            rate: 0.0,
            ..sc(Shape::P2p, 1)
        };
        assert!(bad.validate().unwrap_err().contains("rate"));
    }

    #[test]
    fn client_ids_are_unique_within_a_run() {
        let p = Scenario {
            subscribers: 3,
            ..sc(Shape::FanIn, 20)
        }
        .plan("ab12")
        .unwrap();
        let mut ids: Vec<_> = p.clients.iter().map(|c| c.client_id.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), p.clients.len());
    }
}
