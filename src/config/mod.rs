//! Broker configuration: the typed [`Config`] and its mosquitto.conf-syntax parser.
//!
//! midge reads mosquitto.conf so that a mosquitto user can point it at an existing file.
//! Every error names the file, the line and the problem (`FILE:LINE: problem`), and start-up
//! stops on the first one: a broker that silently ignores a line it did not understand is
//! running a configuration nobody wrote.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::reactor::IoBackend;

mod bridge;
pub mod ciphers;
pub mod mosquitto_options;
mod parse;
mod plugin;

pub use bridge::{BridgeAddress, BridgeConfig, BridgeTls, BridgeTopic, Direction, StartType};
pub use parse::ConfigError;
pub use plugin::{PluginSource, PluginSpec};

/// `max_packet_size` when not said: 1 MiB.
pub const DEFAULT_MAX_PACKET_SIZE: u32 = 1024 * 1024;

pub use mosquitto_options::{ClientOptions, HostOptions, LogDests};

/// One `listener` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Address and port to bind. Port 0 binds an ephemeral port (tests).
    pub addr: SocketAddr,
    /// `allow_anonymous` for this listener when `per_listener_settings` is on; otherwise the
    /// global value applies. `None` = not said.
    pub allow_anonymous: Option<bool>,
    /// TLS for this listener (`certfile` and `keyfile` said in its block); `None` = plain TCP.
    pub tls: Option<TlsSettings>,
    /// `password_file` of this listener's block (only with `per_listener_settings true`).
    pub password_file: Option<PathBuf>,
    /// `acl_file` of this listener's block (only with `per_listener_settings true`).
    pub acl_file: Option<PathBuf>,
    /// `protocol websockets`: MQTT over WebSocket (over TLS when [`Listener::tls`] is set:
    /// wss); `None` = MQTT straight over the socket.
    pub websockets: Option<WebSocketSettings>,
    /// `bind_interface`: the listener accepts only through this network interface
    /// (SO_BINDTODEVICE), as mosquitto.
    pub bind_interface: Option<String>,
    /// `proxy_protocol true` (midge) or `enable_proxy_protocol 1|2` (mosquitto): every
    /// connection starts with a PROXY protocol header naming the client; `None` = none may.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// `mount_point`: a prefix put before every topic and filter of this listener's clients
    /// (and taken off what they receive), so they live in a subtree of their own; `None` =
    /// none. See `shard::mount`.
    pub mount_point: Option<String>,
}

/// The PROXY protocol header a listener requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyProtocol {
    /// Version 1 (text) is accepted.
    pub v1: bool,
    /// Version 2 (binary) is accepted.
    pub v2: bool,
    /// `proxy_protocol_v2_require_tls`: the header must say the client used TLS to the proxy.
    pub require_tls: bool,
}

impl ProxyProtocol {
    /// `proxy_protocol true`: either version.
    pub const ANY: ProxyProtocol = ProxyProtocol {
        v1: true,
        v2: true,
        require_tls: false,
    };
}

/// A WebSocket listener's own options.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WebSocketSettings {
    /// `http_dir`: files served to a plain HTTP GET (as mosquitto does); `None` = none.
    pub http_dir: Option<PathBuf>,
    /// `websockets_trust_x_forwarded_for`: the last `X-Forwarded-For` entry of the upgrade
    /// request names the client (off: the header is ignored).
    pub trust_x_forwarded_for: bool,
}

/// `websockets_headers_size` when not said (or 0): browsers send 400 to 1500 bytes of
/// headers, more with cookies; libwebsockets' 1024 refuses some of them.
pub const DEFAULT_WEBSOCKETS_HEADERS_SIZE: usize = 4096;

/// `tls_version`: the lowest TLS version a listener accepts (mosquitto's meaning: `tlsv1.2`
/// allows 1.2 and 1.3). rustls has nothing older than 1.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3 (the default, as mosquitto's).
    #[default]
    V12,
    /// TLS 1.3 only.
    V13,
}

