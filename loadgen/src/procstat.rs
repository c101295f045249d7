//! CPU time and memory of processes, read from `/proc` (Linux only).
//!
//! The broker's CPU is preferably the scheduler's run time of every thread, in nanoseconds
//! (first field of `/proc/PID/task/*/schedstat`, summed): at low message rates a broker uses a
//! few clock ticks per second, and `/proc/PID/stat`'s `utime + stime` (whole ticks, usually
//! 10 ms) would then quantise CPU per message into noise. Where schedstat is missing (kernels
//! without `CONFIG_SCHED_INFO`) the tick count of `/proc/PID/stat`, which already sums every
//! thread of the process, is the fallback; which one was used is recorded with the figure. Memory is `VmRSS`
//! (sampled) and `VmHWM` (the kernel's peak RSS) from `/proc/PID/status`. A PID is identified
//! by its start time (field 22 of `stat`) so that a PID reused by another process after the
//! broker died is noticed instead of sampled.

use std::fs;

use serde::{Deserialize, Serialize};

/// CPU seconds used so far by the calling thread (`getrusage(RUSAGE_THREAD)`).
pub fn thread_cpu_s() -> f64 {
    rusage_s(libc::RUSAGE_THREAD)
}

/// CPU seconds used so far by this whole process (all loadgen threads).
pub fn process_cpu_s() -> f64 {
    rusage_s(libc::RUSAGE_SELF)
}

fn rusage_s(who: libc::c_int) -> f64 {
    // SAFETY: an all-zero rusage is valid; getrusage fills the struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: see above.
    if unsafe { libc::getrusage(who, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Clock ticks per second of `/proc` CPU times.
pub fn clk_tck() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// What `/proc/PID/stat` says about a process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcStat {
    /// utime + stime of all threads, in seconds.
    pub cpu_s: f64,
    /// Start time in clock ticks after boot: with the PID, an identity that survives PID reuse.
    pub start_ticks: u64,
    pub threads: u64,
    /// The parent's PID: a broker started by a wrapper script listens from a child of it.
    pub ppid: u32,
}

/// Parses a `/proc/PID/stat` line. The command name (field 2) may contain spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn parse_stat(line: &str, tck: f64) -> Option<ProcStat> {
    let rest = &line[line.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state), f[1] field 4 (ppid); utime is field 14, stime 15,
    // num_threads 20, starttime 22.
    let ppid: u32 = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let threads: u64 = f.get(17)?.parse().ok()?;
    let start_ticks: u64 = f.get(19)?.parse().ok()?;
    Some(ProcStat {
        cpu_s: (utime + stime) as f64 / tck,
        start_ticks,
        threads,
        ppid,
    })
}

/// Reads `/proc/PID/stat`; `None` if the process is gone.
pub fn stat(pid: u32) -> Option<ProcStat> {
    parse_stat(
        &fs::read_to_string(format!("/proc/{pid}/stat")).ok()?,
        clk_tck(),
    )
}

/// Where a broker CPU figure came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuSource {
    /// `/proc/PID/task/*/schedstat`: run time in nanoseconds, summed over threads.
    Schedstat,
    /// `/proc/PID/stat`: `utime + stime` in clock ticks.
    #[default]
    Stat,
}

impl CpuSource {
    pub fn name(self) -> &'static str {
        match self {
            CpuSource::Schedstat => "schedstat",
            CpuSource::Stat => "stat",
        }
    }
}

/// The run time (ns) in a `schedstat` line: its first field.
pub fn parse_schedstat(line: &str) -> Option<u64> {
    line.split_whitespace().next()?.parse().ok()
}

/// Run time in nanoseconds of every live thread of `pid`, from `/proc/PID/task/*/schedstat`;
/// `None` if the process is gone or the kernel has no schedstat. A thread that exited during
/// the interval takes its time with it, which brokers with fixed thread pools do not do.
pub fn schedstat_ns(pid: u32) -> Option<u64> {
    let dir = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut sum = 0u64;
    let mut any = false;
    for e in dir.flatten() {
        if let Some(ns) = fs::read_to_string(e.path().join("schedstat"))
            .ok()
            .and_then(|t| parse_schedstat(&t))
        {
            sum += ns;
            any = true;
        }
    }
    any.then_some(sum)
}

