//! SIGHUP: re-reading the configuration while the broker runs, as mosquitto does. The main
//! thread reads the file and every file it names; only when all of it loaded does anything
//! change: the log settings here, and everything the shards hold through one
//! [`Reload`](crate::shard::reload::Reload) pushed to each shard's inbox. A bad file leaves
//! every setting as it was and the error says which file and line.
//!
//! What reloads: `password_file` and `acl_file` (global, or per listener with
//! `per_listener_settings`), `allow_anonymous`, `log_dest`, `log_type`, `sys_interval`, and
//! the TLS listeners' certificate, key and CA files, and bridges (`connection` blocks added,
//! removed or changed; an unchanged bridge keeps its connection). Listeners, shards, persistence and limits
//! need a restart. Open connections stay up: connected clients keep their session and get
//! the new ACL at once; a new password file (the first one too: it starts the
//! password-checking threads) applies from the next CONNECT.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{default_listeners, listener_policy, Broker};
use crate::auth::Auth;
use crate::config::Config;
use crate::shard::inbox::{Batch, ShardMsg};
use crate::shard::reload::Reload;

/// How long the main thread keeps trying to queue a reload to a shard whose inbox is full
/// (only a shard stalled for that long refuses it).
const PUSH_FOR: Duration = Duration::from_secs(5);

impl Broker {
    /// Re-reads the configuration file the broker started with and applies what may change
    /// while running (see the module). Returns what changed, one line each, or why nothing
    /// did (`FILE:LINE: problem` for a bad line).
    pub fn reload(&self) -> Result<Vec<String>, String> {
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        let Some(path) = applied.source.clone() else {
            return Err("no configuration file to re-read".into());
        };
        let config = Config::from_file(&path).map_err(|e| e.to_string())?;
        let reload = self.prepare(&config)?;
        let log_changes = crate::logging::reconfigure(&config).map_err(|e| e.to_string())?;
        let mut changes = describe(&applied, &config, &reload);
        changes.extend(log_changes);
        // The plugins take their new options before the shards' reload hooks run.
        match self.shared.plugins.reconfigure(&config.plugins) {
            Ok(plugin_changes) => changes.extend(plugin_changes),
            Err(e) => {
                log::warn!("Reload: {e}.");
                changes.push(format!("plugins unchanged: {e}"));
            }
        }
        let reload = Arc::new(reload);
        for (id, peer) in self.peers.iter().enumerate() {
            let deadline = Instant::now() + PUSH_FOR;
            let mut batch = Batch {
                from: id as u16,
                items: vec![ShardMsg::Reload(reload.clone())],
            };
            loop {
                match peer.push(batch) {
                    Ok(()) => break,
                    Err(e) if e.is_full() && Instant::now() < deadline => {
                        batch = e.into_inner();
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => {
                        log::error!("Reload: shard {id} did not take the new settings.");
                        break;
                    }
                }
            }
            peer.wake();
        }
        *applied = config;
        Ok(changes)
    }

    /// Loads everything `config` names that the shards use, checking it as start-up does.
    fn prepare(&self, config: &Config) -> Result<Reload, String> {
        let global = Auth::load(config).map_err(|e| e.to_string())?;
        let listeners = match config.listeners.is_empty() {
            true => default_listeners(),
            false => config.listeners.clone(),
        };
        if listeners.len() != self.addrs.len() {
            return Err(format!(
                "{} listener(s) configured where {} run: listeners change only with a restart",
                listeners.len(),
                self.addrs.len()
            ));
        }
        // Listener addresses as they run (a `-p` port or port 0 resolved): the policy of a
        // listener depends on whether it is loopback only.
        let mut policies = Vec::new();
        for (l, addr) in listeners.iter().zip(&self.addrs) {
            let l = crate::config::Listener {
                addr: *addr,
                ..l.clone()
            };
            policies.push(listener_policy(config, &l, &global).map_err(|e| e.to_string())?);
        }
        if policies.iter().any(|(a, _)| a.passwords.is_some()) {
            // The first password file (at start or now) starts the password-checking threads,
            // before any shard can hand them a check.
            let worker = self.shared.auth_worker.as_ref();
            worker
                .ok_or("no password checker in this broker")?
                .ensure_running()
                .map_err(|e| format!("cannot start the password checker: {e}"))?;
        }
        if let Some(password) = &self.shared.plugins.password {
            let ports = self.addrs.iter().map(|a| a.port());
            password.set_files(ports.zip(policies.iter().map(|(a, _)| a.passwords.clone())));
        }
        Ok(Reload {
            listeners: policies,
            sys_interval: config.sys_interval,
            bridges: config.bridges.clone(),
        })
    }
}

/// One line per setting that changed or was re-read.
fn describe(old: &Config, new: &Config, reload: &Reload) -> Vec<String> {
    let mut out = Vec::new();
    let files = |c: &Config| -> Vec<String> {
        let mut v: Vec<String> = [&c.password_file, &c.acl_file]
            .into_iter()
            .chain(
                c.listeners
                    .iter()
                    .flat_map(|l| [&l.password_file, &l.acl_file]),
            )
            .flatten()
            .map(|p| p.display().to_string())
            .collect();
        v.dedup();
        v
    };
    for file in files(new) {
        out.push(format!("re-read {file}"));
    }
    for file in files(old) {
        if !files(new).contains(&file) {
            out.push(format!("no longer used: {file}"));
        }
    }
    if old.sys_interval != new.sys_interval {
        out.push(format!(
            "sys_interval {} -> {}",
            old.sys_interval, reload.sys_interval
        ));
    }
    for b in &new.bridges {
        match old.bridges.iter().find(|o| o.name == b.name) {
            None => out.push(format!("bridge {} added", b.name)),
            Some(o) if !o.same_settings(b) => out.push(format!("bridge {} changed", b.name)),
            Some(_) => {}
        }
    }
    for o in &old.bridges {
        if !new.bridges.iter().any(|b| b.name == o.name) {
            out.push(format!("bridge {} removed", o.name));
        }
    }
    if old.allow_anonymous != new.allow_anonymous {
        out.push(format!(
            "allow_anonymous {:?} -> {:?}",
            old.allow_anonymous, new.allow_anonymous
        ));
    }
    out
}
