//! A byte-level MQTT 3.1/3.1.1 client: encoders that write literal packets (valid or not) and a
//! reader that splits the broker's bytes into packets. Written independently of midge's codec on
//! purpose: the tests must not trust the code under test.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use super::STEP;

// Packet types (high nibble of the first byte).
pub const CONNECT: u8 = 1;
pub const CONNACK: u8 = 2;
pub const PUBLISH: u8 = 3;
pub const PUBACK: u8 = 4;
pub const PUBREC: u8 = 5;
pub const PUBREL: u8 = 6;
pub const PUBCOMP: u8 = 7;
pub const SUBSCRIBE: u8 = 8;
pub const SUBACK: u8 = 9;
pub const UNSUBSCRIBE: u8 = 10;
pub const UNSUBACK: u8 = 11;
pub const PINGREQ: u8 = 12;
pub const PINGRESP: u8 = 13;
pub const DISCONNECT: u8 = 14;

pub fn type_name(t: u8) -> &'static str {
    [
        "RESERVED0",
        "CONNECT",
        "CONNACK",
        "PUBLISH",
        "PUBACK",
        "PUBREC",
        "PUBREL",
        "PUBCOMP",
        "SUBSCRIBE",
        "SUBACK",
        "UNSUBSCRIBE",
        "UNSUBACK",
        "PINGREQ",
        "PINGRESP",
        "DISCONNECT",
        "RESERVED15",
    ][(t & 0x0f) as usize]
}

// ---------------------------------------------------------------- encoding

/// Variable-length "remaining length" encoding (MQTT 2.2.3).
pub fn encode_len(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            return out;
        }
    }
}

/// A whole packet: first byte, remaining length, body.
pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    out.extend(encode_len(body.len()));
    out.extend_from_slice(body);
    out
}

