//! The hook points: the one place each thing a plugin may later watch or decide passes
//! through. Today they hold the password file and ACL checks and the shard's counters; the
//! rest of the broker calls these and nothing underneath them.
//!
//! | hook | called from |
//! |---|---|
//! | [`authenticate`] | CONNECT (`handle::connect`); the password check answers in `Ctx::password_checked` |
//! | [`authorize`] | publish ([`write_refusal`]: PUBLISH and wills), subscribe (`handle::subscribe`), receive (`Shard::offer`) |
//! | [`Shard::subscription_added`] / [`Shard::subscription_removed`] | SUBSCRIBE; UNSUBSCRIBE and a session's end |
//! | [`Shard::replica_insert`] / [`Shard::replica_remove`] | the same changes arriving from other shards, and recovery |
//! | [`Shard::message_in`] | a client's PUBLISH and a will, before routing |
//! | [`Shard::message_out`] | every PUBLISH written to a client (`Shard::write_publish`) |
//! | [`Shard::client_connected`] / [`Shard::client_disconnected`] | CONNACK accepted; the close of a connected client |
//! | [`Shard::on_tick`] | the shard's tick |
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
use crate::protocol::{ByteStr, Connect};
use crate::shard::ctx::Ctx;
use crate::shard::inbox::ShardMsg;
use crate::shard::Shard;

use super::connect::{connect_accepted, refuse, verify_password, NOT_AUTHORIZED};

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

/// Who the client is: with `use_identity_as_username`/`use_subject_as_username` the TLS
/// certificate says (CONNECT's username and password are ignored, as mosquitto does);
/// otherwise the password file, checked off the loop by the auth worker.
pub(super) fn authenticate(cx: &mut Ctx<'_>, mut connect: Connect) -> bool {
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
    let (auth, allow_anonymous) = cx.listener_auth();
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
            cluster.publish(&msg);
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

    /// The client of session `slot` is connected (its CONNACK accepted it).
    pub(crate) fn client_connected(&mut self, _slot: usize) {
        self.stats.connections += 1;
    }

    /// The connection of the client of session `slot` closed (before its will and the
    /// session's fate are decided).
    pub(crate) fn client_disconnected(&mut self, _slot: usize) {
        self.stats.connections = self.stats.connections.saturating_sub(1);
    }

    /// The shard's tick (a few times a second): publishes this shard's counters, and on
    /// the shard that owns it, the `$SYS` tree when it is due.
    pub(crate) fn on_tick(&mut self, now: Instant) {
        self.stats.sessions = self.sessions.len() as u64;
        self.count_gauges(now);
        self.shared.stats_slot(self.id).publish(&self.stats);
        self.sys_tree_tick(now);
    }
}
