//! A worker thread's state (its connections, publishers, timer and counters) and its event
//! loop; the per-connection, publish and receive steps live in sibling modules.

use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use midge_codec::{ByteStr, Disconnect, Packet};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll};

use super::{EngineConfig, Shared, Timeline, IDLE_POLL, KEEP_ALIVE_S, MAX_CONNECTING, TIMER};
use crate::clock;
use crate::procstat;
use crate::scenario::Plan;
use crate::schedule::{Schedule, Window};
use crate::stats::{Counters, LatencyHistogram, SeqSet};
use crate::tls::stream::Stream;

/// A worker's contribution to the result.
pub(super) struct WorkerOut {
    pub(super) counters: Counters,
    pub(super) latency: LatencyHistogram,
    pub(super) send_lag: LatencyHistogram,
    pub(super) cpu: f64,
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ConnState {
    /// Not started (waiting for a handshake slot).
    Idle,
    /// TCP connect in progress.
    Connecting,
    AwaitConnAck,
    AwaitSubAck,
    Ready,
    Closed,
}

/// Where one of our outgoing QoS 1/2 messages is in its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OutFlow {
    /// QoS 1 PUBLISH sent, waiting for PUBACK.
    Qos1Sent,
    /// QoS 2 PUBLISH sent, waiting for PUBREC.
    Qos2Sent,
    /// PUBREL sent, waiting for PUBCOMP.
    Released,
}

/// The publishing side of a connection.
pub(super) struct Publisher {
    pub(super) id: u32,
    pub(super) topic: ByteStr,
    pub(super) fanout: u32,
    pub(super) phase_ns: u64,
    pub(super) filler: Bytes,
    pub(super) sched: Option<Schedule>,
    pub(super) window: Window,
    pub(super) inflight: HashMap<u16, OutFlow>,
    pub(super) next_pid: u16,
    pub(super) in_heap: bool,
    pub(super) done: bool,
    /// Deliveries owed for what was sent (sent x fanout), and those written off as lost.
    pub(super) e2e_owed: u64,
    pub(super) e2e_forgiven: u64,
    pub(super) e2e_blocked_since: Option<u64>,
}

impl Publisher {
    /// A packet id not in flight (1..=65535; the window keeps fewer than 65535 in flight).
    pub(super) fn alloc_pid(&mut self) -> u16 {
        loop {
            self.next_pid = if self.next_pid == u16::MAX {
                1
            } else {
                self.next_pid + 1
            };
            if !self.inflight.contains_key(&self.next_pid) {
                return self.next_pid;
            }
        }
    }
}

/// One client connection, owned by one worker thread.
pub(super) struct Conn {
    pub(super) spec: usize,
    pub(super) stream: Option<Stream>,
    pub(super) state: ConnState,
    pub(super) rbuf: BytesMut,
    pub(super) wbuf: BytesMut,
    pub(super) dirty: bool,
    pub(super) last_write_ns: u64,
    pub(super) publisher: Option<Publisher>,
    /// Per publisher: the sequence numbers this subscriber has received (measured ones).
    pub(super) seen: HashMap<u32, SeqSet>,
    /// Incoming QoS 2 packet ids between PUBLISH and PUBREL (delivered once, at PUBLISH).
    pub(super) qos2_in: HashSet<u16>,
}

pub(super) struct Worker {
    pub(super) addr: SocketAddr,
    pub(super) plan: Arc<Plan>,
    pub(super) cfg: EngineConfig,
    pub(super) shared: Arc<Shared>,
    pub(super) poll: Poll,
    pub(super) timer: OwnedFd,
    pub(super) timer_armed: u64,
    pub(super) conns: Vec<Conn>,
    pub(super) pending: VecDeque<usize>,
    pub(super) connecting: usize,
    pub(super) heap: BinaryHeap<std::cmp::Reverse<(u64, usize)>>,
    pub(super) e2e_blocked: Vec<usize>,
    pub(super) dirty: Vec<usize>,
    pub(super) timeline: Option<Timeline>,
    pub(super) counters: Counters,
    pub(super) latency: LatencyHistogram,
    pub(super) send_lag: LatencyHistogram,
    /// Counter values already added to the shared live counters.
    pub(super) published_expected_flushed: u64,
    pub(super) received_flushed: u64,
    pub(super) scratch: Vec<u8>,
    pub(super) errors: usize,
}

