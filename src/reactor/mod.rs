//! The readiness reactor under each shard's loop, on one of two kernel interfaces
//! (`io_backend`, ARCHITECTURE.md §3):
//! - **epoll** through `mio` (edge-triggered), the portable default of the design card;
//! - **io_uring** ([`uring`]): one multishot poll request per socket, armed and disarmed
//!   through the submission queue (no `epoll_ctl`), and the loop's wait is the same
//!   `io_uring_enter` that submits them. Sockets are still read and written by the shard.
//!
//! Both hand the loop the same [`Event`]s with mio's edge-triggered meaning: an event says
//! readiness *changed*; the shard reads until `WouldBlock` (or a short read) and re-arms
//! with [`Registry::reregister`] when it stops early. The shard never asks which backend it
//! runs on.
//!
//! [`Registry`] is the shard's handle for (de)registering sockets. It is used on the loop's
//! own thread, and by a peer running the shard's turn while its loop sleeps
//! (`shard::handoff`): io_uring changes made then are only queued, so
//! [`Registry::has_pending`] tells the peer to wake the loop, which submits them.

mod bufring;
mod sends;
mod uring;
mod waker;

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use mio::event::Source;
use mio::{Interest, Token};

pub use sends::SendBatch;
pub use waker::Waker;

/// Which kernel interface the shards' loops use (`io_backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoBackend {
    /// epoll (mio).
    Epoll,
    /// io_uring; the broker does not start where the kernel refuses it.
    IoUring,
    /// io_uring where the kernel allows it (not forbidden by a seccomp profile, as Docker's
    /// default forbids it, nor by `kernel.io_uring_disabled`), else epoll.
    #[default]
    Auto,
}

impl IoBackend {
    /// The name `io_backend` takes.
    pub fn parse(s: &str) -> Option<IoBackend> {
        match s {
            "epoll" => Some(IoBackend::Epoll),
            "io_uring" => Some(IoBackend::IoUring),
            "auto" => Some(IoBackend::Auto),
            _ => None,
        }
    }

    /// The backend named by the environment variable `MIDGE_IO_BACKEND`, which overrides the
    /// configuration (the test suite runs once per backend this way); `None` when unset.
    /// An unknown name is an error that names the variable.
    pub fn from_env() -> io::Result<Option<IoBackend>> {
        match std::env::var("MIDGE_IO_BACKEND") {
            Err(_) => Ok(None),
            Ok(v) => IoBackend::parse(&v).map(Some).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("MIDGE_IO_BACKEND={v}: expected epoll, io_uring or auto"),
                )
            }),
        }
    }
}

/// One event: the token a socket was registered with and what changed; for a receiving
/// socket (io_uring), bytes it received or the end of its input, which
/// [`Registry::input`] hands out.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    token: Token,
    flags: u8,
    /// Receiving sockets: the descriptor and receive request the input came from.
    fd: i32,
    generation: u32,
    /// Received bytes (address in the ring's buffers, valid until the next wait), or with
    /// `INPUT_END` the error number (0: end of stream).
    addr: usize,
    len: u32,
}

const READABLE: u8 = 1;
const WRITABLE: u8 = 2;
const READ_CLOSED: u8 = 4;
const WRITE_CLOSED: u8 = 8;
const ERROR: u8 = 16;
const RECEIVED: u8 = 32;
const INPUT_END: u8 = 64;

/// What an event brought for a receiving socket (see [`Registry::input`]).
#[derive(Debug)]
pub enum Input<'a> {
    /// Nothing: a readiness event, read the socket as usual.
    Readiness,
    /// Bytes the socket received, in order.
    Data(&'a [u8]),
    /// The end of the input: `None` at the end of the stream, or the error.
    End(Option<io::Error>),
    /// Input of a receive that is no longer the socket's (it was closed, or reregistered):
    /// to be ignored, and the socket not read.
    Stale,
}

impl Event {
    fn with_flags(token: Token, flags: u8) -> Event {
        Event {
            token,
            flags,
            fd: -1,
            generation: 0,
            addr: 0,
            len: 0,
        }
    }

    fn received(token: Token, fd: i32, generation: u32, addr: usize, len: u32) -> Event {
        Event {
            fd,
            generation,
            addr,
            len,
            ..Event::with_flags(token, RECEIVED)
        }
    }

    fn input_end(token: Token, fd: i32, generation: u32, errno: i32) -> Event {
        Event {
            fd,
            generation,
            len: errno as u32,
            ..Event::with_flags(token, INPUT_END)
        }
    }

    fn from_mio(e: &mio::event::Event) -> Event {
        let mut flags = 0;
        for (on, bit) in [
            (e.is_readable(), READABLE),
            (e.is_writable(), WRITABLE),
            (e.is_read_closed(), READ_CLOSED),
            (e.is_write_closed(), WRITE_CLOSED),
            (e.is_error(), ERROR),
        ] {
            if on {
                flags |= bit;
            }
        }
        Event::with_flags(e.token(), flags)
    }

