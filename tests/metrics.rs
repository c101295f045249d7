//! The metrics endpoint (`metrics_listener`): `/metrics` parsed by the reference Prometheus
//! parser (Python `prometheus-client`), counters that move under load, the JSON `$SYS` tree,
//! answers to malformed HTTP and a listener that is off by default and loopback-bound.
//!
//! midge only: mosquitto 2.0 has no such listener (2.1's `http_api` is not in Debian), so
//! against mosquitto every test here returns at once.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::clients::py_script;
use common::raw::{publish, Raw, PUBLISH};
use common::{is_midge, run, Broker, STEP};
use serde_json::Value;

/// Starts midge with a metrics listener on an ephemeral loopback port (plus `extra` lines)
/// and returns it with the endpoint's address, read from the broker's log.
fn broker_with_metrics(extra: &[&str]) -> (Broker, SocketAddr) {
    let mut lines = vec!["metrics_listener 0"];
    lines.extend_from_slice(extra);
    let broker = Broker::start_with(&lines);
    let deadline = Instant::now() + STEP;
    loop {
        let log = broker.log();
        let found = log.lines().find_map(|l| {
            let rest = l.split("Opening metrics listen socket on ").nth(1)?;
            rest.trim_end_matches('.').parse::<SocketAddr>().ok()
        });
        if let Some(addr) = found {
            return (broker, addr);
        }
        assert!(
            Instant::now() < deadline,
            "no metrics listener in the log:\n{log}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// A response: status code, header lines, body.
#[derive(Debug)]
struct Response {
    status: u16,
    head: String,
    body: String,
}

/// Sends `request` as is and reads until the server closes (every request here either asks
/// for `Connection: close` or is one the server must close after answering).
fn exchange(addr: SocketAddr, request: &[u8]) -> Option<Response> {
    let mut s = TcpStream::connect_timeout(&addr, STEP).expect("connect to the metrics endpoint");
    s.set_read_timeout(Some(STEP)).unwrap();
    s.set_write_timeout(Some(STEP)).unwrap();
    let _ = s.write_all(request);
    let mut bytes = Vec::new();
    let _ = s.read_to_end(&mut bytes);
    parse_response(&String::from_utf8_lossy(&bytes))
}

fn parse_response(text: &str) -> Option<Response> {
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    Some(Response {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}

fn get(addr: SocketAddr, path: &str) -> Response {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    exchange(addr, request.as_bytes()).unwrap_or_else(|| panic!("no response to GET {path}"))
}

/// One family as the Prometheus parser read it: type and samples (name, labels, value).
#[derive(Debug)]
struct Family {
    kind: String,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

/// Scrapes `/metrics` and parses it with `prometheus_client`'s text parser.
fn scrape(addr: SocketAddr) -> BTreeMap<String, Family> {
    let r = get(addr, "/metrics");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.head.contains("Content-Type: text/plain; version=0.0.4"),
        "{}",
        r.head
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scrape.txt");
    std::fs::write(&path, &r.body).unwrap();
    let out = run(
        Command::new("python3")
            .arg(py_script("prom_parse.py"))
            .arg(&path),
        Duration::from_secs(20),
    );
    assert!(
        out.success(),
        "the Prometheus parser refused the scrape: {}\n{}",
        out.stderr,
        r.body
    );
    let json: Value = serde_json::from_str(&out.stdout).expect("parser output");
    json.as_object()
        .unwrap()
        .iter()
        .map(|(name, f)| {
            let samples = f["samples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    let labels = s[1]
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                        .collect();
                    (
                        s[0].as_str().unwrap().to_owned(),
                        labels,
                        s[2].as_f64().unwrap(),
                    )
                })
                .collect();
            let kind = f["type"].as_str().unwrap().to_owned();
            (name.clone(), Family { kind, samples })
        })
        .collect()
}

/// The sum of a family's samples named `sample`.
fn total(families: &BTreeMap<String, Family>, family: &str, sample: &str) -> f64 {
    families[family]
        .samples
        .iter()
        .filter(|(name, ..)| name == sample)
        .map(|(.., v)| v)
        .sum()
}

/// Scrapes until `ok` holds (the shards publish their counters at their tick).
fn scrape_until(
    addr: SocketAddr,
    ok: impl Fn(&BTreeMap<String, Family>) -> bool,
) -> BTreeMap<String, Family> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let families = scrape(addr);
        if ok(&families) || Instant::now() > deadline {
            return families;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn scrape_parses_as_prometheus_text_and_counters_grow_under_load() {
    if !is_midge() {
        return;
    }
    let (broker, addr) = broker_with_metrics(&["shards 2"]);
    let before = scrape(addr);
    for (name, kind) in [
        ("midge_messages_received", "counter"),
        ("midge_bytes_received", "counter"),
        ("midge_connections", "gauge"),
        ("midge_route_seconds", "histogram"),
        ("midge_retained_messages", "gauge"),
        ("midge_loop_busy_ratio", "gauge"),
    ] {
        assert_eq!(before[name].kind, kind, "{name}");
    }
    for shard in ["0", "1"] {
        assert!(
            before["midge_messages_received"]
                .samples
                .iter()
                .any(|(_, labels, _)| labels.get("shard").map(String::as_str) == Some(shard)),
            "a series for shard {shard}"
        );
    }
    let received_before = total(
        &before,
        "midge_messages_received",
        "midge_messages_received_total",
    );

    // 300 messages through one subscriber: at least four are timed (one in 64).
    const N: usize = 300;
    let mut sub = Raw::subscribed(broker.port(), "metrics-sub", &[("load/#", 0)]);
    let mut publisher = Raw::connected(broker.port(), "metrics-pub");
    for i in 0..N {
        publisher.send(&publish("load/x", format!("m{i}").as_bytes(), 0, false, 0));
    }
    for _ in 0..N {
        let p = sub.recv(STEP).expect("a delivery");
        assert_eq!(p.kind(), PUBLISH);
    }
    let after = scrape_until(addr, |f| {
        total(
            f,
            "midge_messages_received",
            "midge_messages_received_total",
        ) >= received_before + N as f64
            && total(f, "midge_route_seconds", "midge_route_seconds_count") >= 4.0
    });
    let received = total(
        &after,
        "midge_messages_received",
        "midge_messages_received_total",
    );
    assert!(
        received >= received_before + N as f64,
        "received {received_before} -> {received}"
    );
    let sent = total(&after, "midge_messages_sent", "midge_messages_sent_total");
    assert!(sent >= N as f64, "sent {sent}");
    assert_eq!(total(&after, "midge_connections", "midge_connections"), 2.0);
    let count = total(&after, "midge_route_seconds", "midge_route_seconds_count");
    assert!(count >= 4.0, "route samples {count}");
    let inf = after["midge_route_seconds"]
        .samples
        .iter()
        .find(|(name, labels, _)| name == "midge_route_seconds_bucket" && labels["le"] == "+Inf")
        .expect("a +Inf bucket")
        .2;
    assert_eq!(inf, count, "the +Inf bucket holds every sample");
    assert!(total(&after, "midge_route_seconds", "midge_route_seconds_sum") > 0.0);
}

#[test]
fn systree_is_json_keyed_by_topic_with_version_and_client_figures() {
    if !is_midge() {
        return;
    }
    let (broker, addr) = broker_with_metrics(&[]);
    let _a = Raw::connected(broker.port(), "systree-a");
    let _b = Raw::connected(broker.port(), "systree-b");
    let deadline = Instant::now() + Duration::from_secs(10);
    let tree = loop {
        let r = get(addr, "/api/v1/systree");
        assert_eq!(r.status, 200, "{r:?}");
        assert!(
            r.head.contains("Content-Type: application/json"),
            "{}",
            r.head
        );
        let tree: Value = serde_json::from_str(&r.body).expect("the systree is JSON");
        if tree["$SYS/broker/clients/connected"] == 2 || Instant::now() > deadline {
            break tree;
        }
        thread::sleep(Duration::from_millis(100));
    };
    let version = tree["$SYS/broker/version"]
        .as_str()
        .expect("a version string");
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    assert_eq!(tree["$SYS/broker/clients/connected"], 2, "{tree}");
    assert!(
        tree["$SYS/broker/clients/total"].as_u64().unwrap() >= 2,
        "{tree}"
    );
    assert!(
        tree["$SYS/broker/uptime"].is_u64(),
        "uptime in seconds: {tree}"
    );
    let v = get(addr, "/api/v1/version");
    assert_eq!(
        (v.status, v.body.as_str()),
        (200, env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn bad_requests_get_an_error_or_a_close_and_the_endpoint_keeps_serving() {
    if !is_midge() {
        return;
    }
    let (_broker, addr) = broker_with_metrics(&[]);
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "x".repeat(64 * 1024)
    );
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(16 * 1024));
    let cases: [(&str, &[u8], u16); 9] = [
        ("garbage", b"\x00\x01\x02 hello\r\n\r\n", 400),
        (
            "TLS hello",
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
            400,
        ),
        ("HTTP/0.9", b"GET /metrics\r\n", 400),
        ("HTTP/2.0", b"GET /metrics HTTP/2.0\r\n\r\n", 505),
        ("no Host", b"GET /metrics HTTP/1.1\r\n\r\n", 400),
        (
            "POST",
            b"POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nab",
            405,
        ),
        (
            "DELETE",
            b"DELETE /api/v1/systree HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            405,
        ),
        (
            "unknown path",
            b"GET /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            404,
        ),
        ("huge header", huge.as_bytes(), 431),
    ];
    for (what, request, want) in cases {
        let r = exchange(addr, request).unwrap_or_else(|| panic!("{what}: no answer"));
        assert_eq!(r.status, want, "{what}: {r:?}");
        assert!(r.head.contains("Connection: close"), "{what}: {}", r.head);
        assert_eq!(get(addr, "/metrics").status, 200, "serving after {what}");
    }
    assert_eq!(exchange(addr, long_target.as_bytes()).unwrap().status, 414);
    // A client that closes without finishing its request gets nothing, and harms nothing.
    let mut cut = TcpStream::connect_timeout(&addr, STEP).unwrap();
    cut.set_read_timeout(Some(STEP)).unwrap();
    cut.write_all(b"GET /metr").unwrap();
    cut.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    cut.read_to_end(&mut got)
        .expect("closed at once, not at the deadline");
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    assert_eq!(get(addr, "/metrics").status, 200);
}

#[test]
fn slow_and_idle_clients_never_stall_a_scrape_and_are_closed_on_time() {
    if !is_midge() {
        return;
    }
    let (_broker, addr) = broker_with_metrics(&[]);
    // More idle connections than the endpoint keeps (32): the oldest make room.
    let idle: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect_timeout(&addr, STEP).unwrap())
        .collect();
    // Slowloris: a request head a byte at a time, never finished.
    let mut slow = TcpStream::connect_timeout(&addr, STEP).unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n")
        .unwrap();
    let started = Instant::now();
    for _ in 0..5 {
        let _ = slow.write_all(b"X");
        let r = get(addr, "/api/v1/version");
        assert_eq!(r.status, 200, "{r:?}");
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "scrapes were held up"
    );
    drop(idle);
    // The slow client is closed at its request deadline (10 s), not kept forever.
    slow.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut rest = Vec::new();
    let closed_at = Instant::now();
    let _ = slow.read_to_end(&mut rest);
    assert!(
        closed_at.elapsed() < Duration::from_secs(14),
        "the slow client was not closed"
    );
    // Keep-alive: three pipelined requests on one connection, three answers.
    let r = exchange(
        addr,
        b"GET /api/v1/version HTTP/1.1\r\nHost: t\r\n\r\n\
          HEAD /metrics HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /api/v1/version HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let all = format!("{}\r\n\r\n{}", r.head, r.body);
    assert_eq!(all.matches("HTTP/1.1 200 OK").count(), 3, "{all}");
}

/// The listening TCP sockets of process `pid`, from /proc (address as the kernel has it).
fn listening_sockets(pid: u32) -> Vec<SocketAddr> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let mut found = Vec::new();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address, state 0A = LISTEN, inode
            if f.len() < 10 || f[3] != "0A" || !inodes.iter().any(|i| i == f[9]) {
                continue;
            }
            let (ip, port) = f[1].split_once(':').unwrap();
            let port = u16::from_str_radix(port, 16).unwrap();
            let ip: std::net::IpAddr = if v6 {
                let mut b = [0u8; 16];
                for (i, chunk) in b.chunks_mut(4).enumerate() {
                    let word = u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).unwrap();
                    chunk.copy_from_slice(&word.to_le_bytes());
                }
                b.into()
            } else {
                u32::from_str_radix(ip, 16).unwrap().to_le_bytes().into()
            };
            found.push(SocketAddr::new(ip, port));
        }
    }
    found
}

#[test]
fn the_listener_is_off_by_default_and_loopback_without_an_address() {
    if !is_midge() {
        return;
    }
    let plain = Broker::start_with(&["shards 1"]);
    let sockets = listening_sockets(plain.pid());
    assert_eq!(sockets, vec![plain.addr()], "only the MQTT listener");
    assert!(!plain.log().contains("metrics"), "{}", plain.log());

    let (with, addr) = broker_with_metrics(&["shards 1"]);
    assert!(addr.ip().is_loopback(), "{addr}");
    let mut sockets = listening_sockets(with.pid());
    sockets.sort();
    let mut want = vec![with.addr(), addr];
    want.sort();
    assert_eq!(sockets, want);
}
