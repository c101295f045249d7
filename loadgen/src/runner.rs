//! One run: start the broker, drive one scenario through the engine, sample the broker and
//! loadgen during the measured interval, stop the broker, and judge the result.
//!
//! The verdict follows what each QoS allows (MQTT 5.0 section 4.3): QoS 0 may lose but not
//! duplicate, QoS 1 may duplicate but not lose, QoS 2 may do neither. Anything beyond that, a
//! dropped connection or a refused publish, is a failure, and the process exits non-zero.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use midge_codec::QoS;

use crate::broker::{BrokerDef, Limits, RunningBroker};
use crate::engine::{self, EngineConfig, Event, Phase};
use crate::procstat;
use crate::report::json::{
    BrokerCpu, BrokerInfo, BrokerMem, LoadgenCpu, MachineInfo, RunRecord, Status, SCHEMA,
};
use crate::scenario::Scenario;
use crate::stats::{Counters, LatencyHistogram};

/// A worker thread busier than this (fraction of one core) means loadgen may be the limit.
pub const SATURATED_WORKER: f64 = 0.90;
/// Steal time (percent of all cores over the measured interval) above which a run is flagged:
/// on a virtual machine the host's other guests then held this one's CPUs back often enough
/// to show in a latency tail, for reasons none of the brokers caused. Measured on a 2-vCPU
/// VM at 2,000 msg/s (`results/wakebound-20261208/steal`): p99 about 0.4-0.5 ms at under 1 %
/// steal, 0.7-0.9 ms at 2 %, 1.3-2.6 ms at 3.5-5 % (rank correlation 0.97 over 12 runs).
pub const STEAL_WARN_PCT: f64 = 2.0;

/// What every run of a suite shares.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub suite: String,
    pub out_dir: PathBuf,
    pub limits: Limits,
    /// The command line, verbatim, for the record.
    pub command: String,
    pub quiet: bool,
    /// The head of the live progress line: position, ETA, cell, broker, repeat.
    pub label: String,
}

/// A tag unique to this run, for client ids and topics.
pub fn run_tag() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{:05x}{n:x}",
        (t ^ std::process::id().rotate_left(16)) & 0xfffff
    )
}

/// A record with everything known before the run (used as is for skipped and failed runs).
fn base_record(cell_index: usize, sc: &Scenario, def: &BrokerDef, ctx: &RunContext) -> RunRecord {
    RunRecord {
        schema: SCHEMA,
        suite: ctx.suite.clone(),
        cell_index,
        repeat: 0,
        scenario: sc.clone(),
        broker: BrokerInfo {
            name: def.name().to_string(),
            managed: matches!(def, BrokerDef::Managed { .. }),
            ..Default::default()
        },
        status: Status::Skipped,
        note: None,
        started_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        command: ctx.command.clone(),
        loadgen_version: env!("CARGO_PKG_VERSION").to_string(),
        machine: MachineInfo::current(),
        connections: sc.connections(),
        setup_s: 0.0,
        measured_s: sc.duration_s,
        counters: Counters::default(),
        lost: 0,
        throughput_msgs_s: 0.0,
        offered_msgs_s: 0.0,
        latency: Default::default(),
        latency_hdr: LatencyHistogram::new().to_base64(),
        send_lag: Default::default(),
        broker_cpu: None,
        broker_mem: None,
        broker_not_measured: None,
        loadgen_cpu: LoadgenCpu::default(),
        failures: Vec::new(),
        warnings: Vec::new(),
        signal: Default::default(),
        signal_rule: Default::default(),
        extended: None,
        tls: None,
    }
}

/// A run that did not happen, and why.
pub fn skipped(
    cell_index: usize,
    sc: &Scenario,
    def: &BrokerDef,
    ctx: &RunContext,
    why: String,
) -> RunRecord {
    let mut r = base_record(cell_index, sc, def, ctx);
    r.note = Some(why);
    r
}

/// Samples taken at the edges of, and during, the measured interval.
#[derive(Default)]
struct Samples {
    broker_cpu0: Option<procstat::CpuReading>,
    broker_cpu1: Option<procstat::CpuReading>,
    threads: u64,
    rss: Vec<u64>,
    hwm: u64,
    own_cpu0: f64,
    own_cpu1: f64,
    machine0: Option<procstat::MachineJiffies>,
    machine1: Option<procstat::MachineJiffies>,
    wall0: u64,
    wall1: u64,
    broker_vanished: bool,
}