    /// From a `poll(2)` mask, read as mio reads epoll's (the same bits).
    fn from_poll_mask(token: Token, mask: u32) -> Event {
        let has = |bit: libc::c_short| mask & bit as u32 != 0;
        let mut flags = 0;
        if has(libc::POLLIN) || has(libc::POLLPRI) {
            flags |= READABLE;
        }
        if has(libc::POLLOUT) {
            flags |= WRITABLE;
        }
        if has(libc::POLLHUP) || (has(libc::POLLIN) && has(libc::POLLRDHUP)) {
            flags |= READ_CLOSED;
        }
        if has(libc::POLLHUP) || (has(libc::POLLOUT) && has(libc::POLLERR)) {
            flags |= WRITE_CLOSED;
        }
        if has(libc::POLLERR) {
            flags |= ERROR;
        }
        Event::with_flags(token, flags)
    }

    pub fn token(&self) -> Token {
        self.token
    }
    pub fn is_readable(&self) -> bool {
        self.flags & READABLE != 0
    }
    pub fn is_writable(&self) -> bool {
        self.flags & WRITABLE != 0
    }
    pub fn is_read_closed(&self) -> bool {
        self.flags & READ_CLOSED != 0
    }
    pub fn is_write_closed(&self) -> bool {
        self.flags & WRITE_CLOSED != 0
    }
    pub fn is_error(&self) -> bool {
        self.flags & ERROR != 0
    }
}

/// The events one [`Reactor::poll`] returned.
#[derive(Debug, Default)]
pub struct Events(Vec<Event>);

impl Events {
    pub fn with_capacity(n: usize) -> Events {
        Events(Vec::with_capacity(n))
    }
    pub fn iter(&self) -> std::slice::Iter<'_, Event> {
        self.0.iter()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The owner's half: the wait. Lives on the loop's thread, outside the shard. It keeps its
/// waker: the eventfd stays open while the reactor is used (an io_uring registration is
/// submitted with the next wait, and must find it open).
pub struct Reactor {
    backend: Backend,
    _waker: Arc<Waker>,
}

enum Backend {
    Epoll(mio::Poll, mio::Events),
    Uring(Box<uring::Ring>),
}

/// The shard's half: (de)registration of sockets. See the module docs for who calls it.
#[derive(Debug)]
pub struct Registry(Registrar);

#[derive(Debug)]
enum Registrar {
    Epoll(mio::Registry),
    Uring(Arc<uring::Registrations>),
}

impl Reactor {
    /// A reactor on `backend` (`Auto` resolved here), with a [`Waker`] registered as `waker`.
    pub fn new(backend: IoBackend, waker: Token) -> io::Result<(Reactor, Registry, Arc<Waker>)> {
        let backend = match backend {
            IoBackend::Epoll => Reactor::epoll()?,
            IoBackend::IoUring => Backend::Uring(Box::new(uring::Ring::new()?)),
            IoBackend::Auto => match uring::Ring::new() {
                Ok(ring) => Backend::Uring(Box::new(ring)),
                Err(e) => {
                    log::info!("io_uring is not available ({e}): the shards use epoll.");
                    Reactor::epoll()?
                }
            },
        };
        let registry = Registry::of(&backend)?;
        let mut w = Waker::new()?;
        registry.register(&mut w, waker, Interest::READABLE)?;
        let w = Arc::new(w);
        Ok((
            Reactor {
                backend,
                _waker: w.clone(),
            },
            registry,
            w,
        ))
    }

    fn epoll() -> io::Result<Backend> {
        Ok(Backend::Epoll(
            mio::Poll::new()?,
            mio::Events::with_capacity(1024),
        ))
    }

    /// Another handle on this reactor's registrations.
    pub fn registry(&self) -> io::Result<Registry> {
        Registry::of(&self.backend)
    }

    /// The epoll instance's descriptor (`None` on io_uring): a dormant shard's loop is
    /// watched through it by its host (`shard::dormancy`).
    pub fn epoll_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        match &self.backend {
            Backend::Epoll(poll, _) => Some(poll.as_raw_fd()),
            Backend::Uring(_) => None,
        }
    }

