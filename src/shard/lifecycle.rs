//! Connection and session lifecycle: the tick (keep-alive, CONNECT time-outs, delayed wills,
//! session expiry), the one close path of a connection, and what happens to its session
//! after (will, expiry, removal from every index replica). Attach and takeover are decided
//! in `handle::connect`, through the session registry operations of `shard::ctx`.

use std::io::Write;
use std::time::{Duration, Instant};

use mio::Token;

use super::conn::{Conn, ConnState};
use super::trim::release_free_memory;
use super::{pool, Shard, LINGER_BASE, TICK};
use crate::index::SubscriberId;
use crate::plugin::SessionEnd;
use crate::protocol::reason::v5;
use crate::protocol::{self, Disconnect, Packet, ProtocolVersion};
use crate::session::{memory, OutState};

/// Why a connection is closed; decides wills, logs and what the peer is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Close {
    /// The client sent DISCONNECT: no will [MQTT-3.1.2-10].
    Graceful,
    /// The peer closed the socket or it failed.
    Gone(String),
    /// The TLS layer failed (handshake refused, a client that does not speak TLS, a bad
    /// record): the reason, which says TLS. rustls has already sent its alert.
    Tls(String),
    /// The client broke the protocol: the MQTT 5 reason code sent in DISCONNECT (to 5.0
    /// clients) and the reason that is logged.
    Protocol { code: u8, reason: String },
    /// Nothing received within 1.5 x keep-alive.
    KeepAlive,
    /// Another connection took over the client id [MQTT-3.1.4-2].
    TakenOver,
    /// Refused at CONNECT (CONNACK with a failure code already queued).
    Refused,
    /// Broker shutdown.
    Shutdown,
}

impl Close {
    /// The reason code of the DISCONNECT sent to an MQTT 5 client, if one is sent.
    fn disconnect_code(&self) -> Option<u8> {
        match self {
            Close::Protocol { code, .. } => Some(*code),
            Close::KeepAlive => Some(v5::KEEP_ALIVE_TIMEOUT),
            Close::TakenOver => Some(v5::SESSION_TAKEN_OVER),
            Close::Shutdown => Some(v5::SERVER_SHUTTING_DOWN),
            Close::Graceful | Close::Gone(_) | Close::Tls(_) | Close::Refused => None,
        }
    }

    /// Whether the peer is told something it should read before the socket closes (see
    /// [`linger`]): not when the peer closed first, nor at shutdown (the process exits).
    fn lingers(&self) -> bool {
        matches!(
            self,
            Close::Protocol { .. } | Close::KeepAlive | Close::TakenOver | Close::Refused
        )
    }

    /// Whether the will is published: on every close that the client did not ask for with
    /// DISCONNECT [MQTT-3.1.2-8]; not on broker shutdown.
    fn publishes_will(&self) -> bool {
        !matches!(self, Close::Graceful | Close::Refused | Close::Shutdown)
    }
}

