//! The shard's side of the plugin chain: the `ClientInfo` a hook sees, built from the
//! connection and the session (borrowed, nothing copied), the calls of the hooks that need
//! the shard's state (`handle::hooks` decides when), and the [`Later`] path: a deferred
//! auth answer comes back through this shard's inbox as [`ShardMsg::LaterAnswer`].
//!
//! Every entry point first tests the chain's event bits: with no plugin loaded each is one
//! load and one branch (`ShardPlugins::wants`), so nothing here costs a message anything.

use std::time::Duration;

use super::conn::Conn;
use super::inbox::{Batch, LaterAnswer, ShardHandle, ShardMsg};
use super::Shard;
use crate::auth::Access;
use crate::plugin::api::LaterSink;
use crate::plugin::builtin::scram;
use crate::plugin::AuthStep;
use crate::plugin::{
    ClientInfo, Credentials, Decision, Events, ExtendedAuth, Later, MessageIn, MessageOut,
    SessionEnd, Verdict,
};
use crate::protocol::{ProtocolVersion, Publish, QoS};

/// How long a plugin's thread keeps trying to queue an answer to a shard whose inbox is full
/// (only a shard stalled that long loses it; the parked client then times out on its side).
const PUSH_FOR: Duration = Duration::from_secs(5);

/// Where a [`Later`] made by this shard delivers: its inbox, with the token of the parked
/// connection (slot and serial, so an answer for a closed connection is dropped).
struct InboxSink {
    shard: ShardHandle,
    id: u16,
    token: u64,
    /// The position in the basic-auth chain of the plugin this handle was given to.
    position: u16,
}

impl InboxSink {
    fn deliver(self, answer: LaterAnswer) {
        let batch = Batch {
            from: self.id,
            items: vec![ShardMsg::LaterAnswer {
                token: self.token,
                answer,
            }],
        };
        if self.shard.push_patiently(batch, PUSH_FOR).is_err() {
            log::warn!("A deferred authentication answer could not be delivered.");
        }
    }
}

thread_local! {
    /// The serial of the `Later` handed to the basic-auth hook running on this (shard)
    /// thread now, 0 outside one; and the serial of the last handle that hook dropped.
    static IN_HOOK: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    static DROPPED_IN_HOOK: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

impl LaterSink for InboxSink {
    fn basic(self: Box<Self>, decision: Decision) {
        let position = self.position;
        self.deliver(LaterAnswer::Basic(decision, position));
    }
    fn extended(self: Box<Self>, answer: ExtendedAuth) {
        self.deliver(LaterAnswer::Extended(answer));
    }
    /// A handle dropped by the very hook it was given to, during the call: the hook decided
    /// at once (it passed, or allowed) and nobody waits for it, so nothing is sent (no inbox
    /// item, no wake-up per CONNECT per plugin). If that hook answered `Later` anyway, the
    /// caller sees the drop and refuses at once. Dropped anywhere else: a refusal.
    fn dropped(self: Box<Self>) {
        let serial = self.token >> super::ctx::AUTH_SLOT_BITS;
        if IN_HOOK.with(|h| h.get()) == serial {
            DROPPED_IN_HOOK.with(|d| d.set(serial));
            return;
        }
        let position = self.position;
        self.deliver(LaterAnswer::Basic(Decision::Deny, position));
    }
}

/// A [`Later`] that answers into `shard`'s inbox for connection `key`, under a fresh serial
/// from `next`. Each call makes a new serial: a handle a plugin dropped when it passed
/// delivers a refusal no connection waits for (dropped as stale).
fn make_later(
    shard: &ShardHandle,
    id: usize,
    next: &mut u64,
    key: usize,
    position: usize,
) -> (Later, u64) {
    *next += 1;
    let serial = *next;
    let sink = InboxSink {
        shard: shard.clone(),
        id: id as u16,
        token: super::ctx::auth_token(serial, key),
        position: position.min(usize::from(u16::MAX)) as u16,
    };
    (
        Later {
            inner: Some(Box::new(sink)),
        },
        serial,
    )
}

/// The client of `session` (connected through `conn`, if it is), for a hook.
#[inline]
pub(crate) fn session_client<'a>(
    conn: Option<&'a Conn>,
    ports: &[u16],
    session: &'a crate::session::Session,
) -> ClientInfo<'a> {
    client_info(
        conn,
        ports,
        str_of(&session.client_id),
        session.acl.username(),
        session.version,
    )
}

/// A `ByteStr` as `&str` without validating it again: per delivery, `Deref` (which checks)
/// would cost a UTF-8 scan of the client id for every plugin call.
#[inline]
fn str_of(s: &crate::protocol::ByteStr) -> &str {
    // SAFETY: a `ByteStr` is valid UTF-8 by construction (its field is private to the codec,
    // whose every constructor takes a `str` or checks with `from_utf8`).
    unsafe { std::str::from_utf8_unchecked(s.as_bytes()) }
}

