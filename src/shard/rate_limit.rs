//! The per-shard share of `connection_rate_limit`.

use std::time::Instant;

/// A token bucket: `rate` tokens per second, at most one second's worth saved up. Each shard
/// holds its share of the broker-wide rate, so no state is shared between threads.
#[derive(Debug)]
pub struct RateLimit {
    /// Tokens per second; 0 = unlimited.
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    /// `total` per second split over `shards` (each at least 1 when limited).
    pub fn per_second(total: u32, shards: usize) -> RateLimit {
        let rate = if total == 0 {
            0.0
        } else {
            (f64::from(total) / shards as f64).max(1.0)
        };
        RateLimit {
            rate,
            tokens: rate,
            last: Instant::now(),
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rate_limit_allows_its_share_per_second_then_refills() {
        let start = Instant::now();
        let mut r = RateLimit::per_second(10, 2); // 5 per second on this shard
        let taken = (0..20).filter(|_| r.take(start)).count();
        assert_eq!(taken, 5, "a burst gets one second's worth");
        assert!(
            !r.take(start + Duration::from_millis(100)),
            "half a token after 100 ms"
        );
        assert!(r.take(start + Duration::from_millis(300)), "refilled");
        let mut unlimited = RateLimit::per_second(0, 2);
        assert!((0..1000).all(|_| unlimited.take(start)));
    }
}
