//! Session state: what the broker remembers about a client id between packets and, for a
//! persistent session (clean session 0), between connections.
//!
//! The state machine here is pure: it is given messages and acknowledgements and answers with
//! the packets to send. It does no I/O and never sees a socket, so the QoS flows are unit
//! tested without a network (see the tests below) and the shard only moves bytes.
//!
//! Owned by the session's home shard; shard thread only.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::message::SharedMessage;
use crate::protocol::{ByteStr, Packet, ProtocolVersion, PubResp, QoS, SubOptions, Will};

/// Where an outgoing QoS 1/2 message stands in its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutState {
    /// QoS 1 PUBLISH sent, waiting for PUBACK.
    AwaitPubAck,
    /// QoS 2 PUBLISH sent, waiting for PUBREC.
    AwaitPubRec,
    /// QoS 2 PUBREL sent, waiting for PUBCOMP.
    AwaitPubComp,
}

/// An outgoing QoS 1/2 message that the client has not finished acknowledging.
#[derive(Debug, Clone)]
pub struct Inflight {
    pub packet_id: u16,
    pub msg: SharedMessage,
    pub qos: QoS,
    pub retain: bool,
    pub state: OutState,
}

/// A message waiting for the inflight window (or for the client to come back).
#[derive(Debug, Clone)]
pub struct Queued {
    pub msg: SharedMessage,
    pub qos: QoS,
    pub retain: bool,
}

/// Per-session limits, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Outgoing QoS 1/2 messages in flight (0 = unlimited) — `max_inflight_messages`.
    pub max_inflight: u16,
    /// Messages queued beyond the window (0 = unlimited) — `max_queued_messages`.
    pub max_queued: usize,
}

/// What became of a message offered to a session.
#[allow(clippy::large_enum_variant)] // returned and consumed at once, never stored
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    /// Send this PUBLISH now.
    Send(Packet),
    /// Kept in the session queue.
    Queued,
    /// Dropped: QoS 0 for an offline client, or the queue is full.
    Dropped,
}

/// One session.
#[derive(Debug)]
pub struct Session {
    pub client_id: ByteStr,
    /// Clean session (3.x) / clean start: the session ends with the connection.
    pub clean: bool,
    /// The subscriptions, by filter (to remove them from the index when the session ends).
    pub subscriptions: HashMap<ByteStr, SubOptions>,
    /// Outgoing QoS 1/2 messages not yet fully acknowledged, in send order.
    pub inflight: VecDeque<Inflight>,
    /// Messages waiting for the window or for a reconnect.
    pub queue: VecDeque<Queued>,
    /// Packet ids of incoming QoS 2 messages already delivered and awaiting PUBREL: a
    /// retransmitted PUBLISH with such an id is acknowledged again but not delivered again
    /// ([MQTT-4.3.3-2], method B).
    pub incoming_qos2: HashSet<u16>,
    /// The connection (slot in the shard's connection slab) while connected.
    pub conn: Option<usize>,
    /// The protocol version of the last connection (how to encode queued messages).
    pub version: ProtocolVersion,
    /// The will of the current connection.
    pub will: Option<Will>,
    pub limits: Limits,
    /// Messages dropped because the queue was full (logged, later in $SYS).
    pub dropped: u64,
    next_packet_id: u16,
}

impl Session {
    /// A new, empty session.
    pub fn new(client_id: ByteStr, clean: bool, version: ProtocolVersion, limits: Limits) -> Session {
        Session {
            client_id,
            clean,
            subscriptions: HashMap::new(),
            inflight: VecDeque::new(),
            queue: VecDeque::new(),
            incoming_qos2: HashSet::new(),
            conn: None,
            version,
            will: None,
            limits,
            dropped: 0,
            next_packet_id: 0,
        }
    }

    fn window_open(&self) -> bool {
        self.limits.max_inflight == 0 || self.inflight.len() < usize::from(self.limits.max_inflight)
    }

    /// The next packet id not in use by an inflight message ([MQTT-2.3.1-2]: an id is
    /// reusable only after its flow completed).
    fn allocate_packet_id(&mut self) -> u16 {
        loop {
            self.next_packet_id = self.next_packet_id.wrapping_add(1);
            if self.next_packet_id == 0 {
                continue;
            }
            let id = self.next_packet_id;
            if !self.inflight.iter().any(|f| f.packet_id == id) {
                return id;
            }
        }
    }