/// A listener's TLS options, as mosquitto names them. Files are read when the broker starts
/// (and on SIGHUP), not when the config is parsed, so `midge check` works on another machine.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsSettings {
    /// `certfile`: the server certificate chain (PEM), leaf first.
    pub certfile: PathBuf,
    /// `keyfile`: the server's private key (PEM: PKCS#8, PKCS#1 or SEC1, unencrypted).
    pub keyfile: PathBuf,
    /// `cafile`: CA certificates (PEM) that client certificates must chain to.
    pub cafile: Option<PathBuf>,
    /// `capath`: a directory of CA certificate files (PEM), like `cafile`.
    pub capath: Option<PathBuf>,
    /// `require_certificate`: clients must present a certificate that chains to `cafile` /
    /// `capath`; without it no client certificate is asked for (as mosquitto).
    pub require_certificate: bool,
    /// `use_identity_as_username`: the client certificate's Common Name is the username.
    pub use_identity_as_username: bool,
    /// `use_subject_as_username`: the certificate's whole subject (RFC 2253) is the username.
    pub use_subject_as_username: bool,
    /// `tls_version`.
    pub min_version: TlsVersion,
    /// `ciphers`: TLS 1.2 suites (IANA names, normalised from IANA or OpenSSL spelling);
    /// `None` = rustls' defaults.
    pub ciphers: Option<Vec<String>>,
    /// `ciphers_tls1.3`: TLS 1.3 suites (IANA names); `None` = rustls' defaults.
    pub ciphers_tls13: Option<Vec<String>>,
    /// `crlfile`: certificate revocation lists (PEM) checked for client certificates, the
    /// leaf only and a CRL required for its issuer, as OpenSSL's `X509_V_FLAG_CRL_CHECK`.
    pub crlfile: Option<PathBuf>,
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
    /// `memory_limit`: payload bytes of QoS 1/2 messages held for delivery by all sessions
    /// together (0 = no limit); see `session::memory`.
    pub memory_limit: usize,
    /// `max_packet_size`: largest packet accepted from a client, in bytes (0 = the protocol
    /// maximum, 268435460). Default 1 MiB (EMQX's): a client may make the broker reserve this
    /// much for one packet, and few devices send more.
    pub max_packet_size: u32,
    /// `message_size_limit`: largest PUBLISH payload accepted (0 = no limit).
    pub message_size_limit: u32,
    /// `retain_available`.
    pub retain_available: bool,
    /// `sys_interval`: seconds between two publications of the `$SYS/broker/...` tree
    /// (default 10, as mosquitto; 0 = no `$SYS` tree).
    pub sys_interval: u16,
    /// `cluster_name` (midge): the cluster this node belongs to (default "midge").
    pub cluster_name: Option<String>,
    /// `cluster_node_id` (midge): this node's name in the cluster (default: the host name).
    pub cluster_node_id: Option<String>,
    /// `cluster_nats_url` (midge, repeatable): the NATS servers of the cluster. None: the
    /// node runs alone (no gateway thread, no cost).
    pub cluster_nats_urls: Vec<String>,
    /// `cluster_replicas` (midge): copies JetStream keeps of the cluster's streams (1-5,
    /// default 1; 3 with three NATS servers, so that one may fail).
    pub cluster_replicas: u8,
    /// `cluster_node_timeout` (midge): seconds without a heartbeat after which a node is
    /// taken as dead and its clients' wills are published by another (2-3600, default 10).
    pub cluster_node_timeout: u16,
    /// How the node authenticates to NATS and checks NATS's certificate
    /// (`cluster_nats_user`/`_password`, `_token`, `_credentials`, `_cafile`, `_certfile`,
    /// `_keyfile`).
    pub cluster_nats_auth: crate::cluster::NatsAuth,
    /// `metrics_listener PORT [ADDRESS]` (midge): where the HTTP endpoint for Prometheus
    /// (`/metrics`) and the JSON `$SYS` tree (`/api/v1/systree`) listens. `None` (the default)
    /// = no endpoint; without an address it binds loopback only, since it has no authentication.
    pub metrics_listener: Option<std::net::SocketAddr>,
    /// `max_qos`: the highest QoS clients may publish or be granted (default 2).
    pub max_qos: u8,
    /// `max_topic_alias`: topic aliases an MQTT 5 client may use toward the broker
    /// (Topic Alias Maximum in CONNACK; default 10, as mosquitto).
    pub max_topic_alias: u16,
    /// `topic_alias_to_clients` (midge): use topic aliases toward MQTT 5 clients that accept
    /// them (default true).
    pub topic_alias_to_clients: bool,
    /// `response_information TEXT` (midge): sent in CONNACK to MQTT 5 clients that ask for it
    /// (Request Response Information 1), as the base of their response topics.
    pub response_information: Option<String>,
    /// `server_reference TEXT` (midge): where MQTT 5 clients should go instead; sent with
    /// DISCONNECT 0x9C (use another server) when the broker shuts down.
    pub server_reference: Option<String>,
    /// `websockets_headers_size`: most bytes of an HTTP request head (request line and
    /// headers) a WebSocket listener reads before answering 400 (global, as in mosquitto).
    pub websockets_headers_size: usize,
    /// `log_dest`: every destination said.
    pub log_dest: LogDests,
    /// `log_type` values; empty = mosquitto's default (error, warning, notice, information).
    pub log_types: Vec<String>,
    /// The file this came from, if any (for messages).
    pub source: Option<PathBuf>,
    /// `max_connections`: most clients connected at once; `None` = no limit (mosquitto's `-1`,
    /// its default). mosquitto counts it per listener; midge keeps the last value said and
    /// applies it to the whole broker, which is never looser than mosquitto.
    pub max_connections: Option<usize>,
    /// `connection_rate_limit N` (midge): new connections accepted per second, broker-wide
    /// (0 = no limit). A flood of connection attempts then costs an accept and a close each,
    /// never a CONNECT parse or a password check.
    pub connection_rate_limit: u32,
    /// `connect_timeout SECONDS` (midge): a connection must complete its CONNECT (TLS
    /// handshake included) within this time of being accepted, or it is closed; a client
    /// that trickles its CONNECT a byte at a time holds a socket no longer than this.
    /// Default 10; 0 = no limit.
    pub connect_timeout: u32,
    /// `max_connections_per_ip N` (midge): connections open at once from one IP address,
    /// broker-wide; the excess is closed at accept. Default 0 = no limit (benchmarks and NAT
    /// gateways open thousands from one address).
    pub max_connections_per_ip: u32,
    /// `read_buffer_growth BYTES` (midge): how far the read buffers of connections that send
    /// more than a buffer at a time may grow beyond their 4 KiB, summed over all connections,
    /// broker-wide (each shard gets an equal share). Bounds the memory busy publishers cost;
    /// 0 = read buffers never grow (more reads for bulk senders). Default 8 MiB.
    pub read_buffer_growth: usize,
    /// `shard_handoff true|false` (midge): a shard that queued messages for another shard
    /// that is asleep in `poll` delivers them itself, under the sleeper's lock, instead of
    /// waking it (see `shard::handoff`): at low rates a message then costs one loop's wake-up,
    /// not two. Busy shards never do it. Off when a C plugin is loaded (its per-shard hooks are
    /// promised their own shard's thread). Default true.
    pub shard_handoff: bool,
    /// `shard_dormancy true|false` (midge): under low load every shard but the first sleeps
    /// and the first runs their turns, so a message wakes one loop, as in a single-threaded
    /// broker; the sleepers are woken when the first gets busy (see `shard::dormancy`).
    /// epoll only; off when a C plugin is loaded. Default true.
    pub shard_dormancy: bool,
    /// `io_backend epoll|io_uring|auto` (midge): the kernel interface of the shards' loops
    /// (`reactor`). `auto` takes io_uring where the kernel allows it (not where a seccomp
    /// profile, as Docker's default, or `kernel.io_uring_disabled` forbids it), else epoll;
    /// `io_uring` refuses to start without it. The environment variable `MIDGE_IO_BACKEND`
    /// overrides it. Default epoll.
    pub io_backend: IoBackend,
    /// `max_topic_levels N` (midge): most levels (`/`-separated parts) a topic name or filter
    /// may have, in PUBLISH, will, SUBSCRIBE and UNSUBSCRIBE; beyond it the packet is refused
    /// as malformed and the connection closed, as mosquitto does. Default 200 (mosquitto's
    /// `TOPIC_HIERARCHY_LIMIT`): every level of a filter is a trie node, and no real topic tree
    /// comes near it.
    pub max_topic_levels: usize,
    /// `max_topic_length N` (midge): longest topic name or filter in bytes, refused like
    /// [`Config::max_topic_levels`]. Default 65535, the protocol's own maximum.
    pub max_topic_length: usize,
    /// `max_subscriptions_per_client N` (midge): filters one session may hold; a SUBSCRIBE
    /// beyond it gets a failure code for the extra filters (3.1.1 0x80, 5.0 0x97 quota
    /// exceeded). 0 = no limit. Default 10,000: a client with 100k filters held 140 MiB.
    pub max_subscriptions_per_client: usize,
    /// `per_listener_settings`: when true, `allow_anonymous` is read per listener
    /// ([`Listener::allow_anonymous`]) and the global [`Config::allow_anonymous`] stays `None`.
    pub per_listener_settings: bool,
    /// `password_file`: a mosquitto password file (`$6$`/`$7$` hashes), loaded by
    /// `auth::Auth::load`. midge applies it to every listener, even with
    /// `per_listener_settings true` (a warning says so).
    pub password_file: Option<PathBuf>,
    /// `acl_file`: a mosquitto ACL file, loaded by `auth::Auth::load`; global like
    /// [`Config::password_file`].
    pub acl_file: Option<PathBuf>,
    /// `persistence`: keep retained messages, persistent sessions and their queued QoS 1/2
    /// messages on disk (see `store`). Default false, as mosquitto.
    pub persistence: bool,
    /// `persistence_location`: the store's directory; `None` = the working directory (as
    /// mosquitto). See [`Config::persistence_dir`].
    pub persistence_location: Option<PathBuf>,
    /// `persistence_sync every-batch|os|interval MS` (midge): when a commit is durable.
    /// Default `every-batch`: a PUBACK/PUBREC is sent only after an fsync shared by the loop turn.
    pub persistence_sync: crate::store::SyncPolicy,
    /// Process options: pid file, user, log format (`pid_file`, `user`, `log_*`).
    pub host: HostOptions,
    /// Client options: client ids, outgoing QoS, in-flight bytes (`allow_zero_length_clientid`...).
    pub clients: ClientOptions,
    /// Warnings found while parsing (options accepted but not acted on yet), each already
    /// prefixed with `FILE:LINE:`. The parser cannot log them itself (logging is set up from the
    /// parsed config), so `main` logs them once the logger is up.
    pub warnings: Vec<String>,
    /// `connection` blocks: bridges to other brokers, in file order.
    pub bridges: Vec<BridgeConfig>,
    /// `plugin` / `global_plugin` / `auth_plugin` lines with their options, in file order
    /// (the order the chain asks them in).
    pub plugins: Vec<PluginSpec>,
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
            memory_limit: 0,
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            message_size_limit: 0,
            retain_available: true,
            sys_interval: 10,
            cluster_name: None,
            cluster_node_id: None,
            cluster_nats_urls: Vec::new(),
            cluster_replicas: 1,
            cluster_node_timeout: 10,
            cluster_nats_auth: Default::default(),
            metrics_listener: None,
            max_qos: 2,
            max_topic_alias: 10,
            topic_alias_to_clients: true,
            response_information: None,
            server_reference: None,
            websockets_headers_size: DEFAULT_WEBSOCKETS_HEADERS_SIZE,
            log_dest: LogDests::STDERR,
            log_types: Vec::new(),
            source: None,
            max_connections: None,
            connection_rate_limit: 0,
            connect_timeout: 10,
            max_connections_per_ip: 0,
            read_buffer_growth: 8 * 1024 * 1024,
            shard_handoff: true,
            shard_dormancy: true,
            io_backend: IoBackend::Epoll,
            max_topic_levels: 200,
            max_topic_length: 65535,
            max_subscriptions_per_client: 10000,
            per_listener_settings: false,
            password_file: None,
            acl_file: None,
            persistence: false,
            persistence_location: None,
            persistence_sync: crate::store::SyncPolicy::EveryBatch,
            host: HostOptions::default(),
            clients: ClientOptions::default(),
            warnings: Vec::new(),
            bridges: Vec::new(),
            plugins: Vec::new(),
        }
    }
}

