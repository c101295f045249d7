//! Dormant shards: under low load every shard but the first sleeps, and the first (the host)
//! runs their turns (docs/ARCHITECTURE.md §4, "dormant shards").
//!
//! Why: at a few thousand messages per second in all, a message costs mostly the wake-ups of
//! the loops it touches. On 2 shards a QoS 1 message whose publisher and subscriber live on
//! different shards wakes both loops, for the PUBLISH and again for the PUBACK; handoffs
//! (`shard::handoff`) save only the wake-ups of deliveries. One loop serving every socket
//! pays one wake-up per batch of ready sockets, as a single-threaded broker does: at 1,000
//! QoS 1 pairs x 1 msg/s, 1 shard used 0.8x the CPU per message of 2 shards with handoffs.
//!
//! How (epoll only): a shard whose loop and host were both quiet for [`QUIET_TICKS`] ticks
//! registers its epoll instance in the host's (level-triggered, so what the host leaves
//! unread announces itself again), moves its reactor into its slot and parks its thread. The
//! host, woken through the dormant shard's epoll, takes the shard's lock (`try_lock`, as a
//! handoff does) and runs a whole turn of it on its own thread: its events, inbox, accepts
//! and ticks. Whatever used to wake the dormant shard (its eventfd, its sockets) now wakes
//! the host, so nothing else changes: the shard keeps its connections, sessions, index
//! replica and statistics, and session homing and takeovers work as before.
//!
//! When the host's loop is busy over [`WAKE_ABOVE`] of a tick, or at shutdown, the dormant
//! shards are resumed: their threads are unparked, take their reactors back and remove their
//! registrations (a shard's registration is only ever added and removed by its own thread,
//! under its own lock). A resumed shard stays awake at least [`QUIET_TICKS`] ticks, and dozes
//! again only while its load and the host's together stay under [`DOZE_BELOW`]: below the
//! threshold that would resume it, so load near the boundary does not flap.
//!
//! Never on io_uring (a ring has one issuer thread), with a C plugin loaded (its per-shard
//! hooks are promised their shard's thread), with `shard_dormancy false`, or for shard 0.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::sync::OnceLock;
use std::thread::Thread;
use std::time::{Duration, Instant};

use super::handoff::Slot;
use super::Shard;
use crate::reactor::{Events, Reactor};

/// The shard that hosts the dormant ones.
pub(super) const HOST: usize = 0;
/// Tokens at and above this value (below `links::LINK_BASE`) are dormant peers' epoll
/// instances registered in the host's: `HOSTED_BASE + shard id`.
pub(super) const HOSTED_BASE: usize = 1 << 37;
/// Quiet ticks (of [`TICK`]) before a shard dozes, and the least a resumed shard stays awake.
const QUIET_TICKS: u32 = 4;
/// A shard dozes while its loop's busy fraction and the host's add up to less than this
/// (per mille of a tick)...
const DOZE_BELOW: u32 = 300;
/// ... and the host resumes the dormant shards when its own (their turns included) is above
/// this.
const WAKE_ABOVE: u32 = 500;
/// A dormant thread checks for shutdown at least this often, should its wake-up be missed.
const PARK_AT_MOST: Duration = Duration::from_secs(1);

/// What other threads see of a shard's dormancy; one per shard, in its [`super::ShardHandle`].
#[derive(Debug)]
pub struct Beacon {
    /// The shard's epoll descriptor while its loop runs on epoll; -1 otherwise.
    epoll_fd: AtomicI32,
    /// Per mille of the last tick the shard's loop was busy (the host's is read by its peers).
    load: AtomicU32,
    /// The shard is dormant: its reactor is in its slot and its epoll in the host's.
    dormant: AtomicBool,
    /// Set by whoever wants the shard's own thread back (the busy host, shutdown).
    resume: AtomicBool,
    thread: OnceLock<Thread>,
}

impl Default for Beacon {
    fn default() -> Beacon {
        Beacon {
            epoll_fd: AtomicI32::new(-1),
            load: AtomicU32::new(0),
            dormant: AtomicBool::new(false),
            resume: AtomicBool::new(false),
            thread: OnceLock::new(),
        }
    }
}

impl Beacon {
    /// The shard's loop starts on this thread, on a reactor with `epoll_fd` (`None`: io_uring).
    pub(super) fn started(&self, epoll_fd: Option<RawFd>) {
        let _ = self.thread.set(std::thread::current());
        self.epoll_fd
            .store(epoll_fd.unwrap_or(-1), Ordering::SeqCst);
    }

    /// The shard's loop stopped: nothing may register in its epoll any more.
    pub(super) fn stopped(&self) {
        self.epoll_fd.store(-1, Ordering::SeqCst);
    }

