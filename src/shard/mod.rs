//! A shard: one thread, one [`Reactor`](crate::reactor::Reactor), and everything it owns.
//!
//! A shard owns its connections (a `slab`), the sessions whose client id hashes to it, its
//! replica of the subscription index and its inbox. Nothing here is shared: other shards
//! reach it through [`inbox::ShardHandle`], and the one lock (its [`handoff::Slot`], held by
//! its loop except while it sleeps) only lets a peer run its turn while it sleeps. One loop
//! turn is:
//! 1. poll (parked, so producers know to wake us), accept, read and handle every ready
//!    connection, answering into per-connection write buffers;
//! 2. drain the inbox (deliveries, replica updates, adopted connections);
//! 3. flush every connection written to in this turn, once (write coalescing);
//! 4. wake every other shard that was sent something in this turn, once, or run the rest of
//!    its turn if it sleeps ([`handoff`]);
//! 5. four times a second, enforce keep-alive and CONNECT time-outs.
//!
//! Sessions are homed by client id ([`home_shard`]): a CONNECT that arrives on another shard
//! moves its socket to the home shard before anything else happens. So a takeover, a resumed
//! persistent session or a second connection with the same id is always handled by one thread,
//! with no broker-wide lock or registry.

pub mod bench;
mod cluster_sessions;
pub mod conn;
pub(crate) mod ctx;
mod ctx_plugins;
mod dormancy;
mod durable;
mod event_loop;
mod handoff;
pub(crate) mod handshakes;
pub mod inbox;
mod io;
mod lifecycle;
mod linger;
mod links;
pub(crate) mod mount;
pub mod msg_pool;
pub mod outbox;
pub mod per_ip;
mod plugin_hooks;
pub mod pool;
mod rate_limit;
mod read_target;
pub mod reload;
mod route;
mod shared;
pub mod stats;
pub mod systree;
mod trim;

use std::sync::Arc;
use std::time::Duration;

use mio::{Interest, Token};
use slab::Slab;

use crate::auth::{AuthClient, AuthResponse};
use crate::index::{Entry, SubscriberId, TopicIndex};
use crate::protocol::{self, SubOptions};
use crate::session::{Outgoing, Session};
use crate::store::{Batch as StoreBatch, RecoveredSession, Store};
use conn::Conn;
use inbox::{Inbox, ShardHandle};
pub use lifecycle::Close;
use pool::BufferPool;
pub use rate_limit::RateLimit;
pub use shared::Shared;
pub(crate) use trim::MemoryTrim;

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

/// A session slot: the session and the generation that makes stale [`SubscriberId`]s visible.
#[derive(Debug)]
pub struct SessionSlot {
    pub generation: u32,
    /// The cluster keeps a copy of this session's will (`cluster::wills`), to publish it if
    /// the node dies. Here rather than in `Session`: it fills the padding after
    /// `generation` (memory per connection, see `per_connection_structs_stay_small`).
    pub will_in_cluster: bool,
    /// The cluster's session bucket holds this session's record (`cluster::sessions`).
    pub record_in_cluster: bool,
    /// The record changed this turn and is queued in `Shard::cluster_records`.
    pub record_dirty: bool,
    pub session: Session,
}

impl SessionSlot {
    /// A slot for `session` under `generation`, known to no cluster record yet.
    pub fn new(generation: u32, session: Session) -> SessionSlot {
        SessionSlot {
            generation,
            will_in_cluster: false,
            record_in_cluster: false,
            record_dirty: false,
            session,
        }
    }
}

/// One listening socket of a shard (see [`crate::transport::Listener`]).
pub type ListenerSocket = crate::transport::Listener;

