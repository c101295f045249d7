//! TLS handshakes off the event loops, on threads of their own that run at a lower CPU
//! priority than the shards.
//!
//! Why: a server handshake costs 0.1-0.5 ms of CPU (key exchange and signature; more with
//! RSA keys), and a fleet reconnecting after an outage brings thousands at once. Done on a
//! shard, every handshake step delays each established client of that shard by as much, and
//! a per-turn budget only spreads the delay out. Here a handshake never runs on a shard: the
//! shard accepts and counts the socket as before, builds its layers, and hands it to its
//! handshake thread, which drives the PROXY header (if the listener has one) and the TLS
//! handshake only, then sends the transport back through the shard's inbox. The WebSocket
//! upgrade and everything MQTT stay on the shard. The threads run at nice
//! [`HANDSHAKE_NICE`]: when a shard has work, the kernel runs it ahead of them, so
//! handshakes use the CPU the shards leave (they still progress under full load: a lower
//! weight, not a starved class; see [`lower_priority`]).
//!
//! A handshake that has not finished within `connect_timeout` is closed here, as the shard
//! would close a connection that sends no CONNECT; the shard then gives the client the rest
//! of `connect_timeout` from the accept, not a new one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use super::inbox::{Batch, ShardHandle, ShardMsg};
use super::shared::Shared;
use crate::transport::Transport;

/// The niceness of handshake threads (shards run at the process's, normally 0). At 10 the
/// kernel gives a shard about ten times a handshake thread's share of a contended core and
/// runs a waking shard first; a handshake still gets about a tenth of a core that shards keep
/// busy, so a storm during full load slows down rather than stalls.
pub const HANDSHAKE_NICE: i32 = 10;

const WAKER: Token = Token(usize::MAX);

/// How long a handshake thread keeps trying to hand a finished connection to a shard whose
/// inbox is full before it drops the connection.
const PUSH_FOR: Duration = Duration::from_secs(5);

/// A connection accepted by a shard, in its handshake thread's hands, and back.
#[derive(Debug)]
pub struct Handshaken {
    pub stream: Transport,
    pub peer: SocketAddr,
    /// The listener it came through, by index in the shard's listeners.
    pub listener: usize,
    /// Whether its address was counted under `max_connections_per_ip` at accept.
    pub counted: bool,
    /// When it was accepted: `connect_timeout` runs from here.
    pub accepted: Instant,
    /// The shard that accepted it, and gets it back.
    pub shard: u16,
}

/// One handshake thread as the shards see it.
#[derive(Debug)]
struct Worker {
    jobs: Sender<Handshaken>,
    waker: Arc<Waker>,
}

/// The handshake threads of a broker (one per shard; shard `i` uses thread `i`).
#[derive(Debug)]
pub struct Handshakers {
    workers: Vec<Worker>,
}

impl Handshakers {
    /// Starts `n` threads that hand finished connections to `shards`.
    pub fn start(
        n: usize,
        shared: Arc<Shared>,
        shards: Arc<Vec<ShardHandle>>,
    ) -> std::io::Result<(Handshakers, Vec<JoinHandle<()>>)> {
        let mut workers = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
            let (jobs, rx) = crossbeam_channel::unbounded();
            let mut thread = HandshakeThread {
                poll,
                jobs: rx,
                pending: Slab::new(),
                shared: shared.clone(),
                shards: shards.clone(),
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("midge-handshake-{i}"))
                    .spawn(move || thread.run())?,
            );
            workers.push(Worker { jobs, waker });
        }
        Ok((Handshakers { workers }, threads))
    }

    /// Hands `job` to shard `job.shard`'s handshake thread; gives it back if that thread is
    /// gone (shutdown).
    pub fn submit(&self, job: Handshaken) -> Result<(), Handshaken> {
        let w = &self.workers[usize::from(job.shard) % self.workers.len()];
        w.jobs.send(job).map_err(|e| e.into_inner())?;
        let _ = w.waker.wake();
        Ok(())
    }

    /// Wakes every thread so that it sees the stop flag (shutdown).
    pub fn wake_all(&self) {
        for w in &self.workers {
            let _ = w.waker.wake();
        }
    }
}

