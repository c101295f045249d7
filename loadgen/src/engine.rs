//! The client engine: executes a [`Plan`] against one broker address.
//!
//! Each worker thread owns a share of the plan's connections and one `mio::Poll`; nothing a
//! connection owns is shared with another thread, so the hot path takes no lock. What threads
//! do share is a handful of atomics in [`Shared`]: set-up progress, the run's [`Timeline`],
//! live counters for the progress line and, in max-throughput mode, per-publisher delivery
//! counts (the end-to-end window).
//!
//! Timing: publishers are kept in a min-heap by due time and the loop sleeps on a `timerfd`
//! armed at the earliest due time. A timerfd because `epoll_wait` only takes milliseconds
//! (mio rounds its timeout up to the next millisecond): sleeping on it would add up to 1 ms of
//! loadgen-made delay to every message, which on loopback is ten times the broker's own
//! latency. How late loadgen itself sends (actual minus intended send time) is recorded in its
//! own histogram, `send_lag`, so a reader can tell loadgen's share from the broker's.
//!
//! Phases: connect and subscribe everything -> the controller fixes the timeline -> warm-up ->
//! measured interval -> drain (late deliveries and the open-loop backlog) -> stop. Every phase
//! is bounded, and workers also stop by themselves at the timeline's hard deadline.

use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use midge_codec::{
    decode, encode, ByteStr, Connect, Disconnect, Packet, Properties, ProtocolVersion, PubResp,
    Publish, QoS, SubOptions, Subscribe,
};
use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::clock::{self, Stamp};
use crate::procstat;
use crate::scenario::Plan;
use crate::schedule::{Pace, Schedule, Window};
use crate::stats::{Counters, LatencyHistogram, SeqSet};

/// Largest packet the engine accepts from a broker (the MQTT maximum).
const MAX_PACKET: u32 = 268_435_455;
/// Above this many unwritten bytes a connection stops publishing until the socket drains:
/// socket backpressure, so a slow broker fills our backlog (and the latency), not our memory.
const WBUF_HIGH: usize = 1 << 20;
/// Connections in the handshake at once; more would overflow the broker's listen backlog.
const MAX_CONNECTING: usize = 256;
/// Keep-alive sent in CONNECT; a PINGREQ goes out after half of it without writes.
const KEEP_ALIVE_S: u16 = 60;
/// A max-throughput publisher whose end-to-end window stays full this long writes the
/// missing deliveries off as lost (QoS 0 may lose) instead of waiting forever.
const E2E_FORGIVE_NS: u64 = 1_000_000_000;
/// Poll timeout when nothing is due: how quickly a worker notices the controller.
const IDLE_POLL: Duration = Duration::from_millis(20);
/// The drain may run this much past its configured end while deliveries keep arriving...
const DRAIN_EXTENSION_NS: u64 = 10_000_000_000;
/// ...and stops once none arrived for this long.
const DRAIN_IDLE_NS: u64 = 500_000_000;
const TIMER: Token = Token(usize::MAX - 1);

/// What the engine needs besides the plan.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub version: ProtocolVersion,
    pub qos: QoS,
    pub payload: usize,
    pub window: u32,
    pub warmup_ns: u64,
    pub duration_ns: u64,
    pub drain_ns: u64,
    pub threads: u32,
    /// Longest time connecting and subscribing every client may take.
    pub setup_timeout: Duration,
    /// When set, every CONNECT carries its client id as user name and this password.
    pub password: Option<String>,
    /// Persistent sessions instead of clean ones.
    pub persistent: bool,
}

/// The run's phases in epoch-relative nanoseconds, fixed once every client is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeline {
    /// Publishing starts (warm-up begins).
    pub start_ns: u64,
    /// Messages intended from here on are measured.
    pub measure_start_ns: u64,
    /// ...until here; no message is scheduled at or after it.
    pub measure_end_ns: u64,
    /// Drain ends (extended while deliveries still arrive): what has not arrived then is lost.
    pub drain_end_ns: u64,
    /// Workers stop at this time whatever happens.
    pub hard_deadline_ns: u64,
}

impl Timeline {
    /// True if a message intended at `t` is measured.
    pub fn measured(&self, t: u64) -> bool {
        (self.measure_start_ns..self.measure_end_ns).contains(&t)
    }
}

