//! Publishers on one broker, subscribers on another (`EngineConfig::sub_addr`, an external
//! broker's `sub=`): two Debian mosquittos started by the test, the publishers' one bridged
//! to the subscribers' one. Every message arrives through the bridge; with the two brokers
//! not bridged, none does (so the subscribers really are on the other broker).
//!
//! mosquitto must be installed; the test fails, loudly, if it is not.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use loadgen::engine::{self, EngineConfig};
use loadgen::runner;
use loadgen::scenario::{Scenario, Shape};

struct Mosquitto {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A mosquitto on a free loopback port with `extra` config lines.
fn mosquitto(extra: &str) -> Mosquitto {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("loadgen-bridged-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("m.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\n{extra}"),
    )
    .unwrap();
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("these tests need Debian's mosquitto (apt-get install -y mosquitto)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mosquitto did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Mosquitto { child, port, dir }
}

fn run(publishers: &Mosquitto, subscribers: &Mosquitto) -> loadgen::engine::EngineResult {
    let sc = Scenario {
        name: "bridged".into(),
        shape: Shape::P2p,
        clients: 2,
        qos: 1,
        rate: 100.0,
        warmup_s: 0.3,
        duration_s: 1.0,
        drain_s: 3.0,
        ..Default::default()
    };
    let plan = sc.plan(&runner::run_tag()).unwrap();
    let cfg = EngineConfig {
        sub_addr: Some(([127, 0, 0, 1], subscribers.port).into()),
        ..runner::engine_config(&sc, plan.clients.len()).unwrap()
    };
    let addr = ([127, 0, 0, 1], publishers.port).into();
    engine::run(addr, &plan, &cfg, &mut |_| {}).expect("run completes")
}

#[test]
fn subscribers_on_a_bridged_broker_get_every_message_through_the_bridge() {
    let there = mosquitto("");
    let here = mosquitto(&format!(
        "connection b\naddress 127.0.0.1:{}\ntopic lg/# out 1\ncleansession true\n",
        there.port
    ));
    // The bridge subscribes nothing remotely; wait until it is connected by publishing
    // through it until a reader on the far side sees something.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = Command::new("mosquitto_sub")
            .args([
                "-p",
                &there.port.to_string(),
                "-t",
                "lg/probe",
                "-C",
                "1",
                "-W",
                "1",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let _ = Command::new("mosquitto_pub")
            .args([
                "-p",
                &here.port.to_string(),
                "-t",
                "lg/probe",
                "-m",
                "x",
                "-q",
                "1",
            ])
            .status();
        if got.wait_with_output().unwrap().stdout.starts_with(b"x") {
            break;
        }
        assert!(Instant::now() < deadline, "the bridge never came up");
    }
    let r = run(&here, &there);
    let c = r.counters;
    assert!(c.expected > 0, "{c:?}");
    assert_eq!(c.received, c.expected, "{c:?} {:?}", r.errors);
    assert_eq!(c.duplicates + c.disconnects + c.refused, 0, "{c:?}");

    // Not bridged: the subscribers, on the other broker, get nothing.
    let alone = mosquitto("");
    let r = run(&here, &alone);
    assert!(r.counters.expected > 0);
    assert_eq!(r.counters.received, 0, "{:?}", r.counters);
}
