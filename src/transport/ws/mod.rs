//! MQTT over WebSocket (RFC 6455; MQTT 5.0 §6): a layer over TCP or TLS, driven by the shard's
//! reads and writes like the TLS layer, with no thread and no buffer of its own on the data
//! path.
//!
//! - [`handshake`]: the HTTP request head and the answers (101, 400, files).
//! - [`frame`]: frame decoding (in place, into the MQTT stream) and server frame headers.
//! - [`http`]: `http_dir`, files for a plain GET.
//!
//! # Why a framing layer of our own, not `tungstenite`
//! Every byte of every WebSocket client passes here. tungstenite hands out one owned
//! `Message` per frame (an allocation and a copy per MQTT packet, MQTT.js and paho send one
//! frame per packet), buffers input and output in its own vectors, answers protocol errors
//! with its own close statuses, and has no place for `http_dir`. The layer MQTT needs is
//! small: reading unmasks in place in the shard's pooled read buffer; writing puts one frame
//! header in front of what the shard flushes (one binary frame per flush, not per packet,
//! sent with `writev` straight from the shard's write buffer). Ping, close and the
//! handshake's answer are a few bytes of the layer's own, queued between data frames.
//!
//! # States
//! `Handshake` (reading the request head, at most `websockets_headers_size` bytes) ->
//! `Open` (frames), or `Serving` (a file or error page is being written; the socket's write
//! side is shut once it is) -> `Closed` (a close frame was sent or received; reads return
//! end of stream). A refused upgrade, a frame that breaks the protocol and a text frame make
//! `read` fail with `InvalidData` ([`super::Transport::is_layer_error`]) after the answer (a
//! 400, or a close frame with its status) is queued; the shard then closes the connection,
//! and [`WsStream::shutdown`] sends what is queued before the socket closes.

pub mod frame;
pub mod handshake;
pub mod http;

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use frame::{Decoder, Violation};
use handshake::{Parse, Request};

use super::{ClientAddr, Transport};

/// Most bytes of the layer's own (pongs, a close frame) queued at once: a client that sends
/// pings without reading the pongs gets no more answers beyond this.
const MAX_CONTROL_QUEUE: usize = 1024;

/// A WebSocket listener's settings, shared by its connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsConfig {
    /// Most bytes of the request head (`websockets_headers_size`).
    pub headers_size: usize,
    /// Files for plain GETs (`http_dir`).
    pub http_dir: Option<PathBuf>,
    /// Largest frame payload and fragmented message (`max_packet_size`).
    pub max_frame: u64,
    /// `websockets_trust_x_forwarded_for`: the last `X-Forwarded-For` entry of the upgrade
    /// request is the client (the listener is reachable only through a proxy that sets it).
    pub trust_x_forwarded_for: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Handshake,
    Open,
    Serving,
    Closed,
}

/// One WebSocket connection over its inner transport (TCP or TLS).
#[derive(Debug)]
pub struct WsStream {
    inner: Transport,
    config: Arc<WsConfig>,
    state: State,
    /// `Handshake`: the request head so far. `Open`: bytes that came after the head in the
    /// same read (frames the client sent without waiting for the 101), not decoded yet.
    head: Vec<u8>,
    decoder: Decoder,
    /// The layer's own bytes to send (the 101 or an HTTP answer, pongs, a close frame), and
    /// how much of them is sent. Written only between data frames.
    out: Vec<u8>,
    out_at: usize,
    /// The current outgoing data frame: its header bytes not yet written, and how many of
    /// its payload bytes (still in the shard's write buffer) are not yet written.
    frame_head: [u8; 10],
    frame_head_at: usize,
    frame_head_len: usize,
    frame_left: usize,
    /// The last socket read returned less than it was offered.
    raw_short: bool,
    close_sent: bool,
    /// The client's close frame came with data that `read` returned: the end of stream is
    /// still to be reported, and no socket event will ask for it.
    eof_pending: bool,
    /// The client as a trusted `X-Forwarded-For` names it.
    forwarded_for: Option<SocketAddr>,
}

impl WsStream {
    /// A connection whose handshake starts now (the client speaks first).
    pub fn new(inner: Transport, config: Arc<WsConfig>) -> WsStream {
        let max = config.max_frame;
        WsStream {
            inner,
            config,
            state: State::Handshake,
            head: Vec::new(),
            decoder: Decoder::new(max),
            out: Vec::new(),
            out_at: 0,
            frame_head: [0; 10],
            frame_head_at: 0,
            frame_head_len: 0,
            frame_left: 0,
            raw_short: false,
            close_sent: false,
            eof_pending: false,
            forwarded_for: None,
        }
    }

