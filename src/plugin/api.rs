//! The plugin contract: what a plugin implements ([`Plugin`], [`ShardPlugin`]) and what the
//! broker hands it. Every other part of `plugin/` (the chain, the built-ins, the C ABI
//! adapter, HTTP/JWT, SCRAM) is written against this file.
//!
//! Two levels, because midge is sharded:
//! - [`Plugin`] is the plugin as loaded: one per `plugin` line, shared by every shard
//!   (`Send + Sync`). It is asked for its options at start and at reload, and makes one
//!   [`ShardPlugin`] per shard.
//! - [`ShardPlugin`] is that plugin's state on one shard (FlashMQ's "thread data"). Its hooks
//!   take `&mut self` and run on the shard's thread only, so per-shard state needs no lock.
//!   State shared between shards lives behind an `Arc` the plugin keeps itself.
//!
//! The chain (mosquitto's rule): hooks are asked in configuration order; the first plugin
//! that decides ([`Decision::Allow`] / [`Decision::Deny`]) wins; [`Decision::Pass`] asks the
//! next one; when every plugin passes, the broker's default applies (the listener's
//! `allow_anonymous` for auth, "allow" for ACL). The built-in password file and ACL file are
//! plugins of this chain, placed where mosquitto places them (after the configured plugins).
//!
//! Slow work never runs on a shard: an auth hook that needs the network or a slow hash
//! answers [`Decision::Later`] after moving the [`Later`] handle it was given to another
//! thread; the client is parked, the shard goes on, and [`Later::answer`] reaches the shard
//! through its inbox. A `Later` dropped without an answer denies.
//!
//! A Rust plugin that panics is caught at the call: the hook counts as [`Decision::Deny`]
//! (for a message hook: the message is dropped), the panic is logged, the broker goes on.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;

use crate::auth::Access;
use crate::protocol::{ByteStr, Properties, ProtocolVersion, QoS};

/// `plugin_opt_KEY VALUE` lines of one plugin, with the `plugin_opt_` prefix stripped, in
/// file order of first appearance (a later line with the same key replaces the value).
pub type PluginOptions = BTreeMap<String, String>;

/// A plugin as loaded: shared by all shards.
pub trait Plugin: Send + Sync + 'static {
    /// A short name for logs (`plugin NAME: ...`).
    fn name(&self) -> &str;

    /// The options changed (SIGHUP re-reads the configuration): apply them or say why not
    /// (the error is logged, the old options stay in force). Called once at start too, before
    /// [`Plugin::shard`]; an error then stops start-up with the message.
    fn configure(&self, options: &PluginOptions) -> Result<(), String>;

    /// This plugin's state for shard `shard` of `shards` (called once per shard at start, on
    /// the starting thread; the result is moved to the shard's thread).
    fn shard(&self, shard: usize, shards: usize) -> Box<dyn ShardPlugin>;
}

/// Which hooks a [`ShardPlugin`] wants. The chain calls only these, so a plugin that watches
/// nothing per message costs nothing per message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Events(pub u32);

impl Events {
    pub const BASIC_AUTH: Events = Events(1 << 0);
    pub const EXTENDED_AUTH: Events = Events(1 << 1);
    pub const ACL_CHECK: Events = Events(1 << 2);
    pub const MESSAGE_IN: Events = Events(1 << 3);
    pub const MESSAGE_OUT: Events = Events(1 << 4);
    pub const SUBSCRIBE: Events = Events(1 << 5);
    pub const UNSUBSCRIBE: Events = Events(1 << 6);
    pub const CONNECT: Events = Events(1 << 7);
    pub const DISCONNECT: Events = Events(1 << 8);
    pub const SESSION_END: Events = Events(1 << 9);
    pub const TICK: Events = Events(1 << 10);
    pub const RELOAD: Events = Events(1 << 11);

