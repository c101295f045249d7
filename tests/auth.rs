//! The broker's authentication and authorisation, with real clients: a password file made by
//! `midge passwd` (mosquitto's format), an ACL file in mosquitto's syntax, the secure default,
//! empty credentials, and 5.0 enhanced authentication (refused). The same tests run against
//! mosquitto (`MIDGE_TEST_BROKER=mosquitto`); where mosquitto chooses differently, the test
//! says so. (The files themselves, shared with mosquitto: `auth_interop.rs`; the read ACL on
//! every delivery path: `acl_paths.rs`.)

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::auth_files::AuthFiles;
use common::raw::{self, Connect, Raw};
use common::v5::{auth_packet, connect, rc, V5};
use common::{run, unique_id, Broker, STEP};

fn connack(b: &Broker, c: &Connect) -> u8 {
    let mut raw = Raw::tcp(b.port());
    let (_, rc) = raw.handshake(c);
    rc
}

/// The ACL file of every test here.
const ACL: &str = "\
# anonymous clients: none here (allow_anonymous false)
user alice
topic write a/#
topic read b/#
topic deny b/secret
user bob
topic readwrite b/#
topic read a/#
pattern readwrite clients/%c/#
pattern read users/%u/inbox
";

/// The password file (alice/secret as `$7$`, bob/hunter2 as `$6$`) and the ACL file.
fn files() -> AuthFiles {
    let f = AuthFiles::new(&[("alice", "secret")], ACL);
    f.passwd(&["-b", "-H", "sha512", &f.path("passwd"), "bob", "hunter2"]);
    f
}

/// (3.1.1 section 3.2.2.3): a known user with the right password is accepted;
/// a wrong password, an unknown user and an anonymous client get CONNACK 5 (mosquitto 2.0
/// answers all of them "not authorized").
#[test]
fn password_file_accepts_right_password_and_refuses_wrong_ones() {
    let f = files();
    let b = f.broker(false, &[]);
    assert_eq!(connack(&b, &Connect::new("c1").login("alice", "secret")), 0);
    assert_eq!(
        connack(&b, &Connect::new("c2").login("bob", "hunter2")),
        0,
        "$6$ entry"
    );
    assert_eq!(connack(&b, &Connect::new("c3").login("alice", "wrong")), 5);
    assert_eq!(
        connack(&b, &Connect::new("c4").login("mallory", "secret")),
        5
    );
    assert_eq!(connack(&b, &Connect::new("c5")), 5, "anonymous");
}

/// A real client (mosquitto_pub) with credentials, and with wrong ones.
#[test]
fn mosquitto_pub_with_credentials_is_accepted_and_without_is_refused() {
    let f = files();
    let b = f.broker(false, &[]);
    let p = b.port().to_string();
    let pubs = |args: &[&str]| {
        let mut cmd = Command::new("mosquitto_pub");
        cmd.args(["-h", "127.0.0.1", "-p", &p, "-t", "a/x", "-m", "hi"])
            .args(args);
        run(&mut cmd, Duration::from_secs(10)).success()
    };
    assert!(pubs(&["-u", "alice", "-P", "secret"]));
    assert!(!pubs(&["-u", "alice", "-P", "nope"]));
    assert!(!pubs(&[]));
    assert!(pubs(&["-V", "mqttv5", "-u", "alice", "-P", "secret"]));
    assert!(!pubs(&["-V", "mqttv5", "-u", "alice", "-P", "nope"]));
}