/// Where the run is, for the progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Setup,
    Warmup,
    Measure,
    Drain,
}

/// A snapshot for the progress line.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub phase: Phase,
    /// Seconds since the phase began.
    pub elapsed_s: f64,
    pub ready: usize,
    pub connections: usize,
    /// Measured deliveries so far, and expected so far.
    pub received: u64,
    pub expected: u64,
    /// Delivered measured messages per second since the measured interval began.
    pub rate: f64,
}

/// What the engine tells its caller while it runs.
#[derive(Debug, Clone, Copy)]
pub enum Event {
    /// Every client is connected and subscribed; the timeline is fixed.
    Ready(Timeline),
    /// The measured interval begins: sample the broker now.
    MeasureStart,
    /// About every 250 ms.
    Tick(Progress),
    /// The measured interval ends: sample the broker now.
    MeasureEnd,
}

/// The outcome of a run, merged over worker threads.
#[derive(Debug, Clone)]
pub struct EngineResult {
    pub counters: Counters,
    /// End-to-end latency from the intended send time.
    pub latency: LatencyHistogram,
    /// How late loadgen sent (actual minus intended send time): loadgen's own share.
    pub send_lag: LatencyHistogram,
    pub timeline: Timeline,
    /// Seconds spent connecting and subscribing.
    pub setup_s: f64,
    /// Fraction of one core each worker thread used during the measured interval.
    pub worker_cpu: Vec<f64>,
    /// First errors seen (connection failures, refusals), at most a few per thread.
    pub errors: Vec<String>,
}

/// State shared by the controller and the workers; everything else is per thread.
struct Shared {
    ready: AtomicUsize,
    failed: AtomicUsize,
    timeline: OnceLock<Timeline>,
    stop: AtomicBool,
    expected: AtomicU64,
    received: AtomicU64,
    publishers_done: AtomicUsize,
    /// Deliveries per publisher, all phases (max mode's end-to-end window).
    delivered: Vec<AtomicU64>,
    errors: Mutex<Vec<String>>,
}

impl Shared {
    fn error(&self, e: String) {
        let mut v = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() < 20 {
            v.push(e);
        }
    }
}

