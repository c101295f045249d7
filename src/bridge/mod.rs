//! Bridges: one `connection NAME` block of the configuration, kept connected to a remote
//! broker over one [`Link`] on one shard's loop (no thread per bridge).
//!
//! A [`Bridge`] owns what belongs to the remote side: which address to try next (failover,
//! or `round_robin`), when to reconnect (`restart_timeout`), the CONNECT it sends (client id,
//! credentials, keep-alive, clean session, the notification will, `try_private`), what it
//! subscribes to there, and the topic remapping both ways. It knows nothing of the shard:
//! the shard (`shard::links`) gives it the messages to send and takes its [`BridgeEvent`]s.
//! The local side (what this broker sends to the remote) is an ordinary session on the
//! shard, subscribed to the `out` topics, so local delivery, the ACL check, the bounded queue
//! while the remote is down and the QoS 1/2 bookkeeping are the same code as for a client's.

mod backoff;
mod primary;
pub mod topics;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use mio::Token;

use crate::config::{BridgeConfig, StartType};
use crate::link::{CloseReason, Event, Link, SendError, SessionConfig, Unreleased};
use crate::protocol::reason::v3;
use crate::protocol::{ByteStr, Properties, Publish, QoS, SubOptions, Will};
use crate::reactor::{Event as Readiness, Registry};
use crate::transport::{ClientTlsSettings, Connector};
use backoff::Backoff;
use primary::PrimaryProbe;
use topics::{Remapped, TopicMap};

/// What a bridge tells the shard.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum BridgeEvent {
    /// The remote accepted the connection: the local session may send (resume first).
    Up,
    /// A message from the remote, its topic already the local one.
    Message(Publish),
    /// An outgoing QoS 1/2 flow is complete (PUBACK, PUBCOMP, or a failing PUBREC).
    Acked { packet_id: u16, reason: u8 },
    /// An outgoing QoS 2 message reached the remote (PUBREC): only PUBREL is owed now.
    Received { packet_id: u16 },
    /// The connection ended (after [`BridgeEvent::Up`]).
    Down,
}

#[derive(Debug)]
enum State {
    /// Not connected; the next attempt is due at this time (`None`: never, `start_type once`
    /// after its one connection, or a TLS setup that failed).
    Waiting(Option<Instant>),
    Connecting,
    Up,
}

/// One bridge. Owned by one shard's loop.
#[derive(Debug)]
pub struct Bridge {
    cfg: BridgeConfig,
    topics: TopicMap,
    connector: Option<Connector>,
    link: Option<Link>,
    token: Token,
    state: State,
    /// The address of the current or next attempt.
    address: usize,
    /// Addresses tried since the last successful connection.
    failed_in_row: usize,
    backoff: Backoff,
    /// `try_private`, until a remote refuses the bridge mark (then plain CONNECTs).
    mark_bridge: bool,
    /// Whether the first address is back, while connected to another (failover only).
    primary: PrimaryProbe,
    /// The last message sent or received (`start_type lazy`: `idle_timeout` counts from it).
    last_traffic: Instant,
    events: VecDeque<BridgeEvent>,
    /// Incoming QoS 2 messages delivered here and not yet released by the remote, between two
    /// connections: the remote resends them on the next one if it kept the session, and they
    /// must not be delivered twice.
    unreleased: Unreleased,
}

