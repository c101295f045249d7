//! How a client session connects: what goes into its CONNECT and the bounds it keeps.

use std::time::Duration;

use bytes::Bytes;

use crate::protocol::{ProtocolVersion, Will};

/// How the session connects.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// 3.1.1 or 5.0 (3.1 works too: the codec knows it).
    pub version: ProtocolVersion,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<Bytes>,
    /// Seconds; 0 = no keep-alive. A 5.0 server may replace it (Server Keep Alive).
    pub keep_alive: u16,
    /// Clean Session (3.1.1) / Clean Start (5.0).
    pub clean_start: bool,
    /// Outgoing QoS 1/2 messages not yet acknowledged; for 5.0 also the Receive Maximum sent
    /// in CONNECT, which bounds the peer's unreleased QoS 2 messages to us.
    pub max_inflight: u16,
    /// Largest packet accepted from the peer (announced in 5.0 CONNECT) and the bound of the
    /// read buffer.
    pub max_packet_size: u32,
    /// Time from the start of the connection (TCP and TLS included) to CONNACK.
    pub connect_timeout: Duration,
    /// The will the server publishes if the connection ends without DISCONNECT (a bridge's
    /// notification "0").
    pub will: Option<Will>,
    /// Announce a bridge (3.x): the protocol level's top bit set, mosquitto's `try_private`,
    /// so that a mosquitto server neither echoes our own messages back nor clears their
    /// retain flag. Servers that refuse it answer "unacceptable protocol version".
    pub bridge: bool,
    /// The owner acknowledges each incoming QoS 1/2 PUBLISH itself
    /// ([`super::ClientSession::acknowledge`]) once the message is safe with it (a broker
    /// with persistence: once its store has it); false: acknowledged on receipt.
    pub manual_acks: bool,
}

impl SessionConfig {
    /// A clean session with keep-alive 60 s, 20 in flight and 1 MiB packets.
    pub fn new(version: ProtocolVersion, client_id: impl Into<String>) -> SessionConfig {
        SessionConfig {
            version,
            client_id: client_id.into(),
            username: None,
            password: None,
            keep_alive: 60,
            clean_start: true,
            max_inflight: 20,
            max_packet_size: 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            will: None,
            bridge: false,
            manual_acks: false,
        }
    }
}
