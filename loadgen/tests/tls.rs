//! loadgen's TLS client against midge and mosquitto started by loadgen's own broker table with
//! generated certificates: a valid CA connects and runs a scenario exactly once, a wrong CA is
//! refused, a broker that requires a client certificate refuses loadgen without one and
//! accepts it with one. Loads are tiny; nothing here is timed.

use std::path::PathBuf;
use std::sync::Mutex;

use loadgen::broker::{self, Limits, RunningBroker};
use loadgen::engine::{self, EngineConfig};
use loadgen::runner;
use loadgen::scenario::{Scenario, Shape};
use loadgen::tls::{probe, BrokerTls, ClientResumption, ClientTls, TlsOptions};

/// One broker test at a time: the machine has two cores.
static SERIAL: Mutex<()> = Mutex::new(());

const BROKERS: [&str; 2] = ["midge", "mosquitto"];

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("loadgen-tls-it-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn start(name: &str, certs: &BrokerTls) -> RunningBroker {
    let bin = broker::built_midge();
    let def = broker::known(name, bin.as_deref()).unwrap();
    if let Some(why) = def.unavailable() {
        panic!("this test needs {name}: {why}");
    }
    RunningBroker::start_tls(&def, &tmp(name), &Limits::default(), Some(certs))
        .unwrap_or_else(|e| panic!("{name} starts with a TLS listener: {e}"))
}

fn client(certs: &BrokerTls, ca: &str, with_cert: bool) -> ClientTls {
    let opts = TlsOptions {
        cafile: Some(certs.path(ca)),
        cert: with_cert.then(|| certs.path("client.pem")),
        key: with_cert.then(|| certs.path("client.key")),
        server_name: None,
    };
    ClientTls::new(&opts, None, ClientResumption::Default).unwrap()
}

/// A small QoS 1 point-to-point run over TLS; returns the engine's result or its error.
fn run_p2p(b: &RunningBroker, tls: ClientTls) -> Result<engine::EngineResult, String> {
    let sc = Scenario {
        name: "tls".into(),
        shape: Shape::P2p,
        clients: 2,
        qos: 1,
        rate: 100.0,
        warmup_s: 0.2,
        duration_s: 0.5,
        drain_s: 5.0,
        ..Default::default()
    };
    let plan = sc.plan(&runner::run_tag()).unwrap();
    let cfg = EngineConfig {
        tls: Some(tls),
        setup_timeout: std::time::Duration::from_secs(10),
        ..runner::engine_config(&sc, plan.clients.len()).unwrap()
    };
    engine::run(b.addr, &plan, &cfg, &mut |_| {})
}

#[test]
fn valid_ca_connects_and_every_message_arrives_once_over_tls() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let certs = BrokerTls::generate(false).unwrap();
    for name in BROKERS {
        let b = start(name, &certs);
        let tls = client(&certs, "ca.pem", false);
        let info = probe::probe(b.addr, &tls, false).expect("the probe connects");
        assert_eq!(info.version, "TLSv1_3", "{name}");
        assert!(info.cipher_suite.starts_with("TLS13_"), "{name}: {info:?}");
        let r = run_p2p(&b, tls).unwrap_or_else(|e| panic!("{name}: {e}"));
        let c = r.counters;
        assert!(c.expected > 0, "{name}: {c:?}");
        assert_eq!(c.received, c.expected, "{name}: no loss at QoS 1: {c:?}");
        assert_eq!(c.acked, c.published, "{name}: every PUBACK came: {c:?}");
        assert_eq!(c.duplicates + c.disconnects, 0, "{name}: {c:?}");
    }
}

#[test]
fn a_broker_certificate_from_another_ca_is_refused() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let certs = BrokerTls::generate(false).unwrap();
    for name in BROKERS {
        let b = start(name, &certs);
        let tls = client(&certs, "other-ca.pem", false);
        let err = probe::probe(b.addr, &tls, false).expect_err("an untrusted server is refused");
        assert!(err.contains("certificate"), "{name}: {err}");
        assert!(
            run_p2p(&b, tls).is_err(),
            "{name}: the engine cannot set up over an untrusted TLS server"
        );
    }
}

#[test]
fn a_required_client_certificate_is_needed_and_accepted() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let certs = BrokerTls::generate(true).unwrap();
    for name in BROKERS {
        let b = start(name, &certs);
        let without = client(&certs, "ca.pem", false);
        assert!(
            probe::probe(b.addr, &without, false).is_err(),
            "{name}: a client without a certificate is refused"
        );
        let with = client(&certs, "ca.pem", true);
        let info = probe::probe(b.addr, &with, true).expect("a certified client connects");
        assert!(info.client_certificate);
        let r = run_p2p(&b, with).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r.counters.received, r.counters.expected, "{name}");
        assert!(r.counters.expected > 0);
    }
}