/// Who a client is, for a hook: the session's names, the connection's address, listener and
/// certificate (`conn` is `None` for a session without a connection).
pub(crate) fn client_info<'a>(
    conn: Option<&'a Conn>,
    ports: &[u16],
    client_id: &'a str,
    username: Option<&'a str>,
    protocol: ProtocolVersion,
) -> ClientInfo<'a> {
    ClientInfo {
        client_id,
        username,
        protocol,
        peer: conn.map(|c| c.peer),
        listener_port: conn.map_or(0, |c| {
            ports.get(usize::from(c.listener)).copied().unwrap_or(0)
        }),
        certificate_identity: conn.and_then(|c| c.tls_identity.as_deref()),
    }
}

impl Shard {
    /// A [`Later`] for connection `key`, with a fresh serial (returned, to park the
    /// connection under it).
    pub(crate) fn later_for(&mut self, key: usize) -> (Later, u64) {
        make_later(
            &self.peers[self.id],
            self.id,
            &mut self.next_auth_token,
            key,
            0,
        )
    }

    /// The basic-auth hook for the CONNECT of connection `key`, from the `start`th plugin on:
    /// the chain's decision, and for `Later` the serial to park the connection under.
    pub(crate) fn plugin_basic_auth(
        &mut self,
        start: usize,
        key: usize,
        client_id: &str,
        creds: &Credentials<'_>,
    ) -> (Decision, u64) {
        let Some(conn) = self.conns.get(key) else {
            return (Decision::Deny, 0);
        };
        let version = conn.version.unwrap_or(ProtocolVersion::V311);
        let info = client_info(
            Some(conn),
            &self.listener_ports,
            client_id,
            creds.username,
            version,
        );
        let me = &self.peers[self.id];
        let (id, next) = (self.id, &mut self.next_auth_token);
        let mut serial = 0;
        let decision = self.plugins.basic_auth(start, &info, creds, |position| {
            let (later, s) = make_later(me, id, next, key, position);
            serial = s;
            IN_HOOK.with(|h| h.set(s));
            later
        });
        IN_HOOK.with(|h| h.set(0));
        if decision == Decision::Later && DROPPED_IN_HOOK.with(|d| d.get()) == serial {
            log::warn!("A plugin deferred an authentication but dropped its handle: refused.");
            return (Decision::Deny, serial);
        }
        (decision, serial)
    }

    /// The extended-auth hook (MQTT 5 enhanced authentication, `handle::auth`) for the
    /// CONNECT of connection `key`, with the connection's password file in scope for
    /// `builtin:scram`: the chain's answer, and for `Later` the serial to park under.
    pub(crate) fn plugin_extended_auth(
        &mut self,
        key: usize,
        client_id: &str,
        username: Option<&str>,
        step: &AuthStep<'_>,
    ) -> (ExtendedAuth, u64) {
        let Some(conn) = self.conns.get(key) else {
            return (ExtendedAuth::Deny, 0);
        };
        let passwords = conn.auth.passwords.clone();
        let version = conn.version.unwrap_or(ProtocolVersion::V5);
        let info = client_info(
            Some(conn),
            &self.listener_ports,
            client_id,
            username,
            version,
        );
        let me = &self.peers[self.id];
        let (id, next) = (self.id, &mut self.next_auth_token);
        let mut serial = 0;
        let plugins = &mut self.plugins;
        let answer = scram::with_password_file(passwords, || {
            plugins.extended_auth(&info, step, || {
                let (later, s) = make_later(me, id, next, key, 0);
                serial = s;
                later
            })
        });
        (answer, serial)
    }

    /// The extended-auth hook for a step of the re-authentication of the client of session
    /// `slot` on connection `key`. Its handles go nowhere: a connected client is not parked
    /// (`handle::auth` refuses a `Later` here).
    pub(crate) fn plugin_reauthenticate(
        &mut self,
        key: usize,
        slot: usize,
        step: &AuthStep<'_>,
    ) -> ExtendedAuth {
        let (Some(conn), Some(s)) = (self.conns.get(key), self.sessions.get(slot)) else {
            return ExtendedAuth::Deny;
        };
        let s = &s.session;
        let passwords = conn.auth.passwords.clone();
        let info = client_info(
            Some(conn),
            &self.listener_ports,
            &s.client_id,
            s.acl.username(),
            s.version,
        );
        let plugins = &mut self.plugins;
        scram::with_password_file(passwords, || {
            plugins.extended_auth(&info, step, Later::detached)
        })
    }

    /// The chain's ACL decision for the client of session `slot`.
    #[inline]
    pub(crate) fn plugin_acl(&mut self, slot: usize, topic: &str, access: Access) -> Decision {
        if !self.plugins.wants(Events::ACL_CHECK) {
            return Decision::Pass;
        }
        self.plugin_acl_slow(slot, topic, access)
    }

