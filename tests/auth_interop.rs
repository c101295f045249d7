//! Authentication interop with mosquitto, both directions, and ACL files.
//!
//! - a password file written by Debian's `mosquitto_passwd` is verified by `midge::auth`;
//! - a password file written by `midge passwd` is accepted by a real `mosquitto` (started here
//!   on a free loopback port and killed by its PID), for `$7$` and `$6$`;
//! - ACL files: allow/deny, `%c`/`%u` patterns, the anonymous section, subscription filters.
//!
//! These tests do not depend on `MIDGE_TEST_BROKER`: they drive the library, the `midge passwd`
//! binary and mosquitto directly. (The broker's authentication with real clients: `auth.rs`.)

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use midge::auth::{Access, Acl, Auth, HashAlgorithm, PasswordFile};
use midge::config::Config;

fn midge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_midge"))
}

fn mosquitto_bin() -> &'static str {
    if Path::new("/usr/sbin/mosquitto").exists() {
        "/usr/sbin/mosquitto"
    } else {
        "mosquitto"
    }
}

/// Runs `cmd` to completion within 20 s (password hashing in a debug build is not instant).
fn run(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not finish in 20 s");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A mosquitto this test started; killed by PID on drop.
struct Mosquitto {
    child: Child,
    port: u16,
}

impl Mosquitto {
    fn start(dir: &Path, extra_config: &str) -> Mosquitto {
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        // `user root`: as root, mosquitto would otherwise switch to the `mosquitto` user, who
        // cannot enter the test's private temporary directory.
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nuser root\n{extra_config}"),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("mosquitto.log")).unwrap();
        let child = Command::new(mosquitto_bin())
            .arg("-c")
            .arg(&conf)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start mosquitto");
        let mut m = Mosquitto { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = m.child.try_wait().unwrap() {
                let log = std::fs::read_to_string(dir.join("mosquitto.log")).unwrap_or_default();
                panic!("mosquitto exited ({status}):\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {port}"
            );
            thread::sleep(Duration::from_millis(20));
        }
        m
    }

    /// `mosquitto_pub` with `args`; returns its exit code (0 = connected and published; 5 =
    /// CONNACK "not authorised" in 3.1.1).
    fn publish(&self, args: &[&str]) -> i32 {
        let out = run(Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-t", "auth/test", "-m", "hello"])
            .args(args));
        out.status.code().unwrap_or(-1)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn password_file_made_by_mosquitto_passwd_is_read_by_midge() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    // Default ($7$, 101 iterations), then $6$, then $7$ with more iterations.
    ok(Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&file)
        .args(["alice", "s3cret"]));
    ok(Command::new("mosquitto_passwd")
        .args(["-H", "sha512", "-b"])
        .arg(&file)
        .args(["bob", "hunter2"]));
    ok(Command::new("mosquitto_passwd")
        .args(["-H", "sha512-pbkdf2", "-I", "1000", "-b"])
        .arg(&file)
        .args(["carol", "pässwörd with spaces"]));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("alice:$7$101$"), "{text}");
    assert!(text.contains("bob:$6$"), "{text}");
    assert!(text.contains("carol:$7$1000$"), "{text}");

    let pw = PasswordFile::load(&file).unwrap();
    assert_eq!(pw.len(), 3);
    assert_eq!(
        pw.get("alice").unwrap().algorithm(),
        HashAlgorithm::Sha512Pbkdf2 { iterations: 101 }
    );
    assert_eq!(pw.get("bob").unwrap().algorithm(), HashAlgorithm::Sha512);
    assert!(pw.verify("alice", b"s3cret"));
    assert!(pw.verify("bob", b"hunter2"));
    assert!(pw.verify("carol", "pässwörd with spaces".as_bytes()));
    assert!(!pw.verify("alice", b"hunter2"));
    assert!(!pw.verify("bob", b"Hunter2"));
    assert!(!pw.verify("carol", b""));
    assert!(!pw.verify("mallory", b"s3cret"));

    // mosquitto_passwd -D on the file, then midge reads it again.
    ok(Command::new("mosquitto_passwd")
        .arg("-D")
        .arg(&file)
        .arg("bob"));
    let pw = PasswordFile::load(&file).unwrap();
    assert!(!pw.contains("bob") && pw.verify("alice", b"s3cret"));
}

#[test]
fn password_file_made_by_midge_passwd_is_accepted_by_mosquitto() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    // $7$ (the default), then $6$ and $7$ with other iterations added to the same file.
    ok(midge()
        .args(["passwd", "-b", "-c"])
        .arg(&file)
        .args(["alice", "s3cret"]));
    ok(midge()
        .args(["passwd", "-H", "sha512", "-b"])
        .arg(&file)
        .args(["bob", "hunter2"]));
    ok(midge()
        .args(["passwd", "-H", "sha512-pbkdf2", "-I", "2000", "-b"])
        .arg(&file)
        .args(["carol", "c:o l"]));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("alice:$7$101$"), "{text}");
    assert!(text.contains("bob:$6$"), "{text}");
    assert!(text.contains("carol:$7$2000$"), "{text}");

    let m = Mosquitto::start(
        dir.path(),
        &format!("allow_anonymous false\npassword_file {}\n", file.display()),
    );
    assert_eq!(
        m.publish(&["-u", "alice", "-P", "s3cret"]),
        0,
        "alice ($7$)"
    );
    assert_eq!(m.publish(&["-u", "bob", "-P", "hunter2"]), 0, "bob ($6$)");
    assert_eq!(
        m.publish(&["-u", "carol", "-P", "c:o l"]),
        0,
        "carol ($7$ 2000)"
    );
    assert_eq!(
        m.publish(&["-u", "carol", "-P", "c:o l", "-V", "mqttv5"]),
        0,
        "carol, MQTT 5"
    );
    // mosquitto_pub exits with the CONNACK code: 5 = not authorised.
    assert_eq!(
        m.publish(&["-u", "alice", "-P", "wrong"]),
        5,
        "wrong password"
    );
    assert_eq!(
        m.publish(&["-u", "bob", "-P", "s3cret"]),
        5,
        "another user's password"
    );
    assert_eq!(
        m.publish(&["-u", "nobody", "-P", "s3cret"]),
        5,
        "unknown user"
    );
    assert_eq!(m.publish(&[]), 5, "anonymous");
    drop(m);

    // After `midge passwd -D`, mosquitto refuses the deleted user only.
    ok(midge().args(["passwd", "-D"]).arg(&file).arg("bob"));
    let m = Mosquitto::start(
        dir.path(),
        &format!("allow_anonymous false\npassword_file {}\n", file.display()),
    );
    assert_eq!(
        m.publish(&["-u", "bob", "-P", "hunter2"]),
        5,
        "deleted user"
    );
    assert_eq!(
        m.publish(&["-u", "alice", "-P", "s3cret"]),
        0,
        "alice still there"
    );
}

