//! The client engine: executes a [`Plan`](crate::scenario::Plan) against one broker address
//! (or two: publishers on one, subscribers on another bridged to it, `EngineConfig::sub_addr`).
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
//!
//! Layout: `driver` (the controller thread: spawn, phases, merge), `worker` (a worker's state
//! and event loop), `connection` (connect, close, buffered I/O), `publish` (the open-loop
//! schedule and windows), `receive` (acks and delivery measurement).

mod connection;
mod driver;
mod publish;
mod receive;
mod worker;
pub mod ws;

pub use driver::run;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use midge_codec::{ProtocolVersion, QoS};
use mio::Token;

use crate::stats::{Counters, LatencyHistogram};

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
    /// MQTT over TCP or over WebSocket.
    pub transport: ws::Transport,
    /// Connect over TLS with this client configuration.
    pub tls: Option<crate::tls::ClientTls>,
    /// Subscribers connect to this broker instead of the publishers' (one bridged to it):
    /// what is measured is then the way through the bridge.
    pub sub_addr: Option<SocketAddr>,
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
