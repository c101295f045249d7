//! The command line: `suite`, `run`, `report` and `brokers`.
//!
//! Exit codes: 0 when every run passed, 1 when a run failed its correctness checks (loss or
//! duplicates beyond its QoS, dropped connections), 2 for usage and set-up errors.

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::broker::{self, BrokerDef};
use crate::report::json::Status;
use crate::scenario::{Mode, Scenario, Shape};
use crate::suite::{self, Cell, Suite};

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Compare MQTT brokers: open-loop HDR latency, throughput, CPU and memory"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every cell of a suite file against every broker.
    Suite {
        /// The suite file (TOML), e.g. loadgen/suites/quick.toml.
        file: PathBuf,
        #[command(flatten)]
        target: Target,
    },
    /// Run one scenario against the brokers.
    Run {
        #[command(flatten)]
        scenario: ScenarioArgs,
        #[command(flatten)]
        target: Target,
    },
    /// Regenerate the reports (summary.md, summary.json, report.html, charts) of a results
    /// directory from its JSON files.
    Report {
        dir: PathBuf,
        /// Ratios are to this broker (default: the first).
        #[arg(long)]
        baseline: Option<String>,
    },
    /// Connect storms: N clients connect, subscribe and disconnect at a target rate (over
    /// TLS with --tls: full handshakes, then resumed ones).
    Storm(crate::storm::command::StormArgs),
    /// List the broker table and what is installed.
    Brokers {
        /// Where midge's binary is (default: target/release/midge of the workspace).
        #[arg(long)]
        midge: Option<PathBuf>,
        /// Where rumqttd's binary is (default: on PATH, else ~/.cargo/bin/rumqttd).
        #[arg(long)]
        rumqttd: Option<PathBuf>,
        /// Where FlashMQ's binary is (default: `flashmq` on PATH).
        #[arg(long)]
        flashmq: Option<PathBuf>,
        /// Where NanoMQ's binary is (default: `nanomq` on PATH).
        #[arg(long)]
        nanomq: Option<PathBuf>,
    },
}

