//! `plugin builtin:http`: authentication, superuser and ACL answered by an HTTP(S) server,
//! in EMQX's or mosquitto-go-auth's shape ([`shape`]).
//!
//! Nothing here waits on the network on a shard:
//! - **Authentication** answers from the shared cache when it can; otherwise it queues a job
//!   for the workers ([`pool`]) and answers [`Decision::Later`]; the worker answers through
//!   the [`Later`]. A full queue denies at once ("server busy").
//! - **Superuser**: the worker records the verdict in a shared hand-off table before it
//!   answers; the `connect` hook of the shard that ends up holding the session (the client
//!   id's home shard, not always the one that authenticated it) takes it out (one lock per
//!   CONNECT) into its own set, and that shard allows the client's every ACL check.
//! - **ACL** (the hook is synchronous by contract and runs per delivered message): answered
//!   from the shard's own cache ([`cache`]). A miss is *deny-and-fetch*: the check is refused
//!   now, a job fetches the answer, and the next check of the same (client, topic, access)
//!   within `http_cache_seconds` is answered from it. So the first SUBSCRIBE to a new filter
//!   is refused (the client may retry), the first PUBLISH on a new topic is refused (MQTT 5:
//!   PUBACK 0x87), and the first message delivered on a new topic is not delivered to that
//!   client. This is the price of never blocking a shard; a server that wants no refusals
//!   answers `ignore` (EMQX) and leaves the decision to the ACL file.

pub mod cache;
pub mod client;
pub mod config;
pub mod pool;
pub mod shape;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use sha2::{Digest, Sha256};

use self::cache::{AclCache, Answer};
use self::config::HttpConfig;
use self::pool::{Job, Note};
use self::shape::{Shape, Verdict, Who};
use crate::auth::Access;
use crate::plugin::{
    ClientInfo, Credentials, Decision, Events, Later, Plugin, PluginOptions, ShardPlugin,
};

/// What every shard and worker share.
pub struct Shared {
    config: RwLock<Option<Arc<HttpConfig>>>,
    jobs: OnceLock<Sender<Job>>,
    /// Authentication answers by hash of (client id, user name, password).
    auth_cache: Mutex<HashMap<[u8; 32], (Verdict, Instant)>>,
    /// Superuser verdicts between authentication and the `connect` hook (see the module doc).
    handoff: Mutex<HashMap<String, bool>>,
    /// HTTP requests made (for tests and logs).
    requests: AtomicU64,
}

impl Shared {
    fn config(&self) -> Arc<HttpConfig> {
        let guard = self.config.read().unwrap_or_else(|e| e.into_inner());
        guard.clone().expect("configured before use")
    }

    fn cached_auth(&self, key: &[u8; 32], now: Instant) -> Option<Verdict> {
        let cache = self.auth_cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(key)
            .filter(|(_, exp)| *exp > now)
            .map(|(v, _)| *v)
    }

    /// Records whether `client_id`, just allowed, is a superuser (bounded: a CONNECT allowed
    /// and then refused for another reason leaves an entry until the next of its client id).
    fn hand_off(&self, client_id: &str, superuser: bool) {
        let mut h = self.handoff.lock().unwrap_or_else(|e| e.into_inner());
        if h.len() >= 100_000 {
            h.clear();
        }
        h.insert(client_id.to_string(), superuser);
    }

    fn cache_auth(&self, key: [u8; 32], verdict: Verdict, expires: Instant) {
        let max = self.config().cache_entries;
        let mut cache = self.auth_cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= max {
            let now = Instant::now();
            cache.retain(|_, (_, exp)| *exp > now);
            if cache.len() >= max {
                cache.clear();
            }
        }
        cache.insert(key, (verdict, expires));
    }
}

/// `plugin builtin:http`'s constructor (the registry's row): checks the options; the
/// registry's [`Plugin::configure`] call then applies them and starts the workers.
pub fn new(options: &PluginOptions) -> Result<Arc<dyn Plugin>, String> {
    HttpConfig::parse(options)?;
    Ok(Arc::new(HttpPlugin::new()))
}

/// The plugin as loaded.
pub struct HttpPlugin {
    shared: Arc<Shared>,
}

