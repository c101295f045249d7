//! What a `connection NAME` block configures: one bridge to another broker (parsed by
//! `parse/bridge.rs`, run by `crate::bridge`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::protocol::{ProtocolVersion, QoS};

/// Which way a bridged topic flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the remote broker to this one.
    In,
    /// From this broker to the remote one.
    Out,
    Both,
}

impl Direction {
    pub fn is_in(self) -> bool {
        self != Direction::Out
    }
    pub fn is_out(self) -> bool {
        self != Direction::In
    }
}

/// One `topic PATTERN [in|out|both [QOS [LOCAL_PREFIX REMOTE_PREFIX]]]` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeTopic {
    /// The pattern (a filter; empty when the prefixes alone name the topic).
    pub pattern: String,
    pub direction: Direction,
    pub qos: QoS,
    pub local_prefix: String,
    pub remote_prefix: String,
}

impl BridgeTopic {
    /// The filter on this broker's side: local prefix + pattern.
    pub fn local_filter(&self) -> String {
        format!("{}{}", self.local_prefix, self.pattern)
    }
    /// The filter on the remote broker: remote prefix + pattern.
    pub fn remote_filter(&self) -> String {
        format!("{}{}", self.remote_prefix, self.pattern)
    }
}

/// One remote address: the name as written (for TLS, the name the certificate must carry)
/// and where it resolved at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeAddress {
    pub host: String,
    pub addr: SocketAddr,
}

/// `start_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartType {
    /// Connect at start-up and reconnect whenever the connection ends.
    Automatic,
    /// Connect at start-up; never reconnect.
    Once,
    /// Connect once `threshold` messages wait for the remote; disconnect after
    /// `idle_timeout` seconds without traffic.
    Lazy,
}

/// A bridge's TLS options (`bridge_cafile` turns TLS on).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BridgeTls {
    pub cafile: Option<PathBuf>,
    pub capath: Option<PathBuf>,
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    /// `bridge_tls_version`: the lowest version accepted (`tlsv1.2` or `tlsv1.3`).
    pub tls13_only: bool,
    /// `bridge_alpn`: protocols offered in the handshake.
    pub alpn: Vec<String>,
}

/// One `connection` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    pub name: String,
    /// `FILE:LINE` of the `connection` line (for messages).
    pub source: String,
    /// Tried in order (failover), or in turn with `round_robin true`.
    pub addresses: Vec<BridgeAddress>,
    pub round_robin: bool,
    pub topics: Vec<BridgeTopic>,
    pub protocol: ProtocolVersion,
    /// `cleansession` (default false, as mosquitto).
    pub clean_session: bool,
    /// `local_cleansession` (default: `cleansession`): whether the bridge's local session,
    /// with what it still owes the remote, starts empty at each start instead of being
    /// kept in the store (`persistence true`).
    pub local_clean_session: bool,
    pub remote_clientid: String,
    pub local_clientid: String,
    pub remote_username: Option<String>,
    pub remote_password: Option<String>,
    /// `local_username`: whose `acl_file` rules apply to the bridge's local side (read: what
    /// it sends out; write: what it brings in). `local_password` is accepted and not checked.
    pub local_username: Option<String>,
    pub keepalive: u16,
    /// `restart_timeout BASE [CAP]` in seconds: constant with no cap, else jittered
    /// exponential backoff from BASE up to CAP.
    pub restart_base: u32,
    pub restart_cap: Option<u32>,
    pub try_private: bool,
    pub notifications: bool,
    pub notifications_local_only: bool,
    pub notification_topic: String,
    pub outgoing_retain: bool,
    pub start_type: StartType,
    /// `threshold` (lazy): messages waiting that start the connection (default 10).
    pub threshold: u32,
    /// `idle_timeout` (lazy): seconds without traffic that end it (default 60).
    pub idle_timeout: u32,
    /// 0 = the protocol's maximum.
    pub max_packet_size: u32,
    pub attempt_unsubscribe: bool,
    /// `bridge_bind_address`: the local address to connect from.
    pub bind_address: Option<IpAddr>,
    pub tls: Option<BridgeTls>,
}

impl BridgeConfig {
    /// The same bridge with the same settings, wherever its block is in the file (a reload
    /// leaves such a bridge alone).
    pub fn same_settings(&self, other: &BridgeConfig) -> bool {
        let unplaced = |c: &BridgeConfig| BridgeConfig {
            source: String::new(),
            ..c.clone()
        };
        unplaced(self) == unplaced(other)
    }
}
