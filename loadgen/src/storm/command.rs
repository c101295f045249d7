//! `loadgen storm`: connect storms against each broker, repeats alternating brokers, broker
//! CPU per connection from /proc, medians, and `storm.json` plus `storm.md` in a
//! `storm-<timestamp>` directory.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use midge_codec::ProtocolVersion;
use serde::{Deserialize, Serialize};

use super::bystander::{Bystander, Sample};
use super::pass::{run_pass, PassResult, StormConfig};
use crate::broker::{self, BrokerDef, Limits, RunningBroker};
use crate::cli::TlsArgs;
use crate::procstat;
use crate::report::json::MachineInfo;
use crate::stats::{LatencyHistogram, Percentiles};
use crate::tls::{probe, ClientResumption, ClientTls, TlsInfo};

/// `loadgen storm` options.
#[derive(Debug, Args)]
pub struct StormArgs {
    /// Connections per pass.
    #[arg(long, default_value_t = 2000)]
    pub clients: usize,
    /// Intended connects per second (open loop); 0: as fast as --concurrency allows.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Connections in progress at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// "3.1.1" or "5".
    #[arg(long, default_value = "3.1.1")]
    pub protocol: String,
    /// Repeats per broker, brokers alternating.
    #[arg(long, default_value_t = 3)]
    pub repeat: u32,
    /// Brokers from the built-in table with a TLS config: midge, mosquitto.
    #[arg(long, value_delimiter = ',', default_value = "midge,mosquitto")]
    pub brokers: Vec<String>,
    /// Where midge's binary is (default: target/release/midge of the workspace).
    #[arg(long)]
    pub midge: Option<PathBuf>,
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// TLS only: skip the pass of resumed handshakes.
    #[arg(long)]
    pub no_resume: bool,
    /// A bystander's QoS 1 round trips per second, measured quiet and during the storm
    /// (0: no bystander).
    #[arg(long, default_value_t = 0.0)]
    pub bystander_rate: f64,
    /// Seconds the bystander is measured on a quiet broker before the storm.
    #[arg(long, default_value_t = 3.0)]
    pub quiet_s: f64,
    /// Longest time one pass may take, seconds.
    #[arg(long, default_value_t = 120.0)]
    pub timeout_s: f64,
    /// Niceness of the thread that runs the storm's connections (0-19). A real fleet runs
    /// on other machines; here its TLS client work shares the cores with the broker and the
    /// bystander, and at the bystander's own priority it would delay the round trips the
    /// bystander measures. 0 runs it at loadgen's priority.
    #[arg(long, default_value_t = 10)]
    pub storm_nice: i32,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// One pass against one broker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StormRecord {
    pub broker: String,
    pub version: String,
    pub repeat: u32,
    /// `plain`, `full` (TLS, full handshakes) or `resumed`.
    pub pass: String,
    pub result: PassResult,
    /// Broker CPU over the pass, and per completed connection.
    pub broker_cpu_s: Option<f64>,
    pub cpu_us_per_connect: Option<f64>,
    /// The bystander's round trips before the storm and during this pass.
    pub bystander_quiet: Option<Percentiles>,
    pub bystander_storm: Option<Percentiles>,
}

/// The whole `storm.json`.
#[derive(Debug, Serialize, Deserialize)]
struct StormFile {
    command: String,
    machine: MachineInfo,
    clients: usize,
    rate: f64,
    concurrency: usize,
    /// Niceness of the storm's thread (see `--storm-nice`).
    #[serde(default)]
    storm_nice: i32,
    tls: Option<TlsInfo>,
    records: Vec<StormRecord>,
}

/// Runs the storm command; returns the exit code (1 when a pass had failures).
pub fn run(a: &StormArgs, command: &str) -> Result<i32, String> {
    let version = match a.protocol.as_str() {
        "3.1.1" => ProtocolVersion::V311,
        "5" => ProtocolVersion::V5,
        p => return Err(format!("--protocol {p:?}: 3.1.1 or 5")),
    };
    if a.clients == 0 || a.concurrency == 0 {
        return Err("--clients and --concurrency must be at least 1".into());
    }
    let bins = broker::Binaries {
        midge: a.midge.clone(),
        ..broker::Binaries::default()
    };
    let defs: Vec<BrokerDef> = a
        .brokers
        .iter()
        .map(|n| broker::known_in(n, &bins).ok_or_else(|| format!("unknown broker {n:?}")))
        .collect::<Result<_, _>>()?;
    a.tls.install()?;
    let result = run_all(a, &defs, version, command);
    crate::tls::set_run_tls(None);
    result
}

