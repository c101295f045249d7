//! midge: an MQTT broker built on sharded, single-threaded mio event loops.
//!
//! # Layout
//! - [`protocol`]: the pure codec (bytes <-> packets) for MQTT 3.1, 3.1.1 and 5.0.
//! - [`config`]: mosquitto.conf-syntax configuration with `FILE:LINE` errors.
//! - [`broker`]: start-up and shutdown: listeners, shards, threads.
//! - [`shard`]: one event loop per thread that owns its connections and sessions; cross-shard
//!   traffic goes through per-shard inboxes (`shard::inbox`).
//! - `handle`: what the broker does for each packet type (one file per family).
//! - [`session`]: the pure per-client state machine (QoS flows, inflight window, queue).
//! - [`index`]: the subscription trie, one replica per shard.
//! - [`retain`]: the retained-message store.
//! - [`message`]: a routed message, shared by every subscriber as one `Arc`.
//! - [`logging`]: one line per event, filtered by `log_type`, to `log_dest`.

pub mod broker;
pub mod config;
mod handle;
pub mod index;
pub mod logging;
pub mod message;
pub mod protocol;
pub mod retain;
pub mod session;
pub mod shard;

pub use broker::Broker;

/// Runs the broker with `config` until SIGINT/SIGTERM, then stops it cleanly. Blocks the
/// calling thread.
pub fn run(config: config::Config) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    let broker = Broker::start(config)?;
    if let Some(sig) = signals.forever().next() {
        log::info!("midge received signal {sig}, shutting down.");
    }
    broker.shutdown()?;
    log::info!("midge stopped.");
    Ok(())
}
