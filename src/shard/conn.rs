//! One client connection as its shard sees it: socket, buffers, protocol state, timers.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::auth::Auth;
use crate::protocol::{ByteStr, Connect, ProtocolVersion};
use crate::transport::Transport;
use bytes::BytesMut;

/// Where a connection stands in the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// Accepted; the first packet must be CONNECT [MQTT-3.1.0-1].
    AwaitConnect,
    /// CONNACK sent; attached to the session in this slot of the shard's session slab.
    Active { session: usize },
}

/// A client connection. Shard thread only.
#[derive(Debug)]
pub struct Conn {
    /// Plain TCP or TLS; the shard reads and writes plaintext through it.
    pub stream: Transport,
    /// The client's address: the socket's peer, or the one a proxy in front of the listener
    /// named (PROXY protocol, a trusted `X-Forwarded-For`) once `peer_settled`.
    pub peer: SocketAddr,
    /// `peer` is final and counted in `max_connections_per_ip`. False from accept until the
    /// transport knows its client on a listener that defers it (`settle_peer` in `io.rs`).
    pub peer_settled: bool,
    /// Unparsed input. Unallocated while there is none: buffers come from and go back to the
    /// shard's [`super::pool::BufferPool`], so an idle connection holds no buffer.
    pub rbuf: BytesMut,
    /// How much room `rbuf` is given when it needs more: grows only while reads fill it,
    /// falls back when they stop (see [`super::pool::ReadTarget`]).
    pub rbuf_target: super::pool::ReadTarget,
    /// Unsent output; like `rbuf`, unallocated while empty.
    pub wbuf: BytesMut,
    /// Output held back for persistence (see `shard::durable`): `wbuf` bytes written so far
    /// (a position in the connection's output stream), how far the stream may be written
    /// while `gates` holds are pending, and how many holds are pending. With no hold the
    /// whole buffer may go. Positions are wrapping 32-bit counters (4 bytes each in every
    /// connection instead of 8): only differences smaller than the buffer are ever used.
    pub written: u32,
    pub released: u32,
    pub gates: u32,
    /// `wbuf` holds acknowledgements that wait until what they acknowledge is durable (how
    /// many is counted by `shard::durable`), and the stream position output may be written up
    /// to while it does (at or before the first of them): the publisher's own copies of its
    /// messages, behind them, wait too.
    pub acks_held: bool,
    pub ack_barrier: u32,
    pub state: ConnState,
    /// Known once CONNECT is decoded.
    pub version: Option<ProtocolVersion>,
    /// Close the connection when nothing was received for this many milliseconds (1.5 x
    /// keep-alive, [MQTT-3.1.2-24]); 0 for keep-alive 0. (At most 65535 x 1500 ms, which fits
    /// 32 bits: 4 bytes in every connection where an `Option<Duration>` takes 16.)
    pub idle_limit_ms: u32,
    pub last_rx: Instant,
    /// Queued in the shard's dirty list for a flush at the end of the loop turn.
    pub dirty: bool,
    /// WRITABLE interest is registered (the last flush hit `WouldBlock`).
    pub want_write: bool,
    /// Its input comes with the reactor's events (`Registry::receive`, io_uring): never
    /// read the socket.
    pub receiving: bool,
    /// Whether the listener it came through allows anonymous clients.
    pub allow_anonymous: bool,
    /// The password file and ACL of the listener it came through (the global ones unless
    /// `per_listener_settings`).
    pub auth: Auth,
    /// The listener it came through, by index in the configuration: where a reload finds
    /// its new password file and ACL. One byte (the struct has no room for more):
    /// [`UNTRACKED_LISTENER`] for the 256th listener and beyond, whose connections keep the
    /// files they started with until they reconnect.
    pub listener: u8,
    /// MQTT 5 topic aliases set by the client (index = alias - 1), `max_topic_alias` of
    /// them once the client set its first (a boxed slice: 16 bytes inline where a `Vec`
    /// takes 24, in every connection).
    pub topic_aliases: Box<[Option<ByteStr>]>,
    /// The client's Request Problem Information (MQTT 5): reason strings only when true.
    pub problem_info: bool,
    /// Topic aliases the broker uses toward this client (MQTT 5).
    pub aliases_out: OutgoingAliases,
    /// The username a TLS listener derives from the client certificate: its Common Name with
    /// `use_identity_as_username`, its whole subject (RFC 2253, as mosquitto) with
    /// `use_subject_as_username`. Filled when the TLS handshake finishes, so it is known
    /// before CONNECT is decoded (no plaintext, hence no CONNECT, arrives earlier). `None` on
    /// plain TCP, on listeners with neither option, or for a client without a certificate;
    /// mosquitto refuses such a client (CONNACK not authorized) when the listener has one of
    /// the options: see [`Conn::tls_identity_required`].
    pub tls_identity: Option<Box<str>>,
    /// The listener has `use_identity_as_username` or `use_subject_as_username`: the username
    /// is [`Conn::tls_identity`] (any username and password in CONNECT are ignored, as
    /// mosquitto does) and a client without one must be refused.
    pub tls_identity_required: bool,
    /// A CONNECT whose password is being verified off the loop (see `auth::AuthWorker`):
    /// nothing else from this connection is decoded until the answer comes back.
    pub pending_connect: Option<Box<Connect>>,
    /// Matches an `AuthResponse` to this connection (a slot may be reused meanwhile): the low
    /// 32 bits of the shard's counter, as a check answered 4 billion checks later is the only
    /// one that could be taken for another's (4 bytes more would grow every connection).
    pub auth_token: u32,
    /// MQTT 5 enhanced authentication (`handle::auth`): the method the client connected with
    /// and any exchange running. Boxed: `None` (8 bytes) for most connections.
    pub enhanced_auth: Option<Box<crate::auth::enhanced::EnhancedAuth>>,
}

