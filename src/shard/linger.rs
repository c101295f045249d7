//! Closing a connection so that the peer reads why.
//!
//! When the broker closes a connection after telling the client something (a DISCONNECT with
//! a reason code, a CONNACK refusal), closing the socket while the client's input is still
//! unread makes the kernel send a reset instead of a FIN: the client's next write fails and
//! many clients report "connection reset" without reading the reason that came before it.
//! So such a connection is not closed at once: its write side is shut down (a FIN after the
//! last packet; TLS: close_notify) and its input is read and thrown away until the client
//! closes too, or [`LINGER`] passes, or it sent [`LINGER_BYTES`]: bounded in time, bytes and
//! number ([`MAX_LINGERING`] per shard; beyond that, a connection is closed at once as before).
//!
//! Owned by one shard; shard thread only.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use mio::{Interest, Token};
use slab::Slab;

use crate::reactor::Registry;
use crate::transport::Transport;

/// How long a closed connection's input is drained at most.
pub const LINGER: Duration = Duration::from_secs(2);
/// How many bytes of it at most.
pub const LINGER_BYTES: usize = 64 * 1024;
/// Connections lingering at once per shard.
pub const MAX_LINGERING: usize = 1024;

#[derive(Debug)]
struct Entry {
    stream: Transport,
    until: Instant,
    /// Bytes that may still be read and thrown away.
    budget: usize,
}

/// The shard's closed connections whose input is being drained.
#[derive(Debug, Default)]
pub struct Lingering {
    entries: Slab<Entry>,
}

impl Lingering {
    /// Shuts down the write side of `stream`, already registered with `registry`, and drains
    /// it under `token(slot)`. Returns the stream back when the shard has too many lingering
    /// (the caller closes it at once).
    pub fn add(
        &mut self,
        registry: &Registry,
        mut stream: Transport,
        token: impl Fn(usize) -> Token,
        now: Instant,
    ) -> Result<(), Transport> {
        if self.entries.len() >= MAX_LINGERING {
            return Err(stream);
        }
        let slot = self.entries.vacant_key();
        if registry
            .reregister(&mut stream, token(slot), Interest::READABLE)
            .is_err()
        {
            return Err(stream);
        }
        let _ = stream.shutdown(std::net::Shutdown::Write);
        self.entries.insert(Entry {
            stream,
            until: now + LINGER,
            budget: LINGER_BYTES,
        });
        Ok(())
    }

    /// A readiness event for `slot`: reads what came and throws it away; closes the socket
    /// at the client's end of stream, an error, or when its byte budget is spent.
    pub fn on_readable(&mut self, registry: &Registry, slot: usize) {
        let Some(e) = self.entries.get_mut(slot) else {
            return;
        };
        let mut scratch = [0u8; 4096];
        let done = loop {
            // The TCP socket itself: TLS records are thrown away undecrypted.
            match e.stream.tcp().read(&mut scratch) {
                Ok(0) => break true,
                Ok(n) => {
                    e.budget = e.budget.saturating_sub(n);
                    if e.budget == 0 {
                        break true;
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break false,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break true,
            }
        };
        if done {
            self.remove(registry, slot);
        }
    }

    /// Closes the connections whose time is up (called from the shard's tick).
    pub fn expire(&mut self, registry: &Registry, now: Instant) {
        if self.entries.is_empty() {
            return;
        }
        let due: Vec<usize> = self
            .entries
            .iter()
            .filter(|(_, e)| now >= e.until)
            .map(|(k, _)| k)
            .collect();
        for slot in due {
            self.remove(registry, slot);
        }
    }

    fn remove(&mut self, registry: &Registry, slot: usize) {
        let mut e = self.entries.remove(slot);
        let _ = registry.deregister(&mut e.stream);
        // Dropped: the socket is closed.
    }
}