/// A slow password check (100,000 PBKDF2 iterations: about a second in a debug build) runs off
/// the event loop: another client connects and gets its messages meanwhile.
#[test]
fn slow_password_check_does_not_stall_other_clients() {
    let f = files();
    f.passwd(&["-b", "-I", "100000", &f.path("passwd"), "slow", "slow"]);
    let b = f.broker(false, &[]);
    let mut slow = Raw::tcp(b.port());
    slow.send(&Connect::new("slow").login("slow", "slow").encode());
    let start = Instant::now();
    let mut sub = Raw::tcp(b.port());
    let (_, rc) = sub.handshake(&Connect::new("fast-sub").login("bob", "hunter2"));
    assert_eq!(rc, 0);
    sub.subscribe(1, &[("b/live", 0)]);
    let mut publ = Raw::tcp(b.port());
    assert_eq!(
        publ.handshake(&Connect::new("fast-pub").login("bob", "hunter2"))
            .1,
        0
    );
    publ.publish_complete("b/live", b"x", 0, false, 0);
    assert_eq!(sub.recv_publish_ack().payload, b"x");
    let fast = start.elapsed();
    // Generous: a debug build on a loaded machine hashes slowly.
    let p = slow
        .recv(Duration::from_secs(60))
        .expect("CONNACK for the slow user");
    assert_eq!(p.kind(), common::raw::CONNACK);
    let slow_took = start.elapsed();
    assert_eq!(
        p.body.get(1).copied(),
        Some(0),
        "the slow user is accepted in the end"
    );
    if b.is_midge() {
        assert!(
            fast < slow_took,
            "others were served first ({fast:?} vs {slow_took:?})"
        );
    }
}

/// ACL: alice may publish under a/ but not b/; she reads b/ but not b/secret; a SUBSCRIBE
/// to a filter she can never read is refused (SUBACK 0x80). mosquitto 2.0 grants every
/// SUBSCRIBE and only filters deliveries; midge refuses what could never deliver anything.
#[test]
fn acl_controls_publish_subscribe_and_delivery() {
    let f = files();
    let b = f.broker(false, &[]);
    let mut alice = Raw::tcp(b.port());
    assert_eq!(
        alice
            .handshake(&Connect::new("alice-1").login("alice", "secret"))
            .1,
        0
    );
    let mut bob = Raw::tcp(b.port());
    assert_eq!(
        bob.handshake(&Connect::new("bob-1").login("bob", "hunter2"))
            .1,
        0
    );

    let codes = alice.subscribe(1, &[("b/#", 1), ("c/#", 1)]);
    assert_eq!(codes[0], 1);
    if b.is_midge() {
        assert_eq!(codes[1], 0x80, "no read rule overlaps c/#");
    }
    bob.subscribe(2, &[("a/#", 1)]);

    // alice -> a/ allowed; alice -> b/ denied (dropped, still acknowledged in 3.1.1).
    alice.publish_complete("a/1", b"from alice", 1, false, 10);
    alice.publish_complete("b/1", b"denied", 1, false, 11);
    let got = bob.recv_publish_ack();
    assert_eq!(
        (got.topic.as_str(), got.payload.as_slice()),
        ("a/1", &b"from alice"[..])
    );
    bob.expect_nothing(Duration::from_millis(300));

    // bob -> b/1 reaches alice; bob -> b/secret does not (read denied for alice).
    bob.publish_complete("b/secret", b"hidden", 1, false, 12);
    bob.publish_complete("b/1", b"visible", 1, false, 13);
    let got = alice.recv_publish_ack();
    assert_eq!(got.topic, "b/1", "b/secret is not delivered to alice");
    alice.expect_nothing(Duration::from_millis(300));
}

/// `pattern` rules: `%c` is the client id, `%u` the username.
#[test]
fn acl_patterns_substitute_client_id_and_username() {
    let f = files();
    let b = f.broker(false, &[]);
    let mut dev1 = Raw::tcp(b.port());
    assert_eq!(
        dev1.handshake(&Connect::new("dev1").login("bob", "hunter2"))
            .1,
        0
    );
    let mut dev2 = Raw::tcp(b.port());
    assert_eq!(
        dev2.handshake(&Connect::new("dev2").login("bob", "hunter2"))
            .1,
        0
    );
    let codes = dev1.subscribe(1, &[("clients/dev1/#", 1), ("users/bob/inbox", 1)]);
    assert_eq!(&codes[..], &[1, 1]);
    if b.is_midge() {
        assert_eq!(dev1.subscribe(2, &[("clients/dev2/#", 1)]), vec![0x80]);
    }
    // dev2 may not write into dev1's tree; dev1 may.
    dev2.publish_complete("clients/dev1/cmd", b"not yours", 1, false, 5);
    dev1.expect_nothing(Duration::from_millis(300));
    dev1.publish_complete("clients/dev1/status", b"own tree", 0, false, 0);
    let got = dev1.recv_publish_ack();
    assert_eq!(
        (got.topic.as_str(), got.payload.as_slice()),
        ("clients/dev1/status", &b"own tree"[..])
    );
}

