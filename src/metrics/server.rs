//! The endpoint's own thread: one `mio` loop over the listening socket and at most
//! [`MAX_CONNECTIONS`] clients, none of which can hold up another (no blocking read or
//! write anywhere). Each connection has one deadline at a time, [`REQUEST_TIMEOUT`] for a
//! whole request (head read, answer written) or keep-alive wait, so a slow or silent client
//! is closed. When the table is full the oldest connection makes room for a new one, so a
//! crowd of idle or slow clients cannot lock a scraper out.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::http::{self, Parsed, Status};

/// Open client connections at most.
pub const MAX_CONNECTIONS: usize = 32;
/// Time a client has for one request: to send its head and read the answer, or, on a
/// kept-alive connection, to start the next request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// After an answer that closes the connection, the client's unread input is read and
/// dropped for this long at most before the socket is closed, so that closing with unread
/// data (a TCP reset) does not destroy the answer before the client reads it.
const LINGER: Duration = Duration::from_secs(2);
/// Unread input dropped while lingering, at most.
const LINGER_BYTES: usize = 256 * 1024;
/// How often the loop calls `keep_running` when nothing happens.
const STOP_CHECK: Duration = Duration::from_millis(250);
const LISTENER: Token = Token(usize::MAX);

/// What the handler answers to one request.
#[derive(Debug)]
pub struct Reply {
    pub status: Status,
    pub content_type: &'static str,
    pub body: String,
}

/// One client connection.
struct Conn {
    stream: TcpStream,
    /// The request head read so far (at most [`http::MAX_HEAD`] bytes).
    rbuf: Vec<u8>,
    /// The answer being written, and how much of it is.
    wbuf: Vec<u8>,
    written: usize,
    /// Close once `wbuf` is written.
    close_after: bool,
    /// The answer is written and the write side shut: only dropping input until EOF.
    lingering: usize,
    eof: bool,
    deadline: Instant,
    /// Accept order, to find the oldest connection.
    seq: u64,
}

/// The endpoint's loop: answers each request with `handler(method, path)` while
/// `keep_running()`, which it calls at least every [`STOP_CHECK`].
pub struct Server<H, S> {
    poll: Poll,
    listener: TcpListener,
    conns: Slab<Conn>,
    next_seq: u64,
    handler: H,
    keep_running: S,
}

enum Step {
    Again,
    Wait,
    Close,
}

impl<H: FnMut(&str, &str) -> Reply, S: FnMut() -> bool> Server<H, S> {
    pub fn new(mut listener: TcpListener, handler: H, keep_running: S) -> io::Result<Self> {
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(Server {
            poll,
            listener,
            conns: Slab::with_capacity(MAX_CONNECTIONS),
            next_seq: 0,
            handler,
            keep_running,
        })
    }

    /// Runs until `keep_running()` is false. Errors of one connection close that connection only.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(64);
        while (self.keep_running)() {
            let now = Instant::now();
            let timeout = self
                .conns
                .iter()
                .map(|(_, c)| c.deadline.saturating_duration_since(now))
                .min()
                .map_or(STOP_CHECK, |d| d.min(STOP_CHECK));
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    Token(key) => self.drive(key),
                }
            }
            let now = Instant::now();
            let late: Vec<usize> = self
                .conns
                .iter()
                .filter(|(_, c)| c.deadline <= now)
                .map(|(k, _)| k)
                .collect();
            for key in late {
                self.close(key);
            }
        }
        Ok(())
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    if self.conns.len() >= MAX_CONNECTIONS {
                        let oldest = self.conns.iter().min_by_key(|(_, c)| c.seq).map(|(k, _)| k);
                        if let Some(key) = oldest {
                            self.close(key);
                        }
                    }
                    let entry = self.conns.vacant_entry();
                    let key = entry.key();
                    if let Err(e) = self.poll.registry().register(
                        &mut stream,
                        Token(key),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        log::warn!("Metrics endpoint: cannot watch a connection: {e}");
                        continue;
                    }
                    entry.insert(Conn {
                        stream,
                        rbuf: Vec::new(),
                        wbuf: Vec::new(),
                        written: 0,
                        close_after: false,
                        lingering: 0,
                        eof: false,
                        deadline: Instant::now() + REQUEST_TIMEOUT,
                        seq: self.next_seq,
                    });
                    self.next_seq += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of descriptors, most likely: try again at the next connection.
                    log::warn!("Metrics endpoint: accept failed: {e}");
                    return;
                }
            }
        }
    }

    /// Does all the connection `key` can do now: write, answer, read, until it would block.
    fn drive(&mut self, key: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            match step(conn, &mut self.handler) {
                Step::Again => {}
                Step::Wait => return,
                Step::Close => {
                    self.close(key);
                    return;
                }
            }
        }
    }

    fn close(&mut self, key: usize) {
        if let Some(mut conn) = self.conns.try_remove(key) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
    }
}

