//! The Prometheus text exposition format, version 0.0.4: `# HELP` and `# TYPE` before each
//! family, counters named `_total`, a `shard` label on every per-shard series (sum them in
//! the query: `sum(rate(midge_messages_received_total[1m]))`).

use std::fmt::Write as _;

use crate::shard::stats::{Stats, ROUTE_BUCKETS_NS, ROUTE_SAMPLE_EVERY};
use crate::shard::systree::snapshot::ShardFigures;

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One per-shard family: name, type, help and how to read it from a shard's counters.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&Stats) -> u64,
}

const fn counter(name: &'static str, help: &'static str, value: fn(&Stats) -> u64) -> Family {
    Family {
        name,
        kind: "counter",
        help,
        value,
    }
}

const fn gauge(name: &'static str, help: &'static str, value: fn(&Stats) -> u64) -> Family {
    Family {
        name,
        kind: "gauge",
        help,
        value,
    }
}

const PER_SHARD: &[Family] = &[
    gauge("midge_connections", "Client connections open now.", |s| {
        s.connections
    }),
    gauge(
        "midge_sessions",
        "Sessions homed on the shard, connected or not.",
        |s| s.sessions,
    ),
    gauge(
        "midge_subscriptions",
        "Subscriptions held by the sessions homed on the shard.",
        |s| s.subscriptions,
    ),
    gauge(
        "midge_shared_subscriptions",
        "Shared subscriptions ($share/...) held by the sessions homed on the shard.",
        |s| s.shared_subscriptions,
    ),
    gauge(
        "midge_queued_messages",
        "Messages waiting in the queues of the sessions homed on the shard (counted about once a second).",
        |s| s.queued_messages,
    ),
    gauge(
        "midge_queued_bytes",
        "Payload bytes of midge_queued_messages.",
        |s| s.queued_bytes,
    ),
    gauge(
        "midge_inflight_messages",
        "QoS 1/2 messages sent and not yet acknowledged, sessions homed on the shard.",
        |s| s.inflight_messages,
    ),
    gauge(
        "midge_inflight_bytes",
        "Payload bytes of midge_inflight_messages.",
        |s| s.inflight_bytes,
    ),
    counter(
        "midge_sockets_accepted_total",
        "Sockets accepted from the MQTT listeners.",
        |s| s.sockets_accepted,
    ),
    counter(
        "midge_connects_total",
        "CONNECT packets received.",
        |s| s.connects,
    ),
    counter(
        "midge_sessions_expired_total",
        "Sessions ended because their expiry interval ran out.",
        |s| s.sessions_expired,
    ),
    counter(
        "midge_messages_received_total",
        "PUBLISH packets received from clients, wills included.",
        |s| s.messages_in,
    ),
    counter(
        "midge_messages_sent_total",
        "PUBLISH packets written to clients.",
        |s| s.messages_out,
    ),
    counter(
        "midge_packets_received_total",
        "MQTT packets of any type received from clients.",
        |s| s.packets_in,
    ),
    counter(
        "midge_packets_sent_total",
        "MQTT packets of any type written to clients.",
        |s| s.packets_out,
    ),
    counter(
        "midge_publish_bytes_received_total",
        "Payload bytes of the PUBLISH packets received.",
        |s| s.publish_bytes_in,
    ),
    counter(
        "midge_publish_bytes_sent_total",
        "Payload bytes of the PUBLISH packets sent.",
        |s| s.publish_bytes_out,
    ),
    counter(
        "midge_bytes_received_total",
        "Bytes read from client sockets.",
        |s| s.bytes_in,
    ),
    counter(
        "midge_bytes_sent_total",
        "Bytes written to client sockets.",
        |s| s.bytes_out,
    ),
    counter(
        "midge_publishes_dropped_total",
        "Deliveries dropped: a full queue, memory_limit, a slow QoS 0 consumer.",
        |s| s.publishes_dropped,
    ),
    counter(
        "midge_qos0_dropped_total",
        "QoS 0 deliveries dropped for a slow consumer (also in midge_publishes_dropped_total).",
        |s| s.qos0_dropped,
    ),
    counter(
        "midge_store_commits_measured_total",
        "Store commits whose latency was measured (one in flight at a time is sampled).",
        |s| s.store_commits,
    ),
    counter(
        "midge_cross_shard_sent_total",
        "Items sent to other shards (deliveries, subscription updates, persistence progress).",
        |s| s.cross_shard_out,
    ),
    counter(
        "midge_cross_shard_received_total",
        "Items received from other shards.",
        |s| s.cross_shard_in,
    ),
    counter(
        "midge_shard_handoffs_total",
        "Turns the shard ran for a sleeping shard it had sent messages to, instead of waking it.",
        |s| s.handoffs,
    ),
    counter(
        "midge_shard_hosted_turns_total",
        "Turns the shard ran for a dormant shard (under low load one loop serves every shard).",
        |s| s.hosted_turns,
    ),
    counter(
        "midge_shard_dozes_total",
        "Times the shard went dormant, its turns run by the first shard.",
        |s| s.dozes,
    ),
];

