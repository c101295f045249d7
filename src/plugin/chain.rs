//! [`ShardPlugins`]: one shard's plugins, asked in order (the first that decides wins), each
//! hook only of the plugins that registered it, every call behind `catch_unwind`.
//!
//! With no plugin loaded every method is a length check on an empty list: the broker calls
//! them unconditionally and pays nothing measurable.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use crate::auth::Access;
use crate::protocol::QoS;

use super::api::{
    AuthStep, ClientInfo, Credentials, Decision, Events, ExtendedAuth, Later, MessageIn,
    MessageOut, Plugin, SessionEnd, ShardPlugin, Verdict,
};

/// One loaded plugin on one shard.
struct Slot {
    name: Arc<str>,
    hooks: Box<dyn ShardPlugin>,
}

/// The plugins of one shard, in configuration order, with per-event lists of who to ask.
#[derive(Default)]
pub struct ShardPlugins {
    slots: Vec<Slot>,
    /// For each event bit, the indexes into `slots` of the plugins that registered it.
    by_event: [Vec<u16>; 12],
    /// The union of every plugin's events.
    events: Events,
}

impl std::fmt::Debug for ShardPlugins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.slots.iter().map(|s| &*s.name).collect();
        f.debug_struct("ShardPlugins")
            .field("plugins", &names)
            .finish()
    }
}

fn bit(event: Events) -> usize {
    event.0.trailing_zeros() as usize
}

impl ShardPlugins {
    /// Shard `shard` of `shards`'s state of each of `plugins`, in order.
    pub fn new(plugins: &[Arc<dyn Plugin>], shard: usize, shards: usize) -> ShardPlugins {
        let mut chain = ShardPlugins::default();
        for plugin in plugins {
            let hooks = plugin.shard(shard, shards);
            chain.push(Arc::from(plugin.name()), hooks);
        }
        chain
    }

    fn push(&mut self, name: Arc<str>, hooks: Box<dyn ShardPlugin>) {
        let events = hooks.events();
        let index = self.slots.len() as u16;
        for (b, list) in self.by_event.iter_mut().enumerate() {
            if events.0 & (1 << b) != 0 {
                list.push(index);
            }
        }
        self.events = self.events | events;
        self.slots.push(Slot { name, hooks });
    }

    /// True if some plugin registered `event` (a cheap test before building a hook's arguments).
    #[inline]
    pub fn wants(&self, event: Events) -> bool {
        self.events.contains(event)
    }

    /// Whether a plugin other than the one named `except` registered `event`.
    pub fn others_want(&self, event: Events, except: &str) -> bool {
        self.by_event[bit(event)]
            .iter()
            .any(|&i| &*self.slots[i as usize].name != except)
    }

    /// True if no plugin is loaded.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Calls `f` on each plugin registered for `event` until one returns `Some`; a panic is
    /// logged and answers `on_panic`.
    fn ask<T>(
        &mut self,
        event: Events,
        on_panic: T,
        mut f: impl FnMut(&mut dyn ShardPlugin) -> Option<T>,
    ) -> Option<T> {
        self.ask_from(event, 0, on_panic, |p, _| f(p))
    }

    /// [`ShardPlugins::ask`] from the `start`th registrant of `event` on; `f` is also given
    /// the position of the plugin it is asking (so a deferred answer can resume after it).
    fn ask_from<T>(
        &mut self,
        event: Events,
        start: usize,
        on_panic: T,
        mut f: impl FnMut(&mut dyn ShardPlugin, usize) -> Option<T>,
    ) -> Option<T> {
        let list = &self.by_event[bit(event)];
        for (position, &i) in list.iter().enumerate().skip(start) {
            let slot = &mut self.slots[i as usize];
            match catch_unwind(AssertUnwindSafe(|| f(&mut *slot.hooks, position))) {
                Ok(Some(answer)) => return Some(answer),
                Ok(None) => {}
                Err(panic) => {
                    log::error!(
                        "plugin {}: panicked in a hook ({}); treated as a refusal",
                        slot.name,
                        panic_message(&panic)
                    );
                    return Some(on_panic);
                }
            }
        }
        None
    }