/// One event loop. See the module documentation.
pub struct Shard {
    pub(crate) id: usize,
    /// Where this shard's sockets are registered: a handle on the loop's `reactor::Reactor`, which
    /// the loop thread keeps outside the shard so that it can sleep in it without holding the
    /// shard's lock (see [`handoff`]).
    pub(crate) registry: crate::reactor::Registry,
    /// The turn's sends, made in one system call (io_uring; `None` on epoll).
    sends: Option<crate::reactor::SendBatch>,
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
    /// This shard's link to the cluster gateway (`None`: the node runs alone).
    pub(crate) cluster: Option<crate::cluster::ShardLink>,
    /// Sessions whose cluster record changed this turn (see `shard::cluster_sessions`).
    pub(crate) cluster_records: Vec<usize>,
    /// The sessions recovered from the store were checked against the cluster's records.
    pub(crate) recovered_checked: bool,
    /// QoS 0 messages dropped for slow consumers (see `qos0_backlog_limit`).
    pub(crate) slow_consumer_drops: u64,
    /// Unsent bytes beyond which QoS 0 messages to a connection are dropped:
    /// `max_queued_bytes` when set, so that the setting bounds what one slow client can cost
    /// at every QoS (midge's choice: mosquitto 2.0.11 does not bound it), else
    /// `SLOW_CONSUMER_BACKLOG`.
    pub(crate) qos0_backlog_limit: usize,
    /// Some listener has a `mount_point` (see `mount`): false spares every other delivery
    /// the lookup.
    pub(crate) mounted: bool,
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
    /// Connections back from the handshake thread, admitted at the top of the loop (like
    /// adoptions: never in the middle of another connection's packet).
    pub(crate) handshaken: Vec<handshakes::Handshaken>,
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
    /// The outgoing connections (bridges) this shard drives (see [`links`]).
    pub(crate) links: links::Links,
    /// This shard's counters (published to `shared` at each tick).
    pub(crate) stats: stats::Stats,
    /// When this shard runs the turns of sleeping peers (see [`handoff`]).
    pub(crate) handoff: handoff::Policy,
    pub(crate) dormancy: dormancy::Dormancy,
    /// The `$SYS` tree's schedule and last figures (published by one shard only).
    pub(crate) sys_tree: systree::SysTree,
    /// This shard's chain of plugins (empty: every hook is a bit test).
    pub(crate) plugins: crate::plugin::ShardPlugins,
    /// The port of each listener (by `Conn::listener`), for the plugins' `ClientInfo`.
    pub(crate) listener_ports: Vec<u16>,
    /// Deferred auth answers (`plugin::Later`) taken from the inbox, handled at the top of
    /// the loop (like adoptions: never in the middle of another connection's packet).
    pub(crate) later_answers: Vec<(u64, inbox::LaterAnswer)>,
    /// Bytes the sessions recovered at start-up hold (`memory_limit`), counted on the shard
    /// thread at its first turn (recovery runs on the main thread).
    held_recovered: usize,
}