/// Which brokers, where the results go, how chatty.
#[derive(Debug, Args)]
pub struct Target {
    /// Brokers from the built-in table, comma-separated (default: the suite's list, or
    /// midge,mosquitto).
    #[arg(long, value_delimiter = ',')]
    pub brokers: Option<Vec<String>>,
    /// An external broker: name=host:port[,pid=PID][,sub=host:port] (repeatable). Without a
    /// PID its CPU and memory are not measured. With sub=, subscribers connect to that broker
    /// (one bridged to this one) and publishers to this one: a bridge's throughput and latency.
    #[arg(long = "broker")]
    pub external: Vec<String>,
    /// Root of the results (a <suite>-<timestamp> directory is created in it).
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Where midge's binary is (default: target/release/midge of the workspace).
    #[arg(long)]
    pub midge: Option<PathBuf>,
    /// Where rumqttd's binary is (default: on PATH, else ~/.cargo/bin/rumqttd), e.g. after
    /// `cargo install rumqttd --root DIR`: DIR/bin/rumqttd.
    #[arg(long)]
    pub rumqttd: Option<PathBuf>,
    /// Where FlashMQ's binary is (default: `flashmq` on PATH).
    #[arg(long)]
    pub flashmq: Option<PathBuf>,
    /// Where NanoMQ's binary is (default: `nanomq` on PATH).
    #[arg(long)]
    pub nanomq: Option<PathBuf>,
    /// No progress line and no per-run lines (failures are still printed).
    #[arg(short, long)]
    pub quiet: bool,
    /// Runs of each cell per broker, brokers alternating (default: the suite's `repeat`, else
    /// 3; 1 for `run`).
    #[arg(long)]
    pub repeat: Option<u32>,
    /// Ratios in the reports are to this broker (default: the first).
    #[arg(long)]
    pub baseline: Option<String>,
    /// Deliveries a run must measure; slower cells run longer (default: the suite's
    /// `[signal] min_messages`, else 2000).
    #[arg(long)]
    pub min_messages: Option<u64>,
    /// Broker CPU milliseconds a run must measure (default 100).
    #[arg(long)]
    pub min_cpu_ms: Option<f64>,
    /// Longest measured interval a run is lengthened to, seconds (default 60).
    #[arg(long)]
    pub max_duration: Option<f64>,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// `--tls` and its options (see [`crate::tls`]).
#[derive(Debug, Args, Default)]
pub struct TlsArgs {
    /// Connect over TLS. Managed brokers (midge, mosquitto) get a TLS listener with
    /// certificates loadgen generates; an external broker needs --cafile.
    #[arg(long)]
    pub tls: bool,
    /// CA file (PEM) that verifies the broker (default: loadgen's generated CA).
    #[arg(long, requires = "tls")]
    pub cafile: Option<PathBuf>,
    /// Client certificate (PEM), with --key.
    #[arg(long, requires_all = ["tls", "key"])]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM), with --cert.
    #[arg(long, requires_all = ["tls", "cert"])]
    pub key: Option<PathBuf>,
    /// The name the broker's certificate must carry (default: localhost).
    #[arg(long, requires = "tls")]
    pub server_name: Option<String>,
    /// Managed brokers require a client certificate signed by their CA; loadgen presents
    /// its generated one unless --cert is given.
    #[arg(long, requires = "tls")]
    pub require_certificate: bool,
}

impl TlsArgs {
    /// Sets this process's TLS setting when `--tls` was given (generating certificates).
    pub fn install(&self) -> Result<(), String> {
        if !self.tls {
            return Ok(());
        }
        crate::tls::set_run_tls(Some(crate::tls::RunTls {
            opts: crate::tls::TlsOptions {
                cafile: self.cafile.clone(),
                cert: self.cert.clone(),
                key: self.key.clone(),
                server_name: self.server_name.clone(),
            },
            certs: crate::tls::BrokerTls::generate(self.require_certificate)?,
        }));
        Ok(())
    }
}

impl Target {
    /// The suite with this command line's overrides.
    fn apply(&self, suite: &Suite) -> Suite {
        let mut s = suite.clone();
        if let Some(n) = self.repeat {
            s.repeat = n.max(1);
        }
        if let Some(n) = self.min_messages {
            s.signal.min_messages = n;
        }
        if let Some(ms) = self.min_cpu_ms {
            s.signal.min_broker_cpu_ms = ms;
        }
        if let Some(d) = self.max_duration {
            s.signal.max_duration_s = d;
        }
        if let Some(b) = &self.baseline {
            s.baseline = Some(b.clone());
        }
        s
    }
}

/// One scenario on the command line (same fields as a suite cell).
#[derive(Debug, Args)]
pub struct ScenarioArgs {
    /// fan-in, fan-out, p2p or iot.
    #[arg(long, default_value = "p2p")]
    pub scenario: String,
    #[arg(long, default_value_t = 10)]
    pub clients: u32,
    /// Fan-in subscribers / IoT backends (0 = the shape's default).
    #[arg(long, default_value_t = 0)]
    pub subscribers: u32,
    /// Fan-out publishers (0 = 1).
    #[arg(long, default_value_t = 0)]
    pub publishers: u32,
    #[arg(long, default_value_t = 0)]
    pub qos: u8,
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Messages per second per publisher; "max" for a closed-loop max-throughput run.
    #[arg(long, default_value = "100")]
    pub rate: String,
    #[arg(long, default_value_t = 16)]
    pub window: u32,
    /// "3.1.1" or "5".
    #[arg(long, default_value = "3.1.1")]
    pub protocol: String,
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    #[arg(long, default_value_t = 2.0)]
    pub drain: f64,
    #[arg(long, default_value_t = 1)]
    pub threads: u32,
    /// Clients keep persistent sessions (to measure a broker's persistence).
    #[arg(long)]
    pub persistent: bool,
    /// tcp, or ws: MQTT over WebSocket (path /mqtt). The broker's listener must speak it:
    /// an external broker (--broker name=host:port,pid=PID) with `protocol websockets`.
    #[arg(long, default_value = "tcp")]
    pub transport: crate::engine::ws::Transport,
}

impl ScenarioArgs {
    fn to_scenario(&self) -> Result<Scenario, String> {
        let shape = match self.scenario.as_str() {
            "fan-in" | "fanin" => Shape::FanIn,
            "fan-out" | "fanout" => Shape::FanOut,
            "p2p" | "point-to-point" => Shape::P2p,
            "iot" => Shape::Iot,
            s => {
                return Err(format!(
                    "--scenario {s:?}: expected fan-in, fan-out, p2p or iot"
                ))
            }
        };
        let (mode, rate) = if self.rate == "max" {
            (Mode::Max, 0.0)
        } else {
            (
                Mode::Rate,
                self.rate
                    .parse()
                    .map_err(|_| format!("--rate {:?}: a number or \"max\"", self.rate))?,
            )
        };
        let mut s = Scenario {
            name: String::new(),
            shape,
            clients: self.clients,
            subscribers: self.subscribers,
            publishers: self.publishers,
            qos: self.qos,
            payload: self.payload,
            protocol: self.protocol.clone(),
            mode,
            rate,
            window: self.window,
            warmup_s: self.warmup,
            duration_s: self.duration,
            drain_s: self.drain,
            threads: self.threads,
            persistent: self.persistent,
            transport: self.transport,
        };
        s.name = s.auto_name();
        s.validate()?;
        Ok(s)
    }
}

/// The command line as typed, shell-quoted where needed, for the record.
fn command_line() -> String {
    // argv[0] as the program's name: where it was built is not part of the command.
    let mut args: Vec<String> = std::env::args().collect();
    if let Some(a0) = args.first_mut() {
        if let Some(name) = Path::new(a0.as_str()).file_name().and_then(|n| n.to_str()) {
            *a0 = name.to_string();
        }
    }
    args.into_iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=,:".contains(c))
            {
                a
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Resolves broker names and external specs into definitions.
fn resolve_brokers(
    names: &[String],
    external: &[String],
    bins: &broker::Binaries,
) -> Result<Vec<BrokerDef>, String> {
    let mut out = Vec::new();
    for n in names {
        out.push(broker::known_in(n, bins).ok_or_else(|| {
            format!(
                "unknown broker {n:?}: the table has {:?} (and midge-<N>shards); use --broker name=host:port for others",
                broker::KNOWN
            )
        })?);
    }
    for e in external {
        out.push(broker::parse_external(e)?);
    }
    if out.is_empty() {
        return Err("no brokers to run".into());
    }
    Ok(out)
}

/// Runs a suite and reports; returns the exit code.
fn run_suite(suite: &Suite, target: &Target) -> Result<i32, String> {
    target.tls.install()?;
    let result = run_suite_inner(suite, target);
    crate::tls::set_run_tls(None);
    result
}

fn run_suite_inner(suite: &Suite, target: &Target) -> Result<i32, String> {
    let suite = &target.apply(suite);
    let names = target.brokers.clone().unwrap_or_else(|| {
        if suite.brokers.is_empty() {
            vec!["midge".into(), "mosquitto".into()]
        } else {
            suite.brokers.clone()
        }
    });
    let names =
        if target.brokers.is_none() && !target.external.is_empty() && suite.brokers.is_empty() {
            Vec::new()
        } else {
            names
        };
    let bins = broker::Binaries {
        midge: target.midge.clone(),
        rumqttd: target.rumqttd.clone(),
        flashmq: target.flashmq.clone(),
        nanomq: target.nanomq.clone(),
    };
    let brokers = resolve_brokers(&names, &target.external, &bins)?;
    let dir = suite::out_dir(&target.out, &suite.name);
    if let Some(b) = &suite.baseline {
        if !brokers.iter().any(|d| d.name() == b) {
            return Err(format!("--baseline {b:?} is not one of the brokers"));
        }
    }
    if !target.quiet {
        eprintln!(
            "loadgen: {} cells x {} brokers x {} repeats -> {}",
            suite.cells.len(),
            brokers.len(),
            suite.repeat,
            dir.display()
        );
    }
    let records = suite::run(suite, &brokers, &dir, &command_line(), target.quiet)?;
    let failed: Vec<_> = records
        .iter()
        .filter(|r| r.status == Status::Failed)
        .collect();
    println!("results: {}", dir.join("summary.md").display());
    if failed.is_empty() {
        return Ok(0);
    }
    eprintln!("\n!!! {} of {} runs FAILED:", failed.len(), records.len());
    for r in &failed {
        eprintln!(
            "!!!   {} @ {}: {}",
            r.scenario.name,
            r.broker.name,
            r.failures.join("; ")
        );
    }
    Ok(1)
}

/// Entry point; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Suite { file, target } => suite::load(&file).and_then(|s| run_suite(&s, &target)),
        Command::Run { scenario, target } => scenario.to_scenario().and_then(|sc| {
            let suite = Suite {
                name: "run".into(),
                brokers: Vec::new(),
                limits: Default::default(),
                stop: Default::default(),
                repeat: 1,
                signal: Default::default(),
                baseline: None,
                cells: vec![Cell {
                    scenario: sc,
                    series: "run".into(),
                    grows: false,
                }],
            };
            run_suite(&suite, &target)
        }),
        Command::Storm(args) => crate::storm::command::run(&args, &command_line()),
        Command::Report { dir, baseline } => crate::report::regenerate(&dir, baseline.as_deref())
            .map(|n| {
                println!("{n} runs -> {}", dir.join("summary.md").display());
                0
            }),
        Command::Brokers {
            midge,
            rumqttd,
            flashmq,
            nanomq,
        } => {
            let bins = broker::Binaries {
                midge,
                rumqttd,
                flashmq,
                nanomq,
            };
            for n in broker::KNOWN {
                let b = broker::known_in(n, &bins).expect("listed");
                match (&b, b.unavailable()) {
                    (BrokerDef::Managed { binary, .. }, None) => {
                        println!("{n:10} {}", binary.display())
                    }
                    (_, Some(why)) => println!("{n:10} unavailable: {why}"),
                    _ => {}
                }
            }
            Ok(0)
        }
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadgen: {e}");
            2
        }
    }
}