/// Runs `plan` against `addr`. Blocks until the run is over; `observe` is called from this
/// thread at phase changes and about every 250 ms.
pub fn run(
    addr: SocketAddr,
    plan: &Plan,
    cfg: &EngineConfig,
    observe: &mut dyn FnMut(Event),
) -> Result<EngineResult, String> {
    let _ = clock::now_ns(); // fix the epoch before any thread stamps a message
    let n = plan.clients.len();
    let shared = Arc::new(Shared {
        ready: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        timeline: OnceLock::new(),
        stop: AtomicBool::new(false),
        expected: AtomicU64::new(0),
        received: AtomicU64::new(0),
        publishers_done: AtomicUsize::new(0),
        delivered: (0..plan.publishers.len())
            .map(|_| AtomicU64::new(0))
            .collect(),
        errors: Mutex::new(Vec::new()),
    });
    let plan = Arc::new(plan.clone());
    let threads = (cfg.threads as usize).clamp(1, n.max(1));
    // Workers report through a channel so that the controller can stop waiting at a deadline:
    // a worker that is stuck (a bug, a hung syscall) must not keep the run from ending.
    let (tx, rx) = std::sync::mpsc::channel::<Result<WorkerOut, String>>();
    for w in 0..threads {
        let mine: Vec<usize> = (w..n).step_by(threads).collect();
        let (shared, plan, cfg, tx) = (shared.clone(), plan.clone(), cfg.clone(), tx.clone());
        std::thread::Builder::new()
            .name(format!("loadgen-w{w}"))
            .spawn(move || {
                let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    Worker::new(addr, plan, cfg, shared, mine).and_then(|w| w.run())
                }));
                let _ = tx.send(match out {
                    Ok(Ok(o)) => Ok(o),
                    Ok(Err(e)) => Err(format!("worker: {e}")),
                    Err(_) => Err("a worker thread panicked".to_string()),
                });
            })
            .map_err(|e| format!("spawning a worker thread: {e}"))?;
    }
    drop(tx);
    let join = |deadline_ns: u64| -> Result<Vec<WorkerOut>, String> {
        let mut outs = Vec::new();
        while outs.len() < threads {
            let left = deadline_ns.saturating_sub(clock::now_ns());
            match rx.recv_timeout(Duration::from_nanos(left)) {
                Ok(r) => outs.push(r?),
                Err(_) => {
                    return Err(format!(
                        "{} worker(s) did not stop by the deadline",
                        threads - outs.len()
                    ))
                }
            }
        }
        Ok(outs)
    };

    // Set-up: connect and subscribe everyone, bounded.
    let setup_from = clock::now_ns();
    let setup_deadline = setup_from + cfg.setup_timeout.as_nanos() as u64;
    let mut next_tick = setup_from;
    loop {
        let (ready, failed) = (shared.ready.load(Relaxed), shared.failed.load(Relaxed));
        let now = clock::now_ns();
        if failed > 0 || now >= setup_deadline {
            shared.stop.store(true, Relaxed);
            let _ = join(clock::now_ns() + 5_000_000_000);
            let errors = shared
                .errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            return Err(if failed > 0 {
                format!(
                    "{failed} of {n} clients failed to connect/subscribe: {}",
                    errors.join("; ")
                )
            } else {
                format!(
                    "set-up timed out after {:?}: {ready} of {n} clients ready",
                    cfg.setup_timeout
                )
            });
        }
        if ready == n {
            break;
        }
        if now >= next_tick {
            observe(Event::Tick(progress(
                &shared,
                Phase::Setup,
                setup_from,
                now,
                n,
                0,
            )));
            next_tick = now + 250_000_000;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let setup_s = (clock::now_ns() - setup_from) as f64 / 1e9;

    // The timeline. The short lead lets every worker see it before the first message is due.
    let start_ns = clock::now_ns() + 50_000_000;
    let measure_start_ns = start_ns + cfg.warmup_ns;
    let measure_end_ns = measure_start_ns + cfg.duration_ns;
    let drain_end_ns = measure_end_ns + cfg.drain_ns;
    let tl = Timeline {
        start_ns,
        measure_start_ns,
        measure_end_ns,
        drain_end_ns,
        hard_deadline_ns: drain_end_ns + DRAIN_EXTENSION_NS + 5_000_000_000,
    };
    let _ = shared.timeline.set(tl);
    observe(Event::Ready(tl));

    let sleep_until = |t: u64| {
        let now = clock::now_ns();
        if t > now {
            std::thread::sleep(Duration::from_nanos(t - now));
        }
    };
    let mut next_tick = start_ns;
    while clock::now_ns() < measure_start_ns {
        let now = clock::now_ns();
        if now >= next_tick {
            observe(Event::Tick(progress(
                &shared,
                Phase::Warmup,
                start_ns,
                now,
                n,
                0,
            )));
            next_tick = now + 250_000_000;
        }
        sleep_until(next_tick.min(measure_start_ns));
    }
    observe(Event::MeasureStart);
    while clock::now_ns() < measure_end_ns {
        let now = clock::now_ns();
        if now >= next_tick {
            observe(Event::Tick(progress(
                &shared,
                Phase::Measure,
                measure_start_ns,
                now,
                n,
                measure_start_ns,
            )));
            next_tick = now + 250_000_000;
        }
        sleep_until(next_tick.min(measure_end_ns));
    }
    observe(Event::MeasureEnd);
    // Drain: until everything scheduled was sent and every expected delivery arrived. Past
    // `drain_end_ns` it goes on only while deliveries still arrive (a slow but correct broker
    // is late, not lossy), and never past `DRAIN_EXTENSION_NS` more.
    let mut last = (shared.received.load(Relaxed), clock::now_ns());
    loop {
        let now = clock::now_ns();
        let received = shared.received.load(Relaxed);
        if received != last.0 {
            last = (received, now);
        }
        let done = shared.publishers_done.load(Relaxed) == plan.publishers.len()
            && received >= shared.expected.load(Relaxed);
        let stalled = now.saturating_sub(last.1) > DRAIN_IDLE_NS;
        if done || (now >= drain_end_ns && stalled) || now >= drain_end_ns + DRAIN_EXTENSION_NS {
            break;
        }
        if now >= next_tick {
            observe(Event::Tick(progress(
                &shared,
                Phase::Drain,
                measure_end_ns,
                now,
                n,
                measure_start_ns,
            )));
            next_tick = now + 250_000_000;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    shared.stop.store(true, Relaxed);
    let outs = join(tl.hard_deadline_ns + 1_000_000_000)?;

    let mut res = EngineResult {
        counters: Counters::default(),
        latency: LatencyHistogram::new(),
        send_lag: LatencyHistogram::new(),
        timeline: tl,
        setup_s,
        worker_cpu: Vec::new(),
        errors: shared
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
    };
    for o in outs {
        res.counters.add(&o.counters);
        res.latency.merge(&o.latency);
        res.send_lag.merge(&o.send_lag);
        res.worker_cpu.push(o.cpu);
    }
    Ok(res)
}

fn progress(
    shared: &Shared,
    phase: Phase,
    from: u64,
    now: u64,
    n: usize,
    measure_from: u64,
) -> Progress {
    let received = shared.received.load(Relaxed);
    let secs = if measure_from > 0 {
        (now.saturating_sub(measure_from)) as f64 / 1e9
    } else {
        0.0
    };
    Progress {
        phase,
        elapsed_s: now.saturating_sub(from) as f64 / 1e9,
        ready: shared.ready.load(Relaxed),
        connections: n,
        received,
        expected: shared.expected.load(Relaxed),
        rate: if secs > 0.0 {
            received as f64 / secs
        } else {
            0.0
        },
    }
}

/// A worker's contribution to the result.
struct WorkerOut {
    counters: Counters,
    latency: LatencyHistogram,
    send_lag: LatencyHistogram,
    cpu: f64,
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnState {
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
enum OutFlow {
    /// QoS 1 PUBLISH sent, waiting for PUBACK.
    Qos1Sent,
    /// QoS 2 PUBLISH sent, waiting for PUBREC.
    Qos2Sent,
    /// PUBREL sent, waiting for PUBCOMP.
    Released,
}

/// The publishing side of a connection.
struct Publisher {
    id: u32,
    topic: ByteStr,
    fanout: u32,
    phase_ns: u64,
    filler: Bytes,
    sched: Option<Schedule>,
    window: Window,
    inflight: HashMap<u16, OutFlow>,
    next_pid: u16,
    in_heap: bool,
    done: bool,
    /// Deliveries owed for what was sent (sent x fanout), and those written off as lost.
    e2e_owed: u64,
    e2e_forgiven: u64,
    e2e_blocked_since: Option<u64>,
}

impl Publisher {
    /// A packet id not in flight (1..=65535; the window keeps fewer than 65535 in flight).
    fn alloc_pid(&mut self) -> u16 {
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
struct Conn {
    spec: usize,
    stream: Option<TcpStream>,
    state: ConnState,
    rbuf: BytesMut,
    wbuf: BytesMut,
    dirty: bool,
    last_write_ns: u64,
    publisher: Option<Publisher>,
    /// Per publisher: the sequence numbers this subscriber has received (measured ones).
    seen: HashMap<u32, SeqSet>,
    /// Incoming QoS 2 packet ids between PUBLISH and PUBREL (delivered once, at PUBLISH).
    qos2_in: HashSet<u16>,
}

struct Worker {
    addr: SocketAddr,
    plan: Arc<Plan>,
    cfg: EngineConfig,
    shared: Arc<Shared>,
    poll: Poll,
    timer: OwnedFd,
    timer_armed: u64,
    conns: Vec<Conn>,
    pending: VecDeque<usize>,
    connecting: usize,
    heap: BinaryHeap<std::cmp::Reverse<(u64, usize)>>,
    e2e_blocked: Vec<usize>,
    dirty: Vec<usize>,
    timeline: Option<Timeline>,
    counters: Counters,
    latency: LatencyHistogram,
    send_lag: LatencyHistogram,
    /// Counter values already added to the shared live counters.
    published_expected_flushed: u64,
    received_flushed: u64,
    scratch: Vec<u8>,
    errors: usize,
}

impl Worker {
    fn new(
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
    fn run(mut self) -> io::Result<WorkerOut> {
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
    fn arm_timer(&mut self, due: u64) -> io::Result<()> {
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
    fn begin(&mut self, tl: Timeline, now: u64) {
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

    fn start_connect(&mut self, ci: usize, now: u64) {
        match TcpStream::connect(self.addr) {
            Ok(mut s) => {
                // Both interests once, for the connection's life: mio is edge-triggered, so a
                // writable event only arrives when the socket turns writable again after a
                // short write, and re-registering per event would cost a syscall each time.
                if let Err(e) = self.poll.registry().register(
                    &mut s,
                    Token(ci),
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    self.fail(ci, format!("register: {e}"));
                    return;
                }
                let c = &mut self.conns[ci];
                c.stream = Some(s);
                c.state = ConnState::Connecting;
                c.last_write_ns = now;
                self.connecting += 1;
            }
            Err(e) => self.fail(ci, format!("connect to {}: {e}", self.addr)),
        }
    }

    /// Closes connection `ci` after an error: the one close path. A failure before the run
    /// starts fails the set-up; one during the run counts as a disconnect.
    fn fail(&mut self, ci: usize, why: String) {
        let c = &mut self.conns[ci];
        if c.state == ConnState::Closed {
            return;
        }
        let was = c.state;
        c.state = ConnState::Closed;
        if let Some(mut s) = c.stream.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        let id = self.plan.clients[c.spec].client_id.clone();
        if was == ConnState::Ready {
            self.counters.disconnects += 1;
        } else {
            self.connecting = self.connecting.saturating_sub(1);
            self.shared.failed.fetch_add(1, Relaxed);
        }
        if let Some(p) = c.publisher.as_mut() {
            if !p.done {
                p.done = true;
                self.shared.publishers_done.fetch_add(1, Relaxed);
            }
        }
        if self.errors < 5 {
            self.errors += 1;
            self.shared.error(format!("{id}: {why}"));
        }
    }

    fn queue(&mut self, ci: usize, p: &Packet) {
        let c = &mut self.conns[ci];
        encode(p, self.cfg.version, &mut c.wbuf);
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(ci);
        }
    }

    fn on_writable(&mut self, ci: usize) {
        if self.conns[ci].state == ConnState::Connecting {
            let s = self.conns[ci]
                .stream
                .as_ref()
                .expect("connecting has a stream");
            match s.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => return self.fail(ci, format!("connect: {e}")),
            }
            match s.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return, // spurious, still connecting
                Err(e) => return self.fail(ci, format!("connect: {e}")),
            }
            let _ = s.set_nodelay(true);
            let spec = &self.plan.clients[self.conns[ci].spec];
            let connect = Packet::Connect(Connect {
                version: self.cfg.version,
                clean_start: !self.cfg.persistent,
                keep_alive: KEEP_ALIVE_S,
                client_id: ByteStr::from(spec.client_id.as_str()),
                will: None,
                username: self
                    .cfg
                    .password
                    .as_ref()
                    .map(|_| ByteStr::from(spec.client_id.as_str())),
                password: self
                    .cfg
                    .password
                    .as_ref()
                    .map(|p| Bytes::copy_from_slice(p.as_bytes())),
                properties: Properties {
                    session_expiry_interval: (self.cfg.persistent
                        && self.cfg.version == ProtocolVersion::V5)
                        .then_some(3600),
                    ..Properties::default()
                },
            });
            self.conns[ci].state = ConnState::AwaitConnAck;
            self.queue(ci, &connect);
        }
        self.flush(ci, clock::now_ns());
    }

    fn on_readable(&mut self, ci: usize) {
        loop {
            let c = &mut self.conns[ci];
            let Some(s) = c.stream.as_mut() else { return };
            if c.state == ConnState::Connecting {
                return;
            }
            match s.read(&mut self.scratch) {
                Ok(0) => return self.fail(ci, "connection closed by the broker".into()),
                Ok(n) => {
                    c.rbuf.extend_from_slice(&self.scratch[..n]);
                    let now = clock::now_ns();
                    if !self.decode_all(ci, now) {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.fail(ci, format!("read: {e}")),
            }
        }
    }

    /// Decodes and handles every complete packet; false if the connection was closed.
    fn decode_all(&mut self, ci: usize, now: u64) -> bool {
        loop {
            let c = &mut self.conns[ci];
            match decode(&mut c.rbuf, Some(self.cfg.version), MAX_PACKET) {
                Ok(Some(p)) => {
                    self.handle(ci, p, now);
                    if self.conns[ci].state == ConnState::Closed {
                        return false;
                    }
                }
                Ok(None) => return true,
                Err(e) => {
                    self.fail(ci, format!("undecodable packet from the broker: {e:?}"));
                    return false;
                }
            }
        }
    }

    fn handle(&mut self, ci: usize, p: Packet, now: u64) {
        match p {
            Packet::ConnAck(a) => {
                if self.conns[ci].state != ConnState::AwaitConnAck {
                    return self.fail(ci, "unexpected CONNACK".into());
                }
                if a.code != 0 {
                    return self.fail(ci, format!("CONNACK refused with code {:#04x}", a.code));
                }
                let filters = &self.plan.clients[self.conns[ci].spec].subscriptions;
                if filters.is_empty() {
                    self.set_ready(ci, now);
                } else {
                    let opts = SubOptions {
                        qos: self.cfg.qos,
                        ..Default::default()
                    };
                    let sub = Packet::Subscribe(Subscribe {
                        packet_id: 1,
                        filters: filters
                            .iter()
                            .map(|f| (ByteStr::from(f.as_str()), opts))
                            .collect(),
                        properties: Properties::default(),
                    });
                    self.conns[ci].state = ConnState::AwaitSubAck;
                    self.queue(ci, &sub);
                }
            }
            Packet::SubAck(a) => {
                if self.conns[ci].state != ConnState::AwaitSubAck {
                    return self.fail(ci, "unexpected SUBACK".into());
                }
                if let Some(bad) = a.codes.iter().find(|&&c| c >= 0x80) {
                    return self.fail(ci, format!("SUBACK refused with code {bad:#04x}"));
                }
                if a.codes.iter().any(|&c| c < self.cfg.qos as u8) {
                    return self.fail(
                        ci,
                        format!(
                            "SUBACK granted QoS {:?} below the requested {}",
                            a.codes, self.cfg.qos as u8
                        ),
                    );
                }
                self.set_ready(ci, now);
            }
            Packet::Publish(p) => self.on_publish(ci, p, now),
            Packet::PubAck(r) => self.on_out_ack(ci, r, OutFlow::Qos1Sent, now),
            Packet::PubRec(r) => {
                let refused = r.reason >= 0x80;
                let Some(pb) = self.conns[ci].publisher.as_mut() else {
                    return self.fail(ci, "PUBREC to a subscriber".into());
                };
                match pb.inflight.get_mut(&r.packet_id) {
                    Some(f @ OutFlow::Qos2Sent) if !refused => {
                        *f = OutFlow::Released;
                        self.queue(ci, &Packet::PubRel(PubResp::new(r.packet_id)));
                    }
                    Some(OutFlow::Qos2Sent) => self.on_out_ack(ci, r, OutFlow::Qos2Sent, now),
                    Some(OutFlow::Released) => {
                        self.queue(ci, &Packet::PubRel(PubResp::new(r.packet_id)))
                    }
                    _ => self.fail(ci, format!("PUBREC for unknown packet id {}", r.packet_id)),
                }
            }
            Packet::PubComp(r) => self.on_out_ack(ci, r, OutFlow::Released, now),
            Packet::PubRel(r) => {
                self.conns[ci].qos2_in.remove(&r.packet_id);
                self.queue(ci, &Packet::PubComp(PubResp::new(r.packet_id)));
            }
            Packet::PingResp => {}
            Packet::Disconnect(d) => self.fail(
                ci,
                format!("DISCONNECT from the broker, reason {:#04x}", d.reason),
            ),
            other => self.fail(ci, format!("unexpected {} from the broker", other.name())),
        }
    }

    fn set_ready(&mut self, ci: usize, now: u64) {
        self.conns[ci].state = ConnState::Ready;
        self.connecting = self.connecting.saturating_sub(1);
        self.shared.ready.fetch_add(1, Relaxed);
        if self.timeline.is_some() {
            // Only possible if set-up raced the timeline; schedule it like the others.
            if let (Some(tl), Some(p)) = (self.timeline, self.conns[ci].publisher.as_mut()) {
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

    /// A PUBACK, PUBREC (refusal) or PUBCOMP ends one of our flows.
    fn on_out_ack(&mut self, ci: usize, r: PubResp, expect: OutFlow, now: u64) {
        let Some(pb) = self.conns[ci].publisher.as_mut() else {
            return self.fail(ci, "ack to a subscriber".into());
        };
        if pb.inflight.get(&r.packet_id) != Some(&expect) {
            return self.fail(
                ci,
                format!("{expect:?} does not match packet id {}", r.packet_id),
            );
        }
        pb.inflight.remove(&r.packet_id);
        pb.window.release();
        // 0x10 (no matching subscribers) is a success code in MQTT 5.
        if r.reason >= 0x80 {
            self.counters.refused += 1;
        } else {
            self.counters.acked += 1;
        }
        if !pb.in_heap {
            self.pump(ci, now);
        }
    }

    /// A message for one of our subscribers: ack it, then count it.
    fn on_publish(&mut self, ci: usize, p: Publish, now: u64) {
        let c = &mut self.conns[ci];
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.queue(ci, &Packet::PubAck(PubResp::new(p.packet_id))),
            QoS::ExactlyOnce => {
                // Delivered at PUBLISH; a resend of the same id before PUBREL is the same message.
                let first = c.qos2_in.insert(p.packet_id);
                self.queue(ci, &Packet::PubRec(PubResp::new(p.packet_id)));
                if !first {
                    return;
                }
            }
        }
        let Some(stamp) = Stamp::read(&p.payload) else {
            self.counters.foreign += 1;
            return;
        };
        if stamp.publisher as usize >= self.plan.publishers.len() {
            self.counters.foreign += 1;
            return;
        }
        if self.plan.pace == Pace::Max {
            self.shared.delivered[stamp.publisher as usize].fetch_add(1, Relaxed);
        }
        let Some(tl) = self.timeline else {
            self.counters.received_unmeasured += 1;
            return;
        };
        if !tl.measured(stamp.intended_ns) {
            self.counters.received_unmeasured += 1;
            return;
        }
        let c = &mut self.conns[ci];
        if c.seen.entry(stamp.publisher).or_default().insert(stamp.seq) {
            self.counters.received += 1;
            self.latency.record(now.saturating_sub(stamp.intended_ns));
        } else {
            self.counters.duplicates += 1;
        }
    }

    /// Sends every message of publisher `ci` that is due at `now`, as far as the window,
    /// the socket and (max mode) the end-to-end window allow; then files the publisher under
    /// what it waits for: the heap (a future due time), an ack, the socket, or the e2e retry.
    fn pump(&mut self, ci: usize, now: u64) {
        let tl = match self.timeline {
            Some(tl) => tl,
            None => return,
        };
        if self.conns[ci].state != ConnState::Ready {
            return;
        }
        let qos = self.cfg.qos;
        let window = self.cfg.window as u64;
        loop {
            let c = &mut self.conns[ci];
            let Some(pb) = c.publisher.as_mut() else {
                return;
            };
            let Some(sched) = pb.sched.as_mut() else {
                return;
            };
            if c.wbuf.len() >= WBUF_HIGH {
                return; // flush() pumps again when the socket drains
            }
            if qos != QoS::AtMostOnce && !pb.window.has_room() {
                return; // an ack pumps again
            }
            if sched.pace() == Pace::Max && pb.fanout > 0 {
                let delivered = self.shared.delivered[pb.id as usize].load(Relaxed);
                let outstanding = pb.e2e_owed.saturating_sub(delivered + pb.e2e_forgiven);
                if outstanding >= window * pb.fanout as u64 {
                    let since = *pb.e2e_blocked_since.get_or_insert(now);
                    if now - since > E2E_FORGIVE_NS {
                        pb.e2e_forgiven += outstanding;
                        pb.e2e_blocked_since = None;
                        continue;
                    }
                    if !self.e2e_blocked.contains(&ci) {
                        self.e2e_blocked.push(ci);
                    }
                    return;
                }
                pb.e2e_blocked_since = None;
            }
            let Some((seq, intended)) = sched.take_due(now) else {
                break;
            };
            // Build the payload: stamp + filler. One copy of `payload` bytes per message.
            let mut body = BytesMut::with_capacity(pb.filler.len());
            body.extend_from_slice(&pb.filler);
            Stamp {
                seq,
                publisher: pb.id,
                intended_ns: intended,
            }
            .write(&mut body);
            let packet_id = if qos == QoS::AtMostOnce {
                0
            } else {
                let pid = pb.alloc_pid();
                let flow = if qos == QoS::AtLeastOnce {
                    OutFlow::Qos1Sent
                } else {
                    OutFlow::Qos2Sent
                };
                pb.inflight.insert(pid, flow);
                pb.window.acquire();
                pid
            };
            pb.e2e_owed += pb.fanout as u64;
            let fanout = pb.fanout as u64;
            let publish = Packet::Publish(Publish {
                dup: false,
                qos,
                retain: false,
                topic: pb.topic.clone(),
                packet_id,
                properties: Properties::default(),
                payload: body.freeze(),
            });
            self.queue(ci, &publish);
            self.counters.published += 1;
            if tl.measured(intended) {
                self.counters.published_measured += 1;
                self.counters.expected += fanout;
                self.send_lag.record(now.saturating_sub(intended));
            }
        }
        // Not blocked: wait for the next due time, or finish.
        let c = &mut self.conns[ci];
        let Some(pb) = c.publisher.as_mut() else {
            return;
        };
        let Some(sched) = pb.sched.as_ref() else {
            return;
        };
        let next = match sched.pace() {
            Pace::Fixed { .. } => sched.next_due(),
            // Before the start: wait for it; after the end: done. (In between, the loop above
            // only stops when blocked, and then returned early.)
            Pace::Max if now >= tl.measure_end_ns => None,
            Pace::Max => sched.next_due(),
        };
        match next {
            Some(due) if !pb.in_heap => {
                pb.in_heap = true;
                self.heap.push(std::cmp::Reverse((due, ci)));
            }
            Some(_) => {}
            None if !pb.done => {
                pb.done = true;
                self.shared.publishers_done.fetch_add(1, Relaxed);
            }
            None => {}
        }
    }

    /// Pumps every publisher whose due time has come.
    fn run_due(&mut self, now: u64) {
        // Take the due ones first: a publisher that pump() files again goes to the next turn,
        // so this loop always ends.
        let mut due = Vec::new();
        while let Some(&std::cmp::Reverse((t, ci))) = self.heap.peek() {
            if t > now {
                break;
            }
            self.heap.pop();
            if let Some(p) = self.conns[ci].publisher.as_mut() {
                p.in_heap = false;
            }
            due.push(ci);
        }
        for ci in due {
            self.pump(ci, now);
        }
    }

    /// Max mode: retries publishers whose end-to-end window was full (deliveries may have
    /// arrived on another thread since).
    fn retry_e2e(&mut self, now: u64) {
        if self.e2e_blocked.is_empty() {
            return;
        }
        for ci in std::mem::take(&mut self.e2e_blocked) {
            self.pump(ci, now);
        }
    }

    fn flush_dirty(&mut self, now: u64) {
        for ci in std::mem::take(&mut self.dirty) {
            self.conns[ci].dirty = false;
            self.flush(ci, now);
        }
    }

    /// Writes what is buffered until the socket would block; pumps a publisher that was
    /// held back by a full buffer once it drains.
    fn flush(&mut self, ci: usize, now: u64) {
        let c = &mut self.conns[ci];
        if c.state == ConnState::Connecting || c.state == ConnState::Closed {
            return;
        }
        let was_full = c.wbuf.len() >= WBUF_HIGH;
        let Some(s) = c.stream.as_mut() else { return };
        while !c.wbuf.is_empty() {
            match s.write(&c.wbuf) {
                Ok(0) => return self.fail(ci, "write returned 0".into()),
                Ok(n) => {
                    c.wbuf.advance(n);
                    c.last_write_ns = now;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.fail(ci, format!("write: {e}")),
            }
        }
        if was_full && c.wbuf.len() < WBUF_HIGH && c.publisher.as_ref().is_some_and(|p| !p.in_heap)
        {
            self.pump(ci, now);
        }
    }

    /// Once a second: keep-alive pings for idle connections.
    fn housekeeping(&mut self, now: u64) {
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
    fn publish_live_counters(&mut self) {
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
    fn finish(&mut self) {
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