/// Secure default: a listener beyond loopback with no authentication and no explicit
/// `allow_anonymous true` refuses to start, with a message that says what to do (midge; mosquitto
/// 2.0 starts and refuses every client instead).
#[test]
fn network_listener_without_authentication_refuses_to_start() {
    if !common::is_midge() {
        eprintln!("note: midge-only start-up rule");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("midge.conf");
    let port = common::free_port();
    std::fs::write(&conf, format!("listener {port} 0.0.0.0\n")).unwrap();
    let out = run(
        Command::new(env!("CARGO_BIN_EXE_midge"))
            .arg("-c")
            .arg(&conf),
        Duration::from_secs(10),
    );
    assert!(!out.success(), "midge must not start: {out:?}");
    let text = format!("{out:?}");
    assert!(
        text.contains("allow_anonymous"),
        "the error says what to do: {text}"
    );
}

/// `per_listener_settings true`: each listener has its own `password_file` (and none means
/// none): the same client is refused on the listener with a password file and accepted on the
/// anonymous one.
#[test]
fn per_listener_settings_give_each_listener_its_own_password_file() {
    let f = files();
    let second = common::free_port();
    let pw = f.path("passwd");
    let b = Broker::start_config(|port| {
        format!(
            "per_listener_settings true\nuser root\nlog_dest stdout\n\
             listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {pw}\n\
             listener {second} 127.0.0.1\nallow_anonymous true\n"
        )
    });
    assert_eq!(
        connack(&b, &Connect::new("anon-1")),
        5,
        "the first listener wants a password"
    );
    assert_eq!(
        connack(&b, &Connect::new("alice-1").login("alice", "secret")),
        0
    );
    let mut other = Raw::tcp(second);
    assert_eq!(
        other.handshake(&Connect::new("anon-2")).1,
        0,
        "the second allows anonymous"
    );
}

/// `connection_rate_limit N` (midge): a burst of connection attempts beyond N per second is
/// refused at accept; a second later connections are accepted again.
#[test]
fn connection_rate_limit_refuses_a_burst_then_recovers() {
    if !common::is_midge() {
        eprintln!("note: connection_rate_limit is a midge option");
        return;
    }
    let b = Broker::start_with(&["connection_rate_limit 4"]);
    // The harness's readiness probe already took a token; a burst of 20 exceeds the rest.
    let accepted = (0..20)
        .filter(|i| {
            let mut c = Raw::tcp(b.port());
            c.send(&Connect::new(&format!("burst-{i}")).encode());
            matches!(c.recv(Duration::from_secs(2)), Ok(p) if p.kind() == common::raw::CONNACK)
        })
        .count();
    assert!(
        (1..=6).contains(&accepted),
        "{accepted} of 20 accepted with a limit of 4/s"
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(connack(&b, &Connect::new("after")), 0, "the bucket refills");
}

/// Credentials never reach the log, even with every log type on: a good and a bad password
/// are used, and neither appears in the broker's output.
#[test]
fn passwords_never_appear_in_the_log() {
    let f = files();
    let b = f.broker(false, &["log_type all"]);
    assert_eq!(connack(&b, &Connect::new("c1").login("alice", "secret")), 0);
    assert_eq!(
        connack(&b, &Connect::new("c2").login("alice", "Tr0ub4dor&3-wrong")),
        5
    );
    std::thread::sleep(Duration::from_millis(200));
    let log = b.log();
    assert!(
        log.contains("c2") || log.contains("Refusing") || b.is_mosquitto(),
        "the log is written:\n{log}"
    );
    for secret in ["secret", "Tr0ub4dor&3-wrong"] {
        assert!(
            !log.contains(secret),
            "the password '{secret}' is in the log:\n{log}"
        );
    }
}

/// MQTT 5 reason codes for authentication and authorisation: a wrong password gets CONNACK
/// 0x86 and an anonymous client 0x87 (mosquitto 2.0.11 answers 0x87 to both; the spec allows
/// either); a PUBLISH the ACL refuses gets PUBACK 0x87 and a SUBSCRIBE it refuses SUBACK 0x87.
#[test]
fn mqtt5_auth_and_acl_reason_codes() {
    use common::v5::{self, V5};
    let f = files();
    let b = f.broker(false, &[]);
    let login = |id: &str, user: &str, pass: &str| {
        let mut c = v5::connect(id);
        c.username = Some(user.into());
        c.password = Some(bytes::Bytes::copy_from_slice(pass.as_bytes()));
        c
    };
    let wrong = V5::tcp(b.port())
        .handshake(&login("v5-wrong", "alice", "nope"))
        .code;
    if b.is_midge() {
        assert_eq!(wrong, 0x86, "bad user name or password");
    } else {
        assert!(wrong == 0x86 || wrong == 0x87, "{wrong:#x}");
    }
    assert_eq!(
        V5::tcp(b.port()).handshake(&v5::connect("v5-anon")).code,
        0x87
    );

    let (mut alice, _) = V5::connect(b.port(), &login("v5-alice", "alice", "secret"));
    let ack = alice
        .publish(v5::publish("b/1", b"denied", 1, false, 7))
        .expect("PUBACK");
    assert_eq!(ack.reason, 0x87, "PUBACK not authorized");
    let ok = alice
        .publish(v5::publish("a/1", b"fine", 1, false, 8))
        .expect("PUBACK");
    assert!(
        ok.reason < 0x80,
        "an allowed publish succeeds ({:#x})",
        ok.reason
    );
    if b.is_midge() {
        // mosquitto grants every SUBSCRIBE and filters deliveries instead.
        assert_eq!(alice.subscribe(&[("c/#", v5::opts(1))]), vec![0x87]);
    }
}

// ---------------------------------------------------------------- empty credentials--------------

fn passwd(dir: &tempfile::TempDir, args: &[&str]) -> String {
    let pw: PathBuf = dir.path().join("passwd");
    let pw = pw.to_string_lossy().into_owned();
    let mut all = vec!["-b"];
    if !std::path::Path::new(&pw).exists() {
        all.push("-c");
    }
    all.push(&pw);
    all.extend_from_slice(args);
    let out = run(
        Command::new(env!("CARGO_BIN_EXE_midge"))
            .arg("passwd")
            .args(&all),
        Duration::from_secs(60),
    );
    assert!(out.success(), "midge passwd {all:?}: {out:?}");
    pw
}

/// A user whose password is empty does not get in with an empty or missing
/// password (mosquitto reads an empty password as none and refuses a known user without one).
#[test]
fn an_empty_password_never_logs_in() {
    let dir = tempfile::tempdir().unwrap();
    let pw = passwd(&dir, &["full", "secret"]);
    // `midge passwd` (like mosquitto_passwd) refuses to make an empty password; the entry is
    // the hash of "" made by hand, as a file from elsewhere could hold.
    let hash = midge::auth::PasswordHash::new(b"", Default::default()).unwrap();
    let mut text = std::fs::read_to_string(&pw).unwrap();
    text.push_str(&format!("empty:{hash}\n"));
    std::fs::write(&pw, text).unwrap();
    let line = format!("password_file {pw}");
    let b = Broker::start_with(&["allow_anonymous false", "user root", &line]);
    let code = |c: &Connect| Raw::tcp(b.port()).handshake(c).1;
    assert_eq!(code(&Connect::new("e1").login("empty", "")), 5);
    // Username without password (flag 0x80 only).
    let mut body = raw::mqtt_str(b"MQTT");
    body.extend([4, 0x82, 0, 60]);
    body.extend(raw::mqtt_str(b"e2"));
    body.extend(raw::mqtt_str(b"empty"));
    let no_password = raw::packet(raw::CONNECT << 4, &body);
    let mut raw = Raw::tcp(b.port());
    raw.send(&no_password);
    let ack = raw.expect(raw::CONNACK);
    assert_eq!(ack.body[1], 5, "user without password: {ack:?}");
    assert_eq!(code(&Connect::new("f1").login("full", "secret")), 0);
}

/// An empty username is anonymous, as in mosquitto: refused when anonymous
/// clients are, and under the anonymous section of the ACL otherwise.
#[test]
fn an_empty_username_is_anonymous() {
    let dir = tempfile::tempdir().unwrap();
    let pw = passwd(&dir, &["u", "p"]);
    let line = format!("password_file {pw}");
    let b = Broker::start_with(&["allow_anonymous false", "user root", &line]);
    assert_eq!(
        Raw::tcp(b.port())
            .handshake(&Connect::new("anon").login("", ""))
            .1,
        5
    );
    drop(b);
    let acl = dir.path().join("acl");
    std::fs::write(
        &acl,
        "topic readwrite anon/#\nuser u\ntopic readwrite u/#\n",
    )
    .unwrap();
    let acl_line = format!("acl_file {}", acl.display());
    let b = Broker::start_with(&["allow_anonymous true", "user root", &line, &acl_line]);
    let (mut c, _) = Raw::connect(b.port(), &Connect::new("anon2").login("", ""));
    c.subscribe(1, &[("anon/#", 0)]);
    c.send(&raw::publish("anon/x", b"a", 0, false, 0));
    assert_eq!(
        c.expect_publish().topic,
        "anon/x",
        "the anonymous section applies"
    );
}

// ---------------------------------------------------------------- 5.0 AUTH-----------------------

/// (3.1.2.11.9, 4.12) CONNECT with an Authentication Method the server does not support:
/// CONNACK 0x8C (Bad authentication method) and the connection is closed [MQTT-3.2.2-7].
#[test]
fn unknown_authentication_method_gets_connack_0x8c() {
    let b = Broker::start();
    let mut c = connect(&unique_id("auth"));
    c.properties.authentication_method = Some("SCRAM-SHA-256".into());
    c.properties.authentication_data = Some(bytes::Bytes::from_static(b"n,,n=user,r=abc"));
    let mut v = V5::tcp(b.port());
    let ack = v.handshake(&c);
    assert_eq!(ack.code, rc::BAD_AUTHENTICATION_METHOD, "{ack:?}");
    assert!(!ack.session_present, "[MQTT-3.2.2-6]");
    v.until_closed(STEP);
}

/// (3.15, 4.12) An AUTH packet from a client that did not start enhanced
/// authentication in CONNECT is a Protocol Error: DISCONNECT 0x82.
#[test]
fn auth_without_authentication_method_is_protocol_error() {
    let b = Broker::start();
    let mut v = V5::connected(b.port(), &unique_id("auth2"));
    v.send(&auth_packet(rc::RE_AUTHENTICATE, "SCRAM-SHA-256"));
    match v.expect_disconnect(STEP) {
        Some(d) => assert_eq!(d.reason, rc::PROTOCOL_ERROR, "{d:?}"),
        // mosquitto 2.0.11 deviates (4.13.1 SHOULD): it closes without DISCONNECT 0x82.
        None if b.is_mosquitto() => {}
        None => panic!("closed without DISCONNECT 0x82"),
    }
}
