//! CONNECT: client-id rules, the anonymous policy, moving the connection to the home shard of
//! its client id, session takeover and resumption, CONNACK.

use std::time::Duration;

use crate::protocol::reason::v3;
use crate::protocol::{ByteStr, ConnAck, Connect, DecodeError, Packet, ProtocolVersion};
use crate::session::{Limits, Session};
use crate::shard::conn::{Conn, ConnState};
use crate::shard::inbox::{Migrating, ShardMsg};
use crate::shard::{home_shard, Close, SessionSlot, Shard};

impl Shard {
    /// Handles CONNECT on a connection awaiting it.
    pub(crate) fn handle_connect(&mut self, key: usize, connect: Connect) -> bool {
        let Some(conn) = self.conns.get_mut(key) else { return false };
        conn.version = Some(connect.version);
        let allow_anonymous = conn.allow_anonymous;

        let mut client_id = connect.client_id.clone();
        if client_id.is_empty() {
            // 3.1 requires an id; 3.1.1 allows an empty one only with clean session
            // [MQTT-3.1.3-7], [MQTT-3.1.3-8]; the server then assigns one [MQTT-3.1.3-6].
            if connect.version == ProtocolVersion::V31 || !connect.clean_start {
                return self.refuse(key, v3::IDENTIFIER_REJECTED, "empty client id without clean session");
            }
            client_id = self.generate_client_id();
        }
        if !allow_anonymous {
            // No authentication backend exists yet, so a listener that refuses anonymous
            // clients refuses everyone, as mosquitto does with allow_anonymous false and no
            // password file.
            return self.refuse(key, v3::NOT_AUTHORIZED, "anonymous clients are not allowed on this listener");
        }
        let max_keepalive = self.shared.config.max_keepalive;
        if connect.keep_alive > max_keepalive {
            // 3.x has no way to tell the client to use less; mosquitto refuses such clients
            // with "identifier rejected" and so do we.
            return self.refuse(key, v3::IDENTIFIER_REJECTED, "keep-alive above max_keepalive");
        }
        let home = home_shard(client_id.as_bytes(), self.peers.len());
        if home != self.id {
            self.migrate(key, home, connect);
            return false;
        }
        self.attach(key, connect, client_id)
    }

    /// Queues a CONNACK refusal with `code` and closes.
    fn refuse(&mut self, key: usize, code: u8, why: &str) -> bool {
        let label = self.conns.get(key).map(|c| c.peer.to_string()).unwrap_or_default();
        log::info!("Refusing client from {label}: {why} (CONNACK {code}).");
        self.send(key, &Packet::ConnAck(ConnAck { session_present: false, code, ..Default::default() }));
        self.close(key, Close::Refused);
        false
    }

    /// An id for a client that sent an empty one, unique and homed on this shard (so that a
    /// later reconnect with the assigned id finds its session here).
    fn generate_client_id(&mut self) -> ByteStr {
        let n = self.peers.len();
        loop {
            self.next_client_number += 1;
            let id = format!("auto-{}-{:x}", self.id, self.next_client_number);
            if home_shard(id.as_bytes(), n) == self.id {
                let id = ByteStr::from(id);
                if !self.session_by_id.contains_key(&id) {
                    return id;
                }
            }
        }
    }

    /// Hands the connection to shard `home`, with the CONNECT and any bytes read after it.
    fn migrate(&mut self, key: usize, home: usize, connect: Connect) {
        let mut conn = self.conns.remove(key);
        let _ = self.poll.registry().deregister(&mut conn.stream);
        let m = Migrating {
            stream: conn.stream,
            peer: conn.peer,
            rbuf: conn.rbuf,
            connect,
            allow_anonymous: conn.allow_anonymous,
        };
        self.push_to(home, ShardMsg::Adopt(Box::new(m)));
    }

    /// Takes in a connection moved here by another shard and finishes its CONNECT.
    pub(crate) fn adopt(&mut self, m: Migrating) {
        let mut conn = Conn::new(m.stream, m.peer, m.allow_anonymous);
        conn.rbuf = m.rbuf;
        let Some(key) = self.add_conn(conn) else {
            self.shared.connections.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            return;
        };
        if self.handle_connect(key, m.connect) {
            self.process_frames(key);
        }
    }

    /// Binds the connection to its session (new, resumed or taken over) and sends CONNACK,
    /// then everything the resumed session still owes the client.
    fn attach(&mut self, key: usize, connect: Connect, client_id: ByteStr) -> bool {
        let clean = connect.clean_start;
        let mut resumed = None;
        if let Some(&slot) = self.session_by_id.get(&client_id) {
            if let Some(old) = self.sessions[slot].session.conn {
                // [MQTT-3.1.4-2]: the existing connection is closed (its will is published).
                self.close(old, Close::TakenOver);
            }
            if clean || self.sessions[slot].session.clean {
                // [MQTT-3.1.2-6]: a clean session discards the previous one.
                self.end_session(slot);
            } else {
                resumed = Some(slot);
            }
        }
        let session_present = resumed.is_some();
        let limits = Limits {
            max_inflight: self.shared.config.max_inflight_messages,
            max_queued: self.shared.config.max_queued_messages,
        };
        let slot = match resumed {
            Some(slot) => slot,
            None => {
                let generation = self.next_generation;
                self.next_generation = self.next_generation.wrapping_add(1);
                let session = Session::new(client_id.clone(), clean, connect.version, limits);
                let slot = self.sessions.insert(SessionSlot { generation, session });
                self.session_by_id.insert(client_id.clone(), slot);
                slot
            }
        };
        let s = &mut self.sessions[slot].session;
        s.clean = clean;
        s.version = connect.version;
        s.conn = Some(key);
        s.will = connect.will;
        s.limits = limits;

        let conn = &mut self.conns[key];
        conn.state = ConnState::Active { session: slot };
        conn.client_id = Some(client_id.clone());
        conn.idle_limit = match connect.keep_alive {
            0 => None,
            // [MQTT-3.1.2-24]: one and a half times the keep-alive.
            k => Some(Duration::from_millis(u64::from(k) * 1500)),
        };
        log::info!(
            "New client connected from {} as {} (p{}, c{}, k{}).",
            conn.peer,
            client_id,
            connect.version.level(),
            u8::from(clean),
            connect.keep_alive
        );
        // [MQTT-3.2.2-1..3]: session present only when a stored session was resumed.
        self.send(key, &Packet::ConnAck(ConnAck { session_present, code: v3::ACCEPTED, ..Default::default() }));
        let mut out = std::mem::take(&mut self.out);
        self.sessions[slot].session.resume(&mut out);
        self.out = out;
        self.send_session_output(key);
        true
    }

    /// The CONNACK owed before closing on a decode error: an unsupported protocol level still
    /// gets "unacceptable protocol version" [MQTT-3.1.2-2].
    pub(crate) fn connack_for_decode_error(&self, key: usize, e: &DecodeError) -> Option<Packet> {
        let conn = self.conns.get(key)?;
        if conn.state != ConnState::AwaitConnect || e.reason_code() != 0x84 {
            return None;
        }
        Some(Packet::ConnAck(ConnAck {
            session_present: false,
            code: v3::UNACCEPTABLE_PROTOCOL_VERSION,
            ..Default::default()
        }))
    }
}
