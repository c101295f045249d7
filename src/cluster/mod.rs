//! Several midge nodes as one broker, on NATS (an existing engine: no home-made consensus).
//!
//! Each node runs one gateway thread ([`gateway`]) holding the node's NATS connection (the
//! `async-nats` client on a single-threaded tokio runtime, confined to that thread: no tokio
//! in a shard). Shards talk to it through a [`ShardLink`]:
//!
//! - every node announces the filters its clients use ([`interest`]), and each shard keeps
//!   the union of the other nodes' filters in an index of its own;
//! - a client's PUBLISH (after its checks, in `Shard::message_in`) that matches one of them
//!   goes out on the NATS subject of its topic ([`subject`]); a message no other node wants
//!   never leaves the shard (a node alone costs one empty-index check per message);
//! - a subscription added or removed on the node (`Shard::subscription_added`/`_removed`)
//!   adds or drops the node's interest in the filter's subject patterns (counted per filter:
//!   the node subscribes to the union of its clients' filters; `$SYS` filters stay local);
//! - a message from another node arrives at one shard of this node (by a hash of its topic,
//!   so one topic keeps its order) and is routed through that shard's own subscription index,
//!   which applies MQTT's matching rules and every reader's ACL, exactly as for a local
//!   PUBLISH. It is never forwarded back to NATS, and the NATS connection does not echo a
//!   node's own messages back to it (`no_echo`), so nothing loops.
//!
//! - a retained message (set or cleared) also goes to a JetStream stream that keeps the last
//!   one of each topic, which every node follows into its retained store ([`retained`]).
//!
//! - a shared subscription `$share/{name}/{filter}` is one group cluster-wide: each node with
//!   members holds a NATS queue subscription named after the group, on a second connection
//!   (with echo, so that the node may be picked for its own messages); while another node
//!   also has members, a shard leaves the choice to the queue group instead of picking a
//!   member itself, and messages from other nodes reach a node's groups only through the
//!   queue ([`Inbound::Shared`]), so each message goes to one member in the cluster.
//!
//! - a client that connects to one node is disconnected (0x8E) from any other node where
//!   it was connected, as on one node ([`takeover`]);
//! - the wills of a node's clients are kept in a JetStream stream, and a node that dies (no
//!   heartbeat) has them published once, by one survivor ([`wills`]).
//!
//! - a QoS 1/2 message that crosses nodes goes through a JetStream stream: its publisher's
//!   PUBACK/PUBREC waits until the stream holds it, and each node reads the stream with a
//!   durable consumer of its own, so a node that was down gets what it missed ([`messages`]).
//!
//! - a persistent session follows its client: its record (owner, subscriptions, expiry) is
//!   kept in a JetStream key-value bucket, and a CONNECT without clean start on another
//!   node takes the session over, with its queued messages, from the node that has it
//!   ([`sessions`]).
//!
//! Without `cluster_nats_url` none of this exists: no thread, no channel, no check on the
//! hot path beyond one `Option`.

mod envelope;
mod gateway;
mod interest;
mod messages;
mod nats_options;
mod retained;
pub(crate) mod sessions;
mod streams;
pub mod subject;
mod takeover;
mod wills;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::index::{Entry, SubscriberId, TopicIndex};
use crate::message::SharedMessage;
use crate::protocol::{ByteStr, QoS, RetainHandling, SubOptions};

pub use gateway::{start, Gateway, Settings, Wake};
pub use nats_options::NatsAuth;

/// Shared subscriptions' filters start with this.
const SHARE_PREFIX: &str = "$share/";

/// Messages a shard's link may hold for the gateway before it drops (and counts) the next:
/// a NATS connection that is down or slow must not grow a shard's memory without bound.
const OUTBOUND_CAPACITY: usize = 65_536;
/// Messages from other nodes one shard may hold before the gateway drops (and counts) more.
const INBOUND_CAPACITY: usize = 65_536;