impl Worker {
    pub(super) fn new(
        addr: SocketAddr,
        plan: Arc<Plan>,
        cfg: EngineConfig,
        shared: Arc<Shared>,
        mine: Vec<usize>,
    ) -> io::Result<Worker> {
        // Finer timer slack for this thread: the kernel may otherwise defer wake-ups by 50 us.
        // SAFETY: prctl with PR_SET_TIMERSLACK takes an integer and touches no memory.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
        let poll = Poll::new()?;
        // SAFETY: timerfd_create returns a new descriptor or -1; we take ownership of it.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
        let timer = unsafe { OwnedFd::from_raw_fd(fd) };
        poll.registry()
            .register(&mut SourceFd(&timer.as_raw_fd()), TIMER, Interest::READABLE)?;
        let conns = mine
            .iter()
            .map(|&spec| {
                let c = &plan.clients[spec];
                let publisher = c.publisher.map(|id| {
                    let p = &plan.publishers[id as usize];
                    Publisher {
                        id,
                        topic: ByteStr::from(p.topic.as_str()),
                        fanout: p.fanout,
                        phase_ns: p.phase_ns,
                        filler: Bytes::from(vec![b'm'; cfg.payload]),
                        sched: None,
                        window: Window::new(cfg.window),
                        inflight: HashMap::new(),
                        next_pid: 0,
                        in_heap: false,
                        done: false,
                        e2e_owed: 0,
                        e2e_forgiven: 0,
                        e2e_blocked_since: None,
                    }
                });
                Conn {
                    spec,
                    stream: None,
                    state: ConnState::Idle,
                    rbuf: BytesMut::with_capacity(4096),
                    wbuf: BytesMut::with_capacity(4096),
                    dirty: false,
                    last_write_ns: 0,
                    publisher,
                    seen: HashMap::new(),
                    qos2_in: HashSet::new(),
                }
            })
            .collect::<Vec<_>>();
        Ok(Worker {
            addr,
            pending: (0..conns.len()).collect(),
            conns,
            plan,
            cfg,
            shared,
            poll,
            timer,
            timer_armed: 0,
            connecting: 0,
            heap: BinaryHeap::new(),
            e2e_blocked: Vec::new(),
            dirty: Vec::new(),
            timeline: None,
            counters: Counters::default(),
            latency: LatencyHistogram::new(),
            send_lag: LatencyHistogram::new(),
            published_expected_flushed: 0,
            received_flushed: 0,
            scratch: vec![0u8; 256 * 1024],
            errors: 0,
        })
    }

