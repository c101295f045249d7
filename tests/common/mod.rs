//! Shared helpers for the integration tests: start the real broker binary on a free port with a
//! generated mosquitto.conf-style config, and drive it with real clients.
//!
//! # Which broker
//! Tests run against midge (`env!("CARGO_BIN_EXE_midge")`) by default. With
//! `MIDGE_TEST_BROKER=mosquitto` they run against Debian's `mosquitto` instead; that is how the
//! suite itself is proven against a reference broker. Where mosquitto deviates from the spec a
//! test says so in a comment and branches on [`BrokerKind`]; the midge assertion is never
//! weakened.
//!
//! # Layout
//! - this file: [`Broker`] (start, port, log, stop on drop), [`BrokerKind`], process helpers
//!   ([`run`], [`Spawned`]) with timeouts everywhere.
//! - [`raw`]: a byte-level MQTT client over `TcpStream` for exact flows and bad input.
//! - [`clients`]: wrappers for `mosquitto_pub`/`mosquitto_sub`, paho-mqtt scripts in
//!   `tests/py/`, and `rumqttc`.
//!
//! Every helper is bounded in time: a hung broker fails a test, it never hangs CI.
#![allow(dead_code)]

pub mod clients;
pub mod raw;

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// Default bound for a single client step (connect, receive one packet, ...).
pub const STEP: Duration = Duration::from_secs(5);

/// Config options that only midge knows; they are left out of mosquitto's config.
const MIDGE_ONLY_OPTIONS: &[&str] = &["shards"];

/// The broker under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokerKind {
    Midge,
    Mosquitto,
}

/// Reads `MIDGE_TEST_BROKER` (`midge`, the default, or `mosquitto`).
pub fn broker_kind() -> BrokerKind {
    match std::env::var("MIDGE_TEST_BROKER").as_deref() {
        Ok("mosquitto") => BrokerKind::Mosquitto,
        Ok("") | Ok("midge") | Err(_) => BrokerKind::Midge,
        Ok(other) => panic!("MIDGE_TEST_BROKER={other}: expected `midge` or `mosquitto`"),
    }
}

pub fn is_midge() -> bool {
    broker_kind() == BrokerKind::Midge
}

/// The midge binary built by cargo for this test run.
pub fn midge_bin() -> &'static str {
    env!("CARGO_BIN_EXE_midge")
}

/// Debian installs the broker in /usr/sbin, which is not on every user's PATH.
pub fn mosquitto_bin() -> String {
    if let Ok(p) = std::env::var("MOSQUITTO_BIN") {
        return p;
    }
    if Path::new("/usr/sbin/mosquitto").exists() {
        "/usr/sbin/mosquitto".into()
    } else {
        "mosquitto".into()
    }
}

/// A command for `program` with stdout line-buffered through coreutils' `stdbuf` when it is
/// there (for C programs that log with stdio and would otherwise hold lines in a pipe/file).
pub fn line_buffered(program: &str) -> Command {
    if Path::new("/usr/bin/stdbuf").exists() {
        let mut c = Command::new("/usr/bin/stdbuf");
        c.args(["-oL", "-eL", program]);
        c
    } else {
        Command::new(program)
    }
}

/// A port that was free a moment ago (bind to port 0, read it, drop the listener).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A broker process started for one test; killed (by its own PID) and reaped on drop.
pub struct Broker {
    child: Child,
    port: u16,
    kind: BrokerKind,
    log_path: PathBuf,
    config_path: PathBuf,
    // Held so the directory (config + log) lives as long as the broker.
    _dir: tempfile::TempDir,
}

impl Broker {
    /// Starts the broker with the base config only.
    pub fn start() -> Broker {
        Broker::start_with(&[])
    }

