//! Per-shard counters: plain integers owned by the shard and incremented on the paths that
//! already run (no atomic operation per message), published into the shard's slot of
//! relaxed atomics once per tick, and summed over all shards on demand
//! ([`super::Shared::stats`]), for `$SYS` and metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::Shard;

/// One shard's counters, or their sum over all shards. Totals since start unless said
/// otherwise.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Client connections open now (accepted or adopted here, not yet closed or moved).
    pub connections: u64,
    /// Sessions homed here now, connected or not (as of the shard's last tick).
    pub sessions: u64,
    /// Sessions ended because their expiry interval ran out while disconnected.
    pub sessions_expired: u64,
    /// PUBLISH packets received from clients (before any check; not wills, as mosquitto).
    pub messages_in: u64,
    /// PUBLISH packets written to clients' buffers.
    pub messages_out: u64,
    /// MQTT packets of any type decoded from clients.
    pub packets_in: u64,
    /// MQTT packets of any type written to clients' buffers.
    pub packets_out: u64,
    /// Payload bytes of the PUBLISH packets counted by `messages_in`.
    pub publish_bytes_in: u64,
    /// Payload bytes of the PUBLISH packets counted by `messages_out`.
    pub publish_bytes_out: u64,
    /// Bytes read from client sockets.
    pub bytes_in: u64,
    /// Bytes written to client sockets.
    pub bytes_out: u64,
    /// Deliveries dropped: a full queue, `memory_limit`, a slow QoS 0 consumer.
    pub publishes_dropped: u64,
    /// Subscriptions held by the sessions homed here, now, shared ones excepted.
    pub subscriptions: u64,
    /// Shared subscriptions (`$share/...`) held by the sessions homed here, now.
    pub shared_subscriptions: u64,
    /// Retained messages, broker-wide, now (filled in by the sum, not per shard).
    pub retained: u64,
    /// Payload bytes of the retained messages, broker-wide, now (filled in by the sum).
    pub retained_bytes: u64,
    /// Sockets accepted from the listeners.
    pub sockets_accepted: u64,
    /// CONNECT packets received.
    pub connects: u64,
    /// QoS 0 deliveries dropped for a slow consumer (also counted in `publishes_dropped`).
    pub qos0_dropped: u64,
    /// Messages waiting in the queues of the sessions homed here (as of the last count,
    /// about once a second).
    pub queued_messages: u64,
    /// Payload bytes of `queued_messages`.
    pub queued_bytes: u64,
    /// QoS 1/2 messages sent and not yet acknowledged by the sessions homed here (counted
    /// with `queued_messages`).
    pub inflight_messages: u64,
    /// Payload bytes of `inflight_messages`.
    pub inflight_bytes: u64,
    /// Messages queued or in flight for the sessions homed here that nothing else holds
    /// (as of the last count; see `systree::store_count`).
    pub held_alone_messages: u64,
    /// Payload bytes of `held_alone_messages`.
    pub held_alone_bytes: u64,
    /// Distinct messages the broker holds (retained, queued, in flight), each once however
    /// many sessions hold it: mosquitto's message store count. Broker-wide, filled in when
    /// the `$SYS` tree is computed (not per shard).
    pub store_messages: u64,
    /// Payload bytes of `store_messages`.
    pub store_bytes: u64,
    /// Nanoseconds the loop spent working (from `poll` returning to the end of the turn).
    pub busy_nanos: u64,
    /// Store commits whose latency was measured (one in flight at a time is sampled).
    pub store_commits: u64,
    /// Sum of the measured commits' latencies (submission to durable), in nanoseconds.
    pub store_commit_nanos: u64,
    /// Items sent to other shards (deliveries, index updates, persistence progress).
    pub cross_shard_out: u64,
    /// Items received from other shards.
    pub cross_shard_in: u64,
    /// Turns this shard ran for a sleeping peer instead of waking it (see `shard::handoff`).
    pub handoffs: u64,
    /// Turns this shard ran for a dormant peer (see `shard::dormancy`).
    pub hosted_turns: u64,
    /// Times this shard's loop went dormant.
    pub dozes: u64,
    /// Sampled routing times (see [`RouteTimes`]).
    pub route: RouteTimes,
}

/// Applies `f` to each counter of `a` with the matching counter of `b` (one list of fields,
/// so publishing and summing cannot miss one).
macro_rules! each_counter {
    ($m:ident) => {
        $m!(
            connections,
            sessions,
            sessions_expired,
            messages_in,
            messages_out,
            packets_in,
            packets_out,
            publish_bytes_in,
            publish_bytes_out,
            bytes_in,
            bytes_out,
            publishes_dropped,
            subscriptions,
            shared_subscriptions,
            retained,
            retained_bytes,
            sockets_accepted,
            connects,
            qos0_dropped,
            queued_messages,
            queued_bytes,
            inflight_messages,
            inflight_bytes,
            held_alone_messages,
            held_alone_bytes,
            store_messages,
            store_bytes,
            busy_nanos,
            store_commits,
            store_commit_nanos,
            cross_shard_out,
            cross_shard_in,
            handoffs,
            hosted_turns,
            dozes
        )
    };
}

