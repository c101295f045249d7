//! How much room one connection's read buffer is given, adapted to what it reads.

use super::pool::{BufferPool, BUFFER_SIZE, MAX_READ_SIZE, MIN_READ, SHRINK_AFTER_TICKS};

/// The read size of one connection: how much room its read buffer is given. 8 bytes in every
/// connection.
///
/// It starts at [`BUFFER_SIZE`] and doubles (up to [`MAX_READ_SIZE`], within the shard's
/// growth limit) only when a read filled the buffer *and* more than a whole buffer arrived in
/// that readiness event: the socket held more than the buffer, so a larger one saves reads.
/// Filling the tail of a partly used buffer is not a reason to grow. A connection whose reads
/// have not filled its buffer for [`SHRINK_AFTER_TICKS`] ticks goes back to [`BUFFER_SIZE`]
/// and gives up a large empty buffer.
///
/// Why: a busy connection used to grow to 64 KiB at its first few reads and keep
/// it, so 1000 point-to-point publishers that never had more than a kilobyte waiting cost
/// 64 MiB of read buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadTarget {
    size: u32,
    /// Ticks since a read last filled the buffer (saturating).
    quiet_ticks: u8,
}

impl Default for ReadTarget {
    fn default() -> ReadTarget {
        ReadTarget {
            size: BUFFER_SIZE as u32,
            quiet_ticks: 0,
        }
    }
}

impl ReadTarget {
    /// The room a read buffer is given when it needs more.
    pub fn size(&self) -> usize {
        self.size as usize
    }

    /// Bytes above [`BUFFER_SIZE`] (what counts against the shard's growth limit).
    pub fn growth(&self) -> usize {
        self.size() - BUFFER_SIZE
    }

    /// After a read that filled the room it was given: `in_event` is what the connection read
    /// in this readiness event so far. Grows when that exceeds a whole buffer and `pool`'s
    /// growth limit allows it.
    pub fn filled(&mut self, in_event: usize, pool: &mut BufferPool) {
        self.quiet_ticks = 0;
        let size = self.size();
        if in_event >= size && size < MAX_READ_SIZE && pool.growth + size <= pool.growth_limit {
            pool.growth += size;
            self.size = (size * 2) as u32;
        }
    }

    /// A tick went by. Returns true when the read size fell back to [`BUFFER_SIZE`] (the
    /// caller lets go of a large empty buffer then).
    pub fn tick(&mut self) -> bool {
        self.quiet_ticks = self.quiet_ticks.saturating_add(1);
        if self.size() > BUFFER_SIZE && self.quiet_ticks >= SHRINK_AFTER_TICKS {
            *self = ReadTarget::default();
            return true;
        }
        false
    }

    /// Back to [`BUFFER_SIZE`] (an idle connection).
    pub fn reset(&mut self) {
        *self = ReadTarget::default();
    }

    /// How much room to ask [`BufferPool::make_room`] for when a buffer holding `len`
    /// unparsed bytes has too little: up to the read size, or, for a packet as large as
    /// that, double what it has (a large packet still arriving takes few reads).
    pub fn room_for(&self, len: usize) -> usize {
        let size = self.size();
        if len + MIN_READ <= size {
            size - len
        } else {
            len.clamp(BUFFER_SIZE, MAX_READ_SIZE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What one connection's readiness event does to its read size: `reads` are the sizes of
    /// the reads, each into `offered` bytes of room.
    fn event(t: &mut ReadTarget, pool: &mut BufferPool, reads: &[(usize, usize)]) {
        let mut in_event = 0;
        for &(n, offered) in reads {
            in_event += n;
            if n == offered {
                t.filled(in_event, pool);
            }
        }
    }

    #[test]
    fn the_read_size_grows_only_when_a_read_filled_a_whole_buffer() {
        let mut pool = BufferPool::new();
        let mut t = ReadTarget::default();
        // A small batch, then the tail of the buffer filled by the next one: no growth.
        event(&mut t, &mut pool, &[(1200, 4096)]);
        event(&mut t, &mut pool, &[(2896, 2896), (300, 4096)]);
        assert_eq!(t.size(), BUFFER_SIZE, "filling a tail is no reason to grow");
        // More than a whole buffer was waiting: it doubles, up to the maximum.
        event(&mut t, &mut pool, &[(4096, 4096), (1000, 4096)]);
        assert_eq!(t.size(), 2 * BUFFER_SIZE);
        for _ in 0..10 {
            let size = t.size();
            event(&mut t, &mut pool, &[(size, size), (size, size)]);
        }
        assert_eq!(t.size(), MAX_READ_SIZE);
        assert_eq!(pool.growth(), MAX_READ_SIZE - BUFFER_SIZE);
        assert_eq!(t.growth(), pool.growth());
    }

    #[test]
    fn the_read_size_falls_back_after_ticks_without_a_full_read() {
        let mut pool = BufferPool::new();
        let mut t = ReadTarget::default();
        event(&mut t, &mut pool, &[(4096, 4096), (8192, 8192)]);
        assert_eq!(t.size(), 4 * BUFFER_SIZE);
        for _ in 1..SHRINK_AFTER_TICKS {
            assert!(!t.tick());
        }
        // A full read restarts the count.
        event(&mut t, &mut pool, &[(500, 500)]);
        for _ in 1..SHRINK_AFTER_TICKS {
            assert!(!t.tick());
        }
        assert_eq!(t.size(), 4 * BUFFER_SIZE, "still busy enough");
        assert!(t.tick(), "quiet for SHRINK_AFTER_TICKS ticks");
        assert_eq!(t.size(), BUFFER_SIZE);
        assert_eq!(t.growth(), 0);
        assert!(!t.tick(), "nothing left to shrink");
    }

    #[test]
    fn read_size_growth_is_bounded_per_shard() {
        let mut pool = BufferPool::new();
        pool.set_growth_limit(3 * BUFFER_SIZE);
        let (mut a, mut b) = (ReadTarget::default(), ReadTarget::default());
        event(&mut a, &mut pool, &[(4096, 4096)]);
        event(&mut a, &mut pool, &[(8192, 8192)]);
        assert_eq!(
            (a.size(), pool.growth()),
            (4 * BUFFER_SIZE, 3 * BUFFER_SIZE)
        );
        event(&mut b, &mut pool, &[(4096, 4096)]);
        assert_eq!(b.size(), BUFFER_SIZE, "the shard's limit is reached");
        // The tick recounts: `a` fell back, so `b` may grow.
        for _ in 0..SHRINK_AFTER_TICKS {
            a.tick();
        }
        pool.set_growth(a.growth() + b.growth());
        event(&mut b, &mut pool, &[(4096, 4096)]);
        assert_eq!(b.size(), 2 * BUFFER_SIZE);
        let mut none = BufferPool::new();
        none.set_growth_limit(0);
        let mut c = ReadTarget::default();
        event(&mut c, &mut none, &[(4096, 4096)]);
        assert_eq!(c.size(), BUFFER_SIZE, "a limit of 0: never grows");
    }

    #[test]
    fn room_is_the_read_size_or_double_for_a_large_packet() {
        let t = ReadTarget::default();
        assert_eq!(t.room_for(0), BUFFER_SIZE);
        assert_eq!(t.room_for(1000), BUFFER_SIZE - 1000);
        assert_eq!(t.room_for(BUFFER_SIZE - 10), BUFFER_SIZE);
        assert_eq!(t.room_for(20_000), 20_000);
        assert_eq!(t.room_for(1 << 20), MAX_READ_SIZE);
    }
}
