//! QoS 1 and 2 messages between nodes, through a JetStream stream: acknowledged to their
//! publisher only once the cluster keeps them, and delivered to each node by a durable
//! consumer of its own, so a node that was down gets what it missed.
//!
//! **Out.** A client's QoS 1/2 message that another node wants (the remote-interest index, as
//! for QoS 0) is published to the stream [`STREAM`] on `midge.p.` + the topic's tokens, with
//! a `Nats-Msg-Id` (run id and sequence: JetStream drops a resend within its duplicate
//! window) and the node's id in [`NODE_HEADER`]. Its PUBACK/PUBREC is held by the shard
//! (`shard::durable`, the gateway being one more destination next to the other shards):
//! after the turn's messages, the shard sends the gateway a ticket ([`Publisher::ticket`]),
//! and the gateway answers `Inbound::Committed` once JetStream acknowledged every message
//! that shard published before it (`CommitFailed` if one was refused or timed out: an MQTT 5
//! publisher gets 0x80, as for a failed disk write). Per shard one task awaits JetStream's
//! acknowledgements in order, so a turn's answer never overtakes an earlier turn's.
//!
//! **In.** Each node has a durable pull consumer, named after its `cluster_node_id`, on the
//! whole stream (acknowledge-all): it hands every message of another node to the shard of its
//! topic (`Inbound::Message`, routed as a QoS 0 message from the cluster is), waiting while
//! that shard's queue is full (JetStream holds the rest), and acknowledges in batches once the
//! messages are queued for their shards. A node that restarts with the same id resumes where
//! its consumer was: the messages published meanwhile reach its persistent sessions. The
//! stream keeps a message until every node's consumer acknowledged it (interest retention),
//! at most [`RETENTION`]; a consumer unused that long is removed by JetStream.
//!
//! Every node reads every QoS 1/2 message that crosses nodes (one consumer filter for all):
//! the publisher sends a message only when some other node wants it, and the reader's index
//! drops what nobody on it wants. Shared subscriptions' queue groups also listen on these
//! subjects (core NATS sees stream messages too), so a shared member elsewhere gets its
//! share (at most once).
//!
//! Until the stream exists (JetStream off or not reachable), QoS 1/2 messages cross over core
//! NATS as QoS 0 ones do, at most once.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, context::PublishAckFuture, stream};
use futures_util::StreamExt;

use super::gateway::Delivery;
use super::{envelope, streams, subject};
use crate::message::SharedMessage;

/// The stream's name: one per NATS account, as the message subjects are.
pub(super) const STREAM: &str = "MIDGE_MESSAGES";
/// The publishing node's `cluster_node_id`: its own consumer skips what it published.
const NODE_HEADER: &str = "Midge-Node";
/// How long the stream keeps a message no consumer took, and how long an unused consumer
/// (a node gone for good) lives.
const RETENTION: Duration = Duration::from_secs(3600);
/// Received messages acknowledged at once: at most this many, or after [`ACK_AFTER`].
const ACK_EVERY: u64 = 256;
const ACK_AFTER: Duration = Duration::from_millis(5);
/// Messages handed out and not acknowledged that JetStream allows the consumer.
const MAX_ACK_PENDING: i64 = 65_536;
/// How often the consumer checks that it makes progress (see `retained::follow_once`).
const STALL_CHECK: Duration = Duration::from_secs(3);
/// The consumer's pull requests: how long each waits, and the heartbeat whose absence
/// (a NATS server gone) ends it sooner.
const PULL_EXPIRES: Duration = Duration::from_secs(10);
const PULL_HEARTBEAT: Duration = Duration::from_secs(2);
/// How long a message may take to be stored before its publisher is told it failed, and
/// the pause before each resend meanwhile.
const SETTLE_FOR: Duration = Duration::from_secs(30);
const RESEND_AFTER: Duration = Duration::from_millis(250);

fn stream_config(replicas: usize) -> stream::Config {
    stream::Config {
        name: STREAM.into(),
        subjects: vec![format!("{}>", subject::DURABLE_PREFIX)],
        retention: stream::RetentionPolicy::Interest,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        max_age: RETENTION,
        discard: stream::DiscardPolicy::Old,
        ..Default::default()
    }
}

