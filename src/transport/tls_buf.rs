//! Byte buffers for TLS records and plaintext, pooled per thread.
//!
//! rustls' buffered connection keeps a 4 KiB receive buffer per connection for its whole life
//! and allocates a `Vec` for every record it encrypts. [`super::tls::TlsStream`] uses rustls'
//! unbuffered API instead and owns its buffers: a [`TlsBuf`] holds storage only while it holds
//! bytes (records received and not yet processed, records not yet sent, decrypted plaintext not
//! yet read) and gives it back to its thread's pool when it empties. An idle TLS connection then
//! holds no buffer at all, and a busy one reuses the same few buffers every turn, like the
//! shard's plaintext buffers (`shard::pool`).
//!
//! The pool is thread-local because a stream is used by one thread at a time (a shard, or a
//! handshake thread) and moves between threads whole: a buffer taken on one thread and given
//! back on another just changes pools. Each pool is bounded in bytes.

use std::cell::RefCell;

/// Capacity of a new buffer: one record of the largest size a peer may send (2^14 bytes of
/// plaintext, TLS 1.2's 2,048 bytes of expansion, the 5-byte header), so reading a full record
/// never needs to grow it.
pub const RECORD_BUF: usize = 16_384 + 2_048 + 5;
/// Buffers larger than this are freed rather than pooled (a large handshake message being
/// joined). An outgoing buffer grows to about 64 KiB under a burst (the stream's send limit), and
/// is pooled.
const MAX_POOLED: usize = 80 * 1024;
/// Bytes of buffers a thread's pool keeps.
const MAX_POOL_BYTES: usize = 2 * 1024 * 1024;

thread_local! {
    static POOL: RefCell<Pool> = const { RefCell::new(Pool { free: Vec::new(), bytes: 0 }) };
}

/// A thread's free buffers, each of [`RECORD_BUF`] to [`MAX_POOLED`] bytes.
struct Pool {
    free: Vec<Vec<u8>>,
    bytes: usize,
}

/// A queue of bytes: `data[start..end]` is held; `data` is fully initialised (rustls encrypts
/// into and decrypts from `&mut [u8]`) and is empty, unallocated, whenever nothing is held.
#[derive(Debug, Default)]
pub struct TlsBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl TlsBuf {
    /// Bytes held.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The bytes held.
    pub fn bytes(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    /// The bytes held, writable (rustls processes received records in place).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.data[self.start..self.end]
    }

    /// Drops `n` bytes from the front; the storage goes back to the pool when none are left.
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.len());
        self.start += n;
        if self.start == self.end {
            self.release();
        }
    }

    /// Room for at least `n` more bytes after the held ones; returns it. Moves the held bytes
    /// to the front, or to a larger buffer, when needed.
    pub fn room(&mut self, n: usize) -> &mut [u8] {
        if self.data.len() - self.end < n {
            let held = self.len();
            if self.data.len() >= held + n {
                self.data.copy_within(self.start..self.end, 0);
            } else {
                let mut bigger = take(held + n);
                bigger[..held].copy_from_slice(self.bytes());
                give(std::mem::replace(&mut self.data, bigger));
            }
            self.start = 0;
            self.end = held;
        }
        &mut self.data[self.end..]
    }

    /// Counts `n` bytes written into [`TlsBuf::room`] as held.
    pub fn commit(&mut self, n: usize) {
        debug_assert!(self.end + n <= self.data.len());
        self.end += n;
        if self.is_empty() {
            self.release();
        }
    }

    /// Appends `bytes`.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.room(bytes.len())[..bytes.len()].copy_from_slice(bytes);
        self.commit(bytes.len());
    }

    /// Copies held bytes into `out` and drops them; returns how many.
    pub fn read_into(&mut self, out: &mut [u8]) -> usize {
        let n = self.len().min(out.len());
        out[..n].copy_from_slice(&self.data[self.start..self.start + n]);
        self.consume(n);
        n
    }

    /// Bytes of storage held (for tests).
    pub fn capacity(&self) -> usize {
        self.data.len()
    }

    fn release(&mut self) {
        self.start = 0;
        self.end = 0;
        give(std::mem::take(&mut self.data));
    }
}

impl Drop for TlsBuf {
    fn drop(&mut self) {
        give(std::mem::take(&mut self.data));
    }
}

/// A zeroed buffer of at least `n` bytes, at least [`RECORD_BUF`]: the pool's last one if it is
/// large enough (the pool is not searched), a new one otherwise.
fn take(n: usize) -> Vec<u8> {
    let pooled = POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.free.last().is_some_and(|b| b.len() >= n) {
            let buf = p.free.pop().expect("last exists");
            p.bytes -= buf.len();
            Some(buf)
        } else {
            None
        }
    });
    pooled.unwrap_or_else(|| vec![0; n.max(RECORD_BUF)])
}

/// Pools `buf` if its size is one the pool keeps and the pool has room; frees it otherwise.
fn give(buf: Vec<u8>) {
    if !(RECORD_BUF..=MAX_POOLED).contains(&buf.len()) {
        return;
    }
    // `try_with`: a stream dropped while its thread exits has no pool to go back to.
    let _ = POOL.try_with(|p| {
        let mut p = p.borrow_mut();
        if p.bytes + buf.len() <= MAX_POOL_BYTES {
            p.bytes += buf.len();
            p.free.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_is_held_only_while_bytes_are() {
        let mut b = TlsBuf::default();
        assert_eq!(b.capacity(), 0);
        b.extend(b"hello");
        assert_eq!(b.bytes(), b"hello");
        assert_eq!(b.capacity(), RECORD_BUF);
        b.consume(2);
        assert_eq!(b.bytes(), b"llo");
        let mut out = [0u8; 8];
        assert_eq!(b.read_into(&mut out), 3);
        assert_eq!(&out[..3], b"llo");
        assert!(b.is_empty());
        assert_eq!(b.capacity(), 0, "an empty buffer holds no storage");
    }

    #[test]
    fn room_compacts_then_grows_keeping_the_bytes() {
        let mut b = TlsBuf::default();
        b.extend(&vec![1u8; RECORD_BUF - 10]);
        b.consume(RECORD_BUF - 20);
        // 10 held at the end: room for 100 compacts to the front, same storage.
        let room = b.room(100).len();
        assert!(room >= 100);
        assert_eq!(b.capacity(), RECORD_BUF);
        assert_eq!(b.bytes(), &[1u8; 10][..]);
        // More than the buffer holds: a larger one, bytes kept.
        b.room(RECORD_BUF * 2);
        assert!(b.capacity() >= RECORD_BUF * 2 + 10);
        assert_eq!(b.bytes(), &[1u8; 10][..]);
        b.commit(0);
        assert_eq!(b.len(), 10);
    }

    #[test]
    fn buffers_are_reused_from_the_pool() {
        let mut a = TlsBuf::default();
        a.extend(b"x");
        let ptr = a.bytes().as_ptr();
        a.consume(1);
        let mut b = TlsBuf::default();
        b.extend(b"y");
        assert_eq!(
            b.bytes().as_ptr(),
            ptr,
            "the released buffer is taken again"
        );
    }
}
