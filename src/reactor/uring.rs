//! The io_uring backend: readiness from multishot poll requests, and input from multishot
//! receives.
//!
//! Each registered socket has one `IORING_OP_POLL_ADD` request with `IORING_POLL_ADD_MULTI`,
//! which posts a completion at every wake-up of the socket (new data, room to write, the
//! peer's FIN): the edge-triggered meaning mio gives epoll. (Re)registrations and removals
//! are queued as submission entries and go to the kernel with the loop's wait, in one
//! `io_uring_enter`, instead of one `epoll_ctl` each.
//!
//! A socket the shard switches to receiving ([`Registrations::receive`]) has a multishot
//! `IORING_OP_RECV` instead of its read interest: its bytes arrive with the wait, in buffers
//! of the ring's [`BufRing`], with no `read` per message; its poll request then watches
//! only for room to write, when asked to.
//!
//! A request is named by `user_data` = descriptor << 32 | generation. A socket's generation
//! changes at every (re)registration, so a completion still in flight from an older
//! request (a removed one, or a socket closed and its descriptor number reused) is
//! recognised and dropped. Input is checked again when the shard takes it
//! ([`Registrations::is_current`]): a socket may be closed, and its number reused, between
//! the wait and the event's turn.

use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use io_uring::types::{SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, types, IoUring};
use mio::{Interest, Token};

use super::bufring::{self, BufRing};
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
    /// Buffers for receives; `None` where the kernel has no provided-buffer rings or
    /// multishot receive (then sockets are only polled).
    buffers: Option<BufRing>,
    /// Created disabled, to be enabled by the first wait on the loop's thread (see
    /// `Ring::for_loop`).
    disabled: bool,
}

/// What is registered, and the changes not yet submitted. Shared between the loop and the
/// shard's [`super::Registry`]; the lock is a leaf (nothing else is locked under it) and is
/// held for a few instructions, never across a system call.
#[derive(Debug, Default)]
pub(super) struct Registrations(Mutex<Regs>);

#[derive(Debug, Default)]
struct Regs {
    /// Indexed by descriptor (small integers, dense): the socket's current requests.
    by_fd: Vec<Option<Reg>>,
    changes: Vec<Change>,
    generation: u32,
    /// Multishot receives work here (see `Ring::buffers`).
    receives: bool,
}

#[derive(Debug, Clone, Copy)]
struct Reg {
    token: Token,
    /// The poll request's mask and generation; mask 0: no poll request (a receiving socket
    /// with nothing to write).
    mask: u32,
    generation: u32,
    /// The receive request's generation, for a receiving socket.
    recv: Option<u32>,
}

#[derive(Debug, Clone, Copy)]
enum Change {
    Arm {
        fd: RawFd,
        mask: u32,
        data: u64,
    },
    Receive {
        fd: RawFd,
        data: u64,
    },
    /// Cancels a poll or receive request.
    Disarm {
        data: u64,
    },
}

fn user_data(fd: RawFd, generation: u32) -> u64 {
    (u64::from(fd as u32) << 32) | u64::from(generation)
}

/// [`Ring::probe`], once per process: the kernel's answer is the same for every shard.
fn kernel_support() -> io::Result<bool> {
    static SUPPORT: OnceLock<Result<bool, (io::ErrorKind, String)>> = OnceLock::new();
    SUPPORT
        .get_or_init(|| Ring::probe().map_err(|e| (e.kind(), e.to_string())))
        .clone()
        .map_err(|(kind, msg)| io::Error::new(kind, msg))
}

