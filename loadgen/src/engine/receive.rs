//! The receive and measure side: decoding packets, acks for our own flows, and counting
//! deliveries (latency, loss, duplicates) for our subscribers.

use std::sync::atomic::Ordering::Relaxed;

use midge_codec::{
    decode, ByteStr, Packet, Properties, PubResp, Publish, QoS, SubOptions, Subscribe,
};

use super::worker::{ConnState, OutFlow, Worker};
use super::MAX_PACKET;
use crate::clock::Stamp;
use crate::schedule::{Pace, Schedule};

impl Worker {
    /// Decodes and handles every complete packet; false if the connection was closed.
    pub(super) fn decode_all(&mut self, ci: usize, now: u64) -> bool {
        loop {
            let c = &mut self.conns[ci];
            match decode(&mut c.rbuf, Some(self.cfg.version), MAX_PACKET) {
                Ok(Some(p)) => {
                    self.handle(ci, p, now);
                    if self.conns[ci].state == ConnState::Closed {
                        return false;
                    }
                }
                Ok(None) => return true,
                Err(e) => {
                    self.fail(ci, format!("undecodable packet from the broker: {e:?}"));
                    return false;
                }
            }
        }
    }

    pub(super) fn handle(&mut self, ci: usize, p: Packet, now: u64) {
        match p {
            Packet::ConnAck(a) => {
                if self.conns[ci].state != ConnState::AwaitConnAck {
                    return self.fail(ci, "unexpected CONNACK".into());
                }
                if a.code != 0 {
                    return self.fail(ci, format!("CONNACK refused with code {:#04x}", a.code));
                }
                let filters = &self.plan.clients[self.conns[ci].spec].subscriptions;
                if filters.is_empty() {
                    self.set_ready(ci, now);
                } else {
                    let opts = SubOptions {
                        qos: self.cfg.qos,
                        ..Default::default()
                    };
                    let sub = Packet::Subscribe(Subscribe {
                        packet_id: 1,
                        filters: filters
                            .iter()
                            .map(|f| (ByteStr::from(f.as_str()), opts))
                            .collect(),
                        properties: Properties::default(),
                    });
                    self.conns[ci].state = ConnState::AwaitSubAck;
                    self.queue(ci, &sub);
                }
            }
            Packet::SubAck(a) => {
                if self.conns[ci].state != ConnState::AwaitSubAck {
                    return self.fail(ci, "unexpected SUBACK".into());
                }
                if let Some(bad) = a.codes.iter().find(|&&c| c >= 0x80) {
                    return self.fail(ci, format!("SUBACK refused with code {bad:#04x}"));
                }
                if a.codes.iter().any(|&c| c < self.cfg.qos as u8) {
                    return self.fail(
                        ci,
                        format!(
                            "SUBACK granted QoS {:?} below the requested {}",
                            a.codes, self.cfg.qos as u8
                        ),
                    );
                }
                self.set_ready(ci, now);
            }
            Packet::Publish(p) => self.on_publish(ci, p, now),
            Packet::PubAck(r) => self.on_out_ack(ci, r, OutFlow::Qos1Sent, now),
            Packet::PubRec(r) => {
                let refused = r.reason >= 0x80;
                let Some(pb) = self.conns[ci].publisher.as_mut() else {
                    return self.fail(ci, "PUBREC to a subscriber".into());
                };
                match pb.inflight.get_mut(&r.packet_id) {
                    Some(f @ OutFlow::Qos2Sent) if !refused => {
                        *f = OutFlow::Released;
                        self.queue(ci, &Packet::PubRel(PubResp::new(r.packet_id)));
                    }
                    Some(OutFlow::Qos2Sent) => self.on_out_ack(ci, r, OutFlow::Qos2Sent, now),
                    Some(OutFlow::Released) => {
                        self.queue(ci, &Packet::PubRel(PubResp::new(r.packet_id)))
                    }
                    _ => self.fail(ci, format!("PUBREC for unknown packet id {}", r.packet_id)),
                }
            }
            Packet::PubComp(r) => self.on_out_ack(ci, r, OutFlow::Released, now),
            Packet::PubRel(r) => {
                self.conns[ci].qos2_in.remove(&r.packet_id);
                self.queue(ci, &Packet::PubComp(PubResp::new(r.packet_id)));
            }
            Packet::PingResp => {}
            Packet::Disconnect(d) => self.fail(
                ci,
                format!("DISCONNECT from the broker, reason {:#04x}", d.reason),
            ),
            other => self.fail(ci, format!("unexpected {} from the broker", other.name())),
        }
    }

    pub(super) fn set_ready(&mut self, ci: usize, now: u64) {
        self.conns[ci].state = ConnState::Ready;
        self.connecting = self.connecting.saturating_sub(1);
        self.shared.ready.fetch_add(1, Relaxed);
        if self.timeline.is_some() {
            // Only possible if set-up raced the timeline; schedule it like the others.
            if let (Some(tl), Some(p)) = (self.timeline, self.conns[ci].publisher.as_mut()) {
                p.sched = Some(Schedule::new(
                    self.plan.pace,
                    tl.start_ns,
                    p.phase_ns,
                    tl.measure_end_ns,
                ));
            }
            self.pump(ci, now);
        }
    }

    /// A PUBACK, PUBREC (refusal) or PUBCOMP ends one of our flows.
    pub(super) fn on_out_ack(&mut self, ci: usize, r: PubResp, expect: OutFlow, now: u64) {
        let Some(pb) = self.conns[ci].publisher.as_mut() else {
            return self.fail(ci, "ack to a subscriber".into());
        };
        if pb.inflight.get(&r.packet_id) != Some(&expect) {
            return self.fail(
                ci,
                format!("{expect:?} does not match packet id {}", r.packet_id),
            );
        }
        pb.inflight.remove(&r.packet_id);
        pb.window.release();
        // 0x10 (no matching subscribers) is a success code in MQTT 5.
        if r.reason >= 0x80 {
            self.counters.refused += 1;
        } else {
            self.counters.acked += 1;
        }
        if !pb.in_heap {
            self.pump(ci, now);
        }
    }

    /// A message for one of our subscribers: ack it, then count it.
    pub(super) fn on_publish(&mut self, ci: usize, p: Publish, now: u64) {
        let c = &mut self.conns[ci];
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.queue(ci, &Packet::PubAck(PubResp::new(p.packet_id))),
            QoS::ExactlyOnce => {
                // Delivered at PUBLISH; a resend of the same id before PUBREL is the same message.
                let first = c.qos2_in.insert(p.packet_id);
                self.queue(ci, &Packet::PubRec(PubResp::new(p.packet_id)));
                if !first {
                    return;
                }
            }
        }
        let Some(stamp) = Stamp::read(&p.payload) else {
            self.counters.foreign += 1;
            return;
        };
        if stamp.publisher as usize >= self.plan.publishers.len() {
            self.counters.foreign += 1;
            return;
        }
        if self.plan.pace == Pace::Max {
            self.shared.delivered[stamp.publisher as usize].fetch_add(1, Relaxed);
        }
        let Some(tl) = self.timeline else {
            self.counters.received_unmeasured += 1;
            return;
        };
        if !tl.measured(stamp.intended_ns) {
            self.counters.received_unmeasured += 1;
            return;
        }
        let c = &mut self.conns[ci];
        if c.seen.entry(stamp.publisher).or_default().insert(stamp.seq) {
            self.counters.received += 1;
            self.latency.record(now.saturating_sub(stamp.intended_ns));
        } else {
            self.counters.duplicates += 1;
        }
    }
}