    #[inline(never)]
    fn plugin_acl_slow(&mut self, slot: usize, topic: &str, access: Access) -> Decision {
        let Some(s) = self.sessions.get(slot) else {
            return Decision::Deny;
        };
        let s = &s.session;
        let conn = s.conn.and_then(|k| self.conns.get(k));
        let info = session_client(conn, &self.listener_ports, s);
        self.plugins.acl_check(&info, topic, access)
    }

    /// The message-in hook on a PUBLISH before it becomes a shared message (so a change costs
    /// nothing more than the change): `false` when a plugin dropped it. `slot` is the
    /// publisher's session (`None`: a will whose client is gone).
    #[inline]
    pub(crate) fn plugin_message_in(&mut self, slot: Option<usize>, publish: &mut Publish) -> bool {
        if !self.plugins.wants(Events::MESSAGE_IN) {
            return true;
        }
        self.plugin_message_in_slow(slot, publish)
    }

    #[inline(never)]
    fn plugin_message_in_slow(&mut self, slot: Option<usize>, publish: &mut Publish) -> bool {
        let msg = MessageIn {
            topic: &mut publish.topic,
            payload: &mut publish.payload,
            qos: &mut publish.qos,
            retain: &mut publish.retain,
            properties: &mut publish.properties,
        };
        let verdict = match slot.and_then(|slot| self.sessions.get(slot)) {
            Some(s) => {
                let s = &s.session;
                let conn = s.conn.and_then(|k| self.conns.get(k));
                let info = session_client(conn, &self.listener_ports, s);
                self.plugins.message_in(Some(&info), msg)
            }
            None => self.plugins.message_in(None, msg),
        };
        if verdict == Verdict::Drop {
            return false;
        }
        let topic: &str = &publish.topic;
        if topic.is_empty() || topic.contains(['+', '#', '\0']) {
            log::warn!("A plugin gave a message the invalid topic '{topic}': dropped.");
            return false;
        }
        true
    }

    /// The message-out hook: a PUBLISH was written to connection `key`.
    #[inline(never)]
    pub(crate) fn plugin_message_out(
        &mut self,
        key: usize,
        topic: &crate::protocol::ByteStr,
        payload: &[u8],
        qos: QoS,
        retain: bool,
    ) {
        let msg = MessageOut {
            topic: str_of(topic),
            payload,
            qos,
            retain,
        };
        self.plugin_message_out_slow(key, &msg);
    }

    #[inline(never)]
    fn plugin_message_out_slow(&mut self, key: usize, msg: &MessageOut<'_>) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        let super::conn::ConnState::Active { session } = conn.state else {
            return;
        };
        let Some(s) = self.sessions.get(session) else {
            return;
        };
        let s = &s.session;
        let info = session_client(Some(conn), &self.listener_ports, s);
        self.plugins.message_out(&info, msg);
    }

    /// A notification about the client of session `slot` (connect, subscribe, ...), to the
    /// plugins registered for `event`. `conn` overrides the session's connection (a closed
    /// one, already out of the slab).
    pub(crate) fn plugin_notify(
        &mut self,
        event: Events,
        slot: usize,
        conn: Option<&Conn>,
        f: impl FnOnce(&mut crate::plugin::ShardPlugins, &ClientInfo<'_>),
    ) {
        if !self.plugins.wants(event) {
            return;
        }
        let Some(s) = self.sessions.get(slot) else {
            return;
        };
        let s = &s.session;
        let conn = conn.or_else(|| s.conn.and_then(|k| self.conns.get(k)));
        let info = session_client(conn, &self.listener_ports, s);
        f(&mut self.plugins, &info);
    }

    /// The session-end hook.
    pub(crate) fn plugin_session_end(&mut self, client_id: &str, why: SessionEnd) {
        if self.plugins.wants(Events::SESSION_END) {
            self.plugins.session_end(client_id, why);
        }
    }

    /// Deferred auth answers that came through the inbox: each resumes (or refuses) the
    /// connection parked under its token; one for a connection closed meanwhile (or whose
    /// slot was reused: the serial differs) is dropped.
    pub(crate) fn drain_later_answers(&mut self) {
        while !self.later_answers.is_empty() {
            for (token, answer) in std::mem::take(&mut self.later_answers) {
                let Some((key, connect)) = self.take_parked(token) else {
                    continue;
                };
                let resumed = match answer {
                    // A deferred "not mine" asks the plugins after the one that deferred,
                    // then the built-in rules (as if it had passed at once).
                    LaterAnswer::Basic(Decision::Pass, position) => self
                        .ctx(key)
                        .basic_auth_resumed(connect, usize::from(position) + 1),
                    LaterAnswer::Basic(d, _) => self
                        .ctx(key)
                        .password_checked(connect, d == Decision::Allow),
                    LaterAnswer::Extended(a) => self.ctx(key).extended_auth_answered(connect, a),
                };
                if resumed && self.process_frames(key) {
                    self.resume_input(key);
                }
            }
        }
    }
}
