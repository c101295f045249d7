//! The narrow context the packet handlers (`handle/`) work through instead of the whole
//! shard. The shard builds one per packet and calls the handler layer through it; what a
//! handler may touch is the method set here, in three layers, each dereferencing to the one
//! before:
//! - [`Services`]: what any handler may call: the configuration, `message_in` (routing),
//!   the retained store, the message pool, the subscription hooks, the turn's store batch;
//! - [`Ctx`]: plus one connection: its protocol state and its output sink (`send`, `close`);
//! - [`SessionCtx`]: plus the session that connection is attached to.
//!
//! Why one private `&mut Shard` and not a struct of split borrows: routing, delivering and
//! closing reach every part of the shard (a publisher may be one of its own subscribers, a
//! close publishes a will and ends a session), so no split of the fields lets a handler hold
//! its session and route at once. The borrow is private to this module: a handler sees these
//! methods, not the shard's fields. A context is two or three words built on the stack and
//! inlined away (no box, no allocation, no dynamic dispatch): the per-message path pays
//! nothing for it (ARCHITECTURE.md §2, "The handler layer").
//!
//! Shard thread only.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use super::conn::{Conn, ConnState};
use super::inbox::{Migrating, ShardMsg};
use super::{home_shard, Close, Shard};
use crate::auth::{Auth, AuthRequest, PasswordFile};
use crate::config::Config;
use crate::index::{Entry, SubscriberId};
use crate::message::{Message, SharedMessage};
use crate::protocol::{ByteStr, Connect, DecodeError, Packet, ProtocolVersion};
use crate::retain::{PendingRetained, RetainedStore, Source};
use crate::session::{Outgoing, Session};
use crate::store::Batch as StoreBatch;

/// Password-check tokens carry the connection slot in their low bits and a per-shard serial
/// above, so an answer for a closed connection cannot resume a new one in the same slot.
pub(crate) const AUTH_SLOT_BITS: u32 = 24;

/// The token of a parked CONNECT: the connection slot `key` in the low bits, the shard's
/// serial above.
pub(crate) fn auth_token(serial: u64, key: usize) -> u64 {
    (serial << AUTH_SLOT_BITS) | key as u64
}

/// The broker's services a handler calls, without a connection (a will is published by a
/// session's end, not by a packet).
pub(crate) struct Services<'a> {
    pub(super) shard: &'a mut Shard,
}

/// [`Services`] plus one connection of this shard: its protocol state and its output.
pub(crate) struct Ctx<'a> {
    pub(super) services: Services<'a>,
    pub(super) key: usize,
}

/// [`Ctx`] for a connection attached to a session (after its CONNACK).
pub(crate) struct SessionCtx<'a> {
    pub(super) cx: Ctx<'a>,
    pub(super) slot: usize,
}

