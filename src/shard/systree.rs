//! The `$SYS/broker/...` tree, named topic for topic as mosquitto 2.0 (`src/sys_tree.c`)
//! publishes it, so that dashboards and scripts written for mosquitto read midge unchanged.
//!
//! One shard (shard 0) publishes it, at its tick, every `sys_interval` seconds: `version` once,
//! `uptime` every time, every other figure only when it changed since the last time (as
//! mosquitto does). The figures are the per-shard counters ([`super::stats`]) summed by
//! [`super::Shared::stats`]: nothing here runs per message. Each topic is a retained QoS 2
//! message routed like a client's publish (so subscribers on every shard receive it and the
//! ACL read check applies) but kept out of the store: it describes this run only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::stats::Stats;
use super::Shard;
use crate::message::Message;
use crate::protocol::{ByteStr, QoS};

/// The shard that publishes the tree.
const PUBLISHER: usize = 0;

/// Each figure and the topics mosquitto publishes it under (an alias shares its figure).
const TOPICS: &[&[&str]] = &[
    &["$SYS/broker/clients/total"],
    &["$SYS/broker/clients/maximum"],
    &[
        "$SYS/broker/clients/connected",
        "$SYS/broker/clients/active",
    ],
    &[
        "$SYS/broker/clients/disconnected",
        "$SYS/broker/clients/inactive",
    ],
    &["$SYS/broker/clients/expired"],
    &["$SYS/broker/messages/received"],
    &["$SYS/broker/messages/sent"],
    &["$SYS/broker/publish/messages/received"],
    &["$SYS/broker/publish/messages/sent"],
    &["$SYS/broker/publish/messages/dropped"],
    &["$SYS/broker/publish/bytes/received"],
    &["$SYS/broker/publish/bytes/sent"],
    &["$SYS/broker/bytes/received"],
    &["$SYS/broker/bytes/sent"],
    &["$SYS/broker/subscriptions/count"],
    &["$SYS/broker/retained messages/count"],
];

/// The figures of [`TOPICS`], in its order, from the broker-wide counters and the highest
/// client count seen so far (`maximum`, updated here as mosquitto does).
fn figures(s: &Stats, maximum: &mut u64) -> [u64; 16] {
    // mosquitto: total = all client contexts (connected or holding a session), connected =
    // those with a socket, disconnected = the difference.
    let total = s.sessions.max(s.connections);
    *maximum = (*maximum).max(total);
    [
        total,
        *maximum,
        s.connections,
        total - s.connections,
        s.sessions_expired,
        s.packets_in,
        s.packets_out,
        s.messages_in,
        s.messages_out,
        s.publishes_dropped,
        s.publish_bytes_in,
        s.publish_bytes_out,
        s.bytes_in,
        s.bytes_out,
        s.subscriptions,
        s.retained,
    ]
}

/// When the tree is next due and what it last said.
#[derive(Debug)]
pub(crate) struct SysTree {
    /// `None`: this shard does not publish (not the publisher, or `sys_interval 0`).
    interval: Option<Duration>,
    started: Instant,
    next_at: Instant,
    version_sent: bool,
    maximum: u64,
    /// The figures last published, `None` before the first publication.
    last: Option<[u64; 16]>,
}

impl SysTree {
    /// The tree as shard `shard` keeps it, with `sys_interval` seconds between publications.
    pub(crate) fn new(shard: usize, sys_interval: u16, now: Instant) -> SysTree {
        let interval = (shard == PUBLISHER && sys_interval > 0)
            .then(|| Duration::from_secs(u64::from(sys_interval)));
        SysTree {
            interval,
            started: now,
            next_at: now,
            version_sent: false,
            maximum: 0,
            last: None,
        }
    }

    /// The topics and payloads due at `now` with broker-wide counters `stats` (nothing when
    /// not due), and the next time set.
    fn due(&mut self, now: Instant, stats: impl FnOnce() -> Stats) -> Vec<(&'static str, String)> {
        let Some(interval) = self.interval else {
            return Vec::new();
        };
        if now < self.next_at {
            return Vec::new();
        }
        self.next_at = now + interval;
        let mut out = Vec::new();
        if !self.version_sent {
            self.version_sent = true;
            let version = concat!("midge ", env!("CARGO_PKG_VERSION"));
            out.push(("$SYS/broker/version", version.to_string()));
        }
        let uptime = now.saturating_duration_since(self.started).as_secs();
        out.push(("$SYS/broker/uptime", format!("{uptime} seconds")));
        let now_figures = figures(&stats(), &mut self.maximum);
        for (i, value) in now_figures.iter().enumerate() {
            if self.last.is_some_and(|last| last[i] == *value) {
                continue;
            }
            for topic in TOPICS[i] {
                out.push((topic, value.to_string()));
            }
        }
        self.last = Some(now_figures);
        out
    }
}

