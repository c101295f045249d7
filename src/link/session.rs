//! The client role of MQTT, as a pure state machine: no socket, no clock of its own.
//!
//! [`ClientSession`] is what the broker is when it connects out (a bridge): it sends CONNECT,
//! waits for CONNACK, subscribes, publishes QoS 0/1/2 with packet ids, answers every
//! acknowledgement flow in both directions and pings on keep-alive. Input is decoded packets
//! ([`ClientSession::handle`]) and the time ([`ClientSession::tick`]); output is packets to send
//! ([`ClientSession::take_output`]) and [`Event`]s for its owner. Everything it holds is
//! bounded: outgoing QoS 1/2 by the in-flight window, incoming QoS 2 ids by the receive
//! maximum it announces (3.1.1: by the 16-bit id space).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::protocol::reason::{v3, v5};
use crate::protocol::{
    ByteStr, ConnAck, Connect, Disconnect, Packet, Properties, ProtocolVersion, PubResp, Publish,
    QoS, SubAck, SubOptions, Subscribe, Unsubscribe, Will,
};

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
        }
    }
}

/// What happened, for the session's owner. Inline like [`Packet`]: events pass through a
/// reused queue, and boxing the message would allocate per message.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// CONNACK accepted the connection.
    Connected { session_present: bool },
    /// A message from the peer (QoS 2: once, when its PUBLISH first arrives).
    Message(Publish),
    /// An outgoing QoS 1/2 message is done: PUBACK, PUBCOMP, or a PUBREC with a failure
    /// reason (5.0). `reason` is the peer's code (0 = success).
    Acked { packet_id: u16, reason: u8 },
    /// An outgoing QoS 2 message reached the peer (PUBREC, success): PUBREL is sent and the
    /// message must not be sent again, only released.
    Received { packet_id: u16 },
    /// SUBACK: one granted QoS or failure code per filter.
    Subscribed { packet_id: u16, codes: Vec<u8> },
    /// The session is over; nothing more will be sent or received.
    Closed(CloseReason),
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// CONNACK refused the connection with this return (3.x) or reason (5.0) code.
    Refused(u8),
    /// The peer sent DISCONNECT (5.0 reason code; 0 for 3.x, where servers never send it).
    Disconnected(u8),
    /// The peer closed the connection, or it failed (I/O or TLS error).
    Gone(String),
    /// The peer broke the protocol, or did not answer in time.
    Protocol(String),
    /// The owner asked for it ([`ClientSession::disconnect`]).
    Local,
}

