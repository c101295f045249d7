//! A managed broker does not outlive loadgen: killed by a timeout, a CI runner or `kill`
//! (SIGTERM, or SIGKILL, where loadgen runs no code at all), loadgen takes the broker it
//! started with it, so no stale broker keeps its port and its CPU and skews the next run.
//!
//! Needs Debian's mosquitto (`apt-get install -y mosquitto`); fails loudly without it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The PIDs of `pid`'s children (every thread's), read from /proc.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Gone, or a zombie nobody reaps (some containers' init does not).
fn has_ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn a_killed_loadgen_takes_its_broker_with_it() {
    let mosquitto = loadgen::broker::known("mosquitto", None).unwrap();
    if let Some(why) = mosquitto.unavailable() {
        panic!("this test needs Debian's mosquitto (apt-get install -y mosquitto): {why}");
    }
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        let out =
            std::env::temp_dir().join(format!("loadgen-killed-{}-{signal}", std::process::id()));
        let mut lg = Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .args(["run", "--scenario", "p2p", "--clients", "2", "--rate", "10"])
            .args(["--warmup", "0", "--duration", "60", "--max-duration", "60"])
            .args(["--brokers", "mosquitto", "-q", "--out"])
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("loadgen starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        let broker = loop {
            if let Some(b) = children(lg.id())
                .into_iter()
                .find(|&c| comm(c).as_deref() == Some("mosquitto"))
            {
                break b;
            }
            assert!(Instant::now() < deadline, "loadgen started no mosquitto");
            std::thread::sleep(Duration::from_millis(20));
        };
        // SAFETY: kill() on our own child, not yet reaped, so its PID is not reused.
        unsafe { libc::kill(lg.id() as libc::pid_t, signal) };
        lg.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !has_ended(broker) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let ended = has_ended(broker);
        if !ended {
            // SAFETY: the mosquitto this test's loadgen started (checked by name above).
            unsafe { libc::kill(broker as libc::pid_t, libc::SIGKILL) };
        }
        let _ = std::fs::remove_dir_all(&out);
        assert!(
            ended,
            "mosquitto {broker} outlived loadgen killed by signal {signal}"
        );
    }
}
