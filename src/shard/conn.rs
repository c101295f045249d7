//! One client connection as its shard sees it: socket, buffers, protocol state, timers.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mio::net::TcpStream;

use crate::protocol::{ByteStr, ProtocolVersion};

/// Initial capacity of a connection's read and write buffers. Small on purpose: 10k idle
/// connections must stay cheap; buffers grow with the traffic of the busy ones.
pub const INITIAL_BUFFER: usize = 4096;

/// Where a connection stands in the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// Accepted; the first packet must be CONNECT [MQTT-3.1.0-1].
    AwaitConnect,
    /// CONNACK sent; attached to the session in this slot of the shard's session slab.
    Active { session: usize },
}

/// A client connection. Shard thread only.
#[derive(Debug)]
pub struct Conn {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub rbuf: BytesMut,
    pub wbuf: BytesMut,
    pub state: ConnState,
    /// Known once CONNECT is decoded.
    pub version: Option<ProtocolVersion>,
    /// Client id, for log lines.
    pub client_id: Option<ByteStr>,
    /// Close the connection when nothing was received for this long (1.5 x keep-alive,
    /// [MQTT-3.1.2-24]); `None` for keep-alive 0.
    pub idle_limit: Option<Duration>,
    pub last_rx: Instant,
    /// Queued in the shard's dirty list for a flush at the end of the loop turn.
    pub dirty: bool,
    /// WRITABLE interest is registered (the last flush hit `WouldBlock`).
    pub want_write: bool,
    /// Whether the listener it came through allows anonymous clients.
    pub allow_anonymous: bool,
    /// MQTT 5 topic aliases set by the client (index = alias - 1), up to `max_topic_alias`.
    pub topic_aliases: Vec<Option<ByteStr>>,
    /// The client's Request Problem Information (MQTT 5): reason strings only when true.
    pub problem_info: bool,
}

impl Conn {
    /// A freshly accepted connection.
    pub fn new(stream: TcpStream, peer: SocketAddr, allow_anonymous: bool) -> Conn {
        Conn {
            stream,
            peer,
            rbuf: BytesMut::with_capacity(INITIAL_BUFFER),
            wbuf: BytesMut::with_capacity(INITIAL_BUFFER),
            state: ConnState::AwaitConnect,
            version: None,
            client_id: None,
            idle_limit: None,
            last_rx: Instant::now(),
            dirty: false,
            want_write: false,
            allow_anonymous,
            topic_aliases: Vec::new(),
            problem_info: true,
        }
    }

    /// The client id for logs, or the peer address before CONNECT.
    pub fn label(&self) -> String {
        match &self.client_id {
            Some(id) => id.to_string(),
            None => format!("<unknown> from {}", self.peer),
        }
    }
}
