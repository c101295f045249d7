//! A client session store for storms: rustls' own keeps 8 TLS 1.3 tickets per server name,
//! so a storm of thousands of connections to one broker would resume 8 times and then fall
//! back to full handshakes. This one keeps up to `capacity` tickets (each used once, oldest
//! first), so a first pass of N connections fills it for a resumed pass of N.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use rustls::client::{ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::pki_types::ServerName;
use rustls::NamedGroup;

/// Tickets and sessions for one broker (loadgen talks to one server name per run, so the
/// name is not part of the key).
#[derive(Debug)]
pub struct TicketPool {
    capacity: usize,
    /// Whether handshakes may use what is stored; off, every handshake is a full one but
    /// the tickets it yields are kept (the first pass of a storm fills the pool).
    resume: AtomicBool,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    kx_hint: Option<NamedGroup>,
    tls12: VecDeque<Tls12ClientSessionValue>,
    tls13: VecDeque<Tls13ClientSessionValue>,
}

impl TicketPool {
    /// A pool that holds at most `capacity` TLS 1.3 tickets and TLS 1.2 sessions each.
    pub fn new(capacity: usize) -> TicketPool {
        TicketPool {
            capacity: capacity.max(1),
            resume: AtomicBool::new(true),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Lets handshakes resume (true) or makes them full ones that still store tickets.
    pub fn set_resume(&self, on: bool) {
        self.resume.store(on, Ordering::Relaxed);
    }

    fn resuming(&self) -> bool {
        self.resume.load(Ordering::Relaxed)
    }

    /// Tickets waiting to be used.
    pub fn tickets(&self) -> usize {
        self.with(|i| i.tls13.len() + i.tls12.len())
    }
}

impl ClientSessionStore for TicketPool {
    fn set_kx_hint(&self, _: ServerName<'static>, group: NamedGroup) {
        self.with(|i| i.kx_hint = Some(group));
    }

    fn kx_hint(&self, _: &ServerName<'_>) -> Option<NamedGroup> {
        self.with(|i| i.kx_hint)
    }

    fn set_tls12_session(&self, _: ServerName<'static>, value: Tls12ClientSessionValue) {
        let cap = self.capacity;
        self.with(|i| {
            if i.tls12.len() == cap {
                i.tls12.pop_front();
            }
            i.tls12.push_back(value);
        });
    }

    fn tls12_session(&self, _: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        // rustls asks for a session, then stores a new one after the handshake: hand out each
        // once so that concurrent connections do not all try the same id.
        if !self.resuming() {
            return None;
        }
        self.with(|i| i.tls12.pop_front())
    }

    fn remove_tls12_session(&self, _: &ServerName<'static>) {}

    fn insert_tls13_ticket(&self, _: ServerName<'static>, value: Tls13ClientSessionValue) {
        let cap = self.capacity;
        self.with(|i| {
            if i.tls13.len() == cap {
                i.tls13.pop_front();
            }
            i.tls13.push_back(value);
        });
    }

    fn take_tls13_ticket(&self, _: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        if !self.resuming() {
            return None;
        }
        self.with(|i| i.tls13.pop_front())
    }
}
