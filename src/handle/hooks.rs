//! The hook points: the one place each thing a plugin may later watch or decide passes
//! through. Today they hold the password file and ACL checks and the shard's counters; the
//! rest of the broker calls these and nothing underneath them.
//!
//! | hook | called from |
//! |---|---|
//! | [`authenticate`] | CONNECT (`handle::connect`): the plugins' basic auth, then the password file; a deferred answer (the password check, a plugin's `Later`) resumes in `Ctx::password_checked` |
//! | [`authorize`] | publish ([`publish_refusal`] for PUBLISH, [`will_refusal`] for wills), subscribe ([`may_subscribe`]), receive (`Shard::offer`): the plugins first, then the ACL file |
//! | [`Shard::subscription_added`] / [`Shard::subscription_removed`] | SUBSCRIBE; UNSUBSCRIBE and a session's end |
//! | [`Shard::replica_insert`] / [`Shard::replica_remove`] | the same changes arriving from other shards, and recovery |
//! | [`Shard::message_in`] | a client's PUBLISH and a will, before routing (the plugins' message-in hook ran before the message was shared: `Shard::plugin_message_in`) |
//! | [`Shard::message_out`] | every PUBLISH written to a client (`Shard::write_publish`) |
//! | [`subscribed`] / [`unsubscribed`] | SUBSCRIBE granted; UNSUBSCRIBE |
//! | [`Shard::client_connected`] / [`Shard::client_disconnected`] | CONNACK accepted; the close of a connected client |
//! | [`Shard::session_ended`] | a session's end (`Shard::end_session`) |
//! | [`Shard::on_tick`] | the shard's tick |
//! | [`Shard::plugins_reloaded`] | a configuration reload (`Shard::apply_reload`) |
//!
//! The plugins (`plugin::ShardPlugins`, the shard's `plugins`) are asked first at each
//! decision; when every one passes, the password file and ACL file decide as before. With no
//! plugin loaded each plugin call is one bit test (`ShardPlugins::wants`).
//!
//! Shard thread only. Per-message hooks are `#[inline]` and touch only the shard's own
//! state: no allocation, lock or atomic operation per message.
//!
//! Unlike the handlers, which get a context (`shard::ctx`), the hooks other than
//! [`authenticate`] are methods of the shard: the shard's own paths (delivery, close, the
//! inbox, the tick) call them as the handlers do (through `Services`), and what they do
//! today is the shard's bookkeeping (counters, index replicas). This is the one file of
//! `handle/` that works on shard state.

use std::time::Instant;

use crate::auth::{Access, ClientAcl, ConnectCheck};
use crate::index::{Entry, SubscriberId};
use crate::message::SharedMessage;
use crate::plugin::{Credentials, Decision, Events, ExtendedAuth, SessionEnd};
use crate::protocol::{ByteStr, Connect, QoS};
use crate::shard::conn::Conn;
use crate::shard::ctx::{Ctx, SessionCtx};
use crate::shard::inbox::ShardMsg;
use crate::shard::Shard;

use super::connect::{connect_accepted, refuse, verify_password, BAD_CREDENTIALS, NOT_AUTHORIZED};

/// The one authorization decision lives in `auth` (the shard's delivery path calls it too, and
/// `shard` must not import `handle`); publish and subscribe reach it through here.
pub(crate) use crate::auth::authorize;

/// Why a client may not publish on `topic` (a PUBLISH or its will), if it may not: clients
/// never write the broker's `$SYS` tree nor `$share/...` (a subscription syntax, not a topic),
/// whatever the ACL says, as mosquitto's `acl__check_dollar`; then the ACL's write rules.
pub(crate) fn write_refusal(acl: &ClientAcl, topic: &str) -> Option<&'static str> {
    if topic.starts_with("$SYS") || topic.starts_with("$share") {
        Some("clients do not publish on $SYS or $share")
    } else if !authorize(acl, topic, Access::Write) {
        Some("not allowed by the ACL")
    } else {
        None
    }
}

/// A client's PUBLISH on `topic`: refused (and why), or `None`. `$SYS` and `$share` never;
/// then the plugins; when all pass, the ACL file.
#[inline]
pub(crate) fn publish_refusal(cx: &mut SessionCtx<'_>, topic: &str) -> Option<&'static str> {
    if topic.starts_with("$SYS") || topic.starts_with("$share") {
        return Some("clients do not publish on $SYS or $share");
    }
    // The ACL file is the chain's last member (`plugin::builtin::acl`).
    match cx.plugin_acl(topic, Access::Write) {
        Decision::Pass => write_refusal(&cx.session().acl, topic),
        Decision::Allow => None,
        Decision::Deny | Decision::Later => Some("refused by a plugin"),
    }
}

/// A will on `topic` of the client `client_id` / `username` being accepted (no session
/// yet): as [`publish_refusal`], with the will's ACL `acl`.
pub(crate) fn will_refusal(
    cx: &mut Ctx<'_>,
    client_id: &str,
    username: Option<&str>,
    acl: &ClientAcl,
    topic: &str,
) -> Option<&'static str> {
    if cx.plugins_want(Events::ACL_CHECK)
        && !topic.starts_with("$SYS")
        && !topic.starts_with("$share")
    {
        let (plugins, info) = cx.plugins_for(client_id, username);
        match plugins.acl_check(&info, topic, Access::Write) {
            Decision::Pass => {}
            Decision::Allow => return None,
            Decision::Deny | Decision::Later => return Some("refused by a plugin"),
        }
    }
    write_refusal(acl, topic)
}