impl Shard {
    /// Publishes the `$SYS` tree when it is due (shard thread only; a cheap comparison when
    /// it is not).
    pub(crate) fn sys_tree_tick(&mut self, now: Instant) {
        if self.id == PUBLISHER && self.shared.config.log_dest.topic {
            self.publish_log_lines();
        }
        let shared = self.shared.clone();
        let due = self.sys_tree.due(now, || shared.stats());
        for (topic, payload) in due {
            let msg = Arc::new(Message {
                topic: ByteStr::from_static(topic),
                payload: Bytes::from(payload),
                qos: QoS::ExactlyOnce,
                retain: true,
                properties: Default::default(),
                expires_at: None,
                origin: None,
            });
            if self.shared.config.retain_available {
                // The retained store only, never the persistent store: figures of this run.
                self.shared.retained.set(&msg);
            }
            // Not `message_in`: the broker's own messages are not counted as received.
            self.route(msg);
        }
    }
}

impl Shard {
    /// `log_dest topic`: the lines logged since the last tick, each a QoS 0 message on
    /// mosquitto's `$SYS/broker/log/...` topic for its kind (not retained, as mosquitto).
    fn publish_log_lines(&mut self) {
        for line in crate::logging::take_topic_lines() {
            self.route(Arc::new(Message {
                topic: ByteStr::from_static(line.topic),
                payload: Bytes::from(line.payload),
                qos: QoS::AtMostOnce,
                retain: false,
                properties: Default::default(),
                expires_at: None,
                origin: None,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(out: &[(&'static str, String)]) -> Vec<&'static str> {
        out.iter().map(|(t, _)| *t).collect()
    }

    #[test]
    fn only_the_publisher_with_an_interval_publishes() {
        let now = Instant::now();
        assert!(SysTree::new(1, 10, now).due(now, Stats::default).is_empty());
        assert!(SysTree::new(0, 0, now).due(now, Stats::default).is_empty());
        assert!(!SysTree::new(0, 10, now).due(now, Stats::default).is_empty());
    }

    #[test]
    fn version_once_uptime_always_the_rest_when_changed() {
        let t0 = Instant::now();
        let mut tree = SysTree::new(0, 1, t0);
        let first = tree.due(t0, Stats::default);
        let names = topics(&first);
        assert_eq!(names[0], "$SYS/broker/version");
        assert!(names.contains(&"$SYS/broker/retained messages/count"));
        assert!(names.contains(&"$SYS/broker/clients/active"));
        assert_eq!(
            first.len(),
            2 + TOPICS.iter().map(|t| t.len()).sum::<usize>()
        );
        assert!(tree
            .due(t0 + Duration::from_millis(500), Stats::default)
            .is_empty());
        let stats = || Stats {
            messages_in: 3,
            ..Stats::default()
        };
        let second = tree.due(t0 + Duration::from_secs(2), stats);
        assert_eq!(
            second,
            vec![
                ("$SYS/broker/uptime", "2 seconds".to_string()),
                ("$SYS/broker/publish/messages/received", "3".to_string()),
            ]
        );
    }

    #[test]
    fn clients_split_into_connected_and_disconnected_and_maximum_holds() {
        let t0 = Instant::now();
        let mut tree = SysTree::new(0, 1, t0);
        let stats = Stats {
            sessions: 5,
            connections: 3,
            ..Stats::default()
        };
        let out = tree.due(t0, || stats);
        let get = |out: &[(&str, String)], t: &str| {
            out.iter().find(|(n, _)| *n == t).map(|(_, v)| v.clone())
        };
        assert_eq!(get(&out, "$SYS/broker/clients/total").unwrap(), "5");
        assert_eq!(get(&out, "$SYS/broker/clients/inactive").unwrap(), "2");
        assert_eq!(get(&out, "$SYS/broker/clients/connected").unwrap(), "3");
        let out = tree.due(t0 + Duration::from_secs(1), || Stats {
            sessions: 1,
            connections: 1,
            ..Stats::default()
        });
        assert_eq!(get(&out, "$SYS/broker/clients/total").unwrap(), "1");
        assert_eq!(get(&out, "$SYS/broker/clients/maximum"), None);
    }
}
