//! Cross-shard messages: the only way one shard affects another.
//!
//! Each shard has one bounded multi-producer queue of [`Batch`]es and a `mio::Waker`. A
//! producer pushes at most one batch per loop turn (`outbox::Outbox`) and wakes the consumer
//! only if it is parked in `poll` (its `sleeping` flag), so a busy shard is never woken by a
//! syscall, and a shard that publishes to many others wakes each at most once per loop turn
//! (`Shard::wake_pending`). All updates from one shard reach another in the order they were
//! sent, which is what keeps the per-shard index replicas consistent.
//!
//! The queues are bounded and preallocated (crossbeam's array flavour): a push never
//! allocates. A drained batch's Vec goes back to the shard that filled it through that shard's
//! bounded free list ([`ShardHandle::recycle`]), so batches are reused, not reallocated.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::index::{Entry, SubscriberId};
use crate::message::SharedMessage;
use crate::protocol::{ByteStr, Connect};
use crate::reactor::Waker;
use crate::transport::Transport;

/// A connection in transit to the home shard of its client id.
#[derive(Debug)]
pub struct Migrating {
    /// Moves whole: a TLS connection keeps its session (and its certificate identity).
    pub stream: Transport,
    pub peer: SocketAddr,
    /// Bytes that arrived after the CONNECT (pipelined packets), to be decoded by the new shard.
    pub rbuf: BytesMut,
    pub connect: Connect,
    /// Whether the listener it came through allows anonymous clients.
    pub allow_anonymous: bool,
    /// Its listener's password file and ACL.
    pub auth: crate::auth::Auth,
    /// Its listener, by index in the configuration (see `Conn::listener`).
    pub listener: u8,
}

/// Batches a shard's inbox holds at most. A producer pushes one per turn per destination and
/// the consumer drains all of them every turn, so this is only reached when a shard stalls;
/// the producer then keeps its batch (see `outbox`).
pub(crate) const INBOX_BATCHES: usize = 1024;
/// Empty batch Vecs a shard keeps for reuse.
const FREE_BATCHES: usize = 64;
/// A batch Vec larger than this (items) is freed rather than kept: a burst must not pin its
/// memory for ever.
const MAX_RECYCLED_ITEMS: usize = 4096;

/// Everything one shard sent another in one loop turn, in the order it was produced.
#[derive(Debug)]
pub struct Batch {
    /// The sending shard: where the Vec goes back, and the origin that persistence will need.
    pub from: u16,
    pub items: Vec<ShardMsg>,
}

/// One item of a batch.
#[derive(Debug)]
pub enum ShardMsg {
    /// A message published on another shard that has at least one subscriber here.
    Deliver(SharedMessage),
    /// A message for the member of a shared subscription group that the publishing shard
    /// chose (it lives here).
    DeliverShared {
        msg: SharedMessage,
        entry: Entry,
        group: ByteStr,
    },
    /// Replica update: a subscription was added or replaced.
    IndexInsert { filter: ByteStr, entry: Entry },
    /// Replica update: a subscription was removed.
    IndexRemove {
        filter: ByteStr,
        subscriber: SubscriberId,
    },
    /// A connection whose client id lives on this shard.
    Adopt(Box<Migrating>),
    /// A connection this shard accepted, back from its handshake thread with its TLS
    /// handshake done (see `shard::handshakes`).
    Handshaken(Box<super::handshakes::Handshaken>),
    /// Persistence: the QoS 1/2 deliveries shard `from` sent before this item carry ticket
    /// `ticket`; confirm it with `Committed` once they are durable (see `shard::durable`).
    Ticket { from: u16, ticket: u64 },
    /// Persistence: shard `from` made the deliveries of this shard up to ticket `upto` durable.
    Committed { from: u16, upto: u64 },
    /// Persistence: shard `from` could not store the deliveries of this shard up to ticket
    /// `upto` (disk full): MQTT 5 publishers are told now; a `Committed` follows once a retry
    /// succeeds.
    CommitFailed { from: u16, upto: u64 },
    /// The configuration was reloaded (SIGHUP): sent by the main thread to every shard.
    Reload(Arc<super::reload::Reload>),
    /// A plugin's deferred auth answer (`plugin::Later`) for the connection parked under
    /// `token` (see `shard::plugin_hooks`); sent by whatever thread the plugin answers on.
    LaterAnswer { token: u64, answer: LaterAnswer },
}

