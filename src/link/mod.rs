//! Outgoing MQTT connections: the broker as a client (what a bridge is made of).
//!
//! A [`Link`] is one outgoing connection: a [`Transport`] made by a
//! [`crate::transport::Connector`] (non-blocking TCP, optionally TLS as the client), a
//! [`ClientSession`] (the client role of MQTT, a pure state machine in [`session`]) and its read
//! and write buffers. Any mio loop drives it through a small API:
//!
//! - [`Link::register`] once, then [`Link::on_ready`] for each readiness event of its token;
//! - [`Link::tick`] from the loop's timer ([`Link::next_deadline`] says when);
//! - [`Link::publish`] and [`Link::subscribe`] queue packets, [`Link::flush`] sends them (once
//!   per loop turn, however many were queued);
//! - [`Link::next_event`] hands out what happened: connected, messages received,
//!   acknowledgements, SUBACKs, and the end of the link.
//!
//! Bounded: the read buffer holds at most one packet of the session's `max_packet_size` plus
//! one read; the write buffer refuses new publishes beyond [`MAX_WRITE_BUFFER`] and reading
//! pauses while it is over that bound (the acknowledgements reading would cause cannot pile
//! up behind a peer that does not read). Nothing recurses.

pub mod session;

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use mio::{Interest, Token};

use crate::protocol::{self, ByteStr, Packet, Publish, QoS, SubOptions};
use crate::reactor::{Event as Readiness, Registry};
use crate::transport::{Connector, Transport};
pub use session::{ClientSession, CloseReason, Event, SendError, SessionConfig, Unreleased};

/// Bytes read per `read` call.
const READ_CHUNK: usize = 16 * 1024;

/// The write buffer's bound: publishes are refused beyond it and reading pauses.
pub const MAX_WRITE_BUFFER: usize = 4 * 1024 * 1024;

/// One outgoing MQTT connection. Owned by one loop thread.
#[derive(Debug)]
pub struct Link {
    stream: Transport,
    session: ClientSession,
    rbuf: BytesMut,
    wbuf: BytesMut,
    token: Token,
    /// The TCP connect has completed.
    tcp_up: bool,
    /// The interest last registered, so that it is changed only when it changes.
    interest: Option<Interest>,
    /// The socket may hold input not read yet: set by a readable event, cleared when a read
    /// reaches `WouldBlock` or the end; still set when reading paused on a full write buffer.
    read_due: bool,
    /// The transport is closed (after the session ended and its last bytes were tried).
    shut: bool,
    /// The time of the last event, tick or flush: what packets queued between them count as
    /// sent at for keep-alive (at most one loop turn early, which only brings a ping
    /// forward), so that publishing reads no clock per message.
    now: Instant,
}

/// Sets the top bit of an encoded CONNECT's protocol level (mosquitto's bridge mark): the
/// codec encodes only standard levels, and this is the one place a client sends another.
fn mark_bridge(connect: &mut [u8]) {
    // Fixed header: one type byte and a 1-4 byte remaining length (last byte < 0x80).
    let Some(len_bytes) = connect[1..].iter().take(4).position(|b| b & 0x80 == 0) else {
        return;
    };
    let name_at = 2 + len_bytes;
    let Some(name_len) = connect.get(name_at..name_at + 2) else {
        return;
    };
    let level_at = name_at + 2 + usize::from(u16::from_be_bytes([name_len[0], name_len[1]]));
    if let Some(level) = connect.get_mut(level_at) {
        *level |= 0x80;
    }
}

impl Link {
    /// Starts connecting to `addr` (never waits) with a session whose CONNECT is queued;
    /// `now` starts its CONNACK timer.
    pub fn connect(
        connector: &Connector,
        addr: SocketAddr,
        cfg: SessionConfig,
        now: Instant,
    ) -> io::Result<Link> {
        let stream = connector.connect(addr)?;
        let mut link = Link {
            stream,
            session: ClientSession::new(cfg, now),
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            token: Token(0),
            tcp_up: false,
            interest: None,
            read_due: false,
            shut: false,
            now,
        };
        link.encode_output(now);
        Ok(link)
    }

