//! What all shards share: read-only configuration, the retained store, broker-wide counters
//! touched on accept and close only, and the stop flag. It lives in the shard layer (the
//! broker only builds it and raises the stop flag), so `shard` does not depend on `broker`.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::stats::{Stats, StatsSlot};
use super::systree::snapshot::SysSnapshot;
use super::systree::store_count::HeldByMany;
use crate::auth::{Auth, AuthWorker};
use crate::config::Config;
use crate::retain::RetainedStore;

/// State shared by all shards: read-only configuration, the retained store, the stop flag.
#[derive(Debug)]
pub struct Shared {
    pub config: Config,
    pub retained: RetainedStore,
    /// Open client connections, broker-wide (`max_connections`). Touched on accept and
    /// close only, never per message.
    pub connections: AtomicUsize,
    /// Open client connections per IP address (`max_connections_per_ip`); like
    /// `connections`, touched on accept and close only.
    pub per_ip: super::per_ip::PerIpConnections,
    /// Payload bytes held for delivery by all sessions (`memory_limit`), as of the shards'
    /// last loop turns (see `session::memory`).
    pub held_bytes: std::sync::atomic::AtomicIsize,
    /// Password file and ACLs (read-only after start).
    pub auth: Auth,
    /// Verifies passwords off the event loops (PBKDF2 is slow on purpose); its threads run
    /// once a password file is in use (`None` only in benchmarks).
    pub auth_worker: Option<AuthWorker>,
    /// The plugins (each shard makes its own chain of them at its start).
    pub plugins: crate::plugin::registry::Loaded,
    /// The kernel interface the shards' loops use (`reactor::Reactor::name`), once they run.
    pub io_backend: std::sync::OnceLock<&'static str>,
    /// Each shard's counters as of its last tick (see `shard::stats`), by shard id.
    stats: Box<[StatsSlot]>,
    /// The messages each shard's sessions hold that others may hold too, for the distinct
    /// store count (`systree::store_count`).
    pub(crate) held_by_many: HeldByMany,
    /// Each shard's link to the cluster gateway until the shard takes it at its start
    /// (empty when the node runs alone).
    cluster_links: std::sync::Mutex<Vec<Option<crate::cluster::ShardLink>>>,
    /// The `$SYS` tree as shard 0 last computed it: replaced once per computation (at most a
    /// few times a second), read by any thread.
    sys_snapshot: Mutex<Arc<SysSnapshot>>,
    /// A reader asked for the snapshot since shard 0 last looked (keeps it refreshed).
    sys_asked: AtomicBool,
    shutdown: AtomicBool,
    /// The TLS handshake threads, set once at start when a listener has TLS (unset in
    /// benchmarks and brokers without TLS: a shard then handshakes itself).
    pub(crate) handshakers: std::sync::OnceLock<super::handshakes::Handshakers>,
}

impl Shared {
    /// The shared state of a broker with no listener threads yet: `config`, an empty
    /// retained store, no password worker.
    /// `shards` is the number of shards (one counter slot each).
    pub(crate) fn new(
        config: Config,
        auth: Auth,
        auth_worker: Option<AuthWorker>,
        shards: usize,
    ) -> Shared {
        let per_ip = super::per_ip::PerIpConnections::new(config.max_connections_per_ip);
        Shared {
            config,
            retained: RetainedStore::new(),
            connections: AtomicUsize::new(0),
            per_ip,
            held_bytes: Default::default(),
            auth,
            auth_worker,
            plugins: Default::default(),
            stats: (0..shards).map(|_| StatsSlot::default()).collect(),
            held_by_many: HeldByMany::new(shards),
            cluster_links: Default::default(),
            io_backend: Default::default(),
            sys_snapshot: Mutex::default(),
            sys_asked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            handshakers: std::sync::OnceLock::new(),
        }
    }

    /// A counted connection from `peer` is gone (closed, or dropped before it was served):
    /// its slot under `max_connections` and `max_connections_per_ip` is free again.
    pub fn connection_closed(&self, peer: IpAddr) {
        self.connection_gone(peer, true);
    }

    /// A connection is gone; `counted`: its address was counted per address (a proxied
    /// connection is not until its client is known).
    pub fn connection_gone(&self, peer: IpAddr, counted: bool) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
        if counted {
            self.per_ip.closed(peer);
        }
    }

    /// The counters of all shards as of their last tick, summed, with the retained count of
    /// now. For `$SYS` and metrics: reads every slot, so not for a per-message path.
    pub fn stats(&self) -> Stats {
        let mut sum = Stats::default();
        self.stats.iter().for_each(|slot| slot.add_to(&mut sum));
        sum.retained = self.retained.len() as u64;
        sum
    }

    /// Each shard's counters as of its last tick, by shard id.
    pub(crate) fn shard_stats(&self) -> Vec<Stats> {
        self.stats.iter().map(StatsSlot::read).collect()
    }

    /// The whole `$SYS` tree with per-shard figures, as shard 0 last computed it: at each
    /// publication and, while this is called at least once a minute, about once a second
    /// (also with `sys_interval 0`). Empty until shard 0's first tick. Any thread; one
    /// uncontended lock.
    pub fn sys_snapshot(&self) -> Arc<SysSnapshot> {
        self.sys_asked.store(true, Ordering::Relaxed);
        self.sys_snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether a reader asked for the snapshot since the last call (shard 0, at its tick).
    pub(crate) fn sys_snapshot_asked(&self) -> bool {
        self.sys_asked.swap(false, Ordering::Relaxed)
    }

    /// Replaces the snapshot (shard 0 only).
    pub(crate) fn set_sys_snapshot(&self, snap: Arc<SysSnapshot>) {
        *self.sys_snapshot.lock().unwrap_or_else(|e| e.into_inner()) = snap;
    }

    /// Shard `shard`'s counter slot (written by that shard only, at its tick).
    pub(crate) fn stats_slot(&self, shard: usize) -> &StatsSlot {
        &self.stats[shard]
    }

    /// Hands the shards their cluster links (the gateway starts after the shards' wakers
    /// exist and before the shards are built).
    pub(crate) fn set_cluster_links(&self, links: Vec<crate::cluster::ShardLink>) {
        *self.cluster_links.lock().unwrap_or_else(|p| p.into_inner()) =
            links.into_iter().map(Some).collect();
    }

    /// Shard `shard`'s cluster link, once (at the shard's start); `None` without a cluster.
    pub(crate) fn take_cluster_link(&self, shard: usize) -> Option<crate::cluster::ShardLink> {
        self.cluster_links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(shard)
            .and_then(Option::take)
    }

    /// Asks every shard to stop (each sees it at its next loop turn).
    pub(crate) fn request_shutdown(&self) {
        self.shutdown.store(true, Ordering::Release);
    }

    /// True once the broker was asked to stop.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }
}
