//! A shard: one thread, one `mio::Poll`, and everything it owns.
//!
//! A shard owns its connections (a `slab`), the sessions whose client id hashes to it, its
//! replica of the subscription index and its inbox. Nothing here is shared or locked: other
//! shards reach it only through [`inbox::ShardHandle`]. One loop turn is:
//! 1. poll (parked, so producers know to wake us), accept, read and handle every ready
//!    connection, answering into per-connection write buffers;
//! 2. drain the inbox (deliveries, replica updates, adopted connections);
//! 3. flush every connection written to in this turn, once (write coalescing);
//! 4. wake every other shard that was sent something in this turn, once;
//! 5. twice a second, enforce keep-alive and CONNECT time-outs.
//!
//! Sessions are homed by client id ([`home_shard`]): a CONNECT that arrives on another shard
//! moves its socket to the home shard before anything else happens. So a takeover, a resumed
//! persistent session or a second connection with the same id is always handled by one thread,
//! with no broker-wide lock or registry.

pub mod bench;
pub mod conn;
mod durable;
pub mod inbox;
mod linger;
pub mod msg_pool;
pub mod outbox;
pub mod per_ip;
pub mod pool;

use std::io::{self, Read, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::auth::{Access, AuthClient, AuthResponse};
use crate::broker::Shared;
use crate::index::{Entry, SubscriberId, TopicIndex};
use crate::message::SharedMessage;
use crate::message::{Delivery, SubscriptionIds};
use crate::protocol::reason::v5;
use crate::protocol::{self, Disconnect, Packet, ProtocolVersion, QoS, SubOptions};
use crate::session::{memory, Offer, OutState, Outgoing, SendPublish, Session};
use crate::store::{Batch as StoreBatch, RecoveredSession, Store};
use conn::{Conn, ConnState};
use inbox::{Batch, Inbox, ShardHandle, ShardMsg};
use pool::{BufferPool, MIN_READ};

/// Tokens at and above this value are listeners; below are connection slots.
const LISTENER_BASE: usize = 1 << 40;
/// Tokens from this value up to [`LISTENER_BASE`] are closed connections being drained
/// (see [`linger`]).
const LINGER_BASE: usize = 1 << 39;
/// The inbox waker.
pub const WAKER: Token = Token(usize::MAX);
/// How often keep-alive and CONNECT time-outs are checked.
const TICK: Duration = Duration::from_millis(250);
/// Unsent bytes a connection may have before QoS 0 messages to it are dropped: bounds the
/// memory a subscriber that stopped reading can cost, without slowing the others. A set
/// `max_queued_bytes` replaces it (see `Shard::qos0_backlog_limit`).
const SLOW_CONSUMER_BACKLOG: usize = 16 * 1024 * 1024;
/// Read at most this much from one connection per readiness event before giving others a
/// turn: four reads of the largest read buffer.
const READ_BUDGET: usize = 4 * pool::MAX_READ_SIZE;

/// The shard that owns the session of `client_id`, for `shards` shards (FNV-1a: cheap,
/// stable across runs and restarts, well spread for the short ids clients use).
pub fn home_shard(client_id: &[u8], shards: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in client_id {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // FNV-1a's low bits are weak (the lowest is just the parity of the bytes' low bits),
    // and `% shards` reads them: fold the high half in first (a murmur3 finaliser step).
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    (h % shards as u64) as usize
}

/// When `rbuf` holds the fixed header of a packet larger than [`pool::MAX_READ_SIZE`] whose
/// remaining bytes do not fit its `spare` capacity: how many more bytes it needs. `None` for
/// small packets (the read size serves them) and for a frame above `max_packet` (refused by
/// the decoder, never reserved for).
fn big_packet_missing(rbuf: &[u8], spare: usize, max_packet: usize) -> Option<usize> {
    let size = protocol::frame_size(rbuf)?;
    if size <= pool::MAX_READ_SIZE || size > max_packet {
        return None;
    }
    let missing = size.checked_sub(rbuf.len())?;
    (missing > spare).then_some(missing)
}

/// Why a connection is closed; decides wills, logs and what the peer is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Close {
    /// The client sent DISCONNECT: no will [MQTT-3.1.2-10].
    Graceful,
    /// The peer closed the socket or it failed.
    Gone(String),
    /// The TLS layer failed (handshake refused, a client that does not speak TLS, a bad
    /// record): the reason, which says TLS. rustls has already sent its alert.
    Tls(String),
    /// The client broke the protocol: the MQTT 5 reason code sent in DISCONNECT (to 5.0
    /// clients) and the reason that is logged.
    Protocol { code: u8, reason: String },
    /// Nothing received within 1.5 x keep-alive.
    KeepAlive,
    /// Another connection took over the client id [MQTT-3.1.4-2].
    TakenOver,
    /// Refused at CONNECT (CONNACK with a failure code already queued).
    Refused,
    /// Broker shutdown.
    Shutdown,
}

impl Close {
    /// The reason code of the DISCONNECT sent to an MQTT 5 client, if one is sent.
    fn disconnect_code(&self) -> Option<u8> {
        match self {
            Close::Protocol { code, .. } => Some(*code),
            Close::KeepAlive => Some(v5::KEEP_ALIVE_TIMEOUT),
            Close::TakenOver => Some(v5::SESSION_TAKEN_OVER),
            Close::Shutdown => Some(v5::SERVER_SHUTTING_DOWN),
            Close::Graceful | Close::Gone(_) | Close::Tls(_) | Close::Refused => None,
        }
    }

    /// Whether the peer is told something it should read before the socket closes (see
    /// [`linger`]): not when the peer closed first, nor at shutdown (the process exits).
    fn lingers(&self) -> bool {
        matches!(
            self,
            Close::Protocol { .. } | Close::KeepAlive | Close::TakenOver | Close::Refused
        )
    }

    /// Whether the will is published: on every close that the client did not ask for with
    /// DISCONNECT [MQTT-3.1.2-8]; not on broker shutdown.
    fn publishes_will(&self) -> bool {
        !matches!(self, Close::Graceful | Close::Refused | Close::Shutdown)
    }
}

/// A token bucket: `rate` tokens per second, at most one second's worth saved up. Each shard
/// holds its share of the broker-wide rate, so no state is shared between threads.
#[derive(Debug)]
pub struct RateLimit {
    /// Tokens per second; 0 = unlimited.
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    /// `total` per second split over `shards` (each at least 1 when limited).
    pub fn per_second(total: u32, shards: usize) -> RateLimit {
        let rate = if total == 0 {
            0.0
        } else {
            (f64::from(total) / shards as f64).max(1.0)
        };
        RateLimit {
            rate,
            tokens: rate,
            last: Instant::now(),
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A session slot: the session and the generation that makes stale [`SubscriberId`]s visible.
#[derive(Debug)]
pub struct SessionSlot {
    pub generation: u32,
    pub session: Session,
}

/// One listening socket of a shard (see [`crate::transport::Listener`]).
pub type ListenerSocket = crate::transport::Listener;

/// One event loop. See the module documentation.
pub struct Shard {
    pub(crate) id: usize,
    pub(crate) poll: Poll,
    pub(crate) listeners: Vec<ListenerSocket>,
    pub(crate) conns: Slab<Conn>,
    pub(crate) sessions: Slab<SessionSlot>,
    pub(crate) session_by_id: std::collections::HashMap<protocol::ByteStr, usize>,
    pub(crate) next_generation: u32,
    pub(crate) index: TopicIndex,
    pub(crate) inbox: Inbox,
    pub(crate) peers: Arc<Vec<ShardHandle>>,
    pub(crate) shared: Arc<Shared>,
    /// Connections written to in this turn (flushed once at its end).
    pub(crate) dirty: Vec<usize>,
    /// Other shards sent something in this turn (woken once at its end).
    pub(crate) wake_pending: Vec<bool>,
    /// Reused buffer of local matches (subscriber, options, identifier) for one route.
    pub(crate) matches: Vec<(SubscriberId, SubOptions, Option<u32>)>,
    /// Reused by `route`: the shared-subscription members one message picked.
    shared_picks: Vec<(Entry, protocol::ByteStr)>,
    /// Reused buffer of what a session asks to send (resume, window refill).
    pub(crate) out: Vec<Outgoing>,
    /// Counter for generated client ids.
    pub(crate) next_client_number: u64,
    /// Password checks sent to the auth worker, and its answers.
    pub(crate) auth: Option<(AuthClient, crossbeam_channel::Receiver<AuthResponse>)>,
    /// Tokens for password checks (see `Conn::auth_token`).
    pub(crate) next_auth_token: u64,
    /// QoS 0 messages dropped for slow consumers (see `qos0_backlog_limit`).
    pub(crate) slow_consumer_drops: u64,
    /// Unsent bytes beyond which QoS 0 messages to a connection are dropped:
    /// `max_queued_bytes` when set, so that the setting bounds what one slow client can cost
    /// at every QoS (midge's choice: mosquitto 2.0.11 does not bound it), else
    /// `SLOW_CONSUMER_BACKLOG`.
    pub(crate) qos0_backlog_limit: usize,
    /// Retained messages for new subscriptions not yet offered (a bounded number per turn).
    pub(crate) retained_backlog: crate::retain::RetainedBacklog,
    /// This shard's share of `connection_rate_limit`.
    pub(crate) accept_rate: RateLimit,
    /// Connections refused by it.
    pub(crate) rate_limited: u64,
    /// Connections refused by `max_connections_per_ip` (for its rate-limited log line).
    pub(crate) per_ip_refused: u64,
    /// Connections sent here by other shards, adopted at the top of the loop (`adopt_pending`).
    pub(crate) adoptions: Vec<inbox::Migrating>,
    /// This turn's changes to durable state (stays empty without persistence).
    pub(crate) batch: StoreBatch,
    /// Persistence, when on.
    pub(crate) durable: Option<durable::Durable>,
    /// Read and write buffers of the connections that have something to parse or send.
    pub(crate) buffers: BufferPool,
    /// Items for other shards, sent as one batch per destination at the end of the turn.
    pub(crate) outbox: outbox::Outbox,
    /// Recycled `Arc<Message>` allocations for the messages published here.
    pub(crate) pool: msg_pool::MessagePool,
    /// When and whether to give freed memory back to the OS (see [`MemoryTrim`]).
    pub(crate) trim: MemoryTrim,
    /// Closed connections whose input is drained so that they read why (see [`linger`]).
    lingering: linger::Lingering,
    /// Bytes the sessions recovered at start-up hold (`memory_limit`), counted on the shard
    /// thread at its first turn (recovery runs on the main thread).
    held_recovered: usize,
}

/// Giving freed heap memory back to the OS (glibc's `malloc_trim`), at most once per
/// [`MemoryTrim::INTERVAL`] per shard, from the tick, never per message.
///
/// Why: glibc keeps what a thread's arena freed for later reuse, and raises its mmap threshold
/// after a large block is freed, so later large blocks come from the arena too. 16 clients
/// sending 8 MB packets and closing left the broker at 160 MiB resident after every buffer
/// was freed; a shard whose index shrank (a client with 100k filters left) keeps its pages
/// the same way. A trim is asked for when large buffers were freed
/// ([`MemoryTrim::request`]) and, once, when a shard that was busy goes quiet for a tick.
#[derive(Debug)]
pub(crate) struct MemoryTrim {
    wanted: bool,
    /// Events since the last tick, and whether any came since the last trim.
    active: bool,
    busy_since_trim: bool,
    last: Instant,
}

impl MemoryTrim {
    /// The most often a shard trims.
    const INTERVAL: Duration = Duration::from_secs(1);

    fn new() -> MemoryTrim {
        MemoryTrim {
            wanted: false,
            active: false,
            busy_since_trim: false,
            last: Instant::now(),
        }
    }

    /// Something large was freed (a big read or write buffer, a large index): trim at the
    /// next tick that the interval allows.
    pub(crate) fn request(&mut self) {
        self.wanted = true;
    }

    /// The loop had events in this turn.
    fn activity(&mut self) {
        self.active = true;
    }

    /// At each tick: whether to trim now.
    fn due(&mut self, now: Instant) -> bool {
        let quiet = !std::mem::take(&mut self.active);
        self.busy_since_trim |= !quiet;
        let want = self.wanted || (quiet && self.busy_since_trim);
        if !want || now.saturating_duration_since(self.last) < Self::INTERVAL {
            return false;
        }
        self.wanted = false;
        self.busy_since_trim = false;
        self.last = now;
        true
    }
}

/// Returns the free memory at the top and in the middle of every malloc arena to the OS
/// (glibc only; a no-op elsewhere). Costs a walk over the arenas' free chunks: called from
/// the tick, at most once a second per shard.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it takes the arenas' own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Shard {
    /// Builds shard `id` around a poll whose waker is registered with [`WAKER`].
    pub fn new(
        id: usize,
        poll: Poll,
        listeners: Vec<ListenerSocket>,
        inbox: Inbox,
        peers: Arc<Vec<ShardHandle>>,
        shared: Arc<Shared>,
        store: Option<Arc<dyn Store>>,
    ) -> io::Result<Shard> {
        let mut listeners = listeners;
        for (i, l) in listeners.iter_mut().enumerate() {
            poll.registry()
                .register(l, Token(LISTENER_BASE + i), Interest::READABLE)?;
        }
        let n = peers.len();
        let inbox_free = inbox.free.clone();
        // Password answers wake this shard like an inbox item would.
        let auth = shared.auth_worker.as_ref().map(|w| {
            let me = peers[id].clone();
            w.client(move || me.wake())
        });
        let accept_rate = RateLimit::per_second(shared.config.connection_rate_limit, n);
        let qos0_backlog_limit = match shared.config.max_queued_bytes {
            0 => SLOW_CONSUMER_BACKLOG,
            limit => limit,
        };
        let mut buffers = BufferPool::new();
        buffers.set_growth_limit(shared.config.read_buffer_growth / n.max(1));
        Ok(Shard {
            id,
            poll,
            listeners,
            conns: Slab::with_capacity(1024),
            sessions: Slab::with_capacity(1024),
            session_by_id: Default::default(),
            next_generation: 1,
            index: TopicIndex::new(),
            inbox,
            peers,
            shared,
            dirty: Vec::new(),
            wake_pending: vec![false; n],
            matches: Vec::new(),
            shared_picks: Vec::new(),
            out: Vec::new(),
            next_client_number: 0,
            auth,
            next_auth_token: 0,
            slow_consumer_drops: 0,
            qos0_backlog_limit,
            retained_backlog: Default::default(),
            adoptions: Vec::new(),
            buffers,
            accept_rate,
            rate_limited: 0,
            per_ip_refused: 0,
            // Turn numbers start at 1 (0 means "none", see `shard::durable`).
            batch: StoreBatch {
                turn: 1,
                ..StoreBatch::new()
            },
            durable: store.map(|s| durable::Durable::new(s, n)),
            pool: msg_pool::MessagePool::default(),
            trim: MemoryTrim::new(),
            lingering: linger::Lingering::default(),
            outbox: outbox::Outbox::new(id, n, inbox_free),
            held_recovered: 0,
        })
    }

    /// Installs the sessions recovered from the store whose home is this shard, before the
    /// loop starts. Returns their subscriptions, for every other shard's index replica.
    pub fn recover(&mut self, sessions: Vec<RecoveredSession>) -> Vec<(protocol::ByteStr, Entry)> {
        // The client's own limits are known again at its next CONNECT.
        let limits = crate::session::Limits::new(&self.shared.config, u16::MAX, 0);
        let mut entries = Vec::new();
        for r in sessions {
            let session = Session::recovered(r, limits);
            self.held_recovered += session.held_bytes();
            let generation = self.next_generation;
            self.next_generation = self.next_generation.wrapping_add(1);
            let client_id = session.client_id.clone();
            let subscriptions: Vec<_> = session
                .subscriptions
                .iter()
                .map(|(f, s)| (f.clone(), *s))
                .collect();
            let slot = self.sessions.insert(SessionSlot {
                generation,
                session,
            });
            self.session_by_id.insert(client_id, slot);
            let subscriber = SubscriberId {
                shard: self.id as u16,
                slot: slot as u32,
                generation,
            };
            for (filter, sub) in subscriptions {
                let entry = Entry {
                    subscriber,
                    options: sub.options,
                    identifier: sub.identifier,
                };
                self.index.insert(&filter, entry);
                entries.push((filter, entry));
            }
        }
        entries
    }

    /// Runs the loop until the broker shuts down. Shard thread only.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut next_tick = Instant::now() + TICK;
        loop {
            let timeout = next_tick.saturating_duration_since(Instant::now());
            let parked = self.inbox.park();
            // After `park`: the store's writer wakes a parked shard, so progress it made
            // before is seen here and progress after wakes `poll`.
            let timeout = if !parked
                || self.durable.as_ref().is_some_and(|d| d.progress_waiting())
                || !self.retained_backlog.is_empty()
            {
                Duration::ZERO
            } else if self.outbox.has_pending() {
                // A batch waits for room in a stalled shard's queue: retry soon.
                timeout.min(Duration::from_millis(1))
            } else {
                timeout
            };
            let polled = self.poll.poll(&mut events, Some(timeout));
            self.inbox.unpark();
            if !events.is_empty() {
                self.trim.activity();
            }
            if let Err(e) = polled {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            if self.shared.is_shutting_down() {
                self.shutdown();
                return Ok(());
            }
            self.retained_backlog.new_turn();
            for event in events.iter() {
                self.dispatch(event);
            }
            self.drain_inbox();
            self.adopt_pending();
            self.drain_auth_responses();
            if !self.retained_backlog.is_empty() {
                self.offer_retained_backlog();
            }
            self.end_turn(false);
            self.pool.reclaim();
            let now = Instant::now();
            if now >= next_tick {
                self.tick(now);
                self.end_turn(true);
                next_tick = now + TICK;
            }
        }
    }

    /// The end of a loop turn: the turn's changes go to the store (persistence: submitted
    /// without waiting; what depends on them is held, and tickets and confirmations are
    /// queued behind the turn's deliveries), then this turn's batches to other shards are
    /// queued, then client connections are flushed as far as they may be (in this order, so a
    /// SUBACK never leaves before its replica updates are queued, nor a PUBACK before its
    /// message is safe), then the shards that were sent something and are parked are woken.
    fn end_turn(&mut self, tick: bool) {
        self.flush_held_bytes();
        self.commit_turn(tick);
        self.outbox.send(&self.peers);
        self.flush_dirty();
        self.wake_peers();
    }

    fn dispatch(&mut self, event: &Event) {
        match event.token() {
            WAKER => {}
            Token(t) if t >= LISTENER_BASE => self.accept(t - LISTENER_BASE),
            Token(t) if t >= LINGER_BASE => self
                .lingering
                .on_readable(self.poll.registry(), t - LINGER_BASE),
            Token(key) => {
                if event.is_writable() && self.conns.contains(key) {
                    self.flush(key);
                }
                let peer_closed = event.is_read_closed() || event.is_error();
                if (event.is_readable() || peer_closed) && self.conns.contains(key) {
                    self.on_readable(key, peer_closed);
                }
                self.queue_tls_records(key);
            }
        }
    }

    /// Reads what a TLS connection's rustls already decrypted but nobody read yet. Call it
    /// after anything that stopped reading a connection early (a migration to another shard,
    /// a CONNECT put on hold): unlike bytes in the kernel's socket buffer, which re-registering
    /// with the poll announces again, this plaintext would otherwise wait for the client's
    /// next packet. A no-op for plain TCP.
    pub(crate) fn resume_input(&mut self, key: usize) {
        if self
            .conns
            .get_mut(key)
            .is_some_and(|c| c.stream.has_buffered_input())
        {
            self.on_readable(key, false);
            self.queue_tls_records(key);
        }
    }

    /// TLS: reading may leave records to send (the handshake's answer, a session ticket, an
    /// alert): flush them at the end of the turn with everything else.
    fn queue_tls_records(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if conn.stream.wants_write() {
                conn.mark_dirty(key, &mut self.dirty);
            }
        }
    }

    /// Accepts until `WouldBlock` (edge-triggered readiness).
    fn accept(&mut self, listener: usize) {
        loop {
            let l = &self.listeners[listener];
            match l.accept() {
                Ok((stream, peer)) => {
                    if !self.accept_rate.take(Instant::now()) {
                        self.rate_limited += 1;
                        if self.rate_limited.is_power_of_two() {
                            log::warn!(
                                "Refusing connection from {peer}: connection_rate_limit reached \
                                 ({} refused on shard {}).",
                                self.rate_limited,
                                self.id
                            );
                        }
                        continue;
                    }
                    let open = self.shared.connections.fetch_add(1, Ordering::Relaxed);
                    if self
                        .shared
                        .config
                        .max_connections
                        .is_some_and(|max| open >= max)
                    {
                        self.shared.connections.fetch_sub(1, Ordering::Relaxed);
                        log::warn!("Refusing connection from {peer}: max_connections reached.");
                        continue;
                    }
                    if !self.shared.per_ip.try_open(peer.ip()) {
                        self.shared.connections.fetch_sub(1, Ordering::Relaxed);
                        self.per_ip_refused += 1;
                        if self.per_ip_refused.is_power_of_two() {
                            log::warn!(
                                "Refusing connection from {peer}: max_connections_per_ip reached \
                                 ({} refused on shard {}).",
                                self.per_ip_refused,
                                self.id
                            );
                        }
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let l = &self.listeners[listener];
                    let stream = match l.wrap(stream) {
                        Ok(t) => t,
                        Err(e) => {
                            log::error!("Cannot start TLS for a client from {peer}: {e}.");
                            self.shared.connection_closed(peer.ip());
                            continue;
                        }
                    };
                    let mut conn = Conn::new(stream, peer, l.allow_anonymous);
                    conn.auth = l.auth.clone();
                    if self.add_conn(conn).is_none() {
                        self.shared.connection_closed(peer.ip());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: keep serving the connections we have.
                    log::error!("accept failed on shard {}: {e}", self.id);
                    return;
                }
            }
        }
    }

    /// Registers a connection with this shard's poll; returns its slot.
    pub(crate) fn add_conn(&mut self, conn: Conn) -> Option<usize> {
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let conn = entry.insert(conn);
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut conn.stream, Token(key), Interest::READABLE)
        {
            log::error!("cannot register connection from {}: {e}", conn.peer);
            self.conns.remove(key);
            return None;
        }
        Some(key)
    }

    /// Reads until `WouldBlock` (or a fairness budget), decoding and handling every complete
    /// packet as it goes; then gives the read buffer back to the pool unless a partial packet
    /// is left in it. `peer_closed`: the event says the peer's FIN (or an error) is there.
    fn on_readable(&mut self, key: usize, peer_closed: bool) {
        self.read_and_process(key, peer_closed);
        if let Some(conn) = self.conns.get_mut(key) {
            conn.release_idle_rbuf(&mut self.buffers);
        }
    }

    /// `peer_closed`: the readiness event carried EPOLLRDHUP/EPOLLHUP/EPOLLERR. Then the loop
    /// reads on to the end of stream (or the error) even after a short read: a FIN that came
    /// with the last data raises no later edge, and the connection would otherwise sit in
    /// CLOSE-WAIT, will unpublished, until its keep-alive ran out (forever with keep-alive 0).
    fn read_and_process(&mut self, key: usize, peer_closed: bool) {
        let mut budget = READ_BUDGET;
        let max_packet = match self.shared.config.max_packet_size {
            0 => protocol::MAX_PACKET_SIZE,
            max => max as usize,
        };
        // Bytes read in this readiness event (see `ReadTarget::filled`).
        let mut in_event = 0;
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            self.buffers.ensure(&mut conn.rbuf);
            let spare = conn.rbuf.capacity() - conn.rbuf.len();
            if let Some(missing) = big_packet_missing(&conn.rbuf, spare, max_packet) {
                // A large packet still arriving: room for all of it, once, instead of
                // growing the buffer 64 KiB at a time and copying the partial packet each
                // time (quadratic: 62 s of CPU for a 128 MB PUBLISH). Capacity is not
                // memory: pages are touched only as the bytes arrive.
                self.buffers.make_room(&mut conn.rbuf, missing);
            } else if spare < MIN_READ {
                // Room for the connection's read size (see `Conn::rbuf_target`), or more for
                // a large packet still arriving; a tail of at least MIN_READ is read into
                // as it is, so that a buffer whose payloads are still in flight is not
                // replaced before it is full.
                let room = conn.rbuf_target.room_for(conn.rbuf.len());
                self.buffers.make_room(&mut conn.rbuf, room);
            }
            let spare = conn.rbuf.spare_capacity_mut();
            let offered = spare.len();
            // SAFETY: `read` only writes into the slice; we advance `len` by what it reports.
            let slice = unsafe {
                std::slice::from_raw_parts_mut(spare.as_mut_ptr().cast::<u8>(), spare.len())
            };
            match conn.stream.read(slice) {
                Ok(0) => {
                    self.close(key, Close::Gone("connection closed by peer".into()));
                    return;
                }
                Ok(n) => {
                    // A short read of a plain TCP socket took everything it held: data that
                    // arrives later raises a new edge, so the loop ends here instead of
                    // spending a read() on WouldBlock (half the reads of a busy point-to-point
                    // run). Not for TLS: rustls may hold more plaintext or socket bytes. Not
                    // when the event said the peer closed: the end of stream is still to read.
                    let drained = n < offered && conn.stream.short_read_drains() && !peer_closed;
                    // SAFETY: the first `n` bytes of the spare capacity were just written.
                    unsafe { conn.rbuf.set_len(conn.rbuf.len() + n) };
                    in_event += n;
                    if n == offered {
                        // The socket may hold more than the buffer took: grow if that is so.
                        conn.rbuf_target.filled(in_event, &mut self.buffers);
                    }
                    if conn.tls_identity.is_none() {
                        // The handshake is done (plaintext arrived): before CONNECT is decoded.
                        if let Some(id) = conn.stream.tls_identity() {
                            conn.tls_identity = Some(id.into());
                        }
                    }
                    if !self.process_frames(key) {
                        return;
                    }
                    if let Some(conn) = self.conns.get_mut(key) {
                        conn.note_progress_on_large_packet();
                    }
                    budget = budget.saturating_sub(n);
                    // Plaintext already decrypted inside rustls would never be announced by
                    // the socket again: read it before yielding.
                    let buffered = self
                        .conns
                        .get_mut(key)
                        .is_some_and(|c| c.stream.has_buffered_input());
                    if drained {
                        return;
                    }
                    if budget == 0 && !buffered {
                        // Fairness: continue on the next turn. Edge-triggered readiness will not
                        // report these bytes again, so re-arm by re-registering.
                        if let Some(conn) = self.conns.get_mut(key) {
                            let interest = Self::interest(conn);
                            let _ = self.poll.registry().reregister(
                                &mut conn.stream,
                                Token(key),
                                interest,
                            );
                        }
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if conn.stream.is_layer_error(&e) => {
                    self.close(key, Close::Tls(e.to_string()));
                    return;
                }
                Err(e) => {
                    self.close(key, Close::Gone(format!("read error: {e}")));
                    return;
                }
            }
        }
    }

    /// Decodes and handles every complete packet in the read buffer. Returns false when the
    /// connection is gone from this shard (closed or moved).
    pub(crate) fn process_frames(&mut self, key: usize) -> bool {
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return false;
            };
            if conn.pending_connect.is_some() {
                // CONNECT's password is being checked: the rest waits in the read buffer.
                return true;
            }
            if conn.version.is_none() {
                if let Err(e) = protocol::check_first_packet(&conn.rbuf) {
                    self.on_decode_error(key, None, e);
                    return false;
                }
            }
            let max = self.shared.config.max_packet_size;
            // Only for the first packet: the level a CONNECT asks for, read before decoding so
            // that a CONNECT the decoder rejects is still answered in the client's version.
            let level = match conn.version {
                None => protocol::connect_level(&conn.rbuf),
                Some(_) => None,
            };
            match protocol::decode(&mut conn.rbuf, conn.version, max) {
                Ok(Some(packet)) => {
                    conn.last_rx = Instant::now();
                    if !self.handle_packet(key, packet) {
                        return false;
                    }
                }
                Ok(None) => {
                    // Everything complete is handled: an empty buffer goes back to the pool
                    // (this also covers callers other than `on_readable`: adoption, auth).
                    conn.release_idle_rbuf(&mut self.buffers);
                    return true;
                }
                Err(e) => {
                    self.on_decode_error(key, level, e);
                    return false;
                }
            }
        }
    }

    /// Encodes `packet` onto the connection's write buffer; it is flushed at the end of the turn.
    pub(crate) fn send(&mut self, key: usize, packet: &Packet) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let Packet::Publish(p) = packet {
            return self.write_publish(key, &p.topic, protocol::PublishRef::new(p));
        }
        let version = conn.version.unwrap_or(protocol::ProtocolVersion::V311);
        self.buffers.ensure(&mut conn.wbuf);
        protocol::encode(packet, version, &mut conn.wbuf);
        conn.mark_dirty(key, &mut self.dirty);
    }

    /// Encodes a PUBLISH a session decided to send, straight from the shared message.
    pub(crate) fn send_publish(&mut self, key: usize, p: &SendPublish) {
        let d = &p.delivery;
        self.write_publish(key, &d.msg.topic, d.msg.publish_ref(d, p.packet_id, p.dup));
    }

    /// Writes `publish` (whose topic is `topic`) onto the connection's buffer, with this
    /// connection's topic alias when it has one ([MQTT-3.3.2-12]). Nothing is cloned: the
    /// alias is a patch on the borrowed parts.
    fn write_publish(
        &mut self,
        key: usize,
        topic: &protocol::ByteStr,
        mut publish: protocol::PublishRef,
    ) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let version = conn.version.unwrap_or(protocol::ProtocolVersion::V311);
        self.buffers.ensure(&mut conn.wbuf);
        if conn.aliases_out.max > 0 {
            if let Some((alias, send_topic)) = conn.aliases_out.assign(topic) {
                publish.patch.topic_alias = Some(alias);
                if !send_topic {
                    publish.topic = &[];
                }
            }
        }
        protocol::encode_publish(&publish, version, &mut conn.wbuf);
        conn.mark_dirty(key, &mut self.dirty);
    }

    fn interest(conn: &Conn) -> Interest {
        if conn.writable_len() == 0 && !conn.stream.wants_write() {
            Interest::READABLE
        } else {
            Interest::READABLE | Interest::WRITABLE
        }
    }

    /// Writes as much of the connection's buffer as the socket takes and persistence allows
    /// (`Conn::writable_len`); registers WRITABLE interest for the rest that may go (interest
    /// recomputed from buffer state, ARCHITECTURE.md §9). Output held for the store is not written
    /// and needs no interest: the store's progress marks the connection dirty again.
    pub(crate) fn flush(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if self.outbox.holds_index_update() || self.batch.holds_output() {
            // This buffer may hold a SUBACK whose replica update is not queued yet (outbox),
            // or a packet id the store does not know yet (this turn's batch, submitted at the
            // turn's end): flushed at the end of this or a later turn, once it may go.
            conn.mark_dirty(key, &mut self.dirty);
            return;
        }
        conn.dirty = false;
        loop {
            let allowed = conn.writable_len();
            if allowed == 0 {
                break;
            }
            match conn.stream.write(&conn.wbuf[..allowed]) {
                Ok(0) => break,
                Ok(n) => {
                    // `advance`, not `split_to`: the buffer stays unshared, so the pool can
                    // reclaim its whole capacity once it is empty.
                    bytes::Buf::advance(&mut conn.wbuf, n);
                    conn.written = conn.written.wrapping_add(n as u32);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.close(key, Close::Gone(format!("write error: {e}")));
                    return;
                }
            }
        }
        // TLS: records rustls made (from the data above, or handshake messages) go out now.
        if let Err(e) = conn.stream.flush() {
            self.close(key, Close::Gone(format!("write error: {e}")));
            return;
        }
        // All sent: the buffer goes back to the pool (which drops one a burst made large).
        self.buffers.give_if_empty(&mut conn.wbuf);
        let want_write = conn.writable_len() > 0 || conn.stream.wants_write();
        if want_write != conn.want_write {
            conn.want_write = want_write;
            let interest = Self::interest(conn);
            let _ = self
                .poll
                .registry()
                .reregister(&mut conn.stream, Token(key), interest);
        }
    }

    fn flush_dirty(&mut self) {
        if self.outbox.holds_index_update() {
            return; // see `flush`
        }
        while let Some(key) = self.dirty.pop() {
            self.flush(key);
        }
    }

    /// Applies everything other shards sent. Also called right before routing a PUBLISH and
    /// handling a SUBSCRIBE, so a subscription acknowledged on another shard is always visible
    /// to a publish that was sent after the SUBACK (the update is queued before the SUBACK).
    pub(crate) fn drain_inbox(&mut self) {
        while let Ok(Batch { from, mut items }) = self.inbox.rx.try_recv() {
            for msg in items.drain(..) {
                self.apply_inbox_item(msg);
            }
            self.peers[usize::from(from)].recycle(items);
        }
    }

    /// One item from another shard (see [`Shard::drain_inbox`]).
    fn apply_inbox_item(&mut self, msg: ShardMsg) {
        match msg {
            ShardMsg::Deliver(msg) => self.deliver_remote(&msg),
            ShardMsg::DeliverShared { msg, entry, group } => self.deliver_shared(msg, entry, group),
            ShardMsg::IndexInsert { filter, entry } => {
                self.index.insert(&filter, entry);
            }
            ShardMsg::IndexRemove { filter, subscriber } => {
                self.index.remove(&filter, subscriber);
            }
            // Not here: drain_inbox also runs in the middle of handling a packet (before a
            // route or a SUBSCRIBE), and an adopted CONNECT may take over, and close, the
            // very connection being handled. Adoption waits for the top of the loop.
            ShardMsg::Adopt(m) => self.adoptions.push(*m),
            ShardMsg::Ticket { from, ticket } => {
                if let Some(d) = &mut self.durable {
                    d.ticket(usize::from(from), ticket);
                }
            }
            ShardMsg::Committed { from, upto } => {
                if let Some(d) = &mut self.durable {
                    d.committed(usize::from(from), upto);
                }
            }
            ShardMsg::CommitFailed { from, upto } => {
                if let Some(d) = &mut self.durable {
                    d.commit_failed(usize::from(from), upto);
                }
            }
        }
    }

    /// Adopts the connections other shards sent (their CONNECT is handled now, outside any
    /// other connection's packet handling).
    fn adopt_pending(&mut self) {
        while !self.adoptions.is_empty() {
            for m in std::mem::take(&mut self.adoptions) {
                self.adopt(m);
            }
            self.drain_inbox();
        }
    }

    /// Sends `msg` to shard `to`; the wake-up happens once at the end of the turn.
    pub(crate) fn push_to(&mut self, to: usize, msg: ShardMsg) {
        if let Some(d) = &mut self.durable {
            let qos = match &msg {
                ShardMsg::Deliver(m) | ShardMsg::DeliverShared { msg: m, .. } => m.qos,
                _ => QoS::AtMostOnce,
            };
            if qos != QoS::AtMostOnce {
                d.delivered_to(to);
            }
        }
        self.outbox.push(to, msg);
        self.wake_pending[to] = true;
    }

    fn wake_peers(&mut self) {
        for (i, pending) in self.wake_pending.iter_mut().enumerate() {
            if std::mem::take(pending) {
                self.peers[i].wake_if_sleeping();
            }
        }
    }

    /// Routes a message published on this shard: delivers to local subscribers, and sends one
    /// inbox item to each other shard that has at least one. Returns whether any subscription
    /// matched (MQTT 5 PUBACK 0x10 otherwise).
    pub(crate) fn route(&mut self, msg: SharedMessage) -> bool {
        self.drain_inbox();
        let me = self.id as u16;
        let mut matches = std::mem::take(&mut self.matches);
        matches.clear();
        let mut remote: u128 = 0;
        let mut shared_picks = std::mem::take(&mut self.shared_picks);
        self.index.for_each_match(&msg.topic, true, |e, shared| {
            if let Some(group) = shared {
                shared_picks.push((*e, group.clone()));
            } else if e.subscriber.shard == me {
                matches.push((e.subscriber, e.options, e.identifier));
            } else {
                remote |= 1 << e.subscriber.shard;
            }
        });
        let matched = remote != 0 || !matches.is_empty() || !shared_picks.is_empty();
        for (entry, group) in shared_picks.drain(..) {
            self.send_shared(msg.clone(), entry, group);
        }
        self.shared_picks = shared_picks;
        let mut shard = 0;
        while remote != 0 {
            if remote & 1 != 0 {
                self.push_to(shard, ShardMsg::Deliver(msg.clone()));
            }
            remote >>= 1;
            shard += 1;
        }
        self.deliver_matches(&msg, &mut matches);
        self.matches = matches;
        matched
    }

    /// Delivers a message from another shard to this shard's matching sessions.
    fn deliver_remote(&mut self, msg: &SharedMessage) {
        let me = self.id as u16;
        let mut matches = std::mem::take(&mut self.matches);
        matches.clear();
        self.index.for_each_match(&msg.topic, false, |e, _| {
            if e.subscriber.shard == me {
                matches.push((e.subscriber, e.options, e.identifier));
            }
        });
        self.deliver_matches(msg, &mut matches);
        self.matches = matches;
    }

    /// Delivers once per session, merging its matching subscriptions: the highest QoS among
    /// them (the specification allows one copy per subscription or one at the maximum QoS
    /// [MQTT-3.3.5-1]; one copy is what clients expect), capped by the published QoS
    /// [MQTT-3.8.4-6]; every subscription identifier [MQTT-3.3.4-3]; Retain As Published if any
    /// subscription asked for it [MQTT-3.3.1-12]. No Local subscriptions never get the
    /// session's own messages [MQTT-3.8.3-3].
    fn deliver_matches(
        &mut self,
        msg: &SharedMessage,
        matches: &mut [(SubscriberId, SubOptions, Option<u32>)],
    ) {
        matches.sort_unstable_by_key(|m| m.0);
        for group in matches.chunk_by(|a, b| a.0 == b.0) {
            let sub = group[0].0;
            let own = msg.origin == Some(sub);
            let mut best: Option<QoS> = None;
            let mut retain_as_published = false;
            // None or one identifier: no allocation (see `SubscriptionIds`).
            let mut ids = SubscriptionIds::new();
            for (_, options, id) in group.iter().filter(|(_, o, _)| !(own && o.no_local)) {
                best = best.max(Some(options.qos));
                retain_as_published |= options.retain_as_published;
                ids.extend(*id);
            }
            let Some(qos) = best else { continue };
            let delivery = Delivery {
                msg: msg.clone(),
                qos: qos.min(msg.qos),
                retain: retain_as_published && msg.retain,
                subscription_ids: ids,
                shared: None,
            };
            self.offer(sub, delivery);
        }
    }

    /// Sends a message to the chosen member of a shared group, here or on its shard.
    fn send_shared(&mut self, msg: SharedMessage, entry: Entry, group: protocol::ByteStr) {
        let to = entry.subscriber.shard as usize;
        if to == self.id {
            self.deliver_shared(msg, entry, group);
        } else {
            self.push_to(to, ShardMsg::DeliverShared { msg, entry, group });
        }
    }

    /// Delivers a message to the local member of a shared group that was chosen for it.
    fn deliver_shared(&mut self, msg: SharedMessage, entry: Entry, group: protocol::ByteStr) {
        let o = entry.options;
        let delivery = Delivery {
            qos: o.qos.min(msg.qos),
            retain: o.retain_as_published && msg.retain,
            subscription_ids: entry.identifier.into_iter().collect(),
            shared: Some(group),
            msg,
        };
        self.offer(entry.subscriber, delivery);
    }

    /// Adds this turn's changes to the bytes held for delivery to the broker-wide total
    /// (`memory_limit`): one atomic operation per turn, none per message.
    fn flush_held_bytes(&mut self) {
        if self.shared.config.memory_limit == 0 {
            return;
        }
        if self.held_recovered != 0 {
            memory::hold(std::mem::take(&mut self.held_recovered));
        }
        memory::flush(&self.shared.held_bytes);
    }

    /// Offers a delivery to one local session and sends what it says to send.
    pub(crate) fn offer(&mut self, sub: SubscriberId, delivery: Delivery) {
        let Some(slot) = self.sessions.get_mut(sub.slot as usize) else {
            return;
        };
        if slot.generation != sub.generation {
            return;
        }
        // Every delivery passes here (live, shared, retained): the one place for the read ACL.
        if !slot.session.acl.allowed(&delivery.msg.topic, Access::Read) {
            return;
        }
        if delivery.qos != QoS::AtMostOnce && memory::full(self.shared.config.memory_limit) {
            // `memory_limit`: no new QoS 1/2 message is held, queued or in flight.
            slot.session.dropped = slot.session.dropped.wrapping_add(1);
            if slot.session.dropped.is_power_of_two() {
                log::warn!(
                    "memory_limit reached: dropping messages for client {} ({} dropped).",
                    slot.session.client_id,
                    slot.session.dropped
                );
            }
            return;
        }
        let conn = slot.session.conn;
        let dropped_before = slot.session.dropped;
        match slot.session.offer(delivery, &mut self.batch) {
            Offer::Send(publish) => {
                let Some(key) = conn else { return };
                // Only output the socket refused counts (`want_write`: the last flush hit
                // WouldBlock): a subscriber that reads may gather more than the limit within
                // one loop turn, before the turn's flush, and must lose nothing for it.
                let backlog =
                    self.conns
                        .get(key)
                        .map_or(0, |c| if c.want_write { c.wbuf.len() } else { 0 });
                let qos0 = publish.delivery.qos == QoS::AtMostOnce;
                if qos0 && backlog > self.qos0_backlog_limit {
                    // A subscriber that does not read: its QoS 0 messages are dropped rather
                    // than grow its buffer without bound (QoS 1/2 are bounded by the window).
                    self.slow_consumer_drops += 1;
                    if self.slow_consumer_drops.is_power_of_two() {
                        log::warn!(
                            "Dropping QoS 0 messages for a slow consumer ({} bytes unsent; {} dropped on shard {}).",
                            backlog,
                            self.slow_consumer_drops,
                            self.id
                        );
                    }
                    return;
                }
                self.send_publish(key, &publish);
            }
            Offer::Queued => {}
            Offer::Dropped => {
                if slot.session.dropped != dropped_before && slot.session.dropped.is_power_of_two()
                {
                    log::warn!(
                        "Outgoing messages are being dropped for client {}: queue full or too large \
                         for the client ({} dropped).",
                        slot.session.client_id,
                        slot.session.dropped
                    );
                }
            }
        }
    }

    /// Sends the packets a session produced (`self.out`) to its connection.
    pub(crate) fn send_session_output(&mut self, conn: usize) {
        let mut out = std::mem::take(&mut self.out);
        for o in out.drain(..) {
            match o {
                Outgoing::Publish(p) => self.send_publish(conn, &p),
                Outgoing::PubRel(id) => {
                    self.send(conn, &Packet::PubRel(protocol::PubResp::new(id)))
                }
            }
        }
        self.out = out;
    }

    /// Keep-alive and CONNECT time-outs.
    fn tick(&mut self, now: Instant) {
        let mut expired = Vec::new();
        let mut growth = 0;
        // `last_rx` moves only when a whole packet is decoded: before CONNECT, it is the
        // time of accept, so a CONNECT (or TLS handshake) trickled byte by byte still ends.
        let connect_timeout = match self.shared.config.connect_timeout {
            0 => Duration::MAX,
            secs => Duration::from_secs(u64::from(secs)),
        };
        for (key, conn) in self.conns.iter_mut() {
            let idle = now.saturating_duration_since(conn.last_rx);
            growth += conn.tick_rbuf(idle >= TICK, &mut self.buffers);
            match conn.state {
                ConnState::AwaitConnect
                    if idle >= connect_timeout && conn.pending_connect.is_none() =>
                {
                    expired.push((key, false))
                }
                ConnState::Active { .. } if conn.keep_alive_expired(idle) => {
                    expired.push((key, true))
                }
                _ => {}
            }
        }
        // Exact again (closed connections and shrinks are counted now).
        self.buffers.set_growth(growth);
        self.buffers.trim();
        if self.trim.due(now) {
            release_free_memory();
        }
        self.lingering.expire(self.poll.registry(), now);
        let mut wills = Vec::new();
        let mut ended = Vec::new();
        for (slot, s) in self.sessions.iter_mut() {
            if s.session.pending_will.as_ref().is_some_and(|p| now >= p.0) {
                wills.push(slot);
            }
            if s.session.expires_at.is_some_and(|at| now >= at) {
                ended.push(slot);
            }
        }
        for slot in wills {
            if let Some(pending) = self.sessions[slot].session.pending_will.take() {
                self.sessions[slot].session.store_record(&mut self.batch);
                let origin = self.subscriber_id(slot);
                self.publish_will(pending.1, origin);
            }
        }
        for slot in ended {
            log::info!(
                "Session of {} expired.",
                self.sessions[slot].session.client_id
            );
            self.end_session(slot);
        }
        for (key, keepalive) in expired {
            if keepalive {
                self.close(key, Close::KeepAlive);
            } else {
                let reason = "no CONNECT received in time".into();
                self.close(
                    key,
                    Close::Protocol {
                        code: v5::MAXIMUM_CONNECT_TIME,
                        reason,
                    },
                );
            }
        }
    }

    /// The one close path of a connection: last best-effort write, deregistration, will, and
    /// the session's fate (ended if clean, kept for a reconnect otherwise).
    pub(crate) fn close(&mut self, key: usize, why: Close) {
        if !self.conns.contains(key) {
            return;
        }
        let mut conn = self.conns.remove(key);
        self.shared.connection_closed(conn.peer.ip());
        if let Some(d) = &mut self.durable {
            d.forget(key);
        }
        let active = matches!(conn.state, ConnState::Active { .. });
        if let (Some(code), true, Some(ProtocolVersion::V5)) =
            (why.disconnect_code(), active, conn.version)
        {
            // MQTT 5: tell the client why, after CONNACK only [MQTT-4.13.1-1].
            let mut d = Disconnect {
                reason: code,
                ..Default::default()
            };
            if let (Close::Protocol { reason, .. }, true) = (&why, conn.problem_info) {
                d.properties.reason_string = Some(reason.as_str().into());
            }
            if let (Close::Shutdown, Some(server)) = (&why, &self.shared.config.server_reference) {
                // Maintenance: point clients elsewhere rather than just "shutting down".
                d.reason = v5::USE_ANOTHER_SERVER;
                d.properties.server_reference = Some(server.as_str().into());
            }
            self.buffers.ensure(&mut conn.wbuf);
            protocol::encode(&Packet::Disconnect(d), ProtocolVersion::V5, &mut conn.wbuf);
        }
        let allowed = conn.writable_len();
        let mut told = false;
        if allowed > 0 {
            // Best effort: a CONNACK refusal or a DISCONNECT is small and fits the socket
            // buffer. Output still held for the store (and what follows it) is not written.
            told = conn
                .stream
                .write(&conn.wbuf[..allowed])
                .is_ok_and(|n| n > 0);
        }
        if conn.rbuf.capacity().max(conn.wbuf.capacity()) > pool::MAX_POOLED {
            // Dropped below, not pooled: worth giving back to the OS.
            self.trim.request();
        }
        self.buffers.give(&mut conn.rbuf);
        self.buffers.give(&mut conn.wbuf);
        match &why {
            Close::Graceful => log::info!("Client {} disconnected.", self.label(&conn)),
            Close::Gone(reason) => {
                log::info!(
                    "Client {} closed its connection ({reason}).",
                    self.label(&conn)
                )
            }
            Close::Tls(reason) => {
                log::info!("Client {} disconnected: {reason}.", self.label(&conn))
            }
            Close::Protocol { reason, .. } => {
                log::info!(
                    "Client {} disconnected: protocol error: {reason}.",
                    self.label(&conn)
                )
            }
            Close::KeepAlive => log::info!(
                "Client {} has exceeded timeout, disconnecting.",
                self.label(&conn)
            ),
            Close::TakenOver => log::info!(
                "Client {} already connected, closing old connection.",
                self.label(&conn)
            ),
            Close::Refused | Close::Shutdown => {}
        }
        let state = conn.state;
        let stream = if told && why.lingers() {
            // Shut down the write side and drain: the peer reads the reason, not a reset.
            let registry = self.poll.registry();
            let token = |slot| Token(LINGER_BASE + slot);
            self.lingering
                .add(registry, conn.stream, token, Instant::now())
                .err()
        } else {
            Some(conn.stream)
        };
        if let Some(mut stream) = stream {
            let _ = self.poll.registry().deregister(&mut stream);
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        if let ConnState::Active { session } = state {
            self.detach_session(session, &why);
        }
    }

    /// A connection for log lines: its client id once CONNECT attached it to a session (the
    /// session's copy: a connection keeps none of its own), its peer address before.
    pub(crate) fn label(&self, conn: &Conn) -> String {
        let slot = match conn.state {
            ConnState::Active { session } => self.sessions.get(session),
            ConnState::AwaitConnect => None,
        };
        match slot {
            Some(slot) => slot.session.client_id.to_string(),
            None => format!("<unknown> from {}", conn.peer),
        }
    }

    /// The connection of `slot` is gone: publish the will when due (at once, or after its
    /// Will Delay Interval, or when the session ends if that is earlier [MQTT-3.1.3-9]) and
    /// start the Session Expiry Interval (0 = the session ends now).
    fn detach_session(&mut self, slot: usize, why: &Close) {
        let Some(s) = self.sessions.get_mut(slot) else {
            return;
        };
        s.session.conn = None;
        let session = &mut s.session;
        // Held-back 3.x QoS 2 PUBLISHes are the client's to resend (not kept offline).
        session.forget_waiting_qos2();
        let now = Instant::now();
        let will = session.will.take().filter(|_| why.publishes_will());
        session.expires_at = match session.expiry_interval {
            u32::MAX => None,
            secs => Some(now + Duration::from_secs(u64::from(secs))),
        };
        if let Some(will) = will {
            match will.properties.will_delay_interval.unwrap_or(0) {
                0 => {
                    let origin = self.subscriber_id(slot);
                    self.publish_will(*will, origin);
                }
                delay => {
                    let at = now + Duration::from_secs(u64::from(delay));
                    session.pending_will = Some(Box::new((at, *will)));
                }
            }
        }
        let ends_now = self.sessions[slot].session.expiry_interval == 0;
        if ends_now && *why != Close::TakenOver {
            self.end_session(slot);
        } else {
            // Its end time and any delayed will, as wall-clock deadlines.
            self.sessions[slot].session.store_record(&mut self.batch);
        }
    }

    /// Removes a session and its subscriptions, here and in every replica; a will still
    /// waiting for its delay is published now (the session ended first).
    pub(crate) fn end_session(&mut self, slot: usize) {
        if !self.sessions.contains(slot) {
            return;
        }
        let s = self.sessions.remove(slot);
        memory::release(s.session.held_bytes());
        if s.session.durable {
            self.batch.delete_session(&s.session.client_id);
        }
        let subscriber = SubscriberId {
            shard: self.id as u16,
            slot: slot as u32,
            generation: s.generation,
        };
        for filter in s.session.subscriptions.keys() {
            self.index_remove(filter.clone(), subscriber);
        }
        if self.session_by_id.get(&s.session.client_id) == Some(&slot) {
            self.session_by_id.remove(&s.session.client_id);
        }
        // Messages a departing shared-subscription member had not acknowledged go to another
        // member of the group (MQTT 5 section 4.8.2). A QoS 2 message already PUBRECed is the
        // member's and is not sent again.
        let unacked = s
            .session
            .inflight
            .into_iter()
            .filter(|f| f.state != OutState::AwaitPubComp)
            .map(|f| f.delivery);
        for d in unacked.chain(s.session.queue.into_iter().map(|q| q.delivery)) {
            let Some(group) = d.shared else { continue };
            if let Some(entry) = self.index.pick_shared(&group) {
                self.send_shared(d.msg, entry, group);
            }
        }
        if let Some(pending) = s.session.pending_will {
            self.publish_will(pending.1, subscriber);
        }
    }

    /// Removes a subscription from this replica and every other.
    pub(crate) fn index_remove(&mut self, filter: protocol::ByteStr, subscriber: SubscriberId) {
        self.index.remove(&filter, subscriber);
        for to in 0..self.peers.len() {
            if to != self.id {
                self.push_to(
                    to,
                    ShardMsg::IndexRemove {
                        filter: filter.clone(),
                        subscriber,
                    },
                );
            }
        }
    }

    fn shutdown(&mut self) {
        self.end_turn(false);
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.close(key, Close::Shutdown);
        }
        // The sessions' end times, set by those closes.
        self.commit_turn(false);
        self.wait_for_store();
        if let Some(d) = &self.durable {
            if let Err(e) = d.store.sync() {
                log::error!("Persistence: final sync failed: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_allows_its_share_per_second_then_refills() {
        let start = Instant::now();
        let mut r = RateLimit::per_second(10, 2); // 5 per second on this shard
        let taken = (0..20).filter(|_| r.take(start)).count();
        assert_eq!(taken, 5, "a burst gets one second's worth");
        assert!(
            !r.take(start + Duration::from_millis(100)),
            "half a token after 100 ms"
        );
        assert!(r.take(start + Duration::from_millis(300)), "refilled");
        let mut unlimited = RateLimit::per_second(0, 2);
        assert!((0..1000).all(|_| unlimited.take(start)));
    }

    /// Every connection and every session pays for these structs whether it is busy or not
    /// (issue #7: 10k idle connections; with them at these sizes midge's RSS per idle
    /// connection is on par with mosquitto's). Rarely used parts are boxed or allocated on
    /// first use (wills, TLS, outgoing topic aliases, QoS 2 ids, ACL patterns); a field that
    /// pushes these past the bounds should be treated the same, or the bound raised on purpose.
    #[test]
    fn per_connection_structs_stay_small() {
        // Was 304 (with `rbuf_target`); then 48 bytes less: no client id of its own (log lines
        // read the session's), the client's topic aliases a boxed slice, the TLS identity a
        // `Box<str>`.
        assert!(
            std::mem::size_of::<Conn>() <= 256,
            "{}",
            std::mem::size_of::<Conn>()
        );
        // Was 288 (with `Session::next_seq`), + 8 for the queue's payload bytes
        // (`max_queued_bytes`); then 40 bytes less: subscriptions in a `BTreeMap`, the pending
        // will and its deadline in one box.
        assert!(
            std::mem::size_of::<SessionSlot>() <= 256,
            "{}",
            std::mem::size_of::<SessionSlot>()
        );
    }

    #[test]
    fn a_big_packet_gets_room_for_all_of_it_a_small_one_none() {
        let max = protocol::MAX_PACKET_SIZE;
        // PUBLISH announcing 8 MiB of remaining length, 4096 bytes of it read, no room left.
        let mut head = vec![0x30, 0x80, 0x80, 0x80, 0x04];
        head.resize(4096, 0);
        let size = 5 + 8 * 1024 * 1024;
        assert_eq!(big_packet_missing(&head, 0, max), Some(size - 4096));
        assert_eq!(
            big_packet_missing(&head, size, max),
            None,
            "it fits already"
        );
        assert_eq!(
            big_packet_missing(&head, 0, 1024 * 1024),
            None,
            "above the maximum"
        );
        assert_eq!(big_packet_missing(&[0x30, 0x05], 0, max), None, "small");
        assert_eq!(
            big_packet_missing(&[0x30, 0x80], 0, max),
            None,
            "header incomplete"
        );
    }

    #[test]
    fn memory_is_trimmed_when_asked_or_when_a_busy_shard_goes_quiet_at_most_once_a_second() {
        let t0 = Instant::now();
        let mut t = MemoryTrim::new();
        t.last = t0;
        let s = Duration::from_secs(1);
        assert!(!t.due(t0 + s), "never busy, nothing asked");
        t.activity();
        assert!(!t.due(t0 + s * 2), "busy during that tick");
        assert!(t.due(t0 + s * 3), "quiet after being busy");
        t.request();
        assert!(!t.due(t0 + s * 3 + Duration::from_millis(250)), "too soon");
        assert!(t.due(t0 + s * 4), "asked for");
        assert!(!t.due(t0 + s * 5), "quiet still: once is enough");
    }

    #[test]
    fn home_shard_is_stable_and_spread() {
        assert_eq!(home_shard(b"client-1", 4), home_shard(b"client-1", 4));
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            counts[home_shard(format!("device-{i}").as_bytes(), 4)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }

    #[test]
    fn home_shard_of_two_does_not_follow_byte_parity() {
        // Plain FNV-1a % 2 is the parity of the bytes' low bits: ids that differ in two
        // digits at once ("a-1-1", "a-2-2", ...) would all land on one shard.
        let shards: std::collections::HashSet<usize> = (0..64)
            .map(|i| home_shard(format!("a-{i}-{i}").as_bytes(), 2))
            .collect();
        assert_eq!(shards.len(), 2);
    }
}
