//! PUBACK, PUBREC, PUBREL, PUBCOMP from a client: advancing the QoS 1/2 flows.

use crate::protocol::reason::v5;
use crate::protocol::{Packet, PubResp};
use crate::session::{Ack, PubRec};
use crate::shard::ctx::SessionCtx;

/// PUBACK: a QoS 1 delivery is done; the window may admit a queued message.
pub(super) fn handle_puback(cx: &mut SessionCtx<'_>, packet_id: u16) -> bool {
    let (session, batch) = cx.session_and_batch();
    let ack = session.on_puback(packet_id, batch);
    after_ack(cx, ack, "PUBACK")
}

/// Refills the window after a completed flow; closes on an acknowledgement of the wrong
/// flow, as mosquitto does (`db__message_delete_outgoing` answers MOSQ_ERR_PROTOCOL).
fn after_ack(cx: &mut SessionCtx<'_>, ack: Ack, name: &str) -> bool {
    match ack {
        Ack::Done => {
            refill(cx);
            true
        }
        Ack::Unknown => true,
        Ack::Violation => cx.protocol_error(
            v5::PROTOCOL_ERROR,
            format!("{name} for a message in another QoS flow"),
        ),
    }
}

/// PUBREC: answer PUBREL [MQTT-4.3.3-3]; a failure reason (5.0) ends the flow instead.
pub(super) fn handle_pubrec(cx: &mut SessionCtx<'_>, packet_id: u16, reason: u8) -> bool {
    let (session, batch) = cx.session_and_batch();
    match session.on_pubrec(packet_id, reason, batch) {
        PubRec::Release(id) => cx.send(&Packet::PubRel(PubResp::new(id))),
        PubRec::Ended => refill(cx),
        PubRec::Unknown => {}
        PubRec::Violation => return after_ack(cx, Ack::Violation, "PUBREC"),
    }
    true
}

/// PUBREL: the client releases an incoming QoS 2 id; answer PUBCOMP (also for an unknown
/// id, so a client retrying after our restart completes its flow) [MQTT-4.3.3-11].
pub(super) fn handle_pubrel(cx: &mut SessionCtx<'_>, packet_id: u16) -> bool {
    let (session, batch) = cx.session_and_batch();
    let known = session.release_incoming_qos2(packet_id, batch);
    let mut comp = PubResp::new(packet_id);
    if cx.is_v5() && !known {
        comp.reason = v5::PACKET_IDENTIFIER_NOT_FOUND;
    }
    cx.send(&Packet::PubComp(comp));
    // A freed id lets the oldest 3.x QoS 2 PUBLISH waiting for one in (see
    // `Session::wait_incoming_qos2`): routed and acknowledged now, in arrival order.
    if known {
        if let Some(waiting) = cx.session().next_waiting_qos2() {
            return super::publish::handle_publish(cx, waiting);
        }
    }
    true
}

/// PUBCOMP: a QoS 2 delivery is done.
pub(super) fn handle_pubcomp(cx: &mut SessionCtx<'_>, packet_id: u16) -> bool {
    let (session, batch) = cx.session_and_batch();
    let ack = session.on_pubcomp(packet_id, batch);
    after_ack(cx, ack, "PUBCOMP")
}

/// Sends queued messages that now fit the inflight window.
fn refill(cx: &mut SessionCtx<'_>) {
    cx.send_from_session(|session, out, batch| session.fill_window(out, batch));
}
