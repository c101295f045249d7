//! When each message is due: the open-loop schedule and the bounded window.
//!
//! Open loop (fixed rate): message `k` of a publisher is due at `start + phase + k * interval`
//! whatever happens to earlier messages. If the broker stalls, the window fills, sending stops,
//! and the due messages pile up as a *backlog*; when the broker recovers they are sent at once,
//! still stamped with their original intended times. The receiver measures from that intended
//! time, so the stall appears as high percentiles instead of as messages that were silently never
//! scheduled (the "coordinated omission" of closed-loop tools, see Gil Tene's talk "How NOT to
//! measure latency" and wrk2).
//!
//! Closed loop (max throughput): a message is due whenever the window has room and its intended
//! time is the moment it is sent.
//!
//! Pure: no clock and no I/O; the engine passes `now`. That is what lets the stall test below
//! run on simulated time.

/// How a publisher paces itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// Open loop: one message every `interval_ns`.
    Fixed { interval_ns: u64 },
    /// Closed loop: as fast as the window allows.
    Max,
}

/// One publisher's schedule: which sequence number is next and when it is due.
#[derive(Debug, Clone)]
pub struct Schedule {
    pace: Pace,
    /// Intended time of message 0 (epoch-relative ns), start plus this publisher's phase.
    first_ns: u64,
    /// No message is due at or after this time (end of the measured interval).
    stop_ns: u64,
    next_seq: u32,
}

impl Schedule {
    /// A schedule from `start_ns` (+ `phase_ns`, which spreads publishers over one interval so
    /// that N publishers do not fire in lock-step) until `stop_ns`.
    pub fn new(pace: Pace, start_ns: u64, phase_ns: u64, stop_ns: u64) -> Schedule {
        Schedule {
            pace,
            first_ns: start_ns + phase_ns,
            stop_ns,
            next_seq: 0,
        }
    }

    /// The pace.
    pub fn pace(&self) -> Pace {
        self.pace
    }

    /// Sequence number of the next message.
    pub fn next_seq(&self) -> u32 {
        self.next_seq
    }

    /// Intended send time of message `seq` under a fixed pace.
    fn intended(&self, seq: u32, interval_ns: u64) -> u64 {
        self.first_ns + seq as u64 * interval_ns
    }

    /// When the next message becomes due, or `None` when the schedule is over. For a closed
    /// loop this is the start time (it is always due once started, if the window allows).
    pub fn next_due(&self) -> Option<u64> {
        let due = match self.pace {
            Pace::Fixed { interval_ns } => self.intended(self.next_seq, interval_ns),
            Pace::Max => self.first_ns,
        };
        (due < self.stop_ns).then_some(due)
    }

    /// Takes the next message if it is due at `now`: returns its sequence number and intended
    /// time. The caller calls this only when it can send (window and socket have room).
    pub fn take_due(&mut self, now: u64) -> Option<(u32, u64)> {
        let due = self.next_due()?;
        if due > now {
            return None;
        }
        let intended = match self.pace {
            Pace::Fixed { .. } => due,
            Pace::Max => {
                if now >= self.stop_ns {
                    return None;
                }
                now
            }
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        Some((seq, intended))
    }

    /// How many messages were due before the end of the schedule but never taken: the open-loop
    /// backlog left when the run ended (always 0 for a closed loop).
    pub fn unsent_at(&self, now: u64) -> u64 {
        match self.pace {
            Pace::Fixed { interval_ns } => {
                let until = now.min(self.stop_ns);
                if until <= self.first_ns {
                    return 0;
                }
                let due = (until - self.first_ns).div_ceil(interval_ns);
                due.saturating_sub(self.next_seq as u64)
            }
            Pace::Max => 0,
        }
    }
}

/// A bounded window of messages in flight (sent, not yet acknowledged).
#[derive(Debug, Clone)]
pub struct Window {
    limit: u32,
    used: u32,
}

impl Window {
    /// A window of `limit` messages (at least 1).
    pub fn new(limit: u32) -> Window {
        Window {
            limit: limit.max(1),
            used: 0,
        }
    }

    /// True when one more message may be sent.
    pub fn has_room(&self) -> bool {
        self.used < self.limit
    }

    /// Counts one more message in flight.
    pub fn acquire(&mut self) {
        self.used += 1;
    }

    /// Releases one message (acknowledged).
    pub fn release(&mut self) {
        self.used = self.used.saturating_sub(1);
    }

