//! `io_backend` and `MIDGE_IO_BACKEND`: the broker runs on the interface asked for, says
//! which in its log, and a bad value is refused with a clear error. (The whole suite runs on
//! each backend in CI through the environment variable; this checks the setting itself.)
//! Where the kernel refuses io_uring the io_uring tests are skipped, unless
//! `MIDGE_REQUIRE_IO_URING` is set (CI sets it), when they fail.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::raw::Raw;
use common::{is_midge, midge_bin, unique_id, Broker};
use midge::reactor::{IoBackend, Reactor};

fn io_uring_available() -> bool {
    match Reactor::new(IoBackend::IoUring, mio::Token(0)) {
        Ok(_) => true,
        Err(e) => {
            assert!(
                std::env::var_os("MIDGE_REQUIRE_IO_URING").is_none(),
                "MIDGE_REQUIRE_IO_URING is set and io_uring fails: {e}"
            );
            eprintln!("skipped: io_uring is not available here ({e})");
            false
        }
    }
}

/// 200 QoS 1 messages of growing size (up to 20 KiB: several receive buffers each) from one
/// client to another arrive whole and in order.
fn round_trip(port: u16) {
    let id = unique_id("iob");
    let mut sub = Raw::subscribed(port, &format!("{id}-sub"), &[("iob/t", 1)]);
    let mut publisher = Raw::connected(port, &format!("{id}-pub"));
    for i in 0..200u32 {
        let mut payload = vec![(i % 251) as u8; 100 * i as usize + 4];
        payload[..4].copy_from_slice(&i.to_be_bytes());
        publisher.publish_complete("iob/t", &payload, 1, false, (i % 60000 + 1) as u16);
        let p = sub.recv_publish_ack();
        assert_eq!(p.payload.len(), payload.len(), "message {i}");
        assert_eq!(&p.payload[..], &payload[..], "message {i}");
    }
}

/// The backend a broker configured with `io_backend configured` runs on here:
/// `MIDGE_IO_BACKEND` (the suite's backend) overrides the configuration, and `auto` is
/// io_uring where it works (the callers check that first).
fn expected(configured: &str) -> String {
    let chosen = std::env::var("MIDGE_IO_BACKEND").unwrap_or_else(|_| configured.into());
    if chosen == "auto" {
        "io_uring".into()
    } else {
        chosen
    }
}

/// A broker with `io_backend configured` serves a round trip and says in its log what it
/// runs on.
fn runs_as_expected(configured: &str) {
    let b = Broker::start_with(&[&format!("io_backend {configured}")]);
    round_trip(b.port());
    let want = format!("shard(s) on {}", expected(configured));
    assert!(b.log().contains(&want), "{want}: {}", b.log());
}

#[test]
fn a_broker_configured_for_io_uring_runs_on_it() {
    if is_midge() && io_uring_available() {
        runs_as_expected("io_uring");
    }
}

#[test]
fn auto_picks_io_uring_where_the_kernel_allows_it() {
    if is_midge() && io_uring_available() {
        runs_as_expected("auto");
    }
}

/// Whatever the suite runs on: configured for epoll, the variable decides.
#[test]
fn the_environment_overrides_the_configuration() {
    if is_midge() && (expected("epoll") == "epoll" || io_uring_available()) {
        runs_as_expected("epoll");
    }
}

#[test]
fn a_bad_environment_value_stops_start_up_naming_the_variable() {
    if !is_midge() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("m.conf");
    std::fs::write(&conf, "listener 0 127.0.0.1\nallow_anonymous true\n").unwrap();
    let mut child = Command::new(midge_bin())
        .arg("-c")
        .arg(&conf)
        .env("MIDGE_IO_BACKEND", "kqueue")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("midge started with MIDGE_IO_BACKEND=kqueue");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("MIDGE_IO_BACKEND=kqueue: expected epoll, io_uring or auto"),
        "{text}"
    );
}
