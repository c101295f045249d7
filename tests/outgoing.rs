//! Outgoing connections (`midge::link`): a `Link` driven from a mio loop in the test connects
//! to a real broker, midge and Debian's mosquitto both (whatever `MIDGE_TEST_BROKER` says),
//! with MQTT 3.1.1 and 5.0, and exchanges QoS 0, 1 and 2 messages both ways with
//! `mosquitto_pub`/`mosquitto_sub`; once over TLS to midge with CA verification and a client
//! certificate, and once with a CA that must make the handshake fail.
//!
//! The broker runs with `max_inflight_messages 1`: its second QoS 1/2 message to the link is
//! only sent once the link has completed the first one's flow (PUBACK; PUBREC, PUBREL,
//! PUBCOMP), so receiving both proves the link acknowledges what it receives.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use midge::link::{CloseReason, Event, Link, SessionConfig};
use midge::protocol::{ByteStr, ProtocolVersion, QoS};
use midge::reactor::{Events, IoBackend, Reactor, Registry};
use midge::transport::{ClientTlsSettings, Connector};
use mio::Token;

use common::clients::{mosquitto_pub, MosqSub};
use common::tls::{strs, Certs};
use common::{unique_id, Broker, BrokerKind, STEP};

const LINK: Token = Token(7);

/// A link and the poll that drives it, with every event it has reported.
struct Driver {
    poll: Reactor,
    registry: Registry,
    events: Events,
    link: Link,
    seen: Vec<Event>,
}

impl Driver {
    fn connect(connector: &Connector, addr: SocketAddr, cfg: SessionConfig) -> Driver {
        // The backend the broker under test uses too (`MIDGE_IO_BACKEND`).
        let backend = IoBackend::from_env().unwrap().unwrap_or(IoBackend::Epoll);
        let (poll, registry, _waker) = Reactor::new(backend, Token(usize::MAX)).unwrap();
        let mut link = Link::connect(connector, addr, cfg, Instant::now()).unwrap();
        link.register(&registry, LINK).unwrap();
        Driver {
            poll,
            registry,
            events: Events::with_capacity(16),
            link,
            seen: Vec::new(),
        }
    }

    /// One loop turn: poll (bounded by the link's next deadline), events, tick, flush.
    fn turn(&mut self) {
        let now = Instant::now();
        let timeout = self
            .link
            .next_deadline()
            .map_or(Duration::from_millis(50), |d| {
                d.saturating_duration_since(now)
            })
            .min(Duration::from_millis(50));
        self.poll.poll(&mut self.events, Some(timeout)).unwrap();
        for event in self.events.iter() {
            assert_eq!(event.token(), LINK);
            self.link.on_ready(&self.registry, event, Instant::now());
        }
        self.link.tick(&self.registry, Instant::now());
        self.link.flush(&self.registry);
        while let Some(e) = self.link.next_event() {
            self.seen.push(e);
        }
    }

    /// Turns the loop until an event matches `pred` (returned) or `limit` passes (panics).
    fn until(&mut self, what: &str, limit: Duration, pred: impl Fn(&Event) -> bool) -> Event {
        let deadline = Instant::now() + limit;
        let mut checked = 0;
        loop {
            if let Some(e) = self.seen[checked..].iter().find(|e| pred(e)) {
                return e.clone();
            }
            checked = self.seen.len();
            assert!(
                Instant::now() < deadline,
                "no {what} within {limit:?}; events: {:?}",
                self.seen
            );
            self.turn();
        }
    }

    /// Turns the loop for `d`, asserting the link stays open.
    fn idle(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        while Instant::now() < deadline {
            self.turn();
        }
        let closed: Vec<_> = self
            .seen
            .iter()
            .filter(|e| matches!(e, Event::Closed(_)))
            .collect();
        assert!(closed.is_empty(), "the link closed: {closed:?}");
    }

    fn connected(&mut self) {
        self.until("CONNACK", STEP, |e| matches!(e, Event::Connected { .. }));
    }

    fn subscribe(&mut self, filter: &str, qos: QoS) {
        let id = self
            .link
            .subscribe(&[(ByteStr::from(filter), qos)])
            .unwrap();
        let codes = match self.until(
            "SUBACK",
            STEP,
            |e| matches!(e, Event::Subscribed { packet_id, .. } if *packet_id == id),
        ) {
            Event::Subscribed { codes, .. } => codes,
            _ => unreachable!(),
        };
        assert_eq!(codes, vec![qos as u8], "granted QoS");
    }

