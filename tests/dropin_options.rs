//! The effect of mosquitto's client options, on midge and on Debian's mosquitto in the same
//! test where both behave alike: `allow_zero_length_clientid`, `auto_id_prefix`,
//! `clientid_prefixes`, `use_username_as_clientid`, `upgrade_outgoing_qos`, and midge's
//! `max_inflight_bytes` window; and a listener's `socket_domain`.

mod common;

use common::raw::{puback, Connect, Raw};
use common::v5::{self, V5};
use common::{is_midge, Broker, BrokerKind, QUIET, STEP};

const KINDS: [BrokerKind; 2] = [BrokerKind::Midge, BrokerKind::Mosquitto];

fn broker(kind: BrokerKind, lines: &str) -> Broker {
    Broker::start_config_as(kind, |port| {
        format!("listener {port} 127.0.0.1\nallow_anonymous true\nlog_dest stdout\n{lines}\n")
    })
}

/// The CONNACK return code of a 3.1.1 CONNECT.
fn connack(b: &Broker, c: &Connect) -> u8 {
    Raw::tcp(b.port()).handshake(c).1
}

#[test]
fn zero_length_client_ids_are_refused_when_disallowed() {
    for kind in KINDS {
        let b = broker(kind, "");
        assert_eq!(
            connack(&b, &Connect::new("")),
            0,
            "{kind:?}: allowed by default"
        );
        let b = broker(kind, "allow_zero_length_clientid false");
        assert_eq!(
            connack(&b, &Connect::new("")),
            2,
            "{kind:?}: identifier rejected"
        );
        assert_eq!(connack(&b, &Connect::new("named")), 0, "{kind:?}");
        // 5.0: midge says Client Identifier not valid (0x85); mosquitto 2.0.11 answers
        // Unspecified error (0x80). Both refuse.
        let ack = V5::tcp(b.port()).handshake(&v5::connect(""));
        let want = if kind == BrokerKind::Midge {
            0x85
        } else {
            0x80
        };
        assert_eq!(ack.code, want, "{kind:?}");
    }
}

#[test]
fn assigned_client_ids_start_with_auto_id_prefix() {
    for kind in KINDS {
        let b = broker(kind, "auto_id_prefix dropin-");
        let (_c, ack) = V5::connect(b.port(), &v5::connect(""));
        let id = ack.properties.assigned_client_identifier.expect("assigned");
        assert!(id.starts_with("dropin-"), "{kind:?}: {id}");
    }
}

#[test]
fn clientid_prefixes_admits_only_matching_ids() {
    for kind in KINDS {
        let b = broker(kind, "clientid_prefixes dev-");
        assert_eq!(connack(&b, &Connect::new("dev-1")), 0, "{kind:?}");
        assert_eq!(
            connack(&b, &Connect::new("other")),
            5,
            "{kind:?}: not authorized"
        );
        let ack = V5::tcp(b.port()).handshake(&v5::connect("other"));
        assert_eq!(ack.code, 0x87, "{kind:?}: 5.0 not authorized");
    }
}

#[test]
fn use_username_as_clientid_makes_the_username_the_id() {
    for kind in KINDS {
        let b = broker(kind, "use_username_as_clientid true");
        // Two connections of one user with different ids: the second takes the first over.
        let (mut first, _) = Raw::connect(b.port(), &Connect::new("a").login("u", "x"));
        let (_second, _) = Raw::connect(b.port(), &Connect::new("b").login("u", "y"));
        assert!(first.is_closed_within(STEP), "{kind:?}: same client id 'u'");
        // Without a username there is no id: not authorized.
        assert_eq!(connack(&b, &Connect::new("c")), 5, "{kind:?}");
    }
}

#[test]
fn upgrade_outgoing_qos_delivers_at_the_subscription_qos() {
    for kind in KINDS {
        for (line, want) in [("", 0), ("upgrade_outgoing_qos true", 1)] {
            let b = broker(kind, line);
            let mut sub = Raw::subscribed(b.port(), "sub", &[("up/t", 1)]);
            let mut publisher = Raw::connected(b.port(), "pub");
            publisher.publish_complete("up/t", b"m", 0, false, 0);
            let p = sub.expect_publish();
            assert_eq!(p.qos, want, "{kind:?} with '{line}'");
        }
    }
}

#[test]
fn max_inflight_bytes_holds_back_messages_until_acknowledged() {
    if !is_midge() {
        return; // mosquitto's rule mixes in its queued bytes; this is midge's window.
    }
    let b = broker(BrokerKind::Midge, "max_inflight_bytes 150");
    let mut sub = Raw::subscribed(b.port(), "sub", &[("w/t", 1)]);
    let mut publisher = Raw::connected(b.port(), "pub");
    for pid in 1..=3 {
        publisher.publish_complete("w/t", &[b'x'; 100], 1, false, pid);
    }
    // 0 then 100 bytes in flight: both under 150, two go out; the third waits.
    let first = sub.expect_publish();
    sub.expect_publish();
    sub.expect_nothing(QUIET);
    sub.send(&puback(first.pid));
    sub.expect_publish();
}

#[test]
fn socket_domain_ipv4_keeps_a_listener_off_ipv6() {
    for kind in KINDS {
        // No address: every interface, of the one family the option leaves.
        let b = Broker::start_config_as(kind, |port| {
            format!("listener {port}\nsocket_domain ipv4\nallow_anonymous true\n")
        });
        let port = b.port();
        let v4 = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
        assert!(
            std::net::TcpStream::connect_timeout(&v4, STEP).is_ok(),
            "{kind:?} ipv4"
        );
        assert!(
            std::net::TcpStream::connect_timeout(&v6, STEP).is_err(),
            "{kind:?}: listening on ::1 despite socket_domain ipv4"
        );
    }
}
