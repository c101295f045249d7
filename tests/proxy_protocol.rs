//! The PROXY protocol (`proxy_protocol true`, mosquitto's `enable_proxy_protocol 1|2`) and a
//! trusted `X-Forwarded-For` (`websockets_trust_x_forwarded_for true`), from raw sockets: the
//! client a header names is the client in the log and in `max_connections_per_ip`; bad,
//! truncated and slow headers close only their connection; a listener that did not opt in
//! treats a header as the malformed MQTT it is; TLS and WebSocket listeners read the header
//! before their own handshakes.
//!
//! midge only: Debian's mosquitto (2.0) has no PROXY protocol (2.1 has it, one version per
//! listener); each test returns early under `MIDGE_TEST_BROKER=mosquitto`.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::raw::{Connect, Raw, CONNACK};
use common::tls::{Certs, TlsRaw};
use common::ws::{upgrade_request, WsClient};
use common::{broker_kind, config_text, free_port, is_midge, Broker, STEP};

const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// A version 2 header: command (0 LOCAL, 1 PROXY), family byte, address block and TLVs.
fn v2(command: u8, family: u8, block: &[u8]) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.push(0x20 | command);
    h.push(family);
    h.extend_from_slice(&(block.len() as u16).to_be_bytes());
    h.extend_from_slice(block);
    h
}

/// A version 2 TCP over IPv4 address block: source, destination, their ports.
fn v2_inet(src: [u8; 4], sport: u16) -> Vec<u8> {
    let mut b = src.to_vec();
    b.extend_from_slice(&[10, 0, 0, 1]);
    b.extend_from_slice(&sport.to_be_bytes());
    b.extend_from_slice(&1883u16.to_be_bytes());
    b
}

/// A broker whose harness listener is plain MQTT (no PROXY header allowed), plus a
/// `proxy_protocol true` listener on `proxied` and `extra` lines of the test's own.
struct ProxyBroker {
    broker: Broker,
    proxied: u16,
}

impl ProxyBroker {
    fn start(extra: &[&str]) -> ProxyBroker {
        ProxyBroker::start_with_listeners(extra, "")
    }

    /// `listeners`: more listener blocks after the proxied one.
    fn start_with_listeners(extra: &[&str], listeners: &str) -> ProxyBroker {
        let proxied = free_port();
        let kind = broker_kind();
        let broker = Broker::start_config(|port| {
            format!(
                "{}listener {proxied} 127.0.0.1\nproxy_protocol true\n{listeners}",
                config_text(kind, port, extra)
            )
        });
        wait_port(proxied);
        ProxyBroker { broker, proxied }
    }

    fn log(&self) -> String {
        self.broker.log()
    }

    /// Waits for `needle` in the log; panics with the log if it does not come.
    fn expect_log(&self, needle: &str) {
        assert!(
            self.broker.wait_log_contains_any(&[needle], STEP),
            "no {needle:?} in the log:\n{}",
            self.log()
        );
    }
}