/// What a shard tells the gateway.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// A client's message, for the other nodes.
    Publish(SharedMessage),
    /// A client's QoS 1/2 message from shard `.0`, for the cluster's message stream
    /// ([`messages`]): its acknowledgement waits for the shard's next ticket's answer.
    Durable(usize, SharedMessage),
    /// Shard `.0` ended a turn: answer ticket `.1` once every message it sent before is in
    /// the stream.
    Ticket(usize, u64),
    /// A filter gained (`true`) or lost (`false`) a subscription on this node.
    Interest(ByteStr, bool),
    /// A retained message set or cleared on this node, for the retained stream.
    Retained(SharedMessage),
    /// A client of this node has a will (the PUBLISH it becomes): kept cluster-wide in case
    /// the node dies ([`wills`]).
    WillSet(ByteStr, SharedMessage),
    /// That client has no will any more (published, or dropped).
    WillGone(ByteStr),
    /// A client connected here: its connection on any other node is taken over.
    Connected(ByteStr),
    /// The record of a persistent session held here ([`sessions`]), to keep in the bucket.
    SessionPut(ByteStr, bytes::Bytes),
    /// That session ended here.
    SessionGone(ByteStr),
    /// A CONNECT parked under `token` on `shard` resumes the client's session if another
    /// node has it: look it up and take it over.
    SessionFetch {
        shard: usize,
        token: u64,
        client_id: ByteStr,
    },
    /// The answer to another node's hand-over request (`reply`): the session, or `None`.
    HandedOver(String, Option<bytes::Bytes>),
    /// A session recovered from this node's store: does another node own it now?
    SessionCheck(usize, ByteStr),
}

/// What the gateway hands a shard.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A message another node's client published, to route here.
    Message(SharedMessage),
    /// The retained message of a topic as the cluster's stream holds it (an empty payload:
    /// none), to store here; its live delivery, if any, came as a [`Inbound::Message`].
    Retained(SharedMessage),
    /// A message for one of this node's members of the shared subscription (the whole
    /// `$share/{name}/{filter}`): the cluster's NATS queue group chose this node.
    Shared(SharedMessage, ByteStr),
    /// The will of a client of a dead node, which this node publishes for it.
    Will(SharedMessage),
    /// The client connected to another node: its connection here, if any, is taken over.
    TakenOver(ByteStr),
    /// The stream holds every QoS 1/2 message this shard sent before its ticket `.0`
    /// ([`messages`]).
    Committed(u64),
    /// One of those messages could not be stored.
    CommitFailed(u64),
    /// The answer to [`Outbound::SessionFetch`]: the session taken over from another node,
    /// if there was one.
    SessionFetched(u64, Option<Box<crate::store::RecoveredSession>>),
    /// Another node takes over this client's session: hand it over on the reply subject.
    HandOver(ByteStr, String),
    /// The cluster took this node for dead and published its wills: every will this shard's
    /// sessions have is to be kept in the cluster again.
    KeepWills,
    /// The answer to [`Outbound::SessionCheck`]: `true` when another node owns the session
    /// (it moved while this node was down).
    SessionChecked(ByteStr, bool),
}

/// A shard's end of the cluster: where it sends its publishes and interest changes, and
/// where messages from other nodes and changes of their interest wait for it.
#[derive(Debug)]
pub struct ShardLink {
    out: tokio::sync::mpsc::Sender<Outbound>,
    inbound: crossbeam_channel::Receiver<Inbound>,
    /// Filters other nodes' clients subscribe to, added (`true`) or gone (`false`): unbounded,
    /// because a lost change would leave [`ShardLink::remote`] wrong for good; bounded in
    /// practice by the other nodes' distinct filters.
    interest: crossbeam_channel::Receiver<(ByteStr, bool)>,
    /// The union of the other nodes' filters: a message goes to NATS only if one matches.
    remote: TopicIndex,
    /// The shared subscriptions (`$share/...`) among them: this node leaves their choice of
    /// member to the cluster's queue groups.
    remote_groups: HashSet<Box<str>>,
    /// Messages and interest changes dropped because the gateway fell behind.
    pub dropped: u64,
    /// Counted by the gateway: messages from other nodes dropped because this shard fell
    /// behind.
    inbound_dropped: Arc<std::sync::atomic::AtomicU64>,
    /// Set by the gateway once it follows the retained stream.
    retained_by_stream: Arc<AtomicBool>,
    /// Set by the gateway once QoS 1/2 messages go through the message stream.
    messages_by_stream: Arc<AtomicBool>,
    /// Set by the gateway once sessions are kept in the cluster's bucket ([`sessions`]).
    sessions_by_bucket: Arc<AtomicBool>,
    /// This shard's index (the gateway answers its tickets).
    shard: usize,
    /// A QoS 1/2 message for the stream was dropped this turn (the gateway's queue was
    /// full): the turn's ticket fails.
    durable_dropped: bool,
    /// This node's `cluster_node_id` (or host name): part of the client ids the node
    /// generates, which must not collide with another node's (see `cluster::takeover`).
    pub node_id: Arc<str>,
}

