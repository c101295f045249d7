//! Sessions across nodes: a persistent session follows its client to whichever node it
//! connects to, with its subscriptions and its queued messages.
//!
//! **The record.** While a node holds a persistent session (expiry above 0), it keeps the
//! session's record in the JetStream key-value bucket [`BUCKET`], under the client id
//! ([`key_of`]): the owning node's id and the session as the store writes it (expiry,
//! wall-clock end, subscriptions, a will waiting for its delay; `store::codec`). The owner
//! writes it after CONNECT, after each SUBSCRIBE/UNSUBSCRIBE and when the client goes
//! (coalesced per loop turn: `Shard::flush_cluster_sessions`), and deletes it when the
//! session ends. The bucket's operations go through one task, in order.
//!
//! **Taking a session over.** A CONNECT without clean start whose client id has no session
//! on this node is parked while the gateway looks the id up ([`fetch`]). If another node
//! owns the record, the gateway asks it for the session on `midge.sh.<its node id>`
//! (request/reply): that node closes the client's connection there (0x8E), takes the
//! session out (subscriptions, queued and in-flight messages, in order), answers with it
//! and ends it without touching the record. The asking node then writes itself as the
//! owner with a compare-and-swap on the record's revision (a node that moved the session
//! meanwhile makes it start over, once), installs the session, and the CONNECT resumes it
//! (session present). A node that does not answer (dead: NATS says "no responders" at
//! once) leaves the record as all there is: the subscriptions come back, the messages it
//! held do not (they were on that node). A record whose session expired is not resumed.
//!
//! **A node that restarts from its store** checks each recovered session it has not seen
//! its client for yet, once the bucket is open (`Shard::check_recovered_sessions`): one that
//! another node owns now (it moved while this node was down) ends here silently; one it
//! still owns gets its record written again.
//!
//! A session whose messages do not fit in one NATS message (`max_payload`, 1 MB by
//! default) moves with its oldest messages only; how many were left out is logged
//! ([`fit_moved`]).
//!
//! What this does not do: messages in flight move as queued ones (new packet ids, no DUP:
//! the client never had them from this node), so a QoS 2 message the old node had sent and
//! not completed may arrive twice.

use std::time::Duration;

use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, kv};
use bytes::Bytes;

use crate::message::Delivery;
use crate::protocol::ByteStr;
use crate::store::codec::{self, QueuedBody, Reader};
use crate::store::{RecoveredSession, StoredDelivery, StoredSession};

/// The key-value bucket of session records: one per NATS account, as the subjects are.
pub(super) const BUCKET: &str = "MIDGE_SESSIONS";
/// Session hand-over requests to a node go to this prefix and the node's id as one token.
pub(super) const HANDOVER_PREFIX: &str = "midge.sh.";
/// How long a node waits for the owner of a session to hand it over.
const HANDOVER_WAIT: Duration = Duration::from_secs(3);
/// The header that makes a message on a key's subject a delete (the key-value client's).
const KV_OPERATION: &str = "KV-Operation";
/// The record format's first byte.
const FORMAT: u8 = 1;

/// The bucket's key for `client_id`: key-value keys allow only `[-/_=.A-Za-z0-9]`, so
/// every other byte (and `=` itself) becomes `=XX`; `.` becomes `=2E` too (a key is a
/// subject, and an empty token is not allowed).
pub(super) fn key_of(client_id: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut k = String::with_capacity(client_id.len() + 2);
    // Never empty (a generated id is never looked up, but a key must have one character).
    k.push('c');
    for b in client_id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            k.push(b as char);
        } else {
            k.push('=');
            k.push(HEX[usize::from(b >> 4)] as char);
            k.push(HEX[usize::from(b & 15)] as char);
        }
    }
    k
}

/// The subject on which `node_id`'s gateway answers hand-over requests.
pub(super) fn handover_subject(node_id: &str) -> String {
    super::subject::subject_under(HANDOVER_PREFIX, node_id)
}

