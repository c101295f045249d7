//! Broker configuration: the typed [`Config`] and its mosquitto.conf-syntax parser.
//!
//! midge reads mosquitto.conf so that a mosquitto user can point it at an existing file.
//! Every error names the file, the line and the problem (`FILE:LINE: problem`), and start-up
//! stops on the first one: a broker that silently ignores a line it did not understand is
//! running a configuration nobody wrote.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Where log lines go (`log_dest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogDest {
    Stdout,
    Stderr,
    /// `log_dest none`.
    None,
}

/// One `listener` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Address and port to bind. Port 0 binds an ephemeral port (tests).
    pub addr: SocketAddr,
    /// `allow_anonymous` for this listener when `per_listener_settings` is on; otherwise the
    /// global value applies. `None` = not said.
    pub allow_anonymous: Option<bool>,
}

/// The whole configuration, with mosquitto's defaults where mosquitto has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Listeners. Empty after parsing means "the default": 127.0.0.1:1883 and [::1]:1883.
    pub listeners: Vec<Listener>,
    /// Number of shards (event-loop threads); `None` = one per core.
    pub shards: Option<usize>,
    /// `allow_anonymous` (global). `None` = not said: anonymous allowed on loopback only.
    pub allow_anonymous: Option<bool>,
    /// `max_keepalive` (seconds): clients asking for more (or 0) are held to this. Default 65535.
    pub max_keepalive: u16,
    /// `max_inflight_messages`: outgoing QoS 1/2 messages in flight per client (0 = no limit).
    /// Default 20, as mosquitto.
    pub max_inflight_messages: u16,
    /// `max_queued_messages`: QoS 1/2 messages queued per client beyond the inflight window
    /// (0 = no limit). Default 1000, as mosquitto.
    pub max_queued_messages: usize,
    /// `max_queued_bytes` (0 = no limit).
    pub max_queued_bytes: usize,
    /// `max_packet_size`: largest packet accepted from a client, in bytes (0 = protocol max).
    pub max_packet_size: u32,
    /// `message_size_limit`: largest PUBLISH payload accepted (0 = no limit).
    pub message_size_limit: u32,
    /// `retain_available`.
    pub retain_available: bool,
    /// `log_dest`.
    pub log_dest: LogDest,
    /// `log_type` values; empty = mosquitto's default (error, warning, notice, information).
    pub log_types: Vec<String>,
    /// The file this came from, if any (for messages).
    pub source: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listeners: Vec::new(),
            shards: None,
            allow_anonymous: None,
            max_keepalive: 65535,
            max_inflight_messages: 20,
            max_queued_messages: 1000,
            max_queued_bytes: 0,
            max_packet_size: 0,
            message_size_limit: 0,
            retain_available: true,
            log_dest: LogDest::Stderr,
            log_types: Vec::new(),
            source: None,
        }
    }
}
