//! MQTT 5.0 CONNECT / CONNACK: the properties a server announces in CONNACK, Assigned Client
//! Identifier, Server Keep Alive.

mod common;

use serde_json::json;

use common::v5::{connect, paho, rumq_v5_connect, V5};
use common::{unique_id, Broker};

/// (3.2.2.3.3) Receive Maximum in CONNACK: how many QoS 1/2 PUBLISHes the client
/// may have unacknowledged at the server; `max_inflight_messages 5` announces 5. Read with
/// rumqttc v5.
#[test]
fn connack_announces_receive_maximum() {
    let b = Broker::start_with(&["max_inflight_messages 5"]);
    let (_c, ack) = rumq_v5_connect(b.port(), &unique_id("rm"), |_| {});
    let props = ack.properties.expect("CONNACK properties");
    assert_eq!(
        props.receive_max,
        Some(5),
        "CONNACK Receive Maximum: {props:?}"
    );
}

/// (3.2.2.3.8) Topic Alias Maximum in CONNACK from `max_topic_alias`; read with paho-mqtt.
#[test]
fn connack_announces_topic_alias_maximum() {
    let b = Broker::start_with(&["max_topic_alias 7"]);
    let mut p = paho(
        b.port(),
        json!([{"op": "connect", "id": unique_id("tam")},
                                      {"op": "disconnect"}]),
    );
    let ack = p.expect_event("connack");
    assert_eq!(ack["rc"], 0);
    assert_eq!(ack["props"]["TopicAliasMaximum"], 7, "CONNACK: {ack}");
}

/// [MQTT-3.2.2-9] Maximum QoS: a server that does not support QoS 2 says so in CONNACK.
#[test]
fn connack_announces_maximum_qos_when_limited() {
    let b = Broker::start_with(&["max_qos 1"]);
    let (_c, ack) = V5::connect(b.port(), &connect(&unique_id("mq")));
    assert_eq!(ack.properties.maximum_qos, Some(1), "CONNACK: {ack:?}");
}

/// A server announces the full QoS set by leaving Maximum QoS out (3.2.2.3.4: absent = 2).
#[test]
fn connack_omits_maximum_qos_when_qos_2_is_supported() {
    let b = Broker::start();
    let (_c, ack) = V5::connect(b.port(), &connect(&unique_id("mq2")));
    assert!(
        matches!(ack.properties.maximum_qos, None | Some(2)),
        "CONNACK: {ack:?}"
    );
}

/// [MQTT-3.2.2-12] Retain Available 0 in CONNACK when retained messages are not supported.
#[test]
fn connack_announces_retain_unavailable() {
    let b = Broker::start_with(&["retain_available false"]);
    let (_c, ack) = V5::connect(b.port(), &connect(&unique_id("ra")));
    assert_eq!(ack.properties.retain_available, Some(0), "CONNACK: {ack:?}");
}

/// (3.2.2.3.11-13) Wildcard, Subscription Identifier and Shared Subscription Available: all
/// three features are supported by default, so each flag is absent or 1.
#[test]
fn connack_feature_flags_say_available_by_default() {
    let b = Broker::start();
    let (_c, ack) = V5::connect(b.port(), &connect(&unique_id("flags")));
    let p = &ack.properties;
    for (name, v) in [
        (
            "Wildcard Subscription Available",
            p.wildcard_subscription_available,
        ),
        (
            "Subscription Identifier Available",
            p.subscription_identifier_available,
        ),
        (
            "Shared Subscription Available",
            p.shared_subscription_available,
        ),
        ("Retain Available", p.retain_available),
    ] {
        assert!(matches!(v, None | Some(1)), "{name} = {v:?}: {ack:?}");
    }
}

/// (3.2.2.3.6) Maximum Packet Size in CONNACK from `max_packet_size`.
#[test]
fn connack_announces_maximum_packet_size() {
    let b = Broker::start_with(&["max_packet_size 2000"]);
    let (_c, ack) = V5::connect(b.port(), &connect(&unique_id("mps")));
    assert_eq!(
        ack.properties.maximum_packet_size,
        Some(2000),
        "CONNACK: {ack:?}"
    );
}