/// Topic aliases from the broker to one MQTT 5 client ([MQTT-3.3.2-10..12]): the first
/// PUBLISH on a topic carries the topic and a new alias, later ones an empty topic and the
/// alias, saving the topic's bytes on every message. At most the client's Topic Alias
/// Maximum are assigned (first come, first kept: no eviction, so a mapping never changes
/// under a message the client is still decoding).
#[derive(Debug, Default)]
pub struct OutgoingAliases {
    /// The client's Topic Alias Maximum (0 = none, or disabled by `topic_alias_to_clients`).
    pub max: u16,
    /// Boxed and created at the first alias: an empty `HashMap` is 48 bytes in every
    /// connection, and most clients never get an alias (memory per connection).
    #[allow(clippy::box_collection)] // the box is the point: 8 bytes inline instead of 48
    by_topic: Option<Box<std::collections::HashMap<ByteStr, u16>>>,
}

impl OutgoingAliases {
    /// The alias to send with a PUBLISH on `topic`, when one exists or can be assigned, and
    /// whether the topic itself must still be sent (true the first time: that sets the
    /// mapping). Allocates only when a new alias is assigned (the map itself at the first).
    pub fn assign(&mut self, topic: &ByteStr) -> Option<(u16, bool)> {
        if self.max == 0 {
            return None;
        }
        let by_topic = self.by_topic.get_or_insert_with(Default::default);
        if let Some(&alias) = by_topic.get(topic) {
            Some((alias, false))
        } else if by_topic.len() < usize::from(self.max) {
            let alias = by_topic.len() as u16 + 1;
            // The topic outlives the message: its own copy, not a slice of a read buffer.
            by_topic.insert(topic.unshared(), alias);
            Some((alias, true))
        } else {
            None
        }
    }
}

/// [`Conn::listener`] of a connection whose listener's index does not fit.
pub const UNTRACKED_LISTENER: u8 = u8::MAX;

