//! The publish schedule: sends what is due per publisher within its inflight window, and
//! retries publishers held back by the end-to-end window (max mode).

use std::sync::atomic::Ordering::Relaxed;

use bytes::BytesMut;
use midge_codec::{Packet, Properties, Publish, QoS};

use super::worker::{ConnState, OutFlow, Worker};
use super::{E2E_FORGIVE_NS, WBUF_HIGH};
use crate::clock::Stamp;
use crate::schedule::Pace;

impl Worker {
    /// Sends every message of publisher `ci` that is due at `now`, as far as the window,
    /// the socket and (max mode) the end-to-end window allow; then files the publisher under
    /// what it waits for: the heap (a future due time), an ack, the socket, or the e2e retry.
    pub(super) fn pump(&mut self, ci: usize, now: u64) {
        let tl = match self.timeline {
            Some(tl) => tl,
            None => return,
        };
        if self.conns[ci].state != ConnState::Ready {
            return;
        }
        let qos = self.cfg.qos;
        let window = self.cfg.window as u64;
        loop {
            let c = &mut self.conns[ci];
            let Some(pb) = c.publisher.as_mut() else {
                return;
            };
            let Some(sched) = pb.sched.as_mut() else {
                return;
            };
            if c.wbuf.len() >= WBUF_HIGH {
                return; // flush() pumps again when the socket drains
            }
            if qos != QoS::AtMostOnce && !pb.window.has_room() {
                return; // an ack pumps again
            }
            if sched.pace() == Pace::Max && pb.fanout > 0 {
                let delivered = self.shared.delivered[pb.id as usize].load(Relaxed);
                let outstanding = pb.e2e_owed.saturating_sub(delivered + pb.e2e_forgiven);
                if outstanding >= window * pb.fanout as u64 {
                    let since = *pb.e2e_blocked_since.get_or_insert(now);
                    if now - since > E2E_FORGIVE_NS {
                        pb.e2e_forgiven += outstanding;
                        pb.e2e_blocked_since = None;
                        continue;
                    }
                    if !self.e2e_blocked.contains(&ci) {
                        self.e2e_blocked.push(ci);
                    }
                    return;
                }
                pb.e2e_blocked_since = None;
            }
            let Some((seq, intended)) = sched.take_due(now) else {
                break;
            };
            // Build the payload: stamp + filler. One copy of `payload` bytes per message.
            let mut body = BytesMut::with_capacity(pb.filler.len());
            body.extend_from_slice(&pb.filler);
            Stamp {
                seq,
                publisher: pb.id,
                intended_ns: intended,
            }
            .write(&mut body);
            let packet_id = if qos == QoS::AtMostOnce {
                0
            } else {
                let pid = pb.alloc_pid();
                let flow = if qos == QoS::AtLeastOnce {
                    OutFlow::Qos1Sent
                } else {
                    OutFlow::Qos2Sent
                };
                pb.inflight.insert(pid, flow);
                pb.window.acquire();
                pid
            };
            pb.e2e_owed += pb.fanout as u64;
            let fanout = pb.fanout as u64;
            let publish = Packet::Publish(Publish {
                dup: false,
                qos,
                retain: false,
                topic: pb.topic.clone(),
                packet_id,
                properties: Properties::default(),
                payload: body.freeze(),
            });
            self.queue(ci, &publish);
            self.counters.published += 1;
            if tl.measured(intended) {
                self.counters.published_measured += 1;
                self.counters.expected += fanout;
                self.send_lag.record(now.saturating_sub(intended));
            }
        }
        // Not blocked: wait for the next due time, or finish.
        let c = &mut self.conns[ci];
        let Some(pb) = c.publisher.as_mut() else {
            return;
        };
        let Some(sched) = pb.sched.as_ref() else {
            return;
        };
        let next = match sched.pace() {
            Pace::Fixed { .. } => sched.next_due(),
            // Before the start: wait for it; after the end: done. (In between, the loop above
            // only stops when blocked, and then returned early.)
            Pace::Max if now >= tl.measure_end_ns => None,
            Pace::Max => sched.next_due(),
        };
        match next {
            Some(due) if !pb.in_heap => {
                pb.in_heap = true;
                self.heap.push(std::cmp::Reverse((due, ci)));
            }
            Some(_) => {}
            None if !pb.done => {
                pb.done = true;
                self.shared.publishers_done.fetch_add(1, Relaxed);
            }
            None => {}
        }
    }

    /// Pumps every publisher whose due time has come.
    pub(super) fn run_due(&mut self, now: u64) {
        // Take the due ones first: a publisher that pump() files again goes to the next turn,
        // so this loop always ends.
        let mut due = Vec::new();
        while let Some(&std::cmp::Reverse((t, ci))) = self.heap.peek() {
            if t > now {
                break;
            }
            self.heap.pop();
            if let Some(p) = self.conns[ci].publisher.as_mut() {
                p.in_heap = false;
            }
            due.push(ci);
        }
        for ci in due {
            self.pump(ci, now);
        }
    }

    /// Max mode: retries publishers whose end-to-end window was full (deliveries may have
    /// arrived on another thread since).
    pub(super) fn retry_e2e(&mut self, now: u64) {
        if self.e2e_blocked.is_empty() {
            return;
        }
        for ci in std::mem::take(&mut self.e2e_blocked) {
            self.pump(ci, now);
        }
    }
}
