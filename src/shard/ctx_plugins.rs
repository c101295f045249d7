//! The plugin calls of the handler contexts (`ctx`): what `handle::hooks` asks the shard's
//! chain through, with the connection's or session's identity filled in here (the shard side
//! is `plugin_hooks`). Kept apart from `ctx.rs` so that each stays small.

use super::ctx::{Ctx, Services, SessionCtx};
use crate::protocol::ProtocolVersion;

impl Services<'_> {
    /// The message-in hook for a will (its client gone): `false` when a plugin dropped it.
    #[inline]
    pub(crate) fn plugin_message_in_will(
        &mut self,
        publish: &mut crate::protocol::Publish,
    ) -> bool {
        self.shard.plugin_message_in(None, publish)
    }
}

impl Ctx<'_> {
    /// A [`crate::plugin::Later`] for this connection and its serial (see `Shard::later_for`),
    /// for enhanced authentication's deferred steps (`handle::auth`).
    #[allow(dead_code)] // the AUTH flow (another part of the plugin work) is its user
    pub(crate) fn later(&mut self) -> (crate::plugin::Later, u64) {
        let key = self.key;
        self.services.shard.later_for(key)
    }

    /// The plugins of this shard, with who this connection's client is, for the auth hooks
    /// (before a session exists): `client_id` and `username` are CONNECT's.
    pub(crate) fn plugins_for<'c>(
        &'c mut self,
        client_id: &'c str,
        username: Option<&'c str>,
    ) -> (
        &'c mut crate::plugin::ShardPlugins,
        crate::plugin::ClientInfo<'c>,
    ) {
        let shard = &mut *self.services.shard;
        let conn = &shard.conns[self.key];
        let version = conn.version.unwrap_or(ProtocolVersion::V311);
        let info = super::plugin_hooks::client_info(
            Some(conn),
            &shard.listener_ports,
            client_id,
            username,
            version,
        );
        (&mut shard.plugins, info)
    }

    /// The plugins' basic auth of this connection's CONNECT (see `Shard::plugin_basic_auth`).
    pub(crate) fn plugin_basic_auth(
        &mut self,
        start: usize,
        client_id: &str,
        creds: &crate::plugin::Credentials<'_>,
    ) -> (crate::plugin::Decision, u64) {
        let key = self.key;
        self.services
            .shard
            .plugin_basic_auth(start, key, client_id, creds)
    }

    /// Whether a plugin other than the built-in password file registered `event`.
    pub(crate) fn other_plugins_want(&self, event: crate::plugin::Events) -> bool {
        self.services
            .shard
            .plugins
            .others_want(event, crate::plugin::builtin::password::NAME)
    }

    /// Whether a plugin registered `event` (one bit test).
    #[inline]
    pub(crate) fn plugins_want(&self, event: crate::plugin::Events) -> bool {
        self.services.shard.plugins.wants(event)
    }
}

impl SessionCtx<'_> {
    /// The plugins' answer to one step of this client's re-authentication (see
    /// `Shard::plugin_reauthenticate`).
    pub(crate) fn plugin_reauthenticate(
        &mut self,
        step: &crate::plugin::AuthStep<'_>,
    ) -> crate::plugin::ExtendedAuth {
        let (key, slot) = (self.cx.key, self.slot);
        self.cx
            .services
            .shard
            .plugin_reauthenticate(key, slot, step)
    }

    /// The plugins' ACL decision for this client (`Pass` at once when none checks ACLs).
    #[inline]
    pub(crate) fn plugin_acl(
        &mut self,
        topic: &str,
        access: crate::auth::Access,
    ) -> crate::plugin::Decision {
        let slot = self.slot;
        self.cx.services.shard.plugin_acl(slot, topic, access)
    }

    /// The message-in hook for this client's PUBLISH: `false` when a plugin dropped it.
    #[inline]
    pub(crate) fn plugin_message_in(&mut self, publish: &mut crate::protocol::Publish) -> bool {
        let slot = self.slot;
        self.cx
            .services
            .shard
            .plugin_message_in(Some(slot), publish)
    }

    /// A notification about this client to the plugins registered for `event`.
    pub(crate) fn plugin_notify(
        &mut self,
        event: crate::plugin::Events,
        f: impl FnOnce(&mut crate::plugin::ShardPlugins, &crate::plugin::ClientInfo<'_>),
    ) {
        let slot = self.slot;
        self.cx.services.shard.plugin_notify(event, slot, None, f);
    }
}