    /// Starts the broker with extra config lines (mosquitto.conf syntax) after the base config.
    /// Lines whose option is midge-only (e.g. `shards 2`) are dropped for mosquitto.
    pub fn start_with(extra_lines: &[&str]) -> Broker {
        let kind = broker_kind();
        let mut last_log = String::new();
        // The port is only known to be free when we pick it; if another process grabs it before
        // the broker binds, the broker exits and we retry with a new port.
        for _attempt in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("midge-test-")
                .tempdir()
                .expect("tempdir");
            let port = free_port();
            let config_path = dir.path().join("broker.conf");
            let log_path = dir.path().join("broker.log");
            fs::write(&config_path, config_text(kind, port, extra_lines)).expect("write config");
            let log = File::create(&log_path).expect("create log");
            let log_err = log.try_clone().expect("clone log handle");
            let mut cmd = match kind {
                BrokerKind::Midge => Command::new(midge_bin()),
                BrokerKind::Mosquitto => line_buffered(&mosquitto_bin()),
            };
            cmd.arg("-c")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err);
            let child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("cannot spawn {kind:?} broker: {e}"));
            let mut broker = Broker {
                child,
                port,
                kind,
                log_path,
                config_path,
                _dir: dir,
            };
            match broker.wait_ready(Duration::from_secs(10)) {
                Ok(()) => return broker,
                Err(Exited(status)) => {
                    last_log = broker.log();
                    let lower = last_log.to_lowercase();
                    if lower.contains("in use") || lower.contains("addrinuse") {
                        continue; // lost the port race: try another port
                    }
                    panic!("{kind:?} broker exited during start-up ({status}); log:\n{last_log}");
                }
                Err(NotReady) => {
                    panic!(
                        "{kind:?} broker did not accept connections on port {port} within 10 s; log:\n{}",
                        broker.log()
                    );
                }
            }
        }
        panic!("could not start the broker on a free port after 5 attempts; last log:\n{last_log}");
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<(), StartError> {
        let deadline = Instant::now() + limit;
        let addr = self.addr();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Exited(status));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                // The port may belong to someone else if we lost a race: make sure it's ours.
                thread::sleep(Duration::from_millis(20));
                if let Ok(Some(status)) = self.child.try_wait() {
                    return Err(Exited(status));
                }
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(NotReady);
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn kind(&self) -> BrokerKind {
        self.kind
    }

    pub fn is_midge(&self) -> bool {
        self.kind == BrokerKind::Midge
    }

    pub fn is_mosquitto(&self) -> bool {
        self.kind == BrokerKind::Mosquitto
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Everything the broker wrote to stdout/stderr so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let mut bytes = Vec::new();
            let _ = f.read_to_end(&mut bytes);
            s = String::from_utf8_lossy(&bytes).into_owned();
        }
        s
    }

    /// Waits (bounded) until the log contains one of `needles` (case-insensitive).
    pub fn wait_log_contains_any(&self, needles: &[&str], limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let log = self.log().to_lowercase();
            if needles.iter().any(|n| log.contains(&n.to_lowercase())) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// Panics unless the broker process is still running.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "broker exited unexpectedly ({status}); log:\n{}",
                self.log()
            );
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // Only the child we started, by its PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!(
                "---- {:?} broker log (port {}) ----\n{}\n---- end of broker log ----",
                self.kind,
                self.port,
                self.log()
            );
        }
    }
}

enum StartError {
    Exited(ExitStatus),
    NotReady,
}
use StartError::{Exited, NotReady};

/// The config file text: the base lines, then the per-test extra lines.
pub fn config_text(kind: BrokerKind, port: u16, extra_lines: &[&str]) -> String {
    let mut s = format!("listener {port} 127.0.0.1\nallow_anonymous true\nlog_dest stdout\n");
    if kind == BrokerKind::Mosquitto {
        // mosquitto-only: verbose log, handy when a test fails.
        s.push_str("log_type all\n");
    }
    for line in extra_lines {
        let option = line.split_whitespace().next().unwrap_or("");
        if kind == BrokerKind::Mosquitto && MIDGE_ONLY_OPTIONS.contains(&option) {
            continue;
        }
        s.push_str(line);
        s.push('\n');
    }
    s
}