/// A plugin's deferred auth answer, as it arrives through the inbox.
#[derive(Debug)]
pub enum LaterAnswer {
    /// A basic-auth decision, from the plugin at this position of the chain's basic-auth
    /// list (a `Pass` resumes the chain after it).
    Basic(crate::plugin::Decision, u16),
    Extended(crate::plugin::ExtendedAuth),
}

/// The sending side of a shard's inbox, held by every shard.
#[derive(Debug, Clone)]
pub struct ShardHandle {
    tx: Sender<Batch>,
    /// The shard's free list of empty batch Vecs (filled by the shards that drain them).
    free: Sender<Vec<ShardMsg>>,
    waker: Arc<Waker>,
    sleeping: Arc<AtomicBool>,
    /// The shard itself, for handoffs (see `shard::handoff`).
    pub(crate) slot: Arc<super::handoff::Slot>,
    /// The shard's dormancy, as other threads see it (see `shard::dormancy`).
    pub(crate) beacon: Arc<super::dormancy::Beacon>,
}

/// The receiving side, owned by the shard itself.
#[derive(Debug)]
pub struct Inbox {
    pub rx: Receiver<Batch>,
    /// Empty batch Vecs given back to this shard, for its `Outbox`.
    pub free: Receiver<Vec<ShardMsg>>,
    sleeping: Arc<AtomicBool>,
}

/// Creates a shard's inbox pair around its poll's waker.
pub fn inbox(waker: Arc<Waker>) -> (ShardHandle, Inbox) {
    let (tx, rx) = crossbeam_channel::bounded(INBOX_BATCHES);
    let (free_tx, free) = crossbeam_channel::bounded(FREE_BATCHES);
    let sleeping = Arc::new(AtomicBool::new(false));
    (
        ShardHandle {
            tx,
            free: free_tx,
            waker,
            sleeping: sleeping.clone(),
            slot: Arc::new(super::handoff::Slot::empty()),
            beacon: Arc::default(),
        },
        Inbox { rx, free, sleeping },
    )
}

impl ShardHandle {
    /// Queues `batch` without blocking; gives it back when the queue is full (the caller keeps
    /// it, in order) or gone (shutdown). The caller wakes the shard later with
    /// [`ShardHandle::wake_if_sleeping`], once per loop turn.
    pub fn push(&self, batch: Batch) -> Result<(), TrySendError<Batch>> {
        self.tx.try_send(batch)
    }

    /// Queues `batch` from a thread that is not a shard (a plugin's answer, a finished TLS
    /// handshake), retrying while the queue is full for at most `patience` (only a shard
    /// stalled that long is not reached), then wakes the shard if it sleeps. `Err`: not
    /// queued, the batch is given back.
    pub fn push_patiently(&self, mut batch: Batch, patience: Duration) -> Result<(), Batch> {
        let deadline = Instant::now() + patience;
        loop {
            match self.tx.try_send(batch) {
                Ok(()) => break,
                Err(TrySendError::Full(b)) if Instant::now() < deadline => {
                    batch = b;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e.into_inner()),
            }
        }
        self.wake_if_sleeping();
        Ok(())
    }

    /// Gives a drained batch Vec back to this shard (its sender) for reuse; dropped when the
    /// free list is full or the Vec grew large.
    pub fn recycle(&self, mut items: Vec<ShardMsg>) {
        items.clear();
        if items.capacity() <= MAX_RECYCLED_ITEMS {
            let _ = self.free.try_send(items);
        }
    }

    /// The shard is parked in `poll` (or about to be).
    pub fn is_sleeping(&self) -> bool {
        self.sleeping.load(Ordering::SeqCst)
    }

    /// Wakes the shard if it is parked in `poll`.
    pub fn wake_if_sleeping(&self) {
        // SeqCst pairs with `Inbox::park`: either we see `sleeping` or the shard sees our item.
        if self.sleeping.load(Ordering::SeqCst) {
            let _ = self.waker.wake();
        }
    }

    /// Wakes the shard unconditionally (shutdown).
    pub fn wake(&self) {
        let _ = self.waker.wake();
    }
}

impl Inbox {
    /// Announces that the shard is about to block in `poll`. Returns false (and stays awake)
    /// if items are already waiting, in which case the shard must poll with a zero timeout.
    pub fn park(&self) -> bool {
        self.sleeping.store(true, Ordering::SeqCst);
        if !self.rx.is_empty() {
            self.sleeping.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// The shard is running again.
    pub fn unpark(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
    }
}
