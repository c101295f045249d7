//! PUBACK, PUBREC, PUBREL, PUBCOMP from a client: advancing the QoS 1/2 flows.

use crate::protocol::reason::v5;
use crate::protocol::{Packet, PubResp};
use crate::session::{Ack, PubRec};
use crate::shard::Shard;

impl Shard {
    /// PUBACK: a QoS 1 delivery is done; the window may admit a queued message.
    pub(crate) fn handle_puback(&mut self, key: usize, slot: usize, packet_id: u16) -> bool {
        let ack = self.sessions[slot]
            .session
            .on_puback(packet_id, &mut self.batch);
        self.after_ack(key, slot, ack, "PUBACK")
    }

    /// Refills the window after a completed flow; closes on an acknowledgement of the wrong
    /// flow, as mosquitto does (`db__message_delete_outgoing` answers MOSQ_ERR_PROTOCOL).
    fn after_ack(&mut self, key: usize, slot: usize, ack: Ack, name: &str) -> bool {
        match ack {
            Ack::Done => {
                self.refill(key, slot);
                true
            }
            Ack::Unknown => true,
            Ack::Violation => self.protocol_error(
                key,
                v5::PROTOCOL_ERROR,
                format!("{name} for a message in another QoS flow"),
            ),
        }
    }

    /// PUBREC: answer PUBREL [MQTT-4.3.3-3]; a failure reason (5.0) ends the flow instead.
    pub(crate) fn handle_pubrec(
        &mut self,
        key: usize,
        slot: usize,
        packet_id: u16,
        reason: u8,
    ) -> bool {
        match self.sessions[slot]
            .session
            .on_pubrec(packet_id, reason, &mut self.batch)
        {
            PubRec::Release(id) => self.send(key, &Packet::PubRel(PubResp::new(id))),
            PubRec::Ended => self.refill(key, slot),
            PubRec::Unknown => {}
            PubRec::Violation => return self.after_ack(key, slot, Ack::Violation, "PUBREC"),
        }
        true
    }

    /// PUBREL: the client releases an incoming QoS 2 id; answer PUBCOMP (also for an unknown
    /// id, so a client retrying after our restart completes its flow) [MQTT-4.3.3-11].
    pub(crate) fn handle_pubrel(&mut self, key: usize, slot: usize, packet_id: u16) -> bool {
        let known = self.sessions[slot]
            .session
            .release_incoming_qos2(packet_id, &mut self.batch);
        let v5 = self.conns[key].is_v5();
        let mut comp = PubResp::new(packet_id);
        if v5 && !known {
            comp.reason = v5::PACKET_IDENTIFIER_NOT_FOUND;
        }
        self.send(key, &Packet::PubComp(comp));
        // A freed id lets the oldest 3.x QoS 2 PUBLISH waiting for one in (see
        // `Session::wait_incoming_qos2`): routed and acknowledged now, in arrival order.
        if known {
            if let Some(waiting) = self.sessions[slot].session.next_waiting_qos2() {
                return self.handle_publish(key, slot, waiting);
            }
        }
        true
    }

    /// PUBCOMP: a QoS 2 delivery is done.
    pub(crate) fn handle_pubcomp(&mut self, key: usize, slot: usize, packet_id: u16) -> bool {
        let ack = self.sessions[slot]
            .session
            .on_pubcomp(packet_id, &mut self.batch);
        self.after_ack(key, slot, ack, "PUBCOMP")
    }

    /// Sends queued messages that now fit the inflight window.
    fn refill(&mut self, key: usize, slot: usize) {
        let mut out = std::mem::take(&mut self.out);
        self.sessions[slot]
            .session
            .fill_window(&mut out, &mut self.batch);
        self.out = out;
        self.send_session_output(key);
    }
}
