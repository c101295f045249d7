//! Many `send`s in one system call (io_uring backend): the end of a loop turn that has
//! output for several plain-TCP connections submits one `IORING_OP_SEND` per connection
//! and enters the kernel once, where epoll's loop makes one `send` each (a fan-out to 100
//! subscribers on one shard: one call instead of 100).
//!
//! The sends are synchronous for the caller: `MSG_DONTWAIT` makes each complete at once
//! (written, partly written, or `EAGAIN`; never parked in the kernel), and
//! [`SendBatch::send`] returns only after every completion is reaped, so the buffers it was
//! lent are the kernel's only while it runs.
//!
//! Each thread that runs shard turns (its own, or a sleeping peer's handed off to it) has
//! its own small ring, made on first use.

use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;

use io_uring::{opcode, types, IoUring};

/// Sends per submission: a larger batch is submitted in parts.
const RING_ENTRIES: u32 = 256;

thread_local! {
    /// This thread's ring; `Err` once making it failed or it broke (never tried again).
    static RING: RefCell<Option<Result<IoUring, ()>>> = const { RefCell::new(None) };
}

/// One turn's sends, kept between turns so that the vectors are allocated once.
#[derive(Debug, Default)]
pub struct SendBatch {
    /// The caller's tag, the socket, the buffer's address (an integer: the batch moves
    /// between threads with its shard; the address is only used inside `send`), its length.
    sends: Vec<(usize, RawFd, usize, u32)>,
    /// Per send: bytes written.
    results: Vec<i32>,
}

impl SendBatch {
    /// Makes this thread's ring now rather than at the first batch (a loop calls it as it
    /// starts, so that its descriptors are all open before it serves anyone).
    pub fn prepare(&self) {
        RING.with(|cell| {
            cell.borrow_mut()
                .get_or_insert_with(|| IoUring::new(RING_ENTRIES).map_err(|_| ()));
        });
    }

    pub fn clear(&mut self) {
        self.sends.clear();
        self.results.clear();
    }

    pub fn len(&self) -> usize {
        self.sends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sends.is_empty()
    }

    /// Adds a send of `bytes` (at most 4 GiB of them) to `fd`, named `tag` in the results.
    pub fn push(&mut self, tag: usize, fd: RawFd, bytes: &[u8]) {
        let len = bytes.len().min(u32::MAX as usize) as u32;
        self.sends.push((tag, fd, bytes.as_ptr() as usize, len));
    }

    /// Offers every send to its socket. Returns each send's tag and the bytes written (0
    /// when nothing was: the socket is full, or an error, which the caller's next write
    /// meets again); `None` when this thread has no ring (nothing was sent).
    ///
    /// # Safety
    /// Every buffer pushed since `clear` must be alive and unchanged until this returns.
    pub unsafe fn send(&mut self) -> Option<impl Iterator<Item = (usize, usize)> + '_> {
        self.results.clear();
        self.results.resize(self.sends.len(), 0);
        let sent = RING.with(|cell| {
            let mut cell = cell.borrow_mut();
            let ring = cell.get_or_insert_with(|| IoUring::new(RING_ENTRIES).map_err(|_| ()));
            let Ok(r) = ring else {
                return false;
            };
            for (i, chunk) in self.sends.chunks(RING_ENTRIES as usize).enumerate() {
                let base = i * RING_ENTRIES as usize;
                if let Err(e) = submit_chunk(r, chunk, base, &mut self.results) {
                    // The ring itself failed (not a socket): it is dropped, with whatever
                    // it had not taken yet, and this thread writes as epoll's loop does.
                    log::error!("io_uring sends failed ({e}): writing with send(2) from now.");
                    *ring = Err(());
                    return true;
                }
            }
            true
        });
        let written = self.results.iter().map(|&n| n as usize);
        sent.then(|| self.sends.iter().map(|s| s.0).zip(written))
    }
}

/// Submits `chunk` (result indices from `base`) and waits for all of its completions: the
/// kernel must be done with every buffer before this returns. `Err`: the ring failed.
fn submit_chunk(
    ring: &mut IoUring,
    chunk: &[(usize, RawFd, usize, u32)],
    base: usize,
    results: &mut [i32],
) -> io::Result<()> {
    {
        let mut sq = ring.submission();
        for (i, &(_, fd, addr, len)) in chunk.iter().enumerate() {
            let entry = opcode::Send::new(types::Fd(fd), addr as *const u8, len)
                .flags(libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
                .build()
                .user_data((base + i) as u64);
            // SAFETY: the caller keeps the buffer alive and unchanged until every completion
            // is reaped below. The queue has room: it is empty between calls and the chunk
            // is at most its size.
            if unsafe { sq.push(&entry) }.is_err() {
                return Err(io::Error::other("submission queue full"));
            }
        }
    }
    let mut left = chunk.len();
    while left > 0 {
        match ring.submit_and_wait(left) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
                ) => {}
            Err(e) => return Err(e),
        }
        for cqe in ring.completion() {
            // Errors (EAGAIN, EPIPE, ...) count as nothing written: the caller's `write`
            // meets them again and handles them as always.
            results[cqe.user_data() as usize] = cqe.result().max(0);
            left = left.saturating_sub(1);
        }
    }
    Ok(())
}
