//! The figures mosquitto 2.0 publishes (`src/sys_tree.c`), under its names, so dashboards and
//! scripts written for mosquitto read midge unchanged.

use std::borrow::Cow;

use super::snapshot::Topic;
use crate::shard::stats::Stats;

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
    &["$SYS/broker/shared_subscriptions/count"],
    &[
        "$SYS/broker/store/messages/count",
        "$SYS/broker/messages/stored",
    ],
    &["$SYS/broker/store/messages/bytes"],
];

/// The number of topics [`counters`] yields.
#[cfg(test)]
pub(super) fn topic_count() -> usize {
    TOPICS.iter().map(|t| t.len()).sum()
}

/// Appends the counter topics of the tree for the broker-wide counters `s`; `maximum` is
/// the highest client count seen so far, raised here as mosquitto does.
pub(super) fn counters(s: &Stats, maximum: &mut u64, out: &mut Vec<(Topic, String)>) {
    // mosquitto: total = all client contexts (connected or holding a session), connected =
    // those with a socket, disconnected = the difference.
    let total = s.sessions.max(s.connections);
    *maximum = (*maximum).max(total);
    let figures = [
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
        s.shared_subscriptions,
        // mosquitto's message store: every message a client may still receive (retained,
        // queued, in flight), each once however many sessions hold it.
        s.store_messages,
        s.store_bytes,
    ];
    for (names, value) in TOPICS.iter().zip(figures) {
        for name in *names {
            out.push((Cow::Borrowed(name), value.to_string()));
        }
    }
}
