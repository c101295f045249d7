use super::*;

fn retained(count: u64, bytes: u64) -> Store {
    Store {
        retained: (count, bytes),
        ..Store::default()
    }
}

fn topics(out: &[(Topic, String)]) -> Vec<&str> {
    out.iter().map(|(t, _)| t.as_ref()).collect()
}

fn get<'a>(out: &'a [(Topic, String)], topic: &str) -> Option<&'a str> {
    out.iter()
        .find(|(t, _)| t == topic)
        .map(|(_, v)| v.as_str())
}

/// One tick of the publisher: the snapshot, and what it publishes (empty when not due).
fn tick(
    tree: &mut SysTree,
    now: Instant,
    shards: Vec<Stats>,
) -> (SysSnapshot, Vec<(Topic, String)>) {
    match tree.due(now, false) {
        Due::Nothing => (SysSnapshot::default(), Vec::new()),
        due => {
            let snap = tree.compute(now, shards, Store::default(), due == Due::Publish);
            let out = if due == Due::Publish {
                tree.next_publish = now + tree.interval.unwrap();
                tree.changed(&snap)
            } else {
                Vec::new()
            };
            (snap, out)
        }
    }
}

#[test]
fn only_the_publisher_computes_and_only_with_an_interval_it_publishes() {
    let now = Instant::now();
    assert_eq!(SysTree::new(1, 10, false, now).due(now, true), Due::Nothing);
    // sys_interval 0: the snapshot is still computed once, then only while asked for.
    let mut off = SysTree::new(0, 0, false, now);
    assert_eq!(off.due(now, false), Due::Refresh);
    off.compute(now, vec![Stats::default()], Store::default(), false);
    assert_eq!(off.due(now + Duration::from_secs(5), false), Due::Nothing);
    assert_eq!(off.due(now + Duration::from_secs(5), true), Due::Refresh);
    assert_eq!(
        SysTree::new(0, 10, false, now).due(now, false),
        Due::Publish
    );
}

#[test]
fn a_reader_keeps_the_snapshot_fresh_between_publications() {
    let t0 = Instant::now();
    let mut tree = SysTree::new(0, 10, false, t0);
    tick(&mut tree, t0, vec![Stats::default()]);
    let at = |ms| t0 + Duration::from_millis(ms);
    // Nobody asks: nothing until the next publication.
    assert_eq!(tree.due(at(1500), false), Due::Nothing);
    // Asked: refreshed once a second, and for a while after the last request.
    assert_eq!(tree.due(at(1750), true), Due::Refresh);
    tree.compute(at(1750), vec![Stats::default()], Store::default(), false);
    assert_eq!(tree.due(at(2500), false), Due::Nothing);
    assert_eq!(tree.due(at(2750), false), Due::Refresh);
    tree.compute(at(2750), vec![Stats::default()], Store::default(), false);
    assert_eq!(tree.due(at(10_000), false), Due::Publish);
    tree.next_publish = at(100_000);
    assert_eq!(tree.due(at(63_000), false), Due::Nothing);
}

#[test]
fn the_snapshot_holds_the_whole_tree_and_per_shard_figures() {
    let t0 = Instant::now();
    let mut tree = SysTree::new(0, 0, false, t0);
    let a = Stats {
        connections: 2,
        messages_in: 10,
        ..Stats::default()
    };
    let b = Stats {
        connections: 1,
        messages_in: 4,
        ..Stats::default()
    };
    let first = tree.compute(t0, vec![a, b], retained(7, 70), false);
    assert_eq!(first.total.connections, 3);
    assert_eq!(first.total.retained, 7);
    assert_eq!(first.get("$SYS/broker/clients/connected"), Some("3"));
    assert_eq!(first.get("$SYS/broker/retained messages/count"), Some("7"));
    assert_eq!(
        first
            .get("$SYS/broker/version")
            .map(|v| v.starts_with("midge ")),
        Some(true)
    );
    assert_eq!(first.shards.len(), 2);
    assert_eq!(first.shards[1].stats, b);
    let a2 = Stats {
        messages_in: 30,
        ..a
    };
    let second = tree.compute(
        t0 + Duration::from_secs(2),
        vec![a2, b],
        retained(7, 70),
        false,
    );
    assert_eq!(second.uptime, 2);
    assert_eq!(second.shards[0].messages_per_sec, 10.0);
    assert_eq!(second.shards[1].messages_per_sec, 0.0);
}

#[test]
fn version_once_uptime_always_the_rest_when_changed() {
    let t0 = Instant::now();
    let mut tree = SysTree::new(0, 1, false, t0);
    let (snap, first) = tick(&mut tree, t0, vec![Stats::default()]);
    let names = topics(&first);
    assert_eq!(names[0], "$SYS/broker/version");
    assert!(names.contains(&"$SYS/broker/retained messages/count"));
    assert!(names.contains(&"$SYS/broker/clients/active"));
    // version, uptime, mosquitto's counters, its 27 load averages, midge's shard count and
    // eleven figures per shard.
    assert_eq!(first.len(), 2 + mosquitto::topic_count() + 27 + 1 + 11);
    assert_eq!(first, snap.topics);
    let (_, none) = tick(
        &mut tree,
        t0 + Duration::from_millis(500),
        vec![Stats::default()],
    );
    assert!(none.is_empty());
    let stats = Stats {
        messages_in: 3,
        ..Stats::default()
    };
    let (_, second) = tick(&mut tree, t0 + Duration::from_secs(2), vec![stats]);
    assert_eq!(get(&second, "$SYS/broker/uptime"), Some("2 seconds"));
    assert_eq!(
        get(&second, "$SYS/broker/publish/messages/received"),
        Some("3")
    );
    assert_eq!(
        get(&second, "$SYS/broker/midge/shard/0/messages/per_second"),
        Some("1.50")
    );
    // 3 in 2 s is 90 a minute; after 2 s the 1-minute average is 90 * (1 - e^(-2/60)).
    assert_eq!(
        get(&second, "$SYS/broker/load/publish/received/1min"),
        Some("2.95")
    );
    let names = topics(&second);
    assert!(!names.contains(&"$SYS/broker/version"));
    assert!(!names.contains(&"$SYS/broker/clients/total"));
    assert!(!names.contains(&"$SYS/broker/load/publish/sent/1min"));
    assert_eq!(second.len(), 2 + 3 + 1, "{second:?}");
}