/// The engine settings for `sc` with `clients` connections.
pub fn engine_config(sc: &Scenario, clients: usize) -> Result<EngineConfig, String> {
    Ok(EngineConfig {
        version: sc.version()?,
        qos: QoS::from_u8(sc.qos).ok_or_else(|| format!("qos {}", sc.qos))?,
        payload: sc.payload,
        window: sc.window,
        warmup_ns: (sc.warmup_s * 1e9) as u64,
        duration_ns: (sc.duration_s * 1e9) as u64,
        drain_ns: (sc.drain_s * 1e9) as u64,
        threads: sc.threads,
        // Generous: a broker that accepts 200 connections per second still gets there.
        setup_timeout: std::time::Duration::from_secs_f64(30.0 + clients as f64 / 200.0),
        password: None,
        persistent: sc.persistent,
        transport: sc.transport,
        tls: None,
        sub_addr: None,
    })
}

/// Runs `sc` against `def` and returns the record (never panics on broker trouble: that is a
/// failed record).
pub fn run_one(cell_index: usize, sc: &Scenario, def: &BrokerDef, ctx: &RunContext) -> RunRecord {
    let mut rec = base_record(cell_index, sc, def, ctx);
    if let Some(why) = def.unavailable() {
        rec.note = Some(format!("skipped: {why}"));
        return rec;
    }
    if !def.supports(&sc.protocol) {
        rec.note = Some(format!(
            "skipped: {} is not configured for MQTT {}",
            def.name(),
            sc.protocol
        ));
        return rec;
    }
    let fail = |mut rec: RunRecord, why: String| {
        rec.status = Status::Failed;
        rec.failures.push(why);
        rec
    };
    let plan = match sc.plan(&run_tag()) {
        Ok(p) => p,
        Err(e) => return fail(rec, e),
    };
    let run_tls = crate::tls::run_tls();
    let logs = ctx.out_dir.join("logs");
    let mut broker =
        match RunningBroker::start_tls(def, &logs, &ctx.limits, run_tls.as_ref().map(|t| &t.certs))
        {
            Ok(b) => b,
            Err(e) => return fail(rec, e),
        };
    let client_tls = match run_tls.map(|t| t.connect(broker.addr)).transpose() {
        Ok(t) => t,
        Err(e) => return fail(rec, e),
    };
    if let Some((_, info)) = &client_tls {
        rec.tls = Some(info.clone());
    }
    rec.broker.version = broker.version.clone();
    rec.broker.addr = broker.addr.to_string();
    rec.broker.sub_addr = broker.sub_addr.map(|a| a.to_string());
    rec.broker.pid = broker.pid;
    rec.broker.config = broker.config.clone();
    rec.broker_not_measured = broker.not_measured.clone();

    let cfg = match engine_config(sc, plan.clients.len()) {
        Ok(c) => EngineConfig {
            password: def.connect_password().map(str::to_string),
            tls: client_tls.map(|(t, _)| t),
            sub_addr: broker.sub_addr,
            ..c
        },
        Err(e) => return fail(rec, e),
    };
    let mut s = Samples::default();
    // A progress line rewritten in place only makes sense on a terminal.
    let quiet = ctx.quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let head = &ctx.label;
    let result = {
        let broker = &broker;
        let s = &mut s;
        let mut observe = |ev: Event| match ev {
            Event::Ready(_) => {}
            Event::MeasureStart => {
                s.wall0 = crate::clock::now_ns();
                s.own_cpu0 = procstat::process_cpu_s();
                s.machine0 = procstat::machine_jiffies();
                if let Some((st, m)) = broker.sample() {
                    s.broker_cpu0 = broker.pid.map(|pid| procstat::cpu_reading(pid, &st));
                    s.rss.push(m.rss_kib);
                } else if broker.pid.is_some() {
                    s.broker_vanished = true;
                }
            }
            Event::Tick(p) => {
                if p.phase == Phase::Measure {
                    if let Some((_, m)) = broker.sample() {
                        s.rss.push(m.rss_kib);
                    }
                }
                if !quiet {
                    let phase = match p.phase {
                        Phase::Setup => format!("connecting {}/{}", p.ready, p.connections),
                        Phase::Warmup => format!("warm-up {:.1}s", p.elapsed_s),
                        Phase::Measure => {
                            format!("measuring {:.1}s/{:.0}s", p.elapsed_s, sc.duration_s)
                        }
                        Phase::Drain => format!("draining {:.1}s", p.elapsed_s),
                    };
                    let mut e = std::io::stderr().lock();
                    let _ = write!(
                        e,
                        "\r\x1b[2K{head}: {phase}  {:.0} msg/s  {}/{} delivered",
                        p.rate, p.received, p.expected
                    );
                    let _ = e.flush();
                }
            }
            Event::MeasureEnd => {
                s.wall1 = crate::clock::now_ns();
                s.own_cpu1 = procstat::process_cpu_s();
                s.machine1 = procstat::machine_jiffies();
                match broker.sample() {
                    Some((st, m)) => {
                        s.broker_cpu1 = broker.pid.map(|pid| procstat::cpu_reading(pid, &st));
                        s.threads = st.threads;
                        s.rss.push(m.rss_kib);
                        s.hwm = m.hwm_kib;
                    }
                    None if broker.pid.is_some() => s.broker_vanished = true,
                    None => {}
                }
            }
        };
        engine::run(broker.addr, &plan, &cfg, &mut observe)
    };
    if !quiet {
        eprint!("\r\x1b[2K");
        let _ = std::io::stderr().flush();
    }
    let died = broker.has_exited();
    broker.stop();
    let res = match result {
        Ok(r) => r,
        Err(e) => return fail(rec, e),
    };

    // Figures.
    let c = res.counters;
    let measured_s = sc.duration_s;
    rec.status = Status::Ok;
    rec.setup_s = res.setup_s;
    rec.measured_s = measured_s;
    rec.counters = c;
    rec.lost = c.lost();
    rec.throughput_msgs_s = c.received as f64 / measured_s;
    rec.offered_msgs_s = c.expected as f64 / measured_s;
    rec.latency = res.latency.percentiles();
    rec.latency_hdr = res.latency.to_base64();
    rec.send_lag = res.send_lag.percentiles();
    let wall_s = (s.wall1.saturating_sub(s.wall0)) as f64 / 1e9;
    // Both ends must come from the same source (schedstat could vanish with a thread race).
    if let (Some(a), Some(b)) = (s.broker_cpu0, s.broker_cpu1) {
        let (a, b) = if a.source == b.source {
            (a, b)
        } else {
            // Fall back to /proc/PID/stat at both ends.
            let tck = procstat::clk_tck();
            let ticks = |r: procstat::CpuReading| procstat::CpuReading {
                cpu_s: r.stat_cpu_s,
                raw: (r.stat_cpu_s * tck).round() as u64,
                source: procstat::CpuSource::Stat,
                stat_cpu_s: r.stat_cpu_s,
            };
            (ticks(a), ticks(b))
        };
        let cpu_s = (b.cpu_s - a.cpu_s).max(0.0);
        rec.broker_cpu = Some(BrokerCpu {
            cpu_s,
            cpu_pct: if wall_s > 0.0 {
                100.0 * cpu_s / wall_s
            } else {
                0.0
            },
            us_per_msg: if c.received > 0 {
                cpu_s * 1e6 / c.received as f64
            } else {
                0.0
            },
            threads: s.threads,
            source: a.source,
            raw: b.raw.saturating_sub(a.raw),
        });
    }
    if !s.rss.is_empty() {
        rec.broker_mem = Some(BrokerMem {
            rss_mean_kib: s.rss.iter().sum::<u64>() / s.rss.len() as u64,
            rss_max_kib: s.rss.iter().copied().max().unwrap_or(0),
            peak_kib: s.hwm,
            samples: s.rss.len() as u32,
        });
    }
    let workers_pct: Vec<f64> = res.worker_cpu.iter().map(|u| 100.0 * u).collect();
    rec.loadgen_cpu = LoadgenCpu {
        process_pct: if wall_s > 0.0 {
            100.0 * (s.own_cpu1 - s.own_cpu0) / wall_s
        } else {
            0.0
        },
        saturated: res.worker_cpu.iter().any(|&u| u > SATURATED_WORKER),
        workers_pct,
        machine_busy_pct: machine_pct(s.machine0, s.machine1, |m| m.busy),
        machine_steal_pct: machine_pct(s.machine0, s.machine1, |m| m.steal),
    };

    // Verdict.
    for e in &res.errors {
        rec.warnings.push(format!("client error: {e}"));
    }
    judge(&mut rec);
    if died {
        rec.failures
            .push("the broker process exited during the run".into());
    } else if s.broker_vanished {
        rec.failures
            .push("the broker's PID stopped being the process we started".into());
    }
    if !rec.failures.is_empty() {
        rec.status = Status::Failed;
    }
    rec
}