/// May the client subscribe to `filter`? The plugins, then the ACL file.
pub(crate) fn may_subscribe(cx: &mut SessionCtx<'_>, filter: &str) -> bool {
    let chain = cx.plugin_acl(filter, Access::Subscribe);
    crate::plugin::builtin::acl::after_chain(chain, &cx.session().acl, filter, Access::Subscribe)
}

/// The client subscribed to `filter` (granted `qos`).
pub(crate) fn subscribed(cx: &mut SessionCtx<'_>, filter: &str, qos: QoS) {
    cx.plugin_notify(Events::SUBSCRIBE, |p, c| p.subscribe(c, filter, qos));
}

/// The client unsubscribed from `filter`.
pub(crate) fn unsubscribed(cx: &mut SessionCtx<'_>, filter: &str) {
    cx.plugin_notify(Events::UNSUBSCRIBE, |p, c| p.unsubscribe(c, filter));
}

impl Ctx<'_> {
    /// A plugin's deferred answer to an enhanced-authentication step of a parked CONNECT.
    ///
    /// The flow itself is `handle::auth` (a `Continue` parks the CONNECT there again, a
    /// `Success` carries its data into CONNACK).
    pub(crate) fn extended_auth_answered(self, connect: Connect, answer: ExtendedAuth) -> bool {
        super::auth::extended_auth_answer(self, connect, answer)
    }
}

/// Who the client is: with `use_identity_as_username`/`use_subject_as_username` the TLS
/// certificate says (CONNECT's username and password are ignored, as mosquitto does);
/// otherwise the plugins' basic auth (first decision wins; `Later` parks the connection
/// until the answer comes through the shard's inbox), and when every plugin passes, the
/// password file, checked off the loop by the auth worker.
pub(super) fn authenticate(cx: &mut Ctx<'_>, connect: Connect) -> bool {
    authenticate_from(cx, connect, 0)
}

impl Ctx<'_> {
    /// A plugin's deferred basic-auth answer was "not mine" (`Pass`): the plugins after it
    /// (from position `next` of the chain's basic-auth list) decide, then the built-in rules.
    pub(crate) fn basic_auth_resumed(mut self, connect: Connect, next: usize) -> bool {
        authenticate_from(&mut self, connect, next)
    }
}

/// [`authenticate`] with the basic-auth chain from its `start`th plugin on.
fn authenticate_from(cx: &mut Ctx<'_>, mut connect: Connect, start: usize) -> bool {
    let max = connect.properties.maximum_packet_size.unwrap_or(0);
    if let Some(identity) = cx.required_tls_identity() {
        return match identity {
            Some(identity) => {
                connect.username = Some(String::from(identity).into());
                connect.password = None;
                connect_accepted(cx, connect)
            }
            None => refuse(cx, max, NOT_AUTHORIZED, "no client certificate identity"),
        };
    }
    if cx.plugins_want(Events::BASIC_AUTH) {
        let creds = Credentials {
            username: connect.username.as_deref(),
            password: connect.password.as_deref(),
        };
        let (decision, serial) = cx.plugin_basic_auth(start, &connect.client_id, &creds);
        match decision {
            Decision::Pass => {}
            Decision::Allow => return connect_accepted(cx, connect),
            Decision::Deny => return refuse(cx, max, BAD_CREDENTIALS, "refused by a plugin"),
            Decision::Later => {
                cx.park(connect, serial);
                return true;
            }
        }
    }
    let (auth, allow_anonymous) = cx.listener_auth();
    if connect.username.is_some()
        && !auth.has_authentication()
        && cx.other_plugins_want(Events::BASIC_AUTH)
    {
        // Plugins authenticate here and every one passed on a named client: mosquitto's
        // rule, "if all plugins deferred, this is a denial" (only anonymous clients then go
        // by allow_anonymous). Without it, a user an auth plugin does not know would get in
        // as anonymous.
        return refuse(cx, max, BAD_CREDENTIALS, "no plugin accepted the user");
    }
    match auth.connect_check(connect.username.as_deref(), allow_anonymous) {
        ConnectCheck::Accept => connect_accepted(cx, connect),
        ConnectCheck::Refuse => {
            refuse(cx, max, NOT_AUTHORIZED, "anonymous clients are not allowed")
        }
        ConnectCheck::Verify => verify_password(cx, connect),
    }
}

