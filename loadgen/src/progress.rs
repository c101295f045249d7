//! Where a suite is and when it will end: the head of the live progress line ("[7/36 19%
//! ETA 4m10s] p2p.c50 @ midge, repeat 2/3").
//!
//! The estimate starts from each run's planned time (warm-up, measured interval as lengthened
//! for signal, drain, a guess at connection set-up) and is scaled by how the runs so far
//! compared with their plan, so broker start-up, re-runs for signal and a slow machine are
//! accounted for after a few runs. The line itself is drawn by the runner, in place, only on a
//! terminal and not under `-q`.

use std::time::Instant;

/// Progress over a suite's runs.
#[derive(Debug, Clone)]
pub struct Progress {
    planned: Vec<f64>,
    done: usize,
    planned_done_s: f64,
    started: Instant,
}

/// "1h02m", "3m20s", "45s".
pub fn fmt_duration(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s / 60 % 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

impl Progress {
    /// Progress over runs planned to take `planned` seconds each, in order.
    pub fn new(planned: Vec<f64>) -> Progress {
        Progress {
            planned,
            done: 0,
            planned_done_s: 0.0,
            started: Instant::now(),
        }
    }

    /// Marks the next run done.
    pub fn finish_one(&mut self) {
        if let Some(p) = self.planned.get(self.done) {
            self.planned_done_s += p;
        }
        self.done += 1;
    }

    /// Seconds left, given `elapsed_s` since the start: the planned remainder scaled by how
    /// long the finished runs took against their plan.
    pub fn eta_s(&self, elapsed_s: f64) -> f64 {
        let remaining: f64 = self.planned.iter().skip(self.done).sum();
        let pace = if self.planned_done_s > 0.0 && elapsed_s > 0.0 {
            elapsed_s / self.planned_done_s
        } else {
            1.0
        };
        remaining * pace
    }

    /// The head of the progress line for the run about to start.
    pub fn head(&self, cell: &str, broker: &str, repeat: u32, repeats: u32) -> String {
        let total = self.planned.len().max(1);
        self.head_at(
            self.started.elapsed().as_secs_f64(),
            cell,
            broker,
            repeat,
            repeats,
            total,
        )
    }

    fn head_at(
        &self,
        elapsed_s: f64,
        cell: &str,
        broker: &str,
        repeat: u32,
        repeats: u32,
        total: usize,
    ) -> String {
        format!(
            "[{}/{total} {:.0}% ETA {}] {cell} @ {broker}, repeat {}/{repeats}",
            self.done + 1,
            100.0 * self.done as f64 / total as f64,
            fmt_duration(self.eta_s(elapsed_s)),
            repeat + 1
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_a_clock() {
        assert_eq!(fmt_duration(45.4), "45s");
        assert_eq!(fmt_duration(200.0), "3m20s");
        assert_eq!(fmt_duration(3720.0), "1h02m");
        assert_eq!(fmt_duration(-3.0), "0s");
    }

    #[test]
    fn the_eta_follows_the_plan_scaled_by_the_pace_so_far() {
        let mut p = Progress::new(vec![10.0; 4]);
        assert_eq!(p.eta_s(0.0), 40.0, "the plan before any run");
        p.finish_one();
        // The first run took 20 s instead of 10: the three left will too.
        assert_eq!(p.eta_s(20.0), 60.0);
        p.finish_one();
        p.finish_one();
        p.finish_one();
        assert_eq!(p.eta_s(80.0), 0.0);
    }

    #[test]
    fn the_head_names_run_cell_broker_repeat_and_eta() {
        let mut p = Progress::new(vec![30.0; 12]);
        p.finish_one();
        let h = p.head_at(30.0, "p2p.c50", "midge", 1, 3, 12);
        assert_eq!(h, "[2/12 8% ETA 5m30s] p2p.c50 @ midge, repeat 2/3");
    }
}