/// Per-shard counters kept in nanoseconds, exposed in seconds.
const PER_SHARD_SECONDS: &[Family] = &[
    counter(
        "midge_loop_busy_seconds_total",
        "Time the shard's loop spent working rather than waiting in poll (rate() = busy fraction).",
        |s| s.busy_nanos,
    ),
    counter(
        "midge_store_commit_seconds_total",
        "Sum of the measured store commits' latencies, submission to durable.",
        |s| s.store_commit_nanos,
    ),
];

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The whole scrape: each shard's counters (`shards`, by shard id), the figures of the last
/// `$SYS` computation (`figures`, by shard id), the broker-wide counters (`total`, whose
/// `retained` and `route` are the broker's), the uptime, and the shards' kernel interface
/// (`io_backend`: what `auto` chose is worth seeing).
pub fn render(
    shards: &[Stats],
    figures: &[ShardFigures],
    total: &Stats,
    uptime_secs: u64,
    io_backend: &str,
) -> String {
    let mut out = String::with_capacity(4096 + shards.len() * 1024);
    header(
        &mut out,
        "midge_build_info",
        "gauge",
        "The running midge's version and the shards' kernel interface (always 1).",
    );
    let _ = writeln!(
        out,
        "midge_build_info{{version=\"{}\",io_backend=\"{io_backend}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    header(
        &mut out,
        "midge_uptime_seconds",
        "gauge",
        "Seconds since the broker started.",
    );
    let _ = writeln!(out, "midge_uptime_seconds {uptime_secs}");
    for f in PER_SHARD {
        header(&mut out, f.name, f.kind, f.help);
        for (id, s) in shards.iter().enumerate() {
            let _ = writeln!(out, "{}{{shard=\"{id}\"}} {}", f.name, (f.value)(s));
        }
    }
    for f in PER_SHARD_SECONDS {
        header(&mut out, f.name, f.kind, f.help);
        for (id, s) in shards.iter().enumerate() {
            let secs = (f.value)(s) as f64 / 1e9;
            let _ = writeln!(out, "{}{{shard=\"{id}\"}} {secs:e}", f.name);
        }
    }
    shard_figures(&mut out, figures);
    header(
        &mut out,
        "midge_retained_messages",
        "gauge",
        "Retained messages held, broker-wide.",
    );
    let _ = writeln!(out, "midge_retained_messages {}", total.retained);
    header(
        &mut out,
        "midge_retained_bytes",
        "gauge",
        "Payload bytes of the retained messages, broker-wide.",
    );
    let _ = writeln!(out, "midge_retained_bytes {}", total.retained_bytes);
    route_histogram(&mut out, total);
    out
}

