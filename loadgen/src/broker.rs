//! The broker table: which brokers loadgen can start, and how it starts, identifies and stops
//! them.
//!
//! A managed broker gets a generated config on a free loopback port, runs as loadgen's child
//! with its output in a log file, and is stopped by PID (SIGTERM, then SIGKILL). Before it is
//! measured, loadgen proves that (1) the port was free with a plain bind (no SO_REUSEPORT, which
//! would let a second process share the port silently, ARCHITECTURE.md §9), (2) the child's PID owns
//! the listening socket and no other process does, and (3) the PID still has the same start
//! time at every sample (PID reuse). An external broker (`name=host:port[,pid=PID]`) is only
//! connected to; without a PID its CPU and memory are reported as not measured.

use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::procstat::{self, Mem, ProcStat};

/// Broker-side limits written into every generated config, the same for every broker so that
/// none wins by dropping what another queues.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_queued_messages: u32,
    pub max_inflight_messages: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_queued_messages: 100_000,
            max_inflight_messages: 100,
        }
    }
}

/// How a managed broker is configured and launched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// This workspace's broker (mosquitto.conf syntax, a subset).
    Midge,
    /// Debian's mosquitto 2.
    Mosquitto,
    /// rumqttd (Rust), from the Rust package registry; MQTT 3.1.1 listener only.
    Rumqttd,
    /// aedes (Node.js, from npm): `node GENERATED.js` with `NODE_PATH` at the npm install;
    /// MQTT 3.1.1 only.
    Aedes,
    /// ejabberd's `mod_mqtt` (Erlang, Debian's package), run with `erl` in the foreground.
    Ejabberd,
}

/// One broker to run against.
#[derive(Debug, Clone, PartialEq)]
pub enum BrokerDef {
    Managed {
        name: String,
        flavor: Flavor,
        binary: PathBuf,
    },
    External {
        name: String,
        addr: SocketAddr,
        pid: Option<u32>,
    },
}

impl BrokerDef {
    /// The broker's name in results.
    pub fn name(&self) -> &str {
        match self {
            BrokerDef::Managed { name, .. } | BrokerDef::External { name, .. } => name,
        }
    }

    /// Why this broker cannot run here, if it cannot (binary missing).
    pub fn unavailable(&self) -> Option<String> {
        match self {
            BrokerDef::Managed { binary, .. } if !binary.is_file() => Some(format!(
                "{} not found (not built or not installed)",
                binary.display()
            )),
            BrokerDef::Managed {
                flavor: Flavor::Aedes,
                ..
            } if aedes_modules().is_none() => Some(format!(
                "the aedes module is not in NODE_PATH or {AEDES_MODULES} (npm install --prefix /opt/aedes aedes)"
            )),
            BrokerDef::Managed {
                flavor: Flavor::Ejabberd,
                ..
            } if ejabberd_lib().is_none() => Some(format!(
                "ejabberd not found in {ERL_LIBS_DIR} (apt-get install ejabberd)"
            )),
            _ => None,
        }
    }

    /// False where the broker cannot serve `protocol` ("3.1.1"/"5") with the generated config.
    pub fn supports(&self, protocol: &str) -> bool {
        // rumqttd's generated listener and aedes (no MQTT 5 at all) speak 3.1.1 only.
        let v311_only = matches!(
            self,
            BrokerDef::Managed {
                flavor: Flavor::Rumqttd | Flavor::Aedes,
                ..
            }
        );
        !(v311_only && protocol == "5")
    }

    /// The password every client sends (with its client id as user name), for brokers that
    /// refuse a CONNECT without one: ejabberd's `mod_mqtt` always authenticates, here against
    /// its anonymous backend, which accepts any name and password.
    pub fn connect_password(&self) -> Option<&'static str> {
        match self {
            BrokerDef::Managed {
                flavor: Flavor::Ejabberd,
                ..
            } => Some("loadgen"),
            _ => None,
        }
    }
}

/// Where `npm install --prefix /opt/aedes aedes` puts the aedes module.
pub const AEDES_MODULES: &str = "/opt/aedes/node_modules";