/// The durable consumer's name for node `node_id`: JetStream names allow no `.`, `*`, `>`,
/// whitespace or path separator, so other bytes become `_`, and a hash of the whole id keeps
/// two ids that differ only there apart.
fn consumer_name(node_id: &str) -> String {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    let plain: String = node_id
        .chars()
        .take(64)
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' => c,
            _ => '_',
        })
        .collect();
    let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(node_id);
    format!("midge_{plain}_{:08x}", hash as u32)
}

/// One message for the stream, kept until JetStream took it (a resend carries the same
/// `Nats-Msg-Id`, so JetStream keeps one copy).
struct Outgoing {
    subject: String,
    id: String,
    payload: bytes::Bytes,
    /// The answer to the last send (`None`: that send failed).
    ack: Option<PublishAckFuture>,
}

/// What one shard's settling task awaits, in the order the shard sent it.
enum Pending {
    Message(Outgoing),
    /// Everything before this is settled: answer the shard.
    Ticket(u64),
}

/// The publishing half, owned by the gateway's loop.
pub(super) struct Publisher {
    js: jetstream::Context,
    origin: u64,
    node_id: String,
    seq: u64,
    /// Per shard: its settling task's queue (unbounded: bounded by the shard's link queue,
    /// which every entry passed through).
    settle: Vec<tokio::sync::mpsc::UnboundedSender<Pending>>,
}

impl Publisher {
    /// Starts one settling task per shard. `js` should allow many acknowledgements in flight
    /// (the shards' queue, not JetStream's window, bounds them).
    pub(super) fn start(
        js: jetstream::Context,
        origin: u64,
        node_id: String,
        delivery: &Arc<Delivery>,
    ) -> Publisher {
        let settle = (0..delivery.shards())
            .map(|shard| {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                let (js, node_id) = (js.clone(), node_id.clone());
                tokio::spawn(settle(rx, js, node_id, shard, delivery.clone()));
                tx
            })
            .collect();
        Publisher {
            js,
            origin,
            node_id,
            seq: 0,
            settle,
        }
    }

    /// Sends `msg` (from `shard`) to the stream; its acknowledgement is awaited by the shard's
    /// settling task.
    pub(super) async fn publish(&mut self, shard: usize, msg: &SharedMessage) {
        self.seq += 1;
        let mut out = Outgoing {
            subject: subject::subject_under(subject::DURABLE_PREFIX, &msg.topic),
            id: format!("{:016x}.{}", self.origin, self.seq),
            payload: envelope::encode_timed(msg),
            ack: None,
        };
        send(&self.js, &self.node_id, &mut out).await;
        self.queue(shard, Pending::Message(out));
    }

    /// `shard` finished a turn: answer it once what it published before is settled.
    pub(super) fn ticket(&mut self, shard: usize, ticket: u64) {
        self.queue(shard, Pending::Ticket(ticket));
    }

    fn queue(&self, shard: usize, p: Pending) {
        if let Some(tx) = self.settle.get(shard) {
            let _ = tx.send(p);
        }
    }
}

/// Sends `out` to the stream (its answer, or `None` if it could not be sent, in `out.ack`).
async fn send(js: &jetstream::Context, node_id: &str, out: &mut Outgoing) {
    let publish = jetstream::message::PublishMessage::build()
        .payload(out.payload.clone())
        .message_id(&out.id)
        .header(NODE_HEADER, node_id);
    out.ack = js.send_publish(out.subject.clone(), publish).await.ok();
}