/// The one subscriber the remote-interest index holds for every filter.
const REMOTE: Entry = Entry {
    subscriber: SubscriberId {
        shard: 0,
        slot: 0,
        generation: 0,
    },
    options: SubOptions {
        qos: QoS::AtMostOnce,
        no_local: false,
        retain_as_published: false,
        retain_handling: RetainHandling::SendAtSubscribe,
    },
    identifier: None,
};

impl ShardLink {
    /// Offers a client's message to the other nodes when one of them has a matching
    /// subscription (not `$` topics: `$SYS` describes one node). Never blocks: a lookup in
    /// the remote-interest index, then one channel push, dropped and counted when the
    /// gateway is behind. A node alone in its cluster sends nothing.
    ///
    /// Returns true when the message went to the cluster's QoS 1/2 stream ([`messages`]):
    /// its acknowledgement must then wait for the answer to this shard's next
    /// [`ShardLink::ticket`].
    #[inline]
    pub fn publish(&mut self, msg: &SharedMessage) -> bool {
        if msg.topic.starts_with('$') {
            return false;
        }
        if msg.retain {
            self.send(Outbound::Retained(msg.clone()), || {
                format!("retained message on '{}'", msg.topic)
            });
        }
        if self.remote.is_empty() {
            return false;
        }
        let mut wanted = false;
        self.remote
            .for_each_match(&msg.topic, true, |_, _| wanted = true);
        if !wanted {
            return false;
        }
        let durable = msg.qos != QoS::AtMostOnce && self.messages_by_stream.load(Ordering::Relaxed);
        let item = match durable {
            true => Outbound::Durable(self.shard, msg.clone()),
            false => Outbound::Publish(msg.clone()),
        };
        if self.out.try_send(item).is_err() {
            self.dropped += 1;
            self.durable_dropped |= durable;
        }
        durable
    }

    /// This shard ended a turn in which it sent QoS 1/2 messages to the stream: the gateway
    /// answers `ticket` with [`Inbound::Committed`] once the stream holds them all. Returns
    /// false when the answer can only be a failure (a message or the ticket itself did not
    /// fit in the gateway's queue).
    pub fn ticket(&mut self, ticket: u64) -> bool {
        let dropped = std::mem::take(&mut self.durable_dropped);
        let sent = self
            .out
            .try_send(Outbound::Ticket(self.shard, ticket))
            .is_ok();
        if !sent {
            self.dropped += 1;
        }
        sent && !dropped
    }

    /// This node gained or lost a subscription on `filter`.
    pub fn interest(&mut self, filter: &ByteStr, added: bool) {
        self.send(Outbound::Interest(filter.clone(), added), || {
            format!("interest change for '{filter}'")
        });
    }

    /// Queues `item` for the gateway; when its queue is full the item is dropped, counted and
    /// logged (`what` names it). Not for the messages themselves: a full queue would log
    /// each one.
    fn send(&mut self, item: Outbound, what: impl FnOnce() -> String) {
        if self.out.try_send(item).is_err() {
            self.dropped += 1;
            log::warn!("cluster: gateway queue full, {} dropped", what());
        }
    }

