//! What the broker does when it receives each packet, one file per packet family (as
//! mosquitto's `handle_*.c`). Every handler is a method of [`Shard`] and runs on the shard
//! thread; each returns `false` when the connection is gone from this shard (closed or moved
//! to another shard), so the read loop stops touching it.

mod ack;
mod client_ids;
mod connect;
pub(crate) mod hooks;
mod publish;
mod subscribe;

use crate::protocol::reason::v5;
use crate::protocol::{DecodeError, Disconnect, Packet};
use crate::shard::conn::ConnState;
use crate::shard::{Close, Shard};

impl Shard {
    /// Dispatches one decoded packet.
    pub(crate) fn handle_packet(&mut self, key: usize, packet: Packet) -> bool {
        self.stats.packets_in += 1;
        let Some(conn) = self.conns.get(key) else {
            return false;
        };
        let session = match conn.state {
            ConnState::AwaitConnect => {
                return match packet {
                    Packet::Connect(c) => self.handle_connect(key, c),
                    other => {
                        let reason = format!("{} before CONNECT [MQTT-3.1.0-1]", other.name());
                        self.protocol_error(key, v5::PROTOCOL_ERROR, reason)
                    }
                };
            }
            ConnState::Active { session } => session,
        };
        match packet {
            Packet::Publish(p) => self.handle_publish(key, session, p),
            Packet::PubAck(r) => self.handle_puback(key, session, r.packet_id),
            Packet::PubRec(r) => self.handle_pubrec(key, session, r.packet_id, r.reason),
            Packet::PubRel(r) => self.handle_pubrel(key, session, r.packet_id),
            Packet::PubComp(r) => self.handle_pubcomp(key, session, r.packet_id),
            Packet::Subscribe(s) => self.handle_subscribe(key, session, s),
            Packet::Unsubscribe(u) => self.handle_unsubscribe(key, session, u),
            Packet::PingReq => {
                // [MQTT-3.12.4-1]
                self.send(key, &Packet::PingResp);
                true
            }
            Packet::Disconnect(d) => self.handle_disconnect(key, session, d),
            Packet::Connect(_) => self.protocol_error(
                key,
                v5::PROTOCOL_ERROR,
                "second CONNECT [MQTT-3.1.0-2]".into(),
            ),
            Packet::Auth(_) => {
                // Re-authentication needs the method of CONNECT, and no method is supported
                // (a CONNECT naming one is refused), so any AUTH is out of place [MQTT-4.12.0-6].
                self.protocol_error(
                    key,
                    v5::PROTOCOL_ERROR,
                    "AUTH without authentication method".into(),
                )
            }
            other => self.protocol_error(
                key,
                v5::PROTOCOL_ERROR,
                format!("{} is not sent by clients", other.name()),
            ),
        }
    }

    /// DISCONNECT: no will unless 5.0's "disconnect with will message" [MQTT-3.1.2-10]; a
    /// new Session Expiry Interval applies, except 0 -> non-zero [MQTT-3.14.2-2].
    fn handle_disconnect(&mut self, key: usize, slot: usize, d: Disconnect) -> bool {
        let Some(s) = self.sessions.get_mut(slot) else {
            return false;
        };
        if let Some(expiry) = d.properties.session_expiry_interval {
            if s.session.expiry_interval == 0 && expiry != 0 {
                let reason = "session expiry changed from 0 on DISCONNECT [MQTT-3.14.2-2]".into();
                return self.protocol_error(key, v5::PROTOCOL_ERROR, reason);
            }
            s.session.expiry_interval = expiry;
        }
        if d.reason == v5::DISCONNECT_WITH_WILL_MESSAGE {
            self.close(key, Close::Gone("disconnected with will message".into()));
        } else {
            s.session.will = None;
            self.close(key, Close::Graceful);
        }
        false
    }

    /// Closes the connection for a protocol violation (5.0 clients get DISCONNECT `code`).
    pub(crate) fn protocol_error(&mut self, key: usize, code: u8, reason: String) -> bool {
        self.close(key, Close::Protocol { code, reason });
        false
    }

    /// A frame could not be decoded. An unsupported protocol level still gets its CONNACK
    /// before the close; a 5.0 client gets DISCONNECT with the error's reason code.
    pub(crate) fn on_decode_error(&mut self, key: usize, level: Option<u8>, e: DecodeError) {
        if let Some(packet) = self.connack_for_decode_error(key, level, &e) {
            self.send(key, &packet);
        }
        self.protocol_error(key, e.reason_code(), format!("bad packet: {e}"));
    }
}
