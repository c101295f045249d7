//! The durable store: retained messages, persistent sessions, their queued and in-flight QoS
//! 1/2 messages and incoming QoS 2 packet ids survive `kill -9` (ARCHITECTURE.md §1.6).
//!
//! # Use
//! The broker opens one store at start ([`open`]), calls [`Store::load`] once to rebuild its
//! state, then shares the store between shards behind an `Arc`. Each shard collects the
//! changes of one event-loop turn in a [`Batch`] and submits it once at the end of the turn
//! ([`Store::submit`], which never waits for the disk); what the turn wrote to its sockets is
//! held back until the store reports the batch durable, so a PUBACK/PUBREC reaches the wire
//! only once what it acknowledges is durable (`shard::durable`).
//!
//! # Group commit
//! One writer thread takes everything submitted since its last write (the batches of every
//! shard, of as many turns as arrived meanwhile) and writes it as one frame with one
//! `fdatasync`. One fsync per group, never per message; and the shards keep working while it
//! runs. Batches of different shards that hold one QoS 2 message's id and its copies are
//! paired ([`Batch::awaits`], [`Batch::covers`]) and always land in one frame (`pairing`).
//!
//! # Backends (chosen by measurement)
//! - [`Backend::Log`] (default): a hand-written append-only log, one CRC32-checked frame per
//!   group commit, compacted by writing a snapshot of the live state to a new generation file
//!   (temporary file, fsync, atomic rename, directory fsync, then the old file is deleted)
//!   when the file exceeds `compact_min_bytes` and `compact_ratio` x the live bytes.
//! - [`Backend::Redb`]: the same operations applied to redb tables (copy-on-write B-trees),
//!   one write transaction per group commit.
//!
//! Both keep an in-memory mirror of the live state (sharing payloads with the broker's own
//! `Arc<Message>`s), which makes [`Store::load`], compaction and message-body refcounting
//! independent of the backend. A message queued for many sessions is stored once (a `PUT_MSG`
//! record with an id, referenced by each queued entry) and deleted with its last reference.
//!
//! Measured with `cargo bench --bench store` (2 shared cores, virtio disk, `EveryBatch`; one
//! cycle = one commit queueing N QoS 1 messages of 64 B..1 KiB for S offline sessions, then one
//! commit deleting them after the acks; 300 cycles):
//!
//! | N x S | log commits/s | log msgs/s | redb commits/s | redb msgs/s | log / redb bytes after |
//! |---|---|---|---|---|---|
//! | 1 x 1 | 2140 | 1070 | 492 | 246 | 198 KiB / 72 KiB |
//! | 10 x 1 | 1395 | 6974 | 458 | 2290 | 1.9 MiB / 80 KiB |
//! | 10 x 10 | 1179 | 5896 | 385 | 1923 | 3.4 MiB / 104 KiB |
//! | 100 x 10 | 134 | 6695 | 50 | 2478 | 1.8 MiB / 276 KiB |
//! | 1 x 1000 | 119 | 59 | 68 | 34 | 1.8 MiB / 236 KiB |
//!
//! 4 threads committing 10 x 1 cycles at once (group commit): log 1614 commits/s at 2.4
//! batches per fsync; redb 527 commits/s at 2.4. Without fsync (`MIDGE_BENCH_SYNC=os`, the CPU
//! cost alone) the log does 229k commits/s at 1 x 1 and ~0.6 us per queued/deleted entry
//! (1 x 1000: 1674 commits/s); redb 17.6k and 566. With fsync the log is bound by the disk
//! (one fdatasync of a small frame ~0.45 ms here, more for large frames), redb by its two
//! syncs per commit plus B-tree page writes.
//!
//! **Choice: the log**, 2.5-4.5x redb's commit rate in every shape with the same durability,
//! and 10x at CPU cost. Its file grows until compaction (a full rewrite once it holds more
//! than 16 MiB and twice the live bytes), so it stays bounded by max(16 MiB, 2 x live) where
//! redb reuses pages in place (smaller file, slower writes). Body deduplication matters: the
//! 1 x 1000 fan-out writes ~1.8 MiB after 300 cycles instead of the ~180 MiB a copy per session
//! would take. Next step if fan-out commits matter more: varint-encode the per-entry fields
//! (~40 B per queued entry, ~23 B per delete today).
//!
//! # Faults
//! - A torn or corrupt tail (crash mid-write) fails its frame's length/CRC check: the file is
//!   truncated to the valid prefix and [`Recovered::dropped`] says what was dropped.
//!   (Which also means damage in the middle of the file, followed by valid frames, is cut as a
//!   tail: a checksum cannot tell where the next frame starts. The message says how much.)
//! - Anything else unreadable (bad or short header, unknown format, a stray `*.mlog` file,
//!   permission denied, a checksummed frame whose records do not decode) refuses to open with
//!   a [`StoreError`] naming the file.
//! - A failed write (ENOSPC, EIO) fails the commits of that group ([`StoreError::is_disk_full`]
//!   tells the broker to fail the publishes); the log is truncated back to its last good frame
//!   and the next commit rewrites the whole live state (which includes what failed), so the
//!   store is usable again as soon as the disk is.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::message::{Delivery, SharedMessage};
use crate::protocol::{ByteStr, ProtocolVersion, Will};
use crate::record::{OutState, Subscription};

