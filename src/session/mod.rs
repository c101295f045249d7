//! Session state: what the broker remembers about a client id between packets and, for a
//! persistent session (clean session 0), between connections.
//!
//! The state machine here is pure: it is given messages and acknowledgements and answers with
//! the packets to send. It does no I/O and never sees a socket, so the QoS flows are unit
//! tested without a network (see the tests below) and the shard only moves bytes.
//!
//! Owned by the session's home shard; shard thread only.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use crate::auth::ClientAcl;
use crate::message::Delivery;
use crate::protocol::{
    publish_encoded_len, ByteStr, Packet, ProtocolVersion, PubResp, Publish, SubOptions, Will,
};

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
    pub delivery: Delivery,
    pub state: OutState,
}

/// Per-session limits, from the configuration and the client's CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Outgoing QoS 1/2 messages in flight (0 = unlimited): the smaller of
    /// `max_inflight_messages` and the client's Receive Maximum ([MQTT-3.3.4-9]).
    pub max_inflight: u16,
    /// Messages queued beyond the window (0 = unlimited) — `max_queued_messages`.
    pub max_queued: usize,
    /// The client's Maximum Packet Size (0 = none): larger PUBLISHes are not sent to it
    /// ([MQTT-3.1.2-25]) but dropped as if delivered.
    pub max_packet_size: u32,
}

/// A subscription as the session remembers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    pub options: SubOptions,
    pub identifier: Option<u32>,
}

/// A PUBLISH the session decided to send: the delivery and its per-send fields. The shard
/// encodes it straight from the shared message (`Message::publish_ref`); no `Publish` is
/// built per delivery (issue #7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendPublish {
    pub delivery: Delivery,
    /// 0 at QoS 0.
    pub packet_id: u16,
    pub dup: bool,
}

impl SendPublish {
    /// The PUBLISH as an owned packet (tests, logs; clones the properties).
    pub fn to_publish(&self) -> Publish {
        self.delivery
            .msg
            .to_publish(&self.delivery, self.packet_id, self.dup)
    }
}

/// What a session asks its connection to send, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    Publish(SendPublish),
    /// PUBREL of this packet id (a resumed QoS 2 flow).
    PubRel(u16),
}

impl Outgoing {
    /// As an owned packet (tests).
    pub fn to_packet(&self) -> Packet {
        match self {
            Outgoing::Publish(p) => Packet::Publish(p.to_publish()),
            Outgoing::PubRel(id) => Packet::PubRel(PubResp::new(*id)),
        }
    }
}

/// What became of a message offered to a session.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    /// Send this PUBLISH now.
    Send(SendPublish),
    /// Kept in the session queue.
    Queued,
    /// Dropped: QoS 0 for an offline client, the queue is full, or too large for the client.
    Dropped,
}

/// One session.
#[derive(Debug)]
pub struct Session {
    pub client_id: ByteStr,
    /// What the client may publish, subscribe to and receive (`acl_file`), fixed at CONNECT.
    pub acl: ClientAcl,
    /// Session Expiry Interval in seconds: 0 = the session ends with the connection (clean
    /// session in 3.x), `u32::MAX` = never (persistent 3.x session).
    pub expiry_interval: u32,
    /// While disconnected: when the session ends.
    pub expires_at: Option<Instant>,
    /// The subscriptions, by filter (to remove them from the index when the session ends).
    pub subscriptions: HashMap<ByteStr, Subscription>,
    /// Outgoing QoS 1/2 messages not yet fully acknowledged, in send order.
    pub inflight: VecDeque<Inflight>,
    /// Messages waiting for the window or for a reconnect.
    pub queue: VecDeque<Delivery>,
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
    /// A will waiting for its Will Delay Interval to pass (MQTT 5) while disconnected.
    pub pending_will: Option<(Instant, Will)>,
    pub limits: Limits,
    /// Messages dropped because the queue was full (logged, later in $SYS).
    pub dropped: u64,
    next_packet_id: u16,
}