    /// Applies the other nodes' interest changes that arrived (once per loop turn, before
    /// the turn's messages are offered).
    pub fn apply_remote_interest(&mut self) {
        while let Ok((filter, added)) = self.interest.try_recv() {
            if filter.starts_with(SHARE_PREFIX) {
                if added {
                    self.remote_groups.insert(Box::from(&*filter));
                } else {
                    self.remote_groups.remove(&*filter);
                }
            }
            if added {
                self.remote.insert(&filter, REMOTE);
            } else {
                self.remote.remove(&filter, REMOTE.subscriber);
            }
        }
    }

    /// True when another node also has members of the shared subscription `group`: the
    /// cluster's queue group, not this shard, then picks who gets each message.
    pub fn shares_remotely(&self, group: &str) -> bool {
        !self.remote_groups.is_empty() && self.remote_groups.contains(group)
    }

    /// `client_id` has the will `will` (`cluster::wills`).
    pub fn will_set(&mut self, client_id: &ByteStr, will: SharedMessage) {
        self.send(Outbound::WillSet(client_id.clone(), will), || {
            format!("will of '{client_id}'")
        });
    }

    /// `client_id` no longer has a will.
    pub fn will_gone(&mut self, client_id: &ByteStr) {
        self.send(Outbound::WillGone(client_id.clone()), || {
            format!("end of the will of '{client_id}'")
        });
    }

    /// `client_id` connected to this node: another node that has it connected closes that
    /// connection ([MQTT-3.1.4-3] across the cluster).
    pub fn connected(&mut self, client_id: &ByteStr) {
        self.send(Outbound::Connected(client_id.clone()), || {
            format!("takeover notice for '{client_id}'")
        });
    }

    /// True once persistent sessions follow their clients across nodes ([`sessions`]).
    pub fn sessions_in_cluster(&self) -> bool {
        self.sessions_by_bucket.load(Ordering::Acquire)
    }

    /// The persistent session of `client_id` is held here as `stored`.
    pub fn session_put(&mut self, client_id: &ByteStr, stored: &crate::store::StoredSession) {
        let record = sessions::encode_record(&self.node_id, stored);
        self.send(Outbound::SessionPut(client_id.clone(), record), || {
            format!("session record of '{client_id}'")
        });
    }

    /// The persistent session of `client_id` ended here.
    pub fn session_gone(&mut self, client_id: &ByteStr) {
        self.send(Outbound::SessionGone(client_id.clone()), || {
            format!("end of the session record of '{client_id}'")
        });
    }

    /// Asks for `client_id`'s session elsewhere in the cluster for the CONNECT parked under
    /// `token`; false if the request could not be queued (the CONNECT goes on without).
    pub fn fetch_session(&mut self, token: u64, client_id: &ByteStr) -> bool {
        let item = Outbound::SessionFetch {
            shard: self.shard,
            token,
            client_id: client_id.clone(),
        };
        self.out.try_send(item).is_ok()
    }

    /// Asks whether another node owns the session of `client_id` (recovered from this
    /// node's store: it may have moved while this node was down).
    pub fn session_check(&mut self, client_id: &ByteStr) {
        self.send(
            Outbound::SessionCheck(self.shard, client_id.clone()),
            || format!("session check of '{client_id}'"),
        );
    }

    /// Answers a hand-over request with the session (`None`: not here).
    pub fn handed_over(&mut self, reply: String, session: Option<bytes::Bytes>) {
        self.send(Outbound::HandedOver(reply, session), || {
            "session hand-over".to_string()
        });
    }

    /// The next message from another node, if one waits.
    pub(crate) fn next_inbound(&self) -> Option<Inbound> {
        self.inbound.try_recv().ok()
    }

    /// True once the node follows the cluster's retained stream: from then on the stream,
    /// not the live messages from other nodes, decides this node's retained messages (so
    /// that every node applies concurrent changes in one order).
    pub fn retained_by_stream(&self) -> bool {
        self.retained_by_stream.load(Ordering::Acquire)
    }

    /// True while messages or interest changes from other nodes wait for this shard.
    pub fn has_inbound(&self) -> bool {
        !self.inbound.is_empty() || !self.interest.is_empty()
    }

    /// Messages from other nodes dropped because this shard's queue was full.
    pub fn inbound_dropped(&self) -> u64 {
        self.inbound_dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}
