//! The shard's pool of connection buffers.
//!
//! A connection holds a read buffer only while it has unparsed input and a write buffer only
//! while it has unsent output; otherwise its buffers come back here (with two 4 KiB
//! buffers per connection kept while idle, 10k idle connections cost midge 163 MiB against
//! mosquitto's 17 MiB). Busy connections take a buffer and give it back in the same loop turn,
//! so a handful of pooled buffers serve any number of idle connections.
//!
//! Reusing a read buffer whose bytes were split off into payload `Bytes` (still shared with
//! subscribers or queued in sessions) is safe: a `BytesMut` only ever writes into capacity
//! that no `Bytes` can see, and `reserve` allocates anew rather than overwrite a region that is
//! still shared. What pooling such a buffer could cost is memory, not correctness: it keeps the
//! whole allocation alive. So a buffer is pooled only if it can take a full [`BUFFER_SIZE`]
//! without allocating (its storage is unique again, or its free tail is that large anyway) and
//! it is no larger than [`MAX_POOLED`]; anything else is dropped and its storage is freed with
//! the last payload that points into it.
//!
//! A read buffer that still has a partial packet in it but no room left, and that payloads
//! still slice, cannot be reused in place: the connection moves its partial packet to a fresh
//! buffer ([`BufferPool::make_room`]) and the old one is *retired*: kept, in a bounded FIFO,
//! until its payloads are gone, then taken again like a pooled one. Without that, a publisher
//! whose messages are in flight (QoS 1 awaiting acknowledgements) would allocate a new buffer
//! every [`BUFFER_SIZE`] bytes, since [`ReadTarget`] no longer grows the buffer just to
//! amortise allocations.
//!
//! How large a connection's read buffer gets is [`ReadTarget`]'s decision; the sum of what
//! connections have grown is bounded per shard ([`BufferPool::set_growth_limit`]).
//!
//! Owned by one shard; shard thread only.

use std::collections::VecDeque;

use bytes::BytesMut;

pub use super::read_target::ReadTarget;

/// Capacity of a new buffer. Most MQTT packets are far smaller; a larger packet grows the
/// buffer of the connection that needs it.
pub const BUFFER_SIZE: usize = 4096;
/// Buffers larger than this are dropped rather than pooled, so a burst that grew one does not
/// pin its memory for idle connections to inherit.
pub const MAX_POOLED: usize = 64 * 1024;
/// Bytes of empty buffers a shard's pool may hold: 1024 buffers of [`BUFFER_SIZE`]. A turn
/// that writes to more connections than the pool holds allocates the difference; the pool
/// keeps what comes back, up to this bound, so the next such turn allocates nothing.
///
/// Why adaptive and not a fixed 64 buffers: 1000 point-to-point pairs write to a
/// few hundred subscribers per turn, and with 64 pooled buffers the rest were allocated and
/// freed every turn, which also made glibc trim and refault its heap: 5% of the broker's
/// samples (malloc, free, `sysmalloc`, page faults) in that profile.
pub const MAX_POOLED_BYTES: usize = 1024 * BUFFER_SIZE;
/// Buffers the pool keeps however quiet the shard is (see [`BufferPool::trim`]).
pub const MIN_KEPT: usize = 64;
/// Retired read buffers kept for reuse (see the module documentation). Enough for the pinned
/// buffers of a shard's publishers in a steady QoS 1 flow (about one per 4 KiB of messages
/// awaiting acknowledgement); when full, the oldest is let go: its storage is freed with its
/// last payload (a retained message can pin one for good, so nothing waits on it forever).
/// The buffers it holds would be alive anyway (payloads point into them); it only delays
/// freeing the ones it did not get to reuse by as long as they stay in it.
pub const MAX_RETIRING: usize = 256;
/// A read is not attempted into less room than this: a fuller buffer gets more room first
/// ([`BufferPool::make_room`]). Below a typical batch of small packets, so that reading into
/// the tail of a buffer costs at most one extra `read` per buffer, not per message.
pub const MIN_READ: usize = 1024;
/// The largest read size a connection grows to ([`ReadTarget`]).
pub const MAX_READ_SIZE: usize = 64 * 1024;
/// Read-buffer growth allowed per shard by default (`Σ (target - BUFFER_SIZE)` over its
/// connections): 64 connections at [`MAX_READ_SIZE`]. See `Config::read_buffer_growth`.
pub const DEFAULT_GROWTH_LIMIT: usize = 4 * 1024 * 1024;
/// A grown read size falls back to [`BUFFER_SIZE`] after this many ticks (250 ms each)
/// without a read that filled the buffer.
pub const SHRINK_AFTER_TICKS: u8 = 4;

