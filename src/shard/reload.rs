//! Applying a configuration reload (SIGHUP) on a shard, without touching a connection: the
//! main thread re-reads the configuration and its files, and when all of it loaded, sends
//! every shard the same [`Reload`] through its inbox. Each shard applies it on its own
//! thread, in order with everything else it receives, so no lock guards the settings. A feature whose settings reload adds a field
//! here and a step in [`Shard::apply_reload`].

use std::time::Instant;

use super::conn::{ConnState, UNTRACKED_LISTENER};
use super::Shard;
use crate::auth::{Access, Auth};
use crate::config::BridgeConfig;

/// What a reload changes on the shards.
#[derive(Debug, Clone)]
pub struct Reload {
    /// Per configured listener, in configuration order (the order of each shard's
    /// listeners): its password file and ACL, and whether it allows anonymous clients.
    pub listeners: Vec<(Auth, bool)>,
    /// `sys_interval`, in seconds (0: off).
    pub sys_interval: u16,
    /// Every `connection` block of the new file (each shard runs those homed on it).
    pub bridges: Vec<BridgeConfig>,
}

impl Shard {
    /// Applies `reload` (shard thread only). New connections get the new password file and
    /// anonymous policy of their listener; connected clients keep their connection and get
    /// the new ACL at once (a topic the new file refuses is no longer delivered to them, and
    /// their next publish or subscribe is checked against it); the `$SYS` schedule changes;
    /// bridges are added, removed or restarted (`links::reload`).
    pub(crate) fn apply_reload(&mut self, reload: &Reload) {
        for (listener, (auth, allow_anonymous)) in self.listeners.iter_mut().zip(&reload.listeners)
        {
            listener.auth = auth.clone();
            listener.allow_anonymous = *allow_anonymous;
        }
        let (mut clients, mut refused) = (0, 0);
        for (_, conn) in self.conns.iter_mut() {
            if conn.listener == UNTRACKED_LISTENER {
                continue;
            }
            let Some((auth, _)) = reload.listeners.get(usize::from(conn.listener)) else {
                continue;
            };
            conn.auth = auth.clone();
            let ConnState::Active { session } = conn.state else {
                continue;
            };
            let Some(slot) = self.sessions.get_mut(session) else {
                continue;
            };
            let s = &mut slot.session;
            let acl = auth.client_acl(&s.client_id, s.acl.username());
            // A subscription the new ACL refuses stays (as mosquitto keeps it) but delivers
            // nothing: every delivery passes the read check in `offer`.
            let now_refused = s
                .subscriptions
                .keys()
                .filter(|f| !acl.allowed(f, Access::Subscribe))
                .count();
            if now_refused > 0 {
                clients += 1;
                refused += now_refused;
            }
            s.acl = acl;
        }
        if refused > 0 {
            log::info!(
                "Reload: {refused} subscription(s) of {clients} connected client(s) on shard {} \
                 are no longer allowed by the ACL and deliver nothing.",
                self.id
            );
        }
        self.sys_tree
            .set_interval(reload.sys_interval, Instant::now());
        self.reload_links(&reload.bridges);
        self.plugins_reloaded();
    }
}
