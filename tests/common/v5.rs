//! MQTT 5.0 helpers: the 5.0 half of every area suite (`connect.rs`, `publish_qos.rs`, ...).
//!
//! - [`V5`]: a raw MQTT 5 client over [`Raw`]'s TCP stream. Packets are built and parsed with
//!   midge's own codec (`midge::protocol`), which has its own unit tests; every v5 test is also
//!   proven against mosquitto, so a codec bug cannot make a broker bug invisible to both.
//!   Deliberately invalid packets (alias 0, bad UTF-8, oversized, ...) are written with the
//!   codec (it does not check preconditions when encoding) or by hand.
//! - [`paho`]: runs `tests/py/v5_client.py`, a step-driven paho-mqtt 2.x client that prints
//!   every packet it receives (with properties) as a JSON line.
//! - [`MosqSubV5`]: `mosquitto_sub -V mqttv5` with a line format that prints v5 properties.
//! - [`rumq_v5_connect`]: a `rumqttc::v5` client.
//!
//! Every wait is bounded.

use std::process::Command;
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use midge::protocol::{
    decode, encode, Auth, ByteStr, ConnAck, Connect, Disconnect, Packet, Properties,
    ProtocolVersion, PubResp, Publish, QoS, RetainHandling, SubAck, SubOptions, Subscribe,
    UnsubAck, Unsubscribe, Will,
};
use serde_json::Value;

use super::clients::Paho;
use super::raw::{self, Raw, RecvError};
use super::{Spawned, STEP};

pub use midge::protocol::reason::v5 as rc;

// ---------------------------------------------------------------- packet builders

pub fn qos(q: u8) -> QoS {
    QoS::from_u8(q).expect("qos 0..=2")
}

/// A clean-start MQTT 5 CONNECT, keep-alive 60, no properties.
pub fn connect(client_id: &str) -> Connect {
    Connect {
        version: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 60,
        client_id: client_id.into(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    }
}

/// A clean-start MQTT 5 CONNECT with a Session Expiry Interval of `secs`.
pub fn with_expiry(client_id: &str, secs: u32) -> Connect {
    let mut c = connect(client_id);
    c.properties.session_expiry_interval = Some(secs);
    c
}

/// [`with_expiry`] with Clean Start 0: resumes the session of `client_id` if there is one.
pub fn resume(client_id: &str, secs: u32) -> Connect {
    let mut c = with_expiry(client_id, secs);
    c.clean_start = false;
    c
}

/// A will for [`Connect::will`].
pub fn will(topic: &str, payload: &[u8], q: u8, retain: bool, properties: Properties) -> Will {
    Will {
        topic: topic.into(),
        payload: Bytes::copy_from_slice(payload),
        qos: qos(q),
        retain,
        properties,
    }
}

/// A PUBLISH with no properties; `pid` is ignored for QoS 0.
pub fn publish(topic: &str, payload: &[u8], q: u8, retain: bool, pid: u16) -> Publish {
    Publish {
        dup: false,
        qos: qos(q),
        retain,
        topic: topic.into(),
        packet_id: if q == 0 { 0 } else { pid },
        properties: Properties::default(),
        payload: Bytes::copy_from_slice(payload),
    }
}

/// Subscription options with only a QoS.
pub fn opts(q: u8) -> SubOptions {
    SubOptions {
        qos: qos(q),
        ..SubOptions::default()
    }
}

/// Subscription options with every field.
pub fn opts_full(q: u8, no_local: bool, rap: bool, rh: u8) -> SubOptions {
    SubOptions {
        qos: qos(q),
        no_local,
        retain_as_published: rap,
        retain_handling: match rh {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            _ => RetainHandling::DoNotSend,
        },
    }
}

pub fn user_props(pairs: &[(&str, &str)]) -> Vec<(ByteStr, ByteStr)> {
    pairs
        .iter()
        .map(|(k, v)| (ByteStr::from(*k), ByteStr::from(*v)))
        .collect()
}

/// `packet` encoded as MQTT 5.
pub fn enc(packet: &Packet) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode(packet, ProtocolVersion::V5, &mut out);
    out.to_vec()
}