/// A bounded free list of empty buffers. Shard thread only.
#[derive(Debug)]
pub struct BufferPool {
    free: Vec<BytesMut>,
    /// Capacity of the buffers in `free` (bounded by [`MAX_POOLED_BYTES`]).
    free_bytes: usize,
    /// The fewest buffers `free` held since the last [`BufferPool::trim`]: those were not
    /// needed during that time.
    low_water: usize,
    /// Read buffers given up while payloads still sliced them, oldest first.
    retiring: VecDeque<BytesMut>,
    /// Bytes by which this shard's connections' read sizes exceed [`BUFFER_SIZE`]: exact after
    /// each tick (`set_growth`), an over-estimate in between (shrinks and closes are only
    /// counted at the next tick), so the bound holds at all times.
    pub(super) growth: usize,
    pub(super) growth_limit: usize,
    /// Buffers allocated because the pool was empty (for tests and, later, `$SYS`).
    pub allocated: u64,
}

impl Default for BufferPool {
    fn default() -> BufferPool {
        BufferPool {
            free: Vec::new(),
            free_bytes: 0,
            low_water: 0,
            retiring: VecDeque::new(),
            growth: 0,
            growth_limit: DEFAULT_GROWTH_LIMIT,
            allocated: 0,
        }
    }
}

impl BufferPool {
    /// An empty pool.
    pub fn new() -> BufferPool {
        BufferPool::default()
    }

    /// An empty buffer with room for at least [`BUFFER_SIZE`] bytes: a pooled one if there
    /// is one, a new one otherwise.
    pub fn take(&mut self) -> BytesMut {
        if let Some(buf) = self.free.pop() {
            self.free_bytes -= buf.capacity();
            self.low_water = self.low_water.min(self.free.len());
            return buf;
        }
        if let Some(buf) = self.reuse_retired(BUFFER_SIZE) {
            return buf;
        }
        self.allocated += 1;
        BytesMut::with_capacity(BUFFER_SIZE)
    }

    /// The oldest retired buffer, emptied, if no payload slices it any more and it has room
    /// for `room` bytes. Only the oldest is looked at (O(1)): buffers are retired in about the
    /// order their payloads are released.
    fn reuse_retired(&mut self, room: usize) -> Option<BytesMut> {
        if !self.retiring.front_mut()?.try_reclaim(room) {
            return None;
        }
        let buf = self.retiring.pop_front().expect("front exists");
        // One that grew past what the pool keeps is let go (freed here).
        (buf.capacity() <= MAX_POOLED).then_some(buf)
    }

    /// Makes room for `additional` more bytes in a connection's read buffer `buf` (which holds
    /// the start of a packet, or nothing). In place when the buffer is not shared; otherwise
    /// its bytes move to a pooled buffer and the old one is retired (see the module
    /// documentation); a new allocation only when neither serves.
    pub fn make_room(&mut self, buf: &mut BytesMut, additional: usize) {
        if buf.try_reclaim(additional) {
            return;
        }
        // Up to the largest read size, a power of two: the retired buffer of a size class then
        // serves every later request of that class. At exact sizes, received chunks of
        // varying length (io_uring delivers what arrived, up to 64 KiB at once) each missed
        // the retired buffer and allocated (`tests/alloc.rs` on io_uring).
        let needed = match buf.len() + additional {
            n if n <= MAX_READ_SIZE => n.next_power_of_two(),
            n => n,
        };
        // A grown read size reuses a retired buffer of its size: without that, a bulk
        // publisher allocated a fresh 64 KiB buffer per read and retired the old one, and
        // up to MAX_RETIRING of them sat in the queue after their payloads were gone
        // (`tests/backpressure.rs`: the broker's RSS grew 38 MiB, 16 MiB of it such buffers).
        let mut fresh = if needed <= BUFFER_SIZE {
            self.take()
        } else {
            self.reuse_retired(needed).unwrap_or_default()
        };
        if fresh.capacity() < needed {
            if fresh.capacity() > 0 {
                self.give(&mut fresh);
            }
            // A grown read size or a large packet: one allocation of the size wanted.
            self.allocated += 1;
            fresh = BytesMut::with_capacity(needed);
        }
        fresh.extend_from_slice(buf);
        let mut old = std::mem::replace(buf, fresh);
        old.clear();
        self.retire(old);
    }