impl Shard {
    /// Keep-alive and CONNECT time-outs.
    pub(super) fn tick(&mut self, now: Instant) {
        self.check_recovered_sessions();
        let mut expired = Vec::new();
        let mut growth = 0;
        // `last_rx` moves only when a whole packet is decoded: before CONNECT, it is the
        // time of accept, so a CONNECT (or TLS handshake) trickled byte by byte still ends.
        let connect_timeout = self.shared.config.connect_time_limit();
        for (key, conn) in self.conns.iter_mut() {
            let idle = now.saturating_duration_since(conn.last_rx);
            growth += conn.tick_rbuf(idle >= TICK, &mut self.buffers);
            match conn.state {
                ConnState::AwaitConnect
                    if idle >= connect_timeout && conn.pending_connect.is_none() =>
                {
                    expired.push((key, false))
                }
                // An enhanced-authentication exchange parked on a plugin's `Later` too long.
                ConnState::AwaitConnect
                    if conn.enhanced_auth.as_ref().is_some_and(|a| a.overdue(now)) =>
                {
                    expired.push((key, false))
                }
                // A CONNECT parked on a basic-auth `Later` (a plugin, the password worker)
                // that has not been answered within the same limit: a plugin that keeps its
                // handles and never answers must not hold connections for ever.
                ConnState::AwaitConnect
                    if conn.enhanced_auth.is_none()
                        && conn.pending_connect.is_some()
                        && idle > crate::auth::enhanced::TIME_LIMIT =>
                {
                    log::warn!("A CONNECT waited over 30 s for its authentication: closed.");
                    expired.push((key, false))
                }
                ConnState::Active { .. } if conn.keep_alive_expired(idle) => {
                    expired.push((key, true))
                }
                _ => {}
            }
        }
        // Exact again (closed connections and shrinks are counted now).
        self.buffers.set_growth(growth);
        self.buffers.trim();
        if self.trim.due(now) {
            release_free_memory();
        }
        self.lingering.expire(&self.registry, now);
        let mut wills = Vec::new();
        let mut ended = Vec::new();
        for (slot, s) in self.sessions.iter_mut() {
            if s.session.pending_will.as_ref().is_some_and(|p| now >= p.0) {
                wills.push(slot);
            }
            if s.session.expires_at.is_some_and(|at| now >= at) {
                ended.push(slot);
            }
        }
        for slot in wills {
            if let Some(pending) = self.sessions[slot].session.pending_will.take() {
                self.sessions[slot].session.store_record(&mut self.batch);
                let origin = self.subscriber_id(slot);
                self.services().publish_will(pending.1, origin);
                self.sync_cluster_will(slot);
            }
        }
        for slot in ended {
            self.stats.sessions_expired += 1;
            log::info!(
                "Session of {} expired.",
                self.sessions[slot].session.client_id
            );
            self.end_session_why(slot, SessionEnd::Expired);
        }
        for (key, keepalive) in expired {
            if keepalive {
                self.close(key, Close::KeepAlive);
            } else {
                let reason = "no CONNECT received in time".into();
                self.close(
                    key,
                    Close::Protocol {
                        code: v5::MAXIMUM_CONNECT_TIME,
                        reason,
                    },
                );
            }
        }
        self.on_tick(now);
    }

