//! The provided-buffer ring multishot receives take their buffers from
//! (`IORING_REGISTER_PBUF_RING`, kernel 5.19): [`BUFFERS`] buffers of [`BUFFER_SIZE`] bytes
//! each, lent to the kernel, filled by a receive, handed to the loop with its completion,
//! and given back at the loop's next wait (the loop is done with every event by then).

use std::io;

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

/// The buffer group the receives name.
pub(super) const GROUP: u16 = 0;
/// Buffers in the ring (a power of two). With [`BUFFER_SIZE`], 2 MiB a shard, touched only
/// as data arrives.
const BUFFERS: u16 = 512;
/// One receive's most bytes: the pooled read buffer's size. A larger burst is several
/// completions.
pub(super) const BUFFER_SIZE: usize = 4096;

pub(super) struct BufRing {
    /// The ring of entries the kernel reads buffers from (page-aligned, its own mapping).
    entries: *mut BufRingEntry,
    /// The buffers, `BUFFERS` x `BUFFER_SIZE`.
    memory: Box<[u8]>,
    /// Our tail: entries before it are the kernel's.
    tail: u16,
    /// Buffers the last wait's completions handed out, to give back at the next.
    lent: Vec<u16>,
}

// SAFETY: the mapping is owned by this value alone; the loop thread that owns the ring uses it.
unsafe impl Send for BufRing {}

impl BufRing {
    /// Maps and registers the ring with `ring`, every buffer lent to the kernel.
    pub(super) fn new(ring: &IoUring) -> io::Result<BufRing> {
        let bytes = usize::from(BUFFERS) * std::mem::size_of::<BufRingEntry>();
        // SAFETY: a fresh anonymous private mapping; checked below.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut buffers = BufRing {
            entries: addr.cast(),
            memory: vec![0u8; usize::from(BUFFERS) * BUFFER_SIZE].into_boxed_slice(),
            tail: 0,
            lent: Vec::with_capacity(usize::from(BUFFERS)),
        };
        // SAFETY: the mapping stays until `Drop`, which unregisters it first.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(addr as u64, BUFFERS, GROUP, 0)
        }?;
        for bid in 0..BUFFERS {
            buffers.push(bid);
        }
        buffers.publish();
        Ok(buffers)
    }

    fn push(&mut self, bid: u16) {
        let slot = usize::from(self.tail & (BUFFERS - 1));
        let start = usize::from(bid) * BUFFER_SIZE;
        // SAFETY: `slot` < BUFFERS, inside the mapping; the kernel does not read entries
        // past the published tail.
        let entry = unsafe { &mut *self.entries.add(slot) };
        entry.set_addr(self.memory[start..].as_ptr() as u64);
        entry.set_len(BUFFER_SIZE as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the pushed entries the kernel's.
    fn publish(&mut self) {
        // SAFETY: the tail field of the ring's first entry; a release store orders the
        // entries written before it.
        unsafe {
            let tail = BufRingEntry::tail(self.entries).cast_mut();
            std::sync::atomic::AtomicU16::from_ptr(tail)
                .store(self.tail, std::sync::atomic::Ordering::Release);
        }
    }

    /// Records buffer `bid` as handed to the loop with a completion, returning its first
    /// `len` bytes (which stay untouched until [`BufRing::give_back`]).
    pub(super) fn take(&mut self, bid: u16, len: usize) -> (usize, u32) {
        self.lent.push(bid);
        let start = usize::from(bid) * BUFFER_SIZE;
        let len = len.min(BUFFER_SIZE);
        (self.memory[start..].as_ptr() as usize, len as u32)
    }

    /// Gives every buffer the loop was handed back to the kernel: at the next wait.
    pub(super) fn give_back(&mut self) {
        if self.lent.is_empty() {
            return;
        }
        for i in 0..self.lent.len() {
            let bid = self.lent[i];
            self.push(bid);
        }
        self.lent.clear();
        self.publish();
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        let bytes = usize::from(BUFFERS) * std::mem::size_of::<BufRingEntry>();
        // SAFETY: our mapping. The ring that used it is closed before (`Ring` drops its
        // `IoUring` first), so the kernel no longer reads it.
        unsafe { libc::munmap(self.entries.cast(), bytes) };
    }
}
