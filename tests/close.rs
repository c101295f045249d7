//! Every close is seen at once (issue 11, item 2): a client that sends its last packets and
//! its FIN together must not leave a connection behind (CLOSE-WAIT until 1.5 x keep-alive, or
//! forever with keep-alive 0), its will must be published, and it must stop counting against
//! `max_connections`. Also: memory that a fleet of large partial PUBLISHes took comes back.

mod common;

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use common::raw::{self, tcp_stream as tcp, Connect, Raw};
use common::{eventually, fd_count, Broker};

/// CONNECT with a will on `will/<i>`, a QoS 0 PUBLISH, then the FIN: all written before the
/// broker reads anything. The socket is returned still open for reading, so that the broker's
/// CONNACK is taken and nothing turns the FIN into a reset (which the broker would see anyway).
fn publish_and_close(port: u16, i: usize, keepalive: u16) -> TcpStream {
    let id = format!("pc-{i}");
    let connect =
        Connect::new(&id)
            .keepalive(keepalive)
            .will(&format!("will/{i}"), b"gone", 0, false);
    let mut bytes = connect.encode();
    bytes.extend(raw::publish(
        &format!("data/{i}"),
        b"last words",
        0,
        false,
        0,
    ));
    let mut s = tcp(port);
    // A client refused at accept (max_connections) may find the socket reset already.
    let _ = s.write_all(&bytes);
    let _ = s.shutdown(Shutdown::Write);
    s
}