    /// The shard sleeps and its host runs its turns.
    pub fn is_dormant(&self) -> bool {
        self.dormant.load(Ordering::SeqCst)
    }

    /// Gives a dormant shard its thread back (a no-op for one that is awake).
    pub fn resume(&self) {
        self.resume.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }
}

/// A dormant shard's loop, kept in its slot for the host: its reactor and next tick.
struct Dormant {
    reactor: Reactor,
    events: Events,
    next_tick: Instant,
}

/// A shard's own dormancy state: its load over the last tick, and its loop while dormant.
pub(crate) struct Dormancy {
    /// This shard may doze (see the module documentation for when not).
    allowed: bool,
    busy_at_tick: u64,
    tick_at: Instant,
    quiet_ticks: u32,
    dormant: Option<Dormant>,
    /// The host is running this shard's turn: the turn leaves its connections unwritten, and
    /// the host writes them after its own (see [`Shard::host_turn`]).
    pub(super) hosted: bool,
}

impl std::fmt::Debug for Dormancy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dormancy")
            .field("allowed", &self.allowed)
            .field("quiet_ticks", &self.quiet_ticks)
            .field("dormant", &self.dormant.is_some())
            .finish()
    }
}

impl Dormancy {
    pub(crate) fn new(allowed: bool) -> Dormancy {
        Dormancy {
            allowed,
            busy_at_tick: 0,
            tick_at: Instant::now(),
            quiet_ticks: 0,
            dormant: None,
            hosted: false,
        }
    }
}

/// Per mille of `elapsed` that `busy` is.
fn per_mille(busy: u64, elapsed: Duration) -> u32 {
    let elapsed = elapsed.as_nanos().max(1) as u64;
    (busy.saturating_mul(1000) / elapsed).min(1000) as u32
}