    /// Starts the flow of a QoS 1/2 message and returns its PUBLISH.
    fn start_flow(&mut self, msg: SharedMessage, qos: QoS, retain: bool) -> Packet {
        let packet_id = self.allocate_packet_id();
        let publish = msg.to_publish(qos, packet_id, retain, false);
        let state = if qos == QoS::ExactlyOnce { OutState::AwaitPubRec } else { OutState::AwaitPubAck };
        self.inflight.push_back(Inflight { packet_id, msg, qos, retain, state });
        Packet::Publish(publish)
    }

    /// Offers a message for delivery at `qos` (already the granted QoS) with the RETAIN flag
    /// `retain` (1 only for retained messages sent because of a new subscription).
    pub fn offer(&mut self, msg: SharedMessage, qos: QoS, retain: bool) -> Offer {
        let connected = self.conn.is_some();
        if qos == QoS::AtMostOnce {
            return if connected {
                Offer::Send(Packet::Publish(msg.to_publish(qos, 0, retain, false)))
            } else {
                Offer::Dropped
            };
        }
        if connected && self.queue.is_empty() && self.window_open() {
            return Offer::Send(self.start_flow(msg, qos, retain));
        }
        if self.limits.max_queued != 0 && self.queue.len() >= self.limits.max_queued {
            self.dropped += 1;
            return Offer::Dropped;
        }
        self.queue.push_back(Queued { msg, qos, retain });
        Offer::Queued
    }

    /// Moves queued messages into the window while it has room; returns their PUBLISHes.
    pub fn fill_window(&mut self, out: &mut Vec<Packet>) {
        while self.conn.is_some() && self.window_open() {
            let Some(q) = self.queue.pop_front() else { break };
            let packet = self.start_flow(q.msg, q.qos, q.retain);
            out.push(packet);
        }
    }

    /// The packets to resend when a persistent session is resumed: unacknowledged PUBLISHes
    /// with DUP set and the same packet id, and PUBRELs whose PUBCOMP is missing
    /// ([MQTT-4.4.0-1]), in their original order; then queued messages while the window allows.
    pub fn resume(&mut self, out: &mut Vec<Packet>) {
        for f in &self.inflight {
            out.push(match f.state {
                OutState::AwaitPubAck | OutState::AwaitPubRec => {
                    Packet::Publish(f.msg.to_publish(f.qos, f.packet_id, f.retain, true))
                }
                OutState::AwaitPubComp => Packet::PubRel(PubResp::new(f.packet_id)),
            });
        }
        self.fill_window(out);
    }

    fn position(&self, packet_id: u16, state: OutState) -> Option<usize> {
        self.inflight.iter().position(|f| f.packet_id == packet_id && f.state == state)
    }

    /// PUBACK received. Returns false if no QoS 1 message was waiting for it.
    pub fn on_puback(&mut self, packet_id: u16) -> bool {
        match self.position(packet_id, OutState::AwaitPubAck) {
            Some(i) => {
                self.inflight.remove(i);
                true
            }
            None => false,
        }
    }

    /// PUBREC received: the message is now the client's; answer PUBREL ([MQTT-4.3.3-3]).
    /// A PUBREC for an id already released is answered with PUBREL again.
    pub fn on_pubrec(&mut self, packet_id: u16) -> Option<Packet> {
        if let Some(i) = self.position(packet_id, OutState::AwaitPubRec) {
            let f = &mut self.inflight[i];
            f.state = OutState::AwaitPubComp;
            return Some(Packet::PubRel(PubResp::new(packet_id)));
        }
        self.position(packet_id, OutState::AwaitPubComp)
            .map(|_| Packet::PubRel(PubResp::new(packet_id)))
    }

    /// PUBCOMP received: the QoS 2 flow is complete.
    pub fn on_pubcomp(&mut self, packet_id: u16) -> bool {
        match self.position(packet_id, OutState::AwaitPubComp) {
            Some(i) => {
                self.inflight.remove(i);
                true
            }
            None => false,
        }
    }