pub use batch::Batch;
pub(crate) use batch::BatchOp;
pub use null::NullStore;
pub(crate) use pairing::Link;

mod batch;
pub mod codec;
mod core;
pub mod limits;
mod mirror;
mod null;
mod pairing;
mod redb_kv;
mod seglog;
mod writer;

/// When a commit is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// `fdatasync` before `commit` returns (group commit: one per group of batches).
    #[default]
    EveryBatch,
    /// Never sync: the OS writes back when it likes (survives a process crash, not power loss).
    Os,
    /// Sync at most every this long, from a background thread (a crash of the machine loses
    /// at most this much).
    Interval(Duration),
}

impl fmt::Display for SyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncPolicy::EveryBatch => f.write_str("every-batch"),
            SyncPolicy::Os => f.write_str("os"),
            SyncPolicy::Interval(d) => write!(f, "interval {}", d.as_millis()),
        }
    }
}

/// Which implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// The segmented append-only log (default: fastest for this write pattern, see above).
    #[default]
    Log,
    /// redb.
    Redb,
}

/// Tuning knobs; [`Options::default`] is what the broker uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    pub backend: Backend,
    pub sync: SyncPolicy,
    /// Compaction runs when the store holds more than this many bytes...
    pub compact_min_bytes: u64,
    /// ...and more than `compact_ratio` times the live bytes.
    pub compact_ratio: u64,
}

impl Options {
    /// Defaults with `sync`.
    pub fn new(sync: SyncPolicy) -> Options {
        Options {
            backend: Backend::default(),
            sync,
            compact_min_bytes: 16 << 20,
            compact_ratio: 2,
        }
    }
}

impl Default for Options {
    fn default() -> Options {
        Options::new(SyncPolicy::default())
    }
}

/// Where an outgoing QoS 1/2 message stands when it is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub packet_id: u16,
    pub state: OutState,
}

/// A persistent session as stored: everything but its queue (stored per message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// Session Expiry Interval (seconds; `u32::MAX` = never).
    pub expiry_interval: u32,
    /// While disconnected: the wall-clock time the session ends.
    pub expires_at: Option<SystemTime>,
    /// Protocol version of the last connection.
    pub version: ProtocolVersion,
    /// Subscriptions with their options and identifier.
    pub subscriptions: Vec<(ByteStr, Subscription)>,
    /// A will waiting for its delay, with the wall-clock time it is due.
    pub pending_will: Option<(SystemTime, Will)>,
}

/// A queued or in-flight delivery as stored and recovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDelivery {
    /// The delivery (message, granted QoS, RETAIN flag, subscription ids, shared group).
    /// Recovered messages have `origin: None` and `expires_at` rebuilt from the wall-clock
    /// deadline (already passed = [`crate::message::Message::is_expired`] is true).
    pub delivery: Delivery,
    /// `Some` while in flight: the packet id and where the flow stands.
    pub flow: Option<Flow>,
}

/// One recovered session.
#[derive(Debug, Clone)]
pub struct RecoveredSession {
    pub client_id: ByteStr,
    pub session: StoredSession,
    /// Queued and in-flight deliveries in `seq` order.
    pub queued: Vec<(u64, StoredDelivery)>,
    /// Incoming QoS 2 packet ids awaiting PUBREL, ascending.
    pub incoming_qos2: Vec<u16>,
}

/// Everything the store held when it was opened.
#[derive(Debug, Clone, Default)]
pub struct Recovered {
    /// Retained messages (expired ones included: filter with `is_expired`).
    pub retained: Vec<SharedMessage>,
    /// Sessions (expired ones included: compare `expires_at` with now).
    pub sessions: Vec<RecoveredSession>,
    /// What was dropped while opening (a torn tail; queued entries without a session), one
    /// line each, for the broker to log as warnings. Empty after a clean shutdown.
    pub dropped: Vec<String>,
}

/// Sizes, for logs, $SYS and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Bytes the store occupies on disk.
    pub disk_bytes: u64,
    /// Approximate bytes of live records.
    pub live_bytes: u64,
    /// Commits that were written (groups, i.e. fsyncs with EveryBatch).
    pub groups: u64,
    /// Batches committed.
    pub batches: u64,
    /// Compactions done.
    pub compactions: u64,
}

/// A store failure. Every variant names the file.
#[derive(Debug, Clone)]
pub enum StoreError {
    /// An I/O error: `what` was being done to `path`.
    Io {
        path: PathBuf,
        what: &'static str,
        source: Arc<io::Error>,
    },
    /// The file is not a readable store (bad header, unknown format, a record that does not
    /// decode outside the tail).
    Corrupt { path: PathBuf, reason: String },
    /// The backend (redb) failed.
    Backend { path: PathBuf, reason: String },
}