impl Shard {
    /// Builds shard `id` around a poll whose waker is registered with [`WAKER`]; the loop
    /// ([`Shard::run`]) is given that poll.
    pub fn new(
        id: usize,
        poll: &crate::reactor::Reactor,
        listeners: Vec<ListenerSocket>,
        inbox: Inbox,
        peers: Arc<Vec<ShardHandle>>,
        shared: Arc<Shared>,
        store: Option<Arc<dyn Store>>,
    ) -> std::io::Result<Shard> {
        let mut listeners = listeners;
        for (i, l) in listeners.iter_mut().enumerate() {
            poll.registry()?
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
        let sys_tree = systree::SysTree::new(
            id,
            shared.config.sys_interval,
            shared.config.persistence,
            std::time::Instant::now(),
        );
        let qos0_backlog_limit = match shared.config.max_queued_bytes {
            0 => SLOW_CONSUMER_BACKLOG,
            limit => limit,
        };
        let mut buffers = BufferPool::new();
        buffers.set_growth_limit(shared.config.read_buffer_growth / n.max(1));
        let cluster = shared.take_cluster_link(id);
        // In a cluster, acknowledgements of QoS 1/2 messages sent to other nodes wait for the
        // cluster's message stream (`cluster::messages`), through the same holding as for the
        // disk: without persistence, behind a store that keeps nothing.
        let gateway = cluster.as_ref().map(|_| n);
        let durable = match store {
            Some(s) => Some(durable::Durable::new(s, n, true, gateway)),
            None if cluster.is_some() => Some(durable::Durable::new(
                Arc::new(crate::store::NullStore::default()),
                n,
                false,
                gateway,
            )),
            None => None,
        };
        let mounted = mount::any(&shared.config);
        let plugins = crate::plugin::ShardPlugins::new(&shared.plugins.all(), id, n);
        let handoffs = shared.config.shard_handoff && !shared.plugins.thread_bound();
        let dormant_ok = Shard::dormancy_allowed(
            id,
            n,
            shared.config.shard_dormancy && !shared.plugins.thread_bound(),
        );
        let listener_ports = listeners
            .iter()
            .map(|l| l.local_addr().map_or(0, |a| a.port()))
            .collect();
        Ok(Shard {
            id,
            registry: poll.registry()?,
            sends: poll.send_batch(),
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
            cluster,
            cluster_records: Vec::new(),
            recovered_checked: false,
            slow_consumer_drops: 0,
            qos0_backlog_limit,
            mounted,
            retained_backlog: Default::default(),
            adoptions: Vec::new(),
            handshaken: Vec::new(),
            buffers,
            accept_rate,
            rate_limited: 0,
            per_ip_refused: 0,
            // Turn numbers start at 1 (0 means "none", see `shard::durable`).
            batch: StoreBatch {
                turn: 1,
                ..StoreBatch::new()
            },
            durable,
            pool: msg_pool::MessagePool::default(),
            trim: MemoryTrim::new(),
            lingering: linger::Lingering::default(),
            outbox: outbox::Outbox::new(id, n, inbox_free),
            held_recovered: 0,
            plugins,
            listener_ports,
            later_answers: Vec::new(),
            stats: stats::Stats::default(),
            handoff: handoff::Policy::new(handoffs),
            dormancy: dormancy::Dormancy::new(dormant_ok),
            links: links::Links::default(),
            sys_tree,
        })
    }

    /// Adds a session under the next generation and registers its client id; its slot.
    pub(crate) fn add_session(&mut self, session: Session) -> usize {
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let client_id = session.client_id.clone();
        let slot = self.sessions.insert(SessionSlot::new(generation, session));
        self.session_by_id.insert(client_id, slot);
        slot
    }

    /// [`Shard::add_session`] for a session that arrives with subscriptions (from the store,
    /// or from another cluster node): also returns their index entries, for the caller to
    /// put where they belong.
    pub(crate) fn add_session_with_entries(
        &mut self,
        session: Session,
    ) -> (usize, Vec<(protocol::ByteStr, Entry)>) {
        let subscriptions: Vec<_> = session
            .subscriptions
            .iter()
            .map(|(f, s)| (f.clone(), *s))
            .collect();
        let slot = self.add_session(session);
        let subscriber = self.subscriber_id(slot);
        let entries = subscriptions
            .into_iter()
            .map(|(filter, sub)| {
                let entry = Entry {
                    subscriber,
                    options: sub.options,
                    identifier: sub.identifier,
                };
                (filter, entry)
            })
            .collect();
        (slot, entries)
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
            for (filter, entry) in self.add_session_with_entries(session).1 {
                self.replica_insert(&filter, entry);
                *self.stats.subscription_count(&filter) += 1;
                entries.push((filter, entry));
            }
        }
        entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connection and every session pays for these structs whether it is busy or not
    /// (10k idle connections; with them at these sizes midge's RSS per idle
    /// connection is on par with mosquitto's). Rarely used parts are boxed or allocated on
    /// first use (wills, TLS, outgoing topic aliases, QoS 2 ids, ACL patterns); a field that
    /// pushes these past the bounds should be treated the same, or the bound raised on purpose.
    #[test]
    fn per_connection_structs_stay_small() {
        // Was 304 (with `rbuf_target`); then 48 bytes less: no client id of its own (log lines
        // read the session's), the client's topic aliases a boxed slice, the TLS identity a
        // `Box<str>`. 264 with the WebSocket variant of `Transport` (a third layer: the
        // enum no longer fits its tag in the TCP socket's niche), raised on purpose. 272 with
        // `peer_settled` (behind a proxy the per-address count waits for the client's
        // address): the one-byte fields had filled their word; raised on purpose.
        // 280 with `enhanced_auth` (MQTT 5 re-authentication must know the method the
        // client connected with [MQTT-4.12.1-1], and an exchange before CONNACK parks its
        // CONNECT there): one boxed pointer, `None` for most connections; raised on purpose.
        assert!(
            std::mem::size_of::<Conn>() <= 280,
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
