//! midge: an MQTT broker built on sharded, single-threaded mio event loops.
pub mod config;
pub mod protocol;

/// Runs the broker with `config` until SIGINT/SIGTERM. Blocks the calling thread.
pub fn run(_config: config::Config) -> std::io::Result<()> {
    Err(std::io::Error::other("broker not written yet"))
}
