//! The engine against a real broker: Debian's mosquitto, started by each test on a free
//! loopback port through loadgen's own broker table (so starting, identifying and stopping
//! brokers is tested too). Loads are tiny: a few clients for a couple of seconds.
//!
//! mosquitto must be installed (`apt-get install -y mosquitto`); the tests fail, loudly, if it
//! is not, rather than passing without having tested anything.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use loadgen::broker::{self, Limits, RunningBroker};
use loadgen::engine::{self, EngineResult, Event};
use loadgen::runner;
use loadgen::scenario::{Mode, Scenario, Shape};

/// One broker test at a time: they measure time, and the machine has two cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("loadgen-it-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn mosquitto(name: &str) -> RunningBroker {
    let def = broker::known("mosquitto", None).unwrap();
    if let Some(why) = def.unavailable() {
        panic!("these tests need Debian's mosquitto (apt-get install -y mosquitto): {why}");
    }
    RunningBroker::start(&def, &tmp(name), &Limits::default()).expect("mosquitto starts")
}

fn scenario(shape: Shape, clients: u32, qos: u8, protocol: &str) -> Scenario {
    Scenario {
        name: "it".into(),
        shape,
        clients,
        qos,
        protocol: protocol.into(),
        rate: 200.0,
        warmup_s: 0.3,
        duration_s: 1.0,
        // Ends as soon as everything arrived; the margin is for a machine busy with builds.
        drain_s: 5.0,
        ..Default::default()
    }
}

fn run(b: &RunningBroker, sc: &Scenario, observe: &mut dyn FnMut(Event)) -> EngineResult {
    let plan = sc.plan(&runner::run_tag()).unwrap();
    let cfg = runner::engine_config(sc, plan.clients.len()).unwrap();
    engine::run(b.addr, &plan, &cfg, observe).expect("run completes")
}

/// Every measured message arrives exactly once, with a latency sample each, and every QoS>0
/// publish completes its acknowledgement flow.
fn assert_exactly_once(r: &EngineResult, publishers: u64, sc: &Scenario) {
    let c = r.counters;
    let scheduled = (sc.rate * sc.duration_s) as u64 * publishers;
    assert!(
        c.published_measured.abs_diff(scheduled) <= publishers,
        "open loop sends on schedule: {c:?}"
    );
    assert!(c.expected > 0);
    assert_eq!(
        c.received, c.expected,
        "no loss at QoS {} MQTT {} {:?}: {c:?} errors {:?}",
        sc.qos, sc.protocol, sc.shape, r.errors
    );
    assert_eq!(c.duplicates, 0);
    assert_eq!(c.disconnects + c.refused + c.foreign + c.unsent, 0, "{c:?}");
    assert_eq!(
        r.latency.count(),
        c.received,
        "one latency sample per delivery"
    );
    if sc.qos > 0 {
        assert_eq!(
            c.acked, c.published,
            "every QoS {} flow completed: {c:?}",
            sc.qos
        );
    } else {
        assert_eq!(c.acked, 0, "QoS 0 is never acknowledged");
    }
}

#[test]
fn qos_0_1_2_flows_deliver_exactly_once_on_mqtt_311_and_5() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let b = mosquitto("qos");
    for protocol in ["3.1.1", "5"] {
        for qos in 0..=2 {
            let sc = scenario(Shape::P2p, 3, qos, protocol);
            let r = run(&b, &sc, &mut |_| {});
            assert_exactly_once(&r, 3, &sc);
        }
    }
}

#[test]
fn every_shape_delivers_to_exactly_its_matching_subscribers() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let b = mosquitto("shapes");
    // fan-in: 4 publishers -> 2 subscribers; fan-out: 1 -> 5; iot: 6 devices, 2 wildcard backends.
    let cases = [
        (
            Scenario {
                subscribers: 2,
                ..scenario(Shape::FanIn, 4, 1, "3.1.1")
            },
            4,
            2,
        ),
        (scenario(Shape::FanOut, 5, 1, "5"), 1, 5),
        (
            Scenario {
                subscribers: 2,
                ..scenario(Shape::Iot, 6, 1, "5")
            },
            6,
            1,
        ),
    ];
    for (sc, publishers, fanout) in cases {
        let r = run(&b, &sc, &mut |_| {});
        assert_exactly_once(&r, publishers, &sc);
        assert_eq!(
            r.counters.expected,
            r.counters.published_measured * fanout,
            "{:?}",
            sc.shape
        );
    }
}

#[test]
fn closed_loop_keeps_the_window_full_and_loses_nothing() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let b = mosquitto("max");
    for qos in [0, 2] {
        let sc = Scenario {
            mode: Mode::Max,
            window: 8,
            ..scenario(Shape::P2p, 2, qos, "3.1.1")
        };
        let r = run(&b, &sc, &mut |_| {});
        let c = r.counters;
        // A window of 8 on loopback moves far more than the 200 msg/s of the open-loop tests.
        assert!(c.received as f64 / sc.duration_s > 2_000.0, "{c:?}");
        assert_eq!(c.received, c.expected, "{c:?}");
        assert_eq!(c.duplicates + c.unsent + c.disconnects, 0);
    }
}