fn run_all(
    a: &StormArgs,
    defs: &[BrokerDef],
    version: ProtocolVersion,
    command: &str,
) -> Result<i32, String> {
    let dir = crate::suite::out_dir(&a.out, "storm");
    std::fs::create_dir_all(dir.join("logs")).map_err(|e| format!("{}: {e}", dir.display()))?;
    let run_tls = crate::tls::run_tls();
    let mut records = Vec::new();
    let mut tls_info = None;
    for rep in 0..a.repeat.max(1) {
        for def in defs {
            let b = RunningBroker::start_tls(
                def,
                &dir.join("logs"),
                &Limits::default(),
                run_tls.as_ref().map(|t| &t.certs),
            )?;
            let client = match &run_tls {
                None => None,
                Some(t) => {
                    let o = t.effective_options();
                    let pool = ClientResumption::Pool(2 * a.clients + 16);
                    let c = ClientTls::new(&o, None, pool)?;
                    let info = probe::probe(b.addr, &c, o.cert.is_some())?;
                    eprintln!("{}: {}", def.name(), info.summary());
                    tls_info = Some(info);
                    Some(c)
                }
            };
            let bystander_tls = match &run_tls {
                Some(t) => Some(ClientTls::new(
                    &t.effective_options(),
                    None,
                    ClientResumption::Default,
                )?),
                None => None,
            };
            let tag = crate::runner::run_tag();
            let bystander = if a.bystander_rate > 0.0 {
                let by = Bystander::start(b.addr, bystander_tls.as_ref(), a.bystander_rate, &tag)?;
                std::thread::sleep(Duration::from_secs_f64(a.quiet_s));
                Some(by)
            } else {
                None
            };
            let quiet_end = crate::clock::now_ns();
            let passes: &[(&str, bool)] = match (&client, a.no_resume) {
                (None, _) => &[("plain", false)],
                (Some(_), true) => &[("full", false)],
                (Some(_), false) => &[("full", false), ("resumed", true)],
            };
            let mut pass_records = Vec::new();
            for &(name, resume) in passes {
                if let Some(p) = client.as_ref().and_then(|c| c.pool.as_ref()) {
                    p.set_resume(resume);
                }
                let cfg = StormConfig {
                    clients: a.clients,
                    rate: a.rate,
                    concurrency: a.concurrency,
                    version,
                    tls: client.clone(),
                    tag: format!("{tag}-{name}"),
                    timeout: Duration::from_secs_f64(a.timeout_s),
                };
                let cpu0 = cpu_s(&b);
                let r = run_pass_at_nice(b.addr, &cfg, a.storm_nice)?;
                let cpu1 = cpu_s(&b);
                let cpu = cpu0.zip(cpu1).map(|(x, y)| (y - x).max(0.0));
                eprintln!(
                    "{} #{} {name}: {} ok, {} failed, {} resumed, {:.0} connects/s, CONNACK p99 {:.1} ms{}",
                    def.name(),
                    rep + 1,
                    r.completed,
                    r.failed,
                    r.resumed,
                    r.connects_per_s,
                    r.connack_p99_us / 1e3,
                    r.errors.first().map(|e| format!(" (first error: {e})")).unwrap_or_default()
                );
                pass_records.push(StormRecord {
                    broker: def.name().to_string(),
                    version: b.version.clone(),
                    repeat: rep,
                    pass: name.to_string(),
                    cpu_us_per_connect: cpu
                        .filter(|_| r.completed > 0)
                        .map(|c| c * 1e6 / r.completed as f64),
                    broker_cpu_s: cpu,
                    result: r,
                    bystander_quiet: None,
                    bystander_storm: None,
                });
            }
            if let Some(by) = bystander {
                let samples = by.stop()?;
                // The first half second is the bystander's own start, not the broker's quiet.
                let t0 = samples.first().map_or(0, |s| s.0) + 500_000_000;
                let quiet = window(&samples, t0, quiet_end);
                for p in &mut pass_records {
                    p.bystander_quiet = Some(quiet);
                    p.bystander_storm = Some(window(&samples, p.result.start_ns, p.result.end_ns));
                }
            }
            records.extend(pass_records);
        }
    }
    let file = StormFile {
        command: command.to_string(),
        machine: MachineInfo::current(),
        clients: a.clients,
        rate: a.rate,
        concurrency: a.concurrency,
        storm_nice: a.storm_nice,
        tls: tls_info,
        records,
    };
    let json = serde_json::to_string_pretty(&file).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("storm.json"), json).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("storm.md"), markdown(&file)).map_err(|e| e.to_string())?;
    println!("results: {}", dir.join("storm.md").display());
    let failed = file.records.iter().any(|r| r.result.failed > 0);
    Ok(if failed { 1 } else { 0 })
}