/// A DISCONNECT packet with a reason code and properties.
pub fn disconnect_packet(reason: u8, properties: Properties) -> Packet {
    Packet::Disconnect(Disconnect { reason, properties })
}

// ---------------------------------------------------------------- raw v5 client

/// A raw MQTT 5 connection.
pub struct V5 {
    pub raw: Raw,
}

impl V5 {
    /// TCP only; no CONNECT sent.
    pub fn tcp(port: u16) -> V5 {
        V5 {
            raw: Raw::tcp(port),
        }
    }

    /// TCP + CONNECT + CONNACK; panics unless the reason code is 0.
    pub fn connect(port: u16, c: &Connect) -> (V5, ConnAck) {
        let mut v = V5::tcp(port);
        let ack = v.handshake(c);
        assert_eq!(
            ack.code,
            0,
            "CONNACK reason code {:#04x} ({}) for {c:?}",
            ack.code,
            rc::name(ack.code)
        );
        (v, ack)
    }

    /// Shorthand: a clean-start connection with no properties.
    pub fn connected(port: u16, client_id: &str) -> V5 {
        V5::connect(port, &connect(client_id)).0
    }

    /// A clean-start connection subscribed to `filters`: the usual first lines of a
    /// subscriber. The SUBACK codes are not checked; call [`V5::subscribe`] to assert them.
    pub fn subscribed(port: u16, client_id: &str, filters: &[(&str, SubOptions)]) -> V5 {
        let mut v = V5::connected(port, client_id);
        v.subscribe(filters);
        v
    }