    /// Messages in flight.
    pub fn used(&self) -> u32 {
        self.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::LatencyHistogram;
    use std::collections::VecDeque;

    const MS: u64 = 1_000_000;
    const US: u64 = 1_000;

    #[test]
    fn fixed_pace_is_due_at_start_plus_phase_plus_k_intervals() {
        let mut s = Schedule::new(
            Pace::Fixed {
                interval_ns: 10 * MS,
            },
            100 * MS,
            3 * MS,
            200 * MS,
        );
        assert_eq!(s.next_due(), Some(103 * MS));
        assert_eq!(s.take_due(102 * MS), None, "not due yet");
        assert_eq!(s.take_due(103 * MS), Some((0, 103 * MS)));
        // A late caller gets every overdue message, each with its own intended time.
        assert_eq!(s.take_due(140 * MS), Some((1, 113 * MS)));
        assert_eq!(s.take_due(140 * MS), Some((2, 123 * MS)));
        assert_eq!(s.take_due(140 * MS), Some((3, 133 * MS)));
        assert_eq!(s.take_due(140 * MS), None);
        assert_eq!(s.unsent_at(140 * MS), 0);
        assert_eq!(
            s.unsent_at(170 * MS),
            3,
            "143, 153, 163 are due and untaken"
        );
        // Nothing is due at or after the stop time.
        while s.take_due(1000 * MS).is_some() {}
        assert_eq!(s.next_seq(), 10, "103..=193 ms: ten messages");
        assert_eq!(s.next_due(), None);
    }

    #[test]
    fn closed_loop_stamps_the_send_time_and_stops_at_the_end() {
        let mut s = Schedule::new(Pace::Max, 0, 0, 50);
        assert_eq!(s.take_due(7), Some((0, 7)));
        assert_eq!(s.take_due(9), Some((1, 9)));
        assert_eq!(s.take_due(50), None);
        assert_eq!(s.unsent_at(60), 0);
    }

    #[test]
    fn window_bounds_messages_in_flight() {
        let mut w = Window::new(2);
        assert!(w.has_room());
        w.acquire();
        w.acquire();
        assert!(!w.has_room());
        w.release();
        assert!(w.has_room());
        assert_eq!(w.used(), 1);
    }

    /// Result of simulating one QoS 1 publisher against a broker that stalls.
    struct Simulated {
        /// Latency from the intended time (what loadgen reports).
        from_intended: LatencyHistogram,
        /// Latency from the actual send time (what a coordinated-omission tool reports).
        from_sent: LatencyHistogram,
        scheduled: u64,
    }

    /// Simulated time: a publisher at 1000 msg/s with a window of 10 against a broker that
    /// acknowledges and delivers 100 us after a send, except during [1.0 s, 1.5 s) when it
    /// stalls and answers nothing until the stall ends.
    fn simulate_stall() -> Simulated {
        let run = 2000 * MS;
        let (stall_from, stall_to) = (1000 * MS, 1500 * MS);
        let mut sched = Schedule::new(Pace::Fixed { interval_ns: MS }, 0, 0, run);
        let mut window = Window::new(10);
        // (delivery time, intended, sent)
        let mut in_flight: VecDeque<(u64, u64, u64)> = VecDeque::new();
        let mut sim = Simulated {
            from_intended: LatencyHistogram::new(),
            from_sent: LatencyHistogram::new(),
            scheduled: 0,
        };
        let mut now = 0;
        while now < run + 1000 * MS {
            while let Some(&(at, intended, sent)) = in_flight.front() {
                if at > now {
                    break;
                }
                in_flight.pop_front();
                window.release();
                sim.from_intended.record(at - intended);
                sim.from_sent.record(at - sent);
            }
            while window.has_room() {
                let Some((_, intended)) = sched.take_due(now) else {
                    break;
                };
                window.acquire();
                let mut at = now + 100 * US;
                if (stall_from..stall_to).contains(&now) {
                    at = stall_to + 100 * US;
                }
                in_flight.push_back((at, intended, now));
            }
            now += 10 * US;
        }
        sim.scheduled = sched.next_seq() as u64;
        sim
    }

    #[test]
    fn a_broker_stall_shows_up_in_the_percentiles_not_as_fewer_samples() {
        let sim = simulate_stall();
        // Every scheduled message was measured: the stall did not thin out the samples.
        assert_eq!(sim.scheduled, 2000);
        assert_eq!(sim.from_intended.count(), sim.scheduled);
        // A quarter of the run was stalled, so the top ~20% of latencies reflect it...
        let p = sim.from_intended.percentiles();
        assert!(p.p50_us < 1_000.0, "p50 unaffected: {}", p.p50_us);
        assert!(p.p90_us > 200_000.0, "p90 sees the stall: {}", p.p90_us);
        assert!(p.max_us > 490_000.0, "max ~ stall length: {}", p.max_us);
        // ...whereas timing from the actual send hides it: only the 10 messages that were in
        // the window when the stall began look slow.
        let q = sim.from_sent.percentiles();
        assert!(
            q.p99_us < 1_000.0,
            "send-time p99 hides the stall: {}",
            q.p99_us
        );
    }
}
