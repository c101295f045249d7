//! Going back to the first address: while a bridge without `round_robin` is connected to a
//! later address, a plain TCP connect to the first one is tried every few seconds, as
//! mosquitto does; once it succeeds the bridge reconnects there.
//!
//! The probe is a non-blocking socket that is never registered with the poll: the bridge's
//! tick looks at it (`peer_addr` answers once it is connected, `take_error` once it failed),
//! so it needs no token of its own and costs one system call per tick while it runs.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;

/// Time between two probes, and the longest one may take.
const RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub struct PrimaryProbe {
    next_at: Option<Instant>,
    probe: Option<(TcpStream, Instant)>,
}

impl PrimaryProbe {
    /// Connected to a later address: start probing `RETRY` from now.
    pub fn start(&mut self, now: Instant) {
        self.next_at = Some(now + RETRY);
        self.probe = None;
    }

    /// Not connected to a later address any more.
    pub fn stop(&mut self) {
        self.next_at = None;
        self.probe = None;
    }

    /// At the bridge's tick: true once the first address accepted a connection.
    pub fn tick(&mut self, primary: SocketAddr, now: Instant) -> bool {
        if let Some((sock, started)) = &self.probe {
            if sock.peer_addr().is_ok() {
                self.stop();
                return true;
            }
            let failed = matches!(sock.take_error(), Ok(Some(_)) | Err(_));
            if failed || now.saturating_duration_since(*started) >= RETRY {
                self.probe = None;
                self.next_at = Some(now + RETRY);
            }
            return false;
        }
        if self.next_at.is_some_and(|at| now >= at) {
            self.next_at = None;
            match TcpStream::connect(primary) {
                Ok(sock) => self.probe = Some((sock, now)),
                Err(_) => self.next_at = Some(now + RETRY),
            }
        }
        false
    }
}