    /// Sends CONNECT and returns the CONNACK.
    pub fn handshake(&mut self, c: &Connect) -> ConnAck {
        self.send(&Packet::Connect(c.clone()));
        match self.recv(STEP) {
            Ok(Packet::ConnAck(a)) => a,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub fn send(&mut self, p: &Packet) {
        self.raw.send(&enc(p));
    }

    pub fn send_bytes(&mut self, b: &[u8]) {
        self.raw.send(b);
    }

    /// The next packet, decoded as MQTT 5 (panics if it does not decode).
    pub fn recv(&mut self, limit: Duration) -> Result<Packet, RecvError> {
        let p = self.raw.recv(limit)?;
        let mut bytes = BytesMut::new();
        bytes.extend_from_slice(&[p.first]);
        bytes.extend_from_slice(&raw::encode_len(p.body.len()));
        bytes.extend_from_slice(&p.body);
        match decode(&mut bytes, Some(ProtocolVersion::V5), 0) {
            Ok(Some(pkt)) => Ok(pkt),
            other => {
                panic!("broker sent a packet that does not decode as MQTT 5: {p:?}: {other:?}")
            }
        }
    }

    /// The next packet within [`STEP`]; panics on timeout/close.
    pub fn next(&mut self) -> Packet {
        match self.recv(STEP) {
            Ok(p) => p,
            Err(e) => panic!("expected a packet, got {e:?}"),
        }
    }

    /// The next packet, which must be a PUBLISH.
    pub fn expect_publish(&mut self) -> Publish {
        match self.next() {
            Packet::Publish(p) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Receives one PUBLISH and acknowledges it (PUBACK for QoS 1, PUBREC/PUBREL/PUBCOMP for 2).
    pub fn recv_publish_ack(&mut self) -> Publish {
        let p = self.expect_publish();
        self.ack(&p);
        p
    }

    /// Acknowledges a received PUBLISH per its QoS (full receiver flow for QoS 2).
    pub fn ack(&mut self, p: &Publish) {
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send(&Packet::PubAck(PubResp::new(p.packet_id))),
            QoS::ExactlyOnce => {
                self.send(&Packet::PubRec(PubResp::new(p.packet_id)));
                match self.next() {
                    Packet::PubRel(r) => assert_eq!(r.packet_id, p.packet_id, "PUBREL id"),
                    other => panic!("expected PUBREL, got {other:?}"),
                }
                self.send(&Packet::PubComp(PubResp::new(p.packet_id)));
            }
        }
    }

    /// Sends a PUBLISH and completes the sender flow; returns the PUBACK/PUBREC (None for QoS 0).
    pub fn publish(&mut self, p: Publish) -> Option<PubResp> {
        let q = p.qos;
        let pid = p.packet_id;
        self.send(&Packet::Publish(p));
        match q {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce => match self.next() {
                Packet::PubAck(r) => {
                    assert_eq!(r.packet_id, pid, "PUBACK id");
                    Some(r)
                }
                other => panic!("expected PUBACK, got {other:?}"),
            },
            QoS::ExactlyOnce => match self.next() {
                Packet::PubRec(r) => {
                    assert_eq!(r.packet_id, pid, "PUBREC id");
                    if r.reason < 0x80 {
                        self.send(&Packet::PubRel(PubResp::new(pid)));
                        match self.next() {
                            Packet::PubComp(c) => assert_eq!(c.packet_id, pid, "PUBCOMP id"),
                            other => panic!("expected PUBCOMP, got {other:?}"),
                        }
                    }
                    Some(r)
                }
                other => panic!("expected PUBREC, got {other:?}"),
            },
        }
    }

    /// Publishes with no properties and completes the flow; returns the ack's reason code.
    pub fn publish_simple(&mut self, topic: &str, payload: &[u8], q: u8, retain: bool) -> u8 {
        self.publish(publish(topic, payload, q, retain, 1))
            .map(|r| r.reason)
            .unwrap_or(0)
    }

    /// SUBSCRIBE with properties; returns the SUBACK.
    pub fn subscribe_props(
        &mut self,
        pid: u16,
        filters: &[(&str, SubOptions)],
        properties: Properties,
    ) -> SubAck {
        self.send(&Packet::Subscribe(Subscribe {
            packet_id: pid,
            filters: filters
                .iter()
                .map(|(f, o)| (ByteStr::from(*f), *o))
                .collect(),
            properties,
        }));
        match self.next() {
            Packet::SubAck(a) => {
                assert_eq!(a.packet_id, pid, "SUBACK packet id [MQTT-3.8.4-2]");
                a
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// SUBSCRIBE; returns the SUBACK reason codes.
    pub fn subscribe(&mut self, filters: &[(&str, SubOptions)]) -> Vec<u8> {
        self.subscribe_props(1, filters, Properties::default())
            .codes
    }

    /// SUBSCRIBE with a subscription identifier.
    pub fn subscribe_id(&mut self, filter: &str, o: SubOptions, id: u32) -> Vec<u8> {
        let props = Properties {
            subscription_identifiers: vec![id],
            ..Properties::default()
        };
        self.subscribe_props(1, &[(filter, o)], props).codes
    }

    pub fn unsubscribe(&mut self, pid: u16, filters: &[&str]) -> UnsubAck {
        self.send(&Packet::Unsubscribe(Unsubscribe {
            packet_id: pid,
            filters: filters.iter().map(|f| ByteStr::from(*f)).collect(),
            properties: Properties::default(),
        }));
        match self.next() {
            Packet::UnsubAck(a) => {
                assert_eq!(a.packet_id, pid, "UNSUBACK packet id");
                a
            }
            other => panic!("expected UNSUBACK, got {other:?}"),
        }
    }

    /// Asserts nothing arrives within `limit` and the connection stays open.
    pub fn expect_nothing(&mut self, limit: Duration) {
        match self.recv(limit) {
            Err(RecvError::Timeout) => {}
            Ok(p) => panic!("expected nothing, got {p:?}"),
            Err(RecvError::Closed) => panic!("expected nothing, but the connection was closed"),
        }
    }

    /// Packets until the broker closes the connection (panics if still open after `limit`).
    pub fn until_closed(&mut self, limit: Duration) -> Vec<Packet> {
        let deadline = Instant::now() + limit;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Ok(p) => got.push(p),
                Err(RecvError::Closed) => return got,
                Err(RecvError::Timeout) => {
                    panic!("connection still open after {limit:?}; received {got:?}")
                }
            }
        }
    }

    /// Waits for the broker to close the connection and returns the reason code of the
    /// DISCONNECT it sent first (None if it closed without one).
    pub fn expect_disconnect(&mut self, limit: Duration) -> Option<Disconnect> {
        self.until_closed(limit).into_iter().find_map(|p| match p {
            Packet::Disconnect(d) => Some(d),
            _ => None,
        })
    }

    /// Like [`V5::expect_disconnect`], but panics unless a DISCONNECT with `code` came.
    pub fn expect_disconnect_code(&mut self, code: u8, what: &str) -> Disconnect {
        match self.expect_disconnect(STEP) {
            Some(d) => {
                assert_eq!(
                    d.reason,
                    code,
                    "{what}: DISCONNECT reason {:#04x} ({}), expected {code:#04x} ({})",
                    d.reason,
                    rc::name(d.reason),
                    rc::name(code)
                );
                d
            }
            None => panic!(
                "{what}: the broker closed the connection without DISCONNECT {code:#04x} ({})",
                rc::name(code)
            ),
        }
    }

    /// PINGREQ -> PINGRESP.
    pub fn ping(&mut self) {
        self.send(&Packet::PingReq);
        match self.next() {
            Packet::PingResp => {}
            other => panic!("expected PINGRESP, got {other:?}"),
        }
    }

    /// Sends DISCONNECT (reason, properties) and waits for the broker to close the socket.
    pub fn disconnect_with(mut self, reason: u8, properties: Properties) {
        self.send(&disconnect_packet(reason, properties));
        let _ = self.raw.is_closed_within(Duration::from_secs(2));
    }

    /// A normal DISCONNECT.
    pub fn disconnect(self) {
        self.disconnect_with(0, Properties::default());
    }

    /// Closes the socket without DISCONNECT (a network drop as the broker sees it).
    pub fn drop_abruptly(self) {
        self.raw.drop_abruptly();
    }

    /// Collects PUBLISHes until nothing arrives for `quiet`, acknowledging each.
    pub fn publishes_until_quiet(&mut self, quiet: Duration) -> Vec<Publish> {
        let mut out = Vec::new();
        loop {
            match self.recv(quiet) {
                Ok(Packet::Publish(p)) => {
                    self.ack(&p);
                    out.push(p);
                }
                Ok(other) => panic!("expected PUBLISH, got {other:?}"),
                Err(RecvError::Timeout) => return out,
                Err(RecvError::Closed) => panic!("connection closed; got {out:?}"),
            }
        }
    }
}

/// Publishes one QoS 1 message (with a Message Expiry Interval if `expiry` is set) from a
/// client of its own, which then disconnects.
pub fn publish_q1(port: u16, topic: &str, payload: &[u8], expiry: Option<u32>) {
    let mut p = V5::connected(port, &super::unique_id("pub"));
    let mut m = publish(topic, payload, 1, false, 1);
    m.properties.message_expiry_interval = expiry;
    p.publish(m);
    p.disconnect();
}

/// An AUTH packet.
pub fn auth_packet(reason: u8, method: &str) -> Packet {
    Packet::Auth(Auth {
        reason,
        properties: Properties {
            authentication_method: Some(method.into()),
            ..Properties::default()
        },
    })
}

// ---------------------------------------------------------------- paho-mqtt v5

/// Runs tests/py/v5_client.py with `steps` (see the script's docstring).
pub fn paho(port: u16, steps: Value) -> Paho {
    Paho::spawn("v5_client.py", port, &["--steps", &steps.to_string()])
}

// ---------------------------------------------------------------- mosquitto_sub -V mqttv5

/// One message printed by [`MosqSubV5`]: `%t`, `%p` and the v5 properties as printed
/// (empty when absent).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MosqMsg {
    pub topic: String,
    pub payload: String,
    /// `%P`: user properties as `k:v` separated by spaces.
    pub user_props: String,
    pub content_type: String,
    pub response_topic: String,
    pub correlation: String,
    pub expiry: String,
    pub format: String,
    pub sub_id: String,
}

const V5_FORMAT: &str = "=V5|%t|%p|%P|%C|%R|%D|%E|%F|%S";

/// A running `mosquitto_sub -V mqttv5 -d` printing properties.
pub struct MosqSubV5 {
    proc: Spawned,
}

impl MosqSubV5 {
    /// Starts `mosquitto_sub -V mqttv5` with ARGS and waits for its SUBACK.
    pub fn start(port: u16, args: &[&str]) -> MosqSubV5 {
        let mut cmd = super::line_buffered("mosquitto_sub");
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-d",
            "-V",
            "mqttv5",
        ])
        .args(["-F", V5_FORMAT, "-W", "20"])
        .args(args);
        let mut proc = Spawned::spawn(&mut cmd);
        if proc
            .wait_line(STEP, |l| l.starts_with("Subscribed (mid"))
            .is_none()
        {
            panic!("mosquitto_sub -V mqttv5: no SUBACK: {}", proc.describe());
        }
        MosqSubV5 { proc }
    }

    /// The next message within `limit`.
    pub fn next_msg(&mut self, limit: Duration) -> Option<MosqMsg> {
        let l = self.proc.wait_line(limit, |l| l.starts_with("=V5|"))?;
        let f: Vec<&str> = l.splitn(10, '|').collect();
        let g = |i: usize| f.get(i).copied().unwrap_or("").to_string();
        Some(MosqMsg {
            topic: g(1),
            payload: g(2),
            user_props: g(3),
            content_type: g(4),
            response_topic: g(5),
            correlation: g(6),
            expiry: g(7),
            format: g(8),
            sub_id: g(9),
        })
    }

    pub fn describe(&self) -> String {
        self.proc.describe()
    }
}

/// Runs `mosquitto_pub -V mqttv5 ARGS` (bounded; panics on failure).
pub fn mosquitto_pub_v5(port: u16, args: &[&str]) -> super::Finished {
    let mut all = vec!["-V", "mqttv5"];
    all.extend_from_slice(args);
    super::clients::mosquitto_pub(port, &all)
}

/// Runs `mosquitto_pub -V mqttv5 ARGS` without asserting success.
pub fn mosquitto_pub_v5_try(port: u16, args: &[&str]) -> super::Finished {
    super::run(
        Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", "mqttv5"])
            .args(args),
        Duration::from_secs(10),
    )
}

// ---------------------------------------------------------------- rumqttc v5

use rumqttc::v5::mqttbytes::v5::{ConnAck as RConnAck, Packet as RPacket};
use rumqttc::v5::{Client as RClient, Event as REvent, MqttOptions as ROptions};

/// A rumqttc v5 sync client whose connection is driven by a thread that forwards events.
pub struct RumqV5 {
    pub client: RClient,
    events: Receiver<Result<REvent, String>>,
}

/// Connects with rumqttc v5 (`setup` adjusts the options) and returns the CONNACK.
pub fn rumq_v5_connect(
    port: u16,
    id: &str,
    setup: impl FnOnce(&mut ROptions),
) -> (RumqV5, RConnAck) {
    let mut o = ROptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    setup(&mut o);
    let (client, mut connection) = RClient::new(o, 100);
    let (tx, events) = mpsc::channel();
    thread::spawn(move || {
        for ev in connection.iter() {
            let stop = ev.is_err();
            if tx.send(ev.map_err(|e| e.to_string())).is_err() || stop {
                break;
            }
        }
    });
    let mut r = RumqV5 { client, events };
    let ack = match r.wait(STEP, |p| matches!(p, RPacket::ConnAck(_))) {
        Some(RPacket::ConnAck(a)) => a,
        other => panic!("rumqttc v5: no CONNACK: {other:?}"),
    };
    (r, ack)
}

impl RumqV5 {
    /// Waits for an incoming packet matching `pred`.
    pub fn wait(&mut self, limit: Duration, pred: impl Fn(&RPacket) -> bool) -> Option<RPacket> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Ok(REvent::Incoming(p))) if pred(&p) => return Some(p),
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => panic!("rumqttc v5 connection error: {e}"),
                Err(_) => return None,
            }
        }
    }
}