    /// Registers the socket under `token` (WRITABLE first: it announces the connect).
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        self.token = token;
        let interest = Interest::READABLE | Interest::WRITABLE;
        registry.register(&mut self.stream, token, interest)?;
        self.interest = Some(interest);
        Ok(())
    }

    /// Removes the socket from `registry` (before dropping a link that is still open).
    pub fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.interest = None;
        registry.deregister(&mut self.stream)
    }

    /// A readiness event for this link's token: finishes the connect, reads and handles
    /// every packet, sends what that caused.
    pub fn on_ready(&mut self, registry: &Registry, event: &Readiness, now: Instant) {
        if self.shut {
            return;
        }
        self.now = now;
        if !self.tcp_up {
            match self.stream.connect_finished() {
                Ok(true) => self.tcp_up = true,
                Ok(false) => return,
                Err(e) => {
                    self.fail(format!("connect failed: {e}"));
                    self.finish(registry);
                    return;
                }
            }
        }
        // Reading can pause on a full write buffer; a flush that drains it resumes reading,
        // so this loops (a bounded number of times: each pass either drains or stops).
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.read_due = true;
        }
        self.pump(now);
        self.finish(registry);
    }

    /// Timers (CONNACK timeout, keep-alive); sends a PINGREQ when one is due.
    pub fn tick(&mut self, registry: &Registry, now: Instant) {
        if self.shut {
            return;
        }
        self.now = now;
        self.session.tick(now);
        self.encode_output(now);
        self.flush(registry);
    }

    /// When [`Link::tick`] next has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.shut {
            None
        } else {
            self.session.next_deadline()
        }
    }

    /// Queues a PUBLISH (sent by the next [`Link::flush`]); returns its packet id (0 for QoS 0).
    pub fn publish(
        &mut self,
        topic: ByteStr,
        payload: Bytes,
        qos: QoS,
        retain: bool,
    ) -> Result<u16, SendError> {
        if self.wbuf.len() >= MAX_WRITE_BUFFER {
            return Err(SendError::Backpressure);
        }
        let id = self.session.publish(topic, payload, qos, retain)?;
        self.encode_output(self.now);
        Ok(id)
    }

    /// Queues a PUBLISH whose packet id the caller chose (see
    /// [`ClientSession::publish_packet`]).
    pub fn publish_packet(&mut self, publish: Publish) -> Result<(), SendError> {
        if self.wbuf.len() >= MAX_WRITE_BUFFER {
            return Err(SendError::Backpressure);
        }
        self.session.publish_packet(publish)?;
        self.encode_output(self.now);
        Ok(())
    }

    /// Queues the PUBREL of a QoS 2 flow begun on an earlier connection.
    pub fn release(&mut self, packet_id: u16) -> Result<(), SendError> {
        self.session.release(packet_id)?;
        self.encode_output(self.now);
        Ok(())
    }

    /// Queues the PUBACK (QoS 1) or PUBREC (`qos2`) of an incoming message (see
    /// [`SessionConfig::manual_acks`]); sent by the next [`Link::flush`].
    pub fn acknowledge(&mut self, packet_id: u16, qos2: bool) {
        self.session.acknowledge(packet_id, qos2);
        self.encode_output(self.now);
    }

    /// The session's unreleased incoming QoS 2 ids, for the next link's (see
    /// [`ClientSession::take_unreleased`]).
    pub fn take_unreleased(&mut self) -> Unreleased {
        self.session.take_unreleased()
    }

    /// Holds the previous link's unreleased incoming QoS 2 ids (see
    /// [`ClientSession::resume_unreleased`]).
    pub fn resume_unreleased(&mut self, held: Unreleased) {
        self.session.resume_unreleased(held);
    }

    /// Queues a SUBSCRIBE; returns its packet id.
    pub fn subscribe(&mut self, filters: &[(ByteStr, QoS)]) -> Result<u16, SendError> {
        let id = self.session.subscribe(filters)?;
        self.encode_output(self.now);
        Ok(id)
    }

    /// Queues a SUBSCRIBE with full subscription options; returns its packet id.
    pub fn subscribe_with(
        &mut self,
        filters: Vec<(ByteStr, SubOptions)>,
    ) -> Result<u16, SendError> {
        let id = self.session.subscribe_with(filters)?;
        self.encode_output(self.now);
        Ok(id)
    }

    /// Queues an UNSUBSCRIBE; returns its packet id.
    pub fn unsubscribe(&mut self, filters: Vec<ByteStr>) -> Result<u16, SendError> {
        let id = self.session.unsubscribe(filters)?;
        self.encode_output(self.now);
        Ok(id)
    }

    /// Sends DISCONNECT and closes the link.
    pub fn disconnect(&mut self, registry: &Registry) {
        self.session.disconnect();
        self.encode_output(self.now);
        self.flush(registry);
    }

    /// Writes what is queued, as far as the socket takes it, and updates the interest.
    pub fn flush(&mut self, registry: &Registry) {
        if !self.shut && self.tcp_up {
            self.now = Instant::now();
            self.pump(self.now);
        }
        self.finish(registry);
    }

    /// Reads (while reading is due) and writes until neither makes progress: a write that
    /// drains a full buffer lets a paused read go on. Each pass either empties the socket's
    /// input or stops on a buffer that the socket does not drain, so this ends.
    fn pump(&mut self, now: Instant) {
        loop {
            if self.read_due {
                self.read_due = !self.read(now);
            }
            self.write_out();
            if !(self.read_due && self.wbuf.len() < MAX_WRITE_BUFFER) {
                break;
            }
        }
    }

    /// The next event (connected, message, ack, SUBACK, closed).
    pub fn next_event(&mut self) -> Option<Event> {
        self.session.next_event()
    }

    /// The session, for its state (connected, in flight).
    pub fn session(&self) -> &ClientSession {
        &self.session
    }

    /// The link is over: its socket is closed and no event will follow the queued ones.
    pub fn is_closed(&self) -> bool {
        self.shut
    }

    /// Reads until `WouldBlock`, the end, or a full write buffer (returns false then:
    /// still to be read). Every complete packet goes to the session.
    fn read(&mut self, now: Instant) -> bool {
        let max_packet = self.session.max_packet_size();
        loop {
            if self.session.is_closed() {
                return true;
            }
            if self.wbuf.len() >= MAX_WRITE_BUFFER {
                return false;
            }
            self.rbuf.reserve(READ_CHUNK);
            let spare = self.rbuf.spare_capacity_mut();
            let len = spare.len().min(READ_CHUNK);
            // SAFETY: `read` only writes into the slice; `len` advances by what it reports.
            let slice =
                unsafe { std::slice::from_raw_parts_mut(spare.as_mut_ptr().cast::<u8>(), len) };
            match self.stream.read(slice) {
                Ok(0) => {
                    self.session
                        .connection_lost("connection closed by peer".into());
                    return true;
                }
                Ok(n) => {
                    // SAFETY: the first `n` bytes of the spare capacity were just written.
                    unsafe { self.rbuf.set_len(self.rbuf.len() + n) };
                    loop {
                        match protocol::decode(
                            &mut self.rbuf,
                            Some(self.session.version()),
                            max_packet,
                        ) {
                            Ok(Some(packet)) => self.session.handle(packet),
                            Ok(None) => break,
                            Err(e) => {
                                self.session
                                    .protocol_error(format!("bad packet from the peer: {e}"));
                                break;
                            }
                        }
                        if self.session.is_closed() {
                            break;
                        }
                    }
                    self.encode_output(now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.fail(format!("read error: {e}"));
                    return true;
                }
            }
        }
    }

    /// Encodes the session's queued packets into the write buffer.
    fn encode_output(&mut self, now: Instant) {
        let version = self.session.version();
        let bridge = self.session.announces_bridge();
        let wbuf = &mut self.wbuf;
        for packet in self.session.take_output(now) {
            let start = wbuf.len();
            protocol::encode(&packet, version, wbuf);
            if bridge && matches!(packet, Packet::Connect(_)) {
                mark_bridge(&mut wbuf[start..]);
            }
        }
    }

    /// Writes the write buffer and the transport's own records until done or `WouldBlock`.
    fn write_out(&mut self) {
        while !self.wbuf.is_empty() {
            match self.stream.write(&self.wbuf) {
                Ok(0) => {
                    self.fail("connection closed while writing".into());
                    return;
                }
                Ok(n) => {
                    let _ = self.wbuf.split_to(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.fail(format!("write error: {e}"));
                    return;
                }
            }
        }
        if let Err(e) = self.stream.flush() {
            self.fail(format!("write error: {e}"));
        }
    }

    fn fail(&mut self, why: String) {
        self.wbuf.clear();
        self.session.connection_lost(why);
    }

    /// After every event: closes the socket once the session is over (after one last try to
    /// send its final packets), or recomputes the interest from the buffers.
    fn finish(&mut self, registry: &Registry) {
        if self.shut {
            return;
        }
        if self.session.is_closed() {
            if self.tcp_up {
                self.write_out();
            }
            let _ = self.stream.shutdown(std::net::Shutdown::Both);
            let _ = self.deregister(registry);
            self.shut = true;
            self.rbuf = BytesMut::new();
            self.wbuf = BytesMut::new();
            return;
        }
        let mut interest = Interest::READABLE;
        if !self.tcp_up || !self.wbuf.is_empty() || self.stream.wants_write() {
            interest |= Interest::WRITABLE;
        }
        if self.interest != Some(interest)
            && registry
                .reregister(&mut self.stream, self.token, interest)
                .is_ok()
        {
            self.interest = Some(interest);
        }
    }
}