    /// Calls `f` on every plugin registered for `event` (notifications); a panic is logged.
    fn tell(&mut self, event: Events, mut f: impl FnMut(&mut dyn ShardPlugin)) {
        for &i in &self.by_event[bit(event)] {
            let slot = &mut self.slots[i as usize];
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| f(&mut *slot.hooks))) {
                log::error!(
                    "plugin {}: panicked in a hook ({})",
                    slot.name,
                    panic_message(&panic)
                );
            }
        }
    }

    /// Basic authentication, from the `start`th plugin registered for it on (0 at CONNECT;
    /// after a deferred `Pass` from position N, N + 1). `later` makes the handle for a plugin
    /// that answers `Later`, given that plugin's position (it is called at most once per
    /// plugin asked). Returns `Pass` when every plugin passed.
    pub fn basic_auth(
        &mut self,
        start: usize,
        client: &ClientInfo<'_>,
        creds: &Credentials<'_>,
        mut later: impl FnMut(usize) -> Later,
    ) -> Decision {
        self.ask_from(
            Events::BASIC_AUTH,
            start,
            Decision::Deny,
            |p, position| match p.basic_auth(client, creds, later(position)) {
                Decision::Pass => None,
                d => Some(d),
            },
        )
        .unwrap_or(Decision::Pass)
    }

    /// One step of enhanced authentication; `Pass` when no plugin knows the method.
    pub fn extended_auth(
        &mut self,
        client: &ClientInfo<'_>,
        step: &AuthStep<'_>,
        mut later: impl FnMut() -> Later,
    ) -> ExtendedAuth {
        self.ask(Events::EXTENDED_AUTH, ExtendedAuth::Deny, |p| {
            match p.extended_auth(client, step, later()) {
                ExtendedAuth::Pass => None,
                a => Some(a),
            }
        })
        .unwrap_or(ExtendedAuth::Pass)
    }

    /// The ACL check: `Pass` when every plugin passed. `Later` from an ACL hook is a refusal.
    /// Called per delivery: a loop of its own rather than `ask`'s generic one, so that it
    /// inlines into the caller and the panic path stays out of line.
    #[inline]
    pub fn acl_check(&mut self, client: &ClientInfo<'_>, topic: &str, access: Access) -> Decision {
        if !self.wants(Events::ACL_CHECK) {
            return Decision::Pass;
        }
        let list = &self.by_event[bit(Events::ACL_CHECK)];
        for &i in list {
            let Some(slot) = self.slots.get_mut(usize::from(i)) else {
                continue;
            };
            let hooks = &mut *slot.hooks;
            match catch_unwind(AssertUnwindSafe(|| hooks.acl_check(client, topic, access))) {
                Ok(Decision::Pass) => {}
                Ok(Decision::Later) => return Decision::Deny,
                Ok(d) => return d,
                Err(panic) => {
                    log_panic(&slot.name, &panic);
                    return Decision::Deny;
                }
            }
        }
        Decision::Pass
    }

    /// A message enters: every registered plugin sees it in turn (each sees the previous one's
    /// changes) until one drops it. A panic drops it.
    pub fn message_in(&mut self, client: Option<&ClientInfo<'_>>, msg: MessageIn<'_>) -> Verdict {
        if !self.wants(Events::MESSAGE_IN) {
            return Verdict::Keep;
        }
        self.ask(Events::MESSAGE_IN, Verdict::Drop, |p| {
            let again = MessageIn {
                topic: &mut *msg.topic,
                payload: &mut *msg.payload,
                qos: &mut *msg.qos,
                retain: &mut *msg.retain,
                properties: &mut *msg.properties,
            };
            match p.message_in(client, again) {
                Verdict::Keep => None,
                Verdict::Drop => Some(Verdict::Drop),
            }
        })
        .unwrap_or(Verdict::Keep)
    }

    #[inline]
    pub fn message_out(&mut self, client: &ClientInfo<'_>, msg: &MessageOut<'_>) {
        if self.wants(Events::MESSAGE_OUT) {
            self.tell(Events::MESSAGE_OUT, |p| p.message_out(client, msg));
        }
    }

    pub fn subscribe(&mut self, client: &ClientInfo<'_>, filter: &str, qos: QoS) {
        self.tell(Events::SUBSCRIBE, |p| p.subscribe(client, filter, qos));
    }

    pub fn unsubscribe(&mut self, client: &ClientInfo<'_>, filter: &str) {
        self.tell(Events::UNSUBSCRIBE, |p| p.unsubscribe(client, filter));
    }

    pub fn connect(&mut self, client: &ClientInfo<'_>) {
        self.tell(Events::CONNECT, |p| p.connect(client));
    }

    pub fn disconnect(&mut self, client: &ClientInfo<'_>, graceful: bool) {
        self.tell(Events::DISCONNECT, |p| p.disconnect(client, graceful));
    }

    pub fn session_end(&mut self, client_id: &str, why: SessionEnd) {
        self.tell(Events::SESSION_END, |p| p.session_end(client_id, why));
    }

    pub fn tick(&mut self, now: Instant) {
        self.tell(Events::TICK, |p| p.tick(now));
    }

    pub fn reload(&mut self) {
        self.tell(Events::RELOAD, |p| p.reload());
    }
}

