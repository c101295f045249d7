//! A client connection's byte stream: plain TCP or TLS over a non-blocking mio socket.
//!
//! TLS follows rustls' non-blocking pattern: a write hands plaintext to rustls (before the
//! handshake is done it is buffered and sent once it is) and pushes the records it made; a
//! read pulls records from the socket, processes them (driving the handshake) and pushes
//! whatever rustls wants to answer. `flush` pushes records left over from a short write, so a
//! caller calls it on every writable event even when it has nothing new to write.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::ClientConnection;

use super::{ClientTls, TlsInfo};

/// Plain TCP or TLS. One connection's, owned by one thread.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    /// Boxed: a rustls connection is large and plain runs should not pay for it.
    Tls(Box<TlsConn>),
}

/// A rustls client connection over a socket.
#[derive(Debug)]
pub struct TlsConn {
    sock: TcpStream,
    conn: ClientConnection,
}

impl Stream {
    /// Starts a non-blocking connect to `addr`, with TLS over it when `tls` is given (no TLS
    /// I/O happens yet).
    pub fn connect(addr: SocketAddr, tls: Option<&ClientTls>) -> io::Result<Stream> {
        let sock = TcpStream::connect(addr)?;
        Ok(match tls {
            None => Stream::Tcp(sock),
            Some(t) => {
                let conn = ClientConnection::new(t.config.clone(), t.server_name.clone())
                    .map_err(|e| io::Error::other(format!("TLS: {e}")))?;
                Stream::Tls(Box::new(TlsConn { sock, conn }))
            }
        })
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Tcp(s) => s,
            Stream::Tls(t) => &t.sock,
        }
    }

    fn tcp_mut(&mut self) -> &mut TcpStream {
        match self {
            Stream::Tcp(s) => s,
            Stream::Tls(t) => &mut t.sock,
        }
    }

    /// The socket's pending error (a failed connect).
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.tcp().take_error()
    }

    /// The peer's address; `NotConnected` while the connect is under way.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().peer_addr()
    }

    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.tcp().set_nodelay(on)
    }

    /// Whether a TLS handshake is still under way (never for plain TCP).
    pub fn is_handshaking(&self) -> bool {
        matches!(self, Stream::Tls(t) if t.conn.is_handshaking())
    }

    /// Whether the TLS handshake resumed an earlier session (`None`: plain TCP or not done).
    pub fn resumed(&self) -> Option<bool> {
        match self {
            Stream::Tcp(_) => None,
            Stream::Tls(t) => t
                .conn
                .handshake_kind()
                .map(|k| k == rustls::HandshakeKind::Resumed),
        }
    }

    /// What the handshake negotiated (`None`: plain TCP or not done).
    pub fn tls_info(&self, client_certificate: bool) -> Option<TlsInfo> {
        match self {
            Stream::Tls(t) if !t.conn.is_handshaking() => {
                Some(TlsInfo::of(&t.conn, client_certificate))
            }
            _ => None,
        }
    }
}

impl TlsConn {
    /// Pushes queued records until there are none or the socket would block.
    fn push_records(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The broker closed TCP without close_notify: an end of stream to MQTT.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            match self.conn.read_tls(&mut self.sock) {
                Ok(0) => return Ok(0),
                Ok(_) => {
                    if let Err(e) = self.conn.process_new_packets() {
                        // Send the alert that says why, then report it.
                        let _ = self.push_records();
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("TLS: {e}"),
                        ));
                    }
                    // Handshake answers, and plaintext buffered until the handshake was done.
                    self.push_records()?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.push_records()?;
        let n = self.conn.writer().write(buf)?;
        self.push_records()?;
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
        }
    }

    /// TLS: pushes records left from a short write (not an error if the socket still blocks).
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(_) => Ok(()),
            Stream::Tls(t) => t.push_records(),
        }
    }
}

/// Registration is of the TCP socket.
impl Source for Stream {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        self.tcp_mut().register(r, t, i)
    }

    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        self.tcp_mut().reregister(r, t, i)
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        self.tcp_mut().deregister(r)
    }
}
