//! Managed broker processes: a provably free port, start as loadgen's child, detection that
//! the child (and only it) listens, sampling, and stop by PID.

use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::config::config_text;
use super::table::{aedes_modules, ejabberd_lib, midge_shards, ERL_LIBS_DIR};
use super::version::version_of;
use super::{BrokerDef, Flavor, Limits};
use crate::procstat::{self, Mem, ProcStat};
use crate::tls::BrokerTls;

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
    /// Where subscribers connect, when not to `addr` (an external broker's `sub=`).
    pub sub_addr: Option<SocketAddr>,
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
        Self::start_tls(def, dir, limits, None)
    }

    /// [`RunningBroker::start`], with a managed broker's listener made a TLS one with `tls`'s
    /// certificates (an external broker is taken as it is).
    pub fn start_tls(
        def: &BrokerDef,
        dir: &Path,
        limits: &Limits,
        tls: Option<&BrokerTls>,
    ) -> Result<RunningBroker, String> {
        match def {
            BrokerDef::Managed {
                name,
                flavor,
                binary,
            } => start_managed(name, *flavor, binary, dir, limits, tls),
            BrokerDef::External {
                name,
                addr,
                pid,
                sub,
            } => {
                for a in std::iter::once(addr).chain(sub) {
                    TcpStream::connect_timeout(a, Duration::from_secs(3))
                        .map_err(|e| format!("{name} at {a}: {e}"))?;
                }
                let mut b = RunningBroker {
                    name: name.clone(),
                    addr: *addr,
                    sub_addr: *sub,
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

/// The broker gets SIGTERM when loadgen ends, however it ends: killed by a timeout or a CI
/// runner, or by SIGKILL, when none of loadgen's own code runs to stop it. A broker left behind
/// would hold its port and its CPU and skew every later run on the machine.
///
/// Linux sends the signal when the *thread* that started the child ends, so a broker is
/// started on the thread that owns it for its life (the run loop; a test's own thread).
fn die_with_loadgen(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let loadgen = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe calls (prctl, getppid, raise), allocating nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // loadgen ended between fork and prctl: nobody is left to send the signal.
            if libc::getppid() as u32 != loadgen {
                libc::raise(libc::SIGTERM);
            }
            Ok(())
        });
    }
}

fn start_managed(
    name: &str,
    flavor: Flavor,
    binary: &Path,
    dir: &Path,
    limits: &Limits,
    tls: Option<&BrokerTls>,
) -> Result<RunningBroker, String> {
    if !binary.is_file() {
        return Err(format!("{name}: {} not found", binary.display()));
    }
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let port = free_port()?;
    let mut config = config_text(flavor, port, limits);
    if let Some(tls) = tls {
        config.push_str(&tls.config_lines(flavor)?);
    }
    if let (Flavor::Midge, Some(n)) = (flavor, midge_shards(name)) {
        config.push_str(&format!("shards {n}\n"));
    }
    let ext = match flavor {
        Flavor::Rumqttd => "toml",
        Flavor::Aedes => "js",
        Flavor::Ejabberd => "yml",
        Flavor::Midge
        | Flavor::Mosquitto
        | Flavor::Nats
        | Flavor::RabbitMq
        | Flavor::FlashMq
        | Flavor::NanoMq => "conf",
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
            let d = scratch_dir(name, port)?;
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
        Flavor::Nats => {
            // JetStream's store lives in the scratch directory it runs in.
            let d = scratch_dir(name, port)?;
            cmd.arg("-c")
                .arg(fs::canonicalize(&conf_path).unwrap_or(conf_path.clone()))
                .current_dir(&d);
            scratch = Some(d);
        }
        Flavor::RabbitMq => {
            // A node of its own: its name, Erlang distribution port (loopback only), cookie
            // (HOME), database, plugin list and logs all in the scratch directory, apart from
            // any system-wide RabbitMQ.
            let d = scratch_dir(name, port)?;
            let dist_port = free_port()?;
            let plugins = d.join("enabled_plugins");
            fs::write(&plugins, "[rabbitmq_mqtt].\n")
                .map_err(|e| format!("{}: {e}", plugins.display()))?;
            cmd.current_dir(&d)
                .env("HOME", &d)
                .env("RABBITMQ_NODENAME", format!("loadgen{port}@localhost"))
                .env("RABBITMQ_DIST_PORT", dist_port.to_string())
                .env(
                    "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                    "-kernel inet_dist_use_interface {127,0,0,1}",
                )
                .env(
                    "RABBITMQ_CONFIG_FILE",
                    fs::canonicalize(&conf_path).unwrap_or(conf_path.clone()),
                )
                .env("RABBITMQ_ENABLED_PLUGINS_FILE", &plugins)
                .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
                .env("RABBITMQ_LOG_BASE", d.join("log"))
                .env("RABBITMQ_PLUGINS_EXPAND_DIR", d.join("plugins-expand"))
                .env("RABBITMQ_PID_FILE", d.join("pid"));
            scratch = Some(d);
        }
        Flavor::FlashMq => {
            cmd.arg("--config-file").arg(&conf_path);
        }
        Flavor::NanoMq => {
            cmd.arg("start").arg("--conf").arg(&conf_path);
        }
        Flavor::Midge | Flavor::Mosquitto | Flavor::Rumqttd => {
            cmd.arg("-c").arg(&conf_path);
        }
    }
    cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
    die_with_loadgen(&mut cmd);
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
        sub_addr: None,
        pid: Some(pid),
        version: version_of(flavor, binary),
        config: Some(config),
        not_measured: None,
        start_ticks: 0,
        child: Some(child),
        scratch,
    };
    let timeout = flavor.start_timeout();
    let deadline = Instant::now() + timeout;
    loop {
        if b.has_exited() {
            b.stop();
            return Err(format!(
                "{name} exited during start-up: {}",
                tail(&log_path)
            ));
        }
        if TcpStream::connect_timeout(&b.addr, Duration::from_millis(200)).is_ok() {
            if let Some(listener) = listening_pid(pid, port) {
                b.pid = Some(listener);
                break;
            }
        }
        if Instant::now() >= deadline {
            b.stop();
            return Err(format!(
                "{name} did not listen on {} within {} s: {}",
                b.addr,
                timeout.as_secs(),
                tail(&log_path)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let measured = b.pid.unwrap_or(pid);
    let owners = procstat::pids_listening_on(port);
    if owners != vec![measured] {
        b.stop();
        return Err(format!(
            "{name}: port {port} is held by {owners:?}, not only by the broker we started ({pid})"
        ));
    }
    b.start_ticks = procstat::stat(measured)
        .ok_or_else(|| format!("{name}: /proc/{measured}/stat unreadable"))?
        .start_ticks;
    Ok(b)
}

/// The process that listens on `port` for our child `pid`: the child itself, or (for a
/// broker started by a wrapper script, such as RabbitMQ's) a direct child of it. `None` while
/// nothing of ours listens.
fn listening_pid(pid: u32, port: u16) -> Option<u32> {
    if procstat::pid_listens_on(pid, port) {
        return Some(pid);
    }
    match procstat::pids_listening_on(port)[..] {
        [p] if procstat::stat(p).is_some_and(|st| st.ppid == pid) => Some(p),
        _ => None,
    }
}

/// A fresh scratch directory for a broker's working files, removed when it stops.
fn scratch_dir(name: &str, port: u16) -> Result<PathBuf, String> {
    let d = std::env::temp_dir().join(format!("loadgen-{name}-{}-{port}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    Ok(d)
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
