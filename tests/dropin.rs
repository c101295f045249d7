//! midge as a drop-in for mosquitto on a Debian host: Debian's stock config tree runs with only
//! the port overridden (log file, pid file, persistence directory, the switch from root to the
//! `mosquitto` user), and `user` is honoured as mosquitto honours it.
//!
//! The tests start midge as root (as the project's machines and CI run them); where they are
//! not root the privilege checks say so and stop.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::clients::{mosquitto_pub, MosqSub};
use common::{free_port, midge_bin, STEP};

const STOCK_CONF: &str = "/etc/mosquitto/mosquitto.conf";
const STOCK_CONF_D: &str = "/etc/mosquitto/conf.d";

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `id -u NAME`.
fn uid_of(name: &str) -> Option<u32> {
    let out = Command::new("id").args(["-u", name]).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .flatten()
}

/// The real uids (Uid line: real, effective, saved, filesystem) of every thread of `pid`.
fn thread_uids(pid: u32) -> Vec<[u32; 4]> {
    let mut out = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        let ids: Vec<u32> = line[4..]
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect();
        out.push([ids[0], ids[1], ids[2], ids[3]]);
    }
    out
}

/// A copy of Debian's stock tree under `root`: the absolute paths it names (`/etc/mosquitto`,
/// `/run/mosquitto`, `/var/lib/mosquitto`, `/var/log/mosquitto`) moved under `root`, nothing
/// else changed. Returns the config file.
fn copy_stock_tree(root: &Path) -> PathBuf {
    let stock = fs::read_to_string(STOCK_CONF).expect("Debian's mosquitto package is installed");
    let mut text = stock.clone();
    for dir in [
        "/etc/mosquitto",
        "/run/mosquitto",
        "/var/lib/mosquitto",
        "/var/log/mosquitto",
    ] {
        fs::create_dir_all(root.join(&dir[1..])).unwrap();
        text = text.replace(dir, &root.join(&dir[1..]).display().to_string());
    }
    // Only the paths moved: the same options, in the same order.
    let options = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| l.split_whitespace().next().unwrap().to_owned())
            .collect()
    };
    assert_eq!(options(&text), options(&stock));
    assert!(text.contains("include_dir"), "{text}");
    let conf_d = root.join("etc/mosquitto/conf.d");
    fs::create_dir_all(&conf_d).unwrap();
    for entry in fs::read_dir(STOCK_CONF_D).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), conf_d.join(entry.file_name())).unwrap();
    }
    let conf = root.join("etc/mosquitto/mosquitto.conf");
    fs::write(&conf, text).unwrap();
    conf
}

/// Waits until `path` holds text for which `ok` is true.
fn wait_file(path: &Path, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + STEP * 2;
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        if ok(&text) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The broker child, killed by its own PID on drop.
struct Midge(Child);

impl Drop for Midge {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str]) -> Midge {
    Midge(
        Command::new(midge_bin())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn midge"),
    )
}

/// Makes every directory from `dir` up to `/` traversable by other users (a tempdir is 0700).
fn open_path_to(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for d in dir.ancestors() {
        if d == Path::new("/") {
            break;
        }
        let mode = fs::metadata(d).unwrap().permissions().mode();
        fs::set_permissions(d, fs::Permissions::from_mode(mode | 0o055)).unwrap();
    }
}

