//! The `connection` block parser: defaults, options, and the errors that name their line.

use super::*;
use crate::config::Config;

fn parse(text: &str) -> Result<Config, String> {
    Config::parse_str(text, "t.conf").map_err(|e| e.to_string())
}

#[test]
fn a_block_with_defaults_as_mosquitto() {
    let c = parse("connection b1\naddress 127.0.0.1:1884\ntopic a/# both 1 l/ r/\n").unwrap();
    let b = &c.bridges[0];
    assert_eq!(b.name, "b1");
    assert_eq!(b.addresses[0].addr, "127.0.0.1:1884".parse().unwrap());
    assert_eq!(b.topics[0].local_filter(), "l/a/#");
    assert_eq!(b.topics[0].remote_filter(), "r/a/#");
    assert_eq!(b.topics[0].qos, QoS::AtLeastOnce);
    assert!(!b.clean_session && b.try_private && b.notifications && b.outgoing_retain);
    assert_eq!(b.protocol, ProtocolVersion::V311);
    assert_eq!((b.restart_base, b.restart_cap), (5, Some(30)));
    assert!(b.remote_clientid.ends_with(".b1"));
    assert_eq!(b.local_clientid, format!("local.{}", b.remote_clientid));
    assert_eq!(
        b.notification_topic,
        format!("$SYS/broker/connection/{}/state", b.remote_clientid)
    );
}

#[test]
fn options_and_several_blocks() {
    let c = parse(
        "connection a\naddresses 127.0.0.1:1 [::1]:2\nround_robin true\ntopic # in\n\
         bridge_protocol_version mqttv50\nremote_clientid rc\nrestart_timeout 3\n\
         start_type once\nmax_inflight_messages 5\nlocal_cleansession true\n\
         connection b\naddress localhost\ntopic \"\" out 2 here/t there/t\n\
         topic # both 0 l/ r/  # everything, remapped\n",
    )
    .unwrap();
    assert_eq!(c.max_inflight_messages, 5, "a global option inside a block");
    let (a, b) = (&c.bridges[0], &c.bridges[1]);
    assert_eq!(a.addresses.len(), 2);
    assert_eq!(a.addresses[1].addr, "[::1]:2".parse().unwrap());
    assert!(a.round_robin);
    assert_eq!(a.topics[0].direction, Direction::In);
    assert_eq!(a.protocol, ProtocolVersion::V5);
    assert_eq!((a.restart_base, a.restart_cap), (3, None));
    assert_eq!(a.start_type, StartType::Once);
    assert!(a.local_clean_session && !a.clean_session);
    assert_eq!(a.local_clientid, "local.rc");
    assert_eq!(b.addresses[0].addr.port(), 1883);
    assert_eq!(b.topics[0].local_filter(), "here/t");
    assert_eq!(b.topics[0].remote_filter(), "there/t");
    assert_eq!(
        b.topics[1].local_filter(),
        "l/#",
        "a pattern of #, then a comment"
    );
}

#[test]
fn errors_name_the_line() {
    let cases = [
        (
            "address 127.0.0.1\n",
            "t.conf:1: 'address' is a bridge option",
        ),
        (
            "connection a\ntopic x\n",
            "t.conf:1: bridge 'a' has no address",
        ),
        (
            "connection a\naddress 127.0.0.1\n",
            "t.conf:1: bridge 'a' has no topic",
        ),
        (
            "connection a\naddress 127.0.0.1\ntopic x sideways\n",
            "t.conf:3: bad value 'sideways'",
        ),
        (
            "connection a\naddress 127.0.0.1\ntopic x in 1 a/# b/\n",
            "t.conf:3: bad value 'a/#'",
        ),
        (
            "connection a\naddress 127.0.0.1\ntopic x\nstart_type sometimes\n",
            "t.conf:4: bad value 'sometimes'",
        ),
        (
            "connection a\naddress 127.0.0.1\ntopic x\nbridge_insecure true\n",
            "t.conf:4: 'bridge_insecure' true is not supported",
        ),
        (
            "connection a\naddress 127.0.0.1\ntopic x\nbridge_certfile c.pem\n",
            "t.conf:4: bridge_certfile and bridge_keyfile go together",
        ),
        (
            "connection a\naddress 127.0.0.1\ntopic x\nbridge_alpn mqtt\n",
            "t.conf:4: bridge 'a' has TLS options but no bridge_cafile",
        ),
        (
            "connection a\naddress 127.0.0.1\ntopic x\nconnection a\n",
            "t.conf:4: duplicate bridge name 'a'",
        ),
    ];
    for (text, want) in cases {
        let err = parse(text).unwrap_err();
        assert!(err.starts_with(want), "{text:?}: {err}");
    }
}
