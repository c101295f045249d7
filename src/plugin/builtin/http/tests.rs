//! The HTTP plugin's hooks called directly, against a small HTTP server on a thread, with
//! deferred answers received through a test [`LaterSink`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use serde_json::Value;

use super::*;
use crate::plugin::api::LaterSink;
use crate::plugin::ExtendedAuth;
use crate::protocol::ProtocolVersion;

struct Sink(Sender<Decision>);

impl LaterSink for Sink {
    fn basic(self: Box<Self>, decision: Decision) {
        let _ = self.0.send(decision);
    }
    fn extended(self: Box<Self>, _answer: ExtendedAuth) {}
    /// As the broker's sink for a handle dropped during its hook: nothing is sent.
    fn dropped(self: Box<Self>) {}
}

fn later() -> (Later, Receiver<Decision>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    (
        Later {
            inner: Some(Box::new(Sink(tx))),
        },
        rx,
    )
}

type Answer = fn(&Value) -> (u16, String, u64);

/// A tiny HTTP server: answers each request with `answer(body)` = (status, body, delay ms).
/// Status 0 writes the body as the whole answer, head included: a broken or hostile server.
struct Server {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    bodies: Arc<Mutex<Vec<Value>>>,
}

fn server(answer: Answer) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (h, b) = (hits.clone(), bodies.clone());
    std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            let Ok((mut conn, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            let (h, b) = (h.clone(), b.clone());
            std::thread::spawn(move || {
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                let body = loop {
                    let Ok(n) = conn.read(&mut chunk) else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    if buf.len() >= end + 4 + len {
                        break buf[end + 4..end + 4 + len].to_vec();
                    }
                };
                h.fetch_add(1, Ordering::SeqCst);
                let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let (status, text, delay) = answer(&json);
                b.lock().unwrap().push(json);
                std::thread::sleep(Duration::from_millis(delay));
                let _ = match status {
                    0 => conn.write_all(text.as_bytes()),
                    _ => write!(
                        conn,
                        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{text}",
                        text.len()
                    ),
                };
            });
        }
    });
    Server { addr, hits, bodies }
}

fn plugin(opts: &[(&str, String)]) -> (HttpPlugin, Box<dyn ShardPlugin>) {
    let p = HttpPlugin::new();
    let o = opts
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    p.configure(&o).unwrap();
    let s = p.shard(0, 1);
    (p, s)
}

fn client(id: &str) -> ClientInfo<'_> {
    ClientInfo {
        client_id: id,
        username: Some("u"),
        protocol: ProtocolVersion::V5,
        peer: Some("127.0.0.1:5000".parse().unwrap()),
        listener_port: 1883,
        certificate_identity: None,
    }
}

fn auth(s: &mut dyn ShardPlugin, id: &str, user: &str, pw: &str) -> Decision {
    let (l, rx) = later();
    let creds = Credentials {
        username: Some(user),
        password: Some(pw.as_bytes()),
    };
    match s.basic_auth(&client(id), &creds, l) {
        Decision::Later => rx.recv_timeout(Duration::from_secs(10)).expect("an answer"),
        d => {
            assert!(
                rx.try_recv().is_err(),
                "a direct answer sends nothing later"
            );
            d
        }
    }
}

