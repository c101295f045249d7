//! What the broker does when it receives each packet, one file per packet family (as
//! mosquitto's `handle_*.c`). A handler is a function of the context the shard hands it
//! (`shard::ctx`): [`SessionCtx`] for a connected client's packets, [`Ctx`] before CONNECT,
//! `Services` for a will. Its signature is what it may touch; the shard's fields are out of
//! its reach. The shard calls in through the entry points on those contexts
//! (`handle_packet`, `decode_error`, `password_checked`, `connect_adopted`, `publish_will`).
//! Shard thread only. Each handler returns `false` when the connection is gone from this
//! shard (closed or moved to another shard), so the read loop stops touching it.

mod ack;
pub(crate) mod auth;
mod client_ids;
mod connect;
pub(crate) mod hooks;
mod publish;
mod subscribe;

use crate::protocol::reason::v5;
use crate::protocol::{DecodeError, Disconnect, Packet};
use crate::shard::ctx::{Ctx, SessionCtx};
use crate::shard::Close;

impl Ctx<'_> {
    /// Dispatches one decoded packet of this connection.
    #[inline]
    pub(crate) fn handle_packet(self, packet: Packet) -> bool {
        let mut cx = match self.attached() {
            Ok(cx) => cx,
            Err(mut cx) => {
                if auth::exchanging(&mut cx) {
                    // Between CONNECT and CONNACK of an enhanced authentication.
                    return match packet {
                        Packet::Auth(a) => auth::handle_auth_connecting(&mut cx, a),
                        Packet::Disconnect(_) => {
                            cx.close(Close::Graceful);
                            false
                        }
                        other => {
                            let reason =
                                format!("{} during CONNECT's authentication", other.name());
                            cx.protocol_error(v5::PROTOCOL_ERROR, reason)
                        }
                    };
                }
                return match packet {
                    Packet::Connect(c) => connect::handle_connect(&mut cx, c),
                    other => {
                        let reason = format!("{} before CONNECT [MQTT-3.1.0-1]", other.name());
                        cx.protocol_error(v5::PROTOCOL_ERROR, reason)
                    }
                };
            }
        };
        let cx = &mut cx;
        match packet {
            Packet::Publish(p) => publish::handle_publish(cx, p),
            Packet::PubAck(r) => ack::handle_puback(cx, r.packet_id),
            Packet::PubRec(r) => ack::handle_pubrec(cx, r.packet_id, r.reason),
            Packet::PubRel(r) => ack::handle_pubrel(cx, r.packet_id),
            Packet::PubComp(r) => ack::handle_pubcomp(cx, r.packet_id),
            Packet::Subscribe(s) => subscribe::handle_subscribe(cx, s),
            Packet::Unsubscribe(u) => subscribe::handle_unsubscribe(cx, u),
            Packet::PingReq => {
                // [MQTT-3.12.4-1]
                cx.send(&Packet::PingResp);
                true
            }
            Packet::Disconnect(d) => handle_disconnect(cx, d),
            Packet::Connect(_) => {
                cx.protocol_error(v5::PROTOCOL_ERROR, "second CONNECT [MQTT-3.1.0-2]".into())
            }
            Packet::Auth(a) => auth::handle_auth_session(cx, a),
            other => cx.protocol_error(
                v5::PROTOCOL_ERROR,
                format!("{} is not sent by clients", other.name()),
            ),
        }
    }

    /// A frame could not be decoded. An unsupported protocol level still gets its CONNACK
    /// before the close; a 5.0 client gets DISCONNECT with the error's reason code.
    pub(crate) fn decode_error(mut self, level: Option<u8>, e: DecodeError) {
        if let Some(packet) = connect::connack_for_decode_error(&mut self, level, &e) {
            self.send(&packet);
        }
        self.protocol_error(e.reason_code(), format!("bad packet: {e}"));
    }
}

/// DISCONNECT: no will unless 5.0's "disconnect with will message" [MQTT-3.1.2-10]; a
/// new Session Expiry Interval applies, except 0 -> non-zero [MQTT-3.14.2-2].
fn handle_disconnect(cx: &mut SessionCtx<'_>, d: Disconnect) -> bool {
    let s = cx.session();
    if let Some(expiry) = d.properties.session_expiry_interval {
        if s.expiry_interval == 0 && expiry != 0 {
            let reason = "session expiry changed from 0 on DISCONNECT [MQTT-3.14.2-2]".into();
            return cx.protocol_error(v5::PROTOCOL_ERROR, reason);
        }
        s.expiry_interval = expiry;
    }
    if d.reason == v5::DISCONNECT_WITH_WILL_MESSAGE {
        cx.close(Close::Gone("disconnected with will message".into()));
    } else {
        cx.session().will = None;
        cx.close(Close::Graceful);
    }
    false
}