/// The `node_modules` directory holding aedes: an entry of `NODE_PATH`, else [`AEDES_MODULES`].
pub fn aedes_modules() -> Option<PathBuf> {
    let node_path = std::env::var_os("NODE_PATH").unwrap_or_default();
    std::env::split_paths(&node_path)
        .chain([PathBuf::from(AEDES_MODULES)])
        .find(|d| d.join("aedes/package.json").is_file())
}

/// Where Debian's ejabberd package puts its Erlang applications (its `ERL_LIBS`).
pub const ERL_LIBS_DIR: &str = "/usr/lib/x86_64-linux-gnu";

/// ejabberd's application directory (`ERL_LIBS_DIR/ejabberd-VERSION`), if installed.
pub fn ejabberd_lib() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(ERL_LIBS_DIR)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("ejabberd-"))
                && p.join("ebin/ejabberd.app").is_file()
        })
        .collect();
    found.sort();
    found.pop()
}

/// Finds `prog` on PATH (or as given, if it contains a slash).
pub fn which(prog: &str) -> Option<PathBuf> {
    if prog.contains('/') {
        return Some(PathBuf::from(prog));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

/// The workspace root (where `target/release/midge` is built).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Names of the brokers in the built-in table. `midge-<N>shard` / `midge-<N>shards` (e.g.
/// `midge-1shard`, `midge-2shards`) are midge too, with `shards N` in its config: the same
/// suite compares one event loop with several.
pub const KNOWN: &[&str] = &["midge", "mosquitto", "rumqttd", "aedes", "ejabberd"];

/// Where to find brokers that are not installed system-wide (command-line overrides).
#[derive(Debug, Clone, Default)]
pub struct Binaries {
    /// midge's binary (default: `release/midge` under `CARGO_TARGET_DIR` when that is set,
    /// as cargo builds it there, else `target/release/midge` of the workspace).
    pub midge: Option<PathBuf>,
    /// rumqttd's binary (default: `rumqttd` on PATH, else `~/.cargo/bin/rumqttd`, where a
    /// plain `cargo install rumqttd` puts it).
    pub rumqttd: Option<PathBuf>,
}

/// The shard count a `midge-<N>shard(s)` broker name asks for.
pub fn midge_shards(name: &str) -> Option<u16> {
    let n = name.strip_prefix("midge-")?;
    let n = n
        .strip_suffix("shards")
        .or_else(|| n.strip_suffix("shard"))?;
    n.parse().ok().filter(|&n| n > 0)
}

/// Looks a broker up in the built-in table. `midge_bin` overrides where midge is.
pub fn known(name: &str, midge_bin: Option<&Path>) -> Option<BrokerDef> {
    known_in(
        name,
        &Binaries {
            midge: midge_bin.map(Path::to_path_buf),
            rumqttd: None,
        },
    )
}

/// Looks a broker up in the built-in table, with `bins` overriding where binaries are.
pub fn known_in(name: &str, bins: &Binaries) -> Option<BrokerDef> {
    let (flavor, binary) = match name {
        n if n == "midge" || midge_shards(n).is_some() => {
            let bin = bins.midge.clone().unwrap_or_else(|| {
                std::env::var_os("CARGO_TARGET_DIR")
                    .filter(|d| !d.is_empty())
                    .map(|d| workspace_root().join(d).join("release/midge"))
                    .unwrap_or_else(|| workspace_root().join("target/release/midge"))
            });
            (Flavor::Midge, bin)
        }
        "mosquitto" => (
            Flavor::Mosquitto,
            which("mosquitto").unwrap_or_else(|| PathBuf::from("/usr/sbin/mosquitto")),
        ),
        "rumqttd" => (
            Flavor::Rumqttd,
            bins.rumqttd
                .clone()
                .or_else(|| which("rumqttd"))
                .or_else(|| {
                    let home = std::env::var_os("HOME")?;
                    let p = Path::new(&home).join(".cargo/bin/rumqttd");
                    p.is_file().then_some(p)
                })
                .unwrap_or_else(|| PathBuf::from("rumqttd")),
        ),
        "aedes" => (
            Flavor::Aedes,
            which("node").unwrap_or_else(|| PathBuf::from("/usr/bin/node")),
        ),
        "ejabberd" => (
            Flavor::Ejabberd,
            which("erl").unwrap_or_else(|| PathBuf::from("/usr/bin/erl")),
        ),
        _ => return None,
    };
    Some(BrokerDef::Managed {
        name: name.to_string(),
        flavor,
        binary,
    })
}

/// Parses `name=host:port[,pid=PID]`.
pub fn parse_external(s: &str) -> Result<BrokerDef, String> {
    let (name, rest) = s
        .split_once('=')
        .ok_or_else(|| format!("--broker {s:?}: expected name=host:port[,pid=PID]"))?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(format!(
            "--broker {s:?}: the name may use letters, digits, '-', '_' and '.'"
        ));
    }
    let mut parts = rest.split(',');
    let hostport = parts.next().unwrap_or_default();
    let addr = hostport
        .to_socket_addrs()
        .map_err(|e| format!("--broker {s:?}: address {hostport:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("--broker {s:?}: {hostport:?} resolves to nothing"))?;
    let mut pid = None;
    for p in parts {
        match p.split_once('=') {
            Some(("pid", v)) => {
                pid = Some(
                    v.parse()
                        .map_err(|_| format!("--broker {s:?}: pid {v:?} is not a number"))?,
                )
            }
            _ => {
                return Err(format!(
                    "--broker {s:?}: unknown option {p:?} (only pid=PID)"
                ))
            }
        }
    }
    Ok(BrokerDef::External {
        name: name.to_string(),
        addr,
        pid,
    })
}

/// The config file text for a managed broker on `port`.
pub fn config_text(flavor: Flavor, port: u16, limits: &Limits) -> String {
    let common = format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages {}\nmax_inflight_messages {}\n",
        limits.max_queued_messages, limits.max_inflight_messages
    );
    match flavor {
        Flavor::Midge => common,
        // mosquitto: no persistence, Nagle off like every low-latency broker, and no log line
        // per connection (10k connects would otherwise be measured as log I/O).
        Flavor::Mosquitto => format!(
            "{common}persistence false\nset_tcp_nodelay true\nconnection_messages false\nlog_dest stderr\nlog_type error\nlog_type warning\n"
        ),
        Flavor::Rumqttd => format!(
            "id = 0\n\n[router]\nid = 0\nmax_connections = 20010\nmax_outgoing_packet_count = {inflight}\nmax_segment_size = 104857600\nmax_segment_count = 10\n\n\
             [v4.1]\nname = \"v4-1\"\nlisten = \"127.0.0.1:{port}\"\nnext_connection_delay_ms = 0\n\n\
             [v4.1.connections]\nconnection_timeout_ms = 60000\nmax_payload_size = 16777216\nmax_inflight_count = {inflight}\ndynamic_filters = true\n",
            inflight = limits.max_inflight_messages
        ),
        // aedes has no per-client queue or inflight bound; `concurrency` bounds the messages it
        // delivers at once. Nagle off, a listen backlog like the others'.
        Flavor::Aedes => format!(
            "// generated by loadgen\n'use strict';\nconst net = require('net');\nconst m = require('aedes');\n\
             (async () => {{\n  const opts = {{ concurrency: {inflight} }};\n  \
             const aedes = m.Aedes ? await m.Aedes.createBroker(opts) : m(opts);\n  \
             const server = net.createServer({{ noDelay: true }}, aedes.handle);\n  \
             server.listen({{ port: {port}, host: '127.0.0.1', backlog: 4096 }});\n  \
             process.on('SIGTERM', () => {{ server.close(); aedes.close(() => process.exit(0)); }});\n\
             }})().catch((e) => {{ console.error(e); process.exit(1); }});\n",
            inflight = limits.max_inflight_messages
        ),
        // ejabberd: mod_mqtt alone on a loopback listener; every client authenticates against
        // the anonymous backend (mod_mqtt refuses an empty password) and may publish and
        // subscribe anywhere. mod_mqtt has no inflight option; `max_queue` bounds each
        // session's queue.
        Flavor::Ejabberd => format!(
            "# generated by loadgen\nhosts:\n  - localhost\nloglevel: warning\ncertfiles: []\n\
             auth_method: [anonymous]\nanonymous_protocol: login_anon\n\
             listen:\n  -\n    port: {port}\n    ip: \"127.0.0.1\"\n    module: mod_mqtt\n    backlog: 4096\n\
             access_rules:\n  mqtt_all:\n    allow: all\n\
             modules:\n  mod_mqtt:\n    access_subscribe:\n      \"#\": mqtt_all\n    \
             access_publish:\n      \"#\": mqtt_all\n    max_queue: {queued}\n",
            queued = limits.max_queued_messages
        ),
    }
}

/// Picks a loopback port that is free, proven by a plain bind (no SO_REUSEPORT) and by the
/// absence of any listener on it.
pub fn free_port() -> Result<u16, String> {
    for _ in 0..20 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("bind: {e}"))?
            .port();
        if port_is_free(port) {
            return Ok(port);
        }
    }
    Err("no free loopback port found in 20 tries".into())
}

