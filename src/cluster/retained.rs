//! Retained messages cluster-wide: a JetStream stream that keeps the last message of each
//! topic, which every node follows.
//!
//! A node publishes every retained message its clients, wills and bridges set (an empty
//! payload: a clear) to the stream [`STREAM`] on the subject `midge.r.` + the topic's tokens
//! (as `subject::topic_subject` makes them), and JetStream keeps one message per subject. Each
//! node follows the stream with an ordered consumer that starts with the last message of
//! every subject and then carries every later change, and stores each in its retained store.
//! So a node that starts, or subscribes, after a message was retained elsewhere has it, and
//! two nodes that set one topic at once end with the same message: every node applies the
//! stream's changes last, in the stream's order (a node's own change comes back too; the
//! store skips what it already holds). Clears stay in the stream as empty messages, so a node
//! that was down when a topic was cleared drops its persisted copy when it comes back.
//!
//! Expiry: the frame carries the wall-clock time at which the message expires (MQTT 5's
//! Message Expiry Interval), so a message replayed an hour later has an hour less to live,
//! and one that has expired is applied as a clear.
//!
//! Until the stream is followed (JetStream not enabled or not reachable yet), a retained
//! message from another node is kept as it arrives live, by the nodes that had interest in it
//! (see [`ShardLink::retained_by_stream`](super::ShardLink::retained_by_stream)).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use futures_util::StreamExt;

use super::gateway::Delivery;
use super::{envelope, streams, subject};
use crate::message::{Message, SharedMessage};

/// The stream's name: one per NATS account, as the message subjects are.
pub(super) const STREAM: &str = "MIDGE_RETAINED";

/// How often the follower checks that it keeps up with the stream.
const STALL_CHECK: Duration = Duration::from_secs(5);

/// The stream subject of the retained message of `topic`.
pub(super) fn subject_of(topic: &str) -> String {
    subject::subject_under(subject::RETAINED_PREFIX, topic)
}

/// The stream's bytes for `msg` (see [`envelope::encode_timed`]).
pub(super) fn frame(msg: &SharedMessage) -> Bytes {
    envelope::encode_timed(msg)
}

/// The message a stream entry on `subject_str` carries, with its remaining lifetime; an
/// expired one becomes a clear (empty payload). `None` for anything malformed, oversized, or
/// whose topic is not its subject's.
pub(super) fn unframe(subject_str: &str, b: &[u8], max_packet_size: u32) -> Option<Message> {
    let (mut msg, expired) =
        envelope::decode_timed(subject::RETAINED_PREFIX, subject_str, b, max_packet_size)?;
    if expired {
        msg.payload = Bytes::new();
    }
    Some(msg)
}

/// Follows the stream for as long as the gateway runs: creates it if it does not exist,
/// replays the last message of each topic into the shards, then every change. Tries again
/// whenever JetStream fails (`streams::keep_following`).
pub(super) async fn follow(js: jetstream::Context, replicas: usize, delivery: Arc<Delivery>) {
    streams::keep_following("retained-message", || follow_once(&js, replicas, &delivery)).await
}

async fn follow_once(
    js: &jetstream::Context,
    replicas: usize,
    delivery: &Arc<Delivery>,
) -> Result<(), async_nats::Error> {
    let all = format!("{}>", subject::RETAINED_PREFIX);
    let config = streams::one_per_subject(STREAM, vec![all.clone()], replicas);
    let mut stream = js.get_or_create_stream(config).await?;
    let consumer = streams::latest_per_subject(&stream, all).await?;
    let mut messages = consumer.messages().await?;
    delivery.retained_by_stream.store(true, Ordering::Release);
    let info = stream.cached_info();
    log::info!(
        "cluster: following the retained-message stream {STREAM} ({} replicas, leader {})",
        info.config.num_replicas,
        info.cluster
            .as_ref()
            .and_then(|c| c.leader.clone())
            .unwrap_or_default()
    );
    // The consumer lives on one NATS server: when that server dies, the client notices only
    // after two missed 15 s heartbeats. So the follower also compares, every
    // [`STALL_CHECK`], the stream's last sequence with the last one it applied, and starts
    // over (a replay the store mostly already holds) when it saw no progress for two checks.
    let mut applied = 0u64;
    let mut behind_since: Option<u64> = None;
    let mut check = tokio::time::interval(STALL_CHECK);
    loop {
        tokio::select! {
            m = messages.next() => {
                let Some(m) = m else { return Ok(()) };
                let m = m?;
                applied = m.info().map_or(applied, |i| i.stream_sequence);
                delivery.retained(m.subject.as_str(), &m.payload).await;
            }
            _ = check.tick() => {
                let last = stream.info().await?.state.last_sequence;
                if last <= applied {
                    behind_since = None;
                } else if behind_since == Some(applied) {
                    return Err(format!("stalled at sequence {applied} of {last}").into());
                } else {
                    behind_since = Some(applied);
                }
            }
        }
    }
}

/// Sends `msg` to the stream; the acknowledgement is awaited on a task of its own, so the
/// gateway goes on meanwhile (a failure is logged: the other nodes do not learn that change).
pub(super) async fn publish(js: &jetstream::Context, msg: &SharedMessage) {
    match js.publish(subject_of(&msg.topic), frame(msg)).await {
        Ok(ack) => {
            let topic = msg.topic.clone();
            tokio::spawn(async move {
                if let Err(e) = ack.await {
                    log::warn!("cluster: retained message on '{topic}' not stored: {e}");
                }
            });
        }
        Err(e) => log::warn!("cluster: retained message on '{}' not sent: {e}", msg.topic),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ByteStr;
    use std::time::Instant;

    fn msg(topic: &str, expires_in: Option<Duration>) -> SharedMessage {
        Arc::new(Message {
            topic: ByteStr::from(topic),
            payload: Bytes::from_static(b"kept"),
            retain: true,
            expires_at: expires_in.map(|d| Instant::now() + d),
            ..Message::empty()
        })
    }

    #[test]
    fn a_retained_message_crosses_with_its_remaining_lifetime() {
        let m = msg("a/b", Some(Duration::from_secs(60)));
        let got = unframe(&subject_of("a/b"), &frame(&m), 0).expect("decodes");
        assert_eq!(got.payload, m.payload);
        assert!(got.retain);
        let left = got.expires_at.expect("keeps its expiry") - Instant::now();
        assert!(left > Duration::from_secs(55) && left <= Duration::from_secs(60));
        let forever = unframe(&subject_of("a/b"), &frame(&msg("a/b", None)), 0).unwrap();
        assert_eq!(forever.expires_at, None);
    }

    #[test]
    fn an_expired_entry_is_a_clear() {
        let m = msg("a", Some(Duration::from_secs(60)));
        let mut b = frame(&m).to_vec();
        // Expired a second ago.
        let past = envelope::unix_millis(std::time::SystemTime::now()) - 1000;
        b[..8].copy_from_slice(&past.to_be_bytes());
        let got = unframe(&subject_of("a"), &b, 0).unwrap();
        assert!(got.payload.is_empty(), "applied as a clear");
    }

    #[test]
    fn an_entry_whose_topic_is_not_its_subjects_is_refused() {
        let b = frame(&msg("a/b", None));
        assert!(unframe(&subject_of("a/c"), &b, 0).is_none());
        assert!(unframe(&subject::topic_subject("a/b"), &b, 0).is_none());
        assert!(unframe(&subject_of("a/b"), &b[..7], 0).is_none());
        assert!(
            unframe(&subject_of("a/b"), &b, 10).is_none(),
            "over max_packet_size"
        );
    }
}
