//! The metrics endpoint (`metrics_listener PORT [ADDRESS]`): a small HTTP/1.1 server on its
//! own thread that serves the broker's counters to Prometheus (`GET /metrics`) and the `$SYS`
//! tree as JSON (`GET /api/v1/systree`, as mosquitto 2.1's `http_api` does, and
//! `GET /api/v1/version`).
//!
//! It reads only what the shards already publish once per tick (`Shared::shard_stats`,
//! `Shared::stats`), so a scrape costs the shards nothing and the endpoint never touches a
//! shard's state. It is not an MQTT listener: no authentication, loopback by default.
//!
//! Why not hyper or tiny_http: three fixed GET paths need a bounded head parser and a
//! non-blocking loop (`http`, `server`), a few hundred lines on `mio`, which the broker already
//! uses; an HTTP framework would bring an async runtime or a thread per connection, and
//! bounds (head size, time, connections) that would have to be checked and configured anyway.

pub mod http;
mod prometheus;
mod server;
mod systree;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::Status;
use server::{Reply, Server};

use crate::shard::stats::Stats;
use crate::shard::Shared;

/// Binds `addr` and starts the endpoint's thread, which stops by itself once the broker is
/// shutting down. Returns the bound address (an ephemeral port resolved).
pub fn start(addr: SocketAddr, shared: Arc<Shared>) -> io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot open the metrics listener on {addr}: {e}"),
        )
    })?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let started = Instant::now();
    let stop_shared = shared.clone();
    let server = Server::new(
        mio::net::TcpListener::from_std(listener),
        move |method, path| answer(&shared, started, method, path),
        move || stop_shared.is_shutting_down(),
    )?;
    std::thread::Builder::new()
        .name("midge-metrics".into())
        .spawn(move || {
            if let Err(e) = server.run() {
                log::error!("Metrics endpoint stopped: {e}");
            }
        })?;
    log::info!("Opening metrics listen socket on {bound}.");
    Ok(bound)
}

/// The answer to `method path`.
fn answer(shared: &Shared, started: Instant, method: &str, path: &str) -> Reply {
    let text = |status, body: &str| Reply {
        status,
        content_type: "text/plain; charset=utf-8",
        body: body.to_owned(),
    };
    // The method first, as mosquitto's http_api does: every path here is read-only.
    if method != "GET" && method != "HEAD" {
        return text(Status::MethodNotAllowed, "only GET and HEAD\n");
    }
    if !matches!(path, "/metrics" | "/api/v1/systree" | "/api/v1/version") {
        return text(Status::NotFound, "not found\n");
    }
    let uptime = started.elapsed().as_secs();
    match path {
        "/metrics" => {
            let shards: Vec<Stats> = shared.shard_stats().collect();
            Reply {
                status: Status::Ok,
                content_type: prometheus::CONTENT_TYPE,
                body: prometheus::render(&shards, &shared.stats(), uptime),
            }
        }
        "/api/v1/systree" => {
            let pairs = sys_pairs(&shared.stats(), uptime);
            Reply {
                status: Status::Ok,
                content_type: systree::CONTENT_TYPE,
                body: systree::render(pairs.iter().map(|(t, v)| (*t, v.as_str()))),
            }
        }
        _ => text(Status::Ok, env!("CARGO_PKG_VERSION")),
    }
}

/// The `$SYS/broker/...` figures, named as mosquitto names them.
fn sys_pairs(s: &Stats, uptime: u64) -> Vec<(&'static str, String)> {
    let total = s.sessions.max(s.connections);
    vec![
        (
            "$SYS/broker/version",
            format!("midge version {}", env!("CARGO_PKG_VERSION")),
        ),
        ("$SYS/broker/uptime", format!("{uptime} seconds")),
        ("$SYS/broker/clients/total", total.to_string()),
        ("$SYS/broker/clients/connected", s.connections.to_string()),
        (
            "$SYS/broker/clients/disconnected",
            (total - s.connections).to_string(),
        ),
        (
            "$SYS/broker/clients/expired",
            s.sessions_expired.to_string(),
        ),
        ("$SYS/broker/messages/received", s.packets_in.to_string()),
        ("$SYS/broker/messages/sent", s.packets_out.to_string()),
        (
            "$SYS/broker/publish/messages/received",
            s.messages_in.to_string(),
        ),
        (
            "$SYS/broker/publish/messages/sent",
            s.messages_out.to_string(),
        ),
        (
            "$SYS/broker/publish/messages/dropped",
            s.publishes_dropped.to_string(),
        ),
        (
            "$SYS/broker/publish/bytes/received",
            s.publish_bytes_in.to_string(),
        ),
        (
            "$SYS/broker/publish/bytes/sent",
            s.publish_bytes_out.to_string(),
        ),
        ("$SYS/broker/bytes/received", s.bytes_in.to_string()),
        ("$SYS/broker/bytes/sent", s.bytes_out.to_string()),
        (
            "$SYS/broker/subscriptions/count",
            s.subscriptions.to_string(),
        ),
        (
            "$SYS/broker/retained messages/count",
            s.retained.to_string(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::net::SocketAddr;

    fn listener(text: &str) -> Option<SocketAddr> {
        Config::parse_str(text, "t.conf")
            .unwrap_or_else(|e| panic!("{e}"))
            .metrics_listener
    }

    fn error(text: &str) -> String {
        Config::parse_str(text, "t.conf").unwrap_err().to_string()
    }

    #[test]
    fn metrics_listener_is_off_by_default_and_loopback_without_an_address() {
        assert_eq!(listener(""), None);
        assert_eq!(
            listener("metrics_listener 9100"),
            Some("127.0.0.1:9100".parse().unwrap())
        );
        assert_eq!(
            listener("metrics_listener 9100 0.0.0.0 # all"),
            Some("0.0.0.0:9100".parse().unwrap())
        );
        assert_eq!(
            listener("metrics_listener 9100 ::1"),
            Some("[::1]:9100".parse().unwrap())
        );
    }

    #[test]
    fn bad_metrics_listener_values_name_the_line() {
        assert_eq!(
            error("\nmetrics_listener"),
            "t.conf:2: missing value for 'metrics_listener'"
        );
        assert_eq!(
            error("metrics_listener 70000"),
            "t.conf:1: bad value '70000' for 'metrics_listener': expected a whole number from 0 to 65535"
        );
        assert!(error("metrics_listener 9100 example.org").starts_with(
            "t.conf:1: bad value 'example.org' for 'metrics_listener': expected an IPv4 or IPv6"
        ));
        assert_eq!(
            error("metrics_listener 1 2 3"),
            "t.conf:1: bad value '1 2 3' for 'metrics_listener': expected PORT [ADDRESS]"
        );
    }
}