impl Stats {
    /// The subscription count `filter` belongs to: shared (`$share/...`) or not, counted
    /// apart as mosquitto does.
    pub fn subscription_count(&mut self, filter: &str) -> &mut u64 {
        if filter.starts_with("$share/") {
            &mut self.shared_subscriptions
        } else {
            &mut self.subscriptions
        }
    }

    /// Adds each counter of `other` to this one's.
    pub fn add(&mut self, other: &Stats) {
        macro_rules! add {
            ($($f:ident),*) => { $( self.$f += other.$f; )* };
        }
        each_counter!(add);
        self.route.add(&other.route);
    }
}

impl Shard {
    /// Refreshes the counters that are not kept per message but counted (queued and in-flight
    /// messages walk every session and the messages they hold, for the distinct count of
    /// `systree::store_count`): about once a second, at the tick (shard thread only).
    pub(crate) fn count_gauges(&mut self, now: Instant) {
        self.stats.qos0_dropped = self.slow_consumer_drops;
        if now < self.sys_tree.gauges_due {
            return;
        }
        self.sys_tree.gauges_due = now + GAUGES;
        let s = &mut self.stats;
        (s.queued_messages, s.queued_bytes) = (0, 0);
        (s.inflight_messages, s.inflight_bytes) = (0, 0);
        let held = &mut self.sys_tree.held;
        held.start();
        for (_, slot) in self.sessions.iter() {
            let session = &slot.session;
            let queued = session.queued_bytes();
            s.queued_messages += session.queue.len() as u64;
            s.queued_bytes += queued as u64;
            s.inflight_messages += session.inflight.len() as u64;
            s.inflight_bytes += session.held_bytes().saturating_sub(queued) as u64;
            let queue = session.queue.iter().map(|q| &q.delivery.msg);
            for msg in queue.chain(session.inflight.iter().map(|f| &f.delivery.msg)) {
                held.note(msg, &self.shared.retained);
            }
        }
        (s.held_alone_messages, s.held_alone_bytes) =
            held.finish(&self.shared.held_by_many, self.id);
    }
}

/// How often [`Shard::count_gauges`] walks the sessions.
const GAUGES: Duration = Duration::from_secs(1);

/// A shard's last published [`Stats`]: written by that shard once per tick, read by anyone.
#[derive(Debug, Default)]
pub struct StatsSlot {
    connections: AtomicU64,
    sessions: AtomicU64,
    sessions_expired: AtomicU64,
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    packets_in: AtomicU64,
    packets_out: AtomicU64,
    publish_bytes_in: AtomicU64,
    publish_bytes_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    publishes_dropped: AtomicU64,
    subscriptions: AtomicU64,
    shared_subscriptions: AtomicU64,
    retained: AtomicU64,
    retained_bytes: AtomicU64,
    sockets_accepted: AtomicU64,
    connects: AtomicU64,
    qos0_dropped: AtomicU64,
    queued_messages: AtomicU64,
    queued_bytes: AtomicU64,
    inflight_messages: AtomicU64,
    inflight_bytes: AtomicU64,
    held_alone_messages: AtomicU64,
    held_alone_bytes: AtomicU64,
    store_messages: AtomicU64,
    store_bytes: AtomicU64,
    busy_nanos: AtomicU64,
    store_commits: AtomicU64,
    store_commit_nanos: AtomicU64,
    cross_shard_out: AtomicU64,
    cross_shard_in: AtomicU64,
    handoffs: AtomicU64,
    hosted_turns: AtomicU64,
    dozes: AtomicU64,
    route: RouteSlot,
}

impl StatsSlot {
    /// Stores `s` (owning shard only). Relaxed: each counter is read on its own; a reader
    /// may see one tick's value for one counter and the previous tick's for another.
    pub fn publish(&self, s: &Stats) {
        macro_rules! store {
            ($($f:ident),*) => { $( self.$f.store(s.$f, Ordering::Relaxed); )* };
        }
        each_counter!(store);
        self.route.publish(&s.route);
    }

    /// The counters as last stored.
    pub fn read(&self) -> Stats {
        let mut s = Stats::default();
        self.add_to(&mut s);
        s
    }

    /// Adds this slot's counters to `sum`.
    pub fn add_to(&self, sum: &mut Stats) {
        macro_rules! add {
            ($($f:ident),*) => { $( sum.$f += self.$f.load(Ordering::Relaxed); )* };
        }
        each_counter!(add);
        self.route.add_to(&mut sum.route);
    }
}

// Routing time: one message in ROUTE_SAMPLE_EVERY is timed (two clock reads), so the cost
// per message is a test of the counter that already counts it; the histogram is plain
// integers on the shard, published with the other counters at the tick.

/// One message routed in this many is timed (a power of two: the test is a mask).
pub const ROUTE_SAMPLE_EVERY: u64 = 64;

/// Upper bounds of the routing-time buckets, in nanoseconds (the last bucket, +Inf, is
/// implicit): from an index match with one local subscriber to a fan-out to thousands.
pub const ROUTE_BUCKETS_NS: [u64; 13] = [
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    5_000_000,
];