/// Why a publish or subscribe was not accepted now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// CONNACK has not arrived yet, or the session is closed.
    NotConnected,
    /// The in-flight window is full: try again after an [`Event::Acked`].
    InflightFull,
    /// Larger than the peer's Maximum Packet Size (5.0), or than the protocol allows.
    TooLarge,
    /// The write buffer is over its bound (a slow peer): try again after it drains.
    Backpressure,
    /// The packet id the owner chose is 0 or already in a flow.
    IdInUse,
}

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
    /// Incoming QoS 2 ids delivered and not yet released (PUBREL).
    incoming: HashSet<u16>,
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
            incoming: HashSet::new(),
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

    /// Queues a PUBLISH. Returns its packet id (0 for QoS 0).
    pub fn publish(
        &mut self,
        topic: ByteStr,
        payload: Bytes,
        qos: QoS,
        retain: bool,
    ) -> Result<u16, SendError> {
        if self.state != State::Connected {
            return Err(SendError::NotConnected);
        }
        if qos != QoS::AtMostOnce && self.outgoing.len() >= usize::from(self.window) {
            return Err(SendError::InflightFull);
        }
        // Fixed header (5) + topic length (2) + packet id (2) + properties length (1).
        let size = 10 + topic.len() + payload.len();
        let limit = match self.peer_max_packet {
            0 => crate::protocol::MAX_PACKET_SIZE,
            max => max as usize,
        };
        if size > limit {
            return Err(SendError::TooLarge);
        }
        let packet_id = match qos {
            QoS::AtMostOnce => 0,
            _ => self.next_packet_id(),
        };
        let publish = Publish {
            dup: false,
            qos,
            retain,
            topic,
            packet_id,
            properties: Properties::default(),
            payload,
        };
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.outgoing
                    .insert(packet_id, Outgoing::Qos1(publish.clone()));
            }
            QoS::ExactlyOnce => {
                self.outgoing
                    .insert(packet_id, Outgoing::Qos2(publish.clone()));
            }
        }
        self.out.push_back(Packet::Publish(publish));
        Ok(packet_id)
    }

    /// Queues a PUBLISH whose packet id the owner chose (a bridge numbers its flows in its
    /// local session, which outlives the connection; a resent one carries DUP). The id must
    /// not be in flight here already.
    pub fn publish_packet(&mut self, publish: Publish) -> Result<(), SendError> {
        if self.state != State::Connected {
            return Err(SendError::NotConnected);
        }
        let id = publish.packet_id;
        if publish.qos != QoS::AtMostOnce {
            if id == 0 || self.outgoing.contains_key(&id) || self.subscribing.contains(&id) {
                return Err(SendError::IdInUse);
            }
            // A resend (DUP) was in flight already: a server that lowered its Receive
            // Maximum since still gets it, or the flow could never complete.
            if self.outgoing.len() >= usize::from(self.window) && !publish.dup {
                return Err(SendError::InflightFull);
            }
        }
        let limit = match self.peer_max_packet {
            0 => crate::protocol::MAX_PACKET_SIZE,
            max => max as usize,
        };
        if 10 + publish.topic.len() + publish.payload.len() > limit {
            return Err(SendError::TooLarge);
        }
        match publish.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.outgoing.insert(id, Outgoing::Qos1(publish.clone()));
            }
            QoS::ExactlyOnce => {
                self.outgoing.insert(id, Outgoing::Qos2(publish.clone()));
            }
        }
        self.out.push_back(Packet::Publish(publish));
        Ok(())
    }

    /// Queues the PUBREL of a QoS 2 flow that reached the peer on an earlier connection
    /// (its PUBCOMP then completes it here).
    pub fn release(&mut self, packet_id: u16) -> Result<(), SendError> {
        if self.state != State::Connected {
            return Err(SendError::NotConnected);
        }
        if packet_id == 0 || self.outgoing.contains_key(&packet_id) {
            return Err(SendError::IdInUse);
        }
        self.outgoing.insert(packet_id, Outgoing::Released);
        self.out.push_back(Packet::PubRel(PubResp::new(packet_id)));
        Ok(())
    }

    /// How many outgoing QoS 1/2 messages may be in flight: `max_inflight`, lowered by a 5.0
    /// server's Receive Maximum once connected.
    pub fn window(&self) -> u16 {
        self.window
    }

    /// Queues a SUBSCRIBE for these filters. Returns its packet id.
    pub fn subscribe(&mut self, filters: &[(ByteStr, QoS)]) -> Result<u16, SendError> {
        let filters: Vec<(ByteStr, SubOptions)> = filters
            .iter()
            .map(|(f, qos)| {
                (
                    f.clone(),
                    SubOptions {
                        qos: *qos,
                        ..SubOptions::default()
                    },
                )
            })
            .collect();
        self.subscribe_with(filters)
    }

    /// Queues an UNSUBSCRIBE for these filters (its UNSUBACK is not reported).
    pub fn unsubscribe(&mut self, filters: Vec<ByteStr>) -> Result<u16, SendError> {
        if self.state != State::Connected {
            return Err(SendError::NotConnected);
        }
        let packet_id = self.next_sub_packet_id();
        self.out.push_back(Packet::Unsubscribe(Unsubscribe {
            packet_id,
            filters,
            properties: Properties::default(),
        }));
        Ok(packet_id)
    }

    /// Queues a SUBSCRIBE with full options (5.0 No Local and Retain As Published for a
    /// bridge). Returns its packet id.
    pub fn subscribe_with(
        &mut self,
        filters: Vec<(ByteStr, SubOptions)>,
    ) -> Result<u16, SendError> {
        if self.state != State::Connected {
            return Err(SendError::NotConnected);
        }
        let packet_id = self.next_sub_packet_id();
        self.subscribing.insert(packet_id);
        self.out.push_back(Packet::Subscribe(Subscribe {
            packet_id,
            filters,
            properties: Properties::default(),
        }));
        Ok(packet_id)
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

    /// One packet from the peer.
    pub fn handle(&mut self, packet: Packet) {
        if self.state == State::Closed {
            return;
        }
        if self.state == State::AwaitingConnAck {
            match packet {
                Packet::ConnAck(ack) => self.on_connack(ack),
                other => self.protocol_error(format!("{} before CONNACK", other.name())),
            }
            return;
        }
        match packet {
            Packet::Publish(p) => self.on_publish(p),
            Packet::PubAck(r) => {
                if let Some(Outgoing::Qos1(_)) = self.outgoing.get(&r.packet_id) {
                    self.outgoing.remove(&r.packet_id);
                    self.events.push_back(Event::Acked {
                        packet_id: r.packet_id,
                        reason: r.reason,
                    });
                }
            }
            Packet::PubRec(r) => {
                if let Some(o @ (Outgoing::Qos2(_) | Outgoing::Released)) =
                    self.outgoing.get_mut(&r.packet_id)
                {
                    if r.reason >= 0x80 {
                        // 5.0: the flow ends here, no PUBREL [MQTT-4.3.3-4].
                        self.outgoing.remove(&r.packet_id);
                        self.events.push_back(Event::Acked {
                            packet_id: r.packet_id,
                            reason: r.reason,
                        });
                    } else {
                        // A repeated PUBREC gets its PUBREL again.
                        if !matches!(o, Outgoing::Released) {
                            self.events.push_back(Event::Received {
                                packet_id: r.packet_id,
                            });
                        }
                        *o = Outgoing::Released;
                        self.out
                            .push_back(Packet::PubRel(PubResp::new(r.packet_id)));
                    }
                }
            }
            Packet::PubRel(r) => {
                let known = self.incoming.remove(&r.packet_id);
                let mut comp = PubResp::new(r.packet_id);
                if !known && self.cfg.version.is_v5() {
                    comp.reason = v5::PACKET_IDENTIFIER_NOT_FOUND;
                }
                self.out.push_back(Packet::PubComp(comp));
            }
            Packet::PubComp(r) => {
                if let Some(Outgoing::Released) = self.outgoing.get(&r.packet_id) {
                    self.outgoing.remove(&r.packet_id);
                    self.events.push_back(Event::Acked {
                        packet_id: r.packet_id,
                        reason: r.reason,
                    });
                }
            }
            Packet::SubAck(SubAck {
                packet_id, codes, ..
            }) => {
                if self.subscribing.remove(&packet_id) {
                    self.events
                        .push_back(Event::Subscribed { packet_id, codes });
                }
            }
            Packet::UnsubAck(_) => {}
            Packet::PingResp => self.ping_sent = None,
            Packet::Disconnect(d) => self.close(CloseReason::Disconnected(d.reason)),
            other => self.protocol_error(format!("unexpected {} from the server", other.name())),
        }
    }

    fn on_connack(&mut self, ack: ConnAck) {
        let accepted = match self.cfg.version.is_v5() {
            true => ack.code == v5::SUCCESS,
            false => ack.code == v3::ACCEPTED,
        };
        if !accepted {
            self.close(CloseReason::Refused(ack.code));
            return;
        }
        self.state = State::Connected;
        let p = &ack.properties;
        if let Some(max) = p.receive_maximum {
            self.window = self.window.min(max.max(1));
        }
        if let Some(keep_alive) = p.server_keep_alive {
            self.keep_alive = Duration::from_secs(keep_alive.into());
        }
        self.peer_max_packet = p.maximum_packet_size.unwrap_or(0);
        if !ack.session_present {
            // The server has no state for us: what was in flight starts over as new.
            self.incoming.clear();
        }
        // Resume the flows the server's session still holds [MQTT-4.4.0-1], in id order.
        let mut ids: Vec<u16> = self.outgoing.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            match self.outgoing.get(&id) {
                Some(Outgoing::Qos1(p) | Outgoing::Qos2(p)) => {
                    let mut p = p.clone();
                    p.dup = true;
                    self.out.push_back(Packet::Publish(p));
                }
                Some(Outgoing::Released) => {
                    self.out.push_back(Packet::PubRel(PubResp::new(id)));
                }
                None => {}
            }
        }
        self.events.push_back(Event::Connected {
            session_present: ack.session_present,
        });
    }

    fn on_publish(&mut self, p: Publish) {
        if p.topic.is_empty() {
            // We never allow topic aliases (no Topic Alias Maximum in CONNECT).
            self.protocol_error("PUBLISH without a topic".into());
            return;
        }
        match p.qos {
            QoS::AtMostOnce => self.events.push_back(Event::Message(p)),
            QoS::AtLeastOnce => {
                self.out
                    .push_back(Packet::PubAck(PubResp::new(p.packet_id)));
                self.events.push_back(Event::Message(p));
            }
            QoS::ExactlyOnce => {
                let id = p.packet_id;
                if !self.incoming.contains(&id) {
                    let limit = match self.cfg.version.is_v5() {
                        true => usize::from(self.cfg.max_inflight.max(1)),
                        false => usize::from(u16::MAX),
                    };
                    if self.incoming.len() >= limit {
                        self.protocol_error("more unreleased QoS 2 messages than allowed".into());
                        return;
                    }
                    self.incoming.insert(id);
                    self.events.push_back(Event::Message(p));
                }
                // A resent PUBLISH (DUP) is not delivered again, only acknowledged again.
                self.out.push_back(Packet::PubRec(PubResp::new(id)));
            }
        }
    }

    /// A packet id not in use by any flow. The in-flight window keeps the ids in use far
    /// below 65535, so this loop ends after a few steps.
    fn next_packet_id(&mut self) -> u16 {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if !self.outgoing.contains_key(&id) && !self.subscribing.contains(&id) {
                return id;
            }
        }
    }

    /// A SUBSCRIBE/UNSUBSCRIBE id not in use by any flow (see `next_sub_id`).
    fn next_sub_packet_id(&mut self) -> u16 {
        loop {
            let id = self.next_sub_id;
            self.next_sub_id = match self.next_sub_id - 1 {
                0 => u16::MAX,
                n => n,
            };
            if !self.outgoing.contains_key(&id) && !self.subscribing.contains(&id) {
                return id;
            }
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
#[path = "session_tests.rs"]
mod tests;
