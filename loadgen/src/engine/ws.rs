//! MQTT over WebSocket for loadgen's clients (`--transport ws`), so that a broker's
//! WebSocket listener is measured like its TCP one.
//!
//! [`Stream`] is what a connection reads and writes: the TCP socket, or a [`WsConn`] over
//! it. The client side of RFC 6455 as a load generator needs it, and no more: the upgrade
//! request (`Sec-WebSocket-Protocol: mqtt`, path `/mqtt`), masked binary frames out (one per
//! write, at most [`MAX_FRAME`] bytes), unmasked frames in, decoded in place into the reader's
//! buffer. The answer must be `101`; its `Sec-WebSocket-Accept` is not checked (a SHA-1 for a
//! broker under test that we started ourselves). Server pings are not answered (runs are far
//! shorter than any broker's ping interval; midge and mosquitto send none); a close frame
//! reads as the end of the stream.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use serde::{Deserialize, Serialize};

/// Largest frame loadgen writes: bounds the copy one write makes for masking.
pub const MAX_FRAME: usize = 64 * 1024;

/// The upgrade request (the key is fixed: nothing depends on it but the unchecked answer).
const REQUEST: &str = "GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: bG9hZGdlbiB3cyBrZXkhIQ==\r\n\
    Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n";

/// Longest answer head accepted.
const MAX_HEAD: usize = 4096;

/// How clients reach the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// MQTT straight over TCP.
    #[default]
    Tcp,
    /// MQTT over WebSocket (the broker's listener must speak it: `protocol websockets`).
    Ws,
}

impl std::str::FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Transport, String> {
        match s {
            "tcp" => Ok(Transport::Tcp),
            "ws" => Ok(Transport::Ws),
            _ => Err(format!("--transport {s:?}: expected tcp or ws")),
        }
    }
}

/// One connection's byte stream.
pub use crate::tls::stream::Stream as PlainStream;

/// A connection's stream: MQTT straight on TCP or TLS, or inside WebSocket frames.
pub enum Stream {
    /// MQTT straight on the connection: plain TCP or TLS (`crate::tls`).
    Plain(PlainStream),
    Ws(Box<WsConn>),
}

impl Stream {
    /// Starts a non-blocking connect, over TLS when `tls` is given.
    pub fn connect(addr: SocketAddr, tls: Option<&crate::tls::ClientTls>) -> io::Result<Stream> {
        PlainStream::connect(addr, tls).map(Stream::Plain)
    }

    /// The pending error of the socket (a failed connect).
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            Stream::Plain(s) => s.take_error(),
            Stream::Ws(w) => w.sock.take_error(),
        }
    }

    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.set_nodelay(on),
            Stream::Ws(w) => w.sock.set_nodelay(on),
        }
    }

    /// The TLS layer, when the connection has one (for what it negotiated).
    pub fn plain(&self) -> Option<&PlainStream> {
        match self {
            Stream::Plain(s) => Some(s),
            Stream::Ws(_) => None,
        }
    }

    /// Once the TCP connect is done: for `Ws`, wraps the socket and queues the upgrade
    /// request (written by the first flush; MQTT bytes wait for the 101). WebSocket runs
    /// over plain TCP only: a TLS stream is left as it is.
    pub fn upgrade(self, transport: Transport) -> Stream {
        match (self, transport) {
            (Stream::Plain(PlainStream::Tcp(sock)), Transport::Ws) => {
                Stream::Ws(Box::new(WsConn::new(sock)))
            }
            (s, _) => s,
        }
    }

    /// Peer address of the socket.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Stream::Plain(s) => s.peer_addr(),
            Stream::Ws(w) => w.sock.peer_addr(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Ws(w) => w.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Ws(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Ws(w) => w.write_out().map(|_| ()),
        }
    }
}

impl Source for Stream {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.register(r, t, i),
            Stream::Ws(w) => w.sock.register(r, t, i),
        }
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.reregister(r, t, i),
            Stream::Ws(w) => w.sock.reregister(r, t, i),
        }
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.deregister(r),
            Stream::Ws(w) => w.sock.deregister(r),
        }
    }
}

/// A WebSocket client connection over a connected socket.
pub struct WsConn {
    sock: TcpStream,
    /// Waiting for the 101; the answer's head so far.
    head: Option<Vec<u8>>,
    /// Bytes after the head, not decoded yet.
    early: Vec<u8>,
    /// A frame (the CONNECT) written before the 101 came: it goes once it has.
    held: Vec<u8>,
    /// Frame bytes to write (the request, then one masked frame at a time), and how many
    /// are written.
    out: Vec<u8>,
    out_at: usize,
    /// Incoming frame: header bytes so far, payload bytes still to come and whether it is
    /// data (binary/continuation) or control (dropped).
    hdr: [u8; 10],
    hdr_len: usize,
    left: u64,
    data: bool,
    closed: bool,
    /// xorshift state for the masks.
    rng: u32,
}

impl WsConn {
    fn new(sock: TcpStream) -> WsConn {
        WsConn {
            sock,
            head: Some(Vec::new()),
            early: Vec::new(),
            held: Vec::new(),
            out: REQUEST.as_bytes().to_vec(),
            out_at: 0,
            hdr: [0; 10],
            hdr_len: 0,
            left: 0,
            data: false,
            closed: false,
            rng: 0x9e37_79b9,
        }
    }