/// True if nothing listens on `port` and a plain bind to it succeeds.
pub fn port_is_free(port: u16) -> bool {
    procstat::listening_inodes(port).is_empty() && TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A broker that is running (or reachable) for one run.
#[derive(Debug)]
pub struct RunningBroker {
    pub name: String,
    pub addr: SocketAddr,
    /// The PID whose /proc is sampled; `None` when not measured.
    pub pid: Option<u32>,
    pub version: String,
    pub config: Option<String>,
    /// Why CPU/RSS are not measured, when they are not.
    pub not_measured: Option<String>,
    start_ticks: u64,
    child: Option<Child>,
    /// A broker's working directory (ejabberd's Mnesia spool), removed when it stops.
    scratch: Option<PathBuf>,
}

impl RunningBroker {
    /// Starts (or, for an external broker, checks) `def`, with its files in `dir`.
    pub fn start(def: &BrokerDef, dir: &Path, limits: &Limits) -> Result<RunningBroker, String> {
        match def {
            BrokerDef::Managed {
                name,
                flavor,
                binary,
            } => start_managed(name, *flavor, binary, dir, limits),
            BrokerDef::External { name, addr, pid } => {
                TcpStream::connect_timeout(addr, Duration::from_secs(3))
                    .map_err(|e| format!("{name} at {addr}: {e}"))?;
                let mut b = RunningBroker {
                    name: name.clone(),
                    addr: *addr,
                    pid: None,
                    version: "unknown (external)".into(),
                    config: None,
                    not_measured: Some("external broker without pid=".into()),
                    start_ticks: 0,
                    child: None,
                    scratch: None,
                };
                if let Some(pid) = *pid {
                    if !addr.ip().is_loopback() {
                        b.not_measured =
                            Some(format!("pid={pid} given but {addr} is not on this machine"));
                    } else if !procstat::pid_listens_on(pid, addr.port()) {
                        return Err(format!("{name}: pid {pid} does not listen on port {}: refusing to sample the wrong process", addr.port()));
                    } else {
                        let st = procstat::stat(pid)
                            .ok_or_else(|| format!("{name}: no process {pid}"))?;
                        b.pid = Some(pid);
                        b.start_ticks = st.start_ticks;
                        b.not_measured = None;
                    }
                }
                Ok(b)
            }
        }
    }

    /// CPU and memory now; `None` if not measured or if the PID is no longer our broker.
    pub fn sample(&self) -> Option<(ProcStat, Mem)> {
        let pid = self.pid?;
        let st = procstat::stat(pid)?;
        if st.start_ticks != self.start_ticks {
            return None;
        }
        Some((st, procstat::mem(pid)?))
    }

    /// True if a managed broker's process has exited.
    pub fn has_exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| !matches!(c.try_wait(), Ok(None)))
    }

    /// Stops a managed broker by PID: SIGTERM, then SIGKILL after 5 s. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        stop_child(&mut child);
        if let Some(d) = self.scratch.take() {
            let _ = fs::remove_dir_all(d);
        }
    }
}

