//! Will messages: published on an abrupt close or keep-alive expiry, not after DISCONNECT,
//! with the will QoS and retain flag.

mod common;

use std::time::Duration;

use common::clients::MosqSub;
use common::raw::{Connect, Raw};
use common::{Broker, STEP};

const QUIET: Duration = Duration::from_millis(500);

/// [MQTT-3.1.2-8] the will is published when the network connection closes without DISCONNECT.
#[test]
fn will_is_published_when_socket_closes_without_disconnect() {
    let b = Broker::start();
    let mut s = Raw::connected(b.port(), "will-sub");
    s.subscribe(1, &[("will/t", 0)]);
    let (c, _) = Raw::connect(
        b.port(),
        &Connect::new("dier").will("will/t", b"gone", 0, false),
    );
    c.drop_abruptly();
    let m = s.expect_publish();
    assert_eq!(
        (m.topic.as_str(), m.payload.as_slice()),
        ("will/t", &b"gone"[..])
    );
    assert!(!m.retain);
}

/// [MQTT-3.1.2-10] after DISCONNECT the will is discarded, not published.
#[test]
fn will_is_not_published_after_disconnect() {
    let b = Broker::start();
    let mut s = Raw::connected(b.port(), "nowill-sub");
    s.subscribe(1, &[("nowill/t", 0)]);
    let (c, _) = Raw::connect(
        b.port(),
        &Connect::new("polite").will("nowill/t", b"x", 0, false),
    );
    c.disconnect();
    s.expect_nothing(QUIET);
}

/// [MQTT-3.1.2-14] the will is published at the will QoS (subscriber at QoS 2 gets QoS 1).
#[test]
fn will_qos_is_honoured() {
    let b = Broker::start();
    let mut s = Raw::connected(b.port(), "wq-sub");
    s.subscribe(1, &[("wq/t", 2)]);
    let (c, _) = Raw::connect(b.port(), &Connect::new("wq").will("wq/t", b"q1", 1, false));
    c.drop_abruptly();
    let m = s.recv_publish_ack();
    assert_eq!((m.payload.as_slice(), m.qos), (&b"q1"[..], 1));
}

/// [MQTT-3.1.2-17] a will with Will Retain = 1 is published as a retained message: a client
/// subscribing later receives it with RETAIN=1.
#[test]
fn retained_will_is_delivered_to_later_subscriber() {
    let b = Broker::start();
    let (c, _) = Raw::connect(
        b.port(),
        &Connect::new("wr").will("wr/status", b"offline", 1, true),
    );
    c.drop_abruptly();
    // The will is published asynchronously: poll with fresh subscribers until it is there.
    let deadline = std::time::Instant::now() + STEP;
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "retained will never appeared"
        );
        let mut s = Raw::connected(b.port(), "wr-sub");
        s.subscribe(1, &[("wr/status", 1)]);
        if let Ok(pk) = s.recv(Duration::from_millis(200)) {
            let m = pk.publish();
            if !m.retain {
                // Published live between this SUBSCRIBE and now (a loaded machine): the next
                // fresh subscriber gets it as retained.
                s.send(&common::raw::puback(m.pid));
                continue;
            }
            assert_eq!(
                (m.payload.as_slice(), m.retain, m.qos),
                (&b"offline"[..], true, 1)
            );
            s.send(&common::raw::puback(m.pid));
            break;
        }
    }
}

/// [MQTT-3.1.2-8] [MQTT-3.1.2-24] the will is published when the keep-alive expires (client
/// silent for 1.5 x keep-alive, the socket left open). mosquitto expires keep-alives late (see
/// keepalive.rs), hence the per-broker bound.
#[test]
fn will_is_published_on_keepalive_expiry() {
    let b = Broker::start();
    let mut s = Raw::connected(b.port(), "ka-will-sub");
    s.subscribe(1, &[("kaw/t", 0)]);
    let (_silent, _) = Raw::connect(
        b.port(),
        &Connect::new("silent")
            .keepalive(1)
            .will("kaw/t", b"timed out", 0, false),
    );
    let limit = common::keepalive_expiry_limit(b.kind());
    let m = s
        .recv(limit)
        .expect("will after keep-alive expiry")
        .publish();
    assert_eq!(m.payload, b"timed out");
}

/// mosquitto_sub with `--will-topic`, killed with SIGKILL: its will reaches another client.
#[test]
fn will_of_killed_mosquitto_sub_is_published() {
    let b = Broker::start();
    let mut watcher = Raw::connected(b.port(), "ms-watch");
    watcher.subscribe(1, &[("ms/will", 1)]);
    let mut victim = MosqSub::start(
        b.port(),
        &[
            "-t",
            "ms/other",
            "--will-topic",
            "ms/will",
            "--will-payload",
            "sub died",
            "--will-qos",
            "1",
        ],
    );
    victim.kill();
    let m = watcher.recv_publish_ack();
    assert_eq!((m.payload.as_slice(), m.qos), (&b"sub died"[..], 1));
}
