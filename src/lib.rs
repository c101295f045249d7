//! midge: an MQTT broker built on sharded, single-threaded mio event loops.
pub mod config;
pub mod protocol;
