//! The owner's side of a client session: PUBLISH (QoS 0/1/2, with ids the session or the
//! owner chooses), PUBREL of an earlier connection's flow, SUBSCRIBE and UNSUBSCRIBE, and
//! the packet ids they take.

use bytes::Bytes;

use super::{ClientSession, Outgoing, SendError, State};
use crate::protocol::{
    ByteStr, Packet, Properties, PubResp, Publish, QoS, SubOptions, Subscribe, Unsubscribe,
};

impl ClientSession {
    /// Queues a PUBLISH. Returns its packet id (0 for QoS 0).
    pub fn publish(
        &mut self,
        topic: ByteStr,
        payload: Bytes,
        qos: QoS,
        retain: bool,
    ) -> Result<u16, SendError> {
        if self.state != State::Connected {
            return Err(SendError::NotConnected);
        }
        if qos != QoS::AtMostOnce && self.outgoing.len() >= usize::from(self.window) {
            return Err(SendError::InflightFull);
        }
        // Fixed header (5) + topic length (2) + packet id (2) + properties length (1).
        let size = 10 + topic.len() + payload.len();
        let limit = match self.peer_max_packet {
            0 => crate::protocol::MAX_PACKET_SIZE,
            max => max as usize,
        };
        if size > limit {
            return Err(SendError::TooLarge);
        }
        let packet_id = match qos {
            QoS::AtMostOnce => 0,
            _ => self.next_packet_id(),
        };
        let publish = Publish {
            dup: false,
            qos,
            retain,
            topic,
            packet_id,
            properties: Properties::default(),
            payload,
        };
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.outgoing
                    .insert(packet_id, Outgoing::Qos1(publish.clone()));
            }
            QoS::ExactlyOnce => {
                self.outgoing
                    .insert(packet_id, Outgoing::Qos2(publish.clone()));
            }
        }
        self.out.push_back(Packet::Publish(publish));
        Ok(packet_id)
    }

    /// Queues a PUBLISH whose packet id the owner chose (a bridge numbers its flows in its
    /// local session, which outlives the connection; a resent one carries DUP). The id must
    /// not be in flight here already.
    pub fn publish_packet(&mut self, publish: Publish) -> Result<(), SendError> {
        if self.state != State::Connected {
            return Err(SendError::NotConnected);
        }
        let id = publish.packet_id;
        if publish.qos != QoS::AtMostOnce {
            if id == 0 || self.outgoing.contains_key(&id) || self.subscribing.contains(&id) {
                return Err(SendError::IdInUse);
            }
            // A resend (DUP) was in flight already: a server that lowered its Receive
            // Maximum since still gets it, or the flow could never complete.
            if self.outgoing.len() >= usize::from(self.window) && !publish.dup {
                return Err(SendError::InflightFull);
            }
        }
        let limit = match self.peer_max_packet {
            0 => crate::protocol::MAX_PACKET_SIZE,
            max => max as usize,
        };
        if 10 + publish.topic.len() + publish.payload.len() > limit {
            return Err(SendError::TooLarge);
        }
        match publish.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.outgoing.insert(id, Outgoing::Qos1(publish.clone()));
            }
            QoS::ExactlyOnce => {
                self.outgoing.insert(id, Outgoing::Qos2(publish.clone()));
            }
        }
        self.out.push_back(Packet::Publish(publish));
        Ok(())
    }

    /// Queues the PUBREL of a QoS 2 flow that reached the peer on an earlier connection
    /// (its PUBCOMP then completes it here).
    pub fn release(&mut self, packet_id: u16) -> Result<(), SendError> {
        if self.state != State::Connected {
            return Err(SendError::NotConnected);
        }
        if packet_id == 0 || self.outgoing.contains_key(&packet_id) {
            return Err(SendError::IdInUse);
        }
        self.outgoing.insert(packet_id, Outgoing::Released);
        self.out.push_back(Packet::PubRel(PubResp::new(packet_id)));
        Ok(())
    }

    /// Acknowledges an incoming message ([`super::SessionConfig::manual_acks`]): PUBACK for
    /// QoS 1, PUBREC for QoS 2 (`qos2`). A QoS 2 id this session does not hold (released)
    /// gets nothing. Unconnected (before CONNACK, or closed), a held QoS 2 id is only marked
    /// acknowledged: the server's resend on the next connection gets its PUBREC.
    pub fn acknowledge(&mut self, packet_id: u16, qos2: bool) {
        if qos2 {
            match self.incoming.get_mut(&packet_id) {
                Some(sent) => *sent = true,
                None => return,
            }
            if self.state != State::Connected {
                return;
            }
            self.out.push_back(Packet::PubRec(PubResp::new(packet_id)));
        } else if self.state == State::Connected {
            self.out.push_back(Packet::PubAck(PubResp::new(packet_id)));
        }
    }

    /// Queues a SUBSCRIBE for these filters. Returns its packet id.
    pub fn subscribe(&mut self, filters: &[(ByteStr, QoS)]) -> Result<u16, SendError> {
        let filters: Vec<(ByteStr, SubOptions)> = filters
            .iter()
            .map(|(f, qos)| {
                (
                    f.clone(),
                    SubOptions {
                        qos: *qos,
                        ..SubOptions::default()
                    },
                )
            })
            .collect();
        self.subscribe_with(filters)
    }

    /// Queues an UNSUBSCRIBE for these filters (its UNSUBACK is not reported).
    pub fn unsubscribe(&mut self, filters: Vec<ByteStr>) -> Result<u16, SendError> {
        if self.state != State::Connected {
            return Err(SendError::NotConnected);
        }
        let packet_id = self.next_sub_packet_id();
        self.out.push_back(Packet::Unsubscribe(Unsubscribe {
            packet_id,
            filters,
            properties: Properties::default(),
        }));
        Ok(packet_id)
    }

    /// Queues a SUBSCRIBE with full options (5.0 No Local and Retain As Published for a
    /// bridge). Returns its packet id.
    pub fn subscribe_with(
        &mut self,
        filters: Vec<(ByteStr, SubOptions)>,
    ) -> Result<u16, SendError> {
        if self.state != State::Connected {
            return Err(SendError::NotConnected);
        }
        let packet_id = self.next_sub_packet_id();
        self.subscribing.insert(packet_id);
        self.out.push_back(Packet::Subscribe(Subscribe {
            packet_id,
            filters,
            properties: Properties::default(),
        }));
        Ok(packet_id)
    }

    /// A packet id not in use by any flow. The in-flight window keeps the ids in use far
    /// below 65535, so this loop ends after a few steps.
    fn next_packet_id(&mut self) -> u16 {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if !self.outgoing.contains_key(&id) && !self.subscribing.contains(&id) {
                return id;
            }
        }
    }

    /// A SUBSCRIBE/UNSUBSCRIBE id not in use by any flow (see `next_sub_id`).
    fn next_sub_packet_id(&mut self) -> u16 {
        loop {
            let id = self.next_sub_id;
            self.next_sub_id = match self.next_sub_id - 1 {
                0 => u16::MAX,
                n => n,
            };
            if !self.outgoing.contains_key(&id) && !self.subscribing.contains(&id) {
                return id;
            }
        }
    }
}