    /// Publishes and, for QoS 1/2, waits for the flow to complete with success.
    fn publish(&mut self, topic: &str, payload: &str, qos: QoS) {
        let id = self
            .link
            .publish(
                ByteStr::from(topic),
                Bytes::copy_from_slice(payload.as_bytes()),
                qos,
                false,
            )
            .unwrap();
        if qos == QoS::AtMostOnce {
            self.link.flush(&self.registry);
            return;
        }
        let reason = match self.until(
            "acknowledgement",
            STEP,
            |e| matches!(e, Event::Acked { packet_id, .. } if *packet_id == id),
        ) {
            Event::Acked { reason, .. } => reason,
            _ => unreachable!(),
        };
        assert!(reason < 0x80, "publish refused with reason {reason:#x}");
    }

    /// Waits for `n` messages and returns (topic, payload, qos) of each, in order.
    fn messages(&mut self, n: usize) -> Vec<(String, String, u8)> {
        let deadline = Instant::now() + STEP * 2;
        loop {
            let got: Vec<_> = self
                .seen
                .iter()
                .filter_map(|e| match e {
                    Event::Message(p) => Some((
                        p.topic.as_str().to_string(),
                        String::from_utf8_lossy(&p.payload).into_owned(),
                        p.qos as u8,
                    )),
                    _ => None,
                })
                .collect();
            if got.len() >= n || Instant::now() >= deadline {
                return got;
            }
            self.turn();
        }
    }
}

fn broker_config(port: u16, extra: &str) -> String {
    format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 1\n\
         log_dest stdout\n{extra}"
    )
}

fn session(version: ProtocolVersion) -> SessionConfig {
    let mut cfg = SessionConfig::new(version, unique_id("link"));
    // Short, so that the test sees the link keep its connection alive by pinging.
    cfg.keep_alive = 1;
    cfg
}

fn version_arg(version: ProtocolVersion) -> &'static str {
    match version {
        ProtocolVersion::V5 => "mqttv5",
        _ => "mqttv311",
    }
}

/// Link publishes QoS 0/1/2 to a mosquitto_sub; mosquitto_pub publishes QoS 0/1/2 (two of
/// each acknowledged QoS) to the link's subscription; the link survives keep-alive and sees
/// the broker go away.
fn exchange(
    kind: BrokerKind,
    version: ProtocolVersion,
    connector: &Connector,
    extra: &str,
    client_args: &[String],
) {
    let mut broker = Broker::start_config_as(kind, |port| broker_config(port, extra));
    let mut d = Driver::connect(connector, broker.addr(), session(version));
    d.connected();
    d.subscribe("link/in/#", QoS::ExactlyOnce);

    // Link -> client.
    let v = version_arg(version);
    let mut sub_args = strs(client_args);
    sub_args.extend(["-t", "link/out/#", "-q", "2", "-V", v]);
    let mut sub = MosqSub::start(broker.port(), &sub_args);
    d.publish("link/out/0", "zero", QoS::AtMostOnce);
    d.publish("link/out/1", "one", QoS::AtLeastOnce);
    d.publish("link/out/2", "two", QoS::ExactlyOnce);
    let got = sub.messages(3, STEP);
    let got: Vec<_> = got
        .iter()
        .map(|m| (m.topic.as_str(), m.payload.as_str(), m.qos))
        .collect();
    assert_eq!(
        got,
        vec![
            ("link/out/0", "zero", 0),
            ("link/out/1", "one", 1),
            ("link/out/2", "two", 2)
        ],
        "{}",
        sub.describe()
    );

    // Client -> link.
    let sent = [
        ("0", "a", 0),
        ("1", "b", 1),
        ("1", "c", 1),
        ("2", "d", 2),
        ("2", "e", 2),
    ];
    for (q, payload, _) in sent {
        let topic = format!("link/in/{q}");
        let mut args = strs(client_args);
        args.extend(["-t", &topic, "-m", payload, "-q", q, "-V", v]);
        mosquitto_pub(broker.port(), &args);
    }
    let got = d.messages(sent.len());
    let want: Vec<_> = sent
        .iter()
        .map(|(q, p, qos)| (format!("link/in/{q}"), p.to_string(), *qos))
        .collect();
    assert_eq!(got, want, "broker log:\n{}", broker.log());

    // Keep-alive 1 s: without PINGREQ the broker would drop the link after 1.5 s.
    d.idle(Duration::from_millis(2500));
    assert!(d.link.session().is_connected());

    // The broker goes away: the link reports it and closes.
    broker.terminate();
    let closed = d.until("close", STEP, |e| matches!(e, Event::Closed(_)));
    assert!(
        matches!(
            closed,
            Event::Closed(CloseReason::Gone(_) | CloseReason::Disconnected(_))
        ),
        "{closed:?}"
    );
    d.turn();
    assert!(d.link.is_closed());
}