    /// Keeps `buf`, which payloads may still slice, until it can be reused (see
    /// [`MAX_RETIRING`]).
    fn retire(&mut self, buf: BytesMut) {
        if buf.capacity() > MAX_POOLED {
            return;
        }
        if self.retiring.len() == MAX_RETIRING {
            self.retiring.pop_front();
        }
        self.retiring.push_back(buf);
    }

    /// Bounds the growth of this shard's read buffers (see [`ReadTarget`]).
    pub fn set_growth_limit(&mut self, bytes: usize) {
        self.growth_limit = bytes;
    }

    /// The exact growth of this shard's read sizes, recounted at each tick.
    pub fn set_growth(&mut self, bytes: usize) {
        self.growth = bytes;
    }

    /// Bytes of read-size growth counted against the limit.
    pub fn growth(&self) -> usize {
        self.growth
    }

    /// Read buffers retired and not reused yet.
    pub fn retiring(&self) -> usize {
        self.retiring.len()
    }

    /// Makes sure `buf` has a buffer to write into (a connection's buffer is an unallocated
    /// `BytesMut::new()` while it is idle).
    pub fn ensure(&mut self, buf: &mut BytesMut) {
        if buf.capacity() == 0 {
            *buf = self.take();
        }
    }

    /// Takes back a buffer that is no longer needed: `buf` is left unallocated. Its contents
    /// are discarded; callers give back buffers that are empty (or whose connection is gone).
    pub fn give(&mut self, buf: &mut BytesMut) {
        if buf.capacity() == 0 {
            return;
        }
        let mut buf = std::mem::take(buf);
        buf.clear();
        // Reclaimed first: that may give back capacity, which is what the bounds count.
        if buf.try_reclaim(BUFFER_SIZE)
            && buf.capacity() <= MAX_POOLED
            && self.free_bytes + buf.capacity() <= MAX_POOLED_BYTES
        {
            self.free_bytes += buf.capacity();
            self.free.push(buf);
        }
    }

    /// Called once per shard tick: half of the buffers that stayed in the pool since the last
    /// call are freed, down to [`MIN_KEPT`]. A shard that needed 1000 buffers per turn keeps
    /// them while it does; after the burst the pool shrinks geometrically (four ticks, about
    /// a second, from 1024 buffers to 64), so idle connections do not pay for it.
    pub fn trim(&mut self) {
        let unused = self.low_water.min(self.free.len());
        let release = (unused / 2).min(self.free.len().saturating_sub(MIN_KEPT));
        for buf in self.free.drain(self.free.len() - release..) {
            self.free_bytes -= buf.capacity();
        }
        self.low_water = self.free.len();
    }

    /// Bytes of capacity the pooled buffers hold.
    pub fn pooled_bytes(&self) -> usize {
        self.free_bytes
    }

    /// Give back `buf` if it is empty (nothing unparsed or unsent is left in it).
    pub fn give_if_empty(&mut self, buf: &mut BytesMut) {
        if buf.is_empty() {
            self.give(buf);
        }
    }

    /// Buffers waiting in the pool.
    pub fn len(&self) -> usize {
        self.free.len()
    }

