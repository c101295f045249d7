//! What the broker does when it receives each packet, one file per packet family (as
//! mosquitto's `handle_*.c`). Every handler is a method of [`Shard`] and runs on the shard
//! thread; each returns `false` when the connection is gone from this shard (closed or moved
//! to another shard), so the read loop stops touching it.

mod ack;
mod connect;
mod publish;
mod subscribe;

use crate::protocol::{DecodeError, Packet};
use crate::shard::conn::ConnState;
use crate::shard::{Close, Shard};

impl Shard {
    /// Dispatches one decoded packet.
    pub(crate) fn handle_packet(&mut self, key: usize, packet: Packet) -> bool {
        let Some(conn) = self.conns.get(key) else { return false };
        let session = match conn.state {
            ConnState::AwaitConnect => {
                return match packet {
                    Packet::Connect(c) => self.handle_connect(key, c),
                    other => self.protocol_error(key, format!("{} before CONNECT [MQTT-3.1.0-1]", other.name())),
                };
            }
            ConnState::Active { session } => session,
        };
        match packet {
            Packet::Publish(p) => self.handle_publish(key, session, p),
            Packet::PubAck(r) => self.handle_puback(key, session, r.packet_id),
            Packet::PubRec(r) => self.handle_pubrec(key, session, r.packet_id),
            Packet::PubRel(r) => self.handle_pubrel(key, session, r.packet_id),
            Packet::PubComp(r) => self.handle_pubcomp(key, session, r.packet_id),
            Packet::Subscribe(s) => self.handle_subscribe(key, session, s),
            Packet::Unsubscribe(u) => self.handle_unsubscribe(key, session, u),
            Packet::PingReq => {
                // [MQTT-3.12.4-1]
                self.send(key, &Packet::PingResp);
                true
            }
            Packet::Disconnect(_) => {
                // The will is discarded on DISCONNECT [MQTT-3.1.2-10].
                if let Some(s) = self.sessions.get_mut(session) {
                    s.session.will = None;
                }
                self.close(key, Close::Graceful);
                false
            }
            Packet::Connect(_) => self.protocol_error(key, "second CONNECT [MQTT-3.1.0-2]".into()),
            other => self.protocol_error(key, format!("{} is not sent by clients", other.name())),
        }
    }

    /// Closes the connection for a protocol violation.
    pub(crate) fn protocol_error(&mut self, key: usize, reason: String) -> bool {
        self.close(key, Close::Protocol(reason));
        false
    }

    /// A frame could not be decoded. An unsupported protocol level still gets its CONNACK
    /// (0x01, [MQTT-3.1.2-2]) before the close; anything else just closes.
    pub(crate) fn on_decode_error(&mut self, key: usize, e: DecodeError) {
        if let Some(packet) = self.connack_for_decode_error(key, &e) {
            self.send(key, &packet);
        }
        self.close(key, Close::Protocol(format!("bad packet: {e}")));
    }
}