/// A histogram of sampled routing times: how long `Shard::route` took for a message
/// published on this shard (index match, local deliveries, cross-shard hand-off).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RouteTimes {
    /// Samples per bucket of [`ROUTE_BUCKETS_NS`], not cumulative; the last is +Inf.
    pub buckets: [u64; ROUTE_BUCKETS_NS.len() + 1],
    /// Samples taken.
    pub count: u64,
    /// Sum of the sampled times, in nanoseconds.
    pub sum_ns: u64,
    /// Messages routed (published here, wills included), sampled or not.
    pub routed: u64,
}

impl RouteTimes {
    /// Counts one routed message; its start time when it is one to time.
    #[inline]
    pub fn sample_start(&mut self) -> Option<std::time::Instant> {
        self.routed += 1;
        (self.routed & (ROUTE_SAMPLE_EVERY - 1) == 0).then(std::time::Instant::now)
    }

    /// Records the sample started at `start` (if any).
    #[inline]
    pub fn sample_end(&mut self, start: Option<std::time::Instant>) {
        if let Some(start) = start {
            self.record(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
        }
    }

    /// Adds `other`'s samples to these.
    pub fn add(&mut self, other: &RouteTimes) {
        for (n, m) in self.buckets.iter_mut().zip(&other.buckets) {
            *n += m;
        }
        self.count += other.count;
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
        self.routed += other.routed;
    }

    /// Adds one routing time of `ns` nanoseconds.
    pub fn record(&mut self, ns: u64) {
        let bucket = ROUTE_BUCKETS_NS.partition_point(|&le| le < ns);
        self.buckets[bucket] += 1;
        self.count += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }
}

/// A shard's last published [`RouteTimes`].
#[derive(Debug, Default)]
struct RouteSlot {
    buckets: [AtomicU64; ROUTE_BUCKETS_NS.len() + 1],
    count: AtomicU64,
    sum_ns: AtomicU64,
    routed: AtomicU64,
}

impl RouteSlot {
    fn publish(&self, r: &RouteTimes) {
        for (slot, &n) in self.buckets.iter().zip(&r.buckets) {
            slot.store(n, Ordering::Relaxed);
        }
        self.count.store(r.count, Ordering::Relaxed);
        self.sum_ns.store(r.sum_ns, Ordering::Relaxed);
        self.routed.store(r.routed, Ordering::Relaxed);
    }

    fn add_to(&self, sum: &mut RouteTimes) {
        for (n, slot) in sum.buckets.iter_mut().zip(&self.buckets) {
            *n += slot.load(Ordering::Relaxed);
        }
        sum.count += self.count.load(Ordering::Relaxed);
        sum.sum_ns = sum
            .sum_ns
            .saturating_add(self.sum_ns.load(Ordering::Relaxed));
        sum.routed += self.routed.load(Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_counters_sum_over_slots() {
        let slots = [StatsSlot::default(), StatsSlot::default()];
        let a = Stats {
            connections: 2,
            messages_in: 10,
            bytes_out: 7,
            cross_shard_in: 1,
            ..Stats::default()
        };
        let b = Stats {
            connections: 3,
            messages_in: 5,
            subscriptions: 4,
            ..Stats::default()
        };
        slots[0].publish(&a);
        slots[1].publish(&b);
        let mut sum = Stats::default();
        slots.iter().for_each(|s| s.add_to(&mut sum));
        let want = Stats {
            connections: 5,
            messages_in: 15,
            bytes_out: 7,
            subscriptions: 4,
            cross_shard_in: 1,
            ..Stats::default()
        };
        assert_eq!(sum, want);
    }

    #[test]
    fn route_times_fall_in_their_bucket_and_sum_over_slots() {
        let mut r = RouteTimes::default();
        r.record(250); // on a bound: that bucket (`le` is inclusive)
        r.record(251);
        r.record(10_000_000); // past the last bound: +Inf
        assert_eq!(r.buckets[0], 1);
        assert_eq!(r.buckets[1], 1);
        assert_eq!(r.buckets[ROUTE_BUCKETS_NS.len()], 1);
        assert_eq!((r.count, r.sum_ns), (3, 10_000_501));
        let slots = [StatsSlot::default(), StatsSlot::default()];
        let s = Stats {
            route: r,
            ..Stats::default()
        };
        slots[0].publish(&s);
        slots[1].publish(&s);
        let mut sum = Stats::default();
        slots.iter().for_each(|slot| slot.add_to(&mut sum));
        assert_eq!(sum.route.count, 6);
        assert_eq!(sum.route.buckets[1], 2);
        assert_eq!(sum.route.sum_ns, 20_001_002);
    }

    #[test]
    fn one_message_in_the_sample_interval_is_timed() {
        let mut r = RouteTimes::default();
        let timed = (0..ROUTE_SAMPLE_EVERY * 3)
            .filter(|_| r.sample_start().is_some())
            .count();
        assert_eq!((timed, r.routed), (3, ROUTE_SAMPLE_EVERY * 3));
    }
}
