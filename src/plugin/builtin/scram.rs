//! `builtin:scram`: SCRAM-SHA-256 and SCRAM-SHA-512 as MQTT 5 Authentication Methods
//! (RFC 5802 / RFC 7677 over AUTH packets, re-authentication too), against the SCRAM
//! verifiers of the password file of the listener the client came through (`midge passwd -S`).
//!
//! The exchange, per connection:
//! ```text
//! CONNECT  method=SCRAM-SHA-256 data=client-first   -> AUTH 0x18 data=server-first
//! AUTH 0x18 data=client-final                        -> CONNACK 0 data=server-final (v=...)
//! ```
//! (the same with AUTH 0x19 ... AUTH 0x00 for re-authentication). A wrong proof, an unknown
//! user (who gets a decoy salt, so the answer does not tell which users exist), a user whose
//! line is not a verifier of this hash, or a SCRAM user other than CONNECT's User Name (when
//! there is one: the ACL knows the client by it) is refused: CONNACK / DISCONNECT 0x87.
//!
//! Cheap on the shard: the verifier holds StoredKey and ServerKey, so a proof costs two HMACs
//! and a hash; PBKDF2 runs only in `midge passwd -S`. The state between the two steps is this
//! shard's (`&mut self`), keyed by the connection, bounded ([`MAX_PENDING`], [`PENDING_FOR`]).
//!
//! The password file: the handler names the connection's (its listener's, or the broker's)
//! around each call of the chain ([`with_password_file`]), so a reloaded file applies at the
//! next exchange. With no password file the methods are not this plugin's (`Pass`: 0x8C).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::auth::scram::{self, Exchange, Mechanism};
use crate::auth::PasswordFile;
use crate::plugin::api::{
    AuthStep, ClientInfo, Events, ExtendedAuth, Later, Plugin, PluginOptions, ShardPlugin,
};

/// The most exchanges one shard holds between their two steps; more are refused until some
/// finish or expire (a flood of half-open exchanges costs at most this much memory).
pub const MAX_PENDING: usize = 10_000;
/// How long an exchange waits for client-final.
pub const PENDING_FOR: Duration = Duration::from_secs(30);

thread_local! {
    /// The password file of the connection whose auth step the chain is running (set by the
    /// handler around the call; the shard's thread runs one call at a time).
    static PASSWORDS: RefCell<Option<Arc<PasswordFile>>> = const { RefCell::new(None) };
    /// The user the last call authenticated (set on `Success`, taken by the handler right
    /// after the chain returns: a client that gave no CONNECT user name is known by it).
    static AUTHENTICATED: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The user a SCRAM exchange just authenticated in the chain call [`with_password_file`]
/// ran, if it did (taken: a second call answers `None`).
pub fn take_authenticated_user() -> Option<String> {
    AUTHENTICATED.with(|a| a.borrow_mut().take())
}

/// Runs `f` (a call of the plugin chain) with `passwords` as the connection's password file
/// for `builtin:scram`.
pub fn with_password_file<R>(passwords: Option<Arc<PasswordFile>>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Arc<PasswordFile>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            PASSWORDS.with(|p| *p.borrow_mut() = previous);
        }
    }
    let previous = PASSWORDS.with(|p| std::mem::replace(&mut *p.borrow_mut(), passwords));
    AUTHENTICATED.with(|a| a.borrow_mut().take());
    let _restore = Restore(previous);
    f()
}

fn password_file() -> Option<Arc<PasswordFile>> {
    PASSWORDS.with(|p| p.borrow().clone())
}

/// The plugin as loaded (no options; shared by all shards).
#[derive(Debug)]
pub struct Scram {
    /// Derives the decoy salts of unknown users: random per process, so they look like
    /// real salts yet stay the same for a user from one attempt to the next.
    secret: [u8; 32],
}

/// `plugin builtin:scram` (also loaded without a line whenever a password file is
/// configured).
pub fn new(options: &PluginOptions) -> Result<Arc<dyn Plugin>, String> {
    let plugin = Scram::new()?;
    plugin.configure(options)?;
    Ok(Arc::new(plugin))
}

/// Whether `config` gets `builtin:scram` without a `plugin` line: when a password file is
/// configured (globally or for a listener) and no line names it already.
pub fn by_default(config: &crate::config::Config) -> bool {
    let has_line = config
        .plugins
        .iter()
        .any(|p| p.source == crate::config::PluginSource::Builtin("scram".into()));
    let has_file = config.password_file.is_some()
        || config.listeners.iter().any(|l| l.password_file.is_some());
    has_file && !has_line
}

impl Scram {
    pub fn new() -> Result<Scram, String> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| format!("cannot get random bytes: {e}"))?;
        Ok(Scram { secret })
    }
}

impl Plugin for Scram {
    fn name(&self) -> &str {
        "builtin:scram"
    }

    fn configure(&self, options: &PluginOptions) -> Result<(), String> {
        match options.keys().next() {
            Some(key) => Err(format!(
                "unknown option plugin_opt_{key} (builtin:scram takes none: it uses the \
                 listener's password_file)"
            )),
            None => Ok(()),
        }
    }

    fn shard(&self, _shard: usize, _shards: usize) -> Box<dyn ShardPlugin> {
        Box::new(ScramShard {
            secret: self.secret,
            pending: HashMap::new(),
        })
    }
}

