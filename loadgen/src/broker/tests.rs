//! Unit tests of the broker table, config generation and process checks.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use super::*;

#[test]
fn external_broker_spec_is_parsed_and_checked() {
    let b = parse_external("emqx=127.0.0.1:1883,pid=42").unwrap();
    assert_eq!(
        b,
        BrokerDef::External {
            name: "emqx".into(),
            addr: "127.0.0.1:1883".parse().unwrap(),
            pid: Some(42),
            sub: None,
        }
    );
    let b = parse_external("bridged=127.0.0.1:1883,sub=127.0.0.1:1884,pid=7").unwrap();
    assert!(matches!(
        b,
        BrokerDef::External { sub: Some(s), pid: Some(7), .. } if s.port() == 1884
    ));
    assert!(parse_external("x=127.0.0.1:1,sub=nowhere").is_err());
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
        assert!(c.contains("max_queued_messages 7\n") && c.contains("max_inflight_messages 3\n"));
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
        flashmq: Some("/opt/f/flashmq".into()),
        nanomq: None,
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
    match known_in("flashmq", &bins) {
        Some(BrokerDef::Managed { binary, flavor, .. }) => {
            assert_eq!(flavor, Flavor::FlashMq);
            assert_eq!(binary, PathBuf::from("/opt/f/flashmq"))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn nats_rabbitmq_flashmq_and_nanomq_configs_listen_on_the_given_loopback_port() {
    let limits = Limits {
        max_queued_messages: 7,
        max_inflight_messages: 3,
    };
    let nats = config_text(Flavor::Nats, 4242, &limits);
    assert!(nats.contains("mqtt { listen: \"127.0.0.1:4242\", max_ack_pending: 3 }"));
    // The NATS client port is a random loopback one; JetStream (which MQTT needs) is on.
    assert!(nats.contains("listen: \"127.0.0.1:-1\"") && nats.contains("jetstream {"));
    let rabbit = config_text(Flavor::RabbitMq, 4243, &limits);
    assert!(rabbit.contains("mqtt.listeners.tcp.default = 127.0.0.1:4243"));
    assert!(rabbit.contains("listeners.tcp = none") && rabbit.contains("mqtt.prefetch = 3"));
    let flash = config_text(Flavor::FlashMq, 4244, &limits);
    assert!(flash.contains("inet4_bind_address 127.0.0.1\n  port 4244"));
    assert!(flash.contains("max_qos_msg_pending_per_client 7"));
    let nano = config_text(Flavor::NanoMq, 4245, &limits);
    assert!(nano.contains("bind = \"127.0.0.1:4245\"") && nano.contains("max_mqueue_len = 7"));
    // Known limits are marked, not measured as losses: no MQTT 5 in nats-server or RabbitMQ
    // 3.10's plugin.
    assert!(!known("nats", None).unwrap().supports("5"));
    assert!(!known("rabbitmq", None).unwrap().supports("5"));
    assert!(known("flashmq", None).unwrap().supports("5"));
    assert!(known("nanomq", None).unwrap().supports("5"));
    let missing = BrokerDef::Managed {
        name: "flashmq".into(),
        flavor: Flavor::FlashMq,
        binary: "/nonexistent/flashmq".into(),
    };
    assert!(missing.unavailable().unwrap().contains("--flashmq PATH"));
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
        sub: None,
    };
    let err = RunningBroker::start(&def, Path::new("/tmp"), &Limits::default()).unwrap_err();
    assert!(err.contains("does not listen"), "{err}");
    // Our own PID does own it, so sampling is allowed.
    let def = BrokerDef::External {
        name: "x".into(),
        addr,
        pid: Some(std::process::id()),
        sub: None,
    };
    let b = RunningBroker::start(&def, Path::new("/tmp"), &Limits::default()).unwrap();
    assert!(b.sample().is_some());
}

#[test]
fn a_broker_that_exits_during_start_up_is_reported_with_its_last_words() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile_dir("exits");
    fs::create_dir_all(&dir).unwrap();
    // A "mosquitto" that refuses its configuration, as a broker with a bad config line does.
    let bin = dir.join("mosquitto");
    fs::write(
        &bin,
        "#!/bin/sh\necho 'Error: Unknown configuration variable \"bogus\".' >&2\nexit 3\n",
    )
    .unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    let def = BrokerDef::Managed {
        name: "broken".into(),
        flavor: Flavor::Mosquitto,
        binary: bin,
    };
    let err = RunningBroker::start(&def, &dir, &Limits::default()).unwrap_err();
    assert!(err.contains("broken exited during start-up"), "{err}");
    assert!(err.contains("Unknown configuration variable"), "{err}");
    let _ = fs::remove_dir_all(&dir);
}
