//! Several midge nodes as one broker, on NATS (an existing engine: no home-made consensus).
//!
//! Each node runs one gateway thread ([`gateway`]) holding the node's NATS connection (the
//! `async-nats` client on a single-threaded tokio runtime, confined to that thread: no tokio
//! in a shard). Shards talk to it through a [`ShardLink`]:
//!
//! - a client's PUBLISH (after its checks, in `Shard::message_in`) goes out on the NATS
//!   subject of its topic ([`subject`]); NATS carries it only to nodes that subscribed to a
//!   matching pattern, so a message nobody elsewhere wants stops at the NATS server;
//! - a subscription added or removed on the node (`Shard::subscription_added`/`_removed`)
//!   adds or drops the node's interest in the filter's subject patterns (counted per filter:
//!   the node subscribes to the union of its clients' filters);
//! - a message from another node arrives at one shard of this node (by a hash of its topic,
//!   so one topic keeps its order) and is routed through that shard's own subscription index,
//!   which applies MQTT's matching rules and every reader's ACL, exactly as for a local
//!   PUBLISH. It is never forwarded back to NATS, and the NATS connection does not echo a
//!   node's own messages back to it (`no_echo`), so nothing loops.
//!
//! What this step does not do yet (docs/ARCHITECTURE.md, "Cluster"): QoS 1/2 travel between
//! nodes over core NATS, at most once (JetStream with acknowledgements is the next step);
//! sessions, retained messages and wills are per node; shared subscriptions are per node
//! (NATS queue groups will make them cluster-wide). Without `cluster_nats_url` none of this
//! exists: no thread, no channel, no check on the hot path beyond one `Option`.

mod envelope;
mod gateway;
pub mod subject;

use std::sync::Arc;

use crate::message::SharedMessage;
use crate::protocol::ByteStr;

pub use gateway::{start, Gateway, Settings, Wake};

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
    /// A filter gained (`true`) or lost (`false`) a subscription on this node.
    Interest(ByteStr, bool),
}

/// A shard's end of the cluster: where it sends its publishes and interest changes, and
/// where messages from other nodes wait for it.
#[derive(Debug)]
pub struct ShardLink {
    out: tokio::sync::mpsc::Sender<Outbound>,
    inbound: crossbeam_channel::Receiver<SharedMessage>,
    /// Messages and interest changes dropped because the gateway fell behind.
    pub dropped: u64,
    /// Counted by the gateway: messages from other nodes dropped because this shard fell
    /// behind.
    inbound_dropped: Arc<std::sync::atomic::AtomicU64>,
}

impl ShardLink {
    /// Offers a client's message to the other nodes (not `$` topics: `$SYS` describes one
    /// node). Never blocks: one channel push, dropped and counted when the gateway is behind.
    #[inline]
    pub fn publish(&mut self, msg: &SharedMessage) {
        if msg.topic.starts_with('$') {
            return;
        }
        if self.out.try_send(Outbound::Publish(msg.clone())).is_err() {
            self.dropped += 1;
        }
    }

    /// This node gained or lost a subscription on `filter`.
    pub fn interest(&mut self, filter: &ByteStr, added: bool) {
        if self
            .out
            .try_send(Outbound::Interest(filter.clone(), added))
            .is_err()
        {
            self.dropped += 1;
            log::warn!("cluster: gateway queue full, interest change for '{filter}' dropped");
        }
    }

    /// The next message another node published, if one waits.
    pub fn next_inbound(&self) -> Option<SharedMessage> {
        self.inbound.try_recv().ok()
    }

    /// True while messages from other nodes wait for this shard.
    pub fn has_inbound(&self) -> bool {
        !self.inbound.is_empty()
    }

    /// Messages from other nodes dropped because this shard's queue was full.
    pub fn inbound_dropped(&self) -> u64 {
        self.inbound_dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}
