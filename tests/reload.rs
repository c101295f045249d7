//! SIGHUP reloads the configuration without dropping a connection: a new password file admits
//! a new user, a changed ACL stops deliveries to a connected subscriber at once, a bad file
//! keeps the old settings and says where it is wrong, and `sys_interval` changes. The same
//! tests run against mosquitto (`MIDGE_TEST_BROKER=mosquitto`) where its behaviour is the
//! same; the log lines are midge's.

mod common;

use std::process::Command;
use std::time::Duration;

use common::auth_files::AuthFiles;
use common::clients::MosqSub;
use common::{run, Broker};

/// `mosquitto_pub` as `user`: whether the broker accepted it (and the message was sent).
fn publish_as(port: u16, user: &str, pass: &str, topic: &str, payload: &str) -> bool {
    run(
        Command::new("mosquitto_pub").args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-u",
            user,
            "-P",
            pass,
            "-t",
            topic,
            "-m",
            payload,
            "-q",
            "1",
        ]),
        Duration::from_secs(10),
    )
    .success()
}

/// A subscriber as `user` on `filters` (QoS 1).
fn subscriber(port: u16, user: &str, pass: &str, filters: &[&str]) -> MosqSub {
    let mut args = vec!["-u", user, "-P", pass, "-q", "1", "-W", "30"];
    for f in filters {
        args.extend(["-t", f]);
    }
    MosqSub::start(port, &args)
}

#[test]
fn a_new_password_file_admits_the_new_user_while_connections_stay_up() {
    let acl = "user alice\ntopic read t/#\n\nuser bob\ntopic write t/#\n";
    let files = AuthFiles::new(&[("alice", "pa")], acl);
    let broker = files.broker(false, &[]);
    let port = broker.port();
    let mut alice = subscriber(port, "alice", "pa", &["t/#"]);
    assert!(
        !publish_as(port, "bob", "pb", "t/1", "before"),
        "bob is not in the password file yet"
    );

    files.passwd(&["-b", &files.path("passwd"), "bob", "pb"]);
    broker.reload();
    assert!(
        publish_as(port, "bob", "pb", "t/2", "after"),
        "bob was refused after the reload; log:\n{}",
        broker.log()
    );
    // alice's connection, made before the reload, is still there and still served.
    let got = alice.messages(1, Duration::from_secs(5));
    assert_eq!(
        got.iter().map(|m| m.payload.as_str()).collect::<Vec<_>>(),
        ["after"],
        "{}",
        alice.describe()
    );
    if broker.is_midge() {
        let log = broker.log();
        assert!(
            log.contains(&format!("Reload: re-read {}", files.path("passwd"))),
            "{log}"
        );
    }
}

#[test]
fn a_changed_acl_revokes_a_topic_for_a_connected_subscriber() {
    let acl = "user alice\ntopic read t/#\ntopic read u/#\n\nuser carol\ntopic write #\n";
    let files = AuthFiles::new(&[("alice", "pa"), ("carol", "pc")], acl);
    let broker = files.broker(false, &[]);
    let port = broker.port();
    let mut alice = subscriber(port, "alice", "pa", &["t/#", "u/#"]);
    assert!(publish_as(port, "carol", "pc", "t/1", "t-before"));
    let got = alice.messages(1, Duration::from_secs(5));
    assert_eq!(got.len(), 1, "{}", alice.describe());
    assert_eq!(got[0].topic, "t/1");

    std::fs::write(
        files.path("acl"),
        "user alice\ntopic read u/#\n\nuser carol\ntopic write #\n",
    )
    .unwrap();
    broker.reload();
    // t/2 is sent before u/2 on one connection: had it been delivered, it would come first.
    assert!(publish_as(port, "carol", "pc", "t/2", "t-after"));
    assert!(publish_as(port, "carol", "pc", "u/2", "u-after"));
    let got = alice.messages(1, Duration::from_secs(5));
    assert_eq!(
        got.iter().map(|m| m.topic.as_str()).collect::<Vec<_>>(),
        ["u/2"],
        "the revoked topic t/ was delivered or u/ was not; {}",
        alice.describe()
    );
    let late = alice.messages(1, Duration::from_millis(500));
    assert!(late.is_empty(), "{late:?}");
}