/// EMQX-shaped answers keyed by user name.
fn emqx(v: &Value) -> (u16, String, u64) {
    let result = match v["username"].as_str().unwrap_or("") {
        "alice" => r#"{"result":"allow"}"#,
        "root" => r#"{"result":"allow","is_superuser":true}"#,
        "nobody" => r#"{"result":"ignore"}"#,
        "slow" => return (200, r#"{"result":"allow"}"#.into(), 1500),
        _ => r#"{"result":"deny"}"#,
    };
    (200, result.into(), 0)
}

#[test]
fn emqx_allow_deny_ignore_and_cache() {
    let srv = server(emqx);
    let url = format!("http://{}/auth", srv.addr);
    let (p, mut s) = plugin(&[("http_auth_url", url)]);
    assert_eq!(auth(&mut *s, "c1", "alice", "pw"), Decision::Allow);
    assert_eq!(auth(&mut *s, "c2", "mallory", "pw"), Decision::Deny);
    assert_eq!(auth(&mut *s, "c3", "nobody", "pw"), Decision::Pass);
    assert_eq!((srv.hits.load(Ordering::SeqCst), p.requests()), (3, 3));
    let body = srv.bodies.lock().unwrap()[0].clone();
    assert_eq!(
        (body["clientid"].as_str(), body["password"].as_str()),
        (Some("c1"), Some("pw"))
    );
    // Cached: answered on the spot, the server is not asked again.
    let creds = Credentials {
        username: Some("alice"),
        password: Some(b"pw"),
    };
    assert_eq!(
        s.basic_auth(&client("c1"), &creds, later().0),
        Decision::Allow
    );
    assert_eq!(auth(&mut *s, "c2", "mallory", "pw"), Decision::Deny);
    assert_eq!(srv.hits.load(Ordering::SeqCst), 3);
    // Another password is another key.
    assert_eq!(auth(&mut *s, "c1", "alice", "other"), Decision::Allow);
    assert_eq!(srv.hits.load(Ordering::SeqCst), 4);
}

#[test]
fn superuser_is_allowed_every_acl_check() {
    let srv = server(emqx);
    let (p, mut s) = plugin(&[("http_auth_url", format!("http://{}/auth", srv.addr))]);
    assert!(s.events().contains(Events::ACL_CHECK));
    assert_eq!(auth(&mut *s, "r", "root", "pw"), Decision::Allow);
    assert_eq!(auth(&mut *s, "a", "alice", "pw"), Decision::Allow);
    s.connect(&client("r"));
    s.connect(&client("a"));
    assert_eq!(
        s.acl_check(&client("r"), "x/y", Access::Write),
        Decision::Allow
    );
    assert_eq!(
        s.acl_check(&client("a"), "x/y", Access::Write),
        Decision::Pass
    );
    s.disconnect(&client("r"), true);
    assert_eq!(
        s.acl_check(&client("r"), "x/y", Access::Write),
        Decision::Pass
    );
    // Authenticated on one shard (from the cache this time), connected on another.
    let mut home = p.shard(1, 2);
    assert_eq!(auth(&mut *s, "r", "root", "pw"), Decision::Allow);
    home.connect(&client("r"));
    assert_eq!(
        home.acl_check(&client("r"), "x/y", Access::Write),
        Decision::Allow
    );
    assert_eq!(
        s.acl_check(&client("r"), "x/y", Access::Write),
        Decision::Pass
    );
}

#[test]
fn timeout_and_server_down_deny_without_blocking() {
    let srv = server(emqx);
    let (_p, mut s) = plugin(&[
        ("http_auth_url", format!("http://{}/auth", srv.addr)),
        ("http_timeout_ms", "700".into()),
    ]);
    let started = Instant::now();
    let (l, rx) = later();
    let creds = Credentials {
        username: Some("slow"),
        password: Some(b"pw"),
    };
    assert_eq!(s.basic_auth(&client("s"), &creds, l), Decision::Later);
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "the hook does not wait"
    );
    // Meanwhile another client is answered, before the slow one's timeout.
    assert_eq!(auth(&mut *s, "a", "alice", "pw"), Decision::Allow);
    assert!(rx.try_recv().is_err(), "the slow one is still pending");
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(Decision::Deny));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(690) && took < Duration::from_millis(1450),
        "the timeout, not the server's 1.5 s: {took:?}"
    );

    // Nothing listens there.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (_p, mut s) = plugin(&[("http_auth_url", format!("http://{dead}/auth"))]);
    assert_eq!(auth(&mut *s, "a", "alice", "pw"), Decision::Deny);
}

#[test]
fn full_queue_denies_at_once() {
    let srv = server(emqx);
    let (_p, mut s) = plugin(&[
        ("http_auth_url", format!("http://{}/auth", srv.addr)),
        ("http_workers", "1".into()),
        ("http_queue", "1".into()),
        ("http_cache_seconds", "0".into()),
    ]);
    let creds = Credentials {
        username: Some("slow"),
        password: Some(b"pw"),
    };
    let mut answers = Vec::new();
    let mut direct = Vec::new();
    for i in 0..4 {
        let (l, rx) = later();
        let id = format!("c{i}");
        direct.push(s.basic_auth(&client(&id), &creds, l));
        answers.push(rx);
    }
    // One running, one queued (or still both queued), the rest refused on the spot.
    assert_eq!(direct[0], Decision::Later);
    assert!(
        direct.iter().filter(|d| **d == Decision::Deny).count() >= 2,
        "{direct:?}"
    );
}

/// An auth server that answers "evil" with chunk sizes past every bound.
fn overflowing_chunks(v: &Value) -> (u16, String, u64) {
    if v["username"].as_str() == Some("evil") {
        let answer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                      2\r\n{}\r\nFFFFFFFFFFFFFFFF\r\n{}\r\n0\r\n\r\n";
        return (0, answer.into(), 0);
    }
    emqx(v)
}