/// The harness waits for its own port only.
fn wait_port(port: u16) {
    let deadline = Instant::now() + STEP;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `header`, then CONNECT as `id` (in the same write when `together`); CONNACK 0.
fn connect_through(port: u16, header: &[u8], id: &str, together: bool) -> Raw {
    let mut c = Raw::tcp(port);
    let connect = Connect::new(id).encode();
    if together {
        c.send(&[header, &connect].concat());
    } else {
        c.send(header);
        std::thread::sleep(Duration::from_millis(30));
        c.send(&connect);
    }
    let p = c.expect(CONNACK);
    assert_eq!(p.body.get(1), Some(&0), "CONNACK refused for {id}: {p:?}");
    c
}

fn midge_only() -> bool {
    if !is_midge() {
        eprintln!("note: Debian's mosquitto has no PROXY protocol");
    }
    is_midge()
}

#[test]
fn version_1_names_the_client_in_the_log() {
    if !midge_only() {
        return;
    }
    let b = ProxyBroker::start(&[]);
    let _a = connect_through(
        b.proxied,
        b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 1883\r\n",
        "v1-tcp4",
        true,
    );
    b.expect_log("New client connected from 192.0.2.7:56324 as v1-tcp4");
    let _b = connect_through(
        b.proxied,
        b"PROXY TCP6 2001:db8::7 2001:db8::1 4711 1883\r\n",
        "v1-tcp6",
        false,
    );
    b.expect_log("New client connected from [2001:db8::7]:4711 as v1-tcp6");
    // A header in pieces, its last piece in one segment with CONNECT.
    let mut c = Raw::tcp(b.proxied);
    let header = b"PROXY TCP4 192.0.2.9 10.0.0.1 1234 1883\r\n";
    for piece in [&header[..3], &header[3..20]] {
        c.send(piece);
        std::thread::sleep(Duration::from_millis(50));
    }
    c.send(&[&header[20..], Connect::new("v1-pieces").encode().as_slice()].concat());
    assert_eq!(c.expect(CONNACK).body.get(1), Some(&0));
    b.expect_log("New client connected from 192.0.2.9:1234 as v1-pieces");
    // UNKNOWN: the proxy could not say; the socket's address stays.
    let _c = connect_through(b.proxied, b"PROXY UNKNOWN\r\n", "v1-unknown", true);
    b.expect_log("New client connected from 127.0.0.1:");
    assert!(
        b.log().contains("127.0.0.1") && b.log().contains("as v1-unknown"),
        "{}",
        b.log()
    );
}

#[test]
fn version_2_proxy_and_local_with_tlvs() {
    if !midge_only() {
        return;
    }
    let b = ProxyBroker::start(&[]);
    let mut block = v2_inet([198, 51, 100, 20], 40000);
    block.extend_from_slice(&[0x01, 0, 4, b'm', b'q', b't', b't']); // ALPN
    block.extend_from_slice(&[0x02, 0, 9]); // authority
    block.extend_from_slice(b"broker.io");
    block.extend_from_slice(&[0xEA, 0, 3, 1, 2, 3]); // a vendor's TLV, skipped
    let _a = connect_through(b.proxied, &v2(1, 0x11, &block), "v2-inet", true);
    b.expect_log("New client connected from 198.51.100.20:40000 as v2-inet");

    let mut block6 = vec![0u8; 36];
    block6[..16].copy_from_slice(
        &"2001:db8::99"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    block6[32..34].copy_from_slice(&5555u16.to_be_bytes());
    let _b = connect_through(b.proxied, &v2(1, 0x21, &block6), "v2-inet6", false);
    b.expect_log("New client connected from [2001:db8::99]:5555 as v2-inet6");

    // LOCAL (a health check) with an address block: ignored, the socket's address stays.
    let _c = connect_through(b.proxied, &v2(0, 0x11, &block), "v2-local", true);
    // UNIX: no IP to give; the socket's address stays.
    let _d = connect_through(b.proxied, &v2(1, 0x31, &[0u8; 216]), "v2-unix", true);
    b.expect_log("as v2-unix");
    let log = b.log();
    for id in ["v2-local", "v2-unix"] {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("as {id} ")))
            .unwrap();
        assert!(line.contains("from 127.0.0.1:"), "{line}");
    }
}