/// The broker's CPU seconds now (schedstat where there is one).
fn cpu_s(b: &RunningBroker) -> Option<f64> {
    let (st, _) = b.sample()?;
    Some(procstat::cpu_reading(b.pid?, &st).cpu_s)
}

/// Percentiles of the samples intended within [from, to).
fn window(samples: &[Sample], from: u64, to: u64) -> Percentiles {
    let mut h = LatencyHistogram::new();
    for &(t, ns) in samples {
        if (from..to).contains(&t) {
            h.record(ns);
        }
    }
    h.percentiles()
}

/// Median, min and max of `v` (empty: zeros).
fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// Runs one pass on a thread of its own at niceness `nice` (see `--storm-nice`), so that
/// loadgen's main thread keeps its priority.
fn run_pass_at_nice(
    addr: std::net::SocketAddr,
    cfg: &StormConfig,
    nice: i32,
) -> Result<PassResult, String> {
    std::thread::scope(|s| {
        s.spawn(|| {
            if nice != 0 {
                // SAFETY: gettid has no preconditions; setpriority on this thread's id changes
                // only its own niceness.
                let rc = unsafe {
                    let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                    libc::setpriority(libc::PRIO_PROCESS, tid, nice)
                };
                if rc != 0 {
                    eprintln!(
                        "loadgen: cannot set the storm thread's niceness to {nice}: {}",
                        std::io::Error::last_os_error()
                    );
                }
            }
            run_pass(addr, cfg)
        })
        .join()
        .map_err(|_| "the storm thread panicked".to_string())?
    })
}

fn markdown(f: &StormFile) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# loadgen connect storm\n\nCommand:\n\n```\n{}\n```\n",
        f.command
    );
    let m = &f.machine;
    let _ = writeln!(
        md,
        "Machine: {} ({} cores), Linux {}. {} connections per pass, rate {}, {} in progress at once, storm thread at nice {}. {}\n",
        m.cpu_model,
        m.cores,
        m.kernel,
        f.clients,
        if f.rate > 0.0 { format!("{} connects/s intended (open loop)", f.rate) } else { "as fast as the broker goes".into() },
        f.concurrency,
        f.storm_nice,
        f.tls.as_ref().map_or("Plain TCP.".into(), |t| format!("TLS: {}.", t.summary()))
    );
    let _ = writeln!(
        md,
        "Each connection: connect, CONNECT/CONNACK, SUBSCRIBE/SUBACK, DISCONNECT. CONNACK latency is from the connection's intended start. Figures are medians over repeats [min–max]; broker CPU is from /proc over the pass.\n"
    );
    let _ = writeln!(
        md,
        "| broker | pass | runs | connects/s | broker CPU µs/connect | CONNACK p50 | CONNACK p99 | failed | resumed | bystander p99 quiet | bystander p99 storm |\n|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    );
    let mut keys: Vec<(String, String)> = Vec::new();
    for r in &f.records {
        let k = (r.broker.clone(), r.pass.clone());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys.sort_by(|a, b| a.1.cmp(&b.1).then(std::cmp::Ordering::Equal));
    for (broker, pass) in keys {
        let rs: Vec<&StormRecord> = f
            .records
            .iter()
            .filter(|r| r.broker == broker && r.pass == pass)
            .collect();
        let col = |g: &dyn Fn(&StormRecord) -> f64| spread(rs.iter().map(|r| g(r)).collect());
        let fmt = |(m, lo, hi): (f64, f64, f64), d: usize| format!("{m:.d$} [{lo:.d$}–{hi:.d$}]");
        let ms = |(m, lo, hi): (f64, f64, f64)| {
            format!("{:.2} ms [{:.2}–{:.2}]", m / 1e3, lo / 1e3, hi / 1e3)
        };
        let by = rs.iter().any(|r| r.bystander_storm.is_some());
        let _ = writeln!(
            md,
            "| {broker} | {pass} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            rs.len(),
            fmt(col(&|r| r.result.connects_per_s), 0),
            fmt(col(&|r| r.cpu_us_per_connect.unwrap_or(0.0)), 0),
            ms(col(&|r| r.result.connack_p50_us)),
            ms(col(&|r| r.result.connack_p99_us)),
            rs.iter().map(|r| r.result.failed).sum::<u64>(),
            rs.iter().map(|r| r.result.resumed).sum::<u64>(),
            if by {
                ms(col(&|r| {
                    r.bystander_quiet.as_ref().map_or(0.0, |p| p.p99_us)
                }))
            } else {
                "–".into()
            },
            if by {
                ms(col(&|r| {
                    r.bystander_storm.as_ref().map_or(0.0, |p| p.p99_us)
                }))
            } else {
                "–".into()
            },
        );
    }
    md
}
