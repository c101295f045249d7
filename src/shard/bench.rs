//! A benchmark hook: shards driven by the caller's thread, to time routing end to end without
//! sockets in the measurement (`benches/route.rs`). Not part of the broker's API.
//!
//! [`RouteBench`] builds `shards` shards (no threads, no listeners) and `subscribers` QoS 0
//! sessions spread over them, all subscribed to one filter. On each shard, every session
//! writes to one loopback connection whose buffer is discarded after each route: what is
//! timed is the path of one PUBLISH after decoding — the pooled message, the index match,
//! the cross-shard batch and its drain, the per-session offer and the PUBLISH encoding —
//! not the socket write.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

use bytes::Bytes;

use super::conn::{Conn, ConnState};
use super::inbox::{inbox, Inbox, ShardHandle};
use super::stats::Stats;
use super::Shared;
use super::{SessionSlot, Shard, WAKER};
use crate::auth::Auth;
use crate::config::Config;
use crate::index::{Entry, SubscriberId};
use crate::message::Message;
use crate::protocol::{ByteStr, ProtocolVersion, QoS, SubOptions};
use crate::reactor::{IoBackend, Reactor};
use crate::session::{Limits, Session};
use crate::transport::Transport;

/// See the module documentation.
pub struct RouteBench {
    shards: Vec<Shard>,
    /// The client ends of the loopback connections (kept open; never read).
    _clients: Vec<TcpStream>,
}

impl RouteBench {
    /// `shards` shards with `subscribers` sessions subscribed to `filter`, dealt round robin.
    pub fn new(shards: usize, subscribers: usize, filter: &str) -> io::Result<RouteBench> {
        RouteBench::with_plugins(shards, subscribers, filter, Vec::new())
    }

    /// [`RouteBench::new`] with `plugins` in every shard's chain (their cost per message).
    pub fn with_plugins(
        shards: usize,
        subscribers: usize,
        filter: &str,
        plugins: Vec<Arc<dyn crate::plugin::Plugin>>,
    ) -> io::Result<RouteBench> {
        let mut shared = Shared::new(Config::default(), Auth::default(), None, shards);
        shared.plugins.in_process = plugins;
        let shared = Arc::new(shared);
        let mut polls: Vec<Reactor> = Vec::new();
        let mut handles: Vec<ShardHandle> = Vec::new();
        let mut inboxes: Vec<Inbox> = Vec::new();
        for _ in 0..shards {
            let (poll, _, waker) = Reactor::new(IoBackend::Epoll, WAKER)?;
            let (handle, inbox) = inbox(waker);
            polls.push(poll);
            handles.push(handle);
            inboxes.push(inbox);
        }
        let peers = Arc::new(handles);
        let mut all = Vec::new();
        let mut clients = Vec::new();
        let listener = TcpListener::bind("127.0.0.1:0")?;
        for (id, (poll, inbox)) in polls.into_iter().zip(inboxes).enumerate() {
            let mut shard = Shard::new(
                id,
                &poll,
                Vec::new(),
                inbox,
                peers.clone(),
                shared.clone(),
                None,
            )?;
            clients.push(TcpStream::connect(listener.local_addr()?)?);
            let (stream, peer) = listener.accept()?;
            stream.set_nonblocking(true)?;
            let mut conn = Conn::new(
                Transport::from(mio::net::TcpStream::from_std(stream)),
                peer,
                true,
            );
            conn.version = Some(ProtocolVersion::V311);
            conn.state = ConnState::Active { session: 0 };
            shard.conns.insert(conn);
            all.push(shard);
        }
        for i in 0..subscribers {
            let home = i % shards;
            let shard = &mut all[home];
            let mut session = Session::new(
                ByteStr::from(format!("bench-{i}")),
                0,
                ProtocolVersion::V311,
                Limits {
                    max_inflight: 20,
                    max_queued: 1000,
                    max_queued_bytes: 0,
                    max_packet_size: 0,
                    max_inflight_bytes: 0,
                },
            );
            session.conn = Some(0);
            let slot = shard.sessions.insert(SessionSlot::new(1, session));
            let entry = Entry {
                subscriber: SubscriberId {
                    shard: home as u16,
                    slot: slot as u32,
                    generation: 1,
                },
                options: SubOptions::default(),
                identifier: None,
            };
            // Every shard's replica knows every subscription, as after the SUBSCRIBE flow.
            for s in all.iter_mut() {
                s.index.insert(filter, entry);
            }
        }
        Ok(RouteBench {
            shards: all,
            _clients: clients,
        })
    }

    /// Publishes one QoS 0 message on `topic` from shard 0, drains it on every other shard,
    /// and returns the bytes written for all subscribers (then discarded).
    pub fn route(&mut self, topic: &ByteStr, payload: &Bytes) -> usize {
        let first = &mut self.shards[0];
        let msg = first.pool.share(Message {
            topic: topic.clone(),
            payload: payload.clone(),
            qos: QoS::AtMostOnce,
            ..Message::empty()
        });
        // Counted as `handle_packet` counts a PUBLISH read from a client.
        first.stats.messages_in += 1;
        first.stats.publish_bytes_in += payload.len() as u64;
        first.message_in(msg);
        first.outbox.send(&first.peers);
        for s in self.shards.iter_mut().skip(1) {
            s.drain_inbox();
        }
        let mut written = 0;
        for s in self.shards.iter_mut() {
            s.dirty.clear();
            if let Some(conn) = s.conns.get_mut(0) {
                written += conn.wbuf.len();
                conn.wbuf.clear();
                conn.dirty = false;
            }
            s.pool.reclaim();
        }
        written
    }

    /// The counters of all shards summed, as `$SYS` would read them after a tick: each shard
    /// publishes its own, then the shared slots are summed.
    pub fn stats(&mut self) -> Stats {
        for s in self.shards.iter_mut() {
            s.on_tick(std::time::Instant::now());
        }
        self.shards[0].shared.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_follow_routed_messages_across_shards() {
        // 10 subscribers dealt over 2 shards: 5 on the publishing shard, 5 on the other.
        let mut bench = RouteBench::new(2, 10, "site/+/t").unwrap();
        let topic = ByteStr::from("site/1/t");
        let payload = Bytes::from_static(b"hello");
        for _ in 0..7 {
            assert!(bench.route(&topic, &payload) > 0);
        }
        let other = ByteStr::from("elsewhere");
        bench.route(&other, &payload);
        let s = bench.stats();
        assert_eq!(
            s.messages_in, 8,
            "every message published counts, matched or not"
        );
        assert_eq!(
            s.messages_out, 70,
            "one PUBLISH per subscriber per matching message"
        );
        assert_eq!(
            s.cross_shard_out, 7,
            "one inbox item per message for the other shard"
        );
        assert_eq!(s.cross_shard_in, 7);
        assert_eq!(s.publishes_dropped, 0);
        let again = bench.stats();
        assert_eq!(again, s, "reading does not change them");
    }
}