    pub(super) fn inner(&self) -> &Transport {
        &self.inner
    }

    pub(super) fn inner_mut(&mut self) -> &mut Transport {
        &mut self.inner
    }

    /// See [`Transport::client_addr`]: only a listener that trusts `X-Forwarded-For` waits
    /// for the upgrade request to know its client.
    pub fn client_addr(&self) -> ClientAddr {
        if !self.config.trust_x_forwarded_for {
            return ClientAddr::Socket;
        }
        match (self.state, self.forwarded_for) {
            (State::Handshake, _) => ClientAddr::Pending,
            (_, Some(a)) => ClientAddr::Named(a),
            (_, None) => ClientAddr::Socket,
        }
    }

    /// In the middle of a data frame: nothing else may be written until it ends.
    fn mid_frame(&self) -> bool {
        self.frame_left > 0 || self.frame_head_at < self.frame_head_len
    }

    /// See [`Transport::short_read_drains`]: the socket read was short and nothing is held.
    pub fn short_read_drains(&self) -> bool {
        self.state == State::Open
            && self.raw_short
            && self.head.is_empty()
            && self.inner.short_read_drains()
    }

    pub fn wants_write(&self) -> bool {
        self.out_at < self.out.len()
            || self.frame_head_at < self.frame_head_len
            || self.inner.wants_write()
    }

    pub fn has_buffered_input(&mut self) -> bool {
        self.eof_pending
            || (self.state == State::Open && !self.head.is_empty())
            || self.inner.has_buffered_input()
    }

    /// The upgrade is done (and the TLS handshake under it).
    pub fn is_established(&self) -> bool {
        self.state == State::Open && self.inner.is_established()
    }