/// A connection, as far as this plugin needs to tell them apart: its peer address (with its
/// port) and its listener. Unique among live connections.
type ConnKey = (Option<SocketAddr>, u16);

struct Pending {
    exchange: Exchange,
    /// The SCRAM user, for the log.
    username: String,
    since: Instant,
}

/// One shard's exchanges between server-first and client-final.
pub struct ScramShard {
    secret: [u8; 32],
    pending: HashMap<ConnKey, Pending>,
}

impl ScramShard {
    /// Room for one more pending exchange: expired ones go first.
    fn make_room(&mut self, now: Instant) -> bool {
        if self.pending.len() >= MAX_PENDING {
            self.pending
                .retain(|_, p| now.saturating_duration_since(p.since) < PENDING_FOR);
        }
        self.pending.len() < MAX_PENDING
    }

    fn first(
        &mut self,
        key: ConnKey,
        client: &ClientInfo<'_>,
        mechanism: Mechanism,
        passwords: &PasswordFile,
        data: &[u8],
    ) -> ExtendedAuth {
        let first = match scram::parse_client_first(data) {
            Ok(first) => first,
            Err(e) => {
                log::info!(
                    "{} from {}: bad client-first message: {e}.",
                    mechanism.name(),
                    peer(client)
                );
                return ExtendedAuth::Deny;
            }
        };
        if let Some(name) = client.username {
            if name != first.username {
                log::info!(
                    "{} from {}: SCRAM user '{}' is not CONNECT's user name '{name}'.",
                    mechanism.name(),
                    peer(client),
                    first.username
                );
                return ExtendedAuth::Deny;
            }
        }
        let now = Instant::now();
        if !self.make_room(now) {
            log::warn!(
                "{}: {MAX_PENDING} exchanges pending on this shard; refusing {}.",
                mechanism.name(),
                peer(client)
            );
            return ExtendedAuth::Deny;
        }
        let verifier = passwords
            .scram_verifier(&first.username, mechanism)
            .cloned()
            .unwrap_or_else(|| scram::decoy_verifier(mechanism, &first.username, &self.secret));
        let nonce = match scram::random_nonce() {
            Ok(n) => n,
            Err(e) => {
                log::error!("{}: {e}", mechanism.name());
                return ExtendedAuth::Deny;
            }
        };
        let (exchange, server_first) = Exchange::start(&first, verifier, &nonce);
        self.pending.insert(
            key,
            Pending {
                exchange,
                username: first.username,
                since: now,
            },
        );
        ExtendedAuth::Continue(Bytes::from(server_first))
    }

    fn last(&mut self, key: ConnKey, client: &ClientInfo<'_>, data: &[u8]) -> ExtendedAuth {
        let Some(pending) = self.pending.remove(&key) else {
            log::info!(
                "SCRAM from {}: client-final without an exchange.",
                peer(client)
            );
            return ExtendedAuth::Deny;
        };
        let name = pending.exchange.mechanism().name();
        if pending.since.elapsed() >= PENDING_FOR {
            log::info!("{name} from {}: the exchange expired.", peer(client));
            return ExtendedAuth::Deny;
        }
        match pending.exchange.finish(data) {
            Ok(server_final) => {
                log::debug!("{name}: '{}' authenticated.", pending.username);
                AUTHENTICATED.with(|a| *a.borrow_mut() = Some(pending.username.clone()));
                ExtendedAuth::Success(Some(Bytes::from(server_final)))
            }
            Err(e) => {
                log::info!(
                    "{name} from {}: user '{}' refused: {e}.",
                    peer(client),
                    pending.username
                );
                ExtendedAuth::Deny
            }
        }
    }
}

/// This plugin answers at once: its handle goes without the refusal a dropped handle
/// delivers (one inbox message and wake-up of the shard per step, for nothing: the answer is
/// already taken as stale, but it costs). Crate-internal: the sink is `pub(crate)`.
fn discard(mut later: Later) {
    later.inner = None;
}

fn peer(client: &ClientInfo<'_>) -> String {
    client
        .peer
        .map_or_else(|| "?".to_owned(), |p| p.to_string())
}

impl ShardPlugin for ScramShard {
    fn events(&self) -> Events {
        Events::EXTENDED_AUTH | Events::TICK
    }

    fn extended_auth(
        &mut self,
        client: &ClientInfo<'_>,
        step: &AuthStep<'_>,
        later: Later,
    ) -> ExtendedAuth {
        discard(later);
        let Some(mechanism) = Mechanism::from_name(step.method) else {
            return ExtendedAuth::Pass;
        };
        let Some(passwords) = password_file() else {
            return ExtendedAuth::Pass;
        };
        let key = (client.peer, client.listener_port);
        let data = step.data.unwrap_or_default();
        if step.start {
            self.first(key, client, mechanism, &passwords, data)
        } else {
            self.last(key, client, data)
        }
    }

    fn tick(&mut self, now: Instant) {
        if !self.pending.is_empty() {
            self.pending
                .retain(|_, p| now.saturating_duration_since(p.since) < PENDING_FOR);
        }
    }
}

#[cfg(test)]
#[path = "scram_tests.rs"]
mod tests;