impl Session {
    /// A new, empty session.
    pub fn new(
        client_id: ByteStr,
        expiry_interval: u32,
        version: ProtocolVersion,
        limits: Limits,
    ) -> Session {
        Session {
            client_id,
            acl: ClientAcl::allow_all(),
            expiry_interval,
            expires_at: None,
            subscriptions: HashMap::new(),
            inflight: VecDeque::new(),
            queue: VecDeque::new(),
            incoming_qos2: HashSet::new(),
            conn: None,
            version,
            will: None,
            pending_will: None,
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

    /// True if the client can take this delivery's PUBLISH (its Maximum Packet Size; the
    /// size without a topic alias, which only makes it smaller).
    fn fits(&self, d: &Delivery) -> bool {
        self.limits.max_packet_size == 0
            || publish_encoded_len(&d.msg.publish_ref(d, 1, false), self.version)
                <= self.limits.max_packet_size as usize
    }

    /// Starts the flow of a QoS 1/2 message and returns its PUBLISH, or `None` when the
    /// client could not take it (too large: dropped as if delivered, [MQTT-3.1.2-25]).
    fn start_flow(&mut self, delivery: Delivery) -> Option<SendPublish> {
        if !self.fits(&delivery) {
            self.dropped += 1;
            return None;
        }
        let packet_id = self.allocate_packet_id();
        let publish = SendPublish {
            delivery: delivery.clone(),
            packet_id,
            dup: false,
        };
        let state = if delivery.qos == crate::protocol::QoS::ExactlyOnce {
            OutState::AwaitPubRec
        } else {
            OutState::AwaitPubAck
        };
        self.inflight.push_back(Inflight {
            packet_id,
            delivery,
            state,
        });
        Some(publish)
    }

    /// Offers a delivery (QoS already the granted one).
    pub fn offer(&mut self, delivery: Delivery) -> Offer {
        let connected = self.conn.is_some();
        if delivery.qos == crate::protocol::QoS::AtMostOnce {
            if !connected {
                return Offer::Dropped;
            }
            return if self.fits(&delivery) {
                Offer::Send(SendPublish {
                    delivery,
                    packet_id: 0,
                    dup: false,
                })
            } else {
                Offer::Dropped
            };
        }
        if connected && self.queue.is_empty() && self.window_open() {
            return match self.start_flow(delivery) {
                Some(p) => Offer::Send(p),
                None => Offer::Dropped,
            };
        }
        if self.limits.max_queued != 0 && self.queue.len() >= self.limits.max_queued {
            self.dropped += 1;
            return Offer::Dropped;
        }
        self.queue.push_back(delivery);
        Offer::Queued
    }

    /// Moves queued messages into the window while it has room; returns their PUBLISHes.
    /// Queued messages whose expiry interval passed are discarded ([MQTT-3.3.2-5]).
    pub fn fill_window(&mut self, out: &mut Vec<Outgoing>) {
        let now = Instant::now();
        while self.conn.is_some() && self.window_open() {
            let Some(d) = self.queue.pop_front() else {
                break;
            };
            if d.msg.is_expired(now) {
                continue;
            }
            out.extend(self.start_flow(d).map(Outgoing::Publish));
        }
    }

    /// The packets to resend when a persistent session is resumed: unacknowledged PUBLISHes
    /// with DUP set and the same packet id, and PUBRELs whose PUBCOMP is missing
    /// ([MQTT-4.4.0-1]), in their original order; then queued messages while the window allows.
    pub fn resume(&mut self, out: &mut Vec<Outgoing>) {
        for f in &self.inflight {
            out.push(match f.state {
                OutState::AwaitPubAck | OutState::AwaitPubRec => Outgoing::Publish(SendPublish {
                    delivery: f.delivery.clone(),
                    packet_id: f.packet_id,
                    dup: true,
                }),
                OutState::AwaitPubComp => Outgoing::PubRel(f.packet_id),
            });
        }
        self.fill_window(out);
    }

    fn position(&self, packet_id: u16, state: OutState) -> Option<usize> {
        self.inflight
            .iter()
            .position(|f| f.packet_id == packet_id && f.state == state)
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
    /// A PUBREC for an id already released is answered with PUBREL again. A PUBREC with a
    /// failure reason (MQTT 5, >= 0x80) ends the flow instead: no PUBREL (MQTT 5 section 4.3.3).
    pub fn on_pubrec(&mut self, packet_id: u16, reason: u8) -> Option<Packet> {
        if let Some(i) = self.position(packet_id, OutState::AwaitPubRec) {
            if reason >= 0x80 {
                self.inflight.remove(i);
                return None;
            }
            self.inflight[i].state = OutState::AwaitPubComp;
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
    use crate::message::{Message, SharedMessage};
    use crate::protocol::QoS;

    fn msg(n: u8) -> SharedMessage {
        Arc::new(Message {
            topic: "t".into(),
            payload: bytes::Bytes::from(vec![n]),
            qos: QoS::ExactlyOnce,
            retain: false,
            properties: Default::default(),
            expires_at: None,
            origin: None,
        })
    }

    fn d(n: u8, qos: QoS) -> Delivery {
        Delivery::new(msg(n), qos, false)
    }

    fn session(max_inflight: u16, max_queued: usize) -> Session {
        let mut s = Session::new(
            "c".into(),
            u32::MAX,
            ProtocolVersion::V311,
            Limits {
                max_inflight,
                max_queued,
                max_packet_size: 0,
            },
        );
        s.conn = Some(0);
        s
    }

    fn publish(offer: Offer) -> crate::protocol::Publish {
        match offer {
            Offer::Send(p) => p.to_publish(),
            other => panic!("expected a PUBLISH, got {other:?}"),
        }
    }

    #[test]
    fn qos1_window_holds_back_until_puback() {
        let mut s = session(2, 10);
        let a = publish(s.offer(d(1, QoS::AtLeastOnce)));
        let b = publish(s.offer(d(2, QoS::AtLeastOnce)));
        assert_ne!(a.packet_id, 0);
        assert_ne!(a.packet_id, b.packet_id);
        assert_eq!(s.offer(d(3, QoS::AtLeastOnce)), Offer::Queued);
        assert!(s.on_puback(a.packet_id));
        assert!(
            !s.on_puback(a.packet_id),
            "a second PUBACK acknowledges nothing"
        );
        let mut out = Vec::new();
        s.fill_window(&mut out);
        assert_eq!(out.len(), 1);
        let Packet::Publish(c) = &out[0].to_packet() else {
            panic!()
        };
        assert_eq!(c.payload[0], 3);
    }

    #[test]
    fn qos2_flow_goes_pubrec_pubrel_pubcomp() {
        let mut s = session(0, 0);
        let p = publish(s.offer(d(1, QoS::ExactlyOnce)));
        assert!(
            !s.on_pubcomp(p.packet_id),
            "PUBCOMP before PUBREC completes nothing"
        );
        assert_eq!(
            s.on_pubrec(p.packet_id, 0),
            Some(Packet::PubRel(PubResp::new(p.packet_id)))
        );
        assert!(s.on_pubcomp(p.packet_id));
        assert!(s.inflight.is_empty());
    }

    #[test]
    fn resume_resends_with_dup_and_same_packet_id() {
        // [MQTT-4.4.0-1]
        let mut s = session(10, 10);
        let p1 = publish(s.offer(d(1, QoS::AtLeastOnce)));
        let p2 = publish(s.offer(d(2, QoS::ExactlyOnce)));
        s.on_pubrec(p2.packet_id, 0);
        s.conn = None;
        assert_eq!(s.offer(d(3, QoS::AtLeastOnce)), Offer::Queued);
        assert_eq!(s.offer(d(4, QoS::AtMostOnce)), Offer::Dropped);
        s.conn = Some(1);
        let mut out = Vec::new();
        s.resume(&mut out);
        assert_eq!(out.len(), 3);
        match &out[0].to_packet() {
            Packet::Publish(p) => {
                assert!(p.dup);
                assert_eq!(p.packet_id, p1.packet_id);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            out[1].to_packet(),
            Packet::PubRel(PubResp::new(p2.packet_id))
        );
        match &out[2].to_packet() {
            Packet::Publish(p) => assert!(!p.dup && p.payload[0] == 3),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn queue_is_bounded() {
        let mut s = session(1, 2);
        s.conn = None;
        assert_eq!(s.offer(d(1, QoS::AtLeastOnce)), Offer::Queued);
        assert_eq!(s.offer(d(2, QoS::AtLeastOnce)), Offer::Queued);
        assert_eq!(s.offer(d(3, QoS::AtLeastOnce)), Offer::Dropped);
        assert_eq!(s.dropped, 1);
    }

    #[test]
    fn packet_ids_skip_ids_in_flight_and_zero() {
        let mut s = session(0, 0);
        s.next_packet_id = u16::MAX - 1;
        let a = publish(s.offer(d(1, QoS::AtLeastOnce)));
        let b = publish(s.offer(d(2, QoS::AtLeastOnce)));
        assert_eq!((a.packet_id, b.packet_id), (u16::MAX, 1));
    }
}
