//! Time for the whole run, and the stamp carried in every PUBLISH payload.
//!
//! All threads of one loadgen process share a single monotonic epoch (CLOCK_MONOTONIC read
//! through `clock_gettime`, the same clock `timerfd` uses, so timer deadlines and stamps are
//! comparable). A payload carries the message's *intended* send time relative to that epoch,
//! not the time it was actually written: a receiver computes latency from the intended time,
//! so a publisher that was held back by a stalled broker (full window, full socket) does not
//! hide the stall (no coordinated omission).

use std::sync::OnceLock;

/// Nanoseconds of CLOCK_MONOTONIC (absolute, not relative to the epoch).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the pointer we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

static EPOCH: OnceLock<u64> = OnceLock::new();

/// The process-wide epoch in absolute monotonic nanoseconds, fixed on first use.
pub fn epoch_abs_ns() -> u64 {
    *EPOCH.get_or_init(monotonic_ns)
}

/// Nanoseconds since the process-wide epoch.
pub fn now_ns() -> u64 {
    monotonic_ns().saturating_sub(epoch_abs_ns())
}

/// Converts epoch-relative nanoseconds to absolute monotonic nanoseconds (for `timerfd`).
pub fn to_abs_ns(rel: u64) -> u64 {
    epoch_abs_ns() + rel
}

/// Nanoseconds per second.
pub const NS_PER_SEC: u64 = 1_000_000_000;

/// Size of [`Stamp`] on the wire; the smallest payload loadgen can send.
pub const STAMP_LEN: usize = 16;

/// What a measured PUBLISH payload starts with: enough for the receiver to compute latency
/// and to detect loss and duplicates per (publisher, sequence).
///
/// Wire layout (little endian): `seq: u32`, `publisher: u32`, `intended_ns: u64`; the rest of
/// the payload is filler up to the configured size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Per-publisher sequence number, from 0.
    pub seq: u32,
    /// Index of the publisher in the plan.
    pub publisher: u32,
    /// Intended send time, nanoseconds since the run's epoch.
    pub intended_ns: u64,
}

impl Stamp {
    /// Writes the stamp into the first [`STAMP_LEN`] bytes of `out`.
    ///
    /// Panics if `out` is shorter than [`STAMP_LEN`] (payload sizes are validated up front).
    pub fn write(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.seq.to_le_bytes());
        out[4..8].copy_from_slice(&self.publisher.to_le_bytes());
        out[8..16].copy_from_slice(&self.intended_ns.to_le_bytes());
    }

    /// Reads a stamp; `None` when the payload is too short to be one of ours.
    pub fn read(payload: &[u8]) -> Option<Stamp> {
        if payload.len() < STAMP_LEN {
            return None;
        }
        Some(Stamp {
            seq: u32::from_le_bytes(payload[0..4].try_into().ok()?),
            publisher: u32::from_le_bytes(payload[4..8].try_into().ok()?),
            intended_ns: u64::from_le_bytes(payload[8..16].try_into().ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips_through_a_payload() {
        let s = Stamp {
            seq: 0xdead_beef,
            publisher: 7,
            intended_ns: 123_456_789_012,
        };
        let mut buf = vec![0u8; 64];
        s.write(&mut buf);
        assert_eq!(Stamp::read(&buf), Some(s));
        assert_eq!(Stamp::read(&buf[..STAMP_LEN - 1]), None);
    }

    #[test]
    fn epoch_relative_time_is_monotonic() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a);
        assert!(to_abs_ns(a) >= epoch_abs_ns());
    }
}