impl Shard {
    /// The services, for work that belongs to no connection (wills).
    #[inline]
    pub(crate) fn services(&mut self) -> Services<'_> {
        Services { shard: self }
    }

    /// The context of connection `key` (which must exist).
    #[inline]
    pub(crate) fn ctx(&mut self, key: usize) -> Ctx<'_> {
        Ctx {
            services: Services { shard: self },
            key,
        }
    }

    /// Hands one decoded packet of connection `key` to the handler layer. Returns `false`
    /// when the connection is gone from this shard (closed or moved), so reading stops.
    #[inline]
    pub(crate) fn handle_packet(&mut self, key: usize, packet: Packet) -> bool {
        self.stats.packets_in += 1;
        // As mosquitto: every PUBLISH read counts as received, refused or not.
        match &packet {
            Packet::Publish(p) => {
                self.stats.messages_in += 1;
                self.stats.publish_bytes_in += p.payload.len() as u64;
            }
            Packet::Connect(_) => self.stats.connects += 1,
            _ => {}
        }
        if !self.conns.contains(key) {
            return false;
        }
        self.ctx(key).handle_packet(packet)
    }

    /// A frame of connection `key` could not be decoded: the handler layer answers and closes.
    pub(crate) fn on_decode_error(&mut self, key: usize, level: Option<u8>, e: DecodeError) {
        if self.conns.contains(key) {
            self.ctx(key).decode_error(level, e);
        }
    }

    /// The session's identity in the index (for a message's origin).
    pub(crate) fn subscriber_id(&self, slot: usize) -> SubscriberId {
        let generation = self.sessions.get(slot).map_or(0, |s| s.generation);
        SubscriberId {
            shard: self.id as u16,
            slot: slot as u32,
            generation,
        }
    }

    /// Answers from the auth worker: the parked CONNECTs go back to the handler layer.
    pub(crate) fn drain_auth_responses(&mut self) {
        loop {
            let Some((_, responses)) = &self.auth else {
                return;
            };
            let Ok(response) = responses.try_recv() else {
                return;
            };
            let Some((key, connect)) = self.take_parked(response.token) else {
                continue;
            };
            if self.ctx(key).password_checked(connect, response.allowed) && self.process_frames(key)
            {
                self.resume_input(key);
            }
        }
    }

    /// The CONNECT parked under `token` (a password check or a plugin's `Later`), taken back
    /// with its connection; `None` when that connection is gone (its slot maybe reused).
    pub(crate) fn take_parked(&mut self, token: u64) -> Option<(usize, Connect)> {
        let key = (token & ((1 << AUTH_SLOT_BITS) - 1)) as usize;
        let serial = token >> AUTH_SLOT_BITS;
        let conn = self.conns.get_mut(key)?;
        if conn.auth_token != serial as u32 {
            return None; // that connection is gone and its slot reused
        }
        conn.pending_connect.take().map(|c| (key, *c))
    }

    /// Takes in a connection moved here by another shard and finishes its CONNECT.
    pub(crate) fn adopt(&mut self, m: Migrating) {
        let mut conn = Conn::new(m.stream, m.peer, m.allow_anonymous);
        // The listener's files as this shard has them: a reload applied here since the
        // connection left its first shard is in them.
        conn.auth = match self.listeners.get(usize::from(m.listener)) {
            Some(l) if m.listener != crate::shard::conn::UNTRACKED_LISTENER => l.auth.clone(),
            _ => m.auth,
        };
        conn.listener = m.listener;
        conn.rbuf = m.rbuf;
        let Some(key) = self.add_conn(conn) else {
            self.shared.connection_closed(m.peer.ip());
            return;
        };
        // Checked and authenticated on the shard it arrived at.
        let conn = &mut self.conns[key];
        conn.version = Some(m.connect.version);
        conn.problem_info = m.connect.properties.request_problem_information != Some(0);
        if self.ctx(key).connect_adopted(m.connect) && self.process_frames(key) {
            self.resume_input(key);
        }
    }
}