/// SIGTERM, then SIGKILL after 5 s, then reap.
fn stop_child(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        // SAFETY: kill() on the PID of our own un-reaped child, which cannot have been reused.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
    }
    let _ = child.wait();
}

impl Drop for RunningBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn start_managed(
    name: &str,
    flavor: Flavor,
    binary: &Path,
    dir: &Path,
    limits: &Limits,
) -> Result<RunningBroker, String> {
    if !binary.is_file() {
        return Err(format!("{name}: {} not found", binary.display()));
    }
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let port = free_port()?;
    let mut config = config_text(flavor, port, limits);
    if let (Flavor::Midge, Some(n)) = (flavor, midge_shards(name)) {
        config.push_str(&format!("shards {n}\n"));
    }
    let ext = match flavor {
        Flavor::Rumqttd => "toml",
        Flavor::Aedes => "js",
        Flavor::Ejabberd => "yml",
        Flavor::Midge | Flavor::Mosquitto => "conf",
    };
    let conf_path = dir.join(format!("{name}.{ext}"));
    fs::write(&conf_path, &config).map_err(|e| format!("{}: {e}", conf_path.display()))?;
    let log_path = dir.join(format!("{name}.log"));
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("{}: {e}", log_path.display()))?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(binary);
    let mut scratch = None;
    match flavor {
        Flavor::Aedes => {
            let modules =
                aedes_modules().ok_or_else(|| format!("{name}: aedes module not found"))?;
            cmd.arg(&conf_path).env("NODE_PATH", modules);
        }
        Flavor::Ejabberd => {
            // `erl` execs beam.smp, so the child's PID is the broker's. No node name: no
            // distribution, no epmd left behind. Mnesia's spool lives in a scratch directory.
            let lib = ejabberd_lib().ok_or_else(|| format!("{name}: ejabberd not installed"))?;
            let erl_libs = lib
                .parent()
                .unwrap_or(Path::new(ERL_LIBS_DIR))
                .to_path_buf();
            let d =
                std::env::temp_dir().join(format!("loadgen-{name}-{}-{port}", std::process::id()));
            let _ = fs::remove_dir_all(&d);
            fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
            let log_dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
            let conf_abs = log_dir.join(format!("{name}.{ext}"));
            // ejabberd's own ejabberd.log and error.log, apart from the other brokers' files.
            let ej_logs = log_dir.join(name);
            fs::create_dir_all(&ej_logs).map_err(|e| format!("{}: {e}", ej_logs.display()))?;
            cmd.args([
                "-noinput", "-noshell", "+K", "true", "+P", "250000", "-mnesia", "dir",
            ])
            .arg(format!("\"{}\"", d.join("spool").display()))
            .args(["-s", "ejabberd"])
            .current_dir(&d)
            .env("EJABBERD_CONFIG_PATH", conf_abs)
            .env("EJABBERD_LOG_PATH", ej_logs.join("ejabberd.log"))
            .env("ERL_LIBS", erl_libs)
            .env("ERL_CRASH_DUMP", d.join("erl_crash.dump"));
            scratch = Some(d);
        }
        Flavor::Midge | Flavor::Mosquitto | Flavor::Rumqttd => {
            cmd.arg("-c").arg(&conf_path);
        }
    }
    cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            if let Some(d) = scratch {
                let _ = fs::remove_dir_all(d);
            }
            return Err(format!("{name}: spawning {}: {e}", binary.display()));
        }
    };
    let pid = child.id();
    let mut b = RunningBroker {
        name: name.to_string(),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        pid: Some(pid),
        version: version_of(flavor, binary),
        config: Some(config),
        not_measured: None,
        start_ticks: 0,
        child: Some(child),
        scratch,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if b.has_exited() {
            b.stop();
            return Err(format!(
                "{name} exited during start-up: {}",
                tail(&log_path)
            ));
        }
        if TcpStream::connect_timeout(&b.addr, Duration::from_millis(200)).is_ok()
            && procstat::pid_listens_on(pid, port)
        {
            break;
        }
        if Instant::now() >= deadline {
            b.stop();
            return Err(format!(
                "{name} did not listen on {} within 10 s: {}",
                b.addr,
                tail(&log_path)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let owners = procstat::pids_listening_on(port);
    if owners != vec![pid] {
        b.stop();
        return Err(format!(
            "{name}: port {port} is held by {owners:?}, not only by the broker we started ({pid})"
        ));
    }
    b.start_ticks = procstat::stat(pid)
        .ok_or_else(|| format!("{name}: /proc/{pid}/stat unreadable"))?
        .start_ticks;
    Ok(b)
}

/// The last lines of a log, for error messages.
fn tail(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    let lines: Vec<&str> = s.lines().rev().take(5).collect();
    let t: Vec<&str> = lines.into_iter().rev().collect();
    if t.is_empty() {
        "(no output)".into()
    } else {
        t.join(" | ")
    }
}

/// The broker's version as it reports it.
fn version_of(flavor: Flavor, binary: &Path) -> String {
    let arg = match flavor {
        Flavor::Mosquitto => "-h",
        // `erl --version` would start a shell: the version is in the application's name.
        Flavor::Ejabberd => {
            return ejabberd_lib()
                .and_then(|l| l.file_name()?.to_str().map(|n| n.replacen('-', " ", 1)))
                .unwrap_or_else(|| "unknown".into())
        }
        Flavor::Aedes => {
            let pkg = aedes_modules()
                .and_then(|d| fs::read_to_string(d.join("aedes/package.json")).ok())
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| v["version"].as_str().map(str::to_string))
                .unwrap_or_else(|| "unknown".into());
            let node = Command::new(binary)
                .arg("--version")
                .stdin(Stdio::null())
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default();
            return format!("aedes {pkg} (node {node})");
        }
        _ => "--version",
    };
    let Ok(out) = Command::new(binary).arg(arg).stdin(Stdio::null()).output() else {
        return "unknown".into();
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find(|l| {
            l.to_lowercase().contains("version")
                || l.starts_with(binary.file_name().and_then(|f| f.to_str()).unwrap_or("?"))
        })
        .or_else(|| text.lines().next())
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_broker_spec_is_parsed_and_checked() {
        let b = parse_external("emqx=127.0.0.1:1883,pid=42").unwrap();
        assert_eq!(
            b,
            BrokerDef::External {
                name: "emqx".into(),
                addr: "127.0.0.1:1883".parse().unwrap(),
                pid: Some(42)
            }
        );
        assert!(matches!(
            parse_external("x=127.0.0.1:1"),
            Ok(BrokerDef::External { pid: None, .. })
        ));
        assert!(parse_external("nohost").is_err());
        assert!(parse_external("x=127.0.0.1:1,cpu=3")
            .unwrap_err()
            .contains("unknown option"));
        assert!(parse_external("a b=127.0.0.1:1").is_err());
    }

    #[test]
    fn generated_configs_listen_on_loopback_with_the_shared_limits() {
        let l = Limits {
            max_queued_messages: 7,
            max_inflight_messages: 3,
        };
        for f in [Flavor::Midge, Flavor::Mosquitto] {
            let c = config_text(f, 4321, &l);
            assert!(c.contains("listener 4321 127.0.0.1\n"), "{c}");
            assert!(
                c.contains("max_queued_messages 7\n") && c.contains("max_inflight_messages 3\n")
            );
            assert!(c.contains("allow_anonymous true"));
        }
        assert!(config_text(Flavor::Rumqttd, 4321, &l).contains("listen = \"127.0.0.1:4321\""));
        // midge refuses unknown options, so its config holds only what the brief names.
        assert_eq!(config_text(Flavor::Midge, 1, &l).lines().count(), 4);
    }

    #[test]
    fn aedes_and_ejabberd_configs_listen_on_the_given_loopback_port() {
        let l = Limits {
            max_queued_messages: 7,
            max_inflight_messages: 3,
        };
        let js = config_text(Flavor::Aedes, 4321, &l);
        assert!(
            js.contains("listen({ port: 4321, host: '127.0.0.1'"),
            "{js}"
        );
        assert!(js.contains("require('aedes')") && js.contains("concurrency: 3"));
        let yml = config_text(Flavor::Ejabberd, 4321, &l);
        assert!(
            yml.contains("    port: 4321\n    ip: \"127.0.0.1\"\n    module: mod_mqtt\n"),
            "{yml}"
        );
        assert!(yml.contains("mod_mqtt:\n") && yml.contains("max_queue: 7\n"));
        assert!(yml.contains("\"#\": mqtt_all") && yml.contains("allow: all"));
        // Only ejabberd needs credentials (mod_mqtt refuses an empty password).
        assert_eq!(
            known("ejabberd", None).unwrap().connect_password(),
            Some("loadgen")
        );
        assert_eq!(known("aedes", None).unwrap().connect_password(), None);
        assert_eq!(known("mosquitto", None).unwrap().connect_password(), None);
    }

    #[test]
    fn a_port_in_use_is_not_free() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(!port_is_free(port));
        drop(l);
        let p = free_port().unwrap();
        assert!(port_is_free(p));
    }

    #[test]
    fn a_missing_binary_makes_a_broker_unavailable() {
        let b = BrokerDef::Managed {
            name: "x".into(),
            flavor: Flavor::Midge,
            binary: "/nonexistent/midge".into(),
        };
        assert!(b.unavailable().unwrap().contains("not found"));
        assert!(known("nope", None).is_none());
        assert!(known("midge-", None).is_none());
        assert!(known("midge-0shards", None).is_none());
        assert!(!known("rumqttd", None).unwrap().supports("5"));
        assert!(!known("aedes", None).unwrap().supports("5"));
        assert!(known("ejabberd", None).unwrap().supports("5"));
    }

    #[test]
    fn midge_shard_names_select_midge_with_a_shard_count() {
        assert_eq!(midge_shards("midge-1shard"), Some(1));
        assert_eq!(midge_shards("midge-2shards"), Some(2));
        assert_eq!(midge_shards("midge"), None);
        assert_eq!(midge_shards("midge-xshards"), None);
        let bins = Binaries {
            midge: Some("/opt/m/midge".into()),
            rumqttd: Some("/opt/r/bin/rumqttd".into()),
        };
        match known_in("midge-2shards", &bins) {
            Some(BrokerDef::Managed {
                flavor,
                binary,
                name,
            }) => {
                assert_eq!(flavor, Flavor::Midge);
                assert_eq!(binary, PathBuf::from("/opt/m/midge"));
                assert_eq!(name, "midge-2shards");
            }
            other => panic!("{other:?}"),
        }
        match known_in("rumqttd", &bins) {
            Some(BrokerDef::Managed { binary, .. }) => {
                assert_eq!(binary, PathBuf::from("/opt/r/bin/rumqttd"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_midge_shard_name_writes_shards_into_its_config() {
        // Started with `true` standing in for midge: it exits at once, so start-up fails
        // after the config is written, which is all this test reads.
        let dir = tempfile_dir("shards");
        let def = BrokerDef::Managed {
            name: "midge-1shard".into(),
            flavor: Flavor::Midge,
            binary: which("true").unwrap(),
        };
        let _ = RunningBroker::start(&def, &dir, &Limits::default());
        let conf = fs::read_to_string(dir.join("midge-1shard.conf")).unwrap();
        assert!(conf.ends_with("shards 1\n"), "{conf}");
        let _ = fs::remove_dir_all(&dir);
    }

    fn tempfile_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("loadgen-test-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn an_external_pid_that_does_not_listen_is_refused() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        // PID 1 is not this listener's owner.
        let def = BrokerDef::External {
            name: "x".into(),
            addr,
            pid: Some(1),
        };
        let err = RunningBroker::start(&def, Path::new("/tmp"), &Limits::default()).unwrap_err();
        assert!(err.contains("does not listen"), "{err}");
        // Our own PID does own it, so sampling is allowed.
        let def = BrokerDef::External {
            name: "x".into(),
            addr,
            pid: Some(std::process::id()),
        };
        let b = RunningBroker::start(&def, Path::new("/tmp"), &Limits::default()).unwrap();
        assert!(b.sample().is_some());
    }
}
