//! The Rust test plugin of tests/plugins.rs: every hook, each behaviour keyed by a name the
//! test chooses (a user name, a topic), every call recorded for the test to look at. And a
//! logger that keeps the broker's error lines, to see that a panic was logged.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use midge::auth::Access;
use midge::plugin::{
    ClientInfo, Credentials, Decision, Events, Later, MessageIn, MessageOut, Plugin, PluginOptions,
    SessionEnd, ShardPlugin, Verdict,
};
use midge::protocol::QoS;

/// What the plugin saw, one line per call, shared by all shards' states.
#[derive(Default)]
pub struct Seen {
    pub lines: Mutex<Vec<String>>,
    pub message_out: std::sync::atomic::AtomicUsize,
    pub ticks: std::sync::atomic::AtomicUsize,
}

impl Seen {
    fn push(&self, line: String) {
        self.lines.lock().unwrap().push(line);
    }

    /// Whether some line starts with `prefix`.
    pub fn has(&self, prefix: &str) -> bool {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with(prefix))
    }

    pub fn dump(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

/// The test plugin. Basic auth by user name: `good` allowed, `bad` refused, `slow` allowed
/// after 2 s through [`Later`], `lost` defers and drops its handle, `boom` panics, anyone
/// else passes (to the password file).
/// ACL: `deny/pub/..` may not be published, `deny/sub/..` not subscribed, `deny/recv/..` not
/// received, `boom/..` panics. Message in: `rewrite/in` becomes `rewritten/out` with its
/// payload in capitals, `drop/me` is dropped.
pub struct TestPlugin {
    pub seen: Arc<Seen>,
}

impl Plugin for TestPlugin {
    fn name(&self) -> &str {
        "test"
    }
    fn configure(&self, options: &PluginOptions) -> Result<(), String> {
        self.seen.push(format!("configure {options:?}"));
        Ok(())
    }
    fn shard(&self, shard: usize, _shards: usize) -> Box<dyn ShardPlugin> {
        Box::new(TestShard {
            seen: self.seen.clone(),
            shard,
            kept: Vec::new(),
        })
    }
}

struct TestShard {
    seen: Arc<Seen>,
    shard: usize,
    /// Handles of deferrals that are never answered (user `forever`).
    kept: Vec<Later>,
}

impl ShardPlugin for TestShard {
    fn events(&self) -> Events {
        Events(u32::MAX >> (32 - 12)) // every hook
    }

    fn basic_auth(
        &mut self,
        c: &ClientInfo<'_>,
        creds: &Credentials<'_>,
        later: Later,
    ) -> Decision {
        let user = creds.username.unwrap_or("");
        self.seen.push(format!(
            "auth {user} id={} port={} peer={}",
            c.client_id,
            c.listener_port,
            c.peer.is_some()
        ));
        match user {
            "good" => Decision::Allow,
            "bad" => Decision::Deny,
            "boom" => panic!("test plugin: boom in basic_auth"),
            "lost" => {
                drop(later); // a buggy plugin: defers, but nobody will answer
                Decision::Later
            }
            "forever" => {
                // A buggy plugin: keeps the handle and never answers.
                self.kept.push(later);
                Decision::Later
            }
            "slowpass" => {
                // Not mine, said later: the password file (after this plugin) decides.
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(100));
                    later.answer(Decision::Pass);
                });
                Decision::Later
            }
            "slow" => {
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_secs(2));
                    later.answer(Decision::Allow);
                });
                Decision::Later
            }
            _ => Decision::Pass,
        }
    }

    fn acl_check(&mut self, c: &ClientInfo<'_>, topic: &str, access: Access) -> Decision {
        if topic.starts_with("boom/") {
            panic!("test plugin: boom in acl_check");
        }
        let deny = match access {
            Access::Write => topic.starts_with("deny/pub/"),
            Access::Subscribe => topic.starts_with("deny/sub/"),
            Access::Read => topic.starts_with("deny/recv/"),
        };
        if deny {
            self.seen
                .push(format!("acl deny {access:?} {topic} {}", c.client_id));
            Decision::Deny
        } else {
            Decision::Pass
        }
    }

    fn message_in(&mut self, _c: Option<&ClientInfo<'_>>, msg: MessageIn<'_>) -> Verdict {
        match &**msg.topic {
            "drop/me" => Verdict::Drop,
            "rewrite/in" => {
                *msg.topic = String::from("rewritten/out").into();
                *msg.payload = Bytes::from(msg.payload.to_ascii_uppercase());
                Verdict::Keep
            }
            _ => Verdict::Keep,
        }
    }

    fn message_out(&mut self, _c: &ClientInfo<'_>, _msg: &MessageOut<'_>) {
        self.seen
            .message_out
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn subscribe(&mut self, c: &ClientInfo<'_>, filter: &str, qos: QoS) {
        self.seen
            .push(format!("subscribe {} {filter} {}", c.client_id, qos as u8));
    }

    fn unsubscribe(&mut self, c: &ClientInfo<'_>, filter: &str) {
        self.seen
            .push(format!("unsubscribe {} {filter}", c.client_id));
    }

    fn connect(&mut self, c: &ClientInfo<'_>) {
        self.seen.push(format!(
            "connect {} user={:?} port={}",
            c.client_id, c.username, c.listener_port
        ));
    }

    fn disconnect(&mut self, c: &ClientInfo<'_>, graceful: bool) {
        self.seen
            .push(format!("disconnect {} graceful={graceful}", c.client_id));
    }

    fn session_end(&mut self, client_id: &str, why: SessionEnd) {
        self.seen.push(format!("session_end {client_id} {why:?}"));
    }

    fn tick(&mut self, _now: Instant) {
        self.seen
            .ticks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn reload(&mut self) {
        self.seen.push(format!("reload shard {}", self.shard));
    }
}

/// A logger that keeps every line at warning level and above (the broker's own logging is
/// not set up in-process).
pub struct KeepLogger {
    pub lines: Mutex<Vec<String>>,
}

impl log::Log for KeepLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            self.lines.lock().unwrap().push(r.args().to_string());
        }
    }
    fn flush(&self) {}
}

/// The process's [`KeepLogger`], installed at the first call.
pub fn logger() -> &'static KeepLogger {
    static LOGGER: std::sync::OnceLock<&'static KeepLogger> = std::sync::OnceLock::new();
    LOGGER.get_or_init(|| {
        let l: &'static KeepLogger = Box::leak(Box::new(KeepLogger {
            lines: Mutex::new(Vec::new()),
        }));
        let _ = log::set_logger(l);
        log::set_max_level(log::LevelFilter::Warn);
        l
    })
}