impl Services<'_> {
    /// The broker's configuration (its limits and policies).
    #[inline]
    pub(crate) fn config(&self) -> &Config {
        &self.shard.shared.config
    }

    /// A message in a pooled shared allocation (see `shard::msg_pool`).
    #[inline]
    pub(crate) fn share(&mut self, msg: Message) -> SharedMessage {
        self.shard.pool.share(msg)
    }

    /// The retained-message store (shared by all shards).
    #[inline]
    pub(crate) fn retained(&self) -> &RetainedStore {
        &self.shard.shared.retained
    }

    /// Whether persistence is on (changes go into [`Services::batch`] to be stored).
    #[inline]
    pub(crate) fn persistent(&self) -> bool {
        self.shard.persistent()
    }

    /// This loop turn's changes to durable state.
    #[inline]
    pub(crate) fn batch(&mut self) -> &mut StoreBatch {
        &mut self.shard.batch
    }

    /// The message-in hook: a message enters the broker and is routed. Returns whether any
    /// subscription matched.
    #[inline]
    pub(crate) fn message_in(&mut self, msg: SharedMessage) -> bool {
        self.shard.message_in(msg)
    }

    /// True when the cluster's retained stream, not live messages from other nodes, decides
    /// this node's retained messages (see `cluster::ShardLink::retained_by_stream`).
    pub(crate) fn cluster_keeps_retained(&self) -> bool {
        self.shard
            .cluster
            .as_ref()
            .is_some_and(|c| c.retained_by_stream())
    }

    /// Routes a message from another cluster node here only (counted as a message in, never
    /// offered to the cluster again).
    pub(crate) fn route_from_cluster(&mut self, msg: SharedMessage) {
        self.shard.route_from_cluster(msg);
    }

    /// Tells the other cluster nodes that `slot`'s client connected here (they close its
    /// connection there, see `cluster::takeover`). Nothing without a cluster.
    pub(crate) fn cluster_connected(&mut self, slot: usize) {
        let shard = &mut *self.shard;
        if let (Some(link), Some(s)) = (&mut shard.cluster, shard.sessions.get(slot)) {
            link.connected(&s.session.client_id);
        }
    }

    /// `slot`'s record changed (see `Shard::mark_cluster_record`).
    pub(crate) fn mark_cluster_record(&mut self, slot: usize) {
        self.shard.mark_cluster_record(slot);
    }

    /// Keeps the cluster's copy of `slot`'s will current (see `Shard::sync_cluster_will`).
    pub(crate) fn sync_cluster_will(&mut self, slot: usize) {
        self.shard.sync_cluster_will(slot);
    }

    /// Delivers a message from another cluster node to one of this node's members of the
    /// shared subscription `group`; false when it has none left.
    pub(crate) fn deliver_to_group(&mut self, msg: SharedMessage, group: ByteStr) -> bool {
        self.shard.deliver_to_group(msg, group)
    }

    /// The subscription-added hook (see `handle::hooks`).
    pub(crate) fn subscription_added(&mut self, filter: &ByteStr, entry: Entry) -> bool {
        self.shard.subscription_added(filter, entry)
    }

    /// The subscription-removed hook (see `handle::hooks`).
    pub(crate) fn subscription_removed(&mut self, filter: ByteStr, subscriber: SubscriberId) {
        self.shard.subscription_removed(filter, subscriber)
    }

    /// Applies the index updates other shards have queued, so this replica is current.
    pub(crate) fn catch_up(&mut self) {
        self.shard.drain_inbox();
    }

    /// Queues retained messages for a new subscription and does this turn's share of them.
    pub(crate) fn send_retained(&mut self, pending: impl IntoIterator<Item = PendingRetained>) {
        for p in pending {
            self.shard.retained_backlog.push(p);
        }
        self.shard.offer_retained_backlog();
    }
}

impl<'a> Deref for Ctx<'a> {
    type Target = Services<'a>;
    #[inline]
    fn deref(&self) -> &Services<'a> {
        &self.services
    }
}

impl<'a> DerefMut for Ctx<'a> {
    #[inline]
    fn deref_mut(&mut self) -> &mut Services<'a> {
        &mut self.services
    }
}

impl<'a> Ctx<'a> {
    #[inline]
    fn conn(&self) -> &Conn {
        &self.services.shard.conns[self.key]
    }

    #[inline]
    fn conn_mut(&mut self) -> &mut Conn {
        &mut self.services.shard.conns[self.key]
    }

    /// The connection attached to its session, or this context back when it awaits CONNECT.
    #[inline]
    pub(crate) fn attached(self) -> Result<SessionCtx<'a>, Ctx<'a>> {
        match self.conn().state {
            ConnState::Active { session } => Ok(SessionCtx {
                cx: self,
                slot: session,
            }),
            ConnState::AwaitConnect => Err(self),
        }
    }

