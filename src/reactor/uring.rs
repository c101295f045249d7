//! The io_uring backend: readiness from multishot poll requests.
//!
//! Each registered socket has one `IORING_OP_POLL_ADD` request with `IORING_POLL_ADD_MULTI`,
//! which posts a completion at every wake-up of the socket (new data, room to write, the
//! peer's FIN): the edge-triggered meaning mio gives epoll. (Re)registrations and removals
//! are queued as submission entries and go to the kernel with the loop's wait, in one
//! `io_uring_enter`, instead of one `epoll_ctl` each.
//!
//! A request is named by `user_data` = descriptor << 32 | generation. A socket's generation
//! changes at every (re)registration, so a completion still in flight from an older
//! request (a removed one, or a socket closed and its descriptor number reused) is
//! recognised and dropped.

use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use io_uring::types::{SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, types, IoUring};
use mio::{Interest, Token};

use super::Event;

/// The `user_data` of removal requests, whose completions carry nothing for the loop.
const REMOVAL: u64 = u64::MAX;
/// Submission queue size: changes beyond it in one turn are submitted in several calls.
const SQ_ENTRIES: u32 = 256;
/// Completion queue size. One turn's events beyond it wait in the kernel's overflow list
/// (`IORING_FEAT_NODROP`, required) for the next turn.
const CQ_ENTRIES: u32 = 4096;

pub(super) struct Ring {
    ring: IoUring,
    regs: Arc<Registrations>,
    /// The changes being submitted (swapped with the queued ones: no allocation per turn).
    submitting: Vec<Change>,
}

/// What is registered, and the changes not yet submitted. Shared between the loop and the
/// shard's [`super::Registry`]; the lock is a leaf (nothing else is locked under it) and is
/// held for a few instructions, never across a system call.
#[derive(Debug, Default)]
pub(super) struct Registrations(Mutex<Regs>);

#[derive(Debug, Default)]
struct Regs {
    /// Indexed by descriptor (small integers, dense): the socket's current request.
    by_fd: Vec<Option<Reg>>,
    changes: Vec<Change>,
    generation: u32,
}

#[derive(Debug, Clone, Copy)]
struct Reg {
    token: Token,
    mask: u32,
    generation: u32,
}

#[derive(Debug, Clone, Copy)]
enum Change {
    Arm { fd: RawFd, mask: u32, data: u64 },
    Disarm { data: u64 },
}

fn user_data(fd: RawFd, generation: u32) -> u64 {
    (u64::from(fd as u32) << 32) | u64::from(generation)
}

fn poll_mask(interest: Interest) -> u32 {
    let mut mask = 0;
    if interest.is_readable() {
        mask |= (libc::POLLIN | libc::POLLRDHUP) as u32;
    }
    if interest.is_writable() {
        mask |= libc::POLLOUT as u32;
    }
    mask
}

