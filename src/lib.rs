//! midge: an MQTT broker built on sharded, single-threaded mio event loops.
//!
//! # Layout
//! - [`protocol`]: the pure codec (bytes <-> packets) for MQTT 3.1, 3.1.1 and 5.0.
//! - [`auth`]: mosquitto password files, ACL files, `midge passwd`, password checks off the loop.
//! - [`config`]: mosquitto.conf-syntax configuration with `FILE:LINE` errors.
//! - [`broker`]: start-up and shutdown: listeners, shards, threads.
//! - [`shard`]: one event loop per thread that owns its connections and sessions; cross-shard
//!   traffic goes through per-shard inboxes (`shard::inbox`).
//! - `handle`: what the broker does for each packet type (one file per family).
//! - [`session`]: the pure per-client state machine (QoS flows, inflight window, queue).
//! - [`index`]: the subscription trie, one replica per shard.
//! - [`retain`]: the retained-message store.
//! - [`record`]: the session records the store persists too (flow state, subscription).
//! - [`message`]: a routed message, shared by every subscriber as one `Arc`.
//! - [`transport`]: the byte stream under a connection: plain TCP or TLS (rustls), one type.
//! - [`link`]: outgoing MQTT connections (the broker as a client), driven by any mio loop.
//! - [`process`]: the pid file and the switch from root to `user`.
//! - [`logging`]: one line per event, filtered by `log_type`, to `log_dest`.
//! - [`store`]: crash-safe persistence (retained messages, sessions, queued messages), group commit.

pub mod auth;
pub mod bridge;
pub mod broker;
pub mod cluster;
pub mod config;
mod handle;
pub mod index;
pub mod link;
pub mod logging;
pub mod message;
pub mod metrics;
pub mod plugin;
pub mod process;
pub mod protocol;
pub mod reactor;
pub mod record;
pub mod retain;
pub mod session;
pub mod shard;
pub mod store;
pub mod transport;

pub use broker::Broker;

/// Internals the fuzz targets in `fuzz/` drive directly; not an API.
#[doc(hidden)]
pub mod fuzzing {
    /// One password-file line split as the broker and `midge passwd` split it.
    pub fn password_split_line(raw: &str) -> Result<Option<(&str, &str)>, &'static str> {
        crate::auth::password::split_line(raw)
    }

    /// A JWT as a client's CONNECT carries it, verified against one key of each kind (an
    /// HS256 secret, an RSA public key, a P-256 point; all made up, so nothing verifies but
    /// every parsing path runs) with an audience and an issuer to check. Whether it verified.
    pub fn jwt_verify(token: &str) -> bool {
        use crate::plugin::builtin::jwt::keys::Key;
        use crate::plugin::builtin::jwt::token::{verify, Rules};
        let keys = [
            (
                Some("h".to_string()),
                Key::Hmac(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"secret")),
            ),
            (
                Some("r".to_string()),
                Key::RsaParts {
                    n: vec![0xC5; 256],
                    e: vec![1, 0, 1],
                },
            ),
            (None, Key::P256(vec![4; 65])),
        ];
        let rules = Rules {
            leeway: 5,
            audience: Some("midge".into()),
            issuer: Some("issuer".into()),
        };
        verify(token, &keys, &rules, 1_800_000_000).is_ok()
    }
}

/// Runs the broker with `config` until SIGINT/SIGTERM, then stops it cleanly. SIGHUP re-reads
/// the configuration file and applies what may change while running (password and ACL files,
/// log settings, `sys_interval`; see `broker::reload`) and reloads the TLS listeners'
/// certificate, key and CA files, as mosquitto does. Blocks the calling thread.
pub fn run(config: config::Config) -> std::io::Result<()> {
    run_then(config, |_| Ok(()))
}

/// [`run`], calling `started` once the broker is bound and serving (to write the pid file and
/// leave root); an error from it stops the broker.
pub fn run_then<T>(
    config: config::Config,
    started: impl FnOnce(&config::Config) -> std::io::Result<T>,
) -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    let settings = config.clone();
    let broker = Broker::start(config)?;
    let _kept = match started(&settings) {
        Ok(kept) => kept,
        Err(e) => {
            let _ = broker.shutdown();
            return Err(e);
        }
    };
    for sig in signals.forever() {
        if sig == SIGHUP {
            log::info!("midge received SIGHUP, reloading the configuration.");
            match broker.reload() {
                Ok(changes) if changes.is_empty() => log::info!("Reload: nothing changed."),
                Ok(changes) => {
                    for change in changes {
                        log::info!("Reload: {change}.");
                    }
                }
                Err(e) => log::error!("Reload failed, the previous settings stay in use: {e}"),
            }
            for e in broker.reload_tls() {
                log::error!("TLS reload failed, the previous files stay in use: {e}");
            }
            log::info!("Reload finished.");
            continue;
        }
        log::info!("midge received signal {sig}, shutting down.");
        break;
    }
    broker.shutdown()?;
    log::info!("midge stopped.");
    Ok(())
}
