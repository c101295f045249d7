//! Socket I/O of a shard: accepting connections, reading and decoding what they send, and
//! writing what is queued for them (encoding into the connection's write buffer, flushing
//! once per turn). Reads hand each decoded packet to `handle`.

use std::io::{self, Read};
use std::sync::atomic::Ordering;
use std::time::Instant;

use mio::{Interest, Token};

use super::conn::Conn;
use super::handshakes::Handshaken;
use super::lifecycle::Close;
use super::per_ip::PerIpConnections;
use super::pool::{self, BufferPool, MIN_READ};
use super::{Shard, READ_BUDGET};
use crate::protocol::{self, Packet};
use crate::session::SendPublish;
use crate::transport::ClientAddr;

/// See [`Shard::write_early`]. The largest buffer the pool keeps: below it a buffer that grew
/// is reused turn after turn (steady small-message traffic grows nothing), above it every
/// growth is a reallocation that copies the buffer.
const EARLY_WRITE_BYTES: usize = pool::MAX_POOLED;

/// When `rbuf` holds the fixed header of a packet larger than [`pool::MAX_READ_SIZE`] whose
/// remaining bytes do not fit its `spare` capacity: how many more bytes it needs. `None` for
/// small packets (the read size serves them) and for a frame above `max_packet` (refused by
/// the decoder, never reserved for).
fn big_packet_missing(rbuf: &[u8], spare: usize, max_packet: usize) -> Option<usize> {
    let size = protocol::frame_size(rbuf)?;
    if size <= pool::MAX_READ_SIZE || size > max_packet {
        return None;
    }
    let missing = size.checked_sub(rbuf.len())?;
    (missing > spare).then_some(missing)
}

/// Room in `conn.rbuf` for the next input: at least [`MIN_READ`] bytes, and at least `want`
/// (0 for a read, which takes what room there is; the size of received bytes about to be
/// appended).
fn make_read_room(buffers: &mut BufferPool, conn: &mut Conn, max_packet: usize, want: usize) {
    let spare = conn.rbuf.capacity() - conn.rbuf.len();
    if let Some(missing) = big_packet_missing(&conn.rbuf, spare, max_packet) {
        // A large packet still arriving: room for all of it, once, instead of growing the
        // buffer 64 KiB at a time and copying the partial packet each time (quadratic: 62 s
        // of CPU for a 128 MB PUBLISH). Capacity is not memory: pages are touched only as
        // the bytes arrive.
        buffers.make_room(&mut conn.rbuf, missing.max(want));
    } else if spare < want.max(MIN_READ) {
        // Room for the connection's read size (see `Conn::rbuf_target`), or more for a large
        // packet still arriving; a tail of at least MIN_READ is read into as it is, so that a
        // buffer whose payloads are still in flight is not replaced before it is full.
        let room = conn.rbuf_target.room_for(conn.rbuf.len()).max(want);
        buffers.make_room(&mut conn.rbuf, room);
    }
}

/// On a listener that defers its client's address (PROXY protocol, a trusted
/// `X-Forwarded-For`): once the transport knows the client, that address becomes the
/// connection's peer (logs, `max_connections_per_ip`) and is counted. False: the client is at
/// `max_connections_per_ip` (nothing counted; the caller closes the connection).
fn settle_peer(conn: &mut Conn, per_ip: &PerIpConnections) -> bool {
    let addr = match conn.stream.client_addr() {
        ClientAddr::Pending => return true,
        ClientAddr::Socket => conn.peer,
        ClientAddr::Named(a) => a,
    };
    if addr != conn.peer {
        log::debug!(
            "Connection from {} is client {addr} behind a proxy.",
            conn.peer
        );
        conn.peer = addr;
    }
    conn.peer_settled = per_ip.try_open(addr.ip());
    conn.peer_settled
}

impl Shard {
    /// Reads what a TLS connection's rustls already decrypted but nobody read yet. Call it
    /// after anything that stopped reading a connection early (a migration to another shard,
    /// a CONNECT put on hold): unlike bytes in the kernel's socket buffer, which re-registering
    /// with the poll announces again, this plaintext would otherwise wait for the client's
    /// next packet. A no-op for plain TCP.
    pub(crate) fn resume_input(&mut self, key: usize) {
        if self
            .conns
            .get_mut(key)
            .is_some_and(|c| c.stream.has_buffered_input())
        {
            self.on_readable(key, false);
            self.queue_tls_records(key);
        }
    }