#[test]
fn clients_split_into_connected_and_disconnected_and_maximum_holds() {
    let t0 = Instant::now();
    let mut tree = SysTree::new(0, 1, false, t0);
    let stats = Stats {
        sessions: 5,
        connections: 3,
        ..Stats::default()
    };
    let (_, out) = tick(&mut tree, t0, vec![stats]);
    assert_eq!(get(&out, "$SYS/broker/clients/total"), Some("5"));
    assert_eq!(get(&out, "$SYS/broker/clients/inactive"), Some("2"));
    assert_eq!(get(&out, "$SYS/broker/clients/connected"), Some("3"));
    let fewer = Stats {
        sessions: 1,
        connections: 1,
        ..Stats::default()
    };
    let (_, out) = tick(&mut tree, t0 + Duration::from_secs(1), vec![fewer]);
    assert_eq!(get(&out, "$SYS/broker/clients/total"), Some("1"));
    assert_eq!(get(&out, "$SYS/broker/clients/maximum"), None);
}

#[test]
fn per_shard_busy_fraction_and_commit_latency() {
    let t0 = Instant::now();
    let mut tree = SysTree::new(0, 0, true, t0);
    tree.compute(t0, vec![Stats::default()], Store::default(), false);
    let busy = Stats {
        busy_nanos: 500_000_000,
        store_commits: 4,
        store_commit_nanos: 8_000_000,
        ..Stats::default()
    };
    let snap = tree.compute(
        t0 + Duration::from_secs(2),
        vec![busy],
        Store::default(),
        false,
    );
    assert_eq!(snap.shards[0].busy, 0.25);
    assert_eq!(snap.shards[0].commit_latency_us, Some(2000.0));
    assert_eq!(
        snap.get("$SYS/broker/midge/shard/0/loop/busy"),
        Some("0.250")
    );
    assert_eq!(
        snap.get("$SYS/broker/midge/shard/0/store/commit_latency_us"),
        Some("2000")
    );
    // No commit since: the last latency stays.
    let snap = tree.compute(
        t0 + Duration::from_secs(3),
        vec![busy],
        Store::default(),
        false,
    );
    assert_eq!(snap.shards[0].busy, 0.0);
    assert_eq!(snap.shards[0].commit_latency_us, Some(2000.0));
}

#[test]
fn store_and_shared_subscription_figures() {
    let t0 = Instant::now();
    let mut tree = SysTree::new(0, 0, false, t0);
    let s = Stats {
        subscriptions: 3,
        shared_subscriptions: 2,
        queued_messages: 4,
        queued_bytes: 40,
        inflight_messages: 1,
        inflight_bytes: 5,
        // Of those five, three held by one session each, two by several (below).
        held_alone_messages: 3,
        held_alone_bytes: 30,
        ..Stats::default()
    };
    let store = Store {
        retained: (2, 100),
        held_by_many: (2, 15),
    };
    let snap = tree.compute(t0, vec![s], store, false);
    assert_eq!(snap.get("$SYS/broker/subscriptions/count"), Some("3"));
    assert_eq!(
        snap.get("$SYS/broker/shared_subscriptions/count"),
        Some("2")
    );
    assert_eq!(snap.get("$SYS/broker/store/messages/count"), Some("7"));
    assert_eq!(snap.get("$SYS/broker/messages/stored"), Some("7"));
    assert_eq!(snap.get("$SYS/broker/store/messages/bytes"), Some("145"));
    assert_eq!(
        snap.get("$SYS/broker/midge/shard/0/queued/messages"),
        Some("4")
    );
    assert_eq!(
        snap.get("$SYS/broker/midge/shard/0/store/commit_latency_us"),
        None
    );
}

#[test]
fn a_new_interval_moves_the_next_publication() {
    let t0 = Instant::now();
    let mut tree = SysTree::new(0, 10, false, t0);
    tick(&mut tree, t0, vec![Stats::default()]);
    assert_eq!(tree.next_publish, t0 + Duration::from_secs(10));
    tree.set_interval(2, t0 + Duration::from_secs(1));
    assert_eq!(tree.next_publish, t0 + Duration::from_secs(2));
    tree.set_interval(0, t0 + Duration::from_secs(1));
    assert_eq!(tree.interval, None);
    assert_eq!(tree.due(t0 + Duration::from_secs(3), false), Due::Nothing);
    tree.set_interval(5, t0 + Duration::from_secs(4));
    assert_eq!(tree.due(t0 + Duration::from_secs(9), false), Due::Publish);
}