/// One reading of a process's CPU: seconds, and the raw count of its source (ns or ticks).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuReading {
    pub cpu_s: f64,
    pub raw: u64,
    pub source: CpuSource,
    /// The `/proc/PID/stat` figure taken at the same time (the fallback).
    pub stat_cpu_s: f64,
}

/// The CPU of `pid` from the best source available, given its `/proc/PID/stat` reading `st`
/// (the fallback).
pub fn cpu_reading(pid: u32, st: &ProcStat) -> CpuReading {
    match schedstat_ns(pid) {
        Some(ns) => CpuReading {
            cpu_s: ns as f64 / 1e9,
            raw: ns,
            source: CpuSource::Schedstat,
            stat_cpu_s: st.cpu_s,
        },
        None => CpuReading {
            cpu_s: st.cpu_s,
            raw: (st.cpu_s * clk_tck()).round() as u64,
            source: CpuSource::Stat,
            stat_cpu_s: st.cpu_s,
        },
    }
}

/// Resident memory now and at its peak, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mem {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

/// Parses `VmRSS` and `VmHWM` out of a `/proc/PID/status` text.
pub fn parse_status(text: &str) -> Option<Mem> {
    let field = |name: &str| {
        text.lines().find(|l| l.starts_with(name)).and_then(|l| {
            l[name.len()..]
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
    };
    Some(Mem {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

/// Reads the memory of `pid`; `None` if the process is gone.
pub fn mem(pid: u32) -> Option<Mem> {
    parse_status(&fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// The whole machine's CPU time so far, in jiffies summed over its cores (the first line of
/// `/proc/stat`), to tell whether something else competed for the CPU during a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MachineJiffies {
    /// Not idle and not waiting for I/O (steal included).
    pub busy: u64,
    pub total: u64,
    /// Time a virtual machine's hypervisor gave this machine's CPUs to someone else while
    /// they had work: every process here, broker and loadgen alike, ran slower for it.
    pub steal: u64,
}

pub fn machine_jiffies() -> Option<MachineJiffies> {
    parse_machine(&fs::read_to_string("/proc/stat").ok()?)
}

/// Parses the `cpu` line of `/proc/stat`: user nice system idle iowait irq softirq steal ...
/// (guest time is already in user and nice, so only the first eight fields add up).
pub fn parse_machine(text: &str) -> Option<MachineJiffies> {
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).unwrap_or(&0);
    Some(MachineJiffies {
        busy: total - idle,
        total,
        steal: v.get(7).copied().unwrap_or(0),
    })
}

/// Socket inodes listening on TCP `port` (IPv4 and IPv6, any local address).
pub fn listening_inodes(port: u16) -> Vec<u64> {
    let mut out = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = fs::read_to_string(file) {
            out.extend(parse_listeners(&text, port));
        }
    }
    out
}

/// Parses `/proc/net/tcp{,6}`: rows in state 0A (LISTEN) whose local port is `port`.
pub fn parse_listeners(text: &str, port: u16) -> Vec<u64> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            (local_port == port && *f.get(3)? == "0A").then(|| f.get(9)?.parse().ok())?
        })
        .collect()
}

/// True if process `pid` holds a socket listening on `port`: proof that the process we sample
/// is the one clients talk to (not a stale broker that also bound the port, ARCHITECTURE.md §9).
pub fn pid_listens_on(pid: u32, port: u16) -> bool {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return false;
    }
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    dir.flatten().any(|e| {
        fs::read_link(e.path())
            .ok()
            .and_then(|t| {
                let t = t.to_string_lossy().into_owned();
                t.strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse::<u64>()
                    .ok()
            })
            .is_some_and(|ino| inodes.contains(&ino))
    })
}

