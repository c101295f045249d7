//! The connect-storm scenario against midge and mosquitto (started by loadgen's broker table):
//! every connection of a small storm completes, plain and over TLS; over TLS a second pass
//! resumes every handshake from the tickets the first pass stored, and a pass with resumption
//! held off makes only full handshakes. A bystander measures round trips throughout. Counts
//! only: nothing here is timed.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use loadgen::broker::{self, Limits, RunningBroker};
use loadgen::storm::bystander::Bystander;
use loadgen::storm::{run_pass, StormConfig};
use loadgen::tls::{BrokerTls, ClientResumption, ClientTls, TlsOptions};
use midge_codec::ProtocolVersion;

static SERIAL: Mutex<()> = Mutex::new(());

const BROKERS: [&str; 2] = ["midge", "mosquitto"];
const N: usize = 40;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("loadgen-storm-it-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn start(name: &str, certs: Option<&BrokerTls>) -> RunningBroker {
    let bin = broker::built_midge();
    let def = broker::known(name, bin.as_deref()).unwrap();
    if let Some(why) = def.unavailable() {
        panic!("this test needs {name}: {why}");
    }
    RunningBroker::start_tls(&def, &tmp(name), &Limits::default(), certs)
        .unwrap_or_else(|e| panic!("{name} starts: {e}"))
}

fn config(tls: Option<ClientTls>, tag: &str, rate: f64) -> StormConfig {
    StormConfig {
        clients: N,
        rate,
        concurrency: 8,
        version: ProtocolVersion::V311,
        tls,
        tag: format!("{}-{tag}", loadgen::runner::run_tag()),
        timeout: Duration::from_secs(60),
    }
}

#[test]
fn a_plain_storm_connects_subscribes_and_disconnects_every_client() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    for name in BROKERS {
        let b = start(name, None);
        // Open loop at a set rate, then as fast as the broker goes.
        for rate in [400.0, 0.0] {
            let r = run_pass(b.addr, &config(None, "plain", rate)).unwrap();
            assert_eq!(r.completed, N as u64, "{name} rate {rate}: {:?}", r.errors);
            assert_eq!(
                (r.connected, r.failed, r.resumed),
                (N as u64, 0, 0),
                "{name}"
            );
            assert_eq!(
                r.connack.count(),
                N as u64,
                "one CONNACK latency per client"
            );
            assert!(r.tls.is_none());
        }
    }
}

#[test]
fn a_tls_storm_makes_full_handshakes_then_resumes_every_one() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let certs = BrokerTls::generate(false).unwrap();
    for name in BROKERS {
        let b = start(name, Some(&certs));
        let opts = TlsOptions {
            cafile: Some(certs.path("ca.pem")),
            ..Default::default()
        };
        let tls = ClientTls::new(&opts, None, ClientResumption::Pool(4 * N)).unwrap();
        let bystander_tls = ClientTls::new(&opts, None, ClientResumption::Default).unwrap();
        let by = Bystander::start(b.addr, Some(&bystander_tls), 50.0, "it").unwrap();
        let pool = tls.pool.clone().unwrap();

        pool.set_resume(false);
        let full = run_pass(b.addr, &config(Some(tls.clone()), "full", 0.0)).unwrap();
        assert_eq!(full.completed, N as u64, "{name}: {:?}", full.errors);
        assert_eq!(full.resumed, 0, "{name}: resumption held off");
        let info = full.tls.clone().expect("TLS facts recorded");
        assert_eq!(info.version, "TLSv1_3");
        assert!(
            pool.tickets() >= N,
            "{name}: every full handshake left a ticket ({} stored)",
            pool.tickets()
        );

        pool.set_resume(true);
        let resumed = run_pass(b.addr, &config(Some(tls), "resumed", 0.0)).unwrap();
        assert_eq!(resumed.completed, N as u64, "{name}: {:?}", resumed.errors);
        assert_eq!(resumed.resumed, N as u64, "{name}: every handshake resumed");

        let samples = by.stop().unwrap();
        assert!(
            !samples.is_empty(),
            "{name}: the bystander's round trips came back"
        );
    }
}