struct HandshakeThread {
    poll: Poll,
    jobs: Receiver<Handshaken>,
    pending: Slab<Handshaken>,
    shared: Arc<Shared>,
    shards: Arc<Vec<ShardHandle>>,
}

impl HandshakeThread {
    fn run(&mut self) {
        lower_priority();
        let timeout = self.shared.config.connect_time_limit();
        let mut events = Events::with_capacity(256);
        let mut next_scan = Instant::now() + Duration::from_secs(1);
        loop {
            let wait = next_scan.saturating_duration_since(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    log::error!("TLS handshake thread stopped: {e}");
                    return;
                }
            }
            if self.shared.is_shutting_down() {
                return;
            }
            for event in events.iter() {
                if event.token() != WAKER {
                    self.step(event.token().0);
                }
            }
            while let Ok(job) = self.jobs.try_recv() {
                self.take(job);
            }
            let now = Instant::now();
            if now >= next_scan {
                self.expire(now, timeout);
                next_scan = now + Duration::from_secs(1);
            }
        }
    }

    /// A new connection: registered (readable for the client's flights, writable for room
    /// to send ours) and driven at once, since its first flight may be there already.
    fn take(&mut self, job: Handshaken) {
        let key = self.pending.insert(job);
        let job = &mut self.pending[key];
        if let Err(e) = self.poll.registry().register(
            &mut job.stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.fail(key, &format!("cannot register its socket: {e}"));
            return;
        }
        self.step(key);
    }

    fn step(&mut self, key: usize) {
        let Some(job) = self.pending.get_mut(key) else {
            return;
        };
        match job.stream.drive_handshake() {
            Ok(false) => {}
            Ok(true) => self.hand_back(key),
            Err(e) => self.fail(key, &e.to_string()),
        }
    }

    /// The handshake is done: the connection goes back to its shard (deregistered here
    /// first: the shard registers it with its own poll, which reports what is already
    /// waiting in the socket).
    fn hand_back(&mut self, key: usize) {
        let mut job = self.pending.remove(key);
        let _ = self.poll.registry().deregister(&mut job.stream);
        let shard = usize::from(job.shard);
        let batch = Batch {
            from: job.shard,
            items: vec![ShardMsg::Handshaken(Box::new(job))],
        };
        if let Err(mut batch) = self.shards[shard].push_patiently(batch, PUSH_FOR) {
            if let Some(ShardMsg::Handshaken(job)) = batch.items.pop() {
                log::warn!(
                    "Client <unknown> from {} dropped: shard {shard} did not take it.",
                    job.peer
                );
                self.shared.connection_gone(job.peer.ip(), job.counted);
            }
        }
    }

    /// Closes the connection (a TLS alert was sent already where TLS has one) and frees its
    /// places under the connection limits.
    fn fail(&mut self, key: usize, reason: &str) {
        let mut job = self.pending.remove(key);
        let _ = self.poll.registry().deregister(&mut job.stream);
        log::info!("Client <unknown> from {} disconnected: {reason}.", job.peer);
        self.shared.connection_gone(job.peer.ip(), job.counted);
    }

    fn expire(&mut self, now: Instant, timeout: Duration) {
        let late: Vec<usize> = self
            .pending
            .iter()
            .filter(|(_, j)| now.saturating_duration_since(j.accepted) >= timeout)
            .map(|(k, _)| k)
            .collect();
        for key in late {
            self.fail(key, "TLS handshake not finished within connect_timeout");
        }
    }
}

/// Lowers this thread's scheduling priority: niceness [`HANDSHAKE_NICE`] (on Linux a
/// thread's niceness is its own), and the `SCHED_BATCH` policy, under which a handshake thread
/// that wakes (a ClientHello arrived) does not preempt a running shard. Neither needs a
/// privilege; a failure only logs.
fn lower_priority() {
    // SAFETY: gettid has no preconditions; setpriority and sched_setscheduler on this
    // thread's own id change only this thread's scheduling, and `param` outlives the call.
    let (nice, batch) = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::pid_t;
        let nice = libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, HANDSHAKE_NICE);
        let param = libc::sched_param { sched_priority: 0 };
        (
            nice,
            libc::sched_setscheduler(tid, libc::SCHED_BATCH, &param),
        )
    };
    if nice != 0 || batch != 0 {
        log::warn!(
            "Cannot lower the TLS handshake thread's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}