#[test]
fn files_edited_by_both_tools_stay_readable_by_both() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    ok(midge()
        .args(["passwd", "-b", "-c"])
        .arg(&file)
        .args(["alice", "one"]));
    ok(Command::new("mosquitto_passwd")
        .arg("-b")
        .arg(&file)
        .args(["bob", "two"]));
    ok(midge()
        .args(["passwd", "-b"])
        .arg(&file)
        .args(["alice", "uno"]));
    let pw = PasswordFile::load(&file).unwrap();
    assert!(pw.verify("alice", b"uno") && !pw.verify("alice", b"one"));
    assert!(pw.verify("bob", b"two"));
}

#[test]
fn midge_passwd_reads_the_password_from_stdin_when_it_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    let feed = |input: &str, args: &[&str]| {
        let mut child = midge()
            .arg("passwd")
            .args(args)
            .arg(&file)
            .arg("dana")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = feed("pw one\npw one\n", &["-c"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(PasswordFile::load(&file).unwrap().verify("dana", b"pw one"));
    let out = feed("pw two\npw 2\n", &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("passwords do not match"));
    assert!(PasswordFile::load(&file).unwrap().verify("dana", b"pw one"));
}

#[test]
fn midge_passwd_upgrades_a_plain_text_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    std::fs::write(&file, "# plain\nerin:first\nfrank:second\n").unwrap();
    // Loading skips plain-text lines, naming FILE:LINE (as mosquitto skips them).
    let loaded = PasswordFile::load(&file).unwrap();
    let e = loaded.skipped().join("\n");
    assert!(loaded.is_empty(), "{e}");
    assert!(
        e.starts_with(&format!("{}:2: user 'erin':", file.display())),
        "{e}"
    );
    ok(midge().args(["passwd", "-U"]).arg(&file));
    let pw = PasswordFile::load(&file).unwrap();
    assert!(pw.verify("erin", b"first") && pw.verify("frank", b"second"));
    // Running -U again changes nothing (mosquitto_passwd 2.0.11 would hash the hashes).
    let before = std::fs::read_to_string(&file).unwrap();
    ok(midge().args(["passwd", "-U"]).arg(&file));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
}

#[test]
fn midge_passwd_errors_exit_1_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    let out = run(midge().args(["passwd", "-b"]).arg(&file).args(["u", "p"]));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot read"), "{err}");
    let out = run(midge()
        .args(["passwd", "-c", "-b"])
        .arg(&file)
        .args(["a:b", "p"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must not contain ':'"));
    assert!(!file.exists());
}

#[test]
fn config_options_password_file_and_acl_file() {
    let c = Config::parse_str(
        "password_file /etc/midge/passwd\nacl_file /etc/midge/acl\n",
        "m.conf",
    )
    .unwrap();
    assert_eq!(
        c.password_file.as_deref(),
        Some(Path::new("/etc/midge/passwd"))
    );
    assert_eq!(c.acl_file.as_deref(), Some(Path::new("/etc/midge/acl")));
    let e = Config::parse_str("password_file\n", "m.conf")
        .unwrap_err()
        .to_string();
    assert_eq!(e, "m.conf:1: missing value for 'password_file'");
    let e = Config::parse_str("acl_file a\n\nacl_file b\n", "m.conf")
        .unwrap_err()
        .to_string();
    assert_eq!(e, "m.conf:3: duplicate 'acl_file' value");
    // per_listener_settings must come before security options (as mosquitto).
    let e = Config::parse_str("password_file p\nper_listener_settings true\n", "m.conf")
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "m.conf:2: per_listener_settings must be set before any other security settings"
    );
    // With per_listener_settings, the file belongs to the listener block it is in.
    let c = Config::parse_str(
        "per_listener_settings true\nlistener 1883 127.0.0.1\npassword_file p\nlistener 1884 127.0.0.1\n",
        "m.conf",
    )
    .unwrap();
    assert_eq!(c.password_file, None);
    assert_eq!(
        c.listeners[0].password_file.as_deref(),
        Some(Path::new("p"))
    );
    assert_eq!(c.listeners[1].password_file, None);
    // A missing file is reported by Auth::load, naming the file.
    let e = Auth::load(&Config::parse_str("password_file /nonexistent/pw\n", "m.conf").unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("/nonexistent/pw: cannot read:"), "{e}");
}

const ACL: &str = "\
# anonymous clients
topic read public/#
topic write public/inbox

user alice
topic readwrite home/alice/#
topic deny home/alice/vault
topic read sensors/+/temp

user bob
topic read home/#

# everyone
pattern readwrite clients/%c/#
pattern read users/%u/notes
pattern deny clients/%c/locked
";

#[test]
fn acl_allow_and_deny() {
    let acl = Acl::parse(ACL, "acl").unwrap();
    let alice = acl.for_client("phone", Some("alice"));
    assert!(alice.allowed("home/alice/lamp", Access::Write));
    assert!(alice.allowed("home/alice/lamp", Access::Read));
    assert!(!alice.allowed("home/alice/vault", Access::Read));
    assert!(!alice.allowed("home/alice/vault", Access::Write));
    assert!(alice.allowed("sensors/kitchen/temp", Access::Read));
    assert!(!alice.allowed("sensors/kitchen/temp", Access::Write));
    assert!(!alice.allowed("home/bob/lamp", Access::Read));
    // bob reads all of home/ but writes nothing of it.
    let bob = acl.for_client("pc", Some("bob"));
    assert!(bob.allowed("home/alice/vault", Access::Read));
    assert!(!bob.allowed("home/alice/lamp", Access::Write));
    // A user with no section only gets the patterns.
    let carol = acl.for_client("tab", Some("carol"));
    assert!(!carol.allowed("public/news", Access::Read));
    assert!(carol.allowed("clients/tab/x", Access::Write));
}

#[test]
fn acl_anonymous_section() {
    let acl = Acl::parse(ACL, "acl").unwrap();
    let anon = acl.for_client("sensor-1", None);
    assert!(anon.allowed("public/news", Access::Read));
    assert!(!anon.allowed("public/news", Access::Write));
    assert!(anon.allowed("public/inbox", Access::Write));
    assert!(!anon.allowed("home/alice/lamp", Access::Read));
    // The anonymous section is not for named users.
    assert!(!acl.allowed("c", Some("alice"), "public/news", Access::Read));
}

#[test]
fn acl_patterns_substitute_client_id_and_user_name() {
    let acl = Acl::parse(ACL, "acl").unwrap();
    let c = acl.for_client("dev42", Some("dora"));
    assert!(c.allowed("clients/dev42/status", Access::Write));
    assert!(c.allowed("clients/dev42", Access::Read));
    assert!(!c.allowed("clients/dev43/status", Access::Write));
    assert!(
        !c.allowed("clients/dev42/locked", Access::Write),
        "deny pattern"
    );
    assert!(c.allowed("users/dora/notes", Access::Read));
    assert!(!c.allowed("users/dora/notes", Access::Write));
    assert!(!c.allowed("users/eve/notes", Access::Read));
    // %u never matches an anonymous client.
    let anon = acl.for_client("dev42", None);
    assert!(!anon.allowed("users//notes", Access::Read));
    assert!(anon.allowed("clients/dev42/status", Access::Write));
    // A client id with a wildcard gets nothing from patterns.
    assert!(!acl.allowed("#", None, "clients/#/status", Access::Write));
}

#[test]
fn acl_subscription_filters() {
    let acl = Acl::parse(ACL, "acl").unwrap();
    let alice = acl.for_client("phone", Some("alice"));
    assert!(alice.allowed("home/alice/#", Access::Subscribe));
    assert!(alice.allowed("sensors/+/temp", Access::Subscribe));
    assert!(
        alice.allowed("sensors/#", Access::Subscribe),
        "overlaps a read rule"
    );
    assert!(alice.allowed("$share/g/home/alice/+", Access::Subscribe));
    assert!(
        !alice.allowed("home/alice/vault", Access::Subscribe),
        "covered by deny"
    );
    assert!(
        !alice.allowed("home/bob/#", Access::Subscribe),
        "no read rule overlaps"
    );
    assert!(!alice.allowed("$SYS/#", Access::Subscribe));
    // Patterns apply to subscriptions too.
    assert!(alice.allowed("clients/phone/#", Access::Subscribe));
    assert!(!alice.allowed("clients/other/#", Access::Subscribe));
    let anon = acl.for_client("s", None);
    assert!(anon.allowed("public/+", Access::Subscribe));
    assert!(!anon.allowed("home/#", Access::Subscribe));
}

#[test]
fn acl_errors_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("acl");
    std::fs::write(&file, "user alice\ntopic read ok\ntopic reed bad\n").unwrap();
    let e = Acl::load(&file).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{}:3: bad access 'reed' (expected read, write, readwrite or deny)",
            file.display()
        )
    );
}
