//! The `$SYS/broker/...` tree: mosquitto 2.0's topics ([`mosquitto`], its load averages in
//! [`load`]), midge's own per-shard figures ([`midge`]) and a snapshot of the whole tree for
//! other threads ([`snapshot`]).
//!
//! One shard (shard 0) computes it, at its tick: every `sys_interval` seconds it publishes
//! `version` once, `uptime` every time and every other topic only when its value changed since
//! the last publication (as mosquitto does); in between, while a reader asks for snapshots
//! ([`Shared::sys_snapshot`](crate::shard::Shared::sys_snapshot)), it refreshes the snapshot
//! once a second without publishing. The figures are the per-shard counters
//! ([`super::stats`]) as each shard last published them: nothing here runs per message. Each
//! topic is a retained QoS 2 message routed like a client's publish (so subscribers on every
//! shard receive it and the ACL read check applies) but kept out of the store: it describes
//! this run only. Each but `version` expires after 60 s, as mosquitto's: a retained value
//! that stopped being refreshed is not served for ever.

mod load;
mod midge;
mod mosquitto;
pub mod snapshot;
pub(crate) mod store_count;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::stats::Stats;
use super::Shard;
use crate::message::Message;
use crate::protocol::{ByteStr, QoS};
use snapshot::{ShardFigures, SysSnapshot, Topic};

/// The shard that computes and publishes the tree.
const PUBLISHER: usize = 0;

/// The Message Expiry Interval of every topic but `version` (mosquitto's `sys_tree.c`
/// queues them with 60): a value not published again within it (unchanged, or the tree
/// turned off) is no longer retained, and MQTT 5 subscribers see how long it has left.
const EXPIRY: Duration = Duration::from_secs(60);

/// The Message Expiry Interval of the `$SYS/broker/log/...` lines (mosquitto's `logging.c`).
const LOG_EXPIRY: Duration = Duration::from_secs(20);

/// The topic published once, at start, without an expiry (as mosquitto does).
const VERSION: &str = "$SYS/broker/version";

/// How often the snapshot is refreshed between publications while someone reads it.
const REFRESH: Duration = Duration::from_secs(1);

/// How long after a reader's last request the refreshes go on (a scraper that asks at least
/// this often always finds a snapshot at most [`REFRESH`] plus one tick old).
const ASKED_FOR: Duration = Duration::from_secs(60);

/// The tree's schedule and what it last said.
#[derive(Debug)]
pub(crate) struct SysTree {
    /// This shard computes the tree (whether or not it publishes it).
    publisher: bool,
    /// Persistence is on (the store's commit latency is part of the tree).
    persistence: bool,
    /// When this shard next counts its queued and in-flight messages (every shard does, see
    /// `Shard::count_gauges`).
    pub(crate) gauges_due: Instant,
    /// That count's walk over the messages held, for the distinct store count.
    pub(crate) held: store_count::HeldScan,
    /// Scratch for merging every shard's list of messages held by more than one holder.
    merge: Vec<(usize, u64)>,
    /// mosquitto's load averages: updated at each publication (or, with `sys_interval 0`,
    /// at each computation).
    loads: load::Loads,
    /// Each shard's last measured commit latency (kept when no commit was measured since).
    latency: Vec<Option<f64>>,
    /// Time between publications; `None`: `sys_interval 0`, nothing is published.
    interval: Option<Duration>,
    started: Instant,
    next_publish: Instant,
    /// When the snapshot was last computed, and when a reader last asked for one.
    refreshed_at: Option<Instant>,
    asked_at: Option<Instant>,
    /// The highest client count seen (mosquitto's `clients/maximum`).
    maximum: u64,
    /// Each shard's counters at the previous computation, for per-second figures.
    previous: Option<(Instant, Vec<Stats>)>,
    /// The topics and values last published, in tree order.
    published: Vec<(Topic, String)>,
}

/// The broker-wide figures of the message store that no shard's counters hold.
#[derive(Debug, Clone, Copy, Default)]
struct Store {
    /// Retained messages and their payload bytes.
    retained: (u64, u64),
    /// Distinct messages (and bytes) held by sessions that may have other holders too, not
    /// retained (see [`store_count`]).
    held_by_many: (u64, u64),
}

