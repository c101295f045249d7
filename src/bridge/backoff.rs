//! When a bridge reconnects: `restart_timeout BASE` waits BASE seconds every time;
//! `restart_timeout BASE CAP` waits a random time between BASE and three times the last wait,
//! capped at CAP ("decorrelated jitter", as mosquitto), so that many bridges cut off by one
//! outage do not all come back in the same second.

use std::time::Duration;

#[derive(Debug)]
pub struct Backoff {
    base: u32,
    cap: Option<u32>,
    /// The last wait, in milliseconds (the base after a successful connection).
    last_ms: u64,
}

impl Backoff {
    pub fn new(base: u32, cap: Option<u32>) -> Backoff {
        Backoff {
            base,
            cap,
            last_ms: u64::from(base) * 1000,
        }
    }

    /// The connection worked: the next wait starts from the base again.
    pub fn reset(&mut self) {
        self.last_ms = u64::from(self.base) * 1000;
    }

    /// The wait before the next attempt.
    pub fn next(&mut self) -> Duration {
        let base = u64::from(self.base) * 1000;
        let Some(cap) = self.cap else {
            return Duration::from_millis(base);
        };
        let cap = u64::from(cap) * 1000;
        let high = self.last_ms.saturating_mul(3).min(cap).max(base);
        let wait = base + random() % (high - base + 1);
        self.last_ms = wait;
        Duration::from_millis(wait)
    }
}

fn random() -> u64 {
    let mut b = [0u8; 8];
    // A failure leaves zeros: the wait is then the base, which is still correct.
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_without_a_cap() {
        let mut b = Backoff::new(2, None);
        assert_eq!(b.next(), Duration::from_secs(2));
        assert_eq!(b.next(), Duration::from_secs(2));
    }

    #[test]
    fn jittered_between_base_and_cap() {
        let mut b = Backoff::new(1, Some(10));
        let waits: Vec<Duration> = (0..50).map(|_| b.next()).collect();
        assert!(waits
            .iter()
            .all(|w| *w >= Duration::from_secs(1) && *w <= Duration::from_secs(10)));
        assert!(waits.iter().any(|w| *w > Duration::from_secs(1)));
        b.reset();
        assert!(b.next() <= Duration::from_secs(3));
    }
}
