//! Acknowledgements of outgoing QoS 1/2 flows: PUBACK, PUBREC, PUBCOMP, checked against the
//! flow each belongs to.

use super::answer::{Ack, PubRec};
use super::{memory, Session};
use crate::record::OutState;
use crate::store::Batch;

impl Session {
    /// Ends the flow of inflight entry `i` (acknowledged, or refused by the client).
    pub(super) fn complete(&mut self, i: usize, batch: &mut Batch) {
        if let Some(f) = self.inflight.remove(i) {
            memory::release(f.delivery.msg.payload.len());
            if self.durable {
                batch.delete_queued(&self.client_id, f.seq);
                if f.state == OutState::AwaitPubAck && f.put_turn != 0 {
                    batch.qos1_acked(f.put_turn);
                }
            }
        }
    }

    /// The inflight entry with `packet_id`, checked against the flow an acknowledgement
    /// belongs to (as mosquitto's `db__message_delete_outgoing`): `Unknown` if no entry has
    /// that id, `Violation` if one has it but is at another QoS or step.
    fn find(&self, packet_id: u16, accept: &[OutState]) -> AckMatch {
        match self.inflight.iter().position(|f| f.packet_id == packet_id) {
            None => AckMatch::Unknown,
            Some(i) if accept.contains(&self.inflight[i].state) => AckMatch::Found(i),
            Some(_) => AckMatch::Violation,
        }
    }

    /// PUBACK received: the QoS 1 flow is complete. A PUBACK for a QoS 2 message is a
    /// protocol violation ([`Ack::Violation`]); one for an unknown id is ignored.
    pub fn on_puback(&mut self, packet_id: u16, batch: &mut Batch) -> Ack {
        match self.find(packet_id, &[OutState::AwaitPubAck]) {
            AckMatch::Found(i) => {
                self.complete(i, batch);
                Ack::Done
            }
            AckMatch::Unknown => Ack::Unknown,
            AckMatch::Violation => Ack::Violation,
        }
    }

    /// PUBREC received: the message is now the client's; answer PUBREL ([MQTT-4.3.3-3]).
    /// A PUBREC for an id already released is answered with PUBREL again. A PUBREC with a
    /// failure reason (MQTT 5, >= 0x80) ends the flow instead: no PUBREL (MQTT 5 section 4.3.3).
    /// A PUBREC for a QoS 1 message (or a failing one after PUBREL) is a violation.
    pub fn on_pubrec(&mut self, packet_id: u16, reason: u8, batch: &mut Batch) -> PubRec {
        if reason >= 0x80 {
            return match self.find(packet_id, &[OutState::AwaitPubRec]) {
                AckMatch::Found(i) => {
                    self.complete(i, batch);
                    PubRec::Ended
                }
                AckMatch::Unknown => PubRec::Unknown,
                AckMatch::Violation => PubRec::Violation,
            };
        }
        let accept = [OutState::AwaitPubRec, OutState::AwaitPubComp];
        match self.find(packet_id, &accept) {
            AckMatch::Found(i) => {
                let f = &mut self.inflight[i];
                if f.state == OutState::AwaitPubRec {
                    f.state = OutState::AwaitPubComp;
                    if self.durable {
                        batch.update_queued(&self.client_id, f.seq, Some(f.flow()));
                    }
                }
                PubRec::Release(packet_id)
            }
            AckMatch::Unknown => PubRec::Unknown,
            AckMatch::Violation => PubRec::Violation,
        }
    }

    /// PUBCOMP received: the QoS 2 flow is complete. A PUBCOMP for a QoS 1 message, or before
    /// PUBREC, is a violation; one for an unknown id is ignored.
    pub fn on_pubcomp(&mut self, packet_id: u16, batch: &mut Batch) -> Ack {
        match self.find(packet_id, &[OutState::AwaitPubComp]) {
            AckMatch::Found(i) => {
                self.complete(i, batch);
                Ack::Done
            }
            AckMatch::Unknown => Ack::Unknown,
            AckMatch::Violation => Ack::Violation,
        }
    }
}

/// Where an acknowledgement's packet id stands (see [`Session::find`]).
enum AckMatch {
    Found(usize),
    Unknown,
    Violation,
}
