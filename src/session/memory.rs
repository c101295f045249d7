//! `memory_limit`: a broker-wide bound on the payload bytes of the QoS 1/2 messages that
//! sessions hold for delivery (queued, or in flight awaiting acknowledgement).
//!
//! Each copy a session holds counts its payload once (a message held by 100 sessions counts 100
//! times, as 100 deliveries are owed). Not counted: QoS 0 messages (never held: they go
//! straight to the connection's write buffer, bounded per connection), retained messages, and
//! the broker's own structures. So it is not mosquitto's `memory_limit` (a cap on the whole
//! heap): it bounds what offline and slow subscribers can make the broker keep.
//!
//! Sessions count into a per-thread delta without any atomic operation; each shard adds its
//! delta to the broker-wide total once per loop turn ([`flush`]) and reads the total back then.
//! A shard's view is therefore exact for its own changes and at most one turn behind for the
//! other shards': the limit can be exceeded by what the other shards add within one turn.

use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, Ordering};

thread_local! {
    /// This thread's changes since its last [`flush`].
    static DELTA: Cell<isize> = const { Cell::new(0) };
    /// The broker-wide total as of this thread's last [`flush`].
    static SEEN: Cell<isize> = const { Cell::new(0) };
}

/// A session now holds `bytes` more.
pub fn hold(bytes: usize) {
    DELTA.with(|d| d.set(d.get() + bytes as isize));
}

/// A session no longer holds `bytes` (delivered, dropped, or the session ended).
pub fn release(bytes: usize) {
    DELTA.with(|d| d.set(d.get() - bytes as isize));
}

/// Adds this thread's changes to the broker-wide `total` (once per loop turn).
pub fn flush(total: &AtomicIsize) {
    let delta = DELTA.with(|d| d.replace(0));
    let now = if delta == 0 {
        total.load(Ordering::Relaxed)
    } else {
        total.fetch_add(delta, Ordering::Relaxed) + delta
    };
    SEEN.with(|s| s.set(now));
}

/// True when `limit` (bytes; 0 = none) is reached, as this thread sees the total.
pub fn full(limit: usize) -> bool {
    limit != 0 && SEEN.with(|s| s.get()) + DELTA.with(|d| d.get()) >= limit as isize
}

/// The total as this thread sees it (tests, logs).
pub fn seen() -> isize {
    SEEN.with(|s| s.get()) + DELTA.with(|d| d.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_total_is_this_threads_changes_plus_the_others_as_of_the_last_flush() {
        let total = AtomicIsize::new(0);
        flush(&total);
        hold(600);
        assert!(!full(1000));
        assert!(full(600), "this thread's own changes count at once");
        assert!(!full(0), "0: no limit");
        // Another shard's bytes are seen at the next flush.
        std::thread::scope(|s| {
            s.spawn(|| {
                hold(500);
                flush(&total);
            });
        });
        assert!(!full(1000));
        flush(&total);
        assert_eq!(total.load(Ordering::Relaxed), 1100);
        assert!(full(1000));
        release(600);
        assert!(!full(1000));
        flush(&total);
        assert_eq!(seen(), 500);
    }
}