    /// Whether every event of `other` is in `self`.
    pub const fn contains(self, other: Events) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Events {
    type Output = Events;
    fn bitor(self, rhs: Events) -> Events {
        Events(self.0 | rhs.0)
    }
}

/// Who a client is, as a hook sees it. Borrowed from the shard for the call.
#[derive(Debug, Clone, Copy)]
pub struct ClientInfo<'a> {
    pub client_id: &'a str,
    /// After authentication: the name the client is known by (a certificate identity under
    /// `use_identity_as_username`, a name an auth plugin assigned).
    pub username: Option<&'a str>,
    pub protocol: ProtocolVersion,
    /// The client's address (after the PROXY protocol, when the listener uses it).
    pub peer: Option<SocketAddr>,
    /// The port of the listener it came through.
    pub listener_port: u16,
    /// The verified client certificate's identity (its subject), when there is one.
    pub certificate_identity: Option<&'a str>,
}

/// CONNECT's credentials, for [`ShardPlugin::basic_auth`].
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    pub username: Option<&'a str>,
    /// Binary, not necessarily UTF-8.
    pub password: Option<&'a [u8]>,
}

/// A hook's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; no later plugin is asked.
    Allow,
    /// Refused; no later plugin is asked.
    Deny,
    /// This plugin does not decide (mosquitto's `MOSQ_ERR_PLUGIN_DEFER`): ask the next.
    Pass,
    /// The answer comes through the [`Later`] handle this hook was given (auth hooks only; an
    /// ACL or message hook answering `Later` counts as [`Decision::Deny`]).
    Later,
}

/// One step of MQTT 5 enhanced authentication (CONNECT or AUTH with an Authentication Method).
#[derive(Debug, Clone, Copy)]
pub struct AuthStep<'a> {
    /// The Authentication Method (e.g. `SCRAM-SHA-256`).
    pub method: &'a str,
    /// The Authentication Data of this packet.
    pub data: Option<&'a [u8]>,
    /// True for the packet that starts an exchange (CONNECT, or AUTH 0x19 re-authenticate);
    /// false for AUTH 0x18 continue.
    pub start: bool,
    /// True when the exchange is a re-authentication of a connected client.
    pub reauthenticate: bool,
}

/// The answer to an [`AuthStep`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtendedAuth {
    /// Authenticated; the data (if any) goes in the CONNACK / AUTH success packet.
    Success(Option<Bytes>),
    /// Send AUTH "continue authentication" (0x18) with this data and wait for the client's next.
    Continue(Bytes),
    /// Refused (CONNACK / DISCONNECT 0x87 Not authorized).
    Deny,
    /// Not this plugin's method: ask the next (none left: 0x8C Bad authentication method).
    Pass,
    /// The answer comes through [`Later::answer_extended`].
    Later,
}

/// A message entering the broker (a client's PUBLISH or a will), as [`ShardPlugin::message_in`]
/// may change it. Changing a field costs a copy of the message; reading costs nothing.
#[derive(Debug)]
pub struct MessageIn<'a> {
    pub topic: &'a mut ByteStr,
    pub payload: &'a mut Bytes,
    pub qos: &'a mut QoS,
    pub retain: &'a mut bool,
    pub properties: &'a mut Properties,
}

/// A message being written to a client, for [`ShardPlugin::message_out`] (read-only).
#[derive(Debug, Clone, Copy)]
pub struct MessageOut<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub qos: QoS,
    pub retain: bool,
}

/// What [`ShardPlugin::message_in`] decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Route the message (as changed, if it was).
    Keep,
    /// Drop it: no subscriber gets it, the publisher's QoS flow still completes (as
    /// mosquitto does for a message its plugin drops).
    Drop,
}

/// Why a session ended, for [`ShardPlugin::session_end`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// Clean start / expiry 0 at disconnect.
    Closed,
    /// Its expiry interval ran out.
    Expired,
    /// A new connection with clean start took the client id.
    Replaced,
}

/// One plugin's hooks on one shard. Every hook has a default that does nothing and passes,
/// so a plugin implements only what it listed in [`ShardPlugin::events`].
#[allow(unused_variables)]
pub trait ShardPlugin: Send {
    /// The hooks to call; read once when the shard starts.
    fn events(&self) -> Events;