#[test]
fn a_bad_file_keeps_the_old_settings_and_says_where() {
    if !common::is_midge() {
        // How a broker reports a bad file is its own; mosquitto's is not checked here.
        return;
    }
    let acl = "user alice\ntopic read t/#\n\nuser carol\ntopic write #\n";
    let files = AuthFiles::new(&[("alice", "pa"), ("carol", "pc")], acl);
    let broker = files.broker(false, &[]);
    let port = broker.port();
    let mut alice = subscriber(port, "alice", "pa", &["t/#"]);

    // An ACL line with an unknown access, and carol dropped from the password file: neither
    // may take effect.
    std::fs::write(
        files.path("acl"),
        "user alice\ntopic read u/#\n\nuser carol\ntopic sometimes #\n",
    )
    .unwrap();
    files.passwd(&["-D", &files.path("passwd"), "carol"]);
    broker.reload();
    let log = broker.log();
    let at = format!("{}:5:", files.path("acl"));
    assert!(
        log.contains("Reload failed, the previous settings stay in use") && log.contains(&at),
        "the failure must name {at}; log:\n{log}"
    );
    assert!(
        publish_as(port, "carol", "pc", "t/1", "still"),
        "the old password file must stay in use"
    );
    let got = alice.messages(1, Duration::from_secs(5));
    assert_eq!(
        got.len(),
        1,
        "the old ACL must stay in use; {}",
        alice.describe()
    );

    // Fixed files apply at the next SIGHUP.
    std::fs::write(
        files.path("acl"),
        "user alice\ntopic read u/#\n\nuser carol\ntopic write #\n",
    )
    .unwrap();
    broker.reload();
    assert!(
        !publish_as(port, "carol", "pc", "t/2", "refused"),
        "carol was removed from the password file"
    );
}

#[test]
fn sys_interval_reloads() {
    let broker = Broker::start_with(&["sys_interval 0"]);
    let port = broker.port();
    let mut before = MosqSub::start(port, &["-t", "$SYS/broker/uptime", "-W", "30"]);
    assert!(before.messages(1, Duration::from_millis(1500)).is_empty());
    let text = std::fs::read_to_string(broker.config_path()).unwrap();
    std::fs::write(
        broker.config_path(),
        text.replace("sys_interval 0", "sys_interval 1"),
    )
    .unwrap();
    broker.reload();
    let got = before.messages(1, Duration::from_secs(4));
    assert_eq!(
        got.len(),
        1,
        "no $SYS uptime after sys_interval 1 was reloaded"
    );
    if broker.is_midge() {
        assert!(broker.log().contains("Reload: sys_interval 0 -> 1."));
    }
}

#[test]
fn a_first_password_file_applies_without_a_restart() {
    // No password file at start, anonymous clients allowed.
    let files = AuthFiles::new(&[("bob", "pb")], "");
    let broker = Broker::start_with(&["user root"]);
    let port = broker.port();
    let mut anonymous = MosqSub::start(port, &["-t", "t/#", "-q", "1", "-W", "30"]);

    let text = std::fs::read_to_string(broker.config_path()).unwrap();
    let text = text.replace("allow_anonymous true", "allow_anonymous false");
    std::fs::write(
        broker.config_path(),
        format!("{text}password_file {}\n", files.path("passwd")),
    )
    .unwrap();
    broker.reload();
    assert!(
        publish_as(port, "bob", "pb", "t/1", "after"),
        "bob was refused after the reload; log:\n{}",
        broker.log()
    );
    assert!(
        !publish_as(port, "bob", "wrong", "t/2", "refused"),
        "a wrong password was accepted"
    );
    let anonymous_publish = run(
        Command::new("mosquitto_pub").args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            "t/3",
            "-m",
            "anonymous",
        ]),
        Duration::from_secs(10),
    );
    assert!(
        !anonymous_publish.success(),
        "a new anonymous client was accepted"
    );
    if broker.is_midge() {
        // The subscriber that connected anonymously before the reload is still served
        // (mosquitto disconnects anonymous clients when allow_anonymous becomes false).
        let got = anonymous.messages(1, Duration::from_secs(5));
        assert_eq!(
            got.iter().map(|m| m.payload.as_str()).collect::<Vec<_>>(),
            ["after"],
            "{}",
            anonymous.describe()
        );
        assert!(broker.log().contains("allow_anonymous"), "{}", broker.log());
    }
}
