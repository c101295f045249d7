//! The peer's side of a client session: CONNACK (and the flows it resumes), PUBLISH in at
//! QoS 0/1/2, and the acknowledgements that complete what the session sent.

use std::time::Duration;

use super::{ClientSession, CloseReason, Event, Outgoing, State};
use crate::protocol::reason::{v3, v5};
use crate::protocol::{ConnAck, Packet, PubResp, Publish, QoS, SubAck};

impl ClientSession {
    /// One packet from the peer.
    pub fn handle(&mut self, packet: Packet) {
        if self.state == State::Closed {
            return;
        }
        if self.state == State::AwaitingConnAck {
            match packet {
                Packet::ConnAck(ack) => self.on_connack(ack),
                other => self.protocol_error(format!("{} before CONNACK", other.name())),
            }
            return;
        }
        match packet {
            Packet::Publish(p) => self.on_publish(p),
            Packet::PubAck(r) => {
                if let Some(Outgoing::Qos1(_)) = self.outgoing.get(&r.packet_id) {
                    self.outgoing.remove(&r.packet_id);
                    self.events.push_back(Event::Acked {
                        packet_id: r.packet_id,
                        reason: r.reason,
                    });
                }
            }
            Packet::PubRec(r) => {
                if let Some(o @ (Outgoing::Qos2(_) | Outgoing::Released)) =
                    self.outgoing.get_mut(&r.packet_id)
                {
                    if r.reason >= 0x80 {
                        // 5.0: the flow ends here, no PUBREL [MQTT-4.3.3-4].
                        self.outgoing.remove(&r.packet_id);
                        self.events.push_back(Event::Acked {
                            packet_id: r.packet_id,
                            reason: r.reason,
                        });
                    } else {
                        // A repeated PUBREC gets its PUBREL again.
                        if !matches!(o, Outgoing::Released) {
                            self.events.push_back(Event::Received {
                                packet_id: r.packet_id,
                            });
                        }
                        *o = Outgoing::Released;
                        self.out
                            .push_back(Packet::PubRel(PubResp::new(r.packet_id)));
                    }
                }
            }
            Packet::PubRel(r) => {
                let known = self.incoming.remove(&r.packet_id).is_some();
                let mut comp = PubResp::new(r.packet_id);
                if !known && self.cfg.version.is_v5() {
                    comp.reason = v5::PACKET_IDENTIFIER_NOT_FOUND;
                }
                self.out.push_back(Packet::PubComp(comp));
            }
            Packet::PubComp(r) => {
                if let Some(Outgoing::Released) = self.outgoing.get(&r.packet_id) {
                    self.outgoing.remove(&r.packet_id);
                    self.events.push_back(Event::Acked {
                        packet_id: r.packet_id,
                        reason: r.reason,
                    });
                }
            }
            Packet::SubAck(SubAck {
                packet_id, codes, ..
            }) => {
                if self.subscribing.remove(&packet_id) {
                    self.events
                        .push_back(Event::Subscribed { packet_id, codes });
                }
            }
            Packet::UnsubAck(_) => {}
            Packet::PingResp => self.ping_sent = None,
            Packet::Disconnect(d) => self.close(CloseReason::Disconnected(d.reason)),
            other => self.protocol_error(format!("unexpected {} from the server", other.name())),
        }
    }

    fn on_connack(&mut self, ack: ConnAck) {
        let accepted = match self.cfg.version.is_v5() {
            true => ack.code == v5::SUCCESS,
            false => ack.code == v3::ACCEPTED,
        };
        if !accepted {
            self.close(CloseReason::Refused(ack.code));
            return;
        }
        self.state = State::Connected;
        let p = &ack.properties;
        if let Some(max) = p.receive_maximum {
            self.window = self.window.min(max.max(1));
        }
        if let Some(keep_alive) = p.server_keep_alive {
            self.keep_alive = Duration::from_secs(keep_alive.into());
        }
        self.peer_max_packet = p.maximum_packet_size.unwrap_or(0);
        if !ack.session_present {
            // The server has no state for us: what was in flight starts over as new.
            self.incoming.clear();
        }
        // Resume the flows the server's session still holds [MQTT-4.4.0-1], in id order.
        let mut ids: Vec<u16> = self.outgoing.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            match self.outgoing.get(&id) {
                Some(Outgoing::Qos1(p) | Outgoing::Qos2(p)) => {
                    let mut p = p.clone();
                    p.dup = true;
                    self.out.push_back(Packet::Publish(p));
                }
                Some(Outgoing::Released) => {
                    self.out.push_back(Packet::PubRel(PubResp::new(id)));
                }
                None => {}
            }
        }
        self.events.push_back(Event::Connected {
            session_present: ack.session_present,
        });
    }

    fn on_publish(&mut self, p: Publish) {
        if p.topic.is_empty() {
            // We never allow topic aliases (no Topic Alias Maximum in CONNECT).
            self.protocol_error("PUBLISH without a topic".into());
            return;
        }
        match p.qos {
            QoS::AtMostOnce => self.events.push_back(Event::Message(p)),
            QoS::AtLeastOnce => {
                if !self.cfg.manual_acks {
                    self.out
                        .push_back(Packet::PubAck(PubResp::new(p.packet_id)));
                }
                self.events.push_back(Event::Message(p));
            }
            QoS::ExactlyOnce => {
                let id = p.packet_id;
                let rec_sent = match self.incoming.get(&id) {
                    Some(&sent) => sent,
                    None => {
                        if self.incoming.len() >= self.incoming_limit() {
                            self.protocol_error(
                                "more unreleased QoS 2 messages than allowed".into(),
                            );
                            return;
                        }
                        let now = !self.cfg.manual_acks;
                        self.incoming.insert(id, now);
                        self.events.push_back(Event::Message(p));
                        now
                    }
                };
                // A resent PUBLISH (DUP, also on a later connection of a kept session) is
                // not delivered again, only acknowledged again once the owner acknowledged
                // it (before that, the owner's acknowledgement sends the PUBREC).
                if rec_sent {
                    self.out.push_back(Packet::PubRec(PubResp::new(id)));
                }
            }
        }
    }
}