    /// True when no buffer waits in the pool.
    pub fn is_empty(&self) -> bool {
        self.free.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    #[test]
    fn a_returned_buffer_is_reused_instead_of_allocating() {
        let mut pool = BufferPool::new();
        let mut conn_buf = BytesMut::new();
        pool.ensure(&mut conn_buf);
        assert_eq!(pool.allocated, 1);
        conn_buf.put_slice(b"hello");
        let _ = conn_buf.split_to(5);
        pool.give_if_empty(&mut conn_buf);
        assert_eq!(conn_buf.capacity(), 0, "the connection holds nothing");
        assert_eq!(pool.len(), 1);
        let mut other = BytesMut::new();
        pool.ensure(&mut other);
        assert_eq!(pool.allocated, 1, "no new allocation");
        assert!(other.capacity() >= BUFFER_SIZE && other.is_empty());
    }

    #[test]
    fn a_buffer_with_unparsed_bytes_is_kept_by_its_connection() {
        let mut pool = BufferPool::new();
        let mut buf = pool.take();
        buf.put_slice(b"\x30\x05partial");
        pool.give_if_empty(&mut buf);
        assert_eq!(&buf[..], b"\x30\x05partial");
        assert!(pool.is_empty());
    }

    #[test]
    fn payloads_split_from_a_pooled_buffer_are_never_overwritten() {
        let mut pool = BufferPool::new();
        let mut buf = pool.take();
        buf.put_slice(&[0xAA; BUFFER_SIZE]);
        // A payload shared with subscribers, alive while the buffer goes round the pool.
        let payload = buf.split_to(BUFFER_SIZE).freeze();
        pool.give(&mut buf);
        for _ in 0..4 {
            let mut again = pool.take();
            again.put_slice(&[0x55; BUFFER_SIZE]);
            let _ = again.split();
            pool.give(&mut again);
        }
        assert!(payload.iter().all(|&b| b == 0xAA), "payload intact");
    }

    #[test]
    fn the_pool_is_bounded_and_drops_large_buffers() {
        let mut pool = BufferPool::new();
        let mut big = BytesMut::with_capacity(MAX_POOLED * 2);
        pool.give(&mut big);
        assert!(pool.is_empty(), "a burst-sized buffer is not kept");
        for _ in 0..MAX_POOLED_BYTES / BUFFER_SIZE * 2 {
            let mut b = BytesMut::with_capacity(BUFFER_SIZE);
            pool.give(&mut b);
        }
        assert!(pool.pooled_bytes() <= MAX_POOLED_BYTES);
        assert!(
            pool.pooled_bytes() > MAX_POOLED_BYTES - BUFFER_SIZE,
            "filled to the bound"
        );
    }

    /// A turn's worth of buffers taken and given back, `n` at once.
    fn turn(pool: &mut BufferPool, n: usize) {
        let mut held: Vec<BytesMut> = (0..n).map(|_| pool.take()).collect();
        for b in &mut held {
            pool.give(b);
        }
    }

    #[test]
    fn a_busy_shard_keeps_what_a_turn_needs_and_a_quiet_one_lets_it_go() {
        let mut pool = BufferPool::new();
        turn(&mut pool, 500);
        assert_eq!(pool.allocated, 500);
        // Busy: every tick sees turns that take all 500 again, so nothing is trimmed and
        // nothing more is allocated.
        for _ in 0..10 {
            turn(&mut pool, 500);
            pool.trim();
        }
        assert_eq!(pool.allocated, 500, "later turns reuse the pooled buffers");
        assert_eq!(pool.len(), 500);
        // Quiet: half of what went unused is freed at each tick, down to MIN_KEPT.
        pool.trim();
        assert_eq!(pool.len(), 250);
        for _ in 0..20 {
            pool.trim();
        }
        assert_eq!(pool.len(), MIN_KEPT);
        assert_eq!(pool.pooled_bytes(), MIN_KEPT * BUFFER_SIZE);
        // A smaller steady load keeps what it uses (here 100 of 300).
        turn(&mut pool, 300);
        pool.trim();
        for _ in 0..20 {
            turn(&mut pool, 100);
            pool.trim();
        }
        assert!(pool.len() >= 100, "{} pooled", pool.len());
        assert!(pool.len() < 110, "{} pooled", pool.len());
    }

    #[test]
    fn a_buffer_still_sliced_by_payloads_is_retired_then_reused_without_allocating() {
        let mut pool = BufferPool::new();
        let mut conn_buf = BytesMut::new();
        pool.ensure(&mut conn_buf);
        conn_buf.put_slice(&[0xAA; 3500]);
        conn_buf.put_slice(&[0xBB; 100]); // the start of the next packet
        let payload = conn_buf.split_to(3500).freeze(); // in flight
        let room = ReadTarget::default().room_for(conn_buf.len());
        pool.make_room(&mut conn_buf, room);
        assert_eq!(&conn_buf[..], &[0xBB; 100][..], "the partial packet moved");
        assert!(conn_buf.capacity() - conn_buf.len() >= room);
        assert_eq!((pool.allocated, pool.retiring()), (2, 1));
        // While the payload lives, the retired buffer is not handed out.
        let mut other = pool.take();
        assert_eq!(pool.allocated, 3);
        pool.give(&mut other);
        let _ = pool.take();
        drop(payload);
        let again = pool.take();
        assert_eq!(pool.allocated, 3, "the retired buffer was reused");
        assert!(again.capacity() >= BUFFER_SIZE && again.is_empty());
        assert_eq!(pool.retiring(), 0);
    }

    #[test]
    fn a_buffer_not_shared_makes_room_in_place() {
        let mut pool = BufferPool::new();
        let mut conn_buf = pool.take();
        conn_buf.put_slice(&[1; 4000]);
        let _ = conn_buf.split_to(3900); // parsed and dropped
        pool.make_room(&mut conn_buf, BUFFER_SIZE - 100);
        assert_eq!((pool.allocated, pool.retiring()), (1, 0));
        assert_eq!(conn_buf.len(), 100);
    }

    #[test]
    fn a_grown_read_buffer_reuses_a_retired_one_of_its_size() {
        let mut pool = BufferPool::new();
        let size = MAX_READ_SIZE;
        let mut conn_buf = BytesMut::with_capacity(size);
        for round in 0..10 {
            // A read fills the buffer with whole packets and the start of the next one; the
            // packets' payloads are routed (alive) while the partial packet moves.
            conn_buf.put_slice(&vec![round as u8; size - 100]);
            let payloads = conn_buf.split_to(size - 200).freeze();
            pool.make_room(&mut conn_buf, size - 100);
            assert_eq!(conn_buf.len(), 100, "the partial packet moved");
            assert!(conn_buf.capacity() >= size - 100);
            // Delivered: nothing slices the retired buffer any more.
            drop(payloads);
            conn_buf.clear();
        }
        // The first move allocated (the one retired buffer was still sliced then); every later
        // one took the buffer retired before it.
        assert_eq!(pool.allocated, 1);
        assert!(
            pool.retiring() <= 1,
            "{} retired buffers kept",
            pool.retiring()
        );
    }

    #[test]
    fn grown_read_buffers_of_varying_sizes_reuse_the_retired_one_of_their_class() {
        // io_uring hands over what arrived: each chunk a different size. Room is made in
        // power-of-two classes, so the buffer retired after one chunk serves a later one.
        let mut pool = BufferPool::new();
        let mut conn_buf = BytesMut::with_capacity(32 * 1024);
        let mut held = Vec::new();
        for (round, chunk) in [20_000usize, 30_000, 17_000, 31_000, 25_000, 29_000]
            .into_iter()
            .enumerate()
        {
            pool.make_room(&mut conn_buf, chunk);
            assert!(conn_buf.capacity() >= chunk);
            conn_buf.put_slice(&vec![round as u8; chunk]);
            // The chunk's payloads are routed, alive until the next chunk has arrived.
            held.push(conn_buf.split().freeze());
            if held.len() > 1 {
                held.remove(0);
            }
        }
        // The second chunk found the buffer still sliced and allocated; from then on two
        // buffers take turns. At exact sizes a 30,000-byte buffer could not take 31,000.
        assert_eq!(pool.allocated, 1, "{} allocations", pool.allocated);
    }

    #[test]
    fn retired_buffers_are_bounded() {
        let mut pool = BufferPool::new();
        let mut payloads = Vec::new();
        for _ in 0..MAX_RETIRING + 10 {
            let mut buf = BytesMut::with_capacity(BUFFER_SIZE);
            buf.put_slice(&[7; BUFFER_SIZE]);
            payloads.push(buf.split_to(BUFFER_SIZE - 1).freeze());
            pool.make_room(&mut buf, BUFFER_SIZE - 1);
        }
        assert_eq!(pool.retiring(), MAX_RETIRING);
    }
}