    /// Writes queued frame bytes; `Ok(true)` when none are left.
    fn write_out(&mut self) -> io::Result<bool> {
        while self.out_at < self.out.len() {
            match self.sock.write(&self.out[self.out_at..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_at = 0;
        Ok(true)
    }

    /// Frames (a prefix of) `buf` once the last frame is out. Before the 101 one frame is
    /// held back (the client may not send frames before the answer).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.head.is_some() {
            if !self.held.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let request = std::mem::take(&mut self.out);
            let n = self.frame(buf);
            self.held = std::mem::replace(&mut self.out, request);
            self.write_out()?;
            return Ok(n);
        }
        if !self.write_out()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.frame(buf);
        self.write_out()?;
        Ok(n)
    }

    /// Appends one masked binary frame of (a prefix of) `buf` to `out`; returns its length.
    fn frame(&mut self, buf: &[u8]) -> usize {
        let n = buf.len().min(MAX_FRAME);
        self.out.push(0x82);
        match n {
            n if n < 126 => self.out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                self.out.push(0x80 | 126);
                self.out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                self.out.push(0x80 | 127);
                self.out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 17;
        self.rng ^= self.rng << 5;
        let mask = self.rng.to_ne_bytes();
        self.out.extend_from_slice(&mask);
        let word = u64::from_ne_bytes([
            mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
        ]);
        let start = self.out.len();
        self.out.extend_from_slice(&buf[..n]);
        let mut chunks = self.out[start..].chunks_exact_mut(8);
        for c in &mut chunks {
            let v = u64::from_ne_bytes((&*c).try_into().expect("8 bytes")) ^ word;
            c.copy_from_slice(&v.to_ne_bytes());
        }
        for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
            *b ^= mask[i & 3];
        }
        n
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.closed {
                return Ok(0);
            }
            if let Some(head) = &mut self.head {
                let n = self.sock.read(buf)?;
                if n == 0 {
                    return Ok(0);
                }
                head.extend_from_slice(&buf[..n]);
                let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
                    if head.len() > MAX_HEAD {
                        return Err(io::Error::other("WebSocket upgrade: answer head too long"));
                    }
                    continue;
                };
                if !head.starts_with(b"HTTP/1.1 101") {
                    let line = String::from_utf8_lossy(&head[..head.len().min(80)]).into_owned();
                    return Err(io::Error::other(format!(
                        "WebSocket upgrade refused: {line:?}"
                    )));
                }
                self.early = head.split_off(end + 4);
                self.head = None;
                // The frame the engine wrote meanwhile waited for this.
                let held = std::mem::take(&mut self.held);
                self.out.extend_from_slice(&held);
                self.write_out()?;
                continue;
            }
            let n = if self.early.is_empty() {
                self.sock.read(buf)?
            } else {
                let n = self.early.len().min(buf.len());
                buf[..n].copy_from_slice(&self.early[..n]);
                self.early.drain(..n);
                n
            };
            if n == 0 {
                return Ok(0);
            }
            let data = self.decode(&mut buf[..n]);
            if data > 0 || self.closed {
                return Ok(data);
            }
        }
    }

    /// Strips frame headers in place; returns the MQTT bytes left at the front.
    fn decode(&mut self, buf: &mut [u8]) -> usize {
        let (mut r, mut w) = (0, 0);
        while r < buf.len() {
            if self.left == 0 {
                self.hdr[self.hdr_len] = buf[r];
                self.hdr_len += 1;
                r += 1;
                let need = if self.hdr_len < 2 {
                    2
                } else {
                    hdr_need(&self.hdr)
                };
                if self.hdr_len < need {
                    continue;
                }
                let h = &self.hdr;
                self.left = match h[1] & 0x7f {
                    126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
                    127 => u64::from_be_bytes(h[2..10].try_into().expect("8 bytes")),
                    n => u64::from(n),
                };
                let op = h[0] & 0x0f;
                self.data = op == 0x2 || op == 0x0;
                self.hdr_len = 0;
                if op == 0x8 {
                    self.closed = true;
                    return w;
                }
                continue;
            }
            let take = (buf.len() - r).min(usize::try_from(self.left).unwrap_or(usize::MAX));
            if self.data {
                buf.copy_within(r..r + take, w);
                w += take;
            }
            r += take;
            self.left -= take as u64;
        }
        w
    }
}

/// A server frame header's length, from its second byte (2 until that is known).
fn hdr_need(h: &[u8; 10]) -> usize {
    match h[1] & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_strips_headers_across_reads() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let sock = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut c = WsConn::new(sock);
        let mut bytes = vec![0x82, 3, b'a', b'b', b'c', 0x89, 1, b'p', 0x02, 126, 0, 2];
        bytes.extend_from_slice(b"de");
        let mut out = Vec::new();
        for piece in bytes.chunks(1) {
            let mut b = piece.to_vec();
            let n = c.decode(&mut b);
            out.extend_from_slice(&b[..n]);
        }
        assert_eq!(out, b"abcde");
        let mut close = vec![0x88, 0];
        assert_eq!(c.decode(&mut close), 0);
        assert!(c.closed);
    }
}
