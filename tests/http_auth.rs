//! `plugin builtin:http` (issue 17) with real clients (mosquitto_pub, paho-mqtt 5 through
//! tests/py/v5_client.py, rumqttc) against an HTTP server the test runs on a thread: EMQX's
//! shape (allow, deny, ignore falling through to the password file, superuser, cache) and
//! mosquitto-go-auth's (ACL with deny-and-fetch), a timeout that holds up nobody else, a
//! server that is down.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::auth_files::AuthFiles;
use common::clients::{Paho, Rumq};
use common::tls::Certs;
use common::{run, STEP};
use serde_json::{json, Value};

/// Answers (status, body, delay ms) for one request's path and JSON body.
type Answer = fn(&str, &Value) -> (u16, String, u64);

/// An HTTP server on a thread (one thread per request, so a slow answer holds up no other);
/// counts requests; stops accepting after 60 s.
struct Server {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl Server {
    fn start(answer: Answer) -> Server {
        Server::start_with(answer, None)
    }

    /// The same over TLS with this server configuration.
    fn start_with(answer: Answer, tls: Option<Arc<rustls::ServerConfig>>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(60);
            while Instant::now() < end {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let h = h.clone();
                        let tls = tls.clone();
                        std::thread::spawn(move || {
                            let _ = conn.set_nonblocking(false);
                            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                            match tls {
                                None => serve(conn, answer, &h),
                                Some(config) => {
                                    let Ok(tls) = rustls::ServerConnection::new(config) else {
                                        return;
                                    };
                                    serve(rustls::StreamOwned::new(tls, conn), answer, &h)
                                }
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Server { addr, hits }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn serve(mut conn: impl Read + Write, answer: Answer, hits: &AtomicUsize) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    let (path, body) = loop {
        let n = match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_lowercase()
                    .strip_prefix("content-length:")
                    .map(str::to_string)
            })
            .map_or(0, |v| v.trim().parse().unwrap_or(0));
        if buf.len() >= end + 4 + len {
            let path = head.split(' ').nth(1).unwrap_or("/").to_string();
            break (path, buf[end + 4..end + 4 + len].to_vec());
        }
    };
    hits.fetch_add(1, Ordering::SeqCst);
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (status, text, delay) = answer(&path, &json);
    std::thread::sleep(Duration::from_millis(delay));
    let _ = write!(
        conn,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
        text.len()
    );
    let _ = conn.flush();
}

fn emqx(_path: &str, v: &Value) -> (u16, String, u64) {
    let body = match v["username"].as_str().unwrap_or("") {
        "alice" if v["password"] == "pw" => r#"{"result":"allow"}"#,
        "root" => r#"{"result":"allow","is_superuser":true}"#,
        "nobody" => r#"{"result":"ignore"}"#,
        "slow" => return (200, r#"{"result":"allow"}"#.into(), 3000),
        _ => r#"{"result":"deny"}"#,
    };
    (200, body.into(), 0)
}

fn go_auth(path: &str, v: &Value) -> (u16, String, u64) {
    let ok = match path {
        "/user" => v["password"] == "pw",
        "/superuser" => false,
        "/acl" => v["topic"].as_str().is_some_and(|t| t.starts_with("ok/")),
        _ => false,
    };
    if ok {
        (200, r#"{"ok":true,"error":""}"#.into(), 0)
    } else {
        (403, r#"{"ok":false,"error":"no"}"#.into(), 0)
    }
}

/// mosquitto_pub with ARGS (QoS 1 to see the CONNACK and PUBACK); whether it succeeded and
/// how long it took.
fn try_pub(port: u16, args: &[&str]) -> (bool, Duration) {
    let start = Instant::now();
    let out = run(
        Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
            .args(args),
        Duration::from_secs(15),
    );
    (out.success(), start.elapsed())
}

fn login(port: u16, user: &str, pw: &str) -> bool {
    try_pub(port, &["-u", user, "-P", pw, "-t", "alice/t", "-m", "x"]).0
}

fn paho(port: u16, steps: Value) -> Paho {
    Paho::spawn("v5_client.py", port, &["--steps", &steps.to_string()])
}

#[test]
fn emqx_allow_deny_ignore_superuser_and_cache() {
    if !common::is_midge() {
        return; // builtin plugins are midge's own
    }
    let srv = Server::start(emqx);
    let files = AuthFiles::new(
        &[("nobody", "secret")],
        "user alice\ntopic readwrite alice/#\n",
    );
    let url = format!("plugin_opt_http_auth_url {}", srv.url("/auth"));
    let b = files.broker(false, &["shards 2", "plugin builtin:http", &url]);
    let p = b.port();
    assert!(login(p, "alice", "pw"), "the server allows alice");
    assert!(!login(p, "mallory", "pw"), "the server denies mallory");
    assert!(
        !login(p, "alice", "wrong"),
        "the server denies a wrong password"
    );
    // `ignore` passes to the next plugin (here the password file), whether a worker answered
    // it (a deferred Pass resumes the chain after the plugin that deferred) or the cache did.
    assert!(
        login(p, "nobody", "secret"),
        "ignore, deferred: the password file decides"
    );
    assert!(
        login(p, "nobody", "secret"),
        "ignore, cached: the password file decides"
    );
    assert!(
        !login(p, "nobody", "wrong"),
        "ignore: the password file refuses"
    );
    // Cached (30 s by default): the same credentials again do not reach the server.
    let before = srv.hits();
    assert!(login(p, "alice", "pw"));
    assert!(!login(p, "mallory", "pw"));
    assert_eq!(srv.hits(), before, "answered from the cache");

    // A superuser passes every ACL check; alice only has alice/#.
    let mut root = paho(
        p,
        json!([
            {"op": "connect", "id": "root", "username": "root", "password": "x"},
            {"op": "subscribe", "subs": [{"topic": "secret/#", "qos": 1}]},
            {"op": "publish", "topic": "secret/a", "payload": "s", "qos": 1},
            {"op": "messages", "count": 1, "timeout": 10},
            {"op": "disconnect"}
        ]),
    );
    assert_eq!(root.expect_event("connack")["rc"], 0);
    assert_eq!(root.expect_event("suback")["codes"], json!([1]));
    assert_eq!(root.messages(1, STEP).len(), 1);
    root.finish(STEP);
    let mut alice = paho(
        p,
        json!([
            {"op": "connect", "id": "al", "username": "alice", "password": "pw"},
            {"op": "subscribe", "subs": [{"topic": "secret/#", "qos": 1}]},
            {"op": "disconnect"}
        ]),
    );
    assert_eq!(alice.expect_event("connack")["rc"], 0);
    let codes = alice.expect_event("suback")["codes"].clone();
    assert!(codes[0].as_u64().unwrap() >= 0x80, "alice refused: {codes}");
    alice.finish(STEP);
    assert!(!b.log().contains("\"pw\""), "the password is never logged");
}

#[test]
fn a_timeout_denies_logs_and_holds_up_no_other_client() {
    if !common::is_midge() {
        return; // builtin plugins are midge's own
    }
    let srv = Server::start(emqx);
    let url = format!("plugin_opt_http_auth_url {}", srv.url("/auth"));
    let b = common::Broker::start_with(&[
        "shards 1",
        "plugin builtin:http",
        &url,
        "plugin_opt_http_timeout_ms 1500",
    ]);
    let p = b.port();
    let started = Instant::now();
    let slow =
        std::thread::spawn(move || try_pub(p, &["-u", "slow", "-P", "x", "-t", "s", "-m", "x"]));
    std::thread::sleep(Duration::from_millis(100));
    // Anonymous (no credentials: the plugin is not asked) round trip on the same shard.
    let (mut other, _) = Rumq::connect(p, "other", true);
    other.subscribe("rt/x", 1);
    other.publish("rt/x", "ping", 1, false);
    assert_eq!(other.messages(1, STEP).len(), 1);
    let round_trip = started.elapsed();
    assert!(
        round_trip < Duration::from_millis(1300),
        "held up: {round_trip:?}"
    );
    let (ok, took) = slow.join().unwrap();
    assert!(!ok, "a timed-out check denies");
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_millis(2950),
        "{took:?}"
    );
    assert!(
        b.wait_log_contains_any(&["timed out after 1500 ms"], STEP),
        "the timeout is logged:\n{}",
        b.log()
    );
}

#[test]
fn a_server_that_is_down_denies() {
    if !common::is_midge() {
        return; // builtin plugins are midge's own
    }
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("plugin_opt_http_auth_url http://{dead}/auth");
    let b = common::Broker::start_with(&["plugin builtin:http", &url]);
    assert!(!login(b.port(), "alice", "pw"));
    assert!(b.wait_log_contains_any(&["denied"], STEP), "{}", b.log());
}

#[test]
fn go_auth_shape_with_acl_deny_and_fetch() {
    if !common::is_midge() {
        return; // builtin plugins are midge's own
    }
    let srv = Server::start(go_auth);
    let lines = [
        "plugin builtin:http".to_string(),
        "plugin_opt_http_shape go-auth".into(),
        format!("plugin_opt_http_auth_url {}", srv.url("/user")),
        format!("plugin_opt_http_superuser_url {}", srv.url("/superuser")),
        format!("plugin_opt_http_acl_url {}", srv.url("/acl")),
    ];
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let b = common::Broker::start_with(&lines);
    let p = b.port();
    assert!(!login(p, "alice", "bad"), "403 denies");
    // The first check of each (client, topic, access) is refused while it is fetched; the
    // same SUBSCRIBE a moment later is answered from the cache.
    let mut c = paho(
        p,
        json!([
            {"op": "connect", "id": "g1", "username": "alice", "password": "pw"},
            {"op": "subscribe", "subs": [{"topic": "ok/a", "qos": 1}, {"topic": "no/a", "qos": 1}]},
            {"op": "sleep", "secs": 0.5},
            {"op": "subscribe", "subs": [{"topic": "ok/a", "qos": 1}, {"topic": "no/a", "qos": 1}]},
            {"op": "publish", "topic": "ok/a", "payload": "1", "qos": 1},
            {"op": "sleep", "secs": 0.5},
            {"op": "publish", "topic": "ok/a", "payload": "2", "qos": 1},
            {"op": "sleep", "secs": 0.5},
            {"op": "publish", "topic": "ok/a", "payload": "3", "qos": 1},
            {"op": "messages", "count": 1, "timeout": 10},
            {"op": "disconnect"}
        ]),
    );
    assert_eq!(c.expect_event("connack")["rc"], 0);
    let first = c.expect_event("suback")["codes"].clone();
    assert_eq!(first, json!([135, 135]), "deny-and-fetch");
    assert_eq!(c.expect_event("suback")["codes"], json!([1, 135]));
    assert_eq!(
        c.expect_event("published")["rc"],
        135,
        "first publish: fetched"
    );
    assert_eq!(
        c.expect_event("published")["rc"],
        0,
        "second publish: cached allow"
    );
    // Receive (acc 1) was fetched on the second message; the third is delivered.
    let got = c.messages(1, STEP);
    assert_eq!(got[0].payload, "3", "{got:?}");
    c.finish(STEP);
}

#[test]
fn https_with_a_cafile() {
    if !common::is_midge() {
        return; // builtin plugins are midge's own
    }
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = Certs::generate();
    let chain = CertificateDer::pem_file_iter(certs.path("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(certs.path("server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let srv = Server::start_with(emqx, Some(Arc::new(config)));
    let url = format!("plugin_opt_http_auth_url https://{}/auth", srv.addr);
    let ca = format!("plugin_opt_http_cafile {}", certs.path("ca.pem"));
    let b = common::Broker::start_with(&["plugin builtin:http", &url, &ca]);
    assert!(
        login(b.port(), "alice", "pw"),
        "allowed over https:\n{}",
        b.log()
    );
    assert!(!login(b.port(), "mallory", "pw"));
    assert_eq!(srv.hits(), 2);
    // A server whose certificate the CA file does not vouch for is refused (and logged).
    let other = format!("plugin_opt_http_cafile {}", certs.path("other-ca.pem"));
    let b = common::Broker::start_with(&["plugin builtin:http", &url, &other]);
    assert!(!login(b.port(), "alice", "pw"));
    assert!(b.wait_log_contains_any(&["denied"], STEP), "{}", b.log());
}