    /// TLS: reading may leave records to send (the handshake's answer, a session ticket, an
    /// alert): flush them at the end of the turn with everything else.
    pub(super) fn queue_tls_records(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if conn.stream.wants_write() {
                conn.mark_dirty(key, &mut self.dirty);
            }
        }
    }

    /// Accepts until `WouldBlock` (edge-triggered readiness).
    pub(super) fn accept(&mut self, listener: usize) {
        loop {
            let l = &self.listeners[listener];
            match l.accept() {
                Ok((stream, peer)) => {
                    self.stats.sockets_accepted += 1;
                    if !self.accept_rate.take(Instant::now()) {
                        self.rate_limited += 1;
                        if self.rate_limited.is_power_of_two() {
                            log::warn!(
                                "Refusing connection from {peer}: connection_rate_limit reached \
                                 ({} refused on shard {}).",
                                self.rate_limited,
                                self.id
                            );
                        }
                        continue;
                    }
                    let open = self.shared.connections.fetch_add(1, Ordering::Relaxed);
                    if self
                        .shared
                        .config
                        .max_connections
                        .is_some_and(|max| open >= max)
                    {
                        self.shared.connections.fetch_sub(1, Ordering::Relaxed);
                        log::warn!("Refusing connection from {peer}: max_connections reached.");
                        continue;
                    }
                    // A proxied client is counted by its own address once it is known.
                    let deferred = self.listeners[listener].defers_client_addr();
                    if !deferred && !self.shared.per_ip.try_open(peer.ip()) {
                        self.shared.connections.fetch_sub(1, Ordering::Relaxed);
                        self.per_ip_refused += 1;
                        if self.per_ip_refused.is_power_of_two() {
                            log::warn!(
                                "Refusing connection from {peer}: max_connections_per_ip reached \
                                 ({} refused on shard {}).",
                                self.per_ip_refused,
                                self.id
                            );
                        }
                        continue;
                    }
                    // Writes are coalesced per loop turn already: Nagle would only add delay.
                    let _ = stream.set_nodelay(self.shared.config.clients.set_tcp_nodelay);
                    let l = &self.listeners[listener];
                    let stream = match l.wrap(stream) {
                        Ok(t) => t,
                        Err(e) => {
                            log::error!("Cannot start TLS for a client from {peer}: {e}.");
                            self.shared.connection_gone(peer.ip(), !deferred);
                            continue;
                        }
                    };
                    let job = Handshaken {
                        stream,
                        peer,
                        listener,
                        counted: !deferred,
                        accepted: Instant::now(),
                        shard: self.id as u16,
                    };
                    // A TLS listener's shards always have handshake threads (the broker
                    // starts them with the listener); `submit` gives the job back only once
                    // they stopped at shutdown, and the shard then handshakes it itself.
                    let job = match self.shared.handshakers.get() {
                        Some(h) if job.stream.server_handshake_pending() => match h.submit(job) {
                            Ok(()) => continue,
                            Err(job) => job,
                        },
                        _ => job,
                    };
                    self.admit(job);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: keep serving the connections we have.
                    log::error!("accept failed on shard {}: {e}", self.id);
                    return;
                }
            }
        }
    }

    /// Serves a connection accepted here: straight from `accept`, or back from the
    /// handshake thread with its TLS handshake done (then it is read at once: its client's
    /// CONNECT may already wait decrypted in rustls, where no readiness event announces it).
    fn admit(&mut self, job: Handshaken) {
        let l = &self.listeners[job.listener];
        let mut conn = Conn::new(job.stream, job.peer, l.allow_anonymous);
        conn.peer_settled = job.counted;
        conn.auth = l.auth.clone();
        conn.listener = super::conn::listener_index(job.listener);
        // connect_timeout counts from the accept, handshake included.
        conn.last_rx = job.accepted;
        match self.add_conn(conn) {
            None => self.shared.connection_gone(job.peer.ip(), job.counted),
            Some(key) => {
                self.resume_input(key);
                self.queue_tls_records(key);
            }
        }
    }

    /// Admits the connections the handshake thread gave back this turn.
    pub(super) fn admit_handshaken(&mut self) {
        for job in std::mem::take(&mut self.handshaken) {
            self.admit(job);
        }
    }

    /// The connection's client is at `max_connections_per_ip` (see [`settle_peer`]): closed.
    fn refuse_settled_peer(&mut self, key: usize) {
        self.per_ip_refused += 1;
        if let Some(conn) = self.conns.get(key) {
            if self.per_ip_refused.is_power_of_two() {
                log::warn!(
                    "Refusing connection from {}: max_connections_per_ip reached ({} refused \
                     on shard {}).",
                    conn.peer,
                    self.per_ip_refused,
                    self.id
                );
            }
        }
        self.close(key, Close::Tls("max_connections_per_ip reached".into()));
    }

    /// Registers a connection with this shard's poll; returns its slot.
    pub(crate) fn add_conn(&mut self, conn: Conn) -> Option<usize> {
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let conn = entry.insert(conn);
        if let Err(e) = self
            .registry
            .register(&mut conn.stream, Token(key), Interest::READABLE)
        {
            log::error!("cannot register connection from {}: {e}", conn.peer);
            self.conns.remove(key);
            return None;
        }
        Some(key)
    }

    /// Reads until `WouldBlock` (or a fairness budget), decoding and handling every complete
    /// packet as it goes; then gives the read buffer back to the pool unless a partial packet
    /// is left in it. `peer_closed`: the event says the peer's FIN (or an error) is there.
    pub(super) fn on_readable(&mut self, key: usize, peer_closed: bool) {
        self.read_and_process(key, peer_closed);
        if let Some(conn) = self.conns.get_mut(key) {
            conn.release_idle_rbuf(&mut self.buffers);
        }
    }

    /// Bytes a receiving connection's socket received (io_uring; see `Registry::receive`):
    /// appended to its read buffer and handled as `on_readable` handles what it reads.
    pub(super) fn on_received(&mut self, key: usize, bytes: &[u8]) {
        let max_packet = self.max_packet();
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        self.buffers.ensure(&mut conn.rbuf);
        make_read_room(&mut self.buffers, conn, max_packet, bytes.len());
        conn.rbuf.extend_from_slice(bytes);
        self.stats.bytes_in += bytes.len() as u64;
        if self.process_frames(key) {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.note_progress_on_large_packet();
                conn.release_idle_rbuf(&mut self.buffers);
            }
        }
    }

    /// Switches an active plain-TCP connection to receiving (`Registry::receive`, io_uring):
    /// from now on its bytes come with the loop's wait, with no `read` per message. Only
    /// once it is on its home shard for good (a connection may still move before its
    /// CONNECT is accepted, and bytes a receive took would not move with it).
    pub(crate) fn start_receiving(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.receiving || !conn.peer_settled {
            return;
        }
        if conn.stream.plain_fd().is_some() {
            conn.receiving = self
                .registry
                .receive(&conn.stream, Token(key), conn.want_write)
                .unwrap_or(false);
        }
    }

    fn max_packet(&self) -> usize {
        match self.shared.config.max_packet_size {
            0 => protocol::MAX_PACKET_SIZE,
            max => max as usize,
        }
    }

    /// `peer_closed`: the readiness event carried EPOLLRDHUP/EPOLLHUP/EPOLLERR. Then the loop
    /// reads on to the end of stream (or the error) even after a short read: a FIN that came
    /// with the last data raises no later edge, and the connection would otherwise sit in
    /// CLOSE-WAIT, will unpublished, until its keep-alive ran out (forever with keep-alive 0).
    fn read_and_process(&mut self, key: usize, peer_closed: bool) {
        let mut budget = READ_BUDGET;
        let max_packet = self.max_packet();
        // Bytes read in this readiness event (see `ReadTarget::filled`).
        let mut in_event = 0;
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if conn.receiving {
                // Its bytes come with the reactor's events, in order: a read here would take
                // some out of turn. Its end of stream comes that way too.
                return;
            }
            self.buffers.ensure(&mut conn.rbuf);
            make_read_room(&mut self.buffers, conn, max_packet, 0);
            let spare = conn.rbuf.spare_capacity_mut();
            let offered = spare.len();
            // SAFETY: `read` only writes into the slice; we advance `len` by what it reports.
            let slice = unsafe {
                std::slice::from_raw_parts_mut(spare.as_mut_ptr().cast::<u8>(), spare.len())
            };
            let read = conn.stream.read(slice);
            if !conn.peer_settled && !settle_peer(conn, &self.shared.per_ip) {
                self.refuse_settled_peer(key);
                return;
            }
            match read {
                Ok(0) => {
                    self.close(key, Close::Gone("connection closed by peer".into()));
                    return;
                }
                Ok(n) => {
                    // A short read of a plain TCP socket took everything it held: data that
                    // arrives later raises a new edge, so the loop ends here instead of
                    // spending a read() on WouldBlock (half the reads of a busy point-to-point
                    // run). Not for TLS: rustls may hold more plaintext or socket bytes. Not
                    // when the event said the peer closed: the end of stream is still to read.
                    let drained = n < offered && conn.stream.short_read_drains() && !peer_closed;
                    // SAFETY: the first `n` bytes of the spare capacity were just written.
                    unsafe { conn.rbuf.set_len(conn.rbuf.len() + n) };
                    self.stats.bytes_in += n as u64;
                    in_event += n;
                    if n == offered {
                        // The socket may hold more than the buffer took: grow if that is so.
                        conn.rbuf_target.filled(in_event, &mut self.buffers);
                    }
                    if conn.tls_identity.is_none() {
                        // The handshake is done (plaintext arrived): before CONNECT is decoded.
                        if let Some(id) = conn.stream.tls_identity() {
                            conn.tls_identity = Some(id.into());
                        }
                    }
                    if !self.process_frames(key) {
                        return;
                    }
                    if let Some(conn) = self.conns.get_mut(key) {
                        conn.note_progress_on_large_packet();
                    }
                    budget = budget.saturating_sub(n);
                    // Plaintext already decrypted inside rustls would never be announced by
                    // the socket again: read it before yielding.
                    let buffered = self
                        .conns
                        .get_mut(key)
                        .is_some_and(|c| c.stream.has_buffered_input());
                    if drained {
                        return;
                    }
                    if budget == 0 && !buffered {
                        // Fairness: continue on the next turn. Edge-triggered readiness will not
                        // report these bytes again, so re-arm by re-registering.
                        if let Some(conn) = self.conns.get_mut(key) {
                            let interest = Self::interest(conn);
                            let _ =
                                self.registry
                                    .reregister(&mut conn.stream, Token(key), interest);
                        }
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if conn.stream.is_layer_error(&e) => {
                    self.close(key, Close::Tls(e.to_string()));
                    return;
                }
                Err(e) => {
                    self.close(key, Close::Gone(format!("read error: {e}")));
                    return;
                }
            }
        }
    }

    /// Decodes and handles every complete packet in the read buffer. Returns false when the
    /// connection is gone from this shard (closed or moved).
    pub(crate) fn process_frames(&mut self, key: usize) -> bool {
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return false;
            };
            if conn.pending_connect.is_some() {
                // CONNECT's password is being checked: the rest waits in the read buffer.
                return true;
            }
            if conn.version.is_none() {
                if let Err(e) = protocol::check_first_packet(&conn.rbuf) {
                    self.on_decode_error(key, None, e);
                    return false;
                }
            }
            let max = self.shared.config.max_packet_size;
            // Only for the first packet: the level a CONNECT asks for, read before decoding so
            // that a CONNECT the decoder rejects is still answered in the client's version.
            let level = match conn.version {
                None => protocol::connect_level(&conn.rbuf),
                Some(_) => None,
            };
            match protocol::decode(&mut conn.rbuf, conn.version, max) {
                Ok(Some(packet)) => {
                    conn.last_rx = Instant::now();
                    if !self.handle_packet(key, packet) {
                        return false;
                    }
                }
                Ok(None) => {
                    // Everything complete is handled: an empty buffer goes back to the pool
                    // (this also covers callers other than `on_readable`: adoption, auth).
                    conn.release_idle_rbuf(&mut self.buffers);
                    return true;
                }
                Err(e) => {
                    self.on_decode_error(key, level, e);
                    return false;
                }
            }
        }
    }

    /// Encodes `packet` onto the connection's write buffer; it is flushed at the end of the turn.
    pub(crate) fn send(&mut self, key: usize, packet: &Packet) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let Packet::Publish(p) = packet {
            return self.write_publish(key, &p.topic, protocol::PublishRef::new(p));
        }
        let version = conn.version.unwrap_or(protocol::ProtocolVersion::V311);
        self.buffers.ensure(&mut conn.wbuf);
        protocol::encode(packet, version, &mut conn.wbuf);
        conn.mark_dirty(key, &mut self.dirty);
        self.stats.packets_out += 1;
    }

    /// Encodes a PUBLISH a session decided to send, straight from the shared message.
    pub(crate) fn send_publish(&mut self, key: usize, p: &SendPublish) {
        let d = &p.delivery;
        self.write_publish(key, &d.msg.topic, d.msg.publish_ref(d, p.packet_id, p.dup));
    }

    /// Writes `publish` (whose topic is `topic`) onto the connection's buffer, with this
    /// connection's topic alias when it has one ([MQTT-3.3.2-12]). Nothing is cloned: the
    /// alias is a patch on the borrowed parts.
    fn write_publish(
        &mut self,
        key: usize,
        topic: &protocol::ByteStr,
        mut publish: protocol::PublishRef,
    ) {
        if self.mounted {
            if let Some(mount) = self.mount_of(key) {
                // Only a session resumed here with messages from outside its mount point
                // has one outside (`offer` keeps the rest out): not sent, as mosquitto.
                let Some(rest) = super::mount::strip(mount, publish.topic) else {
                    return;
                };
                publish.topic = rest;
            }
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let version = conn.version.unwrap_or(protocol::ProtocolVersion::V311);
        if conn.wbuf.len() >= EARLY_WRITE_BYTES
            && protocol::publish_encoded_len(&publish, version)
                > conn.wbuf.capacity() - conn.wbuf.len()
        {
            self.write_early(key);
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        self.buffers.ensure(&mut conn.wbuf);
        if conn.aliases_out.max > 0 {
            if let Some((alias, send_topic)) = conn.aliases_out.assign(topic) {
                publish.patch.topic_alias = Some(alias);
                if !send_topic {
                    publish.topic = &[];
                }
            }
        }
        let payload_len = publish.payload.len();
        protocol::encode_publish(&publish, version, &mut conn.wbuf);
        conn.mark_dirty(key, &mut self.dirty);
        self.message_out(payload_len);
        self.message_out_to(key, topic, &publish);
    }

    /// Writes what the connection's buffer holds, in the middle of a turn: the next PUBLISH
    /// would make a buffer that holds [`EARLY_WRITE_BYTES`] grow, and growing copies what it
    /// holds (a reallocation), so a burst of 64 KiB messages to one client cost a second copy
    /// of every byte (`results/large-20261207`). Written now, the buffer keeps its capacity
    /// for the next one. What may not go yet (persistence, a SUBACK before its replica
    /// update) stays, as in `flush`; so does what the socket does not take. An error is left
    /// to the turn's flush, which meets it again and closes: closing here could run in the
    /// middle of routing.
    fn write_early(&mut self, key: usize) {
        if self.output_held() {
            return;
        }
        if let Some(conn) = self.conns.get_mut(key) {
            let _ = conn.write_out(&mut self.stats.bytes_out);
        }
    }

    /// No connection's buffer may be written now: it may hold a SUBACK whose replica update
    /// is not queued yet (outbox), or a packet id the store does not know yet (this turn's
    /// batch, submitted at the turn's end); it goes at the end of this or a later turn.
    fn output_held(&self) -> bool {
        self.outbox.holds_index_update() || self.batch.holds_output()
    }

    fn interest(conn: &Conn) -> Interest {
        if conn.writable_len() == 0 && !conn.stream.wants_write() {
            Interest::READABLE
        } else {
            Interest::READABLE | Interest::WRITABLE
        }
    }

    /// Writes as much of the connection's buffer as the socket takes and persistence allows
    /// (`Conn::writable_len`); registers WRITABLE interest for the rest that may go (interest
    /// recomputed from buffer state, ARCHITECTURE.md §9). Output held for the store is not written
    /// and needs no interest: the store's progress marks the connection dirty again.
    pub(crate) fn flush(&mut self, key: usize) {
        let held = self.output_held();
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if held {
            // Flushed at the end of this or a later turn, once it may go.
            conn.mark_dirty(key, &mut self.dirty);
            return;
        }
        conn.dirty = false;
        if let Err(e) = conn.write_out(&mut self.stats.bytes_out) {
            self.close(key, Close::Gone(format!("write error: {e}")));
            return;
        }
        // All sent: the buffer goes back to the pool (which drops one a burst made large).
        self.buffers.give_if_empty(&mut conn.wbuf);
        let want_write = conn.writable_len() > 0 || conn.stream.wants_write();
        if want_write != conn.want_write {
            conn.want_write = want_write;
            let interest = Self::interest(conn);
            let _ = self
                .registry
                .reregister(&mut conn.stream, Token(key), interest);
        }
    }

    pub(super) fn flush_dirty(&mut self) {
        if self.output_held() {
            // The turn's end (after the batch is submitted, or the update queued) writes them.
            return;
        }
        self.send_batched();
        // In the order the connections were first written to this turn: a delivery goes out
        // before the acknowledgement of the PUBLISH that caused it (routing comes before the
        // PUBACK), so a subscriber's latency does not include the publisher's send, which on
        // loopback runs the receiver's TCP input and wake-up inline.
        let mut next = 0;
        while let Some(&key) = self.dirty.get(next) {
            next += 1;
            self.flush(key);
        }
        self.dirty.clear();
    }

    /// io_uring: what may go to the plain-TCP connections written to this turn is offered
    /// in one system call ([`crate::reactor::SendBatch`]); `flush` then finds it written and
    /// does the rest as always (the buffer back to the pool, interest), or writes what a full
    /// socket did not take (and meets an error a send hit).
    fn send_batched(&mut self) {
        let Some(batch) = self.sends.as_mut() else {
            return;
        };
        if self.dirty.len() < 2 || self.batch.holds_output() {
            return;
        }
        batch.clear();
        for &key in &self.dirty {
            // A slot closed and reused this turn may be listed twice: its flag says whether
            // it was taken already (`flush` clears it anyway).
            let Some(conn) = self.conns.get_mut(key).filter(|c| c.dirty) else {
                continue;
            };
            conn.dirty = false;
            let allowed = conn.writable_len();
            if let (Some(fd), true) = (conn.stream.plain_fd(), allowed > 0) {
                batch.push(key, fd, &conn.wbuf[..allowed]);
            }
        }
        if batch.len() < 2 {
            return;
        }
        // SAFETY: the buffers are the connections' `wbuf`s, untouched until `send` returns.
        let Some(written) = (unsafe { batch.send() }) else {
            return;
        };
        for (key, n) in written {
            if n > 0 {
                self.conns[key].advance_written(n);
                self.stats.bytes_out += n as u64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_big_packet_gets_room_for_all_of_it_a_small_one_none() {
        let max = protocol::MAX_PACKET_SIZE;
        // PUBLISH announcing 8 MiB of remaining length, 4096 bytes of it read, no room left.
        let mut head = vec![0x30, 0x80, 0x80, 0x80, 0x04];
        head.resize(4096, 0);
        let size = 5 + 8 * 1024 * 1024;
        assert_eq!(big_packet_missing(&head, 0, max), Some(size - 4096));
        assert_eq!(
            big_packet_missing(&head, size, max),
            None,
            "it fits already"
        );
        assert_eq!(
            big_packet_missing(&head, 0, 1024 * 1024),
            None,
            "above the maximum"
        );
        assert_eq!(big_packet_missing(&[0x30, 0x05], 0, max), None, "small");
        assert_eq!(
            big_packet_missing(&[0x30, 0x80], 0, max),
            None,
            "header incomplete"
        );
    }
}