    /// CONNECT with a user name and/or password (no Authentication Method).
    fn basic_auth(
        &mut self,
        client: &ClientInfo<'_>,
        creds: &Credentials<'_>,
        later: Later,
    ) -> Decision {
        Decision::Pass
    }

    /// CONNECT or AUTH with an Authentication Method.
    fn extended_auth(
        &mut self,
        client: &ClientInfo<'_>,
        step: &AuthStep<'_>,
        later: Later,
    ) -> ExtendedAuth {
        ExtendedAuth::Pass
    }

    /// May `client` do `access` on `topic` (a topic for publish and receive, a filter for
    /// subscribe)? Called per message on the delivery path: must not block.
    fn acl_check(&mut self, client: &ClientInfo<'_>, topic: &str, access: Access) -> Decision {
        Decision::Pass
    }

    /// A message enters the broker from `client` (`None`: a will whose client is gone, or a
    /// bridged message), after the ACL allowed it.
    fn message_in(&mut self, client: Option<&ClientInfo<'_>>, msg: MessageIn<'_>) -> Verdict {
        Verdict::Keep
    }

    /// A PUBLISH was written to `client`.
    fn message_out(&mut self, client: &ClientInfo<'_>, msg: &MessageOut<'_>) {}

    /// `client` subscribed to `filter` (after the ACL allowed it) with this maximum QoS.
    fn subscribe(&mut self, client: &ClientInfo<'_>, filter: &str, qos: QoS) {}

    /// `client` unsubscribed from `filter`.
    fn unsubscribe(&mut self, client: &ClientInfo<'_>, filter: &str) {}

    /// `client` is connected (its CONNACK accepted it).
    fn connect(&mut self, client: &ClientInfo<'_>) {}

    /// `client`'s connection closed; `graceful` when it sent DISCONNECT (without will).
    fn disconnect(&mut self, client: &ClientInfo<'_>, graceful: bool) {}

    /// The session of `client_id` ended.
    fn session_end(&mut self, client_id: &str, why: SessionEnd) {}

    /// The shard's tick (a few times a second).
    fn tick(&mut self, now: Instant) {}

    /// The configuration was reloaded (after [`Plugin::configure`] succeeded).
    fn reload(&mut self) {}
}

/// The handle through which a deferred auth answer reaches the shard that asked: `Send`, so
/// the plugin may move it to any thread. Dropped without an answer, it denies.
pub struct Later {
    pub(crate) inner: Option<Box<dyn LaterSink>>,
}

/// Where a [`Later`] delivers (the shard's inbox and waker). Implemented by the broker.
pub(crate) trait LaterSink: Send {
    fn basic(self: Box<Self>, decision: Decision);
    fn extended(self: Box<Self>, answer: ExtendedAuth);
    /// The handle was dropped without an answer: a refusal, unless the sink knows nobody
    /// waits (a hook that decided at once and let its handle go).
    fn dropped(self: Box<Self>) {
        self.basic(Decision::Deny);
    }
}

impl Later {
    /// A handle that goes nowhere (a hook called where no answer can be parked).
    pub fn detached() -> Later {
        Later { inner: None }
    }

    /// Delivers the answer to a deferred [`ShardPlugin::basic_auth`]. `Pass` asks the
    /// plugins after this one (then the built-in rules), as an immediate `Pass` would;
    /// `Later` counts as `Deny` here.
    pub fn answer(mut self, decision: Decision) {
        if let Some(sink) = self.inner.take() {
            sink.basic(decision);
        }
    }

    /// Delivers the answer to a deferred [`ShardPlugin::extended_auth`]. `Later` and `Pass`
    /// count as `Deny` here.
    pub fn answer_extended(mut self, answer: ExtendedAuth) {
        if let Some(sink) = self.inner.take() {
            sink.extended(answer);
        }
    }
}

impl Drop for Later {
    fn drop(&mut self) {
        if let Some(sink) = self.inner.take() {
            sink.dropped();
        }
    }
}

impl std::fmt::Debug for Later {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Later")
            .field("pending", &self.inner.is_some())
            .finish()
    }
}