fn epoll_ctl(epoll: RawFd, op: libc::c_int, fd: RawFd, token: usize) -> std::io::Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: token as u64,
    };
    // SAFETY: epoll_ctl reads `ev` only during the call; the descriptors are plain integers
    // (a closed one fails with EBADF, which the callers handle).
    if unsafe { libc::epoll_ctl(epoll, op, fd, &mut ev) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl Shard {
    /// Whether this shard may ever doze: not the host, more than one shard, and not where the
    /// module documentation says never (the loop checks the backend when it starts).
    pub(super) fn dormancy_allowed(id: usize, shards: usize, config_allows: bool) -> bool {
        config_allows && id != HOST && shards > 1
    }

    /// At each tick (in the loop's turn, or the host's for a dormant shard): measures the
    /// loop's load over the tick; the host publishes it and resumes its dormant peers when
    /// busy, or else runs their ticks; another shard counts its quiet ticks.
    pub(super) fn dormancy_tick(&mut self, now: Instant) {
        let d = &mut self.dormancy;
        let load = per_mille(
            self.stats.busy_nanos - d.busy_at_tick,
            now.saturating_duration_since(d.tick_at),
        );
        d.busy_at_tick = self.stats.busy_nanos;
        d.tick_at = now;
        self.peers[self.id]
            .beacon
            .load
            .store(load, Ordering::Relaxed);
        if self.id == HOST {
            for peer in 1..self.peers.len() {
                if !self.peers[peer].beacon.is_dormant() {
                    continue;
                }
                if load > WAKE_ABOVE {
                    self.peers[peer].beacon.resume();
                } else {
                    self.host_turn(peer, true);
                }
            }
        } else if d.allowed && d.dormant.is_none() {
            let host = self.peers[HOST].beacon.load.load(Ordering::Relaxed);
            d.quiet_ticks = if load + host < DOZE_BELOW {
                d.quiet_ticks.saturating_add(1)
            } else {
                0
            };
        }
    }

    /// The loop, about to sleep for `timeout`, may doze instead: quiet long enough, nothing
    /// left that only its own loop does, a host running on epoll, no shutdown under way.
    pub(super) fn wants_to_doze(&self, timeout: Duration) -> bool {
        self.dormancy.allowed
            && self.dormancy.quiet_ticks >= QUIET_TICKS
            && !timeout.is_zero()
            && !self.needs_own_turn()
            && !self.shared.is_shutting_down()
            && self.peers[HOST].beacon.epoll_fd.load(Ordering::SeqCst) >= 0
    }

    /// The host runs a turn of dormant peer `peer` (its epoll has events, or `tick`: its
    /// tick is due with the host's). Skipped when its lock is taken: its own thread is
    /// taking it back, or a peer is handing off to it; the level-triggered registration
    /// brings its events back at the next poll.
    pub(super) fn host_turn(&mut self, peer: usize, tick: bool) {
        if self.shared.is_shutting_down() {
            self.peers[peer].beacon.resume();
            return;
        }
        let peers = self.peers.clone();
        let handle = &peers[peer];
        let ran = handle.slot.run_for_peer(|shard| {
            // Awake (its registration is being removed under this lock): nothing to do.
            let mut d = shard.dormancy.dormant.take()?;
            let _ = d.reactor.poll(&mut d.events, Some(Duration::ZERO));
            if tick {
                d.next_tick = Instant::now();
            }
            shard.dormancy.hosted = true;
            shard.turn(&d.events, &mut d.next_tick);
            shard.dormancy.hosted = false;
            // What the turn routed to our connections goes out before its own output, which
            // holds the acknowledgements of those very messages: the order one loop keeps
            // (see `Shard::flush_dirty`).
            self.drain_inbox();
            self.flush_dirty();
            shard.flush_dirty();
            // Parked again, as its loop parks before `poll`: what is sent to it from now on
            // wakes it through its eventfd, which is in its epoll, which is in ours.
            let again = shard.park(d.next_tick).is_zero();
            let pending = shard.outbox.has_pending();
            shard.dormancy.dormant = Some(d);
            Some((again, pending))
        });
        if let Some(Some((again, pending))) = ran {
            self.stats.hosted_turns += 1;
            if pending {
                // A batch waits for room in a stalled shard's queue: its loop retries.
                handle.beacon.resume();
            } else if again {
                // More arrived during the turn, or it must not sleep: another turn at our
                // next poll.
                handle.wake();
            }
        }
    }
}

/// The shard's own loop dozes (see [`Shard::wants_to_doze`]): hands `reactor` and
/// `next_tick` to its slot and its epoll to the host, parks until resumed, and takes them
/// back. `beacon` is the shard's, `host` the host's.
pub(super) fn doze(
    slot: &Slot,
    beacon: &Beacon,
    host: &Beacon,
    reactor: Reactor,
    next_tick: Instant,
) -> (Reactor, Instant) {
    let Some(mine) = reactor.epoll_fd() else {
        return (reactor, next_tick);
    };
    let host_fd = host.epoll_fd.load(Ordering::SeqCst);
    let token = {
        let mut guard = slot.lock();
        let Some(shard) = guard.as_mut() else {
            return (reactor, next_tick);
        };
        let token = HOSTED_BASE + shard.id;
        beacon.resume.store(false, Ordering::SeqCst);
        if host_fd < 0 || epoll_ctl(host_fd, libc::EPOLL_CTL_ADD, mine, token).is_err() {
            shard.dormancy.quiet_ticks = 0;
            return (reactor, next_tick);
        }
        beacon.dormant.store(true, Ordering::SeqCst);
        shard.stats.dozes += 1;
        shard.dormancy.dormant = Some(Dormant {
            reactor,
            events: Events::with_capacity(1024),
            next_tick,
        });
        token
    };
    let stopping = || {
        slot.lock()
            .as_ref()
            .is_none_or(|s| s.shared.is_shutting_down())
    };
    while !beacon.resume.load(Ordering::SeqCst) {
        std::thread::park_timeout(PARK_AT_MOST);
        if !beacon.resume.load(Ordering::SeqCst) && stopping() {
            break;
        }
    }
    let mut guard = slot.lock();
    let shard = guard
        .as_mut()
        .expect("only a shard's own loop empties its slot");
    // The host may be gone (shutdown) and its descriptor closed: nothing to remove then.
    let _ = epoll_ctl(host_fd, libc::EPOLL_CTL_DEL, mine, token);
    beacon.dormant.store(false, Ordering::SeqCst);
    let d = shard
        .dormancy
        .dormant
        .take()
        .expect("a dormant shard's slot keeps its loop");
    shard.dormancy.quiet_ticks = 0;
    (d.reactor, d.next_tick)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::TICK;

    #[test]
    fn load_is_a_bounded_fraction_of_the_tick() {
        assert_eq!(per_mille(0, TICK), 0);
        assert_eq!(per_mille(125_000_000, TICK), 500);
        assert_eq!(per_mille(u64::MAX, TICK), 1000);
        assert_eq!(per_mille(5, Duration::ZERO), 1000);
    }

    #[test]
    fn resuming_before_the_loop_started_is_remembered() {
        let b = Beacon::default();
        assert!(!b.is_dormant());
        b.resume();
        assert!(b.resume.load(Ordering::SeqCst));
        b.started(None);
        assert_eq!(b.epoll_fd.load(Ordering::SeqCst), -1);
    }
}
