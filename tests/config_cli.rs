//! midge's command line and config file handling. midge only: with
//! MIDGE_TEST_BROKER=mosquitto these tests print a note and pass.

mod common;

use std::process::Command;
use std::time::Duration;

use common::raw::Raw;
use common::{free_port, is_midge, midge_bin, run, Spawned};

const LIMIT: Duration = Duration::from_secs(10);

fn skip_unless_midge(test: &str) -> bool {
    if !is_midge() {
        println!("note: {test} checks midge's CLI only; skipped for MIDGE_TEST_BROKER=mosquitto");
        return true;
    }
    false
}

fn write_config(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("midge.conf");
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn help_flag_exits_0() {
    if skip_unless_midge("help_flag_exits_0") {
        return;
    }
    let out = run(Command::new(midge_bin()).arg("--help"), LIMIT);
    assert!(out.success(), "{out:?}");
    assert!(out.stdout.to_lowercase().contains("usage"), "{out:?}");
}

#[test]
fn version_flag_exits_0_and_prints_version() {
    if skip_unless_midge("version_flag_exits_0_and_prints_version") {
        return;
    }
    let out = run(Command::new(midge_bin()).arg("--version"), LIMIT);
    assert!(out.success(), "{out:?}");
    assert!(out.stdout.contains(env!("CARGO_PKG_VERSION")), "{out:?}");
}

#[test]
fn unknown_config_option_exits_nonzero_with_file_and_line() {
    if skip_unless_midge("unknown_config_option_exits_nonzero_with_file_and_line") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = write_config(
        &dir,
        &format!("# comment\nlistener {port} 127.0.0.1\nfrobnicate_the_widgets yes\n"),
    );
    let out = run(Command::new(midge_bin()).args(["-c", &path]), LIMIT);
    assert!(
        !out.timed_out,
        "midge kept running with a bad config: {out:?}"
    );
    assert!(!out.success(), "{out:?}");
    assert!(
        out.stderr.contains(&format!("{path}:3:")),
        "stderr must name FILE:LINE: {out:?}"
    );
}

#[test]
fn bad_config_value_exits_nonzero_with_file_and_line() {
    if skip_unless_midge("bad_config_value_exits_nonzero_with_file_and_line") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = write_config(
        &dir,
        &format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_keepalive banana\n"),
    );
    let out = run(Command::new(midge_bin()).args(["-c", &path]), LIMIT);
    assert!(
        !out.timed_out,
        "midge kept running with a bad config: {out:?}"
    );
    assert!(!out.success(), "{out:?}");
    assert!(
        out.stderr.contains(&format!("{path}:3:")),
        "stderr must name FILE:LINE: {out:?}"
    );
}

#[test]
fn missing_config_file_exits_nonzero_naming_the_file() {
    if skip_unless_midge("missing_config_file_exits_nonzero_naming_the_file") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("does-not-exist.conf");
    let path = path.to_string_lossy();
    let out = run(Command::new(midge_bin()).args(["-c", &path]), LIMIT);
    assert!(!out.timed_out, "{out:?}");
    assert!(!out.success(), "{out:?}");
    assert!(
        out.stderr.contains(path.as_ref()),
        "stderr must name the file: {out:?}"
    );
}

#[test]
fn port_flag_overrides_listener_port() {
    if skip_unless_midge("port_flag_overrides_listener_port") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config_port = free_port();
    let cli_port = free_port();
    let path = write_config(
        &dir,
        &format!("listener {config_port} 127.0.0.1\nallow_anonymous true\nlog_dest stdout\n"),
    );
    let mut broker =
        Spawned::spawn(Command::new(midge_bin()).args(["-c", &path, "-p", &cli_port.to_string()]));
    let up = common::eventually(LIMIT, || {
        std::net::TcpStream::connect(("127.0.0.1", cli_port)).is_ok()
    });
    assert!(
        up,
        "nothing listening on -p {cli_port}: {}",
        broker.describe()
    );
    let mut c = Raw::connected(cli_port, "cli-port");
    c.ping();
    broker.kill();
}

#[test]
fn sigterm_makes_midge_exit_0() {
    if skip_unless_midge("sigterm_makes_midge_exit_0") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = write_config(
        &dir,
        &format!("listener {port} 127.0.0.1\nallow_anonymous true\nlog_dest stdout\n"),
    );
    let mut broker = Spawned::spawn(Command::new(midge_bin()).args(["-c", &path]));
    let up = common::eventually(LIMIT, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "midge did not start: {}", broker.describe());
    let mut c = Raw::connected(port, "term");
    c.ping();
    broker.signal("TERM");
    let status = broker.wait(LIMIT);
    assert!(
        matches!(status, Some(s) if s.success()),
        "exit status after SIGTERM: {status:?}; {}",
        broker.describe()
    );
}
