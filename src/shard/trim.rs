//! Giving freed memory back to the OS from the tick.

use std::time::{Duration, Instant};

/// Giving freed heap memory back to the OS (glibc's `malloc_trim`), at most once per
/// [`MemoryTrim::INTERVAL`] per shard, from the tick, never per message.
///
/// Why: glibc keeps what a thread's arena freed for later reuse, and raises its mmap threshold
/// after a large block is freed, so later large blocks come from the arena too. 16 clients
/// sending 8 MB packets and closing left the broker at 160 MiB resident after every buffer
/// was freed; a shard whose index shrank (a client with 100k filters left) keeps its pages
/// the same way. A trim is asked for when large buffers were freed
/// ([`MemoryTrim::request`]) and, once, when a shard that was busy goes quiet for a tick.
#[derive(Debug)]
pub(crate) struct MemoryTrim {
    wanted: bool,
    /// Events since the last tick, and whether any came since the last trim.
    active: bool,
    busy_since_trim: bool,
    last: Instant,
}

impl MemoryTrim {
    /// The most often a shard trims.
    const INTERVAL: Duration = Duration::from_secs(1);

    pub(super) fn new() -> MemoryTrim {
        MemoryTrim {
            wanted: false,
            active: false,
            busy_since_trim: false,
            last: Instant::now(),
        }
    }

    /// Something large was freed (a big read or write buffer, a large index): trim at the
    /// next tick that the interval allows.
    pub(crate) fn request(&mut self) {
        self.wanted = true;
    }

    /// The loop had events in this turn.
    pub(super) fn activity(&mut self) {
        self.active = true;
    }

    /// At each tick: whether to trim now.
    pub(super) fn due(&mut self, now: Instant) -> bool {
        let quiet = !std::mem::take(&mut self.active);
        self.busy_since_trim |= !quiet;
        let want = self.wanted || (quiet && self.busy_since_trim);
        if !want || now.saturating_duration_since(self.last) < Self::INTERVAL {
            return false;
        }
        self.wanted = false;
        self.busy_since_trim = false;
        self.last = now;
        true
    }
}

/// Returns the free memory at the top and in the middle of every malloc arena to the OS
/// (glibc only; a no-op elsewhere). Costs a walk over the arenas' free chunks: called from
/// the tick, at most once a second per shard.
pub(super) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it takes the arenas' own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_trimmed_when_asked_or_when_a_busy_shard_goes_quiet_at_most_once_a_second() {
        let t0 = Instant::now();
        let mut t = MemoryTrim::new();
        t.last = t0;
        let s = Duration::from_secs(1);
        assert!(!t.due(t0 + s), "never busy, nothing asked");
        t.activity();
        assert!(!t.due(t0 + s * 2), "busy during that tick");
        assert!(t.due(t0 + s * 3), "quiet after being busy");
        t.request();
        assert!(!t.due(t0 + s * 3 + Duration::from_millis(250)), "too soon");
        assert!(t.due(t0 + s * 4), "asked for");
        assert!(!t.due(t0 + s * 5), "quiet still: once is enough");
    }
}