/// Logs an error when another live node uses this node's `cluster_node_id`: each node's
/// message consumer and hand-over subject are named after it, so two such nodes would
/// split each other's QoS 1/2 messages and sessions between them. The check asks the
/// hand-over subject for the empty client id (which no session has): only another node
/// answers (no echo: this node does not hear its own request).
pub(super) async fn check_unique(client: async_nats::Client, node_id: String) {
    let ask = client.request(handover_subject(&node_id), Bytes::new());
    if let Ok(Ok(_)) = tokio::time::timeout(HANDOVER_WAIT, ask).await {
        log::error!(
            "cluster: another node runs with cluster_node_id '{node_id}': node ids must be \
             unique (QoS 1/2 messages and sessions are split between nodes that share one)"
        );
    }
}

/// A session record: the owner's node id, then the session as the store writes it.
pub(crate) fn encode_record(node_id: &str, s: &StoredSession) -> Bytes {
    let mut out = vec![FORMAT];
    codec::put_bytes(&mut out, node_id.as_bytes());
    codec::put_session(&mut out, s);
    Bytes::from(out)
}

fn decode_record(b: &[u8]) -> Option<(String, StoredSession)> {
    read_record(b).map(|(node, session, _)| (node, session))
}

/// The record at the start of `b` (the owner and the session), and a reader at what
/// follows it.
fn read_record(b: &[u8]) -> Option<(String, StoredSession, Reader<'_>)> {
    let (&format, rest) = b.split_first()?;
    if format != FORMAT {
        return None;
    }
    let mut r = Reader::new(rest);
    let node = String::from_utf8(r.slice().ok()?.to_vec()).ok()?;
    let session = codec::read_session(&mut r).ok()?;
    Some((node, session, r))
}

/// What [`encode_moved`] wrote: the record's owner, the session, its messages in order.
fn read_moved(b: &[u8]) -> Option<(String, StoredSession, Vec<Delivery>)> {
    let (node, session, mut r) = read_record(b)?;
    let n = r.u32().ok()?;
    let mut messages = Vec::new();
    for _ in 0..n {
        let (msg, _) = codec::read_message(&mut r).ok()?;
        let body = codec::read_queued_body(&mut r).ok()?;
        messages.push(Delivery {
            msg,
            qos: body.qos,
            retain: body.retain,
            subscription_ids: body.subscription_ids,
            shared: body.shared,
        });
    }
    r.is_empty().then_some((node, session, messages))
}

/// A session handed over to another node: its record (owner: the node it leaves) and its
/// messages, in flight first and then queued, in the order it would have sent them.
pub(crate) fn encode_moved(node_id: &str, s: &StoredSession, messages: &[Delivery]) -> Bytes {
    let mut out = encode_record(node_id, s).to_vec();
    codec::put_u32(&mut out, messages.len() as u32);
    for d in messages {
        let expires_ms = d
            .msg
            .expires_at
            .map(|at| codec::wall_ms(crate::store::wall_from_instant(at)));
        codec::put_message(&mut out, &d.msg, expires_ms);
        let body = QueuedBody {
            msg_id: 0,
            qos: d.qos,
            retain: d.retain,
            subscription_ids: d.subscription_ids.clone(),
            shared: d.shared.clone(),
            flow: None,
        };
        codec::put_queued_body(&mut out, &body);
    }
    Bytes::from(out)
}

/// `moved` ([`encode_moved`]'s bytes) cut to at most `max` bytes (the NATS servers'
/// `max_payload`) by leaving out its newest messages, for a session whose queue is larger
/// than one NATS message can carry. Returns the bytes and how many messages were left out
/// (lost: the old node ends its copy of the session either way).
pub(super) fn fit_moved(moved: Bytes, max: usize) -> (Bytes, usize) {
    if max == 0 || moved.len() <= max {
        return (moved, 0);
    }
    let Some((node, session, messages)) = read_moved(&moved) else {
        return (moved, 0);
    };
    let total = messages.len();
    // Keep the share of messages that the size allows, again until it fits: a few
    // encodings, not one per message.
    let mut keep = total;
    loop {
        let bytes = encode_moved(&node, &session, &messages[..keep]);
        if bytes.len() <= max || keep == 0 {
            return (bytes, total - keep);
        }
        keep = keep * max / bytes.len();
    }
}