impl Shard {
    /// A subscription of a session homed here was added (or replaced: the return value says
    /// whether `entry`'s subscriber already had `filter`): into this replica and, through the
    /// outbox, every other.
    pub(crate) fn subscription_added(&mut self, filter: &ByteStr, entry: Entry) -> bool {
        let existed = self.index.insert(filter, entry);
        if !existed {
            *self.stats.subscription_count(filter) += 1;
            if let Some(cluster) = &mut self.cluster {
                cluster.interest(filter, true);
            }
        }
        for to in 0..self.peers.len() {
            if to != self.id {
                self.push_to(
                    to,
                    ShardMsg::IndexInsert {
                        filter: filter.clone(),
                        entry,
                    },
                );
            }
        }
        existed
    }

    /// A subscription of a session homed here is gone: out of this replica and every other.
    pub(crate) fn subscription_removed(&mut self, filter: ByteStr, subscriber: SubscriberId) {
        if self.index.remove(&filter, subscriber) {
            if let Some(cluster) = &mut self.cluster {
                cluster.interest(&filter, false);
            }
        }
        let count = self.stats.subscription_count(&filter);
        *count = count.saturating_sub(1);
        for to in 0..self.peers.len() {
            if to != self.id {
                self.push_to(
                    to,
                    ShardMsg::IndexRemove {
                        filter: filter.clone(),
                        subscriber,
                    },
                );
            }
        }
    }

    /// Another shard's subscription change, applied to this replica (or a recovered one).
    pub(crate) fn replica_insert(&mut self, filter: &ByteStr, entry: Entry) {
        self.index.insert(filter, entry);
    }

    /// Another shard's subscription removal, applied to this replica.
    pub(crate) fn replica_remove(&mut self, filter: &ByteStr, subscriber: SubscriberId) {
        self.index.remove(filter, subscriber);
    }

    /// A message enters the broker here (a client's PUBLISH after its checks, or a will):
    /// routes it. Returns whether any subscription matched.
    #[inline]
    pub(crate) fn message_in(&mut self, msg: SharedMessage) -> bool {
        if let Some(cluster) = &mut self.cluster {
            if cluster.publish(&msg) {
                if let Some(d) = &mut self.durable {
                    d.sent_to_cluster();
                }
            }
        }
        let sample = self.stats.route.sample_start();
        let matched = self.route(msg);
        self.stats.route.sample_end(sample);
        matched
    }

    /// A PUBLISH with `payload_len` bytes of payload was written to a client's buffer.
    #[inline]
    pub(crate) fn message_out(&mut self, payload_len: usize) {
        self.stats.messages_out += 1;
        self.stats.packets_out += 1;
        self.stats.publish_bytes_out += payload_len as u64;
    }

    /// The PUBLISH `publish` on `topic` was written to connection `key` (the plugins'
    /// message-out hook; the counters are [`Shard::message_out`]). The topic stays a
    /// `ByteStr` until a plugin wants it: its `&str` view costs a UTF-8 scan.
    #[inline]
    pub(crate) fn message_out_to(
        &mut self,
        key: usize,
        topic: &ByteStr,
        publish: &crate::protocol::PublishRef<'_>,
    ) {
        if self.plugins.wants(Events::MESSAGE_OUT) {
            self.plugin_message_out(key, topic, publish.payload, publish.qos, publish.retain);
        }
    }

    /// The client of session `slot` is connected (its CONNACK accepted it).
    pub(crate) fn client_connected(&mut self, slot: usize) {
        self.stats.connections += 1;
        self.plugin_notify(Events::CONNECT, slot, None, |p, c| p.connect(c));
    }

    /// The connection `conn` of the client of session `slot` closed (before its will and the
    /// session's fate are decided); `graceful`: it sent DISCONNECT.
    pub(crate) fn client_disconnected(&mut self, slot: usize, conn: &Conn, graceful: bool) {
        self.stats.connections = self.stats.connections.saturating_sub(1);
        self.plugin_notify(Events::DISCONNECT, slot, Some(conn), |p, c| {
            p.disconnect(c, graceful)
        });
    }

    /// The session of `client_id` ended.
    pub(crate) fn session_ended(&mut self, client_id: &str, why: SessionEnd) {
        self.plugin_session_end(client_id, why);
    }

    /// The configuration was reloaded; the main thread has configured the plugins with
    /// their new options (`registry::Loaded::reconfigure`).
    pub(crate) fn plugins_reloaded(&mut self) {
        if self.plugins.wants(Events::RELOAD) {
            self.plugins.reload();
        }
    }

    /// The shard's tick (a few times a second): publishes this shard's counters, and on
    /// the shard that owns it, the `$SYS` tree when it is due; the plugins' tick.
    pub(crate) fn on_tick(&mut self, now: Instant) {
        if self.plugins.wants(Events::TICK) {
            self.plugins.tick(now);
        }
        self.stats.sessions = self.sessions.len() as u64;
        self.count_gauges(now);
        self.shared.stats_slot(self.id).publish(&self.stats);
        self.sys_tree_tick(now);
    }
}