/// The share of the machine's CPU time between two readings that `part` took, in percent.
fn machine_pct(
    from: Option<procstat::MachineJiffies>,
    to: Option<procstat::MachineJiffies>,
    part: fn(&procstat::MachineJiffies) -> u64,
) -> f64 {
    match (from, to) {
        (Some(a), Some(b)) if b.total > a.total => {
            100.0 * part(&b).saturating_sub(part(&a)) as f64 / (b.total - a.total) as f64
        }
        _ => 0.0,
    }
}

/// Applies the QoS rules and the sanity checks to a measured record.
pub fn judge(rec: &mut RunRecord) {
    let c = rec.counters;
    let qos = rec.scenario.qos;
    if c.expected == 0 {
        rec.failures.push("no measured message was sent".into());
    } else if c.received == 0 {
        rec.failures.push(format!(
            "none of {} expected deliveries arrived",
            c.expected
        ));
    }
    if rec.lost > 0 {
        let msg = format!(
            "lost {} of {} expected deliveries ({:.3}%)",
            rec.lost,
            c.expected,
            100.0 * rec.lost as f64 / c.expected.max(1) as f64
        );
        if qos == 0 {
            rec.warnings.push(format!("{msg}: allowed at QoS 0"));
        } else {
            rec.failures
                .push(format!("{msg}: QoS {qos} must not lose messages"));
        }
    }
    if c.duplicates > 0 {
        let msg = format!("{} duplicate deliveries", c.duplicates);
        if qos == 1 {
            rec.warnings.push(format!("{msg}: allowed at QoS 1"));
        } else {
            rec.failures
                .push(format!("{msg}: QoS {qos} must not duplicate"));
        }
    }
    if c.disconnects > 0 {
        rec.failures.push(format!(
            "{} connections dropped during the run",
            c.disconnects
        ));
    }
    if c.refused > 0 {
        rec.failures
            .push(format!("the broker refused {} publishes", c.refused));
    }
    if c.foreign > 0 {
        rec.warnings
            .push(format!("{} messages without a loadgen stamp", c.foreign));
    }
    if c.unsent > 0 {
        rec.warnings.push(format!(
            "saturated: {} scheduled messages were never sent (window or socket stayed full); latency covers only what was sent",
            c.unsent
        ));
    }
    if rec.loadgen_cpu.machine_busy_pct > 90.0 {
        rec.warnings.push(format!(
            "the machine was {:.0}% busy during the measured interval: broker and loadgen competed for CPU (with each other or with other processes)",
            rec.loadgen_cpu.machine_busy_pct
        ));
    }
    if rec.loadgen_cpu.machine_steal_pct > STEAL_WARN_PCT {
        rec.warnings.push(format!(
            "the hypervisor held back {:.1}% of the machine's CPU time (steal) during the measured interval: latencies include waits that neither the broker nor loadgen caused",
            rec.loadgen_cpu.machine_steal_pct
        ));
    }
    if rec.send_lag.p99_us > 1_000.0 && rec.send_lag.p99_us > 0.5 * rec.latency.p99_us {
        rec.warnings.push(format!(
            "loadgen sent late: p99 send lag {:.0} us of a p99 latency of {:.0} us; loadgen or the machine, not only the broker, made that tail",
            rec.send_lag.p99_us, rec.latency.p99_us
        ));
    }
    if rec.loadgen_cpu.saturated {
        rec.warnings.push(format!(
            "loadgen was saturated (worker CPU {:?} %): this result may be loadgen's limit, not the broker's; raise threads",
            rec.loadgen_cpu.workers_pct.iter().map(|p| p.round()).collect::<Vec<_>>()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(qos: u8, c: Counters) -> RunRecord {
        let sc = Scenario {
            name: "t".into(),
            qos,
            ..Default::default()
        };
        let def = BrokerDef::External {
            name: "b".into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            pid: None,
            sub: None,
        };
        let ctx = RunContext {
            suite: "s".into(),
            out_dir: "/tmp".into(),
            limits: Limits::default(),
            command: "x".into(),
            quiet: true,
            label: "1/1".into(),
        };
        let mut r = base_record(0, &sc, &def, &ctx);
        r.counters = c;
        r.lost = c.lost();
        judge(&mut r);
        r
    }

    #[test]
    fn steal_time_is_reported_above_its_threshold() {
        let whole = Counters {
            expected: 10,
            received: 10,
            ..Default::default()
        };
        let steal = |r: &RunRecord| r.warnings.iter().any(|w| w.contains("(steal)"));
        let mut r = rec(0, whole);
        assert!(!steal(&r), "{:?}", r.warnings);
        r.loadgen_cpu.machine_steal_pct = STEAL_WARN_PCT + 1.0;
        r.warnings.clear();
        judge(&mut r);
        assert!(steal(&r), "{:?}", r.warnings);
        assert!(r.failures.is_empty(), "a warning, not a failure");
        // Measured between two readings of the machine's counters.
        let at = |busy, total, steal| Some(procstat::MachineJiffies { busy, total, steal });
        let pct = machine_pct(at(100, 1000, 10), at(150, 1200, 22), |m| m.steal);
        assert!((pct - 6.0).abs() < 1e-9, "{pct}");
        assert_eq!(machine_pct(at(1, 1000, 0), at(1, 1000, 0), |m| m.busy), 0.0);
        assert_eq!(machine_pct(None, at(1, 1000, 0), |m| m.busy), 0.0);
    }

    #[test]
    fn qos0_may_lose_but_not_duplicate() {
        let r = rec(
            0,
            Counters {
                expected: 10,
                received: 9,
                ..Default::default()
            },
        );
        assert!(r.failures.is_empty(), "{:?}", r.failures);
        assert!(r.warnings.iter().any(|w| w.contains("lost 1")));
        let r = rec(
            0,
            Counters {
                expected: 10,
                received: 10,
                duplicates: 1,
                ..Default::default()
            },
        );
        assert!(r.failures.iter().any(|f| f.contains("duplicate")));
    }

    #[test]
    fn qos1_may_duplicate_but_not_lose() {
        let r = rec(
            1,
            Counters {
                expected: 10,
                received: 10,
                duplicates: 2,
                ..Default::default()
            },
        );
        assert!(r.failures.is_empty(), "{:?}", r.failures);
        let r = rec(
            1,
            Counters {
                expected: 10,
                received: 9,
                ..Default::default()
            },
        );
        assert!(r.failures.iter().any(|f| f.contains("must not lose")));
    }

    #[test]
    fn qos2_allows_neither_and_disconnects_always_fail() {
        assert!(!rec(
            2,
            Counters {
                expected: 10,
                received: 9,
                ..Default::default()
            }
        )
        .failures
        .is_empty());
        assert!(!rec(
            2,
            Counters {
                expected: 10,
                received: 10,
                duplicates: 1,
                ..Default::default()
            }
        )
        .failures
        .is_empty());
        assert!(rec(
            2,
            Counters {
                expected: 10,
                received: 10,
                ..Default::default()
            }
        )
        .failures
        .is_empty());
        assert!(!rec(
            0,
            Counters {
                expected: 10,
                received: 10,
                disconnects: 1,
                ..Default::default()
            }
        )
        .failures
        .is_empty());
    }

    #[test]
    fn a_backlog_is_reported_as_saturation() {
        let r = rec(
            0,
            Counters {
                expected: 10,
                received: 10,
                unsent: 5,
                ..Default::default()
            },
        );
        assert!(r.warnings.iter().any(|w| w.starts_with("saturated")));
    }
}