#[test]
fn link_exchanges_qos_0_1_2_with_midge_over_3_1_1() {
    exchange(
        BrokerKind::Midge,
        ProtocolVersion::V311,
        &Connector::plain(),
        "",
        &[],
    );
}

#[test]
fn link_exchanges_qos_0_1_2_with_midge_over_5() {
    exchange(
        BrokerKind::Midge,
        ProtocolVersion::V5,
        &Connector::plain(),
        "",
        &[],
    );
}

#[test]
fn link_exchanges_qos_0_1_2_with_mosquitto_over_3_1_1() {
    exchange(
        BrokerKind::Mosquitto,
        ProtocolVersion::V311,
        &Connector::plain(),
        "",
        &[],
    );
}

#[test]
fn link_exchanges_qos_0_1_2_with_mosquitto_over_5() {
    exchange(
        BrokerKind::Mosquitto,
        ProtocolVersion::V5,
        &Connector::plain(),
        "",
        &[],
    );
}

fn tls_lines(certs: &Certs) -> String {
    certs.require_certificate_lines().join("\n") + "\n"
}

#[test]
fn link_exchanges_qos_0_1_2_with_midge_over_tls_with_a_client_certificate() {
    let certs = Certs::generate();
    let connector = Connector::tls(&ClientTlsSettings {
        server_name: "localhost".into(),
        cafile: Some(certs.path_buf("ca.pem")),
        capath: None,
        certfile: Some(certs.path_buf("client.pem")),
        keyfile: Some(certs.path_buf("client.key")),
        tls13_only: false,
        alpn: Vec::new(),
    })
    .unwrap();
    exchange(
        BrokerKind::Midge,
        ProtocolVersion::V311,
        &connector,
        &tls_lines(&certs),
        &certs.client_args(Some("client")),
    );
}

#[test]
fn link_refuses_a_server_its_ca_did_not_sign() {
    let certs = Certs::generate();
    let broker = Broker::start_config_as(BrokerKind::Midge, |port| {
        broker_config(port, &tls_lines(&certs))
    });
    let connector = Connector::tls(&ClientTlsSettings {
        server_name: "localhost".into(),
        cafile: Some(certs.path_buf("other-ca.pem")),
        capath: None,
        certfile: Some(certs.path_buf("client.pem")),
        keyfile: Some(certs.path_buf("client.key")),
        tls13_only: false,
        alpn: Vec::new(),
    })
    .unwrap();
    let mut d = Driver::connect(&connector, broker.addr(), session(ProtocolVersion::V311));
    let closed = d.until("close", STEP, |e| matches!(e, Event::Closed(_)));
    assert!(
        matches!(&closed, Event::Closed(CloseReason::Gone(why)) if why.contains("TLS")
            || why.to_lowercase().contains("certificate")),
        "{closed:?}"
    );
    assert!(!d.seen.iter().any(|e| matches!(e, Event::Connected { .. })));
}

#[test]
fn link_reports_a_refused_connect() {
    // A port nobody listens on: the connect itself fails.
    let port = common::free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut d = Driver::connect(&Connector::plain(), addr, session(ProtocolVersion::V311));
    let closed = d.until("close", STEP, |e| matches!(e, Event::Closed(_)));
    assert!(
        matches!(&closed, Event::Closed(CloseReason::Gone(why)) if why.contains("connect")),
        "{closed:?}"
    );
}