/// One step of a connection: finish writing the answer, else answer a whole request, else
/// read more of one.
fn step(conn: &mut Conn, handler: &mut impl FnMut(&str, &str) -> Reply) -> Step {
    if conn.written < conn.wbuf.len() {
        return match conn.stream.write(&conn.wbuf[conn.written..]) {
            Ok(0) => Step::Close,
            Ok(n) => {
                conn.written += n;
                Step::Again
            }
            Err(e) => io_step(&e),
        };
    }
    if !conn.wbuf.is_empty() {
        conn.wbuf.clear();
        conn.written = 0;
        if conn.close_after {
            // Answer out: stop sending, drop what the client still sends, then close.
            let _ = conn.stream.shutdown(std::net::Shutdown::Write);
            conn.lingering = 1;
            conn.deadline = conn.deadline.min(Instant::now() + LINGER);
        } else {
            conn.deadline = Instant::now() + REQUEST_TIMEOUT;
        }
    }
    if conn.lingering > 0 {
        let mut chunk = [0; 4096];
        return match conn.stream.read(&mut chunk) {
            Ok(0) => Step::Close,
            Ok(n) => {
                conn.lingering += n;
                if conn.lingering > LINGER_BYTES {
                    Step::Close
                } else {
                    Step::Again
                }
            }
            Err(e) => io_step(&e),
        };
    }
    match http::parse(&conn.rbuf) {
        Parsed::Request(request) => {
            let head_only = request.method == "HEAD";
            let keep_alive = request.keep_alive && !conn.eof;
            let len = request.len;
            let reply = handler(request.method, request.path);
            http::response(
                &mut conn.wbuf,
                reply.status,
                reply.content_type,
                reply.body.as_bytes(),
                head_only,
                keep_alive,
            );
            conn.rbuf.drain(..len);
            conn.close_after = !keep_alive;
            Step::Again
        }
        Parsed::Error(status) => {
            let body = format!("{} {}\n", status.code(), status_text(status));
            http::response(
                &mut conn.wbuf,
                status,
                "text/plain",
                body.as_bytes(),
                false,
                false,
            );
            conn.rbuf.clear();
            conn.close_after = true;
            Step::Again
        }
        Parsed::Incomplete if conn.eof => Step::Close,
        Parsed::Incomplete => {
            // `parse` refuses a head of MAX_HEAD bytes, so there is room here.
            let room = http::MAX_HEAD - conn.rbuf.len();
            let mut chunk = [0; 4096];
            let want = room.min(chunk.len());
            match conn.stream.read(&mut chunk[..want]) {
                Ok(0) => {
                    conn.eof = true;
                    Step::Again
                }
                Ok(n) => {
                    conn.rbuf.extend_from_slice(&chunk[..n]);
                    Step::Again
                }
                Err(e) => io_step(&e),
            }
        }
    }
}

/// What an I/O error means for the connection.
fn io_step(e: &io::Error) -> Step {
    match e.kind() {
        io::ErrorKind::WouldBlock => Step::Wait,
        io::ErrorKind::Interrupted => Step::Again,
        _ => Step::Close,
    }
}

fn status_text(status: Status) -> &'static str {
    match status {
        Status::BadRequest => "malformed request",
        Status::UriTooLong => "request line too long",
        Status::HeadersTooLarge => "request header too large",
        Status::VersionNotSupported => "only HTTP/1.0 and HTTP/1.1",
        Status::MethodNotAllowed => "only GET and HEAD",
        Status::NotFound => "not found",
        Status::Ok => "ok",
    }
}
