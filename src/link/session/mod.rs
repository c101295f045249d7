//! The client role of MQTT, as a pure state machine: no socket, no clock of its own.
//!
//! [`ClientSession`] is what the broker is when it connects out (a bridge): it sends CONNECT,
//! waits for CONNACK, subscribes, publishes QoS 0/1/2 with packet ids, answers every
//! acknowledgement flow in both directions and pings on keep-alive. Input is decoded packets
//! ([`ClientSession::handle`]) and the time ([`ClientSession::tick`]); output is packets to send
//! ([`ClientSession::take_output`]) and [`Event`]s for its owner. Everything it holds is
//! bounded: outgoing QoS 1/2 by the in-flight window, incoming QoS 2 ids by the receive
//! maximum it announces (3.1.1: by the 16-bit id space).
//!
//! One session lives for one connection; what outlives it while the server keeps the
//! session is passed on by the owner: outgoing flows by their packet ids
//! ([`ClientSession::publish_packet`], [`ClientSession::release`]), incoming QoS 2 ids as
//! [`Unreleased`] ([`ClientSession::take_unreleased`], [`ClientSession::resume_unreleased`]).

mod config;
mod event;
mod receive;
mod send;
mod unreleased;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use crate::protocol::reason::v5;
use crate::protocol::{ByteStr, Connect, Disconnect, Packet, Properties, ProtocolVersion, Publish};
pub use config::SessionConfig;
pub use event::{CloseReason, Event, SendError};
pub use unreleased::Unreleased;

/// An outgoing QoS 1/2 message waiting for its acknowledgement.
#[derive(Debug)]
enum Outgoing {
    /// QoS 1, PUBACK awaited; kept for resending with DUP.
    Qos1(Publish),
    /// QoS 2, PUBREC awaited; kept for resending.
    Qos2(Publish),
    /// QoS 2, PUBREL sent, PUBCOMP awaited.
    Released,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitingConnAck,
    Connected,
    Closed,
}

/// One client-role MQTT session over one connection. Single-threaded (its owner's loop).
#[derive(Debug)]
pub struct ClientSession {
    cfg: SessionConfig,
    state: State,
    out: VecDeque<Packet>,
    events: VecDeque<Event>,
    next_id: u16,
    /// SUBSCRIBE and UNSUBSCRIBE ids count down from the top, away from the publish ids an
    /// owner chooses itself ([`ClientSession::publish_packet`]), which count up.
    next_sub_id: u16,
    outgoing: HashMap<u16, Outgoing>,
    /// Incoming QoS 2 ids delivered and not yet released (PUBREL), each with whether its
    /// PUBREC may go out (with `manual_acks`, not before the owner's acknowledgement).
    incoming: HashMap<u16, bool>,
    /// SUBSCRIBE ids waiting for SUBACK.
    subscribing: HashSet<u16>,
    /// Our window: `max_inflight`, lowered by a 5.0 server's Receive Maximum.
    window: u16,
    /// The peer's Maximum Packet Size (5.0), 0 = the protocol's.
    peer_max_packet: u32,
    keep_alive: Duration,
    started: Instant,
    last_sent: Instant,
    ping_sent: Option<Instant>,
}

impl ClientSession {
    /// A session whose CONNECT is queued at once; `now` starts the CONNACK timer.
    pub fn new(cfg: SessionConfig, now: Instant) -> ClientSession {
        let mut properties = Properties::default();
        if cfg.version.is_v5() {
            properties.receive_maximum = Some(cfg.max_inflight.max(1));
            properties.maximum_packet_size = Some(cfg.max_packet_size);
        }
        let connect = Connect {
            version: cfg.version,
            clean_start: cfg.clean_start,
            keep_alive: cfg.keep_alive,
            client_id: ByteStr::from(cfg.client_id.as_str()),
            will: cfg.will.clone(),
            username: cfg.username.as_deref().map(ByteStr::from),
            password: cfg.password.clone(),
            properties,
        };
        let mut out = VecDeque::new();
        out.push_back(Packet::Connect(connect));
        ClientSession {
            window: cfg.max_inflight.max(1),
            keep_alive: Duration::from_secs(cfg.keep_alive.into()),
            cfg,
            state: State::AwaitingConnAck,
            out,
            events: VecDeque::new(),
            next_id: 1,
            next_sub_id: u16::MAX,
            outgoing: HashMap::new(),
            incoming: HashMap::new(),
            subscribing: HashSet::new(),
            peer_max_packet: 0,
            started: now,
            last_sent: now,
            ping_sent: None,
        }
    }

    /// The protocol version packets are encoded and decoded with.
    pub fn version(&self) -> ProtocolVersion {
        self.cfg.version
    }

    /// CONNECT carries mosquitto's bridge mark (3.x only: 5.0 has No Local instead).
    pub fn announces_bridge(&self) -> bool {
        self.cfg.bridge && !self.cfg.version.is_v5()
    }