/// Counts the PUBLISHes (QoS 0) that arrive until `n` did or `limit` passed.
fn count_publishes(sub: &mut Raw, n: usize, limit: Duration) -> usize {
    let deadline = std::time::Instant::now() + limit;
    let mut got = 0;
    while got < n {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match sub.recv(left) {
            Ok(p) if p.kind() == raw::PUBLISH => got += 1,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    got
}

/// 200 clients publish and close: every will arrives and the broker holds no socket for any
/// of them (its fd count returns to what it was before).
fn fleet_closes(keepalive: u16) {
    let broker = Broker::start();
    let port = broker.port();
    let mut sub = Raw::connected(port, "will-watcher");
    sub.subscribe(1, &[("will/#", 0)]);
    let baseline = fd_count(broker.pid());
    let clients: Vec<TcpStream> = (0..200)
        .map(|i| publish_and_close(port, i, keepalive))
        .collect();
    let wills = count_publishes(&mut sub, 200, Duration::from_secs(10));
    let open = || fd_count(broker.pid());
    let closed = eventually(Duration::from_secs(5), || open() <= baseline);
    let left = open().saturating_sub(baseline);
    drop(clients);
    assert_eq!(wills, 200, "wills published (keep-alive {keepalive})");
    assert!(
        closed,
        "{left} connections still open in the broker (keep-alive {keepalive})"
    );
    sub.ping();
}

#[test]
fn clients_that_publish_and_close_leave_nothing_behind() {
    common::raise_open_file_limit(4096);
    fleet_closes(60);
}

#[test]
fn clients_with_keep_alive_zero_that_publish_and_close_leave_nothing_behind() {
    common::raise_open_file_limit(4096);
    fleet_closes(0);
}

#[test]
fn closed_connections_stop_counting_against_max_connections() {
    common::raise_open_file_limit(4096);
    let broker = Broker::start_with(&["max_connections 200"]);
    let port = broker.port();
    // 1000 rather than 600: before the fix, 600 left about 190 connections stuck on this
    // machine (a few slots free); 1000 fill all 200.
    let clients: Vec<TcpStream> = (0..1000).map(|i| publish_and_close(port, i, 60)).collect();
    // The broker refuses at accept while 200 are open; once it has seen every FIN a new
    // client gets in.
    let got_in = eventually(Duration::from_secs(10), || {
        let mut c = Raw::tcp(port);
        c.send(&Connect::new("newcomer").encode());
        matches!(c.recv(Duration::from_secs(1)), Ok(p) if p.kind() == raw::CONNACK && p.body[1] == 0)
    });
    drop(clients);
    assert!(got_in, "a new client was refused after 1000 clients closed");
}

/// The same over TLS: 50 clients send CONNECT, PUBLISH and their FIN (without close_notify)
/// in one go; every will arrives and no socket is left open.
#[test]
fn tls_clients_that_publish_and_close_leave_nothing_behind() {
    use common::tls::{strs, Certs, TlsRaw};
    const N: usize = 50;
    let certs = Certs::generate();
    let broker = Broker::start_with(&strs(&certs.server_lines()));
    let port = broker.port();
    let mut sub = TlsRaw::connect(&certs, port);
    sub.send(&Connect::new("tls-will-watcher").encode());
    assert_eq!(sub.recv().0 >> 4, raw::CONNACK);
    sub.send(&raw::subscribe(1, &[("will/#", 0)]));
    assert_eq!(sub.recv().0 >> 4, raw::SUBACK);
    let baseline = fd_count(broker.pid());
    let clients: Vec<TlsRaw> = (0..N)
        .map(|i| {
            let mut c = TlsRaw::connect(&certs, port);
            let connect = Connect::new(&format!("tls-pc-{i}")).keepalive(60).will(
                &format!("will/{i}"),
                b"gone",
                0,
                false,
            );
            let mut bytes = connect.encode();
            bytes.extend(raw::publish(
                &format!("data/{i}"),
                b"last words",
                0,
                false,
                0,
            ));
            c.send(&bytes);
            c.shutdown_write();
            c
        })
        .collect();
    // `recv` panics if a will does not come within its time-out.
    for _ in 0..N {
        assert_eq!(sub.recv().0 >> 4, raw::PUBLISH);
    }
    let closed = eventually(Duration::from_secs(5), || {
        fd_count(broker.pid()) <= baseline
    });
    let left = fd_count(broker.pid()).saturating_sub(baseline);
    drop(clients);
    assert!(closed, "{left} TLS connections still open in the broker");
}

/// 16 clients x 8 MB partial PUBLISH then close, eight rounds (issue 11, item 2): the
/// broker's memory comes back near its baseline (buffers freed at the close, and given back
/// to the OS).
#[test]
fn memory_of_large_partial_publishes_is_returned_after_close() {
    const CLIENTS: usize = 16;
    const ANNOUNCED: usize = 8 * 1024 * 1024;
    const SENT: usize = ANNOUNCED - 64 * 1024;
    let broker = Broker::start_with(&["max_packet_size 16777216"]);
    let port = broker.port();
    let pid = broker.pid();
    let mut bystander = Raw::connected(port, "bystander");
    bystander.ping();
    let baseline = common::rss_kib(pid);
    let fds = fd_count(pid);
    let mut peak = 0;
    for round in 0..8 {
        let threads: Vec<_> = (0..CLIENTS)
            .map(|i| {
                std::thread::spawn(move || {
                    let mut c = Raw::connected(port, &format!("big-{round}-{i}"));
                    // PUBLISH QoS 0 to "big": type byte, remaining length, topic, payload.
                    let mut head = vec![0x30];
                    head.extend(raw::encode_len(ANNOUNCED));
                    head.extend(raw::mqtt_str(b"big"));
                    c.send(&head);
                    let chunk = vec![0x5a; 256 * 1024];
                    let mut sent = 5;
                    while sent < SENT {
                        let n = chunk.len().min(SENT - sent);
                        c.send(&chunk[..n]);
                        sent += n;
                    }
                    // Dropped: closed mid-packet.
                })
            })
            .collect();
        for t in threads {
            t.join().expect("client thread");
        }
        peak = peak.max(common::rss_kib(pid));
        assert!(
            eventually(Duration::from_secs(10), || fd_count(pid) <= fds),
            "round {round}: connections still open"
        );
    }
    bystander.ping();
    let margin = 48 * 1024;
    let back = eventually(Duration::from_secs(10), || {
        common::rss_kib(pid) <= baseline + margin
    });
    let now = common::rss_kib(pid);
    eprintln!("RSS: baseline {baseline} KiB, peak seen {peak} KiB, after {now} KiB");
    assert!(
        back,
        "RSS {now} KiB after the rounds (baseline {baseline} KiB, peak {peak} KiB)"
    );
}