/// The [`Conn::listener`] value of listener `index`.
pub fn listener_index(index: usize) -> u8 {
    u8::try_from(index)
        .ok()
        .filter(|&i| i != UNTRACKED_LISTENER)
        .unwrap_or(UNTRACKED_LISTENER)
}

impl Conn {
    /// A freshly accepted connection.
    pub fn new(stream: Transport, peer: SocketAddr, allow_anonymous: bool) -> Conn {
        // A connection adopted from another shard has finished its handshake already.
        let tls_identity = stream.tls_identity().map(Box::from);
        let tls_identity_required = stream.tls_identity_required();
        Conn {
            stream,
            peer,
            peer_settled: true,
            rbuf: BytesMut::new(),
            rbuf_target: Default::default(),
            wbuf: BytesMut::new(),
            written: 0,
            released: 0,
            gates: 0,
            acks_held: false,
            ack_barrier: 0,
            state: ConnState::AwaitConnect,
            version: None,
            idle_limit_ms: 0,
            last_rx: Instant::now(),
            dirty: false,
            want_write: false,
            receiving: false,
            allow_anonymous,
            auth: Auth::default(),
            listener: 0,
            topic_aliases: Box::default(),
            problem_info: true,
            aliases_out: OutgoingAliases::default(),
            tls_identity,
            tls_identity_required,
            pending_connect: None,
            auth_token: 0,
            enhanced_auth: None,
        }
    }

    /// Queues the connection in the shard's `dirty` list for the flush at the end of the turn
    /// (once per turn, however many packets are written to it).
    pub fn mark_dirty(&mut self, key: usize, dirty: &mut Vec<usize>) {
        if !self.dirty {
            self.dirty = true;
            dirty.push(key);
        }
    }