/// A length-prefixed string (or binary) field.
pub fn mqtt_str(s: &[u8]) -> Vec<u8> {
    let mut out = (s.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(s);
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// MQTT 3.1: protocol name "MQIsdp", level 3.
    V31,
    /// MQTT 3.1.1: protocol name "MQTT", level 4.
    V311,
}

/// A will message for CONNECT.
#[derive(Clone, Debug)]
pub struct Will {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
}

/// CONNECT fields; `Connect::new(id)` gives a clean-session 3.1.1 CONNECT with keep-alive 60.
#[derive(Clone, Debug)]
pub struct Connect {
    pub client_id: String,
    pub clean: bool,
    pub keepalive: u16,
    pub proto: Proto,
    pub will: Option<Will>,
    /// Overrides (name, level) to write invalid protocol headers.
    pub protocol_override: Option<(Vec<u8>, u8)>,
    /// Username and password.
    pub login: Option<(String, String)>,
}

impl Connect {
    pub fn new(client_id: &str) -> Connect {
        Connect {
            client_id: client_id.into(),
            clean: true,
            keepalive: 60,
            proto: Proto::V311,
            will: None,
            protocol_override: None,
            login: None,
        }
    }
    pub fn login(mut self, user: &str, password: &str) -> Self {
        self.login = Some((user.into(), password.into()));
        self
    }
    pub fn clean(mut self, clean: bool) -> Self {
        self.clean = clean;
        self
    }
    pub fn keepalive(mut self, secs: u16) -> Self {
        self.keepalive = secs;
        self
    }
    pub fn proto(mut self, p: Proto) -> Self {
        self.proto = p;
        self
    }
    pub fn will(mut self, topic: &str, payload: &[u8], qos: u8, retain: bool) -> Self {
        self.will = Some(Will {
            topic: topic.into(),
            payload: payload.into(),
            qos,
            retain,
        });
        self
    }
    pub fn protocol(mut self, name: &[u8], level: u8) -> Self {
        self.protocol_override = Some((name.to_vec(), level));
        self
    }

    pub fn encode(&self) -> Vec<u8> {
        let (name, level) = match &self.protocol_override {
            Some((n, l)) => (n.clone(), *l),
            None => match self.proto {
                Proto::V31 => (b"MQIsdp".to_vec(), 3),
                Proto::V311 => (b"MQTT".to_vec(), 4),
            },
        };
        let mut flags = 0u8;
        if self.clean {
            flags |= 0x02;
        }
        if let Some(w) = &self.will {
            flags |= 0x04 | (w.qos << 3);
            if w.retain {
                flags |= 0x20;
            }
        }
        if self.login.is_some() {
            flags |= 0xC0;
        }
        let mut body = mqtt_str(&name);
        body.push(level);
        body.push(flags);
        body.extend(self.keepalive.to_be_bytes());
        body.extend(mqtt_str(self.client_id.as_bytes()));
        if let Some(w) = &self.will {
            body.extend(mqtt_str(w.topic.as_bytes()));
            body.extend(mqtt_str(&w.payload));
        }
        if let Some((user, password)) = &self.login {
            body.extend(mqtt_str(user.as_bytes()));
            body.extend(mqtt_str(password.as_bytes()));
        }
        packet(CONNECT << 4, &body)
    }
}

/// PUBLISH with a topic given as raw bytes (may be invalid UTF-8). `pid` is written for QoS > 0.
pub fn publish_raw(
    topic: &[u8],
    payload: &[u8],
    qos: u8,
    retain: bool,
    dup: bool,
    pid: u16,
) -> Vec<u8> {
    let mut first = (PUBLISH << 4) | (qos << 1);
    if retain {
        first |= 0x01;
    }
    if dup {
        first |= 0x08;
    }
    let mut body = mqtt_str(topic);
    if qos > 0 {
        body.extend(pid.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(first, &body)
}

pub fn publish(topic: &str, payload: &[u8], qos: u8, retain: bool, pid: u16) -> Vec<u8> {
    publish_raw(topic.as_bytes(), payload, qos, retain, false, pid)
}

/// SUBSCRIBE with the required flags 0b0010.
pub fn subscribe(pid: u16, filters: &[(&str, u8)]) -> Vec<u8> {
    subscribe_with_flags(pid, filters, 0x02)
}

pub fn subscribe_with_flags(pid: u16, filters: &[(&str, u8)], flags: u8) -> Vec<u8> {
    let mut body = pid.to_be_bytes().to_vec();
    for (f, q) in filters {
        body.extend(mqtt_str(f.as_bytes()));
        body.push(*q);
    }
    packet((SUBSCRIBE << 4) | flags, &body)
}

pub fn unsubscribe(pid: u16, filters: &[&str]) -> Vec<u8> {
    let mut body = pid.to_be_bytes().to_vec();
    for f in filters {
        body.extend(mqtt_str(f.as_bytes()));
    }
    packet((UNSUBSCRIBE << 4) | 0x02, &body)
}

fn ack(t: u8, flags: u8, pid: u16) -> Vec<u8> {
    packet((t << 4) | flags, &pid.to_be_bytes())
}
pub fn puback(pid: u16) -> Vec<u8> {
    ack(PUBACK, 0, pid)
}
pub fn pubrec(pid: u16) -> Vec<u8> {
    ack(PUBREC, 0, pid)
}
pub fn pubrel(pid: u16) -> Vec<u8> {
    ack(PUBREL, 0x02, pid)
}
pub fn pubcomp(pid: u16) -> Vec<u8> {
    ack(PUBCOMP, 0, pid)
}
pub fn pingreq() -> Vec<u8> {
    vec![PINGREQ << 4, 0]
}
pub fn disconnect() -> Vec<u8> {
    vec![DISCONNECT << 4, 0]
}

// ---------------------------------------------------------------- decoding

/// One packet read from the broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// The whole first byte (type << 4 | flags).
    pub first: u8,
    pub body: Vec<u8>,
}

/// A decoded PUBLISH.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    pub dup: bool,
    /// 0 for QoS 0.
    pub pid: u16,
}

impl Packet {
    pub fn kind(&self) -> u8 {
        self.first >> 4
    }
    pub fn flags(&self) -> u8 {
        self.first & 0x0f
    }
    /// The packet id of an ack/SUBACK/UNSUBACK (first two body bytes).
    pub fn pid(&self) -> u16 {
        assert!(self.body.len() >= 2, "packet too short for an id: {self:?}");
        u16::from_be_bytes([self.body[0], self.body[1]])
    }
    pub fn publish(&self) -> Publish {
        assert_eq!(self.kind(), PUBLISH, "not a PUBLISH: {self:?}");
        let qos = (self.first >> 1) & 3;
        let tlen = u16::from_be_bytes([self.body[0], self.body[1]]) as usize;
        let topic = String::from_utf8(self.body[2..2 + tlen].to_vec()).expect("topic utf-8");
        let mut i = 2 + tlen;
        let mut pid = 0;
        if qos > 0 {
            pid = u16::from_be_bytes([self.body[i], self.body[i + 1]]);
            i += 2;
        }
        Publish {
            topic,
            payload: self.body[i..].to_vec(),
            qos,
            retain: self.first & 1 == 1,
            dup: self.first & 0x08 != 0,
            pid,
        }
    }
    /// SUBACK return codes.
    pub fn suback_codes(&self) -> Vec<u8> {
        assert_eq!(self.kind(), SUBACK, "not a SUBACK: {self:?}");
        self.body[2..].to_vec()
    }
}

/// Why no packet came.
#[derive(Debug, PartialEq, Eq)]
pub enum RecvError {
    Timeout,
    Closed,
}

/// A plain TCP stream to the broker with no MQTT on it yet (no delay, bounded writes), for
/// tests that write and read bytes themselves.
pub fn tcp_stream(port: u16) -> TcpStream {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let s = TcpStream::connect_timeout(&addr, STEP).expect("connect");
    s.set_nodelay(true).ok();
    s.set_write_timeout(Some(STEP)).ok();
    s
}

/// A raw TCP MQTT connection.
pub struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
    closed: bool,
}