impl Default for HttpPlugin {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpPlugin {
    pub fn new() -> HttpPlugin {
        HttpPlugin {
            shared: Arc::new(Shared {
                config: RwLock::new(None),
                jobs: OnceLock::new(),
                auth_cache: Mutex::new(HashMap::new()),
                handoff: Mutex::new(HashMap::new()),
                requests: AtomicU64::new(0),
            }),
        }
    }

    /// HTTP requests made so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }
}

impl Plugin for HttpPlugin {
    fn name(&self) -> &str {
        "http"
    }

    fn configure(&self, options: &PluginOptions) -> Result<(), String> {
        let config = Arc::new(HttpConfig::parse(options)?);
        if self.shared.jobs.get().is_none() {
            let (tx, rx) = crossbeam_channel::bounded(config.queue);
            pool::start(config.workers, rx, Arc::downgrade(&self.shared));
            let _ = self.shared.jobs.set(tx);
        }
        let mut guard = self
            .shared
            .config
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(old) = guard.as_ref() {
            if old.workers != config.workers || old.queue != config.queue {
                log::info!("plugin http: http_workers and http_queue apply at the next start");
            }
        }
        // Answers cached under the old options may be wrong under the new ones.
        self.shared
            .auth_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        *guard = Some(config);
        Ok(())
    }

