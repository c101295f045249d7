//! The whole `$SYS` tree as one value: every topic with its current value plus the per-shard
//! figures behind it. Shard 0 computes it (at each publication, and about once a second while
//! some other thread reads it) and stores it in `Shared` behind one lock taken once per
//! computation, so readers on other threads (the metrics endpoint, tests) never touch a
//! shard's counters and nothing on the message path takes a lock.

use std::borrow::Cow;

use crate::shard::stats::Stats;

/// A topic of the tree: most are fixed names, the per-shard ones are built.
pub type Topic = Cow<'static, str>;

/// One shard's figures at the time of a snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShardFigures {
    /// The shard's counters as of its last tick.
    pub stats: Stats,
    /// PUBLISH packets received from clients per second, since the previous snapshot.
    pub messages_per_sec: f64,
    /// Fraction (0..=1) of wall-clock time the shard's loop spent working rather than waiting
    /// in `poll`, since the previous snapshot.
    pub busy: f64,
    /// Mean time from handing a turn's batch to the store to its being durable, in
    /// microseconds, since the previous snapshot (`None`: no commit in that time, or no
    /// persistence).
    pub commit_latency_us: Option<f64>,
}

/// The `$SYS` tree at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SysSnapshot {
    /// Whole seconds since the broker started.
    pub uptime: u64,
    /// Every topic of the tree with its value, in publication order (the values are what a
    /// `$SYS` subscriber would receive, e.g. `"12 seconds"`, `"0.75"`).
    pub topics: Vec<(Topic, String)>,
    /// The counters of all shards summed (with the retained count).
    pub total: Stats,
    /// Each shard's figures, by shard id.
    pub shards: Vec<ShardFigures>,
}

impl SysSnapshot {
    /// The value of `topic` (a full name, `$SYS/broker/...`), if the tree has it.
    pub fn get(&self, topic: &str) -> Option<&str> {
        self.topics
            .iter()
            .find(|(t, _)| t == topic)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_finds_a_topic_by_its_full_name() {
        let snap = SysSnapshot {
            topics: vec![
                (Cow::Borrowed("$SYS/broker/uptime"), "3 seconds".into()),
                (
                    Cow::Owned("$SYS/broker/midge/shard/0/connections".into()),
                    "2".into(),
                ),
            ],
            ..SysSnapshot::default()
        };
        assert_eq!(snap.get("$SYS/broker/uptime"), Some("3 seconds"));
        assert_eq!(snap.get("$SYS/broker/midge/shard/0/connections"), Some("2"));
        assert_eq!(snap.get("$SYS/broker/nothing"), None);
    }
}