/// The session [`encode_moved`] wrote, as a store would have recovered it (its messages
/// all queued, none in flight); `None` for anything malformed.
pub(crate) fn decode_moved(client_id: &ByteStr, b: &[u8]) -> Option<RecoveredSession> {
    let (_, session, messages) = read_moved(b)?;
    let queued = (1..)
        .zip(messages)
        .map(|(seq, delivery)| {
            let d = StoredDelivery {
                delivery,
                flow: None,
            };
            (seq, d)
        })
        .collect();
    Some(RecoveredSession {
        client_id: client_id.clone(),
        session,
        queued,
        incoming_qos2: Vec::new(),
    })
}

/// Opens (creating if needed) the bucket: one value per key, on disk, `replicas` copies.
pub(super) async fn open(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<kv::Store, async_nats::Error> {
    if let Ok(store) = js.get_key_value(BUCKET).await {
        return Ok(store);
    }
    Ok(js
        .create_key_value(kv::Config {
            bucket: BUCKET.into(),
            history: 1,
            num_replicas: replicas,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await?)
}

/// A change to the bucket, applied in order by [`apply`].
#[derive(Debug)]
pub(super) enum RecordOp {
    Put(ByteStr, Bytes),
    Delete(ByteStr),
}

/// Applies the node's record changes in order, pipelined: each is published to the
/// bucket's subject (as the key-value client's `put` and `delete` do) without waiting for
/// the one before, and a second task awaits JetStream's answers (a reconnect storm is
/// thousands of records a second; one round trip each would queue them). JetStream
/// applies one connection's messages in order, so a later change of a key wins. A failure
/// is logged: the record is then stale until the session's next change.
pub(super) async fn apply(
    js: jetstream::Context,
    mut ops: tokio::sync::mpsc::UnboundedReceiver<RecordOp>,
) {
    let (acks, mut answers) = tokio::sync::mpsc::unbounded_channel::<(ByteStr, PublishAckFuture)>();
    let checker = tokio::spawn(async move {
        while let Some((client_id, ack)) = answers.recv().await {
            if let Err(e) = ack.await {
                log::warn!("cluster: session record of '{client_id}' not written: {e}");
            }
        }
    });
    while let Some(op) = ops.recv().await {
        let (client_id, publish) = match op {
            RecordOp::Put(id, value) => (id, PublishMessage::build().payload(value)),
            RecordOp::Delete(id) => (id, PublishMessage::build().header(KV_OPERATION, "DEL")),
        };
        let subject = format!("$KV.{BUCKET}.{}", key_of(&client_id));
        match js.send_publish(subject, publish).await {
            Ok(ack) => {
                let _ = acks.send((client_id, ack));
            }
            Err(e) => log::warn!("cluster: session record of '{client_id}' not sent: {e}"),
        }
    }
    drop(acks);
    let _ = checker.await;
}

/// True when the bucket says another node than `me` owns `client_id`'s session (false
/// also when the bucket cannot be read: the local copy is kept).
pub(super) async fn owned_elsewhere(store: &kv::Store, me: &str, client_id: &ByteStr) -> bool {
    match store.entry(key_of(client_id)).await {
        Ok(Some(e)) if e.operation == kv::Operation::Put => {
            decode_record(&e.value).is_some_and(|(owner, _)| owner != me)
        }
        _ => false,
    }
}

/// Looks up `client_id`'s session elsewhere in the cluster for a CONNECT on node `me`, and
/// takes it over (see the module documentation). `None`: no session to resume.
pub(super) async fn fetch(
    client: &async_nats::Client,
    store: &kv::Store,
    me: &str,
    client_id: &ByteStr,
) -> Option<RecoveredSession> {
    let key = key_of(client_id);
    // Twice at most: a compare-and-swap lost to a node that took the session meanwhile
    // starts over with that node as the owner to ask.
    for _ in 0..2 {
        let entry = match store.entry(key.clone()).await {
            Ok(Some(e)) if e.operation == kv::Operation::Put => e,
            Ok(_) => return None,
            Err(e) => {
                log::warn!("cluster: session record of '{client_id}' unreadable: {e}");
                return None;
            }
        };
        let (owner, stored) = decode_record(&entry.value)?;
        if owner == me {
            // This node owned it and has it no more (ended, or lost in a restart).
            return None;
        }
        let moved = match tokio::time::timeout(
            HANDOVER_WAIT,
            client.request(
                handover_subject(&owner),
                Bytes::copy_from_slice(client_id.as_bytes()),
            ),
        )
        .await
        {
            // The owner answered: its session (or nothing: it ended there).
            Ok(Ok(reply)) if reply.payload.is_empty() => None,
            Ok(Ok(reply)) => Some(decode_moved(client_id, &reply.payload)?),
            // No node answers for the owner: what the record says is all there is.
            _ => {
                log::info!(
                    "cluster: node '{owner}' did not hand over the session of '{client_id}': \
                     resuming it from its record"
                );
                Some(RecoveredSession {
                    client_id: client_id.clone(),
                    session: stored,
                    queued: Vec::new(),
                    incoming_qos2: Vec::new(),
                })
            }
        };
        let moved = moved?;
        let record = encode_record(me, &moved.session);
        match store.update(&key, record, entry.revision).await {
            Ok(_) => return Some(moved),
            Err(e) => log::info!("cluster: the session of '{client_id}' moved meanwhile ({e})"),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use crate::protocol::{ProtocolVersion, QoS, SubOptions};
    use crate::record::Subscription;
    use std::sync::Arc;

    #[test]
    fn a_session_too_large_for_one_nats_message_keeps_its_oldest_messages() {
        let stored = StoredSession {
            expiry_interval: 60,
            expires_at: None,
            version: ProtocolVersion::V311,
            subscriptions: Vec::new(),
            pending_will: None,
        };
        let msgs: Vec<Delivery> = (0..100)
            .map(|i| {
                let m = Arc::new(Message {
                    topic: ByteStr::from("t"),
                    payload: Bytes::from(format!("{i:04}").repeat(256)),
                    qos: QoS::AtLeastOnce,
                    ..Message::empty()
                });
                Delivery::new(m, QoS::AtLeastOnce, false)
            })
            .collect();
        let all = encode_moved("n", &stored, &msgs);
        let (same, none) = fit_moved(all.clone(), all.len());
        assert_eq!((same.len(), none), (all.len(), 0));
        let (cut, left_out) = fit_moved(all, 20_000);
        assert!(cut.len() <= 20_000, "{}", cut.len());
        assert!(left_out > 0);
        let got = decode_moved(&ByteStr::from("c"), &cut).expect("decodes");
        assert_eq!(got.queued.len() + left_out, 100);
        assert!(got.queued[0].1.delivery.msg.payload.starts_with(b"0000"));
    }

    #[test]
    fn keys_hold_only_what_the_bucket_allows_and_stay_distinct() {
        for id in ["a.b", "a b", "ü", "", "x=y", "*>"] {
            let k = key_of(id);
            assert!(
                k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_=".contains(&b)),
                "{id}: {k}"
            );
        }
        assert_ne!(key_of("a.b"), key_of("a=2Eb"));
        assert_ne!(key_of("a_b"), key_of("a.b"));
    }

    #[test]
    fn a_moved_session_keeps_its_subscriptions_and_messages_in_order() {
        let stored = StoredSession {
            expiry_interval: 300,
            expires_at: None,
            version: ProtocolVersion::V5,
            subscriptions: vec![(
                ByteStr::from("a/#"),
                Subscription {
                    options: SubOptions {
                        qos: QoS::ExactlyOnce,
                        ..SubOptions::default()
                    },
                    identifier: Some(7),
                },
            )],
            pending_will: None,
        };
        let msgs: Vec<Delivery> = (0..3)
            .map(|i| {
                let m = Arc::new(Message {
                    topic: ByteStr::from("a/b"),
                    payload: Bytes::from(format!("m{i}")),
                    qos: QoS::AtLeastOnce,
                    ..Message::empty()
                });
                Delivery::new(m, QoS::AtLeastOnce, false)
            })
            .collect();
        let b = encode_moved("n1", &stored, &msgs);
        let id = ByteStr::from("c1");
        let got = decode_moved(&id, &b).expect("decodes");
        assert_eq!(got.session, stored);
        let payloads: Vec<_> = got
            .queued
            .iter()
            .map(|(_, d)| d.delivery.msg.payload.clone())
            .collect();
        assert_eq!(payloads, vec!["m0", "m1", "m2"]);
        assert!(decode_moved(&id, &b[..b.len() - 1]).is_none(), "truncated");
        let (owner, s) = decode_record(&encode_record("n2", &stored)).unwrap();
        assert_eq!((owner.as_str(), s), ("n2", stored));
    }
}