impl Bridge {
    /// The bridge for `cfg`, whose link will use `token`; the first attempt is due at once.
    /// A TLS configuration whose files cannot be used is logged and leaves it stopped.
    pub fn new(cfg: BridgeConfig, token: Token, now: Instant) -> Bridge {
        let connector = match &cfg.tls {
            None => Some(Connector::plain()),
            Some(tls) => {
                let settings = ClientTlsSettings {
                    server_name: cfg.addresses[0].host.clone(),
                    cafile: tls.cafile.clone(),
                    capath: tls.capath.clone(),
                    certfile: tls.certfile.clone(),
                    keyfile: tls.keyfile.clone(),
                    tls13_only: tls.tls13_only,
                    alpn: tls.alpn.clone(),
                };
                match Connector::tls(&settings) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        log::error!("Bridge {}: TLS: {e}; the bridge stays down.", cfg.name);
                        None
                    }
                }
            }
        };
        let lazy = cfg.start_type == StartType::Lazy;
        let connector = match (connector, cfg.bind_address) {
            (Some(c), Some(ip)) => Some(c.bind_to(ip)),
            (c, _) => c,
        };
        let state = State::Waiting(connector.as_ref().filter(|_| !lazy).map(|_| now));
        Bridge {
            topics: TopicMap::new(&cfg.topics),
            backoff: Backoff::new(cfg.restart_base, cfg.restart_cap),
            mark_bridge: cfg.try_private,
            primary: PrimaryProbe::default(),
            last_traffic: now,
            cfg,
            connector,
            link: None,
            token,
            state,
            address: 0,
            failed_in_row: 0,
            events: VecDeque::new(),
            unreleased: Unreleased::default(),
        }
    }

    pub fn config(&self) -> &BridgeConfig {
        &self.cfg
    }

    pub fn topics(&self) -> &TopicMap {
        &self.topics
    }

    pub fn is_up(&self) -> bool {
        matches!(self.state, State::Up)
    }

    /// `start_type lazy`: `waiting` messages wait for the remote; connects once they reach
    /// `threshold` (a no-op unless the lazy bridge is idle and down).
    pub fn demand(&mut self, waiting: usize, now: Instant) {
        let idle = matches!(self.state, State::Waiting(None));
        if self.cfg.start_type == StartType::Lazy
            && idle
            && self.connector.is_some()
            && waiting >= self.cfg.threshold as usize
        {
            self.state = State::Waiting(Some(now));
        }
    }

    /// The outgoing QoS 1/2 window of the current connection.
    pub fn window(&self) -> u16 {
        self.link.as_ref().map_or(1, |l| l.session().window())
    }

    /// Timers: starts a due connection attempt, drives the link's own (CONNACK time-out,
    /// keep-alive).
    pub fn tick(&mut self, registry: &Registry, now: Instant) {
        if let State::Waiting(Some(at)) = self.state {
            if now >= at {
                self.connect(registry, now);
            }
        }
        if let Some(link) = &mut self.link {
            link.tick(registry, now);
        }
        self.take_link_events(now);
        if self.is_up() && self.primary.tick(self.cfg.addresses[0].addr, now) {
            self.abort(registry, "the first address is reachable again");
        }
        let idle_for = now.saturating_duration_since(self.last_traffic);
        if self.is_up()
            && self.cfg.start_type == StartType::Lazy
            && idle_for.as_secs() >= u64::from(self.cfg.idle_timeout)
        {
            log::info!(
                "Bridge {}: idle, disconnecting (start_type lazy).",
                self.cfg.name
            );
            if let Some(link) = &mut self.link {
                link.disconnect(registry);
            }
            self.take_link_events(now);
        }
    }

    /// A readiness event for the link's token.
    pub fn on_ready(&mut self, registry: &Registry, event: &Readiness, now: Instant) {
        if let Some(link) = &mut self.link {
            link.on_ready(registry, event, now);
        }
        self.take_link_events(now);
    }

    /// Sends what was queued (once per loop turn).
    pub fn flush(&mut self, registry: &Registry) {
        if let Some(link) = &mut self.link {
            link.flush(registry);
            self.take_link_events(Instant::now());
        }
    }

    /// The next event for the shard.
    pub fn next_event(&mut self) -> Option<BridgeEvent> {
        self.events.pop_front()
    }

    /// Sends a message published here on `publish.topic` (remapped to its remote topic),
    /// with the packet id the local session gave it. Returns false if no `out` topic covers
    /// it (nothing to send; the flow is complete).
    pub fn send(&mut self, mut publish: Publish) -> Result<bool, SendError> {
        let up = self.is_up();
        let Some(link) = self.link.as_mut().filter(|_| up) else {
            return Err(SendError::NotConnected);
        };
        match self.topics.to_remote(&publish.topic) {
            None => return Ok(false),
            Some(Remapped::Same) => {}
            Some(Remapped::To(remote)) => publish.topic = ByteStr::from(remote),
        }
        publish.retain &= self.cfg.outgoing_retain;
        link.publish_packet(publish)?;
        if self.cfg.start_type == StartType::Lazy {
            // Only lazy bridges read the clock per message: their idle timer needs it.
            self.last_traffic = Instant::now();
        }
        Ok(true)
    }

    /// Acknowledges a message from the remote (QoS 1: PUBACK, QoS 2: PUBREC): the shard
    /// calls this once the message is as safe here as a client's would be when it is
    /// acknowledged (with persistence: in the store). If the link went down since, the remote
    /// sends the message again: QoS 1 is acknowledged then, QoS 2 (still held, see
    /// `unreleased`) is answered with PUBREC and not delivered again.
    pub fn acknowledge(&mut self, packet_id: u16, qos2: bool) {
        match &mut self.link {
            Some(link) => link.acknowledge(packet_id, qos2),
            // Remembered for the remote's resend of a QoS 2 message on the next connection.
            None if qos2 => self.unreleased.acknowledge(packet_id),
            None => {}
        }
    }

    /// Re-sends the PUBREL of a QoS 2 flow begun on an earlier connection.
    pub fn release(&mut self, packet_id: u16) -> Result<(), SendError> {
        let up = self.is_up();
        match self.link.as_mut().filter(|_| up) {
            Some(link) => link.release(packet_id),
            None => Err(SendError::NotConnected),
        }
    }

    /// Ends the connection (it is retried as after any other end): for a flow the link
    /// cannot take now, so that it is resent on the next connection.
    pub fn abort(&mut self, registry: &Registry, why: &str) {
        let Some(link) = &mut self.link else { return };
        log::warn!("Bridge {}: {why}; reconnecting.", self.cfg.name);
        link.disconnect(registry);
        self.take_link_events(Instant::now());
    }

    /// At shutdown: the remote's notification says "0" and the link is closed.
    pub fn stop(&mut self, registry: &Registry) {
        let up = self.is_up();
        if let Some(link) = &mut self.link {
            if up && self.cfg.notifications && !self.cfg.notifications_local_only {
                let topic = ByteStr::from(self.cfg.notification_topic.as_str());
                let _ = link.publish(topic, Bytes::from_static(b"0"), QoS::AtMostOnce, true);
            }
            link.disconnect(registry);
        }
        self.link = None;
        self.state = State::Waiting(None);
    }

    fn remote_addr(&self) -> SocketAddr {
        self.cfg.addresses[self.address].addr
    }

    fn session_config(&self) -> SessionConfig {
        let c = &self.cfg;
        let mut s = SessionConfig::new(c.protocol, c.remote_clientid.clone());
        s.username = c.remote_username.clone();
        s.password = c.remote_password.clone().map(Bytes::from);
        s.keep_alive = c.keepalive;
        s.clean_start = c.clean_session;
        if c.max_packet_size != 0 {
            s.max_packet_size = c.max_packet_size;
        }
        s.bridge = self.mark_bridge;
        // The shard acknowledges what it received once it has it (see `acknowledge`).
        s.manual_acks = true;
        if c.notifications && !c.notifications_local_only {
            s.will = Some(Will {
                topic: ByteStr::from(c.notification_topic.as_str()),
                payload: Bytes::from_static(b"0"),
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: Properties::default(),
            });
        }
        s
    }

    fn connect(&mut self, registry: &Registry, now: Instant) {
        let Some(connector) = &self.connector else {
            return;
        };
        let addr = self.remote_addr();
        log::info!(
            "Bridge {}: connecting to {} ({addr}).",
            self.cfg.name,
            self.cfg.addresses[self.address].host
        );
        let started = Link::connect(connector, addr, self.session_config(), now)
            .and_then(|mut link| link.register(registry, self.token).map(|()| link));
        match started {
            Ok(mut link) => {
                if !self.cfg.clean_session {
                    link.resume_unreleased(std::mem::take(&mut self.unreleased));
                }
                self.link = Some(link);
                self.state = State::Connecting;
            }
            Err(e) => self.ended(now, false, &format!("connect failed: {e}")),
        }
    }

    fn take_link_events(&mut self, now: Instant) {
        while let Some(event) = self.link.as_mut().and_then(Link::next_event) {
            match event {
                Event::Connected { session_present } => self.on_connected(session_present),
                Event::Message(mut p) => match self.topics.to_local(&p.topic) {
                    Some(local) => {
                        if let Remapped::To(local) = local {
                            p.topic = ByteStr::from(local);
                        }
                        self.events.push_back(BridgeEvent::Message(p));
                        self.last_traffic = now;
                    }
                    None => {
                        log::debug!(
                            "Bridge {}: dropped a message on {} (no 'in' topic covers it).",
                            self.cfg.name,
                            &*p.topic
                        );
                        if p.qos != QoS::AtMostOnce {
                            self.acknowledge(p.packet_id, p.qos == QoS::ExactlyOnce);
                        }
                    }
                },
                Event::Acked { packet_id, reason } => {
                    self.events
                        .push_back(BridgeEvent::Acked { packet_id, reason });
                }
                Event::Received { packet_id } => {
                    self.events.push_back(BridgeEvent::Received { packet_id });
                }
                Event::Subscribed { codes, .. } => {
                    if codes.iter().any(|c| *c >= 0x80) {
                        log::warn!(
                            "Bridge {}: the remote refused a subscription (codes {codes:?}).",
                            self.cfg.name
                        );
                    }
                }
                Event::Closed(reason) => {
                    let was_up = self.is_up();
                    if let Some(mut link) = self.link.take() {
                        self.unreleased = link.take_unreleased();
                    }
                    if let CloseReason::Refused(code) = reason {
                        if self.mark_bridge
                            && !self.cfg.protocol.is_v5()
                            && code == v3::UNACCEPTABLE_PROTOCOL_VERSION
                        {
                            // As mosquitto: a remote that does not know the bridge mark gets
                            // plain CONNECTs from now on.
                            log::info!(
                                "Bridge {}: the remote does not take try_private; connecting without it.",
                                self.cfg.name
                            );
                            self.mark_bridge = false;
                        }
                    }
                    self.ended(now, was_up, &describe(&reason));
                    if was_up {
                        self.events.push_back(BridgeEvent::Down);
                    }
                }
            }
        }
    }

    fn on_connected(&mut self, session_present: bool) {
        log::info!(
            "Bridge {}: connected to {} (session present: {session_present}).",
            self.cfg.name,
            self.cfg.addresses[self.address].host
        );
        self.state = State::Up;
        self.last_traffic = Instant::now();
        self.failed_in_row = 0;
        if self.address != 0 && !self.cfg.round_robin {
            self.primary.start(Instant::now());
        }
        self.backoff.reset();
        let v5 = self.cfg.protocol.is_v5();
        let Some(link) = &mut self.link else { return };
        if self.cfg.attempt_unsubscribe {
            let out_only: Vec<ByteStr> = self
                .topics
                .out_only_remote_filters()
                .map(ByteStr::from)
                .collect();
            if !out_only.is_empty() {
                let _ = link.unsubscribe(out_only);
            }
        }
        let filters: Vec<(ByteStr, SubOptions)> = self
            .topics
            .remote_filters()
            .map(|(t, f)| {
                (
                    ByteStr::from(f),
                    SubOptions {
                        qos: t.qos,
                        // 5.0: what we publish there must not come back [MQTT-3.8.3-3], and
                        // retained messages keep their flag (3.x: the bridge mark does both).
                        no_local: v5,
                        retain_as_published: v5,
                        ..SubOptions::default()
                    },
                )
            })
            .collect();
        if !filters.is_empty() {
            let _ = link.subscribe_with(filters);
        }
        if self.cfg.notifications && !self.cfg.notifications_local_only {
            let topic = ByteStr::from(self.cfg.notification_topic.as_str());
            // QoS 0: its packet id would take one from the local session's numbering.
            let _ = link.publish(topic, Bytes::from_static(b"1"), QoS::AtMostOnce, true);
        }
        self.events.push_back(BridgeEvent::Up);
    }

    /// The connection (or the attempt) ended: chooses the next address and when to try.
    fn ended(&mut self, now: Instant, was_up: bool, why: &str) {
        log::warn!(
            "Bridge {}: connection to {} ended: {why}.",
            self.cfg.name,
            self.cfg.addresses[self.address].host
        );
        let n = self.cfg.addresses.len();
        let mut immediately = false;
        if was_up && self.address != 0 && !self.cfg.round_robin {
            // Back to the first address (it answered the probe, or this one went away).
            immediately = true;
        }
        self.primary.stop();
        if was_up {
            // Round robin moves on; failover goes back to the first address.
            self.address = if self.cfg.round_robin {
                (self.address + 1) % n
            } else {
                0
            };
        } else {
            self.failed_in_row += 1;
            self.address = (self.address + 1) % n;
            // The next address of the list is tried at once; a whole round failed waits.
            immediately = !self.failed_in_row.is_multiple_of(n);
        }
        let at = match self.cfg.start_type {
            StartType::Once => None,
            // Lazy: a connection that ended waits for the threshold again; a failed attempt
            // is retried as usual.
            StartType::Lazy if was_up => None,
            StartType::Lazy if immediately => Some(now),
            StartType::Lazy => Some(now + self.backoff.next()),
            StartType::Automatic if immediately => Some(now),
            StartType::Automatic => Some(now + self.backoff.next()),
        };
        self.state = State::Waiting(at);
    }
}