    /// MQTT bytes from the client; see the module documentation.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.state {
                State::Handshake => self.read_head(buf)?,
                State::Open => {
                    let n = if self.head.is_empty() {
                        let n = self.inner.read(buf)?;
                        self.raw_short = n < buf.len();
                        n
                    } else {
                        let n = self.head.len().min(buf.len());
                        buf[..n].copy_from_slice(&self.head[..n]);
                        self.head.drain(..n);
                        self.raw_short = false;
                        n
                    };
                    if n == 0 {
                        self.state = State::Closed;
                        return Ok(0);
                    }
                    let decoded = match self.decoder.decode(&mut buf[..n]) {
                        Ok(d) => d,
                        Err(v) => return Err(self.refuse(v)),
                    };
                    self.queue_pong();
                    if let Some(code) = decoded.close {
                        // Answer with the client's status (RFC 6455 §5.5.1), then end of stream.
                        self.queue_close(code.unwrap_or(frame::CLOSE_NORMAL));
                        self.state = State::Closed;
                        self.head = Vec::new();
                        self.eof_pending = decoded.data > 0;
                    }
                    if decoded.data > 0 || self.state == State::Closed {
                        return Ok(decoded.data);
                    }
                }
                State::Serving => {
                    // The answer is being written; input is read and dropped until the client
                    // closes (connect_timeout bounds a client that does not).
                    if self.inner.read(buf)? == 0 {
                        return Ok(0);
                    }
                }
                State::Closed => {
                    self.eof_pending = false;
                    return Ok(0);
                }
            }
        }
    }

    /// Reads request head bytes; answers the head once it is complete.
    fn read_head(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let limit = self.config.headers_size;
        let room = (limit + 1).saturating_sub(self.head.len()).min(buf.len());
        let n = self.inner.read(&mut buf[..room])?;
        if n == 0 {
            self.state = State::Closed;
            return Ok(());
        }
        self.head.extend_from_slice(&buf[..n]);
        match handshake::parse(&self.head) {
            Parse::Incomplete if self.head.len() > limit => {
                Err(self.refuse_request("request head larger than websockets_headers_size"))
            }
            Parse::Incomplete => Ok(()),
            Parse::Bad(reason) => Err(self.refuse_request(reason)),
            Parse::Done(
                Request::Upgrade {
                    accept,
                    protocol,
                    forwarded_for,
                },
                used,
            ) => {
                if self.config.trust_x_forwarded_for {
                    if let Some(entry) = forwarded_for {
                        match handshake::forwarded_addr(&entry) {
                            Some(a) => self.forwarded_for = Some(a),
                            None => {
                                return Err(self.refuse_request("X-Forwarded-For is not an address"))
                            }
                        }
                    }
                }
                handshake::switching(&accept, protocol, &mut self.out);
                self.head.drain(..used);
                self.head.shrink_to_fit();
                self.state = State::Open;
                Ok(())
            }
            Parse::Done(Request::Get { target }, _) => {
                http::answer(self.config.http_dir.as_deref(), &target, &mut self.out);
                self.head = Vec::new();
                self.state = State::Serving;
                Ok(())
            }
        }
    }

    /// A 400 answer, and the error that makes the shard close the connection.
    fn refuse_request(&mut self, reason: &'static str) -> io::Error {
        let body = format!("{reason}\n");
        handshake::response(
            "400 Bad Request",
            "text/plain",
            body.as_bytes(),
            &mut self.out,
        );
        self.state = State::Closed;
        self.close_sent = true; // no close frame: the upgrade never happened
        self.head = Vec::new();
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("WebSocket upgrade refused: {reason}"),
        )
    }

    /// A close frame with the violation's status, and the error for the shard.
    fn refuse(&mut self, v: Violation) -> io::Error {
        self.queue_close(v.code);
        self.state = State::Closed;
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("WebSocket protocol error: {} (close {})", v.reason, v.code),
        )
    }

    fn queue_pong(&mut self) {
        if let Some((payload, len)) = self.decoder.take_ping() {
            if self.out.len() - self.out_at < MAX_CONTROL_QUEUE {
                frame::control(frame::OP_PONG, &payload[..len], &mut self.out);
            }
        }
    }

    fn queue_close(&mut self, code: u16) {
        if !self.close_sent {
            self.close_sent = true;
            frame::close(code, &mut self.out);
        }
    }

    /// Writes the layer's own bytes, between data frames; `Ok(true)` when none are left.
    fn write_out(&mut self) -> io::Result<bool> {
        while self.out_at < self.out.len() && !self.mid_frame() {
            match self.inner.write(&self.out[self.out_at..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.out_at == self.out.len() && self.out_at > 0 {
            self.out = Vec::new();
            self.out_at = 0;
        }
        Ok(self.out.is_empty())
    }

    /// MQTT bytes to the client: the first call after a frame ended starts a binary frame of
    /// all of `buf`, later calls continue it with the same bytes' rest (the shard passes its
    /// write buffer again, advanced by what was taken). Returns how many payload bytes went.
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.state {
            State::Open => {}
            State::Handshake => return Err(io::ErrorKind::WouldBlock.into()),
            State::Serving | State::Closed => return Err(io::ErrorKind::BrokenPipe.into()),
        }
        if buf.is_empty() {
            return Ok(0);
        }
        if !self.mid_frame() {
            if !self.write_out()? {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.frame_head_len = frame::header(frame::OP_BINARY, buf.len(), &mut self.frame_head);
            self.frame_head_at = 0;
            self.frame_left = buf.len();
        }
        let take = self.frame_left.min(buf.len());
        let head = &self.frame_head[self.frame_head_at..self.frame_head_len];
        let head_len = head.len();
        let n = self
            .inner
            .write_vectored(&[IoSlice::new(head), IoSlice::new(&buf[..take])])?;
        let from_head = n.min(head_len);
        self.frame_head_at += from_head;
        let payload = n - from_head;
        self.frame_left -= payload;
        if payload == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(payload)
    }

    /// Writes queued bytes of the layer, then the inner layer's (TLS records). Once an HTTP
    /// answer is all written, the write side is shut: the client reads it to the end.
    pub fn flush(&mut self) -> io::Result<()> {
        let done = self.write_out()?;
        self.inner.flush()?;
        if done && self.state == State::Serving && !self.inner.wants_write() {
            self.state = State::Closed;
            let _ = self.inner.shutdown(Shutdown::Write);
        }
        Ok(())
    }

    /// Sends a close frame (status 1000) unless one was sent or a data frame is half
    /// written, and what else is queued (best effort), then shuts the inner transport down.
    pub fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        if self.state == State::Open && !self.mid_frame() {
            self.queue_close(frame::CLOSE_NORMAL);
        }
        self.state = State::Closed;
        let _ = self.write_out();
        self.inner.shutdown(how)
    }
}