/// What is due at a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    Nothing,
    /// Compute the snapshot only.
    Refresh,
    /// Compute the snapshot and publish what changed.
    Publish,
}

impl SysTree {
    /// The tree as shard `shard` keeps it, with `sys_interval` seconds between publications.
    pub(crate) fn new(shard: usize, sys_interval: u16, persistence: bool, now: Instant) -> SysTree {
        SysTree {
            publisher: shard == PUBLISHER,
            persistence,
            gauges_due: now,
            held: Default::default(),
            merge: Vec::new(),
            loads: load::Loads::default(),
            latency: Vec::new(),
            interval: interval(sys_interval),
            started: now,
            next_publish: now,
            refreshed_at: None,
            asked_at: None,
            maximum: 0,
            previous: None,
            published: Vec::new(),
        }
    }

    /// What is due at `now`; `asked`: a reader asked for a snapshot since the last tick.
    fn due(&mut self, now: Instant, asked: bool) -> Due {
        if !self.publisher {
            return Due::Nothing;
        }
        if asked {
            self.asked_at = Some(now);
        }
        if self.interval.is_some() && now >= self.next_publish {
            return Due::Publish;
        }
        let wanted = self
            .asked_at
            .is_some_and(|at| now.saturating_duration_since(at) < ASKED_FOR);
        // The first computation happens at once, so a reader never finds an empty tree after
        // the first tick.
        match self.refreshed_at {
            None => Due::Refresh,
            Some(at) if wanted && now.saturating_duration_since(at) >= REFRESH => Due::Refresh,
            Some(_) => Due::Nothing,
        }
    }

    /// The whole tree at `now` from each shard's counters `shards` and the broker-wide
    /// figures `store`; `publish`: this computation is a publication.
    fn compute(
        &mut self,
        now: Instant,
        shards: Vec<Stats>,
        store: Store,
        publish: bool,
    ) -> SysSnapshot {
        self.refreshed_at = Some(now);
        let mut total = Stats::default();
        shards.iter().for_each(|s| total.add(s));
        (total.retained, total.retained_bytes) = store.retained;
        total.store_messages = total.retained + total.held_alone_messages + store.held_by_many.0;
        total.store_bytes = total.retained_bytes + total.held_alone_bytes + store.held_by_many.1;
        if publish || self.interval.is_none() {
            self.loads.update(now, &total);
        }
        let uptime = now.saturating_duration_since(self.started).as_secs();
        let version = concat!("midge ", env!("CARGO_PKG_VERSION"));
        let mut topics: Vec<(Topic, String)> = vec![
            (Cow::Borrowed(VERSION), version.to_string()),
            (
                Cow::Borrowed("$SYS/broker/uptime"),
                format!("{uptime} seconds"),
            ),
        ];
        mosquitto::counters(&total, &mut self.maximum, &mut topics);
        self.loads.topics(&mut topics);
        let figures = self.shard_figures(now, &shards);
        midge::topics(&figures, self.persistence, &mut topics);
        self.previous = Some((now, shards));
        SysSnapshot {
            uptime,
            topics,
            total,
            shards: figures,
        }
    }

