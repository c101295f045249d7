//! The password file (`password_file`) as a plugin of the chain, placed after the configured
//! plugins as mosquitto places it. Its basic-auth hook hands the check to the
//! [`AuthWorker`](crate::auth::AuthWorker)'s threads and answers [`Decision::Later`]: the
//! client is parked, the shard goes on, and the worker's verdict comes back through the
//! shard's inbox like any plugin's deferred answer. The worker pool is the first user of that
//! path.
//!
//! It decides only for a client with a user name on a listener with a password file; for any
//! other it passes, and the listener's `allow_anonymous` decides (the chain's default).

use std::sync::{Arc, RwLock};

use crate::auth::{AuthClient, AuthRequest, PasswordFile};
use crate::plugin::api::{
    ClientInfo, Credentials, Decision, Events, Later, Plugin, PluginOptions, ShardPlugin,
};

/// The chain's name of this plugin (logs; the chain tells it from the configured plugins).
pub const NAME: &str = "password_file";

/// Each listener's password file, by port (`per_listener_settings`; otherwise every listener
/// has the global one). Replaced at start and at each reload.
type Files = Vec<(u16, Arc<PasswordFile>)>;

/// The built-in password-file plugin (one per broker).
pub struct PasswordPlugin {
    files: Arc<RwLock<Files>>,
    worker: AuthClient,
}

impl PasswordPlugin {
    /// A plugin that checks through `worker` (a client of the broker's `AuthWorker`).
    pub fn new(worker: AuthClient) -> PasswordPlugin {
        PasswordPlugin {
            files: Default::default(),
            worker,
        }
    }

    /// The password file of each listener port (`None`: that listener has none).
    pub fn set_files(&self, files: impl IntoIterator<Item = (u16, Option<Arc<PasswordFile>>)>) {
        let files: Files = files
            .into_iter()
            .filter_map(|(port, f)| Some((port, f?)))
            .collect();
        *self.files.write().unwrap_or_else(|e| e.into_inner()) = files;
    }
}

impl Plugin for PasswordPlugin {
    fn name(&self) -> &str {
        NAME
    }
    fn configure(&self, _options: &PluginOptions) -> Result<(), String> {
        Ok(())
    }
    fn shard(&self, _shard: usize, _shards: usize) -> Box<dyn ShardPlugin> {
        Box::new(PasswordShard {
            files: self.files.clone(),
            worker: self.worker.clone(),
        })
    }
}

struct PasswordShard {
    files: Arc<RwLock<Files>>,
    worker: AuthClient,
}

impl ShardPlugin for PasswordShard {
    fn events(&self) -> Events {
        Events::BASIC_AUTH
    }

    /// One read lock per CONNECT (never per message) to find the listener's file.
    fn basic_auth(
        &mut self,
        client: &ClientInfo<'_>,
        creds: &Credentials<'_>,
        later: Later,
    ) -> Decision {
        let Some(username) = creds.username else {
            return Decision::Pass; // anonymous: allow_anonymous decides
        };
        let passwords = {
            let files = self.files.read().unwrap_or_else(|e| e.into_inner());
            match files.iter().find(|(port, _)| *port == client.listener_port) {
                Some((_, f)) => f.clone(),
                None => return Decision::Pass,
            }
        };
        let request = AuthRequest {
            token: 0,
            username: username.to_owned(),
            password: creds.password.unwrap_or_default().to_vec(),
            passwords,
        };
        let answer = move |allowed| {
            later.answer(if allowed {
                Decision::Allow
            } else {
                Decision::Deny
            })
        };
        if self.worker.submit_then(request, answer) {
            return Decision::Later;
        }
        log::warn!(
            "Too many password checks pending: refusing {}.",
            client.client_id
        );
        Decision::Deny
    }
}