    /// The backend in use: `epoll` or `io_uring`.
    pub fn name(&self) -> &'static str {
        match &self.backend {
            Backend::Epoll(..) => "epoll",
            Backend::Uring(_) => "io_uring",
        }
    }

    /// A batch for the turn's sends when this backend makes them in one system call
    /// ([`SendBatch`], io_uring); `None` on epoll.
    pub fn send_batch(&self) -> Option<SendBatch> {
        match &self.backend {
            Backend::Epoll(..) => None,
            Backend::Uring(_) => Some(SendBatch::default()),
        }
    }

    /// Lets go of every registered socket now (see `uring::Ring::release_all`); the loop's
    /// last call, after its sockets are closed. A no-op on epoll, whose registrations end
    /// with the descriptors.
    pub fn release_all(&mut self) {
        if let Backend::Uring(ring) = &mut self.backend {
            ring.release_all();
        }
    }

    /// Waits up to `timeout` (`None`: until an event) for events, into `events` (cleared
    /// first). An interrupted wait returns with no events.
    pub fn poll(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        events.0.clear();
        match &mut self.backend {
            Backend::Epoll(poll, mio_events) => {
                match poll.poll(mio_events, timeout) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    r => r?,
                }
                events.0.extend(mio_events.iter().map(Event::from_mio));
                Ok(())
            }
            Backend::Uring(ring) => ring.poll(&mut events.0, timeout),
        }
    }
}

impl Registry {
    fn of(backend: &Backend) -> io::Result<Registry> {
        Ok(Registry(match backend {
            Backend::Epoll(p, _) => Registrar::Epoll(p.registry().try_clone()?),
            Backend::Uring(r) => Registrar::Uring(r.registrations()),
        }))
    }

    pub fn register<S>(&self, source: &mut S, token: Token, interest: Interest) -> io::Result<()>
    where
        S: Source + AsRawFd + ?Sized,
    {
        match &self.0 {
            Registrar::Epoll(r) => r.register(source, token, interest),
            Registrar::Uring(r) => r.register(source.as_raw_fd(), token, interest),
        }
    }

    /// Changes the token or interest of a registered socket, and re-arms it: readiness that
    /// is already there is reported again (what a loop that stopped reading early needs).
    pub fn reregister<S>(&self, source: &mut S, token: Token, interest: Interest) -> io::Result<()>
    where
        S: Source + AsRawFd + ?Sized,
    {
        match &self.0 {
            Registrar::Epoll(r) => r.reregister(source, token, interest),
            Registrar::Uring(r) => r.reregister(source.as_raw_fd(), token, interest),
        }
    }

    /// Removes a socket. Every socket is deregistered before it is closed or handed to
    /// another shard: an io_uring poll request holds its file open until it is removed.
    pub fn deregister<S>(&self, source: &mut S) -> io::Result<()>
    where
        S: Source + AsRawFd + ?Sized,
    {
        match &self.0 {
            Registrar::Epoll(r) => r.deregister(source),
            Registrar::Uring(r) => r.deregister(source.as_raw_fd()),
        }
    }

    /// Makes a registered socket a receiving one where the backend can (io_uring with
    /// multishot receive): its input then comes as [`Input::Data`] with the loop's wait,
    /// and the owner must never read the socket itself again (bytes would be taken out of
    /// order); its interest is only room to write (`writable`). False: nothing changed, read
    /// it on readiness as before. Only for sockets whose bytes are the owner's as they come
    /// (plain TCP) and that stay with this reactor until closed.
    pub fn receive<S>(&self, source: &S, token: Token, writable: bool) -> io::Result<bool>
    where
        S: AsRawFd + ?Sized,
    {
        match &self.0 {
            Registrar::Epoll(_) => Ok(false),
            Registrar::Uring(r) => r.receive(source.as_raw_fd(), token, writable),
        }
    }

    /// The input `event` brings, checked against the socket's current registration: bytes
    /// are handed out only while the receive that got them is still the socket's. The
    /// bytes are valid until the reactor's next wait.
    pub fn input<'e>(&self, event: &'e Event) -> Input<'e> {
        if event.flags & (RECEIVED | INPUT_END) == 0 {
            return Input::Readiness;
        }
        let current = match &self.0 {
            Registrar::Epoll(_) => false,
            Registrar::Uring(r) => r.is_current(event.fd, event.generation),
        };
        if !current {
            return Input::Stale;
        }
        if event.flags & RECEIVED != 0 {
            // SAFETY: the bytes are in a buffer of the reactor's ring, lent to the loop until
            // its next wait; the events are the last wait's.
            Input::Data(unsafe {
                std::slice::from_raw_parts(event.addr as *const u8, event.len as usize)
            })
        } else if event.len == 0 {
            Input::End(None)
        } else {
            Input::End(Some(io::Error::from_raw_os_error(event.len as i32)))
        }
    }

    /// Changes are queued that only the reactor's own loop submits (io_uring): a peer that
    /// made them while the loop sleeps must wake it.
    pub fn has_pending(&self) -> bool {
        match &self.0 {
            Registrar::Epoll(_) => false,
            Registrar::Uring(r) => r.has_pending(),
        }
    }

    pub fn try_clone(&self) -> io::Result<Registry> {
        Ok(Registry(match &self.0 {
            Registrar::Epoll(r) => Registrar::Epoll(r.try_clone()?),
            Registrar::Uring(r) => Registrar::Uring(r.clone()),
        }))
    }
}

#[cfg(test)]
mod tests;