impl Config {
    /// `connect_timeout` as a time limit (0: none).
    pub fn connect_time_limit(&self) -> std::time::Duration {
        match self.connect_timeout {
            0 => std::time::Duration::MAX,
            secs => std::time::Duration::from_secs(u64::from(secs)),
        }
    }

    /// Reads and parses the mosquitto.conf-syntax file at `path` (and any `include_dir`).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        parse::parse_file(path.as_ref())
    }

    /// Parses `text` as a mosquitto.conf-syntax file; `source_name` names it in messages.
    /// `include_dir` directories are read from disk, relative to the working directory (as
    /// mosquitto does).
    pub fn parse_str(text: &str, source_name: &str) -> Result<Config, ConfigError> {
        parse::parse_text(text, source_name)
    }

    /// The broker's limits on topic names and filters (`max_topic_levels`,
    /// `max_topic_length`), as the codec's [`TopicLimits`] checks them.
    ///
    /// Defined here rather than in the codec, which knows nothing of the broker's
    /// configuration.
    ///
    /// [`TopicLimits`]: crate::protocol::topic::TopicLimits
    pub fn topic_limits(&self) -> crate::protocol::topic::TopicLimits {
        crate::protocol::topic::TopicLimits {
            max_levels: self.max_topic_levels,
            max_length: self.max_topic_length,
        }
    }

    /// The store's directory when `persistence` is on: `persistence_location`, or the working
    /// directory when none was given.
    pub fn persistence_dir(&self) -> Option<PathBuf> {
        self.persistence.then(|| {
            self.persistence_location
                .clone()
                .unwrap_or_else(|| PathBuf::from("."))
        })
    }

    /// Applies `-p PORT`: every listener takes `port` (entries that become identical are
    /// merged); with no listener configured, the default ones become 127.0.0.1:`port` and
    /// [::1]:`port`.
    pub fn override_port(&mut self, port: u16) {
        if self.listeners.is_empty() {
            for ip in [
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ] {
                self.listeners.push(Listener {
                    addr: SocketAddr::new(ip, port),
                    allow_anonymous: None,
                    tls: None,
                    password_file: None,
                    acl_file: None,
                    websockets: None,
                    bind_interface: None,
                    proxy_protocol: None,
                    mount_point: None,
                });
            }
            return;
        }
        let mut merged: Vec<Listener> = Vec::with_capacity(self.listeners.len());
        for mut listener in self.listeners.drain(..) {
            listener.addr.set_port(port);
            if !merged.iter().any(|l| l.addr == listener.addr) {
                merged.push(listener);
            }
        }
        self.listeners = merged;
    }
}