    fn shard(&self, _shard: usize, _shards: usize) -> Box<dyn ShardPlugin> {
        let config = self.shared.config();
        let (notes_tx, notes_rx) = crossbeam_channel::unbounded();
        let mut events = Events::CONNECT | Events::DISCONNECT | Events::TICK | Events::RELOAD;
        if config.auth_url.is_some() {
            events = events | Events::BASIC_AUTH;
        }
        let superusers = config.auth_url.is_some()
            && (config.shape == Shape::Emqx || config.superuser_url.is_some());
        if config.acl_url.is_some() || superusers {
            events = events | Events::ACL_CHECK;
        }
        Box::new(HttpShard {
            shared: self.shared.clone(),
            acl: AclCache::new(config.cache_entries),
            config,
            events,
            notes_tx,
            notes_rx,
            superusers: HashSet::new(),
            now: Instant::now(),
        })
    }
}

/// The plugin on one shard.
pub struct HttpShard {
    shared: Arc<Shared>,
    config: Arc<HttpConfig>,
    events: Events,
    notes_tx: Sender<Note>,
    notes_rx: Receiver<Note>,
    /// Clients of this shard that the server called superusers.
    superusers: HashSet<String>,
    acl: AclCache,
    /// The last tick's time: TTLs are checked against it, not a clock read per message.
    now: Instant,
}

fn who(client: &ClientInfo<'_>) -> Who {
    Who {
        client_id: client.client_id.to_string(),
        username: client.username.map(str::to_string),
        peer_ip: client.peer.map(|p| p.ip().to_string()),
        listener_port: client.listener_port,
    }
}

/// Lets go of a [`Later`] the hook did not defer with: dropped during its hook it sends
/// nothing (the chain's contract), so this is a plain drop, named for the reader.
fn unused(later: Later) {
    drop(later);
}

fn auth_key(client: &ClientInfo<'_>, creds: &Credentials<'_>) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [
        client.client_id.as_bytes(),
        creds.username.unwrap_or_default().as_bytes(),
        creds.password.unwrap_or_default(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

impl HttpShard {
    /// Takes in what the workers sent (an empty channel costs one atomic load).
    fn drain(&mut self) {
        while let Ok(note) = self.notes_rx.try_recv() {
            match note {
                Note::Acl {
                    client_id,
                    topic,
                    acc,
                    answer,
                } => {
                    let ttl = self.config.cache_ttl.max(Duration::from_secs(1));
                    let now = Instant::now();
                    self.acl
                        .put(&client_id, &topic, acc, answer, now + ttl, now);
                }
            }
        }
    }
}

impl ShardPlugin for HttpShard {
    fn events(&self) -> Events {
        self.events
    }

    fn basic_auth(
        &mut self,
        client: &ClientInfo<'_>,
        creds: &Credentials<'_>,
        later: Later,
    ) -> Decision {
        // Without credentials the listener's allow_anonymous decides (the server is not asked).
        if self.config.auth_url.is_none() || (creds.username.is_none() && creds.password.is_none())
        {
            unused(later);
            return Decision::Pass;
        }
        self.drain();
        let key = auth_key(client, creds);
        if !self.config.cache_ttl.is_zero() {
            if let Some(v) = self.shared.cached_auth(&key, Instant::now()) {
                unused(later);
                return match v {
                    Verdict::Allow { superuser } => {
                        self.shared.hand_off(client.client_id, superuser);
                        Decision::Allow
                    }
                    Verdict::Deny => Decision::Deny,
                    Verdict::Ignore => Decision::Pass,
                };
            }
        }
        let Some(jobs) = self.shared.jobs.get() else {
            unused(later);
            return Decision::Deny;
        };
        let mut who = who(client);
        who.username = creds.username.map(str::to_string);
        let job = Job::Auth {
            who,
            password: creds.password.map(<[u8]>::to_vec),
            cache_key: key,
            later,
        };
        match jobs.try_send(job) {
            Ok(()) => Decision::Later,
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => {
                if let Job::Auth { later, .. } = job {
                    unused(later);
                }
                log::warn!(
                    "plugin http: authentication of client {:?}: the HTTP workers are busy \
                     (http_queue {} full); denied",
                    client.client_id,
                    self.config.queue
                );
                Decision::Deny
            }
        }
    }

    fn acl_check(&mut self, client: &ClientInfo<'_>, topic: &str, access: Access) -> Decision {
        if !self.notes_rx.is_empty() {
            self.drain();
        }
        if !self.superusers.is_empty() && self.superusers.contains(client.client_id) {
            return Decision::Allow;
        }
        if self.config.acl_url.is_none()
            || (self.config.shape == Shape::Emqx && access == Access::Read)
        {
            return Decision::Pass;
        }
        let acc = shape::acc(access);
        match self.acl.get(client.client_id, topic, acc, self.now) {
            Some(Answer::Allow) => return Decision::Allow,
            Some(Answer::Deny | Answer::Pending) => return Decision::Deny,
            Some(Answer::Pass) => return Decision::Pass,
            None => {}
        }
        // Deny-and-fetch (see the module's doc).
        let pending_until = self.now + self.config.timeout + Duration::from_secs(1);
        self.acl.put(
            client.client_id,
            topic,
            acc,
            Answer::Pending,
            pending_until,
            self.now,
        );
        let job = Job::Acl {
            who: who(client),
            topic: topic.to_string(),
            access,
            reply: self.notes_tx.clone(),
        };
        if let Some(jobs) = self.shared.jobs.get() {
            if jobs.try_send(job).is_err() {
                log::warn!(
                    "plugin http: ACL check of client {:?} on {topic:?}: workers busy",
                    client.client_id
                );
                self.acl.put(
                    client.client_id,
                    topic,
                    acc,
                    Answer::Pending,
                    self.now,
                    self.now,
                );
            }
        }
        log::debug!(
            "plugin http: ACL of client {:?} on {topic:?} ({access:?}) not cached yet: denied, asking",
            client.client_id
        );
        Decision::Deny
    }

    fn connect(&mut self, client: &ClientInfo<'_>) {
        self.drain();
        let handed = {
            let mut h = self
                .shared
                .handoff
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            h.remove(client.client_id)
        };
        match handed {
            Some(true) => {
                self.superusers.insert(client.client_id.to_string());
            }
            _ => {
                self.superusers.remove(client.client_id);
            }
        }
    }

    fn disconnect(&mut self, client: &ClientInfo<'_>, _graceful: bool) {
        self.drain();
        self.superusers.remove(client.client_id);
        if self.config.acl_url.is_some() {
            self.acl.forget_client(client.client_id);
        }
    }

    fn tick(&mut self, now: Instant) {
        self.now = now;
        self.drain();
    }

    fn reload(&mut self) {
        self.config = self.shared.config();
    }
}

#[cfg(test)]
mod tests;
