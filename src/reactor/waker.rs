//! Waking a loop from another thread: an eventfd the reactor watches like a socket. Both
//! backends see each write as a new edge (epoll's `EPOLLET`, a multishot poll's wake-up), so
//! the counter is never read back except when it is about to overflow.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use mio::event::Source;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

#[derive(Debug)]
pub struct Waker {
    fd: OwnedFd,
}

impl Waker {
    pub(super) fn new() -> io::Result<Waker> {
        // SAFETY: eventfd returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a descriptor we own from here on.
        Ok(Waker {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Wakes the reactor's wait (or makes its next one return at once).
    pub fn wake(&self) -> io::Result<()> {
        let one = 1u64.to_ne_bytes();
        loop {
            // SAFETY: writes 8 bytes from a live buffer to our descriptor.
            let n = unsafe { libc::write(self.fd.as_raw_fd(), one.as_ptr().cast(), 8) };
            if n == 8 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                // The counter is at its maximum: reset it, then write again.
                io::ErrorKind::WouldBlock => self.reset(),
                _ => return Err(e),
            }
        }
    }

    fn reset(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live buffer.
        unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
    }
}

impl AsRawFd for Waker {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Source for Waker {
    fn register(&mut self, r: &Registry, token: Token, interest: Interest) -> io::Result<()> {
        SourceFd(&self.fd.as_raw_fd()).register(r, token, interest)
    }
    fn reregister(&mut self, r: &Registry, token: Token, interest: Interest) -> io::Result<()> {
        SourceFd(&self.fd.as_raw_fd()).reregister(r, token, interest)
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        SourceFd(&self.fd.as_raw_fd()).deregister(r)
    }
}
