//! The shard's side of sessions that follow their clients across cluster nodes
//! (`cluster::sessions`): keeping the records of its persistent sessions current, handing a
//! session over to the node its client moved to, and installing one taken over from another.

use crate::protocol::ByteStr;
use crate::session::{Limits, Session};
use crate::store::RecoveredSession;

use super::{SessionSlot, Shard};

impl Shard {
    /// True in a cluster whose session bucket is open (`cluster::sessions`).
    fn sessions_follow_clients(&self) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|c| c.sessions_in_cluster())
    }

    /// Session `slot`'s record changed (its connection, subscriptions or end time): sent to
    /// the cluster's bucket at the end of the turn, once however many changes it had.
    /// Nothing unless sessions follow their clients in this cluster.
    pub(crate) fn mark_cluster_record(&mut self, slot: usize) {
        if !self.sessions_follow_clients() {
            return;
        }
        if let Some(s) = self.sessions.get_mut(slot) {
            if !s.record_dirty {
                s.record_dirty = true;
                self.cluster_records.push(slot);
            }
        }
    }

    /// Once sessions follow their clients (the bucket is open), asks for each session
    /// recovered from the store and not yet taken by its client whether another node owns
    /// it now (it moved while this node was down). Called every tick; does its work once.
    pub(crate) fn check_recovered_sessions(&mut self) {
        if self.recovered_checked || !self.sessions_follow_clients() {
            return;
        }
        self.recovered_checked = true;
        let Some(link) = &mut self.cluster else {
            return;
        };
        for (_, s) in self.sessions.iter() {
            let session = &s.session;
            if session.conn.is_none() && !s.record_in_cluster && session.expiry_interval > 0 {
                link.session_check(&session.client_id);
            }
        }
    }

    /// The answer for a recovered session: one another node owns ends here (without its
    /// record, or its delayed will: its client is elsewhere); one this node owns gets its
    /// record written, so that another node can take it over.
    pub(crate) fn recovered_session_checked(&mut self, client_id: &ByteStr, elsewhere: bool) {
        let Some(&slot) = self.session_by_id.get(client_id) else {
            return;
        };
        let s = &mut self.sessions[slot];
        if s.session.conn.is_some() || s.record_in_cluster {
            // Its client came back here meanwhile: this node's copy is the one.
            return;
        }
        if elsewhere {
            log::info!("Session of {client_id} moved to another cluster node while this node was down: dropped here.");
            self.end_copy_owned_elsewhere(slot);
        } else {
            self.mark_cluster_record(slot);
        }
    }

    /// Sends the records of the sessions marked this turn: a persistent session's (expiry
    /// above 0) is kept, one that no longer is has its record removed.
    pub(crate) fn flush_cluster_records(&mut self) {
        let Some(link) = &mut self.cluster else {
            return;
        };
        for slot in self.cluster_records.drain(..) {
            let Some(s) = self.sessions.get_mut(slot) else {
                continue;
            };
            if !std::mem::take(&mut s.record_dirty) {
                continue;
            }
            if s.session.expiry_interval > 0 {
                link.session_put(&s.session.client_id, &s.session.stored());
                s.record_in_cluster = true;
            } else if std::mem::take(&mut s.record_in_cluster) {
                link.session_gone(&s.session.client_id);
            }
        }
    }

    /// Session `s` ends here: its record leaves the bucket, unless the session moved to
    /// another node (whose record it now is; see [`Shard::hand_over`]).
    pub(super) fn cluster_record_ends(&mut self, s: &SessionSlot) {
        if s.record_in_cluster {
            if let Some(link) = &mut self.cluster {
                link.session_gone(&s.session.client_id);
            }
        }
    }

    /// The client of session `slot` connected to another node, which did not take this
    /// session over (a clean start, or a resume that found it before this node recorded
    /// it): when sessions follow their clients, the client's session is that node's now,
    /// and this one ends without touching its record (the other node's) and without its
    /// delayed will: the client came back before its delay ran out [MQTT-3.1.3-9], as for a
    /// clean start on this node.
    pub(crate) fn session_taken_elsewhere(&mut self, slot: usize) {
        if self.sessions_follow_clients() {
            self.end_copy_owned_elsewhere(slot);
        }
    }

    /// Ends this node's copy of session `slot`, which another node owns now: its record is
    /// that node's (not deleted), and its delayed will is not published (its client came
    /// back elsewhere first [MQTT-3.1.3-9]).
    fn end_copy_owned_elsewhere(&mut self, slot: usize) {
        if let Some(s) = self.sessions.get_mut(slot) {
            s.record_in_cluster = false;
            s.session.pending_will = None;
            self.end_session(slot);
        }
    }

    /// Another node takes over `client_id`'s session: the connection here is closed (0x8E),
    /// and the session (subscriptions, messages in flight then queued) is answered on `reply`
    /// and ends here without its record (the new owner's now) and without its delayed will
    /// (a new connection came first [MQTT-3.1.3-9]).
    pub(crate) fn hand_over(&mut self, client_id: &ByteStr, reply: String) {
        let moved = self.session_by_id.get(client_id).copied().map(|slot| {
            if let Some(conn) = self.sessions[slot].session.conn {
                log::info!(
                    target: crate::logging::TARGET_CONNECTION,
                    "Client {client_id} resumed its session on another cluster node."
                );
                self.close(conn, super::Close::TakenOver);
            }
            let s = &mut self.sessions[slot].session;
            s.pending_will = None;
            let messages = s.take_messages();
            let node_id = self.cluster.as_ref().map_or("", |c| &*c.node_id);
            let bytes = crate::cluster::sessions::encode_moved(node_id, &s.stored(), &messages);
            self.end_copy_owned_elsewhere(slot);
            bytes
        });
        if let Some(link) = &mut self.cluster {
            link.handed_over(reply, moved);
        }
    }

    /// The cluster answered the CONNECT parked under `token`: a session taken over from
    /// another node is installed (even if that connection has gone meanwhile: the session
    /// is here now), and the CONNECT resumes it, or starts a new one.
    pub(crate) fn cluster_session_fetched(
        &mut self,
        token: u64,
        moved: Option<Box<RecoveredSession>>,
    ) {
        if let Some(r) = moved {
            // A connection that came meanwhile made a session of its own: it wins.
            if !self.session_by_id.contains_key(&r.client_id) {
                self.install_moved_session(*r);
            }
        }
        let Some((key, connect)) = self.take_parked(token) else {
            return;
        };
        if self.ctx(key).cluster_session_resumed(connect) && self.process_frames(key) {
            self.resume_input(key);
        }
    }

    /// Installs a session taken over from another node for the CONNECT about to resume it:
    /// its subscriptions enter the index (and every replica, and the cluster's interest) as
    /// a SUBSCRIBE's would, its messages are queued as deliveries are. Returns its slot.
    pub(crate) fn install_moved_session(&mut self, mut r: RecoveredSession) -> usize {
        let queued = std::mem::take(&mut r.queued);
        // The client's own limits are set by the CONNECT that resumes it.
        let limits = Limits::new(&self.shared.config, u16::MAX, 0);
        let mut session = Session::recovered(r, limits);
        session.durable = self.persistent() && session.expiry_interval > 0;
        let (slot, entries) = self.add_session_with_entries(session);
        for (filter, entry) in entries {
            self.subscription_added(&filter, entry);
        }
        let s = &mut self.sessions[slot].session;
        s.store_record(&mut self.batch);
        for (_, d) in queued {
            s.offer(d.delivery, &mut self.batch);
        }
        slot
    }
}
