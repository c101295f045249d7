//! loadgen: drives MQTT brokers with identical scenarios and writes comparable results.
//!
//! # Layout
//! - [`clock`]: the run-wide monotonic epoch and the payload stamp (sequence number,
//!   publisher id, *intended* send time) every measured PUBLISH carries.
//! - [`schedule`]: the open-loop schedule (when each message is due, whatever the broker does)
//!   and the bounded inflight window; pure, so the "no coordinated omission" property is tested
//!   without sockets.
//! - [`signal`]: how long a run must measure (messages, broker CPU) before its figures count.
//! - [`stats`]: HDR latency histograms, loss/duplicate bookkeeping, per-run counters.
//! - [`scenario`]: a scenario (fan-in, fan-out, p2p, IoT mix) turned into a [`scenario::Plan`]:
//!   the list of clients with their subscriptions and publications.
//! - [`engine`]: the mio client engine that executes a plan: many connections per worker
//!   thread, one `Poll` each, full QoS 0/1/2 flows.
//! - [`procstat`]: CPU and memory of a process from `/proc`, and of loadgen itself.
//! - [`progress`]: the live progress line's position and ETA over a suite.
//! - [`broker`]: the broker table; starts, identifies and stops brokers.
//! - [`runner`]: one run = one scenario against one broker, sampled and summarised.
//! - [`suite`]: the suite file (a matrix of cells) and its expansion into runs.
//! - [`report`]: JSON per run, `summary.md`, SVG charts.
//! - [`storm`]: the connect-storm scenario (`loadgen storm`) and its bystander.
//! - [`tls`]: the TLS client (`--tls`), its stream, and certificates for managed brokers.
//! - [`cli`]: the command line.

pub mod broker;
pub mod cli;
pub mod clock;
pub mod engine;
pub mod procstat;
pub mod progress;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod schedule;
pub mod signal;
pub mod stats;
pub mod storm;
pub mod suite;
pub mod tls;