    /// The one close path of a connection: last best-effort write, deregistration, will, and
    /// the session's fate (ended if clean, kept for a reconnect otherwise).
    pub(crate) fn close(&mut self, key: usize, why: Close) {
        if !self.conns.contains(key) {
            return;
        }
        let mut conn = self.conns.remove(key);
        self.shared
            .connection_gone(conn.peer.ip(), conn.peer_settled);
        if let Some(d) = &mut self.durable {
            d.forget(key);
        }
        let active = matches!(conn.state, ConnState::Active { .. });
        if let (Some(code), true, Some(ProtocolVersion::V5)) =
            (why.disconnect_code(), active, conn.version)
        {
            // MQTT 5: tell the client why, after CONNACK only [MQTT-4.13.1-1].
            let mut d = Disconnect {
                reason: code,
                ..Default::default()
            };
            if let (Close::Protocol { reason, .. }, true) = (&why, conn.problem_info) {
                d.properties.reason_string = Some(reason.as_str().into());
            }
            if let (Close::Shutdown, Some(server)) = (&why, &self.shared.config.server_reference) {
                // Maintenance: point clients elsewhere rather than just "shutting down".
                d.reason = v5::USE_ANOTHER_SERVER;
                d.properties.server_reference = Some(server.as_str().into());
            }
            self.buffers.ensure(&mut conn.wbuf);
            protocol::encode(&Packet::Disconnect(d), ProtocolVersion::V5, &mut conn.wbuf);
        }
        let allowed = conn.writable_len();
        let mut told = false;
        if allowed > 0 {
            // Best effort: a CONNACK refusal or a DISCONNECT is small and fits the socket
            // buffer. Output still held for the store (and what follows it) is not written.
            told = conn
                .stream
                .write(&conn.wbuf[..allowed])
                .is_ok_and(|n| n > 0);
        }
        if conn.rbuf.capacity().max(conn.wbuf.capacity()) > pool::MAX_POOLED {
            // Dropped below, not pooled: worth giving back to the OS.
            self.trim.request();
        }
        self.buffers.give(&mut conn.rbuf);
        self.buffers.give(&mut conn.wbuf);
        match &why {
            Close::Graceful => {
                log::info!(target: crate::logging::TARGET_CONNECTION, "Client {} disconnected.", self.label(&conn))
            }
            Close::Gone(reason) => {
                log::info!(
                    target: crate::logging::TARGET_CONNECTION, "Client {} closed its connection ({reason}).",
                    self.label(&conn)
                )
            }
            Close::Tls(reason) => {
                log::info!("Client {} disconnected: {reason}.", self.label(&conn))
            }
            Close::Protocol { reason, .. } => {
                log::info!(
                    "Client {} disconnected: protocol error: {reason}.",
                    self.label(&conn)
                )
            }
            Close::KeepAlive => log::info!(
                target: crate::logging::TARGET_CONNECTION, "Client {} has exceeded timeout, disconnecting.",
                self.label(&conn)
            ),
            Close::TakenOver => log::info!(
                target: crate::logging::TARGET_CONNECTION, "Client {} already connected, closing old connection.",
                self.label(&conn)
            ),
            Close::Refused | Close::Shutdown => {}
        }
        let state = conn.state;
        if let ConnState::Active { session } = state {
            self.client_disconnected(session, &conn, why == Close::Graceful);
        }
        let stream = if told && why.lingers() {
            // Shut down the write side and drain: the peer reads the reason, not a reset.
            let registry = &self.registry;
            let token = |slot| Token(LINGER_BASE + slot);
            self.lingering
                .add(registry, conn.stream, token, Instant::now())
                .err()
        } else {
            Some(conn.stream)
        };
        if let Some(mut stream) = stream {
            let _ = self.registry.deregister(&mut stream);
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        if let ConnState::Active { session } = state {
            self.detach_session(session, &why);
        }
    }

    /// A connection for log lines: its client id once CONNECT attached it to a session (the
    /// session's copy: a connection keeps none of its own), its peer address before.
    pub(crate) fn label(&self, conn: &Conn) -> String {
        let slot = match conn.state {
            ConnState::Active { session } => self.sessions.get(session),
            ConnState::AwaitConnect => None,
        };
        match slot {
            Some(slot) => slot.session.client_id.to_string(),
            None => format!("<unknown> from {}", conn.peer),
        }
    }

    /// Keeps the cluster's copy of `slot`'s will current (`cluster::wills`): replaced when the
    /// session's connection has a will (call after CONNECT), kept while a will waits for its
    /// delay, dropped once the session has none. Nothing without a cluster.
    pub(crate) fn sync_cluster_will(&mut self, slot: usize) {
        let (Some(link), Some(s)) = (&mut self.cluster, self.sessions.get_mut(slot)) else {
            return;
        };
        let kept = &mut s.will_in_cluster;
        let s = &s.session;
        let will = s
            .will
            .as_deref()
            .or(s.pending_will.as_deref().map(|p| &p.1));
        match will {
            Some(w) if s.will.is_some() || !*kept => {
                let publish = crate::message::will_publish(w.clone());
                let msg = crate::message::Message::from_publish(publish, None);
                link.will_set(&s.client_id, std::sync::Arc::new(msg));
                *kept = true;
            }
            Some(_) => {}
            None if *kept => {
                link.will_gone(&s.client_id);
                *kept = false;
            }
            None => {}
        }
    }

    /// The cluster took this node for dead and published (and removed) its wills' copies:
    /// every session's will is kept again (under the node's new run).
    pub(crate) fn keep_cluster_wills_again(&mut self) {
        let slots: Vec<usize> = self.sessions.iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            self.sessions[slot].will_in_cluster = false;
            self.sync_cluster_will(slot);
        }
    }

