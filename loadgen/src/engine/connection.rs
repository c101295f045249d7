//! Connection handling: TCP connect, the one close path, and buffered reads and writes.

use std::io::{self, Read, Write};
use std::sync::atomic::Ordering::Relaxed;

use bytes::{Buf, Bytes};
use midge_codec::{encode, ByteStr, Connect, Packet, Properties, ProtocolVersion};
use mio::{Interest, Token};

use super::worker::{ConnState, Worker};
use super::ws::Stream;
use super::{KEEP_ALIVE_S, WBUF_HIGH};
use crate::clock;

impl Worker {
    pub(super) fn start_connect(&mut self, ci: usize, now: u64) {
        // Subscribers go to `sub_addr` when there is one (publishers never subscribe).
        let addr = match self.cfg.sub_addr {
            Some(sub)
                if !self.plan.clients[self.conns[ci].spec]
                    .subscriptions
                    .is_empty() =>
            {
                sub
            }
            _ => self.addr,
        };
        match Stream::connect(addr, self.cfg.tls.as_ref()) {
            Ok(mut s) => {
                // Both interests once, for the connection's life: mio is edge-triggered, so a
                // writable event only arrives when the socket turns writable again after a
                // short write, and re-registering per event would cost a syscall each time.
                if let Err(e) = self.poll.registry().register(
                    &mut s,
                    Token(ci),
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    self.fail(ci, format!("register: {e}"));
                    return;
                }
                let c = &mut self.conns[ci];
                c.stream = Some(s);
                c.state = ConnState::Connecting;
                c.last_write_ns = now;
                self.connecting += 1;
            }
            Err(e) => self.fail(ci, format!("connect to {addr}: {e}")),
        }
    }

    /// Closes connection `ci` after an error: the one close path. A failure before the run
    /// starts fails the set-up; one during the run counts as a disconnect.
    pub(super) fn fail(&mut self, ci: usize, why: String) {
        let c = &mut self.conns[ci];
        if c.state == ConnState::Closed {
            return;
        }
        let was = c.state;
        c.state = ConnState::Closed;
        if let Some(mut s) = c.stream.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        let id = self.plan.clients[c.spec].client_id.clone();
        if was == ConnState::Ready {
            self.counters.disconnects += 1;
        } else {
            self.connecting = self.connecting.saturating_sub(1);
            self.shared.failed.fetch_add(1, Relaxed);
        }
        if let Some(p) = c.publisher.as_mut() {
            if !p.done {
                p.done = true;
                self.shared.publishers_done.fetch_add(1, Relaxed);
            }
        }
        if self.errors < 5 {
            self.errors += 1;
            self.shared.error(format!("{id}: {why}"));
        }
    }

    pub(super) fn queue(&mut self, ci: usize, p: &Packet) {
        let c = &mut self.conns[ci];
        encode(p, self.cfg.version, &mut c.wbuf);
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(ci);
        }
    }

    pub(super) fn on_writable(&mut self, ci: usize) {
        if self.conns[ci].state == ConnState::Connecting {
            let s = self.conns[ci]
                .stream
                .as_ref()
                .expect("connecting has a stream");
            match s.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => return self.fail(ci, format!("connect: {e}")),
            }
            match s.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return, // spurious, still connecting
                Err(e) => return self.fail(ci, format!("connect: {e}")),
            }
            let _ = s.set_nodelay(true);
            // WebSocket: the upgrade request goes first, CONNECT after the 101.
            let transport = self.cfg.transport;
            let c = &mut self.conns[ci];
            c.stream = c.stream.take().map(|s| s.upgrade(transport));
            let spec = &self.plan.clients[self.conns[ci].spec];
            let connect = Packet::Connect(Connect {
                version: self.cfg.version,
                clean_start: !self.cfg.persistent,
                keep_alive: KEEP_ALIVE_S,
                client_id: ByteStr::from(spec.client_id.as_str()),
                will: None,
                username: self
                    .cfg
                    .password
                    .as_ref()
                    .map(|_| ByteStr::from(spec.client_id.as_str())),
                password: self
                    .cfg
                    .password
                    .as_ref()
                    .map(|p| Bytes::copy_from_slice(p.as_bytes())),
                properties: Properties {
                    session_expiry_interval: (self.cfg.persistent
                        && self.cfg.version == ProtocolVersion::V5)
                        .then_some(3600),
                    ..Properties::default()
                },
            });
            self.conns[ci].state = ConnState::AwaitConnAck;
            self.queue(ci, &connect);
        }
        self.flush(ci, clock::now_ns());
    }

    pub(super) fn on_readable(&mut self, ci: usize) {
        loop {
            let c = &mut self.conns[ci];
            let Some(s) = c.stream.as_mut() else { return };
            if c.state == ConnState::Connecting {
                return;
            }
            match s.read(&mut self.scratch) {
                Ok(0) => return self.fail(ci, "connection closed by the broker".into()),
                Ok(n) => {
                    c.rbuf.extend_from_slice(&self.scratch[..n]);
                    let now = clock::now_ns();
                    if !self.decode_all(ci, now) {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.fail(ci, format!("read: {e}")),
            }
        }
    }

    pub(super) fn flush_dirty(&mut self, now: u64) {
        for ci in std::mem::take(&mut self.dirty) {
            self.conns[ci].dirty = false;
            self.flush(ci, now);
        }
    }

    /// Writes what is buffered until the socket would block; pumps a publisher that was
    /// held back by a full buffer once it drains.
    pub(super) fn flush(&mut self, ci: usize, now: u64) {
        let c = &mut self.conns[ci];
        if c.state == ConnState::Connecting || c.state == ConnState::Closed {
            return;
        }
        let was_full = c.wbuf.len() >= WBUF_HIGH;
        let Some(s) = c.stream.as_mut() else { return };
        while !c.wbuf.is_empty() {
            match s.write(&c.wbuf) {
                Ok(0) => return self.fail(ci, "write returned 0".into()),
                Ok(n) => {
                    c.wbuf.advance(n);
                    c.last_write_ns = now;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.fail(ci, format!("write: {e}")),
            }
        }
        // TLS records or a WebSocket frame (or the upgrade request) a short write left behind
        // go out on this writable event.
        if let Err(e) = s.flush() {
            return self.fail(ci, format!("write: {e}"));
        }
        if was_full && c.wbuf.len() < WBUF_HIGH && c.publisher.as_ref().is_some_and(|p| !p.in_heap)
        {
            self.pump(ci, now);
        }
    }
}