#[test]
fn bad_and_truncated_headers_close_only_their_connection() {
    if !midge_only() {
        return;
    }
    let b = ProxyBroker::start(&[]);
    let mut healthy = connect_through(b.proxied, b"PROXY UNKNOWN\r\n", "healthy", true);
    let long_v2 = {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        h
    };
    let mut bad_tlv = v2_inet([192, 0, 2, 1], 1);
    bad_tlv.extend_from_slice(&[0x04, 0, 200, 0]);
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("MQTT without a header", Connect::new("no-header").encode()),
        (
            "v1 with a UDP family",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
        ),
        (
            "v1 missing a port",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n".to_vec(),
        ),
        (
            "v1 port out of range",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 70000 1\r\n".to_vec(),
        ),
        ("v1 IPv6 under TCP4", b"PROXY TCP4 ::1 ::1 1 2\r\n".to_vec()),
        (
            "v1 longer than 107 bytes",
            [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 120]].concat(),
        ),
        ("v2 version 3", {
            let mut h = v2(1, 0x11, &v2_inet([1, 2, 3, 4], 1));
            h[12] = 0x31;
            h
        }),
        ("v2 command 2", {
            let mut h = v2(1, 0x11, &v2_inet([1, 2, 3, 4], 1));
            h[12] = 0x22;
            h
        }),
        ("v2 address block too short", v2(1, 0x11, &[1, 2, 3])),
        ("v2 length 65535", long_v2),
        ("v2 TLV past the end", v2(1, 0x11, &bad_tlv)),
        ("HTTP", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
    ];
    for (what, bytes) in &bad {
        let mut c = Raw::tcp(b.proxied);
        c.send(bytes);
        let got = c.expect_closed(STEP);
        assert!(got.is_empty(), "{what}: answered {got:?}");
        healthy.ping();
    }
    // Truncated: part of a header, then the end of the stream.
    for part in [
        &b"PROXY TCP4 192.0.2.7 10.0"[..],
        &v2(1, 0x11, &v2_inet([1, 2, 3, 4], 1))[..20],
        &V2_SIGNATURE[..5],
    ] {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", b.proxied)).unwrap();
        c.write_all(part).unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        c.set_read_timeout(Some(STEP)).unwrap();
        let mut rest = Vec::new();
        let read = c.read_to_end(&mut rest);
        assert!(
            read.is_ok() && rest.is_empty(),
            "a truncated header was answered: {read:?} {rest:?}"
        );
        healthy.ping();
    }
    assert!(
        b.log().contains("PROXY"),
        "the log names the header:\n{}",
        b.log()
    );
    healthy.ping();
}