impl StoreError {
    pub(crate) fn io(path: &Path, what: &'static str, e: io::Error) -> StoreError {
        StoreError::Io {
            path: path.to_path_buf(),
            what,
            source: Arc::new(e),
        }
    }

    /// True when the disk is full (ENOSPC, or EDQUOT): fail the publishes, keep serving.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Io { source, .. } => {
                source.kind() == io::ErrorKind::StorageFull
                    || matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
            }
            StoreError::Backend { reason, .. } => reason.contains("No space left"),
            StoreError::Corrupt { .. } => false,
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io { path, what, source } => {
                write!(f, "store {}: {what}: {source}", path.display())
            }
            StoreError::Corrupt { path, reason } => {
                write!(f, "store {}: unreadable: {reason}", path.display())
            }
            StoreError::Backend { path, reason } => {
                write!(f, "store {}: {reason}", path.display())
            }
        }
    }
}

impl std::error::Error for StoreError {}

/// The store, shared by every shard (`Arc<dyn Store>`).
///
/// Writes are asynchronous: [`Store::submit`] hands a batch to the store's writer thread and
/// returns a *ticket*; the store's progress is two counters that only grow, [`Store::finished`]
/// (every ticket up to it was written or failed) and [`Store::durable`] (every ticket up to it
/// is durable under the sync policy). A failed write stops `durable` until a later rewrite of
/// the whole live state succeeds, which makes everything before it durable at once.
pub trait Store: Send + Sync {
    /// Queues every operation of `batch` for the next group write and clears the batch
    /// (giving it a recycled allocation). Never blocks on the disk. Returns the batch's
    /// ticket; for an empty batch, the last ticket given out (so that "this and everything
    /// before" is still what the ticket means). `shard` is whose notify to call once written.
    fn submit(&self, shard: usize, batch: &mut Batch) -> u64;

    /// Every ticket up to this was written, or failed.
    fn finished(&self) -> u64;

    /// Every ticket up to this is durable.
    fn durable(&self) -> u64;

    /// Blocks until `ticket` is finished; its outcome.
    fn wait(&self, ticket: u64) -> Result<(), StoreError>;

    /// Writes what is queued even if nothing urgent is (see [`Batch::holds_output`]).
    fn nudge(&self);

    /// Asks the writer for a rewrite of the whole live state (compaction, or the retry after
    /// a failed write) without waiting; its ticket.
    fn request_rewrite(&self) -> u64;

    /// Called (from the writer thread) after each group that held a batch of `shard`, so the
    /// shard wakes up to release what waited for it.
    fn set_notify(&self, shard: usize, notify: Box<dyn Fn() + Send + Sync>);

    /// Submits `batch` and waits for it: durable (under the sync policy) when this returns
    /// `Ok`. On error what it held is still in the store's memory and is written by the next
    /// successful rewrite, but was not durable when the error was returned.
    fn commit(&self, batch: &mut Batch) -> Result<(), StoreError> {
        let ticket = self.submit(usize::MAX, batch);
        self.wait(ticket)
    }

    /// Everything the store holds. Call once after opening, before the first commit.
    fn load(&self) -> Result<Recovered, StoreError>;

    /// Makes everything written so far durable now (shutdown, or an `Os`/`Interval` policy).
    fn sync(&self) -> Result<(), StoreError>;

    /// Rewrites the store to its live data now (done by itself when dead data dominates).
    fn compact(&self) -> Result<(), StoreError> {
        let ticket = self.request_rewrite();
        self.wait(ticket)
    }

    /// Sizes and counters.
    fn stats(&self) -> StoreStats;

    /// The directory the store lives in.
    fn dir(&self) -> &Path;
}

/// Opens (creating if needed) the store in `dir` with the default backend.
pub fn open(dir: &Path, sync: SyncPolicy) -> Result<Box<dyn Store>, StoreError> {
    open_with(dir, Options::new(sync))
}

/// Opens the store in `dir` with explicit options.
pub fn open_with(dir: &Path, opts: Options) -> Result<Box<dyn Store>, StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, "creating directory", e))?;
    Ok(match opts.backend {
        Backend::Log => Box::new(core::Core::open(seglog::SegLog::open(dir)?, dir, opts)?),
        Backend::Redb => Box::new(core::Core::open(redb_kv::RedbKv::open(dir)?, dir, opts)?),
    })
}

/// The wall-clock time of `at` (a deadline on the monotonic clock), for storing.
pub fn wall_from_instant(at: Instant) -> SystemTime {
    let (now_i, now_w) = (Instant::now(), SystemTime::now());
    if at >= now_i {
        now_w + (at - now_i)
    } else {
        now_w
            .checked_sub(now_i - at)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

/// The monotonic-clock deadline of a stored wall-clock time; a time already past maps to now
/// or earlier (so it reads as expired).
pub fn instant_from_wall(at: SystemTime) -> Instant {
    let (now_i, now_w) = (Instant::now(), SystemTime::now());
    match at.duration_since(now_w) {
        Ok(ahead) => now_i + ahead,
        Err(e) => now_i.checked_sub(e.duration()).unwrap_or(now_i),
    }
}

#[cfg(test)]
mod tests;