    /// The context of this connection and session `slot` (reborrowed).
    pub(crate) fn with_session(&mut self, slot: usize) -> SessionCtx<'_> {
        SessionCtx {
            cx: Ctx {
                services: Services {
                    shard: &mut *self.services.shard,
                },
                key: self.key,
            },
            slot,
        }
    }

    /// Whether the connection speaks MQTT 5.
    #[inline]
    pub(crate) fn is_v5(&self) -> bool {
        self.conn().is_v5()
    }

    /// The protocol version CONNECT asked for, once known.
    pub(crate) fn version(&self) -> Option<ProtocolVersion> {
        self.conn().version
    }

    /// Whether the connection still awaits its CONNECT.
    pub(crate) fn awaits_connect(&self) -> bool {
        self.conn().state == ConnState::AwaitConnect
    }

    /// Sets what CONNECT (or the first frame) told about the protocol: its version and the
    /// client's Request Problem Information (MQTT 5: reason strings only when true).
    pub(crate) fn set_protocol(&mut self, version: ProtocolVersion, problem_info: bool) {
        let conn = self.conn_mut();
        conn.version = Some(version);
        conn.problem_info = problem_info;
    }

    /// The client's Request Problem Information.
    pub(crate) fn problem_info(&self) -> bool {
        self.conn().problem_info
    }

    /// The peer's address.
    pub(crate) fn peer(&self) -> std::net::SocketAddr {
        self.conn().peer
    }

    /// The connection for log lines: its client id once attached, its peer address before.
    pub(crate) fn label(&self) -> String {
        self.services.shard.label(self.conn())
    }

    /// The password file, ACL and anonymous policy of the listener the client came through.
    pub(crate) fn listener_auth(&self) -> (&Auth, bool) {
        let conn = self.conn();
        (&conn.auth, conn.allow_anonymous)
    }

    /// The `mount_point` of the listener the client came through (see `shard::mount`): its
    /// topics and filters are mounted under it before anything else looks at them.
    #[inline]
    pub(crate) fn mount_point(&self) -> Option<&str> {
        self.services.shard.mount_of(self.key)
    }

    /// The full topic of the client's `topic` (a PUBLISH or a will) under its mount point;
    /// `None` without one.
    #[inline]
    pub(crate) fn mounted_topic(&self, topic: &str) -> Option<ByteStr> {
        Some(super::mount::topic(self.mount_point()?, topic))
    }

    /// The full filter of the client's `filter` under its mount point; `None` without one.
    #[inline]
    pub(crate) fn mounted_filter(&self, filter: &str) -> Option<ByteStr> {
        Some(super::mount::filter(self.mount_point()?, filter))
    }

    /// The TLS certificate identity, when the listener takes the username from it
    /// (`use_identity_as_username` / `use_subject_as_username`): `Some(None)` when the
    /// client has no certificate identity; `None` when the listener does not.
    pub(crate) fn required_tls_identity(&self) -> Option<Option<Box<str>>> {
        let conn = self.conn();
        conn.tls_identity_required
            .then(|| conn.tls_identity.clone())
    }

    /// The client's MQTT 5 topic aliases (index = alias - 1), grown to `max` slots.
    pub(crate) fn topic_aliases(&mut self, max: u16) -> &mut [Option<ByteStr>] {
        let aliases = &mut self.conn_mut().topic_aliases;
        if aliases.len() < usize::from(max) {
            *aliases = vec![None; usize::from(max)].into_boxed_slice();
        }
        aliases
    }

    /// Output sink: encodes `packet` for this client; flushed at the end of the turn.
    #[inline]
    pub(crate) fn send(&mut self, packet: &Packet) {
        self.services.shard.send(self.key, packet);
    }

    /// Where this connection's output stands now (see [`SessionCtx::send_ack`]).
    #[inline]
    pub(crate) fn output_mark(&self) -> usize {
        self.conn().wbuf.len()
    }

    /// The one close path (will, session fate) for this connection.
    pub(crate) fn close(&mut self, why: Close) {
        self.services.shard.close(self.key, why);
    }

    /// Closes for a protocol violation (5.0 clients get DISCONNECT `code`). Returns `false`:
    /// the connection is gone.
    pub(crate) fn protocol_error(&mut self, code: u8, reason: String) -> bool {
        self.close(Close::Protocol { code, reason });
        false
    }

    /// Parks the CONNECT while the auth worker checks its password against `passwords`
    /// (the answer comes back through `Shard::drain_auth_responses`), or says why it cannot.
    pub(crate) fn check_password(
        &mut self,
        connect: Connect,
        passwords: std::sync::Arc<PasswordFile>,
    ) -> Result<(), &'static str> {
        let shard = &mut *self.services.shard;
        shard.next_auth_token += 1;
        let token = shard.next_auth_token;
        let request = AuthRequest {
            token: auth_token(token, self.key),
            username: connect.username.as_deref().unwrap_or_default().to_owned(),
            password: connect.password.as_deref().unwrap_or_default().to_vec(),
            passwords,
        };
        let Some((client, _)) = &shard.auth else {
            return Err("no password checker running");
        };
        if client.submit(request).is_err() {
            return Err("too many password checks pending");
        }
        self.park(connect, token);
        Ok(())
    }

    /// The connection's enhanced-authentication state (`handle::auth`).
    pub(crate) fn enhanced_auth(
        &mut self,
    ) -> &mut Option<Box<crate::auth::enhanced::EnhancedAuth>> {
        &mut self.conn_mut().enhanced_auth
    }

    /// The plugins' answer to one step of this connection's enhanced authentication before
    /// CONNACK (see `Shard::plugin_extended_auth`), and for `Later` the serial to park under.
    pub(crate) fn plugin_extended_auth(
        &mut self,
        client_id: &str,
        username: Option<&str>,
        step: &crate::plugin::AuthStep<'_>,
    ) -> (crate::plugin::ExtendedAuth, u64) {
        let key = self.key;
        self.services
            .shard
            .plugin_extended_auth(key, client_id, username, step)
    }

    /// Parks the CONNECT until the answer for serial `serial` comes (see
    /// [`Shard::take_parked`]): nothing more of this connection is decoded meanwhile.
    pub(crate) fn park(&mut self, connect: Connect, serial: u64) {
        let conn = self.conn_mut();
        conn.auth_token = serial as u32;
        conn.pending_connect = Some(Box::new(connect));
    }

    /// Asks the cluster for `client_id`'s session on other nodes (`cluster::sessions`;
    /// answered in `Shard::cluster_session_fetched`); the serial to [`Ctx::park`] the
    /// CONNECT under meanwhile. `None` when there is nothing to ask (sessions do not follow
    /// clients in this cluster) or the gateway's queue is full.
    pub(crate) fn ask_cluster_for_session(&mut self, client_id: &ByteStr) -> Option<u64> {
        let shard = &mut *self.services.shard;
        let link = shard.cluster.as_mut().filter(|c| c.sessions_in_cluster())?;
        let serial = shard.next_auth_token + 1;
        if !link.fetch_session(auth_token(serial, self.key), client_id) {
            return None;
        }
        shard.next_auth_token = serial;
        Some(serial)
    }

    /// Whether the session of `client_id` lives on this shard (see [`home_shard`]).
    pub(crate) fn is_home_of(&self, client_id: &ByteStr) -> bool {
        let shard = &self.services.shard;
        home_shard(client_id.as_bytes(), shard.peers.len()) == shard.id
    }

    /// Hands the connection to the home shard of its client id, with the CONNECT and any
    /// bytes read after it. The connection is gone from this shard.
    pub(crate) fn migrate(&mut self, connect: Connect) {
        let shard = &mut *self.services.shard;
        let home = home_shard(connect.client_id.as_bytes(), shard.peers.len());
        let mut conn = shard.conns.remove(self.key);
        let _ = shard.registry.deregister(&mut conn.stream);
        let m = Migrating {
            stream: conn.stream,
            peer: conn.peer,
            rbuf: conn.rbuf,
            connect,
            allow_anonymous: conn.allow_anonymous,
            auth: conn.auth,
            listener: conn.listener,
        };
        shard.push_to(home, ShardMsg::Adopt(Box::new(m)));
    }

    /// An id for a client that sent an empty one, unique and homed on this shard (so that a
    /// later reconnect with the assigned id finds its session here). In a cluster it names
    /// the node too: another node's generated ids must not equal this node's, or a client
    /// connecting there would take over an unrelated client here (`cluster::takeover`).
    pub(crate) fn generate_client_id(&mut self) -> ByteStr {
        let shard = &mut *self.services.shard;
        let n = shard.peers.len();
        let node = shard
            .cluster
            .as_ref()
            .map(|c| format!("{}-", c.node_id))
            .unwrap_or_default();
        loop {
            shard.next_client_number += 1;
            let prefix = &shard.shared.config.clients.auto_id_prefix;
            let id = format!("{prefix}{node}{}-{:x}", shard.id, shard.next_client_number);
            if home_shard(id.as_bytes(), n) == shard.id {
                let id = ByteStr::from(id);
                if !shard.session_by_id.contains_key(&id) {
                    return id;
                }
            }
        }
    }

    /// The slot of the session of `client_id` on this shard, if one exists.
    pub(crate) fn find_session(&self, client_id: &ByteStr) -> Option<usize> {
        self.services.shard.session_by_id.get(client_id).copied()
    }

    /// Session `slot` of this shard (one found by [`Ctx::find_session`]) and the turn's
    /// store batch.
    pub(crate) fn session_at(&mut self, slot: usize) -> (&mut Session, &mut StoreBatch) {
        let shard = &mut *self.services.shard;
        (&mut shard.sessions[slot].session, &mut shard.batch)
    }

    /// Closes the connection session `slot` is attached to, if any (a takeover).
    pub(crate) fn close_session_conn(&mut self, slot: usize, why: Close) {
        if let Some(old) = self.services.shard.sessions[slot].session.conn {
            self.services.shard.close(old, why);
        }
    }

    /// Ends session `slot`, which a new connection with clean start replaces: its
    /// subscriptions leave every replica.
    pub(crate) fn end_session_replaced(&mut self, slot: usize) {
        self.services
            .shard
            .end_session_why(slot, crate::plugin::SessionEnd::Replaced);
    }

    /// Adds a new session for its client id; returns its slot.
    pub(crate) fn new_session(&mut self, session: Session) -> usize {
        self.services.shard.add_session(session)
    }

    /// Attaches the connection to session `slot` (CONNACK accepted it): the outgoing topic
    /// alias maximum and the idle limit (1.5 x keep-alive, in ms; 0: none) start to apply.
    /// The client-connected hook runs.
    pub(crate) fn activate(&mut self, slot: usize, aliases_out: u16, idle_limit_ms: u32) {
        let key = self.key;
        self.services.shard.sessions[slot].session.conn = Some(key);
        let conn = self.conn_mut();
        conn.state = ConnState::Active { session: slot };
        conn.aliases_out.max = aliases_out;
        conn.idle_limit_ms = idle_limit_ms;
        self.services.shard.start_receiving(key);
        self.services.shard.client_connected(slot);
    }
}