    /// The largest packet accepted from the peer.
    pub fn max_packet_size(&self) -> u32 {
        self.cfg.max_packet_size
    }

    /// CONNACK accepted and the session not closed.
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Outgoing QoS 1/2 messages not yet acknowledged.
    pub fn inflight(&self) -> usize {
        self.outgoing.len()
    }

    /// The unreleased incoming QoS 2 ids, for the session on the owner's next connection
    /// (call it once this one is closed; the session holds none after it).
    pub fn take_unreleased(&mut self) -> Unreleased {
        Unreleased(std::mem::take(&mut self.incoming))
    }

    /// Holds the unreleased incoming QoS 2 ids of the session on the previous connection, so
    /// that the server's resends are not delivered twice. Call it before CONNACK: a CONNACK
    /// without session present drops them (the server starts over), and a clean session
    /// never takes them. At most [`ClientSession::incoming_limit`] are kept.
    pub fn resume_unreleased(&mut self, held: Unreleased) {
        if self.cfg.clean_start || self.state != State::AwaitingConnAck {
            return;
        }
        let limit = self.incoming_limit();
        self.incoming.extend(
            held.0
                .into_iter()
                .take(limit.saturating_sub(self.incoming.len())),
        );
    }

    /// How many incoming QoS 2 messages may be unreleased at once: the Receive Maximum
    /// announced in CONNECT (5.0), the id space (3.x, which has no such limit).
    fn incoming_limit(&self) -> usize {
        match self.cfg.version.is_v5() {
            true => usize::from(self.cfg.max_inflight.max(1)),
            false => usize::from(u16::MAX),
        }
    }

    /// The packets to send, in order. `now` is when they leave (for keep-alive).
    pub fn take_output(&mut self, now: Instant) -> impl Iterator<Item = Packet> + '_ {
        if !self.out.is_empty() {
            self.last_sent = now;
        }
        self.out.drain(..)
    }

    /// The next event for the owner.
    pub fn next_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// How many outgoing QoS 1/2 messages may be in flight: `max_inflight`, lowered by a 5.0
    /// server's Receive Maximum once connected.
    pub fn window(&self) -> u16 {
        self.window
    }

    /// Queues DISCONNECT and ends the session.
    pub fn disconnect(&mut self) {
        if self.state == State::Connected {
            self.out
                .push_back(Packet::Disconnect(Disconnect::default()));
        }
        self.close(CloseReason::Local);
    }

    /// The connection under the session ended or failed.
    pub fn connection_lost(&mut self, why: String) {
        self.close(CloseReason::Gone(why));
    }

    /// Timers: the CONNACK timeout, and keep-alive (PINGREQ after `keep_alive` without
    /// sending; the session ends when its PINGRESP does not come within another one).
    pub fn tick(&mut self, now: Instant) {
        match self.state {
            State::Closed => {}
            State::AwaitingConnAck => {
                if now.saturating_duration_since(self.started) >= self.cfg.connect_timeout {
                    self.close(CloseReason::Protocol("no CONNACK in time".into()));
                }
            }
            State::Connected => {
                if self.keep_alive.is_zero() {
                    return;
                }
                match self.ping_sent {
                    Some(at) if now.saturating_duration_since(at) >= self.keep_alive => {
                        self.close(CloseReason::Protocol(
                            "no PINGRESP within keep-alive".into(),
                        ));
                    }
                    Some(_) => {}
                    None if now.saturating_duration_since(self.last_sent) >= self.keep_alive => {
                        self.out.push_back(Packet::PingReq);
                        self.ping_sent = Some(now);
                    }
                    None => {}
                }
            }
        }
    }

    /// When [`ClientSession::tick`] next has something to do (for a poll timeout).
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.state {
            State::Closed => None,
            State::AwaitingConnAck => Some(self.started + self.cfg.connect_timeout),
            State::Connected if self.keep_alive.is_zero() => None,
            State::Connected => Some(match self.ping_sent {
                Some(at) => at + self.keep_alive,
                None => self.last_sent + self.keep_alive,
            }),
        }
    }

    /// The peer broke the protocol (also for a packet that does not decode): DISCONNECT
    /// with Protocol Error (5.0) and end the session.
    pub fn protocol_error(&mut self, why: String) {
        if self.cfg.version.is_v5() && self.state == State::Connected {
            self.out.push_back(Packet::Disconnect(Disconnect {
                reason: v5::PROTOCOL_ERROR,
                properties: Properties::default(),
            }));
        }
        self.close(CloseReason::Protocol(why));
    }

    fn close(&mut self, why: CloseReason) {
        if self.state != State::Closed {
            self.state = State::Closed;
            self.events.push_back(Event::Closed(why));
        }
    }
}

#[cfg(test)]
mod tests;