impl Raw {
    /// Opens a TCP connection (no CONNECT sent).
    pub fn tcp(port: u16) -> Raw {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&addr, STEP)
            .unwrap_or_else(|e| panic!("TCP connect to port {port}: {e}"));
        stream.set_nodelay(true).ok();
        stream.set_write_timeout(Some(STEP)).ok();
        Raw {
            stream,
            buf: Vec::new(),
            closed: false,
        }
    }

    /// A connection accepted by the test's own listener (a fake server): no CONNECT sent.
    pub fn accepted(stream: TcpStream) -> Raw {
        stream.set_nodelay(true).ok();
        stream.set_write_timeout(Some(STEP)).ok();
        Raw {
            stream,
            buf: Vec::new(),
            closed: false,
        }
    }

    /// TCP connect + CONNECT + CONNACK; panics unless the CONNACK return code is 0.
    /// Returns the session-present flag.
    pub fn connect(port: u16, c: &Connect) -> (Raw, bool) {
        let mut raw = Raw::tcp(port);
        let (sp, rc) = raw.handshake(c);
        assert_eq!(rc, 0, "CONNACK return code for {c:?}");
        (raw, sp)
    }

    /// Shorthand: clean-session 3.1.1 connection with the given id.
    pub fn connected(port: u16, client_id: &str) -> Raw {
        Raw::connect(port, &Connect::new(client_id)).0
    }

    /// A clean-session 3.1.1 connection subscribed to `filters` (packet id 1): the usual first
    /// lines of a subscriber. The SUBACK codes are not checked; call [`Raw::subscribe`] to
    /// assert them.
    pub fn subscribed(port: u16, client_id: &str, filters: &[(&str, u8)]) -> Raw {
        let mut raw = Raw::connected(port, client_id);
        raw.subscribe(1, filters);
        raw
    }

    /// Sends CONNECT and reads CONNACK: (session present, return code).
    pub fn handshake(&mut self, c: &Connect) -> (bool, u8) {
        self.send(&c.encode());
        let p = self.expect(CONNACK);
        assert_eq!(p.body.len(), 2, "CONNACK remaining length must be 2: {p:?}");
        assert_eq!(p.flags(), 0, "CONNACK flags: {p:?}");
        (p.body[0] & 1 == 1, p.body[1])
    }

    /// Writes bytes; a write error (peer closed) is ignored — reads will report Closed.
    pub fn send(&mut self, bytes: &[u8]) {
        if self.stream.write_all(bytes).is_err() {
            self.closed = true;
        }
    }

    /// The next packet within `limit`.
    pub fn recv(&mut self, limit: Duration) -> Result<Packet, RecvError> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(p) = self.try_parse() {
                return Ok(p);
            }
            if self.closed {
                return Err(RecvError::Closed);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RecvError::Timeout);
            }
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .ok();
            let mut tmp = [0u8; 8192];
            match self.stream.read(&mut tmp) {
                Ok(0) => self.closed = true,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => self.closed = true,
            }
        }
    }

    fn try_parse(&mut self) -> Option<Packet> {
        if self.buf.len() < 2 {
            return None;
        }
        let mut len = 0usize;
        let mut mult = 1usize;
        let mut i = 1;
        loop {
            if i >= self.buf.len() {
                return None;
            }
            let b = self.buf[i];
            len += (b & 0x7f) as usize * mult;
            mult *= 128;
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
            assert!(i < 5, "broker sent a remaining length longer than 4 bytes");
        }
        if self.buf.len() < i + len {
            return None;
        }
        let first = self.buf[0];
        let body = self.buf[i..i + len].to_vec();
        self.buf.drain(..i + len);
        Some(Packet { first, body })
    }

    /// A packet the socket holds already, without waiting for one (`None` if nothing has
    /// arrived yet): to tell what a peer wrote before something else it wrote.
    pub fn ready(&mut self) -> Option<Packet> {
        if let Some(p) = self.try_parse() {
            return Some(p);
        }
        self.stream.set_nonblocking(true).ok();
        let mut tmp = [0u8; 8192];
        match self.stream.read(&mut tmp) {
            Ok(0) => self.closed = true,
            Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
            Err(_) => {}
        }
        self.stream.set_nonblocking(false).ok();
        self.try_parse()
    }

    /// The next packet, which must be of type `kind` (within [`STEP`]).
    pub fn expect(&mut self, kind: u8) -> Packet {
        match self.recv(STEP) {
            Ok(p) if p.kind() == kind => p,
            Ok(p) => panic!(
                "expected {}, got {} {p:?}",
                type_name(kind),
                type_name(p.kind())
            ),
            Err(e) => panic!("expected {}, got {e:?}", type_name(kind)),
        }
    }

    /// The next PUBLISH (within [`STEP`]).
    pub fn expect_publish(&mut self) -> Publish {
        self.expect(PUBLISH).publish()
    }

    /// Asserts nothing arrives within `limit` (and the connection stays open).
    pub fn expect_nothing(&mut self, limit: Duration) {
        match self.recv(limit) {
            Err(RecvError::Timeout) => {}
            Ok(p) => panic!("expected nothing, got {} {p:?}", type_name(p.kind())),
            Err(RecvError::Closed) => panic!("expected nothing, but the connection was closed"),
        }
    }

    /// Waits until the broker closes the connection; returns the packets received meanwhile.
    /// Panics if it is still open after `limit`.
    pub fn expect_closed(&mut self, limit: Duration) -> Vec<Packet> {
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

    /// True if the broker closed the connection (does not wait beyond `limit`).
    pub fn is_closed_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Ok(_) => continue,
                Err(RecvError::Closed) => return true,
                Err(RecvError::Timeout) => return false,
            }
        }
    }

    /// PINGREQ -> PINGRESP round trip: proof the connection is alive and served.
    pub fn ping(&mut self) {
        self.send(&pingreq());
        self.expect(PINGRESP);
    }

    /// SUBSCRIBE and wait for SUBACK; returns the granted codes.
    pub fn subscribe(&mut self, pid: u16, filters: &[(&str, u8)]) -> Vec<u8> {
        self.send(&subscribe(pid, filters));
        let p = self.expect(SUBACK);
        assert_eq!(p.pid(), pid, "SUBACK packet id [MQTT-3.8.4-2]");
        p.suback_codes()
    }

    /// Publish at QoS 0/1/2 and complete the publisher side of the flow.
    pub fn publish_complete(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: u8,
        retain: bool,
        pid: u16,
    ) {
        self.send(&publish(topic, payload, qos, retain, pid));
        match qos {
            0 => {}
            1 => assert_eq!(self.expect(PUBACK).pid(), pid, "PUBACK id"),
            2 => {
                assert_eq!(self.expect(PUBREC).pid(), pid, "PUBREC id");
                self.send(&pubrel(pid));
                assert_eq!(self.expect(PUBCOMP).pid(), pid, "PUBCOMP id");
            }
            _ => panic!("qos {qos}"),
        }
    }

    /// Receives one PUBLISH and acknowledges it per its QoS (full QoS 2 receiver flow).
    pub fn recv_publish_ack(&mut self) -> Publish {
        let p = self.expect_publish();
        match p.qos {
            0 => {}
            1 => self.send(&puback(p.pid)),
            2 => {
                self.send(&pubrec(p.pid));
                let rel = self.expect(PUBREL);
                assert_eq!(rel.flags(), 0x02, "PUBREL flags [MQTT-3.6.1-1]");
                assert_eq!(rel.pid(), p.pid, "PUBREL id");
                self.send(&pubcomp(p.pid));
            }
            q => panic!("received QoS {q}"),
        }
        p
    }

    /// Receives `n` PUBLISHes within `limit`, acknowledging each per its QoS; copes with
    /// interleaved flows (the broker may send the next PUBLISH before the PUBREL of the last).
    /// Returns them in arrival order; panics if fewer arrive.
    pub fn collect_publishes(&mut self, n: usize, limit: Duration) -> Vec<Publish> {
        self.collect_inner(n, limit, None)
    }

    /// Like [`Raw::collect_publishes`] but stops (without panicking) once nothing has arrived
    /// for `quiet`; for QoS 0 streams where a broker may drop messages.
    pub fn collect_publishes_until_quiet(&mut self, quiet: Duration) -> Vec<Publish> {
        self.collect_inner(usize::MAX, STEP * 2, Some(quiet))
    }

    fn collect_inner(
        &mut self,
        n: usize,
        limit: Duration,
        quiet: Option<Duration>,
    ) -> Vec<Publish> {
        let deadline = Instant::now() + limit;
        let mut out = Vec::new();
        let mut awaiting_rel = Vec::new();
        while out.len() < n || !awaiting_rel.is_empty() {
            let mut left = deadline.saturating_duration_since(Instant::now());
            if let Some(q) = quiet {
                left = left.min(q);
            }
            let p = match self.recv(left) {
                Ok(p) => p,
                Err(RecvError::Timeout) if quiet.is_some() && awaiting_rel.is_empty() => break,
                Err(e) => panic!(
                    "got {} of {n} messages ({e:?}); QoS 2 ids awaiting PUBREL: {awaiting_rel:?}",
                    out.len()
                ),
            };
            match p.kind() {
                PUBLISH => {
                    let m = p.publish();
                    match m.qos {
                        1 => self.send(&puback(m.pid)),
                        2 => {
                            self.send(&pubrec(m.pid));
                            awaiting_rel.push(m.pid);
                        }
                        _ => {}
                    }
                    out.push(m);
                }
                PUBREL => {
                    assert_eq!(p.flags(), 0x02, "PUBREL flags [MQTT-3.6.1-1]");
                    let id = p.pid();
                    let i = awaiting_rel
                        .iter()
                        .position(|&x| x == id)
                        .unwrap_or_else(|| panic!("PUBREL for unknown id {id}"));
                    awaiting_rel.remove(i);
                    self.send(&pubcomp(id));
                }
                k => panic!("unexpected {} {p:?}", type_name(k)),
            }
        }
        out
    }

    /// Sends DISCONNECT and closes the socket.
    pub fn disconnect(mut self) {
        self.send(&disconnect());
        let _ = self.stream.shutdown(Shutdown::Write);
        // Let the broker read the DISCONNECT before the socket goes away.
        let _ = self.recv(Duration::from_millis(100));
    }

    /// Closes the socket without DISCONNECT (an abrupt network drop as the broker sees it).
    pub fn drop_abruptly(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}