fn describe(reason: &CloseReason) -> String {
    match reason {
        CloseReason::Refused(code) => format!("refused by the remote (code {code})"),
        CloseReason::Disconnected(code) => format!("disconnected by the remote (reason {code})"),
        CloseReason::Gone(why) | CloseReason::Protocol(why) => why.clone(),
        CloseReason::Local => "closed here".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn bridge(extra: &str) -> Bridge {
        let text = format!("connection b\naddresses 127.0.0.1:1 127.0.0.1:2\ntopic a\n{extra}");
        let cfg = crate::config::Config::parse_str(&text, "t.conf").unwrap();
        Bridge::new(cfg.bridges[0].clone(), Token(1), Instant::now())
    }

    #[test]
    fn failover_tries_the_next_address_at_once_then_waits_a_round() {
        let mut b = bridge("restart_timeout 7\n");
        let now = Instant::now();
        b.ended(now, false, "refused");
        assert_eq!(b.address, 1);
        assert!(matches!(b.state, State::Waiting(Some(at)) if at == now));
        b.ended(now, false, "refused");
        assert_eq!(b.address, 0);
        assert!(matches!(b.state, State::Waiting(Some(at)) if at == now + Duration::from_secs(7)));
        // After a connection on the second address ends, the first is tried again at once.
        b.address = 1;
        b.ended(now, true, "gone");
        assert_eq!(b.address, 0);
        assert!(matches!(b.state, State::Waiting(Some(at)) if at == now));
    }

    #[test]
    fn round_robin_moves_on_after_every_connection() {
        let mut b = bridge("round_robin true\nrestart_timeout 3\n");
        let now = Instant::now();
        b.ended(now, true, "gone");
        assert_eq!(b.address, 1);
        b.ended(now, true, "gone");
        assert_eq!(b.address, 0);
    }

    #[test]
    fn start_type_lazy_connects_at_the_threshold_and_waits_for_it_again() {
        let mut b = bridge("start_type lazy\nthreshold 3\n");
        let now = Instant::now();
        assert!(matches!(b.state, State::Waiting(None)));
        b.demand(2, now);
        assert!(matches!(b.state, State::Waiting(None)));
        b.demand(3, now);
        assert!(matches!(b.state, State::Waiting(Some(at)) if at == now));
        b.ended(now, true, "idle");
        assert!(matches!(b.state, State::Waiting(None)));
    }

    #[test]
    fn start_type_once_never_reconnects() {
        let mut b = bridge("start_type once\n");
        b.ended(Instant::now(), true, "gone");
        assert!(matches!(b.state, State::Waiting(None)));
    }
}