/// Awaits JetStream's acknowledgements of one shard's messages in order and answers each of
/// its tickets: committed, or failed when a message since the previous ticket could not be
/// stored within [`SETTLE_FOR`]. A refused or unanswered message is sent again meanwhile
/// (a new stream leader is elected in seconds when a NATS server dies); the later messages
/// wait behind it, so answers keep their order.
async fn settle(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Pending>,
    js: jetstream::Context,
    node_id: String,
    shard: usize,
    delivery: Arc<Delivery>,
) {
    let mut failed = false;
    let mut failures = 0u64;
    while let Some(p) = rx.recv().await {
        match p {
            Pending::Message(mut out) => {
                let deadline = tokio::time::Instant::now() + SETTLE_FOR;
                loop {
                    let error = match out.ack.take() {
                        Some(ack) => match ack.await {
                            Ok(_) => break,
                            Err(e) => e.to_string(),
                        },
                        None => "not sent".to_string(),
                    };
                    if tokio::time::Instant::now() >= deadline {
                        failures += 1;
                        if failures.is_power_of_two() {
                            log::warn!(
                                "cluster: a QoS 1/2 message was not stored ({error}; \
                                 {failures} so far)"
                            );
                        }
                        failed = true;
                        break;
                    }
                    tokio::time::sleep(RESEND_AFTER).await;
                    send(&js, &node_id, &mut out).await;
                }
            }
            Pending::Ticket(t) => {
                delivery.settled(shard, t, !failed).await;
                failed = false;
            }
        }
    }
}

/// Creates the stream and follows this node's consumer for as long as the gateway runs;
/// tries again whenever JetStream fails (`streams::keep_following`).
pub(super) async fn consume(
    js: jetstream::Context,
    replicas: usize,
    node_id: String,
    delivery: Arc<Delivery>,
) {
    streams::keep_following("QoS 1/2 message", || {
        consume_once(&js, replicas, &node_id, &delivery)
    })
    .await
}

async fn consume_once(
    js: &jetstream::Context,
    replicas: usize,
    node_id: &str,
    delivery: &Arc<Delivery>,
) -> Result<(), async_nats::Error> {
    let stream = js.get_or_create_stream(stream_config(replicas)).await?;
    let name = consumer_name(node_id);
    let mut consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(
            &name,
            consumer::pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: format!("{}>", subject::DURABLE_PREFIX),
                deliver_policy: consumer::DeliverPolicy::New,
                ack_policy: consumer::AckPolicy::All,
                max_ack_pending: MAX_ACK_PENDING,
                inactive_threshold: RETENTION,
                ..Default::default()
            },
        )
        .await?;
    let mut messages = consumer
        .stream()
        .expires(PULL_EXPIRES)
        .heartbeat(PULL_HEARTBEAT)
        .messages()
        .await?;
    // From now on this node's QoS 1/2 messages go to the stream (and wait for it).
    delivery.messages_by_stream.store(true, Ordering::Release);
    log::info!("cluster: QoS 1/2 messages through the stream {STREAM}, consumer {name}");
    let mut unacked: Option<jetstream::Message> = None;
    let mut count = 0u64;
    let mut flush = tokio::time::interval(ACK_AFTER);
    let mut check = tokio::time::interval(STALL_CHECK);
    let mut received = 0u64;
    let mut stalled_at: Option<u64> = None;
    loop {
        tokio::select! {
            m = messages.next() => {
                let Some(m) = m else { return Ok(()) };
                let m = m?;
                received += 1;
                let own = m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(NODE_HEADER))
                    .is_some_and(|v| v.as_str() == node_id);
                if !own {
                    delivery.durable_message(m.subject.as_str(), &m.payload).await;
                }
                unacked = Some(m);
                count += 1;
                if count >= ACK_EVERY {
                    ack(&mut unacked, &mut count).await?;
                }
            }
            _ = flush.tick() => ack(&mut unacked, &mut count).await?,
            _ = check.tick() => {
                // A consumer on a NATS server that died is noticed late by the client: start
                // over when messages wait and none arrived for two checks.
                let pending = consumer.info().await?.num_pending;
                if pending == 0 || stalled_at != Some(received) {
                    stalled_at = (pending > 0).then_some(received);
                } else {
                    return Err(format!("stalled with {pending} messages pending").into());
                }
            }
        }
    }
}

/// Acknowledges every message up to the last one received (acknowledge-all).
async fn ack(
    unacked: &mut Option<jetstream::Message>,
    count: &mut u64,
) -> Result<(), async_nats::Error> {
    if let Some(m) = unacked.take() {
        *count = 0;
        m.ack().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::consumer_name;

    #[test]
    fn consumer_names_hold_only_plain_characters_and_stay_distinct() {
        let a = consumer_name("node.a b/c>*");
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
        assert_ne!(consumer_name("a.b"), consumer_name("a_b"));
        assert_eq!(consumer_name("n1"), consumer_name("n1"));
    }
}