#[test]
fn debians_stock_config_tree_runs_with_the_port_overridden() {
    if !Path::new(STOCK_CONF).exists() {
        eprintln!("skipped: {STOCK_CONF} is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let conf = copy_stock_tree(dir.path());
    // A local file in conf.d, as an admin adds one: it is read (the time format shows it).
    fs::write(
        dir.path().join("etc/mosquitto/conf.d/local.conf"),
        "log_timestamp_format [%Y-%m-%dT%H:%M:%S]\n",
    )
    .unwrap();
    let lib = dir.path().join("var/lib/mosquitto");
    // mosquitto's own database must survive midge's store next to it.
    let mosquitto_db = lib.join("mosquitto.db");
    fs::write(&mosquitto_db, b"mosquitto's database").unwrap();
    let mosquitto_uid = uid_of("mosquitto");
    if is_root() {
        // As the package leaves it: /var/lib/mosquitto belongs to the mosquitto user.
        open_path_to(&lib);
        let status = Command::new("chown")
            .args(["mosquitto:", lib.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(status.success());
    }
    let port = free_port();
    let mut midge = spawn(&["-c", conf.to_str().unwrap(), "-p", &port.to_string()]);
    let pid = midge.0.id();

    // The pid file where the config says, with the broker's pid.
    let pid_file = dir.path().join("run/mosquitto/mosquitto.pid");
    let text = wait_file(&pid_file, |t| !t.is_empty());
    assert_eq!(text, format!("{pid}\n"));

    // It serves clients on the overridden port.
    let mut sub = MosqSub::start(port, &["-t", "dropin/t", "-q", "1"]);
    mosquitto_pub(port, &["-t", "dropin/t", "-q", "1", "-m", "hello"]);
    let got = sub.messages(1, STEP);
    assert_eq!(got.len(), 1, "{}", sub.describe());
    assert_eq!(got[0].payload, "hello");

    // Its log where the config says, in the format conf.d/local.conf chose.
    let log = dir.path().join("var/log/mosquitto/mosquitto.log");
    let text = wait_file(&log, |t| t.contains("New client connected"));
    assert!(text.contains("running with"), "{text}");
    assert!(text.contains("New client connected"), "{text}");
    let first = text.lines().next().unwrap();
    assert!(
        first.starts_with("[20") && first.as_bytes()[11] == b'T',
        "log_timestamp_format from conf.d: {first}"
    );

    // Started as root, it no longer is: every thread runs as the mosquitto user.
    if is_root() {
        let want = mosquitto_uid
            .or_else(|| uid_of("nobody"))
            .expect("a mosquitto or nobody user");
        let uids = thread_uids(pid);
        assert!(uids.len() > 1, "{uids:?}");
        for ids in uids {
            assert_eq!(ids, [want; 4], "a thread kept another uid");
        }
        assert!(text.contains("Switched to user"), "{text}");
    } else {
        eprintln!("not root: the switch of user is not tested");
    }

    // Persistence in the same directory, in midge's own files: mosquitto.db untouched.
    let midge_files: Vec<String> = fs::read_dir(&lib)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "mosquitto.db")
        .collect();
    assert!(!midge_files.is_empty(), "midge's store files in {lib:?}");
    assert_eq!(fs::read(&mosquitto_db).unwrap(), b"mosquitto's database");

    // SIGTERM stops it cleanly.
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + STEP;
    while midge.0.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = midge
        .0
        .try_wait()
        .unwrap()
        .expect("midge stopped on SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(wait_file(&log, |t| t.contains("midge stopped")).contains("midge stopped"));
}

#[test]
fn the_installed_stock_config_checks_clean() {
    if !Path::new(STOCK_CONF).exists() {
        eprintln!("skipped: {STOCK_CONF} is not installed");
        return;
    }
    let out = Command::new(midge_bin())
        .args(["check", "-c", STOCK_CONF])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{STOCK_CONF}: ok\n")
    );
    assert!(
        stderr.is_empty(),
        "no warnings for the stock file: {stderr}"
    );
}

/// Starts midge with `config` (a listener on a free port is added) and returns it once it
/// serves, or its stderr if it exited.
fn start_with(dir: &Path, config: &str) -> Result<(Midge, u16), String> {
    let port = free_port();
    let conf = dir.join("m.conf");
    fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\n{config}"),
    )
    .unwrap();
    let mut midge = spawn(&["-c", conf.to_str().unwrap()]);
    let deadline = Instant::now() + STEP * 2;
    loop {
        if let Some(_status) = midge.0.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            midge
                .0
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return Err(err);
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok((midge, port));
        }
        assert!(Instant::now() < deadline, "midge did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts midge with `config` like [`start_with`] and returns its stderr once it has exited
/// with a failure (it may serve for a moment first: the user is switched after the bind).
fn refused(dir: &Path, config: &str) -> String {
    let port = free_port();
    let conf = dir.join("m.conf");
    fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\n{config}"),
    )
    .unwrap();
    let mut midge = spawn(&["-c", conf.to_str().unwrap()]);
    let deadline = Instant::now() + STEP * 2;
    let status = loop {
        if let Some(status) = midge.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "midge kept running with {config}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "{status:?}");
    let mut err = String::new();
    use std::io::Read;
    midge
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    err
}

/// Waits until every thread of `pid` runs as `uid` (the switch follows the bind).
fn wait_uids(pid: u32, uid: u32) -> Vec<[u32; 4]> {
    let deadline = Instant::now() + STEP;
    loop {
        let uids = thread_uids(pid);
        if uids.iter().all(|u| *u == [uid; 4]) || Instant::now() > deadline {
            return uids;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn user_option_names_who_the_broker_becomes() {
    if !is_root() {
        eprintln!("skipped: not root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nobody = uid_of("nobody").expect("nobody exists");
    let (midge, _) = start_with(dir.path(), "user nobody\n").unwrap();
    let uids = wait_uids(midge.0.id(), nobody);
    assert!(uids.iter().all(|u| *u == [nobody; 4]), "{uids:?}");
    drop(midge);

    // `user root` keeps root, as mosquitto (which warns).
    let (midge, _) = start_with(dir.path(), "user root\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(thread_uids(midge.0.id()).iter().all(|u| *u == [0; 4]));
    drop(midge);

    // A user that does not exist stops start-up with an error that names it.
    let err = refused(dir.path(), "user no-such-user-dropin\n");
    assert!(err.contains("no-such-user-dropin"), "{err}");

    // A persistence directory the new user cannot write stops start-up (a tempdir is
    // root's, 0700): never a broker that acknowledges what it cannot store.
    let store = dir.path().join("store");
    let err = refused(
        dir.path(),
        &format!(
            "user nobody\npersistence true\npersistence_location {}\n",
            store.display()
        ),
    );
    assert!(
        err.contains("cannot write the persistence directory"),
        "{err}"
    );
}

#[test]
fn log_dest_adds_up_and_topic_publishes_on_sys_broker_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("m.log");
    let (midge, port) = start_with(
        dir.path(),
        &format!(
            "user root\nlog_dest topic\nlog_dest file {}\nlog_timestamp false\n",
            log.display()
        ),
    )
    .unwrap();
    let mut sub = MosqSub::start(port, &["-t", "$SYS/broker/log/#", "-i", "log-reader"]);
    // A second client's connection line comes to the first on $SYS/broker/log/N.
    mosquitto_pub(port, &["-t", "x", "-m", "y", "-i", "logged-client"]);
    let deadline = Instant::now() + STEP;
    let mut seen = Vec::new();
    while Instant::now() < deadline
        && !seen
            .iter()
            .any(|m: &common::clients::Msg| m.payload.contains("logged-client"))
    {
        seen.extend(sub.messages(1, Duration::from_millis(200)));
    }
    let line = seen
        .iter()
        .find(|m| m.payload.contains("logged-client"))
        .unwrap_or_else(|| panic!("no log line on $SYS/broker/log: {seen:?}"));
    assert_eq!(line.topic, "$SYS/broker/log/N");
    assert!(!line.retain && line.qos == 0, "{line:?}");
    // And the same lines in the file, without a time (log_timestamp false).
    let text = wait_file(&log, |t| t.contains("logged-client"));
    assert!(
        text.lines().all(|l| !l.starts_with(char::is_numeric)),
        "{text}"
    );
    assert!(text.contains("info: New client connected"), "{text}");
    drop(midge);
}

#[test]
fn connection_messages_false_leaves_connections_out_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("m.log");
    let (midge, port) = start_with(
        dir.path(),
        &format!(
            "user root\nconnection_messages false\nlog_dest file {}\n",
            log.display()
        ),
    )
    .unwrap();
    mosquitto_pub(port, &["-t", "x", "-m", "y", "-i", "quiet-client"]);
    drop(midge);
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.contains("running with"), "{text}");
    assert!(!text.contains("quiet-client"), "{text}");
}

#[test]
fn a_password_file_with_bad_lines_starts_like_mosquitto() {
    use common::{run, Broker, BrokerKind};
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("passwd");
    let made = Command::new(midge_bin())
        .args(["passwd", "-c", "-b", pw.to_str().unwrap(), "good", "goodpw"])
        .status()
        .unwrap();
    assert!(made.success());
    let good = fs::read_to_string(&pw).unwrap();
    // A line without a colon, a plain-text password, an empty user, and `good` again.
    fs::write(
        &pw,
        format!("{good}no colon here\nplain:secret\n:$6$abc$def\n{good}"),
    )
    .unwrap();
    for kind in [BrokerKind::Midge, BrokerKind::Mosquitto] {
        let b = Broker::start_config_as(kind, |port| {
            format!(
                "listener {port} 127.0.0.1\nuser root\nallow_anonymous false\npassword_file {}\n",
                pw.display()
            )
        });
        let with = |user: &str, pass: &str| {
            run(
                Command::new("mosquitto_pub").args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &b.port().to_string(),
                    "-u",
                    user,
                    "-P",
                    pass,
                    "-t",
                    "t",
                    "-m",
                    "m",
                ]),
                STEP,
            )
            .success()
        };
        assert!(with("good", "goodpw"), "{kind:?}: the good user connects");
        assert!(
            !with("plain", "secret"),
            "{kind:?}: a skipped line opens no door"
        );
        assert!(!with("good", "wrong"), "{kind:?}");
        if kind == BrokerKind::Midge {
            let log = b.log();
            for line in [2, 3, 4, 5] {
                let needle = format!("{}:{line}: ", pw.display());
                assert!(log.contains(&needle), "line {line} logged: {log}");
            }
            assert!(log.contains("line skipped"), "{log}");
        }
    }
}

#[test]
fn bind_interface_binds_the_listener_to_that_interface() {
    let dir = tempfile::tempdir().unwrap();
    // On the loopback interface a loopback listener serves.
    let (midge, port) = start_with(dir.path(), "bind_interface lo\nuser root\n").unwrap();
    mosquitto_pub(port, &["-t", "x", "-m", "y"]);
    drop(midge);
    // An interface that does not exist stops start-up with an error that names the option.
    let err = refused(dir.path(), "bind_interface nosuch0\nuser root\n");
    assert!(err.contains("bind_interface nosuch0"), "{err}");
}
