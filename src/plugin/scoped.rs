//! A plugin that belongs to one listener (`plugin` inside a listener block under
//! `per_listener_settings true`, as mosquitto 2.0): its client hooks run only for clients
//! of that listener; for others it passes. Hooks without a client (session end, tick,
//! reload) always run.

use std::sync::Arc;
use std::time::Instant;

use crate::auth::Access;
use crate::protocol::QoS;

use super::api::{
    AuthStep, ClientInfo, Credentials, Decision, Events, ExtendedAuth, Later, MessageIn,
    MessageOut, Plugin, PluginOptions, SessionEnd, ShardPlugin, Verdict,
};

/// `inner`, for the clients of the listener on `port` only.
pub struct Scoped {
    port: u16,
    inner: Arc<dyn Plugin>,
}

impl Scoped {
    pub fn new(port: u16, inner: Arc<dyn Plugin>) -> Scoped {
        Scoped { port, inner }
    }
}

impl Plugin for Scoped {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn configure(&self, options: &PluginOptions) -> Result<(), String> {
        self.inner.configure(options)
    }
    fn shard(&self, shard: usize, shards: usize) -> Box<dyn ShardPlugin> {
        Box::new(ScopedShard {
            port: self.port,
            inner: self.inner.shard(shard, shards),
        })
    }
}

struct ScopedShard {
    port: u16,
    inner: Box<dyn ShardPlugin>,
}

impl ScopedShard {
    fn mine(&self, client: &ClientInfo<'_>) -> bool {
        client.listener_port == self.port
    }
}

impl ShardPlugin for ScopedShard {
    fn events(&self) -> Events {
        self.inner.events()
    }
    fn basic_auth(&mut self, c: &ClientInfo<'_>, creds: &Credentials<'_>, l: Later) -> Decision {
        if !self.mine(c) {
            return Decision::Pass;
        }
        self.inner.basic_auth(c, creds, l)
    }
    fn extended_auth(&mut self, c: &ClientInfo<'_>, s: &AuthStep<'_>, l: Later) -> ExtendedAuth {
        if !self.mine(c) {
            return ExtendedAuth::Pass;
        }
        self.inner.extended_auth(c, s, l)
    }
    fn acl_check(&mut self, c: &ClientInfo<'_>, topic: &str, access: Access) -> Decision {
        if !self.mine(c) {
            return Decision::Pass;
        }
        self.inner.acl_check(c, topic, access)
    }
    fn message_in(&mut self, c: Option<&ClientInfo<'_>>, msg: MessageIn<'_>) -> Verdict {
        match c {
            Some(c) if !self.mine(c) => Verdict::Keep,
            _ => self.inner.message_in(c, msg),
        }
    }
    fn message_out(&mut self, c: &ClientInfo<'_>, msg: &MessageOut<'_>) {
        if self.mine(c) {
            self.inner.message_out(c, msg)
        }
    }
    fn subscribe(&mut self, c: &ClientInfo<'_>, filter: &str, qos: QoS) {
        if self.mine(c) {
            self.inner.subscribe(c, filter, qos)
        }
    }
    fn unsubscribe(&mut self, c: &ClientInfo<'_>, filter: &str) {
        if self.mine(c) {
            self.inner.unsubscribe(c, filter)
        }
    }
    fn connect(&mut self, c: &ClientInfo<'_>) {
        if self.mine(c) {
            self.inner.connect(c)
        }
    }
    fn disconnect(&mut self, c: &ClientInfo<'_>, graceful: bool) {
        if self.mine(c) {
            self.inner.disconnect(c, graceful)
        }
    }
    fn session_end(&mut self, client_id: &str, why: SessionEnd) {
        self.inner.session_end(client_id, why)
    }
    fn tick(&mut self, now: Instant) {
        self.inner.tick(now)
    }
    fn reload(&mut self) {
        self.inner.reload()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::ShardPlugins;
    use crate::protocol::ProtocolVersion;

    struct DenyAll;
    impl Plugin for DenyAll {
        fn name(&self) -> &str {
            "deny"
        }
        fn configure(&self, _: &PluginOptions) -> Result<(), String> {
            Ok(())
        }
        fn shard(&self, _: usize, _: usize) -> Box<dyn ShardPlugin> {
            Box::new(DenyAllShard)
        }
    }
    struct DenyAllShard;
    impl ShardPlugin for DenyAllShard {
        fn events(&self) -> Events {
            Events::ACL_CHECK
        }
        fn acl_check(&mut self, _: &ClientInfo<'_>, _: &str, _: Access) -> Decision {
            Decision::Deny
        }
    }

    #[test]
    fn a_listener_plugin_decides_for_its_listener_only() {
        let plugin: Arc<dyn Plugin> = Arc::new(Scoped::new(1884, Arc::new(DenyAll)));
        let mut chain = ShardPlugins::new(&[plugin], 0, 1);
        let client = |port| ClientInfo {
            client_id: "c",
            username: None,
            protocol: ProtocolVersion::V311,
            peer: None,
            listener_port: port,
            certificate_identity: None,
        };
        assert_eq!(
            chain.acl_check(&client(1884), "t", Access::Read),
            Decision::Deny
        );
        assert_eq!(
            chain.acl_check(&client(1883), "t", Access::Read),
            Decision::Pass
        );
    }
}