/// A hostile answer is a denial, and the one worker that read it goes on answering others.
#[test]
fn hostile_answer_denies_and_the_worker_lives_on() {
    let srv = server(overflowing_chunks);
    let (_p, mut s) = plugin(&[
        ("http_auth_url", format!("http://{}/auth", srv.addr)),
        ("http_workers", "1".into()),
        ("http_cache_seconds", "0".into()),
    ]);
    for i in 0..3 {
        assert_eq!(
            auth(&mut *s, &format!("e{i}"), "evil", "pw"),
            Decision::Deny
        );
        assert_eq!(
            auth(&mut *s, &format!("a{i}"), "alice", "pw"),
            Decision::Allow
        );
    }
    assert_eq!(srv.hits.load(Ordering::SeqCst), 6);
}

fn go_auth(v: &Value) -> (u16, String, u64) {
    if let Some(topic) = v["topic"].as_str() {
        let ok = topic.starts_with("open/") || v["acc"].as_u64() == Some(1);
        return (if ok { 200 } else { 403 }, String::new(), 0);
    }
    if v.get("password").is_none() {
        // The superuser endpoint.
        return (
            if v["username"] == "root" { 200 } else { 403 },
            String::new(),
            0,
        );
    }
    match v["password"].as_str() {
        Some("good") => (200, r#"{"ok":true,"error":""}"#.into(), 0),
        Some("soft-no") => (200, r#"{"ok":false,"error":"bad password"}"#.into(), 0),
        _ => (401, String::new(), 0),
    }
}

#[test]
fn go_auth_shape_with_superuser_and_acl() {
    let srv = server(go_auth);
    let base = format!("http://{}", srv.addr);
    let (_p, mut s) = plugin(&[
        ("http_shape", "go-auth".into()),
        ("http_auth_url", format!("{base}/user")),
        ("http_superuser_url", format!("{base}/superuser")),
        ("http_acl_url", format!("{base}/acl")),
    ]);
    assert_eq!(auth(&mut *s, "c1", "alice", "good"), Decision::Allow);
    assert_eq!(auth(&mut *s, "c2", "alice", "soft-no"), Decision::Deny);
    assert_eq!(auth(&mut *s, "c3", "alice", "bad"), Decision::Deny);
    assert_eq!(auth(&mut *s, "r", "root", "good"), Decision::Allow);
    s.connect(&client("r"));
    assert_eq!(
        s.acl_check(&client("r"), "closed/x", Access::Write),
        Decision::Allow
    );

    // Deny-and-fetch, then answered from the cache.
    let c1 = client("c1");
    assert_eq!(s.acl_check(&c1, "open/x", Access::Write), Decision::Deny);
    assert_eq!(s.acl_check(&c1, "closed/x", Access::Write), Decision::Deny);
    let hits = wait_for(&srv, 2 + 2 + 2 + 2);
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.acl_check(&c1, "open/x", Access::Write) != Decision::Allow {
        assert!(Instant::now() < deadline, "the fetched answer arrives");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(s.acl_check(&c1, "closed/x", Access::Write), Decision::Deny);
    assert_eq!(
        srv.hits.load(Ordering::SeqCst),
        hits,
        "answered from the cache"
    );
    let last = srv.bodies.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last["acc"].as_u64(), Some(2));
    // What a cached answer costs on the delivery path (the number in docs/PLUGINS.md).
    let n = 100_000;
    let start = Instant::now();
    for _ in 0..n {
        assert_eq!(s.acl_check(&c1, "open/x", Access::Write), Decision::Allow);
    }
    println!("cached ACL check: {:?}", start.elapsed() / n);
}

fn wait_for(srv: &Server, n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    while srv.hits.load(Ordering::SeqCst) < n {
        assert!(
            Instant::now() < deadline,
            "{} requests",
            srv.hits.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(50));
    srv.hits.load(Ordering::SeqCst)
}

#[test]
fn reload_switches_server_and_forgets_cached_answers() {
    let (a, b) = (server(emqx), server(emqx));
    let (p, mut s) = plugin(&[("http_auth_url", format!("http://{}/auth", a.addr))]);
    assert_eq!(auth(&mut *s, "c", "alice", "pw"), Decision::Allow);
    let opts = [(
        "http_auth_url".to_string(),
        format!("http://{}/auth", b.addr),
    )];
    p.configure(&opts.into_iter().collect()).unwrap();
    s.reload();
    assert_eq!(auth(&mut *s, "c", "alice", "pw"), Decision::Allow);
    assert_eq!(
        (a.hits.load(Ordering::SeqCst), b.hits.load(Ordering::SeqCst)),
        (1, 1)
    );
    // A refused reload keeps the old options.
    let bad = [("http_auth_url".to_string(), "nope".to_string())];
    assert!(p.configure(&bad.into_iter().collect()).is_err());
    s.reload();
    assert_eq!(auth(&mut *s, "d", "mallory", "pw"), Decision::Deny);
    assert_eq!(b.hits.load(Ordering::SeqCst), 2);
}