    /// The loop. Shard thread only (this worker's thread).
    pub(super) fn run(mut self) -> io::Result<WorkerOut> {
        let mut events = Events::with_capacity(1024);
        let mut cpu_mark: Option<(u64, f64)> = None;
        let mut cpu_util = 0.0;
        let mut next_housekeeping = 0;
        loop {
            let now = clock::now_ns();
            if self.shared.stop.load(Relaxed) {
                break;
            }
            if self.timeline.is_none() {
                if let Some(tl) = self.shared.timeline.get().copied() {
                    self.begin(tl, now);
                }
            }
            if let Some(tl) = self.timeline {
                if now >= tl.hard_deadline_ns {
                    break;
                }
                if cpu_mark.is_none() && now >= tl.measure_start_ns {
                    cpu_mark = Some((now, procstat::thread_cpu_s()));
                }
                if let Some((t0, c0)) = cpu_mark {
                    if now < tl.measure_end_ns || cpu_util == 0.0 {
                        let wall = (now - t0) as f64 / 1e9;
                        if wall > 0.0 {
                            cpu_util = (procstat::thread_cpu_s() - c0) / wall;
                        }
                    }
                }
            }
            while self.connecting < MAX_CONNECTING {
                let Some(ci) = self.pending.pop_front() else {
                    break;
                };
                self.start_connect(ci, now);
            }
            if now >= next_housekeeping {
                self.housekeeping(now);
                next_housekeeping = now + 1_000_000_000;
            }
            self.run_due(now);
            self.retry_e2e(now);
            self.flush_dirty(now);
            self.publish_live_counters();

            let mut timeout = if self.e2e_blocked.is_empty() {
                IDLE_POLL
            } else {
                Duration::from_micros(200)
            };
            if let Some(std::cmp::Reverse((due, _))) = self.heap.peek().copied() {
                if due <= clock::now_ns() {
                    timeout = Duration::ZERO;
                } else {
                    self.arm_timer(due)?;
                }
            }
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for ev in events.iter() {
                if ev.token() == TIMER {
                    let mut buf = [0u8; 8];
                    // SAFETY: reads 8 bytes into a stack buffer from the timerfd we own.
                    unsafe { libc::read(self.timer.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
                    self.timer_armed = 0;
                    continue;
                }
                let ci = ev.token().0;
                if ci >= self.conns.len() {
                    continue;
                }
                if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
                    self.on_writable(ci);
                }
                if ev.is_readable() || ev.is_read_closed() {
                    self.on_readable(ci);
                }
            }
        }
        self.finish();
        Ok(WorkerOut {
            counters: self.counters,
            latency: self.latency,
            send_lag: self.send_lag,
            cpu: cpu_util,
        })
    }

    /// Arms the timerfd at absolute epoch-relative time `due` (unless already armed there).
    pub(super) fn arm_timer(&mut self, due: u64) -> io::Result<()> {
        if self.timer_armed == due {
            return Ok(());
        }
        let abs = clock::to_abs_ns(due).max(1);
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (abs / 1_000_000_000) as _,
                tv_nsec: (abs % 1_000_000_000) as _,
            },
        };
        // SAFETY: timerfd_settime reads one itimerspec we own; the old value is not requested.
        let r = unsafe {
            libc::timerfd_settime(
                self.timer.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        self.timer_armed = due;
        Ok(())
    }

    /// The timeline is known: give every publisher its schedule.
    pub(super) fn begin(&mut self, tl: Timeline, now: u64) {
        self.timeline = Some(tl);
        for ci in 0..self.conns.len() {
            if let Some(p) = self.conns[ci].publisher.as_mut() {
                p.sched = Some(Schedule::new(
                    self.plan.pace,
                    tl.start_ns,
                    p.phase_ns,
                    tl.measure_end_ns,
                ));
            }
            self.pump(ci, now);
        }
    }

    /// Once a second: keep-alive pings for idle connections.
    pub(super) fn housekeeping(&mut self, now: u64) {
        let idle = KEEP_ALIVE_S as u64 * 1_000_000_000 / 2;
        for ci in 0..self.conns.len() {
            let c = &self.conns[ci];
            if c.state == ConnState::Ready && now.saturating_sub(c.last_write_ns) > idle {
                self.queue(ci, &Packet::PingReq);
            }
        }
    }

    /// Adds this thread's new counts to the shared live counters (once per loop turn, not
    /// per message, to keep cross-core traffic off the hot path).
    pub(super) fn publish_live_counters(&mut self) {
        let e = self.counters.expected;
        if e != self.published_expected_flushed {
            self.shared
                .expected
                .fetch_add(e - self.published_expected_flushed, Relaxed);
            self.published_expected_flushed = e;
        }
        let r = self.counters.received;
        if r != self.received_flushed {
            self.shared
                .received
                .fetch_add(r - self.received_flushed, Relaxed);
            self.received_flushed = r;
        }
    }

    /// End of the run: count the open-loop backlog, say goodbye politely, close.
    pub(super) fn finish(&mut self) {
        let end = clock::now_ns();
        for ci in 0..self.conns.len() {
            if let Some(s) = self.conns[ci]
                .publisher
                .as_ref()
                .and_then(|p| p.sched.as_ref())
            {
                // Messages are sent in order, so a backlog is the latest, measured, ones.
                self.counters.unsent += s.unsent_at(end);
            }
            if self.conns[ci].state == ConnState::Ready {
                let d = Packet::Disconnect(Disconnect::default());
                self.queue(ci, &d);
                self.flush(ci, end);
            }
            if let Some(mut s) = self.conns[ci].stream.take() {
                let _ = self.poll.registry().deregister(&mut s);
            }
        }
    }
}