/// Every PID whose process holds a socket listening on `port` (several means something else
/// shares the port, e.g. through SO_REUSEPORT).
pub fn pids_listening_on(port: u16) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid_listens_on(pid, port))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_counts_fields_after_a_command_with_spaces_and_parens() {
        let line = "1234 (my (odd) broker) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 4 0 98765 1000000 300 18446744073709551615";
        let s = parse_stat(line, 100.0).unwrap();
        assert_eq!(s.cpu_s, 3.0, "(250 + 50) ticks at 100 Hz");
        assert_eq!(s.threads, 4);
        assert_eq!(s.start_ticks, 98765);
    }

    #[test]
    fn own_process_is_readable_and_consistent() {
        let me = std::process::id();
        let s = stat(me).expect("own /proc/self/stat");
        assert!(s.threads >= 1);
        let m = mem(me).expect("own status");
        assert!(m.rss_kib > 0 && m.hwm_kib >= m.rss_kib);
        assert!(process_cpu_s() >= thread_cpu_s());
        let m = machine_jiffies().unwrap();
        assert!(m.steal <= m.busy && m.busy <= m.total);
    }

    #[test]
    fn machine_line_gives_busy_total_and_steal() {
        let m = parse_machine("cpu  600 400 200 1000 100 0 40 30 0 0\ncpu0 1 2 3 4\n").unwrap();
        assert_eq!(
            m,
            MachineJiffies {
                busy: 1270,
                total: 2370,
                steal: 30
            }
        );
        // Kernels before 2.6.11 have no steal field.
        let old = parse_machine("cpu  600 400 200 1000 100 0 40\n").unwrap();
        assert_eq!((old.busy, old.total, old.steal), (1240, 2340, 0));
        assert_eq!(parse_machine("intr 1 2 3\n"), None);
    }

    #[test]
    fn schedstat_counts_nanoseconds_of_every_thread() {
        assert_eq!(parse_schedstat("187958 60610 1\n"), Some(187_958));
        assert_eq!(parse_schedstat(""), None);
        let me = std::process::id();
        // A second thread that burns CPU must show up in the process's sum.
        let before = schedstat_ns(me).expect("schedstat on this kernel");
        std::thread::spawn(|| {
            let t = std::time::Instant::now();
            while t.elapsed() < std::time::Duration::from_millis(30) {
                std::hint::black_box(0u64);
            }
            // Still alive while we read: the sum covers live threads.
            std::thread::sleep(std::time::Duration::from_millis(200));
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        let after = schedstat_ns(me).unwrap();
        assert!(after - before >= 20_000_000, "{before} -> {after}");
        let r = cpu_reading(me, &stat(me).unwrap());
        assert_eq!(r.source, CpuSource::Schedstat);
        assert_eq!(r.raw as f64 / 1e9, r.cpu_s);
    }

    #[test]
    fn status_parsing_finds_rss_and_peak() {
        let m = parse_status("Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n").unwrap();
        assert_eq!(
            m,
            Mem {
                rss_kib: 1024,
                hwm_kib: 2048
            }
        );
        assert_eq!(parse_status("Name: kernel thread\n"), None);
    }

    #[test]
    fn a_listening_socket_is_attributed_to_its_process() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(pid_listens_on(std::process::id(), port));
        assert_eq!(pids_listening_on(port), vec![std::process::id()]);
        drop(l);
        assert!(!pid_listens_on(std::process::id(), port));
    }

    #[test]
    fn listener_rows_are_filtered_by_port_and_state() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:075B 00000000:0000 0A 00000000:00000000 00:00000000 00000000   0        0 4242 1\n   1: 0100007F:075B 0100007F:9C40 01 00000000:00000000 00:00000000 00000000   0        0 4343 1\n";
        assert_eq!(parse_listeners(text, 1883), vec![4242]);
        assert!(parse_listeners(text, 1884).is_empty());
    }
}
