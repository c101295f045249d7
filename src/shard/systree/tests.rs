use super::*;

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
            let snap = tree.compute(now, shards, 0);
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
    assert_eq!(SysTree::new(1, 10, now).due(now, true), Due::Nothing);
    // sys_interval 0: the snapshot is still computed once, then only while asked for.
    let mut off = SysTree::new(0, 0, now);
    assert_eq!(off.due(now, false), Due::Refresh);
    off.compute(now, vec![Stats::default()], 0);
    assert_eq!(off.due(now + Duration::from_secs(5), false), Due::Nothing);
    assert_eq!(off.due(now + Duration::from_secs(5), true), Due::Refresh);
    assert_eq!(SysTree::new(0, 10, now).due(now, false), Due::Publish);
}

#[test]
fn a_reader_keeps_the_snapshot_fresh_between_publications() {
    let t0 = Instant::now();
    let mut tree = SysTree::new(0, 10, t0);
    tick(&mut tree, t0, vec![Stats::default()]);
    let at = |ms| t0 + Duration::from_millis(ms);
    // Nobody asks: nothing until the next publication.
    assert_eq!(tree.due(at(1500), false), Due::Nothing);
    // Asked: refreshed once a second, and for a while after the last request.
    assert_eq!(tree.due(at(1750), true), Due::Refresh);
    tree.compute(at(1750), vec![Stats::default()], 0);
    assert_eq!(tree.due(at(2500), false), Due::Nothing);
    assert_eq!(tree.due(at(2750), false), Due::Refresh);
    tree.compute(at(2750), vec![Stats::default()], 0);
    assert_eq!(tree.due(at(10_000), false), Due::Publish);
    tree.next_publish = at(100_000);
    assert_eq!(tree.due(at(63_000), false), Due::Nothing);
}

#[test]
fn the_snapshot_holds_the_whole_tree_and_per_shard_figures() {
    let t0 = Instant::now();
    let mut tree = SysTree::new(0, 0, t0);
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
    let first = tree.compute(t0, vec![a, b], 7);
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
    let second = tree.compute(t0 + Duration::from_secs(2), vec![a2, b], 7);
    assert_eq!(second.uptime, 2);
    assert_eq!(second.shards[0].messages_per_sec, 10.0);
    assert_eq!(second.shards[1].messages_per_sec, 0.0);
}

#[test]
fn version_once_uptime_always_the_rest_when_changed() {
    let t0 = Instant::now();
    let mut tree = SysTree::new(0, 1, t0);
    let (snap, first) = tick(&mut tree, t0, vec![Stats::default()]);
    let names = topics(&first);
    assert_eq!(names[0], "$SYS/broker/version");
    assert!(names.contains(&"$SYS/broker/retained messages/count"));
    assert!(names.contains(&"$SYS/broker/clients/active"));
    assert_eq!(first.len(), 2 + mosquitto::topic_count());
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
    assert_eq!(
        second,
        vec![
            (Cow::Borrowed("$SYS/broker/uptime"), "2 seconds".to_string()),
            (
                Cow::Borrowed("$SYS/broker/publish/messages/received"),
                "3".to_string()
            ),
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