/// The loop's busy fraction and the store's commit latency, per shard (a shard with no
/// commit in the last interval, or no persistence, has no latency series).
fn shard_figures(out: &mut String, figures: &[ShardFigures]) {
    header(
        out,
        "midge_loop_busy_ratio",
        "gauge",
        "Fraction of time the shard's loop worked rather than waited, over the last second.",
    );
    for (id, f) in figures.iter().enumerate() {
        let _ = writeln!(out, "midge_loop_busy_ratio{{shard=\"{id}\"}} {}", f.busy);
    }
    header(
        out,
        "midge_store_commit_latency_seconds",
        "gauge",
        "Mean time from a turn's store batch to its being durable, over the last second.",
    );
    for (id, f) in figures.iter().enumerate() {
        if let Some(us) = f.commit_latency_us {
            let _ = writeln!(
                out,
                "midge_store_commit_latency_seconds{{shard=\"{id}\"}} {:e}",
                us / 1e6
            );
        }
    }
}

/// `midge_route_seconds`: the sampled routing times of all shards, cumulative buckets.
fn route_histogram(out: &mut String, total: &Stats) {
    let name = "midge_route_seconds";
    let help = format!(
        "Time to route one published message (index match, local deliveries, cross-shard \
         hand-off), one message in {ROUTE_SAMPLE_EVERY} sampled."
    );
    header(out, name, "histogram", &help);
    let r = &total.route;
    let mut cumulative = 0;
    for (bound, n) in ROUTE_BUCKETS_NS.iter().zip(&r.buckets) {
        cumulative += n;
        let le = *bound as f64 / 1e9;
        let _ = writeln!(out, "{name}_bucket{{le=\"{le:e}\"}} {cumulative}");
    }
    // The +Inf bucket is the count: every sample falls in it.
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", r.count);
    let _ = writeln!(out, "{name}_sum {:e}", r.sum_ns as f64 / 1e9);
    let _ = writeln!(out, "{name}_count {}", r.count);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_family_has_help_type_and_a_series_per_shard() {
        let mut a = Stats {
            messages_in: 7,
            connections: 2,
            ..Stats::default()
        };
        a.route.record(300);
        let b = Stats {
            messages_in: 1,
            ..Stats::default()
        };
        a.busy_nanos = 1_500_000_000;
        let mut total = a;
        total.retained = 4;
        let figures = [
            ShardFigures {
                busy: 0.25,
                commit_latency_us: Some(1500.0),
                ..ShardFigures::default()
            },
            ShardFigures::default(),
        ];
        let text = render(&[a, b], &figures, &total, 12, "io_uring");
        assert!(
            text.contains(&format!(
                "midge_build_info{{version=\"{}\",io_backend=\"io_uring\"}} 1\n",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        assert!(
            text.contains("midge_loop_busy_ratio{shard=\"0\"} 0.25\n"),
            "{text}"
        );
        assert!(
            text.contains("midge_loop_busy_ratio{shard=\"1\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("midge_store_commit_latency_seconds{shard=\"0\"} 1.5e-3\n"));
        assert!(!text.contains("midge_store_commit_latency_seconds{shard=\"1\"}"));
        assert!(text.contains("# TYPE midge_messages_received_total counter\n"));
        assert!(text.contains("midge_messages_received_total{shard=\"0\"} 7\n"));
        assert!(text.contains("midge_messages_received_total{shard=\"1\"} 1\n"));
        assert!(text.contains("midge_connections{shard=\"0\"} 2\n"));
        assert!(text.contains("midge_retained_messages 4\n"));
        assert!(
            text.contains("midge_loop_busy_seconds_total{shard=\"0\"} 1.5e0\n"),
            "{text}"
        );
        assert!(text.contains("midge_uptime_seconds 12\n"));
        assert!(
            text.contains("midge_route_seconds_bucket{le=\"2.5e-7\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("midge_route_seconds_bucket{le=\"5e-7\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("midge_route_seconds_bucket{le=\"+Inf\"} 1\n"));
        assert!(text.contains("midge_route_seconds_count 1\n"));
        for f in PER_SHARD.iter().chain(PER_SHARD_SECONDS) {
            assert!(text.contains(&format!("# HELP {} ", f.name)), "{}", f.name);
            assert_eq!(
                f.kind == "counter",
                f.name.ends_with("_total"),
                "{}",
                f.name
            );
        }
    }
}