/// Submits what is queued and waits up to `limit` for `want` completions; a time-out or an
/// interruption is not an error here (the caller looks at what completed).
fn wait_up_to(ring: &IoUring, want: usize, limit: Duration) {
    let ts = Timespec::from(limit);
    let _ = ring
        .submitter()
        .submit_with_args(want, &SubmitArgs::new().timespec(&ts));
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
        let receives = kernel_support()?;
        let mut ring = Ring::for_loop()?;
        if receives {
            ring.buffers = BufRing::new(&ring.ring).ok();
        }
        ring.regs.lock().receives = ring.buffers.is_some();
        Ok(ring)
    }

    /// What the kernel can do, tried on a plain ring of its own (the loop's ring takes
    /// submissions only from the loop's thread, once enabled there): `Ok(true)` when
    /// multishot receive works too.
    fn probe() -> io::Result<bool> {
        let mut probe = Ring::around(
            IoUring::builder()
                .setup_cqsize(CQ_ENTRIES)
                .build(SQ_ENTRIES)?,
            false,
        );
        let p = probe.ring.params();
        if !p.is_feature_ext_arg() || !p.is_feature_nodrop() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring lacks IORING_FEAT_EXT_ARG or IORING_FEAT_NODROP (kernel 5.11 or later)",
            ));
        }
        probe.check_multishot_poll()?;
        Ok(probe.receives_work())
    }

    /// The loop's ring. Where the kernel has it (6.1), completions are prepared only when the
    /// loop waits (`IORING_SETUP_DEFER_TASKRUN`, which needs a single submitting thread: the
    /// ring starts disabled and the loop's first wait enables it on its own thread), so a
    /// socket's wake-up never interrupts the loop's thread; else cooperatively, at the
    /// thread's next entry to the kernel (5.19); else as the kernel does by default.
    fn for_loop() -> io::Result<Ring> {
        if let Ok(r) = IoUring::builder()
            .setup_cqsize(CQ_ENTRIES)
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .setup_r_disabled()
            .build(SQ_ENTRIES)
        {
            return Ok(Ring::around(r, true));
        }
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
        Ok(Ring::around(ring, false))
    }

    fn around(ring: IoUring, disabled: bool) -> Ring {
        Ring {
            ring,
            regs: Arc::default(),
            submitting: Vec::new(),
            buffers: None,
            disabled,
        }
    }

    /// The kernel has provided-buffer rings (5.19) and multishot receive (6.0); else
    /// sockets are polled and read as on epoll. The probe's buffers stay in `self.buffers`,
    /// freed after the ring.
    fn receives_work(&mut self) -> bool {
        let mut probe = io_uring::Probe::new();
        if self.ring.submitter().register_probe(&mut probe).is_err()
            || !probe.is_supported(opcode::RecvMulti::CODE)
        {
            return false;
        }
        let Ok(buffers) = BufRing::new(&self.ring) else {
            return false;
        };
        self.buffers = Some(buffers);
        // The opcode exists since 5.6, multishot since 6.0: a receive on a socket pair must
        // give two completions for two writes, the first saying more will come.
        let Ok((a, b)) = std::os::unix::net::UnixStream::pair() else {
            return false;
        };
        let fd = std::os::fd::AsRawFd::as_raw_fd(&a);
        let entry = opcode::RecvMulti::new(types::Fd(fd), bufring::GROUP)
            .build()
            .user_data(0);
        // SAFETY: the receive writes only into the ring's buffers, which outlive it.
        if unsafe { self.ring.submission().push(&entry) }.is_err() {
            return false;
        }
        let mut completions = Vec::new();
        for payload in [b"1", b"2"] {
            if std::io::Write::write_all(&mut &b, payload).is_err() {
                return false;
            }
            wait_up_to(&self.ring, 1, Duration::from_secs(1));
            completions.extend(self.ring.completion().map(|c| c.flags()));
        }
        let cancel = opcode::AsyncCancel::new(0).build().user_data(REMOVAL);
        // SAFETY: a cancel references no memory of ours.
        if unsafe { self.ring.submission().push(&cancel) }.is_ok() {
            wait_up_to(&self.ring, 2, Duration::from_secs(1));
        }
        completions.len() == 2 && cqueue::more(completions[0])
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
        if self.disabled {
            // The first wait: this thread becomes the ring's only submitter.
            self.ring.submitter().register_enable_rings()?;
            self.disabled = false;
        }
        // The loop is done with the last wait's events: their buffers go back first, so
        // that a receive re-armed for want of them finds some.
        if let Some(b) = &mut self.buffers {
            b.give_back();
        }
        self.submit_changes()?;
        let waited = match timeout {
            Some(t) if t.is_zero() => self.ring.submit(),
            Some(t) => {
                let ts = Timespec::from(t);
                self.ring
                    .submitter()
                    .submit_with_args(1, &SubmitArgs::new().timespec(&ts))
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
        if self.disabled {
            // Never waited on: nothing was submitted.
            return;
        }
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
            wait_up_to(&self.ring, 1, left);
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
                Change::Receive { fd, data } => {
                    opcode::RecvMulti::new(types::Fd(fd), bufring::GROUP)
                        .build()
                        .user_data(data)
                }
                Change::Disarm { data } => {
                    opcode::AsyncCancel::new(data).build().user_data(REMOVAL)
                }
            };
            // SAFETY: polls and cancels reference no memory of ours; receives write only
            // into the buffer ring, which lives as long as the ring (`Drop`).
            while unsafe { self.ring.submission().push(&entry) }.is_err() {
                self.ring.submit()?;
            }
        }
        Ok(())
    }

    fn reap(&mut self, out: &mut Vec<Event>) {
        let mut regs = self.regs.lock();
        for cqe in self.ring.completion() {
            let (data, res, flags) = (cqe.user_data(), cqe.result(), cqe.flags());
            // A completion that carries a buffer lends it to the loop, stale or not; it goes
            // back at the next wait.
            let lent = match (cqueue::buffer_select(flags), &mut self.buffers) {
                (Some(bid), Some(b)) => Some(b.take(bid, res.max(0) as usize)),
                _ => None,
            };
            if data == REMOVAL {
                continue;
            }
            let fd = (data >> 32) as RawFd;
            let generation = data as u32;
            let Some(reg) = regs.current(fd) else {
                continue;
            };
            let more = cqueue::more(flags);
            if reg.recv == Some(generation) {
                match res {
                    n if n > 0 => {
                        if let Some((addr, len)) = lent {
                            out.push(Event::received(reg.token, fd, generation, addr, len));
                        }
                    }
                    // Out of buffers: the bytes wait in the socket; armed again below, and
                    // submitted after the buffers are given back.
                    e if e == -libc::ENOBUFS => {}
                    // The end of the stream (0) or an error: the request is over.
                    e => {
                        out.push(Event::input_end(reg.token, fd, generation, -e));
                        continue;
                    }
                }
                if !more {
                    // The same request again, under the same generation: events of its
                    // earlier completions, not handled yet, must stay current.
                    regs.changes.push(Change::Receive { fd, data });
                }
            } else if reg.mask != 0 && reg.generation == generation {
                if res >= 0 {
                    out.push(Event::from_poll_mask(reg.token, res as u32));
                } else {
                    // The request failed: the loop tries the socket and meets the error.
                    out.push(Event::from_poll_mask(
                        reg.token,
                        (libc::POLLIN | libc::POLLOUT | libc::POLLERR) as u32,
                    ));
                }
                if !more {
                    if res == -libc::EBADF {
                        // Closed without being deregistered: nothing to watch any more.
                        regs.by_fd[fd as usize] = None;
                    } else {
                        // The kernel ended the request (an error, a full completion queue):
                        // armed again.
                        regs.arm_poll(fd, reg.mask);
                    }
                }
            }
        }
    }
}

