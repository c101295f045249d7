//! The byte stream under one client connection: plain TCP or TLS over TCP, behind one type.
//!
//! The shard reads and writes *plaintext* through [`Transport`] and never needs to know which
//! one it has. TLS is a transformer between socket bytes and plaintext (rustls'
//! `tlsserver-mio` example's shape): a read pulls TLS records from the socket into rustls,
//! decrypts them and hands out plaintext; a write hands plaintext to rustls and pushes the
//! records it makes to the socket. The handshake happens inside those calls, so it never blocks
//! the shard: everything is non-blocking and a half-finished handshake just waits for the next
//! readiness event.
//!
//! # Contract with the shard
//! - `read` returns `Ok(0)` at end of stream, `WouldBlock` when the socket is drained (TLS:
//!   also while the handshake waits for the peer), and an `InvalidData` error naming TLS when
//!   the peer broke the TLS protocol (a plain-TCP client on a TLS port, an untrusted client
//!   certificate, ...). rustls has queued an alert then, which `read` tries to send at once.
//! - After every event the shard recomputes socket interest from buffer state: WRITABLE when
//!   its own write buffer is non-empty *or* [`Transport::wants_write`] (TLS records waiting,
//!   e.g. the handshake's answer), and calls `flush` to push those records.
//! - [`Transport::has_buffered_input`]: plaintext already decrypted and held by rustls, which no
//!   socket readiness event will announce again; the shard must not stop reading on its
//!   fairness budget while it is true.
//! - A `Transport` is `Send` and moves whole between shards (a connection migrating to the
//!   home shard of its client id keeps its TLS session).

pub mod tls;

use std::io::{self, Read, Write};
use std::net::Shutdown;

use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

pub use tls::{TlsListener, TlsStream};

/// One connection's byte stream. Shard thread only (moves between shards whole).
#[derive(Debug)]
pub enum Transport {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS over TCP (boxed: a rustls connection is large and most connections are plain).
    Tls(Box<TlsStream>),
}

impl Transport {
    /// Whether this is a TLS connection.
    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// Whether TLS records are waiting to be written to the socket (never for plain TCP).
    pub fn wants_write(&self) -> bool {
        match self {
            Transport::Tcp(_) => false,
            Transport::Tls(t) => t.wants_write(),
        }
    }

    /// Whether decrypted plaintext is waiting inside rustls (never for plain TCP).
    pub fn has_buffered_input(&mut self) -> bool {
        match self {
            Transport::Tcp(_) => false,
            Transport::Tls(t) => t.has_buffered_input(),
        }
    }

    /// The username the listener derives from the client certificate
    /// (`use_identity_as_username`: the subject's first CN; `use_subject_as_username`: the
    /// whole subject in RFC 2253 form, as mosquitto prints it). `None` for plain TCP, before
    /// the handshake has finished, when the client sent no certificate, or when the listener
    /// uses neither option.
    pub fn tls_identity(&self) -> Option<&str> {
        match self {
            Transport::Tcp(_) => None,
            Transport::Tls(t) => t.identity(),
        }
    }

    /// Whether the listener derives the username from the client certificate
    /// (`use_identity_as_username` or `use_subject_as_username`).
    pub fn tls_identity_required(&self) -> bool {
        match self {
            Transport::Tcp(_) => false,
            Transport::Tls(t) => t.identity_required(),
        }
    }

    /// The client's certificate chain (end entity first), once the TLS handshake is done.
    pub fn peer_certificates(&self) -> Option<&[rustls::pki_types::CertificateDer<'static>]> {
        match self {
            Transport::Tcp(_) => None,
            Transport::Tls(t) => t.peer_certificates(),
        }
    }

    /// TCP_NODELAY on the socket.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.tcp().set_nodelay(nodelay)
    }

    /// Best-effort close: TLS sends `close_notify` (and anything still queued) first.
    pub fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        match self {
            Transport::Tcp(s) => s.shutdown(how),
            Transport::Tls(t) => t.shutdown(how),
        }
    }

    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Tcp(s) => s,
            Transport::Tls(t) => t.tcp(),
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => s.read(buf),
            Transport::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => s.write(buf),
            Transport::Tls(t) => t.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => s.write_vectored(bufs),
            Transport::Tls(t) => t.write_vectored(bufs),
        }
    }

    /// Plain TCP: nothing to do. TLS: writes queued records until done or `WouldBlock`
    /// (which is not an error here: [`Transport::wants_write`] stays true).
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Tcp(_) => Ok(()),
            Transport::Tls(t) => t.flush_records(),
        }
    }
}

impl From<TcpStream> for Transport {
    fn from(s: TcpStream) -> Transport {
        Transport::Tcp(s)
    }
}

impl Source for Transport {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Transport::Tcp(s) => s.register(registry, token, interests),
            Transport::Tls(t) => t.tcp_mut().register(registry, token, interests),
        }
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Transport::Tcp(s) => s.reregister(registry, token, interests),
            Transport::Tls(t) => t.tcp_mut().reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Transport::Tcp(s) => s.deregister(registry),
            Transport::Tls(t) => t.tcp_mut().deregister(registry),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_is_send() {
        // Connections migrate between shards whole (inbox `Migrating`).
        fn assert_send<T: Send>() {}
        assert_send::<Transport>();
    }
}