impl<'a> Deref for SessionCtx<'a> {
    type Target = Ctx<'a>;
    #[inline]
    fn deref(&self) -> &Ctx<'a> {
        &self.cx
    }
}

impl<'a> DerefMut for SessionCtx<'a> {
    #[inline]
    fn deref_mut(&mut self) -> &mut Ctx<'a> {
        &mut self.cx
    }
}

impl SessionCtx<'_> {
    /// The session's identity in the index.
    #[inline]
    pub(crate) fn subscriber(&self) -> SubscriberId {
        self.services.shard.subscriber_id(self.slot)
    }

    /// The session.
    #[inline]
    pub(crate) fn session(&mut self) -> &mut Session {
        &mut self.cx.services.shard.sessions[self.slot].session
    }

    /// The session's record changed (see `Shard::mark_cluster_record`).
    pub(crate) fn mark_own_cluster_record(&mut self) {
        let slot = self.slot;
        self.cx.services.shard.mark_cluster_record(slot);
    }

    /// The session and the turn's store batch its changes go into.
    #[inline]
    pub(crate) fn session_and_batch(&mut self) -> (&mut Session, &mut StoreBatch) {
        let shard = &mut *self.cx.services.shard;
        (&mut shard.sessions[self.slot].session, &mut shard.batch)
    }

    /// Who publishes through this session, for a retained message to keep when
    /// `check_retain_source` is on (`None` when it is off: nothing is kept or checked).
    pub(crate) fn retain_source(&mut self) -> Option<Arc<Source>> {
        if !self.config().clients.check_retain_source {
            return None;
        }
        let listener = self.conn().listener;
        let session = self.session();
        Some(Arc::new(Source {
            client_id: session.client_id.clone(),
            username: session.acl.username().map(Box::from),
            listener,
        }))
    }

    /// Lets the session produce packets into `out` (a resume, a window refill) and sends
    /// them to this connection. The buffer is the shard's, reused: no allocation.
    pub(crate) fn send_from_session(
        &mut self,
        produce: impl FnOnce(&mut Session, &mut Vec<Outgoing>, &mut StoreBatch),
    ) {
        let shard = &mut *self.cx.services.shard;
        let mut out = std::mem::take(&mut shard.out);
        produce(
            &mut shard.sessions[self.slot].session,
            &mut out,
            &mut shard.batch,
        );
        shard.out = out;
        shard.send_session_output(self.cx.key);
    }

    /// Sends the PUBACK (or PUBREC if `rec`) for `packet_id`, at output position `before`
    /// (an [`Ctx::output_mark`]): ahead of the deliveries of that message to this very
    /// client; with persistence, held until the message is durable.
    #[inline]
    pub(crate) fn send_ack(&mut self, rec: bool, packet_id: u16, reason: u8, before: usize) {
        let (key, slot) = (self.cx.key, self.slot);
        self.cx
            .services
            .shard
            .send_ack(key, slot, rec, packet_id, reason, before);
    }
}
