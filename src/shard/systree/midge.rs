//! midge's own figures, under `$SYS/broker/midge/...`: what mosquitto's single loop has no
//! name for, per shard (`$SYS/broker/midge/shard/N/...`).
//!
//! | topic (after `shard/N/`) | value |
//! |---|---|
//! | `connections` | client connections open on the shard now |
//! | `messages/per_second` | PUBLISH packets received per second since the last computation |
//! | `loop/busy` | fraction (0..1) of that time the loop spent working rather than in `poll` |
//! | `cross_shard/sent`, `cross_shard/received` | items exchanged with other shards, total |
//! | `cross_shard/handoffs` | turns the shard ran for a sleeping shard it had sent something to, instead of waking it (see `shard::handoff`), total |
//! | `dormancy/hosted_turns`, `dormancy/dozes` | turns the shard ran for a dormant shard, and times it went dormant itself, totals (see `shard::dormancy`) |
//! | `publish/dropped_qos0` | QoS 0 deliveries dropped for slow consumers, total |
//! | `queued/messages`, `queued/bytes` | messages (and payload bytes) waiting in the queues of the sessions homed on the shard, now |
//! | `store/commit_latency_us` | with persistence: mean time from submitting a turn to its being durable, over the commits measured since the last computation (the last value when there were none) |

use std::borrow::Cow;

use super::snapshot::{ShardFigures, Topic};

/// Appends the per-shard topics of `shards`; `persistence`: the store's latency is included.
pub(super) fn topics(shards: &[ShardFigures], persistence: bool, out: &mut Vec<(Topic, String)>) {
    out.push((
        Cow::Borrowed("$SYS/broker/midge/shards"),
        shards.len().to_string(),
    ));
    for (i, f) in shards.iter().enumerate() {
        let s = &f.stats;
        let mut put = |name: &str, value: String| {
            out.push((
                Cow::Owned(format!("$SYS/broker/midge/shard/{i}/{name}")),
                value,
            ));
        };
        put("connections", s.connections.to_string());
        put("messages/per_second", format!("{:.2}", f.messages_per_sec));
        put("loop/busy", format!("{:.3}", f.busy));
        put("cross_shard/sent", s.cross_shard_out.to_string());
        put("cross_shard/received", s.cross_shard_in.to_string());
        put("cross_shard/handoffs", s.handoffs.to_string());
        put("dormancy/hosted_turns", s.hosted_turns.to_string());
        put("dormancy/dozes", s.dozes.to_string());
        put("publish/dropped_qos0", s.qos0_dropped.to_string());
        put("queued/messages", s.queued_messages.to_string());
        put("queued/bytes", s.queued_bytes.to_string());
        if persistence {
            let latency = f.commit_latency_us.unwrap_or(0.0);
            put("store/commit_latency_us", format!("{latency:.0}"));
        }
    }
}