/// Substrings (lowercase) that count as "the log names why a connection was dropped".
pub const LOG_REASON_WORDS: &[&str] = &[
    "malformed",
    "protocol",
    "invalid",
    "too large",
    "too big",
    "exceed",
    "utf",
    "wildcard",
    "qos",
    "bad",
    "error",
];

/// Output of a finished process.
#[derive(Debug)]
pub struct Finished {
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.status.map(|s| s.success()).unwrap_or(false)
    }
}

/// Runs `cmd` to completion, killing it after `limit`.
pub fn run(cmd: &mut Command, limit: Duration) -> Finished {
    let mut sp = Spawned::spawn(cmd);
    let status = sp.wait(limit);
    let timed_out = status.is_none();
    if timed_out {
        sp.kill();
    }
    let stdout = sp.drain_stdout(Duration::from_millis(500)).join("\n");
    let stderr = sp.stderr_text(Duration::from_millis(500));
    Finished {
        status,
        stdout,
        stderr,
        timed_out,
    }
}

/// A child process whose stdout is read line by line in a thread; killed on drop.
pub struct Spawned {
    child: Child,
    lines: Receiver<String>,
    stderr: Receiver<String>,
    stdout_done: bool,
    pub seen: Vec<String>,
    desc: String,
}

impl Spawned {
    pub fn spawn(cmd: &mut Command) -> Spawned {
        let desc = format!("{cmd:?}");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {desc}: {e}"));
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        let (etx, stderr) = mpsc::channel();
        let mut err = child.stderr.take().unwrap();
        thread::spawn(move || {
            let mut s = Vec::new();
            let _ = err.read_to_end(&mut s);
            let _ = etx.send(String::from_utf8_lossy(&s).into_owned());
        });
        Spawned {
            child,
            lines,
            stderr,
            stdout_done: false,
            seen: Vec::new(),
            desc,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next stdout line, or None on timeout / end of output.
    pub fn next_line(&mut self, limit: Duration) -> Option<String> {
        if self.stdout_done {
            return None;
        }
        match self.lines.recv_timeout(limit) {
            Ok(l) => {
                self.seen.push(l.clone());
                Some(l)
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                self.stdout_done = true;
                None
            }
        }
    }

    /// Reads lines until one satisfies `pred` (returned) or `limit` passes (None).
    pub fn wait_line(&mut self, limit: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match self.next_line(left) {
                Some(l) if pred(&l) => return Some(l),
                Some(_) => continue,
                None => return None,
            }
        }
    }

    /// All remaining stdout lines until the stream ends or `limit` passes.
    pub fn drain_stdout(&mut self, limit: Duration) -> Vec<String> {
        let start = self.seen.len();
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.next_line(left).is_none() {
                break;
            }
        }
        self.seen[start..].to_vec()
    }

    /// Waits for exit; None on timeout.
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// stderr text; available once the process has exited (or been killed).
    pub fn stderr_text(&mut self, limit: Duration) -> String {
        self.stderr.recv_timeout(limit).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal to this child (by its PID) with `kill(1)`.
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status();
    }

    pub fn describe(&self) -> String {
        format!("{}\nstdout so far:\n{}", self.desc, self.seen.join("\n"))
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `cond` until it holds or `limit` passes.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// How long a client with keep-alive 1 s may stay connected while silent.
/// [MQTT-3.1.2-24] says 1.5 s; 3 s leaves room for a loaded CI machine. mosquitto 2.0.11 checks
/// keep-alives on a coarse timer (about 7 s observed), a deviation: it gets 10 s.
pub fn keepalive_expiry_limit(kind: BrokerKind) -> Duration {
    match kind {
        BrokerKind::Midge => Duration::from_secs(3),
        BrokerKind::Mosquitto => Duration::from_secs(10),
    }
}

/// A client id unique within this process (tests in one binary share a process).
pub fn unique_id(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id() % 100000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}