impl Drop for Ring {
    /// Every request ends before the buffers they write into are freed (the kernel tears a
    /// closed ring down asynchronously).
    fn drop(&mut self) {
        self.release_all();
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
        let reg = regs
            .current(fd)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        if reg.recv.is_some() && reg.token == token {
            // Receiving: its input stays with the receive; interest is only room to write.
            regs.write_interest(fd, interest.is_writable());
        } else {
            regs.disarm(fd)?;
            regs.arm(fd, token, poll_mask(interest));
        }
        Ok(())
    }

    pub(super) fn receive(&self, fd: RawFd, token: Token, writable: bool) -> io::Result<bool> {
        let mut regs = self.lock();
        let reg = regs
            .current(fd)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        if !regs.receives || reg.token != token {
            return Ok(false);
        }
        if reg.recv.is_none() {
            regs.write_interest(fd, writable);
            regs.arm_recv(fd);
        }
        Ok(true)
    }

    pub(super) fn deregister(&self, fd: RawFd) -> io::Result<()> {
        self.lock().disarm(fd)
    }

    pub(super) fn has_pending(&self) -> bool {
        !self.lock().changes.is_empty()
    }

    /// The receive request of generation `generation` is still `fd`'s.
    pub(super) fn is_current(&self, fd: RawFd, generation: u32) -> bool {
        self.lock()
            .current(fd)
            .is_some_and(|r| r.recv == Some(generation))
    }
}

impl Regs {
    fn current(&self, fd: RawFd) -> Option<Reg> {
        self.by_fd.get(usize::try_from(fd).ok()?).copied().flatten()
    }

    fn next_generation(&mut self) -> u32 {
        self.generation = self.generation.wrapping_add(1);
        self.generation
    }

    /// A new registration of `fd`, polled with `mask`.
    fn arm(&mut self, fd: RawFd, token: Token, mask: u32) {
        let Ok(i) = usize::try_from(fd) else {
            return;
        };
        if self.by_fd.len() <= i {
            self.by_fd.resize(i + 1, None);
        }
        self.by_fd[i] = Some(Reg {
            token,
            mask: 0,
            generation: 0,
            recv: None,
        });
        self.arm_poll(fd, mask);
    }

    /// A new poll request for registered `fd` (none for mask 0).
    fn arm_poll(&mut self, fd: RawFd, mask: u32) {
        let generation = self.next_generation();
        let Some(Some(reg)) = self.by_fd.get_mut(fd as usize) else {
            return;
        };
        reg.mask = mask;
        reg.generation = generation;
        if mask != 0 {
            self.changes.push(Change::Arm {
                fd,
                mask,
                data: user_data(fd, generation),
            });
        }
    }

    /// A new receive request for registered `fd`.
    fn arm_recv(&mut self, fd: RawFd) {
        let generation = self.next_generation();
        let Some(Some(reg)) = self.by_fd.get_mut(fd as usize) else {
            return;
        };
        reg.recv = Some(generation);
        self.changes.push(Change::Receive {
            fd,
            data: user_data(fd, generation),
        });
    }

    /// A receiving `fd`'s poll request: room to write, or none.
    fn write_interest(&mut self, fd: RawFd, writable: bool) {
        let Some(reg) = self.current(fd) else {
            return;
        };
        if reg.mask != 0 {
            self.changes.push(Change::Disarm {
                data: user_data(fd, reg.generation),
            });
        }
        self.arm_poll(fd, if writable { libc::POLLOUT as u32 } else { 0 });
    }

    fn disarm(&mut self, fd: RawFd) -> io::Result<()> {
        let Some(reg) = self.current(fd) else {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        };
        self.by_fd[fd as usize] = None;
        if reg.mask != 0 {
            self.changes.push(Change::Disarm {
                data: user_data(fd, reg.generation),
            });
        }
        if let Some(generation) = reg.recv {
            self.changes.push(Change::Disarm {
                data: user_data(fd, generation),
            });
        }
        Ok(())
    }
}