#[test]
fn a_stalled_broker_shows_up_as_latency_not_as_missing_samples() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let b = mosquitto("stall");
    let pid = b.pid.unwrap() as libc::pid_t;
    let sc = Scenario {
        duration_s: 2.0,
        ..scenario(Shape::P2p, 2, 1, "3.1.1")
    };
    let mut stopper = None;
    let r = run(&b, &sc, &mut |ev| {
        if let Event::MeasureStart = ev {
            // Freeze the broker for 400 ms in the middle of the measured interval.
            stopper = Some(std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(600));
                // SAFETY: signals to the broker child this test started.
                unsafe { libc::kill(pid, libc::SIGSTOP) };
                std::thread::sleep(Duration::from_millis(400));
                unsafe { libc::kill(pid, libc::SIGCONT) };
            }));
        }
    });
    stopper.unwrap().join().unwrap();
    // All scheduled messages were measured...
    assert_exactly_once(&r, 2, &sc);
    // ...and the ones due during the stall carry it: 400 ms of 2 s is 20% of the messages.
    let p = r.latency.percentiles();
    assert!(p.max_us > 350_000.0, "max {} us", p.max_us);
    assert!(p.p90_us > 50_000.0, "p90 {} us", p.p90_us);
    assert!(p.p50_us < 50_000.0, "p50 {} us unaffected", p.p50_us);
}

/// Wall-clock minus monotonic nanoseconds, to compare loadgen's stamps with mosquitto_sub's
/// wall-clock receive times.
fn realtime_minus_monotonic() -> i128 {
    let get = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: writes one timespec we own.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
    };
    get(libc::CLOCK_REALTIME) - get(libc::CLOCK_MONOTONIC)
}

#[test]
fn p50_agrees_with_mosquitto_sub_timing_and_throughput_matches_the_schedule() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let b = mosquitto("xcheck");
    // Its output goes to a file: an unread pipe (64 KiB) would fill up and stall it.
    let out_path = tmp("xcheck").join("mosquitto_sub.out");
    let out_file = std::fs::File::create(&out_path).unwrap();
    let mut sub = std::process::Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &b.addr.port().to_string(),
            "-t",
            "lg/+/p2p/0",
            "-F",
            "%U %x",
        ])
        .stdout(out_file)
        .spawn()
        .expect("mosquitto_sub (package mosquitto-clients)");
    std::thread::sleep(Duration::from_millis(300)); // let it subscribe
    let sc = Scenario {
        duration_s: 2.0,
        ..scenario(Shape::P2p, 1, 0, "3.1.1")
    };
    let r = run(&b, &sc, &mut |_| {});
    std::thread::sleep(Duration::from_millis(500)); // let it print the last lines
                                                    // SAFETY: SIGTERM to the child we spawned.
    unsafe { libc::kill(sub.id() as libc::pid_t, libc::SIGTERM) };
    sub.wait().unwrap();
    let text = std::fs::read_to_string(&out_path).unwrap();

    // loadgen: zero loss and exactly the scheduled rate (200 msg/s for 2 s).
    assert_eq!(r.counters.received, r.counters.expected);
    assert!(r.counters.received.abs_diff(400) <= 1, "{:?}", r.counters);

    // mosquitto_sub: wall-clock receive time minus the intended time in the payload.
    let offset = realtime_minus_monotonic() + loadgen::clock::epoch_abs_ns() as i128;
    let tl = r.timeline;
    let mut lat: Vec<f64> = text
        .lines()
        .filter_map(|l| {
            let (t, hex) = l.split_once(' ')?;
            let (s, ns) = t.split_once('.')?;
            let wall = s.parse::<i128>().ok()? * 1_000_000_000 + ns.parse::<i128>().ok()?;
            let bytes: Vec<u8> = (0..32)
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect::<Option<_>>()?;
            let st = loadgen::clock::Stamp::read(&bytes)?;
            tl.measured(st.intended_ns)
                .then(|| (wall - offset - st.intended_ns as i128) as f64 / 1e3)
        })
        .collect();
    assert!(
        lat.len() >= 399,
        "mosquitto_sub saw {} measured messages",
        lat.len()
    );
    lat.sort_by(f64::total_cmp);
    let sub_p50 = lat[lat.len() / 2];
    let ours = r.latency.percentiles().p50_us;
    eprintln!("p50: loadgen {ours:.0} us, mosquitto_sub {sub_p50:.0} us");
    // Same order of magnitude (mosquitto_sub also pays for printing each line).
    assert!(ours > 0.0 && sub_p50 > 0.0);
    assert!(
        ours / sub_p50 < 10.0 && sub_p50 / ours < 10.0,
        "loadgen {ours} us vs mosquitto_sub {sub_p50} us"
    );
}

#[test]
fn the_sampled_pid_is_the_broker_that_was_started_and_it_stops() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut b = mosquitto("pid");
    let pid = b.pid.unwrap();
    assert!(loadgen::procstat::pid_listens_on(pid, b.addr.port()));
    let (st, mem) = b.sample().expect("sampled");
    assert!(st.threads >= 1 && mem.rss_kib > 0);
    assert!(b.version.contains("mosquitto"), "{}", b.version);
    let port = b.addr.port();
    b.stop();
    assert!(b.sample().is_none(), "a stopped broker is not sampled");
    assert!(broker::port_is_free(port), "its port is free again");
}