    /// Writes as much of `wbuf` as the socket takes and persistence allows
    /// ([`Conn::writable_len`]), then pushes out what TLS made of it (records from the data,
    /// or handshake messages); counts the bytes written in `bytes_out`. A full socket is not
    /// an error.
    pub fn write_out(&mut self, bytes_out: &mut u64) -> io::Result<()> {
        loop {
            let allowed = self.writable_len();
            if allowed == 0 {
                break;
            }
            match self.stream.write(&self.wbuf[..allowed]) {
                Ok(0) => break,
                Ok(n) => {
                    self.advance_written(n);
                    *bytes_out += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        self.stream.flush()
    }

    /// The socket took the first `n` bytes of `wbuf`.
    #[inline]
    pub fn advance_written(&mut self, n: usize) {
        // `advance`, not `split_to`: the buffer stays unshared, so the pool can reclaim its
        // whole capacity once it is empty.
        bytes::Buf::advance(&mut self.wbuf, n);
        self.written = self.written.wrapping_add(n as u32);
    }

    /// How many bytes at the front of `wbuf` may be written now: all of them, unless output
    /// waits for the store (then up to the last released position, and not past a held
    /// acknowledgement).
    pub fn writable_len(&self) -> usize {
        if self.gates == 0 && !self.acks_held {
            return self.wbuf.len();
        }
        let mut allowed = self.wbuf.len();
        if self.gates != 0 {
            allowed = allowed.min(self.allowed_to(self.released));
        }
        if self.acks_held {
            allowed = allowed.min(self.allowed_to(self.ack_barrier));
        }
        allowed
    }

    /// How much of `wbuf` lies before stream position `pos`. A position behind `written`
    /// (all of it written) wraps to a huge difference: anything above the buffer's length
    /// means "nothing more may go".
    fn allowed_to(&self, pos: u32) -> usize {
        let allowed = pos.wrapping_sub(self.written) as usize;
        if allowed > self.wbuf.len() {
            0
        } else {
            allowed
        }
    }

    /// True when the client has been silent for longer than its keep-alive allows.
    pub fn keep_alive_expired(&self, idle: Duration) -> bool {
        self.idle_limit_ms != 0 && idle > Duration::from_millis(u64::from(self.idle_limit_ms))
    }

    /// The stream position up to which `wbuf` holds output now.
    pub fn output_end(&self) -> u32 {
        self.written.wrapping_add(self.wbuf.len() as u32)
    }

    /// Output up to stream position `end` may be written (a hold was released).
    pub fn release_to(&mut self, end: u32) {
        self.gates = self.gates.saturating_sub(1);
        // Marks are released in order, so `end` is never behind `released`.
        self.released = end;
    }

    /// Gives the read buffer back to the pool when it is empty, reusable, and the connection
    /// is not a busy sender. Otherwise the connection keeps it:
    /// - a busy sender (its read size grew, `rbuf_target`) will read again soon;
    /// - a buffer that payloads still slice (messages in flight) cannot be reused by the
    ///   pool yet; the connection reads into its free tail next time, and reuses it in place
    ///   once the payloads are gone (usually by then: they go at the end of the loop turn).
    ///
    /// The tick gives back what a quiet connection still holds.
    pub fn release_idle_rbuf(&mut self, pool: &mut super::pool::BufferPool) {
        if self.rbuf.is_empty()
            && self.rbuf_target.size() <= super::pool::BUFFER_SIZE
            && self.rbuf.try_reclaim(super::pool::BUFFER_SIZE)
        {
            pool.give(&mut self.rbuf);
        }
    }

    /// At each tick: the read size falls back once reads stopped filling the buffer, and an
    /// empty buffer larger than the new size is let go. Returns the
    /// connection's read-size growth, which the shard sums into the pool's growth count.
    pub fn tick_rbuf(&mut self, idle: bool, pool: &mut super::pool::BufferPool) -> usize {
        if idle && self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
            // Idle now: the read buffer goes back to the pool and the next one starts small.
            pool.give(&mut self.rbuf);
            self.rbuf_target.reset();
        } else if self.rbuf_target.tick() && self.rbuf.is_empty() {
            // Still reading, but never a full buffer lately: no reason to hold a large one.
            // It is dropped rather than pooled, so that no other connection inherits it (its
            // storage is freed now, or with the last payload that slices it).
            if self.rbuf.capacity() <= super::pool::BUFFER_SIZE {
                pool.give(&mut self.rbuf);
            } else {
                self.rbuf = BytesMut::new();
            }
        }
        self.rbuf_target.growth()
    }

    /// Bytes of a large packet arrived: that counts as activity for keep-alive, as in
    /// mosquitto (a 100 MB PUBLISH over a slow link takes longer than 1.5 x keep-alive, and
    /// the client cannot send PINGREQ in the middle of it). Only once connected, and only
    /// with more than 1000 bytes still to come (mosquitto's figure): before CONNECT,
    /// `last_rx` is the time of accept, which `connect_timeout` counts from.
    pub fn note_progress_on_large_packet(&mut self) {
        if !matches!(self.state, ConnState::Active { .. }) || self.rbuf.len() < 2 {
            return;
        }
        let missing = crate::protocol::frame_size(&self.rbuf)
            .map_or(0, |size| size.saturating_sub(self.rbuf.len()));
        if missing > 1000 {
            self.last_rx = Instant::now();
        }
    }

    /// True once the client spoke MQTT 5 in its CONNECT (reason codes and properties on).
    pub fn is_v5(&self) -> bool {
        self.version.is_some_and(ProtocolVersion::is_v5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outgoing_aliases_are_assigned_then_reused_up_to_the_maximum() {
        let mut a = OutgoingAliases {
            max: 1,
            ..Default::default()
        };
        assert_eq!(
            a.assign(&"a/b".into()),
            Some((1, true)),
            "topic and new alias"
        );
        assert_eq!(a.assign(&"a/b".into()), Some((1, false)), "alias alone");
        assert_eq!(a.assign(&"c".into()), None, "no alias left");
    }
}