impl Ring {
    /// A ring, after checking the kernel can serve it: `IORING_FEAT_EXT_ARG` (a wait with a
    /// time-out, 5.11), `IORING_FEAT_NODROP`, and multishot poll (5.13), tried on an
    /// eventfd. Any refusal (seccomp, `kernel.io_uring_disabled`, an old kernel) is an error,
    /// which `auto` answers with epoll.
    pub(super) fn new() -> io::Result<Ring> {
        // Cooperative task running: completions are prepared when the loop enters the
        // kernel anyway, without an interrupt to run them earlier (5.19; else without).
        let ring = IoUring::builder()
            .setup_cqsize(CQ_ENTRIES)
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .build(SQ_ENTRIES)
            .or_else(|_| {
                IoUring::builder()
                    .setup_cqsize(CQ_ENTRIES)
                    .build(SQ_ENTRIES)
            })?;
        let p = ring.params();
        if !p.is_feature_ext_arg() || !p.is_feature_nodrop() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring lacks IORING_FEAT_EXT_ARG or IORING_FEAT_NODROP (kernel 5.11 or later)",
            ));
        }
        let mut ring = Ring {
            ring,
            regs: Arc::default(),
            submitting: Vec::new(),
        };
        ring.check_multishot_poll()?;
        Ok(ring)
    }

    /// Two writes to an eventfd under one multishot poll must give two completions, the
    /// first saying more will come.
    fn check_multishot_poll(&mut self) -> io::Result<()> {
        let waker = super::Waker::new()?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&waker);
        self.regs.register(fd, Token(0), Interest::READABLE)?;
        let mut events = Vec::new();
        for _ in 0..2 {
            waker.wake()?;
            self.poll(&mut events, Some(Duration::from_secs(1)))?;
        }
        self.regs.deregister(fd)?;
        self.poll(&mut Vec::new(), Some(Duration::ZERO))?;
        if events.len() == 2 {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring multishot poll is not supported (kernel 5.13 or later)",
            ))
        }
    }

    pub(super) fn registrations(&self) -> Arc<Registrations> {
        self.regs.clone()
    }

    /// Submits the queued changes and waits up to `timeout` for at least one completion;
    /// the readiness completions become `out`'s events.
    pub(super) fn poll(
        &mut self,
        out: &mut Vec<Event>,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        self.submit_changes()?;
        let waited = match timeout {
            Some(t) if t.is_zero() => self.ring.submit(),
            Some(t) => {
                let ts = Timespec::new().sec(t.as_secs()).nsec(t.subsec_nanos());
                let args = SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
            None => self.ring.submit_and_wait(1),
        };
        match waited {
            Ok(_) => {}
            // Timed out, interrupted, or completions waiting in the overflow list (they are
            // flushed by the next enter).
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) => {}
            Err(e) => return Err(e),
        }
        self.reap(out);
        Ok(())
    }

    /// Removes every poll request and waits (a second at most) until the kernel has let go
    /// of their sockets. At shutdown, before the process exits: the kernel tears a ring down
    /// asynchronously after its owner is gone, and a listener held by a request until then
    /// would refuse the next broker its port for a moment.
    pub(super) fn release_all(&mut self) {
        let removals = {
            let mut regs = self.regs.lock();
            let fds: Vec<RawFd> = (0..regs.by_fd.len() as RawFd)
                .filter(|&fd| regs.current(fd).is_some())
                .collect();
            for fd in fds {
                let _ = regs.disarm(fd);
            }
            regs.changes
                .iter()
                .filter(|c| matches!(c, Change::Disarm { .. }))
                .count()
        };
        if self.submit_changes().is_err() {
            return;
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        let mut seen = 0;
        while seen < removals {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            let ts = Timespec::new()
                .sec(left.as_secs())
                .nsec(left.subsec_nanos());
            let _ = self
                .ring
                .submitter()
                .submit_with_args(1, &SubmitArgs::new().timespec(&ts));
            seen += self
                .ring
                .completion()
                .filter(|c| c.user_data() == REMOVAL)
                .count();
        }
    }

    fn submit_changes(&mut self) -> io::Result<()> {
        {
            let mut regs = self.regs.lock();
            if regs.changes.is_empty() {
                return Ok(());
            }
            std::mem::swap(&mut regs.changes, &mut self.submitting);
        }
        for change in self.submitting.drain(..) {
            let entry = match change {
                Change::Arm { fd, mask, data } => opcode::PollAdd::new(types::Fd(fd), mask)
                    .multi(true)
                    .build()
                    .user_data(data),
                Change::Disarm { data } => opcode::PollRemove::new(data).build().user_data(REMOVAL),
            };
            // SAFETY: poll entries reference no memory of ours.
            while unsafe { self.ring.submission().push(&entry) }.is_err() {
                self.ring.submit()?;
            }
        }
        Ok(())
    }

    fn reap(&mut self, out: &mut Vec<Event>) {
        let mut regs = self.regs.lock();
        for cqe in self.ring.completion() {
            let data = cqe.user_data();
            if data == REMOVAL {
                continue;
            }
            let fd = (data >> 32) as usize;
            let Some(reg) = regs.by_fd.get(fd).copied().flatten() else {
                continue;
            };
            if reg.generation != data as u32 {
                continue;
            }
            let res = cqe.result();
            if res >= 0 {
                out.push(Event::from_poll_mask(reg.token, res as u32));
            } else {
                // The request failed: the loop tries the socket and meets the error itself.
                out.push(Event::from_poll_mask(
                    reg.token,
                    (libc::POLLIN | libc::POLLOUT | libc::POLLERR) as u32,
                ));
            }
            if !cqueue::more(cqe.flags()) {
                if res == -libc::EBADF {
                    // Closed without being deregistered: nothing to watch any more.
                    regs.by_fd[fd] = None;
                } else {
                    // The kernel ended the request (an error, a full completion queue):
                    // armed again, as a fresh registration.
                    let fd = fd as RawFd;
                    regs.arm(fd, reg.token, reg.mask);
                }
            }
        }
    }
}

impl Registrations {
    fn lock(&self) -> MutexGuard<'_, Regs> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn register(&self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        let mut regs = self.lock();
        if regs.current(fd).is_some() {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        regs.arm(fd, token, poll_mask(interest));
        Ok(())
    }

    pub(super) fn reregister(&self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        let mut regs = self.lock();
        regs.disarm(fd)?;
        regs.arm(fd, token, poll_mask(interest));
        Ok(())
    }

    pub(super) fn deregister(&self, fd: RawFd) -> io::Result<()> {
        self.lock().disarm(fd)
    }

    pub(super) fn has_pending(&self) -> bool {
        !self.lock().changes.is_empty()
    }
}

impl Regs {
    fn current(&self, fd: RawFd) -> Option<Reg> {
        self.by_fd.get(usize::try_from(fd).ok()?).copied().flatten()
    }

    fn arm(&mut self, fd: RawFd, token: Token, mask: u32) {
        let Ok(i) = usize::try_from(fd) else {
            return;
        };
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        if self.by_fd.len() <= i {
            self.by_fd.resize(i + 1, None);
        }
        self.by_fd[i] = Some(Reg {
            token,
            mask,
            generation,
        });
        self.changes.push(Change::Arm {
            fd,
            mask,
            data: user_data(fd, generation),
        });
    }

    fn disarm(&mut self, fd: RawFd) -> io::Result<()> {
        let Some(reg) = self.current(fd) else {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        };
        self.by_fd[fd as usize] = None;
        self.changes.push(Change::Disarm {
            data: user_data(fd, reg.generation),
        });
        Ok(())
    }
}