/// [MQTT-3.2.2-16] A client connecting with an empty Client Identifier is given one in the
/// Assigned Client Identifier property, and it is unique per connection.
#[test]
fn empty_client_id_gets_assigned_client_identifier() {
    let b = Broker::start();
    let (_c1, a1) = V5::connect(b.port(), &connect(""));
    let (_c2, a2) = V5::connect(b.port(), &connect(""));
    let id1 = a1
        .properties
        .assigned_client_identifier
        .clone()
        .unwrap_or_else(|| panic!("no Assigned Client Identifier: {a1:?}"));
    let id2 = a2
        .properties
        .assigned_client_identifier
        .clone()
        .unwrap_or_else(|| panic!("no Assigned Client Identifier: {a2:?}"));
    assert!(!id1.is_empty(), "empty Assigned Client Identifier");
    assert_ne!(
        id1, id2,
        "two connections were assigned the same identifier"
    );
    assert!(!a1.session_present, "a new session [MQTT-3.2.2-2]");
}

/// A client that sent a Client Identifier gets no Assigned Client Identifier.
#[test]
fn given_client_id_gets_no_assigned_client_identifier() {
    let b = Broker::start();
    let (_c, ack) = V5::connect(b.port(), &connect(&unique_id("given")));
    assert_eq!(ack.properties.assigned_client_identifier, None, "{ack:?}");
}

/// [MQTT-3.2.2-21] Server Keep Alive: when `max_keepalive` is lower than the client asked, the
/// CONNACK carries the value the server will use.
#[test]
fn server_keep_alive_is_sent_when_max_keepalive_is_lower() {
    let b = Broker::start_with(&["max_keepalive 10"]);
    let mut c = connect(&unique_id("ska"));
    c.keep_alive = 60;
    let (_c, ack) = V5::connect(b.port(), &c);
    assert_eq!(
        ack.properties.server_keep_alive,
        Some(10),
        "CONNACK: {ack:?}"
    );
}

/// No Server Keep Alive is needed (3.2.2.3.14: absent = the client's) when the client asked
/// for less than `max_keepalive`; if one is sent it must be the client's own value.
#[test]
fn server_keep_alive_keeps_a_lower_client_value() {
    let b = Broker::start_with(&["max_keepalive 100"]);
    let mut c = connect(&unique_id("ska2"));
    c.keep_alive = 30;
    let (_c, ack) = V5::connect(b.port(), &c);
    assert!(
        matches!(ack.properties.server_keep_alive, None | Some(30)),
        "CONNACK: {ack:?}"
    );
}

/// [MQTT-3.2.2-2] Clean Start 1: Session Present is 0 in CONNACK, even when a session existed.
#[test]
fn clean_start_gives_session_present_0() {
    let b = Broker::start();
    let id = unique_id("cs");
    let mut c = connect(&id);
    c.properties.session_expiry_interval = Some(60);
    let (v, _) = V5::connect(b.port(), &c);
    v.disconnect();
    let (_v, ack) = V5::connect(b.port(), &c);
    assert!(
        !ack.session_present,
        "Session Present with Clean Start 1: {ack:?}"
    );
}

/// [MQTT-3.1.2-28] (3.2.2.3.15) Response Information (midge's `response_information`) is sent
/// in CONNACK only to a client that set Request Response Information to 1. mosquitto has no
/// such option (it never sends one), which the spec allows.
#[test]
fn response_information_is_sent_only_when_requested() {
    let b = Broker::start_with(&["response_information replies/"]);
    let mut asking = connect(&unique_id("ri"));
    asking.properties.request_response_information = Some(1);
    let (_c, ack) = V5::connect(b.port(), &asking);
    let got = ack.properties.response_information.map(|s| s.to_string());
    if b.is_mosquitto() {
        assert_eq!(got, None);
        return;
    }
    assert_eq!(got.as_deref(), Some("replies/"));
    let (_c, ack) = V5::connect(b.port(), &connect(&unique_id("ri")));
    assert_eq!(
        ack.properties.response_information, None,
        "not asked, not sent"
    );
}

/// (4.11, 3.14.2.2.5) With midge's `server_reference`, a broker shutting down tells MQTT 5
/// clients to use another server: DISCONNECT 0x9C with the Server Reference.
#[test]
fn shutdown_with_server_reference_sends_use_another_server() {
    if !common::is_midge() {
        eprintln!("note: server_reference is a midge option");
        return;
    }
    let b = Broker::start_with(&["server_reference standby.example:1883"]);
    let mut c = V5::connected(b.port(), &unique_id("sr"));
    let status = std::process::Command::new("kill")
        .args(["-TERM", &b.pid().to_string()])
        .status();
    assert!(status.is_ok_and(|s| s.success()));
    let d = c.expect_disconnect_code(0x9C, "use another server on shutdown");
    assert_eq!(
        d.properties.server_reference.as_deref(),
        Some("standby.example:1883")
    );
}