/// Logs a hook's panic (out of line: the per-message loops stay small).
#[cold]
#[inline(never)]
fn log_panic(name: &str, panic: &Box<dyn std::any::Any + Send>) {
    log::error!(
        "plugin {name}: panicked in a hook ({}); treated as a refusal",
        panic_message(panic)
    );
}

/// The text of a panic's payload, when it is a string.
fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> &str {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "no message"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::api::PluginOptions;
    use crate::protocol::ProtocolVersion;

    struct Fixed {
        name: &'static str,
        acl: Decision,
        panic_on: Option<&'static str>,
    }

    impl Plugin for Fixed {
        fn name(&self) -> &str {
            self.name
        }
        fn configure(&self, _: &PluginOptions) -> Result<(), String> {
            Ok(())
        }
        fn shard(&self, _: usize, _: usize) -> Box<dyn ShardPlugin> {
            Box::new(FixedShard {
                acl: self.acl.clone(),
                panic_on: self.panic_on,
            })
        }
    }

    struct FixedShard {
        acl: Decision,
        panic_on: Option<&'static str>,
    }

    impl ShardPlugin for FixedShard {
        fn events(&self) -> Events {
            Events::ACL_CHECK
        }
        fn acl_check(&mut self, _: &ClientInfo<'_>, topic: &str, _: Access) -> Decision {
            if Some(topic) == self.panic_on {
                panic!("boom on {topic}");
            }
            self.acl.clone()
        }
    }

    fn client() -> ClientInfo<'static> {
        ClientInfo {
            client_id: "c",
            username: None,
            protocol: ProtocolVersion::V5,
            peer: None,
            listener_port: 1883,
            certificate_identity: None,
        }
    }

    fn chain(plugins: Vec<Fixed>) -> ShardPlugins {
        let plugins: Vec<Arc<dyn Plugin>> = plugins
            .into_iter()
            .map(|p| Arc::new(p) as Arc<dyn Plugin>)
            .collect();
        ShardPlugins::new(&plugins, 0, 1)
    }

    #[test]
    fn first_that_decides_wins_and_pass_falls_through() {
        let fixed = |name, acl| Fixed {
            name,
            acl,
            panic_on: None,
        };
        let mut c = chain(vec![fixed("a", Decision::Pass), fixed("b", Decision::Deny)]);
        assert_eq!(c.acl_check(&client(), "t", Access::Read), Decision::Deny);
        let mut c = chain(vec![
            fixed("a", Decision::Allow),
            fixed("b", Decision::Deny),
        ]);
        assert_eq!(c.acl_check(&client(), "t", Access::Read), Decision::Allow);
        let mut c = chain(vec![fixed("a", Decision::Pass)]);
        assert_eq!(c.acl_check(&client(), "t", Access::Read), Decision::Pass);
        let mut c = chain(vec![fixed("a", Decision::Later)]);
        assert_eq!(c.acl_check(&client(), "t", Access::Read), Decision::Deny);
        let mut empty = chain(vec![]);
        assert!(empty.is_empty() && !empty.wants(Events::ACL_CHECK));
        assert_eq!(
            empty.acl_check(&client(), "t", Access::Read),
            Decision::Pass
        );
    }

    #[test]
    fn a_panic_is_a_refusal_and_the_chain_goes_on() {
        let mut c = chain(vec![Fixed {
            name: "p",
            acl: Decision::Allow,
            panic_on: Some("bad"),
        }]);
        assert_eq!(c.acl_check(&client(), "bad", Access::Read), Decision::Deny);
        assert_eq!(
            c.acl_check(&client(), "good", Access::Read),
            Decision::Allow
        );
    }
}