    /// Drops everything owed to the client (clean start on a resumed id).
    pub fn clear_messages(&mut self) {
        self.inflight.clear();
        self.queue.clear();
        self.incoming_qos2.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::message::Message;

    fn msg(n: u8) -> SharedMessage {
        Arc::new(Message {
            topic: "t".into(),
            payload: bytes::Bytes::from(vec![n]),
            qos: QoS::ExactlyOnce,
            retain: false,
            properties: Default::default(),
            origin: None,
        })
    }

    fn session(max_inflight: u16, max_queued: usize) -> Session {
        let mut s = Session::new("c".into(), false, ProtocolVersion::V311, Limits { max_inflight, max_queued });
        s.conn = Some(0);
        s
    }

    fn publish(offer: Offer) -> crate::protocol::Publish {
        match offer {
            Offer::Send(Packet::Publish(p)) => p,
            other => panic!("expected a PUBLISH, got {other:?}"),
        }
    }

    #[test]
    fn qos1_window_holds_back_until_puback() {
        let mut s = session(2, 10);
        let a = publish(s.offer(msg(1), QoS::AtLeastOnce, false));
        let b = publish(s.offer(msg(2), QoS::AtLeastOnce, false));
        assert_ne!(a.packet_id, 0);
        assert_ne!(a.packet_id, b.packet_id);
        assert_eq!(s.offer(msg(3), QoS::AtLeastOnce, false), Offer::Queued);
        assert!(s.on_puback(a.packet_id));
        assert!(!s.on_puback(a.packet_id), "a second PUBACK acknowledges nothing");
        let mut out = Vec::new();
        s.fill_window(&mut out);
        assert_eq!(out.len(), 1);
        let Packet::Publish(c) = &out[0] else { panic!() };
        assert_eq!(c.payload[0], 3);
    }

    #[test]
    fn qos2_flow_goes_pubrec_pubrel_pubcomp() {
        let mut s = session(0, 0);
        let p = publish(s.offer(msg(1), QoS::ExactlyOnce, false));
        assert!(!s.on_pubcomp(p.packet_id), "PUBCOMP before PUBREC completes nothing");
        assert_eq!(s.on_pubrec(p.packet_id), Some(Packet::PubRel(PubResp::new(p.packet_id))));
        assert!(s.on_pubcomp(p.packet_id));
        assert!(s.inflight.is_empty());
    }

    #[test]
    fn resume_resends_with_dup_and_same_packet_id() {
        // [MQTT-4.4.0-1]
        let mut s = session(10, 10);
        let p1 = publish(s.offer(msg(1), QoS::AtLeastOnce, false));
        let p2 = publish(s.offer(msg(2), QoS::ExactlyOnce, false));
        s.on_pubrec(p2.packet_id);
        s.conn = None;
        assert_eq!(s.offer(msg(3), QoS::AtLeastOnce, false), Offer::Queued);
        assert_eq!(s.offer(msg(4), QoS::AtMostOnce, false), Offer::Dropped);
        s.conn = Some(1);
        let mut out = Vec::new();
        s.resume(&mut out);
        assert_eq!(out.len(), 3);
        match &out[0] {
            Packet::Publish(p) => {
                assert!(p.dup);
                assert_eq!(p.packet_id, p1.packet_id);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(out[1], Packet::PubRel(PubResp::new(p2.packet_id)));
        match &out[2] {
            Packet::Publish(p) => assert!(!p.dup && p.payload[0] == 3),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn queue_is_bounded() {
        let mut s = session(1, 2);
        s.conn = None;
        assert_eq!(s.offer(msg(1), QoS::AtLeastOnce, false), Offer::Queued);
        assert_eq!(s.offer(msg(2), QoS::AtLeastOnce, false), Offer::Queued);
        assert_eq!(s.offer(msg(3), QoS::AtLeastOnce, false), Offer::Dropped);
        assert_eq!(s.dropped, 1);
    }

    #[test]
    fn packet_ids_skip_ids_in_flight_and_zero() {
        let mut s = session(0, 0);
        s.next_packet_id = u16::MAX - 1;
        let a = publish(s.offer(msg(1), QoS::AtLeastOnce, false));
        let b = publish(s.offer(msg(2), QoS::AtLeastOnce, false));
        assert_eq!((a.packet_id, b.packet_id), (u16::MAX, 1));
    }
}
