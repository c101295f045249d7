//! The run driver: spawns the workers, fixes the timeline once every client is set up,
//! walks the phases (warm-up, measured interval, drain) and merges the workers' results.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::worker::{Worker, WorkerOut};
use super::{
    EngineConfig, EngineResult, Event, Phase, Progress, Shared, Timeline, DRAIN_EXTENSION_NS,
    DRAIN_IDLE_NS,
};
use crate::clock;
use crate::scenario::Plan;
use crate::stats::{Counters, LatencyHistogram};

/// Runs `plan` against `addr`. Blocks until the run is over; `observe` is called from this
/// thread at phase changes and about every 250 ms.
pub fn run(
    addr: SocketAddr,
    plan: &Plan,
    cfg: &EngineConfig,
    observe: &mut dyn FnMut(Event),
) -> Result<EngineResult, String> {
    let _ = clock::now_ns(); // fix the epoch before any thread stamps a message
    let n = plan.clients.len();
    let shared = Arc::new(Shared {
        ready: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        timeline: OnceLock::new(),
        stop: AtomicBool::new(false),
        expected: AtomicU64::new(0),
        received: AtomicU64::new(0),
        publishers_done: AtomicUsize::new(0),
        delivered: (0..plan.publishers.len())
            .map(|_| AtomicU64::new(0))
            .collect(),
        errors: Mutex::new(Vec::new()),
    });
    let plan = Arc::new(plan.clone());
    let threads = (cfg.threads as usize).clamp(1, n.max(1));
    // Workers report through a channel so that the controller can stop waiting at a deadline:
    // a worker that is stuck (a bug, a hung syscall) must not keep the run from ending.
    let (tx, rx) = std::sync::mpsc::channel::<Result<WorkerOut, String>>();
    for w in 0..threads {
        let mine: Vec<usize> = (w..n).step_by(threads).collect();
        let (shared, plan, cfg, tx) = (shared.clone(), plan.clone(), cfg.clone(), tx.clone());
        std::thread::Builder::new()
            .name(format!("loadgen-w{w}"))
            .spawn(move || {
                let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    Worker::new(addr, plan, cfg, shared, mine).and_then(|w| w.run())
                }));
                let _ = tx.send(match out {
                    Ok(Ok(o)) => Ok(o),
                    Ok(Err(e)) => Err(format!("worker: {e}")),
                    Err(_) => Err("a worker thread panicked".to_string()),
                });
            })
            .map_err(|e| format!("spawning a worker thread: {e}"))?;
    }
    drop(tx);
    let join = |deadline_ns: u64| -> Result<Vec<WorkerOut>, String> {
        let mut outs = Vec::new();
        while outs.len() < threads {
            let left = deadline_ns.saturating_sub(clock::now_ns());
            match rx.recv_timeout(Duration::from_nanos(left)) {
                Ok(r) => outs.push(r?),
                Err(_) => {
                    return Err(format!(
                        "{} worker(s) did not stop by the deadline",
                        threads - outs.len()
                    ))
                }
            }
        }
        Ok(outs)
    };

    // Set-up: connect and subscribe everyone, bounded.
    let setup_from = clock::now_ns();
    let setup_deadline = setup_from + cfg.setup_timeout.as_nanos() as u64;
    let mut next_tick = setup_from;
    loop {
        let (ready, failed) = (shared.ready.load(Relaxed), shared.failed.load(Relaxed));
        let now = clock::now_ns();
        if failed > 0 || now >= setup_deadline {
            shared.stop.store(true, Relaxed);
            let _ = join(clock::now_ns() + 5_000_000_000);
            let errors = shared
                .errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            return Err(if failed > 0 {
                format!(
                    "{failed} of {n} clients failed to connect/subscribe: {}",
                    errors.join("; ")
                )
            } else {
                format!(
                    "set-up timed out after {:?}: {ready} of {n} clients ready",
                    cfg.setup_timeout
                )
            });
        }
        if ready == n {
            break;
        }
        if now >= next_tick {
            observe(Event::Tick(progress(
                &shared,
                Phase::Setup,
                setup_from,
                now,
                n,
                0,
            )));
            next_tick = now + 250_000_000;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let setup_s = (clock::now_ns() - setup_from) as f64 / 1e9;

    // The timeline. The short lead lets every worker see it before the first message is due.
    let start_ns = clock::now_ns() + 50_000_000;
    let measure_start_ns = start_ns + cfg.warmup_ns;
    let measure_end_ns = measure_start_ns + cfg.duration_ns;
    let drain_end_ns = measure_end_ns + cfg.drain_ns;
    let tl = Timeline {
        start_ns,
        measure_start_ns,
        measure_end_ns,
        drain_end_ns,
        hard_deadline_ns: drain_end_ns + DRAIN_EXTENSION_NS + 5_000_000_000,
    };
    let _ = shared.timeline.set(tl);
    observe(Event::Ready(tl));

    let sleep_until = |t: u64| {
        let now = clock::now_ns();
        if t > now {
            std::thread::sleep(Duration::from_nanos(t - now));
        }
    };
    let mut next_tick = start_ns;
    while clock::now_ns() < measure_start_ns {
        let now = clock::now_ns();
        if now >= next_tick {
            observe(Event::Tick(progress(
                &shared,
                Phase::Warmup,
                start_ns,
                now,
                n,
                0,
            )));
            next_tick = now + 250_000_000;
        }
        sleep_until(next_tick.min(measure_start_ns));
    }
    observe(Event::MeasureStart);
    while clock::now_ns() < measure_end_ns {
        let now = clock::now_ns();
        if now >= next_tick {
            observe(Event::Tick(progress(
                &shared,
                Phase::Measure,
                measure_start_ns,
                now,
                n,
                measure_start_ns,
            )));
            next_tick = now + 250_000_000;
        }
        sleep_until(next_tick.min(measure_end_ns));
    }
    observe(Event::MeasureEnd);
    // Drain: until everything scheduled was sent and every expected delivery arrived. Past
    // `drain_end_ns` it goes on only while deliveries still arrive (a slow but correct broker
    // is late, not lossy), and never past `DRAIN_EXTENSION_NS` more.
    let mut last = (shared.received.load(Relaxed), clock::now_ns());
    loop {
        let now = clock::now_ns();
        let received = shared.received.load(Relaxed);
        if received != last.0 {
            last = (received, now);
        }
        let done = shared.publishers_done.load(Relaxed) == plan.publishers.len()
            && received >= shared.expected.load(Relaxed);
        let stalled = now.saturating_sub(last.1) > DRAIN_IDLE_NS;
        if done || (now >= drain_end_ns && stalled) || now >= drain_end_ns + DRAIN_EXTENSION_NS {
            break;
        }
        if now >= next_tick {
            observe(Event::Tick(progress(
                &shared,
                Phase::Drain,
                measure_end_ns,
                now,
                n,
                measure_start_ns,
            )));
            next_tick = now + 250_000_000;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    shared.stop.store(true, Relaxed);
    let outs = join(tl.hard_deadline_ns + 1_000_000_000)?;

    let mut res = EngineResult {
        counters: Counters::default(),
        latency: LatencyHistogram::new(),
        send_lag: LatencyHistogram::new(),
        timeline: tl,
        setup_s,
        worker_cpu: Vec::new(),
        errors: shared
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
    };
    for o in outs {
        res.counters.add(&o.counters);
        res.latency.merge(&o.latency);
        res.send_lag.merge(&o.send_lag);
        res.worker_cpu.push(o.cpu);
    }
    Ok(res)
}

fn progress(
    shared: &Shared,
    phase: Phase,
    from: u64,
    now: u64,
    n: usize,
    measure_from: u64,
) -> Progress {
    let received = shared.received.load(Relaxed);
    let secs = if measure_from > 0 {
        (now.saturating_sub(measure_from)) as f64 / 1e9
    } else {
        0.0
    };
    Progress {
        phase,
        elapsed_s: now.saturating_sub(from) as f64 / 1e9,
        ready: shared.ready.load(Relaxed),
        connections: n,
        received,
        expected: shared.expected.load(Relaxed),
        rate: if secs > 0.0 {
            received as f64 / secs
        } else {
            0.0
        },
    }
}
