//! The metrics endpoint (`metrics_listener PORT [ADDRESS]`): a small HTTP/1.1 server on its
//! own thread that serves the broker's counters to Prometheus (`GET /metrics`) and the `$SYS`
//! tree as JSON (`GET /api/v1/systree`, as mosquitto 2.1's `http_api` does, and
//! `GET /api/v1/version`).
//!
//! It reads only what the shards already publish: their counters, stored once per tick
//! (`Shared::shard_stats`), and the `$SYS` tree shard 0 computes (`Shared::sys_snapshot`), so
//! a scrape costs the shards nothing and the endpoint never touches a shard's state. It is not an MQTT listener: no authentication, loopback by default.
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
use std::time::{Duration, Instant};

use http::Status;
use server::{Reply, Server};

use crate::shard::stats::Stats;
use crate::shard::Shared;

/// How often the endpoint asks for a `$SYS` snapshot even when no one scrapes: shard 0
/// refreshes it (once a second) only while it is asked for at least once a minute, and an
/// answer should never be older than that second.
const KEEP_WARM: Duration = Duration::from_secs(20);

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
    let watcher = shared.clone();
    let mut asked = None::<Instant>;
    let keep_running = move || {
        if asked.is_none_or(|at| at.elapsed() >= KEEP_WARM) {
            watcher.sys_snapshot();
            asked = Some(Instant::now());
        }
        !watcher.is_shutting_down()
    };
    let server = Server::new(
        mio::net::TcpListener::from_std(listener),
        move |method, path| answer(&shared, started, method, path),
        keep_running,
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
    match path {
        "/metrics" => {
            // Counters as of each shard's last tick; the retained figures and the per-second
            // ones as of the last $SYS computation (at most about a second old), so that a
            // scrape never takes the retained store's lock.
            let shards = shared.shard_stats();
            let snap = shared.sys_snapshot();
            let mut total = Stats::default();
            shards.iter().for_each(|s| total.add(s));
            total.retained = snap.total.retained;
            total.retained_bytes = snap.total.retained_bytes;
            Reply {
                status: Status::Ok,
                content_type: prometheus::CONTENT_TYPE,
                body: prometheus::render(
                    &shards,
                    &snap.shards,
                    &total,
                    started.elapsed().as_secs(),
                    shared.io_backend.get().copied().unwrap_or("epoll"),
                ),
            }
        }
        "/api/v1/systree" => {
            let snap = shared.sys_snapshot();
            Reply {
                status: Status::Ok,
                content_type: systree::CONTENT_TYPE,
                body: systree::render(snap.topics.iter().map(|(t, v)| (t.as_ref(), v.as_str()))),
            }
        }
        "/api/v1/version" => text(Status::Ok, env!("CARGO_PKG_VERSION")),
        _ => text(Status::NotFound, "not found\n"),
    }
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