    /// Each shard's figures, with rates over the time since the previous computation.
    fn shard_figures(&mut self, now: Instant, shards: &[Stats]) -> Vec<ShardFigures> {
        self.latency.resize(shards.len(), None);
        shards
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let before = self
                    .previous
                    .as_ref()
                    .and_then(|(at, p)| Some((now.saturating_duration_since(*at), p.get(i)?)));
                let per_sec = |f: fn(&Stats) -> u64| match before {
                    Some((dt, p)) if !dt.is_zero() => {
                        f(s).saturating_sub(f(p)) as f64 / dt.as_secs_f64()
                    }
                    _ => 0.0,
                };
                let commits = before.map_or(s.store_commits, |(_, p)| {
                    s.store_commits.saturating_sub(p.store_commits)
                });
                if commits > 0 {
                    let nanos = before.map_or(s.store_commit_nanos, |(_, p)| {
                        s.store_commit_nanos.saturating_sub(p.store_commit_nanos)
                    });
                    self.latency[i] = Some(nanos as f64 / commits as f64 / 1000.0);
                }
                ShardFigures {
                    stats: *s,
                    messages_per_sec: per_sec(|s| s.messages_in),
                    busy: (per_sec(|s| s.busy_nanos) / 1e9).min(1.0),
                    commit_latency_us: self.latency[i],
                }
            })
            .collect()
    }

    /// The topics of `snap` to publish: those whose value changed since the last publication
    /// (`version` therefore once, `uptime` every time).
    fn changed(&mut self, snap: &SysSnapshot) -> Vec<(Topic, String)> {
        // The tree keeps its order from one computation to the next, so compare by position.
        let out: Vec<(Topic, String)> = snap
            .topics
            .iter()
            .enumerate()
            .filter(|(i, new)| self.published.get(*i) != Some(*new))
            .map(|(_, new)| new.clone())
            .collect();
        self.published.clone_from(&snap.topics);
        out
    }

    /// A new `sys_interval` (reload): the next publication is due one new interval after the
    /// last one, or at once if that is already past.
    pub(crate) fn set_interval(&mut self, sys_interval: u16, now: Instant) {
        let new = interval(sys_interval);
        if new == self.interval {
            return;
        }
        let last = self
            .interval
            .map_or(now, |old| self.next_publish.checked_sub(old).unwrap_or(now));
        self.interval = new;
        self.next_publish = new.map_or(now, |i| (last + i).min(now + i));
    }
}

/// `sys_interval` seconds as a publication interval (`None` for 0: off).
fn interval(sys_interval: u16) -> Option<Duration> {
    (sys_interval > 0).then(|| Duration::from_secs(u64::from(sys_interval)))
}

impl Shard {
    /// Computes the tree when it is due, stores the snapshot in `Shared` and publishes what
    /// changed (shard thread only; a cheap comparison when nothing is due).
    pub(crate) fn sys_tree_tick(&mut self, now: Instant) {
        if self.sys_tree.publisher {
            self.publish_log_lines();
        }
        let due = self.sys_tree.due(
            now,
            self.sys_tree.publisher && self.shared.sys_snapshot_asked(),
        );
        if due == Due::Nothing {
            return;
        }
        let (retained, retained_bytes) = self.shared.retained.len_and_bytes();
        let store = Store {
            retained: (retained as u64, retained_bytes as u64),
            held_by_many: self.shared.held_by_many.distinct(&mut self.sys_tree.merge),
        };
        let snap =
            self.sys_tree
                .compute(now, self.shared.shard_stats(), store, due == Due::Publish);
        let publish = (due == Due::Publish).then(|| self.sys_tree.changed(&snap));
        if let Some(interval) = self.sys_tree.interval.filter(|_| publish.is_some()) {
            self.sys_tree.next_publish = now + interval;
        }
        self.shared.set_sys_snapshot(Arc::new(snap));
        for (topic, payload) in publish.into_iter().flatten() {
            let expires_at = (topic != VERSION).then(|| now + EXPIRY);
            let topic = match topic {
                Cow::Borrowed(t) => ByteStr::from_static(t),
                Cow::Owned(t) => ByteStr::from(t),
            };
            let msg = Arc::new(Message {
                topic,
                payload: Bytes::from(payload),
                qos: QoS::ExactlyOnce,
                retain: true,
                properties: Default::default(),
                expires_at,
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

    /// `log_dest topic`: the lines logged since the last tick, each a QoS 0 message on
    /// mosquitto's `$SYS/broker/log/...` topic for its kind (not retained, as mosquitto). The
    /// queue is empty (one uncontended lock per tick) unless `log_dest topic` is configured.
    fn publish_log_lines(&mut self) {
        for line in crate::logging::take_topic_lines() {
            self.route(Arc::new(Message {
                topic: ByteStr::from_static(line.topic),
                payload: Bytes::from(line.payload),
                qos: QoS::AtMostOnce,
                retain: false,
                properties: Default::default(),
                expires_at: Some(Instant::now() + LOG_EXPIRY),
                origin: None,
            }));
        }
    }
}

#[cfg(test)]
mod tests;
