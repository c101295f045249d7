//! The per-run record and its JSON file: everything needed to compare, re-plot or audit a run
//! without re-running it (scenario, broker and its config, machine, counters, percentiles, the
//! HDR histogram itself, CPU and memory, verdict).

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::procstat::CpuSource;
use crate::scenario::Scenario;
use crate::signal::{SignalCheck, SignalRule};
use crate::stats::{Counters, LatencyHistogram, Percentiles};

/// Version of the JSON layout.
pub const SCHEMA: u32 = 2;

/// Did the run produce a result?
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Measured; correctness checks passed.
    Ok,
    /// Measured, or attempted, and something is wrong (see `failures`).
    Failed,
    /// Not run (broker missing, series stopped at saturation, ...; see `note`).
    Skipped,
}

/// The broker of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BrokerInfo {
    pub name: String,
    pub version: String,
    pub addr: String,
    /// Where the subscribers were (a broker bridged to this one), when not here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_addr: Option<String>,
    pub pid: Option<u32>,
    /// True if loadgen started it.
    pub managed: bool,
    /// The generated config, verbatim.
    pub config: Option<String>,
}

/// The machine the run was on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineInfo {
    pub hostname: String,
    pub kernel: String,
    pub cpu_model: String,
    pub cores: usize,
    pub mem_total_kib: u64,
}

impl MachineInfo {
    /// Reads /proc and /etc for this machine.
    pub fn current() -> MachineInfo {
        let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        MachineInfo {
            hostname: read("/proc/sys/kernel/hostname").trim().to_string(),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            cpu_model: cpuinfo
                .lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_default(),
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            mem_total_kib: read("/proc/meminfo")
                .lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
                .unwrap_or(0),
        }
    }
}

/// Broker CPU over the measured interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct BrokerCpu {
    /// CPU seconds (run time of all threads).
    pub cpu_s: f64,
    /// Percent of one core.
    pub cpu_pct: f64,
    /// CPU microseconds per delivered measured message.
    pub us_per_msg: f64,
    pub threads: u64,
    /// Where `cpu_s` came from (schema 1 files: always `stat`).
    #[serde(default)]
    pub source: CpuSource,
    /// `cpu_s` in the source's own unit: nanoseconds (schedstat) or clock ticks (stat); few
    /// ticks make the figure coarse.
    #[serde(default)]
    pub raw: u64,
}

/// Broker memory during the measured interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct BrokerMem {
    pub rss_mean_kib: u64,
    pub rss_max_kib: u64,
    /// Peak RSS since the broker started (VmHWM).
    pub peak_kib: u64,
    pub samples: u32,
}

/// loadgen's own CPU over the measured interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadgenCpu {
    /// Percent of one core, whole process.
    pub process_pct: f64,
    /// Percent of one core, per worker thread.
    pub workers_pct: Vec<f64>,
    /// A worker was (nearly) always busy: the result may be loadgen's limit, not the broker's.
    pub saturated: bool,
    /// Percent of all cores busy on the machine (broker + loadgen + anything else). Sampled
    /// at the scheduler's tick, so on a tickless kernel it under-counts work done in short
    /// bursts between idle periods (low message rates); near saturation it is accurate.
    pub machine_busy_pct: f64,
    /// Percent of all cores' time the hypervisor gave to other machines (steal): a slower
    /// machine for every broker that ran in it. 0 where the kernel reports none, and in
    /// records written before loadgen measured it.
    #[serde(default)]
    pub machine_steal_pct: f64,
}

/// One run: one scenario against one broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub schema: u32,
    pub suite: String,
    /// Position of the cell in the suite (orders tables and charts).
    pub cell_index: usize,
    /// Which repeat of the cell (0-based); brokers alternate between repeats.
    #[serde(default)]
    pub repeat: u32,
    pub scenario: Scenario,
    pub broker: BrokerInfo,
    pub status: Status,
    pub note: Option<String>,
    /// Unix time the run started.
    pub started_unix: u64,
    pub command: String,
    pub loadgen_version: String,
    pub machine: MachineInfo,
    pub connections: u32,
    pub setup_s: f64,
    /// Length of the measured interval, seconds.
    pub measured_s: f64,
    pub counters: Counters,
    pub lost: u64,
    /// Distinct measured deliveries per second.
    pub throughput_msgs_s: f64,
    /// Deliveries per second the plan asked for (what was sent x fan-out).
    pub offered_msgs_s: f64,
    pub latency: Percentiles,
    /// The latency histogram: HdrHistogram V2 compressed, base64, nanoseconds.
    pub latency_hdr: String,
    /// How late loadgen itself sent (actual minus intended), as percentiles.
    pub send_lag: Percentiles,
    pub broker_cpu: Option<BrokerCpu>,
    pub broker_mem: Option<BrokerMem>,
    /// Why broker CPU/memory are missing, when they are.
    pub broker_not_measured: Option<String>,
    pub loadgen_cpu: LoadgenCpu,
    pub failures: Vec<String>,
    pub warnings: Vec<String>,
    /// Whether the run gathered enough messages and broker CPU to be trusted.
    #[serde(default)]
    pub signal: SignalCheck,
    /// The rule `signal` was checked against (also the spread limit of the reports).
    #[serde(default)]
    pub signal_rule: SignalRule,
    /// Set when a first attempt gathered too little signal and the run was re-done longer.
    #[serde(default)]
    pub extended: Option<String>,
    /// The TLS version and cipher suite negotiated, for a run over TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::tls::TlsInfo>,
}

impl RunRecord {
    /// The broker's version, and what TLS negotiated when the run was over TLS, for the
    /// reports' broker tables.
    pub fn broker_label(&self) -> String {
        match &self.tls {
            None => self.broker.version.clone(),
            Some(t) => format!("{} — over TLS: {}", self.broker.version, t.summary()),
        }
    }

    /// The deserialised latency histogram.
    pub fn histogram(&self) -> Option<LatencyHistogram> {
        LatencyHistogram::from_base64(&self.latency_hdr).ok()
    }

    /// File name of this record in `runs/`.
    pub fn file_name(&self) -> String {
        let safe = |s: &str| {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect::<String>()
        };
        format!(
            "{:03}-{}--{}--r{}.json",
            self.cell_index,
            safe(&self.scenario.name),
            safe(&self.broker.name),
            self.repeat
        )
    }
}

/// Writes `rec` to `dir/runs/`.
pub fn write(dir: &Path, rec: &RunRecord) -> Result<(), String> {
    let runs = dir.join("runs");
    fs::create_dir_all(&runs).map_err(|e| format!("{}: {e}", runs.display()))?;
    let path = runs.join(rec.file_name());
    let text = serde_json::to_string_pretty(rec).map_err(|e| e.to_string())?;
    fs::write(&path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads every `runs/*.json` of a results directory, in cell order then broker order as run.
pub fn read_dir(dir: &Path) -> Result<Vec<RunRecord>, String> {
    let runs = dir.join("runs");
    let mut paths: Vec<_> = fs::read_dir(&runs)
        .map_err(|e| format!("{}: {e}", runs.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let text = fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        let rec: RunRecord =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?;
        out.push(rec);
    }
    out.sort_by_key(|r| (r.cell_index, r.repeat, r.started_unix));
    Ok(out)
}
