//! A byte-level WebSocket client over `TcpStream` (client side of RFC 6455): the upgrade,
//! masked frames of any kind (or deliberately broken ones), frames read back, and MQTT packets
//! carried in binary frames. For exact flows and hostile input against a `protocol
//! websockets` listener; real clients (paho, MQTT.js, a browser) are driven elsewhere.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::raw::{Packet, CONNACK};
use super::STEP;

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// One frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub op: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    /// A close frame's status.
    pub fn close_code(&self) -> Option<u16> {
        (self.op == OP_CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// An upgrade request for `path` asking for `protocol` (the header left out when `None`).
pub fn upgrade_request(path: &str, protocol: Option<&str>) -> String {
    let mut s = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    if let Some(p) = protocol {
        s.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
    }
    s.push_str("\r\n");
    s
}

/// A client frame: masked unless `masked` is false; `len` overrides the announced length.
pub fn frame_bytes(fin: bool, op: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mask = [0x1f, 0x8b, 0x52, 0xe4];
    let mut f = vec![(u8::from(fin) << 7) | op];
    let m = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(m | n as u8),
        n if n <= 0xffff => {
            f.push(m | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(m | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    f
}

/// Why nothing came.
#[derive(Debug, PartialEq, Eq)]
pub enum WsError {
    Timeout,
    Closed,
}

/// A raw WebSocket connection.
pub struct WsClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
    /// MQTT bytes from binary frames not yet parsed into packets.
    mqtt: Vec<u8>,
    closed: bool,
}

impl WsClient {
    /// A TCP connection to the listener, nothing sent.
    pub fn tcp(port: u16) -> WsClient {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&addr, STEP).expect("connect");
        stream.set_nodelay(true).ok();
        stream.set_write_timeout(Some(STEP)).ok();
        WsClient {
            stream,
            buf: Vec::new(),
            mqtt: Vec::new(),
            closed: false,
        }
    }

    /// Connects and upgrades (`Sec-WebSocket-Protocol: mqtt`); panics unless the answer is 101.
    pub fn upgraded(port: u16) -> WsClient {
        let mut c = WsClient::tcp(port);
        c.send(upgrade_request("/mqtt", Some("mqtt")).as_bytes());
        let head = c.read_head(STEP).expect("an answer to the upgrade");
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        c
    }

    /// Upgraded and MQTT-connected (3.1.1, clean session) as `client_id`.
    pub fn mqtt_connected(port: u16, client_id: &str) -> WsClient {
        let mut c = WsClient::upgraded(port);
        c.send_mqtt(&super::raw::Connect::new(client_id).encode());
        let p = c.recv_mqtt(STEP).expect("CONNACK");
        assert_eq!(p.kind(), CONNACK, "{p:?}");
        assert_eq!(p.body.get(1), Some(&0), "CONNACK refused: {p:?}");
        c
    }

    /// Writes bytes (a failed write marks the connection closed).
    pub fn send(&mut self, bytes: &[u8]) {
        if self.stream.write_all(bytes).is_err() {
            self.closed = true;
        }
    }

    /// One masked frame.
    pub fn send_frame(&mut self, fin: bool, op: u8, payload: &[u8]) {
        self.send(&frame_bytes(fin, op, payload, true));
    }

    /// MQTT bytes in one binary frame.
    pub fn send_mqtt(&mut self, bytes: &[u8]) {
        self.send_frame(true, OP_BINARY, bytes);
    }

    fn fill(&mut self, deadline: Instant) -> Result<(), WsError> {
        if self.closed {
            return Err(WsError::Closed);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(WsError::Timeout);
        }
        self.stream.set_read_timeout(Some(left)).ok();
        let mut tmp = [0u8; 16384];
        match self.stream.read(&mut tmp) {
            Ok(0) => {
                self.closed = true;
                Err(WsError::Closed)
            }
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(())
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                Err(WsError::Timeout)
            }
            Err(_) => {
                self.closed = true;
                Err(WsError::Closed)
            }
        }
    }

    /// The HTTP answer's head (status line and headers); a body stays in the buffer.
    pub fn read_head(&mut self, limit: Duration) -> Result<String, WsError> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 4);
                return Ok(head);
            }
            self.fill(deadline)?;
        }
    }

    /// Everything until the server closes (an HTTP body after [`WsClient::read_head`]).
    pub fn read_to_close(&mut self, limit: Duration) -> Result<Vec<u8>, WsError> {
        let deadline = Instant::now() + limit;
        loop {
            match self.fill(deadline) {
                Ok(()) => {}
                Err(WsError::Closed) => return Ok(std::mem::take(&mut self.buf)),
                Err(e) => return Err(e),
            }
        }
    }

    /// The next frame from the server.
    pub fn read_frame(&mut self, limit: Duration) -> Result<Frame, WsError> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(f) = self.parse_frame() {
                return Ok(f);
            }
            self.fill(deadline)?;
        }
    }

    fn parse_frame(&mut self) -> Option<Frame> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        assert_eq!(b[1] & 0x80, 0, "server frames must not be masked");
        let (len, at) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (
                u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                10,
            ),
            126 | 127 => return None,
            n => (n as usize, 2),
        };
        if b.len() < at + len {
            return None;
        }
        let f = Frame {
            fin: b[0] & 0x80 != 0,
            op: b[0] & 0x0f,
            payload: b[at..at + len].to_vec(),
        };
        self.buf.drain(..at + len);
        Some(f)
    }

    /// The next MQTT packet, from binary frames whatever their boundaries; control frames
    /// in between are skipped (a close frame ends it: `Closed`).
    pub fn recv_mqtt(&mut self, limit: Duration) -> Result<Packet, WsError> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(p) = parse_packet(&mut self.mqtt) {
                return Ok(p);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let f = self.read_frame(left)?;
            match f.op {
                OP_BINARY | OP_CONT => self.mqtt.extend_from_slice(&f.payload),
                OP_CLOSE => return Err(WsError::Closed),
                OP_TEXT => panic!("the server sent a text frame"),
                _ => {}
            }
        }
    }

    /// Frames until the server closes the TCP connection within `limit`; `None` if it did
    /// not. A reset counts as closed.
    pub fn frames_until_closed(&mut self, limit: Duration) -> Option<Vec<Frame>> {
        let deadline = Instant::now() + limit;
        let mut frames = Vec::new();
        loop {
            while let Some(f) = self.parse_frame() {
                frames.push(f);
            }
            match self.fill(deadline) {
                Ok(()) => {}
                Err(WsError::Closed) => {
                    while let Some(f) = self.parse_frame() {
                        frames.push(f);
                    }
                    return Some(frames);
                }
                Err(WsError::Timeout) => return None,
            }
        }
    }
}

/// One MQTT packet off the front of `buf`, if complete.
fn parse_packet(buf: &mut Vec<u8>) -> Option<Packet> {
    let mut len = 0usize;
    let mut mult = 1usize;
    let mut i = 1;
    loop {
        let b = *buf.get(i)?;
        len += (b & 0x7f) as usize * mult;
        mult *= 128;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
    }
    if buf.len() < i + len {
        return None;
    }
    let p = Packet {
        first: buf[0],
        body: buf[i..i + len].to_vec(),
    };
    buf.drain(..i + len);
    Some(p)
}