#[test]
fn a_slow_header_is_closed_at_the_connect_deadline() {
    if !midge_only() {
        return;
    }
    let b = ProxyBroker::start(&["connect_timeout 2"]);
    let mut healthy = connect_through(b.proxied, b"PROXY UNKNOWN\r\n", "healthy", true);
    // A valid start of a version 2 header announcing 1024 bytes, then a byte every 20 ms:
    // never complete before the deadline, never malformed.
    let mut header = V2_SIGNATURE.to_vec();
    header.extend_from_slice(&[0x21, 0x11, 0x04, 0x00]);
    header.resize(16 + 1024, 0);
    let mut slow = Raw::tcp(b.proxied);
    let started = Instant::now();
    let mut closed_after = None;
    for byte in &header {
        slow.send(&[*byte]);
        if slow.is_closed_within(Duration::from_millis(20)) {
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let after = closed_after.expect("a slow header held its connection to the end");
    assert!(
        after >= Duration::from_millis(1500),
        "closed after {after:?}: before connect_timeout"
    );
    healthy.ping();
}

#[test]
fn per_address_limits_count_the_client_not_the_proxy() {
    if !midge_only() {
        return;
    }
    let b = ProxyBroker::start(&["max_connections_per_ip 2"]);
    let header = |ip: &str, port: u16| format!("PROXY TCP4 {ip} 10.0.0.1 {port} 1883\r\n");
    // Five connections from 127.0.0.1 (the proxy): it is not what is counted.
    let a1 = connect_through(b.proxied, header("192.0.2.7", 1).as_bytes(), "a1", true);
    let _a2 = connect_through(b.proxied, header("192.0.2.7", 2).as_bytes(), "a2", true);
    let _b1 = connect_through(b.proxied, header("192.0.2.8", 1).as_bytes(), "b1", true);
    let _b2 = connect_through(b.proxied, header("192.0.2.8", 2).as_bytes(), "b2", true);
    // A third from 192.0.2.7 is refused.
    let mut a3 = Raw::tcp(b.proxied);
    a3.send(
        &[
            header("192.0.2.7", 3).as_bytes(),
            &Connect::new("a3").encode(),
        ]
        .concat(),
    );
    assert!(
        a3.expect_closed(STEP).is_empty(),
        "a third from 192.0.2.7 got an answer"
    );
    b.expect_log("Refusing connection from 192.0.2.7:3: max_connections_per_ip reached");
    // Its slot comes back when one of its connections closes.
    a1.disconnect();
    let deadline = Instant::now() + STEP;
    loop {
        let mut c = Raw::tcp(b.proxied);
        c.send(
            &[
                header("192.0.2.7", 4).as_bytes(),
                &Connect::new("a4").encode(),
            ]
            .concat(),
        );
        match c.recv(Duration::from_secs(1)) {
            Ok(p) if p.kind() == CONNACK => break,
            _ => assert!(
                Instant::now() < deadline,
                "192.0.2.7's slot never came back"
            ),
        }
    }
    // The harness's listener counts sockets as before: 127.0.0.1 has none open there.
    let _direct = Raw::connected(b.broker.port(), "direct");
}

#[test]
fn a_listener_that_did_not_opt_in_refuses_a_header() {
    if !midge_only() {
        return;
    }
    let b = ProxyBroker::start(&[]);
    let plain = b.broker.port();
    let mut healthy = Raw::connected(plain, "healthy");
    for header in [
        b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 1883\r\n".to_vec(),
        v2(1, 0x11, &v2_inet([192, 0, 2, 7], 56324)),
    ] {
        let mut c = Raw::tcp(plain);
        c.send(&[header.as_slice(), &Connect::new("sneaky").encode()].concat());
        let got = c.expect_closed(STEP);
        assert!(got.is_empty(), "a PROXY header was served: {got:?}");
        healthy.ping();
    }
    assert!(!b.log().contains("192.0.2.7"), "{}", b.log());
}

#[test]
fn mosquittos_spelling_takes_one_version() {
    if !midge_only() {
        return;
    }
    let v1_only = free_port();
    let b = ProxyBroker::start_with_listeners(
        &[],
        &format!("listener {v1_only} 127.0.0.1\nenable_proxy_protocol 1\n"),
    );
    wait_port(v1_only);
    let _a = connect_through(
        v1_only,
        b"PROXY TCP4 192.0.2.70 10.0.0.1 1000 1883\r\n",
        "v1-only",
        true,
    );
    b.expect_log("from 192.0.2.70:1000 as v1-only");
    let mut c = Raw::tcp(v1_only);
    let header = v2(1, 0x11, &v2_inet([192, 0, 2, 71], 1));
    c.send(&[header.as_slice(), &Connect::new("v2-on-v1").encode()].concat());
    assert!(
        c.expect_closed(STEP).is_empty(),
        "a version 2 header on a version 1 listener"
    );
}

#[test]
fn tls_listeners_read_the_header_before_the_handshake() {
    if !midge_only() {
        return;
    }
    let certs = Certs::generate();
    let tls_port = free_port();
    let b = ProxyBroker::start_with_listeners(
        &[],
        &format!(
            "listener {tls_port} 127.0.0.1\nproxy_protocol true\n{}\n",
            certs.server_lines().join("\n")
        ),
    );
    wait_port(tls_port);
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", tls_port)).unwrap();
    sock.write_all(b"PROXY TCP4 203.0.113.30 10.0.0.1 7000 8883\r\n")
        .unwrap();
    let mut c = TlsRaw::over(&certs, sock);
    c.send(&Connect::new("over-tls").encode());
    let (first, body) = c.recv();
    assert_eq!((first >> 4, body.get(1)), (CONNACK, Some(&0)));
    b.expect_log("New client connected from 203.0.113.30:7000 as over-tls");

    // A TLS ClientHello with no header first: refused before any TLS.
    let sock = std::net::TcpStream::connect(("127.0.0.1", tls_port)).unwrap();
    sock.set_read_timeout(Some(STEP)).unwrap();
    let handshake = std::panic::catch_unwind(|| TlsRaw::over(&certs, sock));
    assert!(
        handshake.is_err(),
        "a TLS handshake without a PROXY header succeeded"
    );
}

/// A ws listener with `proxy_protocol true`, one that trusts `X-Forwarded-For`, and one that
/// does not.
fn ws_broker(extra: &[&str]) -> (ProxyBroker, u16, u16, u16) {
    let (ws_proxied, ws_trusting, ws_plain) = (free_port(), free_port(), free_port());
    let b = ProxyBroker::start_with_listeners(
        extra,
        &format!(
            "listener {ws_proxied} 127.0.0.1\nprotocol websockets\nproxy_protocol true\n\
             listener {ws_trusting} 127.0.0.1\nprotocol websockets\n\
             websockets_trust_x_forwarded_for true\n\
             listener {ws_plain} 127.0.0.1\nprotocol websockets\n"
        ),
    );
    for p in [ws_proxied, ws_trusting, ws_plain] {
        wait_port(p);
    }
    (b, ws_proxied, ws_trusting, ws_plain)
}

/// Upgrades with `extra` header lines (after an optional PROXY header) and connects as `id`.
fn ws_connect(port: u16, proxy_header: &[u8], extra: &str, id: &str) -> Result<WsClient, String> {
    let mut c = WsClient::tcp(port);
    c.send(proxy_header);
    let request =
        upgrade_request("/mqtt", Some("mqtt")).replace("\r\n\r\n", &format!("\r\n{extra}\r\n"));
    c.send(request.as_bytes());
    let head = c.read_head(STEP).map_err(|e| format!("{e:?}"))?;
    if !head.starts_with("HTTP/1.1 101") {
        return Err(head);
    }
    c.send_mqtt(&Connect::new(id).encode());
    let p = c.recv_mqtt(STEP).map_err(|e| format!("{e:?}"))?;
    assert_eq!((p.kind(), p.body.get(1)), (CONNACK, Some(&0)));
    Ok(c)
}

#[test]
fn websocket_listeners_read_the_header_before_the_upgrade() {
    if !midge_only() {
        return;
    }
    let (b, ws_proxied, _, _) = ws_broker(&[]);
    let _c = ws_connect(
        ws_proxied,
        &v2(1, 0x11, &v2_inet([203, 0, 113, 40], 8080)),
        "",
        "ws-proxied",
    )
    .unwrap();
    b.expect_log("New client connected from 203.0.113.40:8080 as ws-proxied");
    // No header: an upgrade request is not one.
    let refused = ws_connect(ws_proxied, b"", "", "ws-no-header");
    assert!(refused.is_err(), "served without a PROXY header");
}

#[test]
fn x_forwarded_for_counts_only_where_the_listener_trusts_it() {
    if !midge_only() {
        return;
    }
    let (b, _, ws_trusting, ws_plain) = ws_broker(&[]);
    let xff = "X-Forwarded-For: 203.0.113.50, 198.51.100.60\r\n";
    let _t = ws_connect(ws_trusting, b"", xff, "xff-trusted").unwrap();
    b.expect_log("New client connected from 198.51.100.60:0 as xff-trusted");
    let _u = ws_connect(ws_plain, b"", xff, "xff-ignored").unwrap();
    b.expect_log("as xff-ignored");
    let log = b.log();
    let line = log.lines().find(|l| l.contains("as xff-ignored ")).unwrap();
    assert!(line.contains("from 127.0.0.1:"), "{line}");
    // Without the header a trusting listener has only the socket to go by.
    let _n = ws_connect(ws_trusting, b"", "", "xff-none").unwrap();
    b.expect_log("as xff-none");
    let log = b.log();
    let line = log.lines().find(|l| l.contains("as xff-none ")).unwrap();
    assert!(line.contains("from 127.0.0.1:"), "{line}");
    // A value that is no address is refused where it would count.
    let bad = ws_connect(
        ws_trusting,
        b"",
        "X-Forwarded-For: not-an-ip\r\n",
        "xff-bad",
    );
    assert!(
        bad.as_ref()
            .is_err_and(|head| head.starts_with("HTTP/1.1 400")),
        "{:?}",
        bad.err()
    );
}

#[test]
fn a_trusted_forwarded_for_is_what_per_address_limits_count() {
    if !midge_only() {
        return;
    }
    let (b, _, ws_trusting, _) = ws_broker(&["max_connections_per_ip 1"]);
    let from = |ip: &str| format!("X-Forwarded-For: {ip}\r\n");
    // Two clients through one proxy (127.0.0.1): each has its own count.
    let _a = ws_connect(ws_trusting, b"", &from("192.0.2.30"), "xff-a").unwrap();
    let _b = ws_connect(ws_trusting, b"", &from("192.0.2.31"), "xff-b").unwrap();
    // A second from 192.0.2.30 is refused once its upgrade names it.
    let again = ws_connect(ws_trusting, b"", &from("192.0.2.30"), "xff-a2");
    assert!(
        again.is_err(),
        "a second connection from 192.0.2.30 was served"
    );
    b.expect_log("Refusing connection from 192.0.2.30:0: max_connections_per_ip reached");
}