    /// `client_id` connected to another cluster node: its connection here, if any, is closed
    /// with 0x8E, and its session ends unless it was to outlive the connection (or, when
    /// sessions follow their clients, in any case: the session is the other node's now).
    pub(crate) fn taken_over_elsewhere(&mut self, client_id: &crate::protocol::ByteStr) {
        let Some(&slot) = self.session_by_id.get(client_id) else {
            return;
        };
        if let Some(conn) = self.sessions.get(slot).and_then(|s| s.session.conn) {
            log::info!(
                target: crate::logging::TARGET_CONNECTION,
                "Client {client_id} connected to another cluster node."
            );
            self.close(conn, Close::TakenOver);
            // A local takeover hands the session to the new connection; this one has none.
            if self
                .sessions
                .get(slot)
                .is_some_and(|s| s.session.conn.is_none() && s.session.expiry_interval == 0)
            {
                self.end_session(slot);
            }
        }
        self.session_taken_elsewhere(slot);
    }

    /// The connection of `slot` is gone: publish the will when due (at once, or after its
    /// Will Delay Interval, or when the session ends if that is earlier [MQTT-3.1.3-9]) and
    /// start the Session Expiry Interval (0 = the session ends now).
    fn detach_session(&mut self, slot: usize, why: &Close) {
        let Some(s) = self.sessions.get_mut(slot) else {
            return;
        };
        s.session.conn = None;
        let session = &mut s.session;
        // Held-back 3.x QoS 2 PUBLISHes are the client's to resend (not kept offline).
        session.forget_waiting_qos2();
        let now = Instant::now();
        let will = session.will.take().filter(|_| why.publishes_will());
        session.expires_at = match session.expiry_interval {
            u32::MAX => None,
            secs => Some(now + Duration::from_secs(u64::from(secs))),
        };
        if let Some(will) = will {
            match will.properties.will_delay_interval.unwrap_or(0) {
                0 => {
                    let origin = self.subscriber_id(slot);
                    self.services().publish_will(*will, origin);
                }
                delay => {
                    let at = now + Duration::from_secs(u64::from(delay));
                    session.pending_will = Some(Box::new((at, *will)));
                }
            }
        }
        self.sync_cluster_will(slot);
        let ends_now = self.sessions[slot].session.expiry_interval == 0;
        if ends_now && *why != Close::TakenOver {
            self.end_session(slot);
        } else {
            // Its end time and any delayed will, as wall-clock deadlines.
            self.sessions[slot].session.store_record(&mut self.batch);
            self.mark_cluster_record(slot);
        }
    }

    /// Removes a session and its subscriptions, here and in every replica; a will still
    /// waiting for its delay is published now (the session ended first).
    pub(crate) fn end_session(&mut self, slot: usize) {
        self.end_session_why(slot, SessionEnd::Closed);
    }

    /// [`Shard::end_session`], saying why to the session-end hook.
    pub(crate) fn end_session_why(&mut self, slot: usize, why: SessionEnd) {
        if !self.sessions.contains(slot) {
            return;
        }
        let s = self.sessions.remove(slot);
        self.cluster_record_ends(&s);
        if s.will_in_cluster {
            if let Some(link) = &mut self.cluster {
                link.will_gone(&s.session.client_id);
            }
        }
        self.session_ended(&s.session.client_id, why);
        memory::release(s.session.held_bytes());
        if s.session.durable {
            self.batch.delete_session(&s.session.client_id);
        }
        let subscriber = SubscriberId {
            shard: self.id as u16,
            slot: slot as u32,
            generation: s.generation,
        };
        for filter in s.session.subscriptions.keys() {
            self.subscription_removed(filter.clone(), subscriber);
        }
        if self.session_by_id.get(&s.session.client_id) == Some(&slot) {
            self.session_by_id.remove(&s.session.client_id);
        }
        // Messages a departing shared-subscription member had not acknowledged go to another
        // member of the group (MQTT 5 section 4.8.2). A QoS 2 message already PUBRECed is the
        // member's and is not sent again.
        let unacked = s
            .session
            .inflight
            .into_iter()
            .filter(|f| f.state != OutState::AwaitPubComp)
            .map(|f| f.delivery);
        for d in unacked.chain(s.session.queue.into_iter().map(|q| q.delivery)) {
            let Some(group) = d.shared else { continue };
            if let Some(entry) = self.index.pick_shared(&group) {
                self.send_shared(d.msg, entry, group);
            }
        }
        if let Some(pending) = s.session.pending_will {
            self.services().publish_will(pending.1, subscriber);
        }
    }
}
