//! The gateway thread: the node's one NATS connection, between the shards and the cluster.
//!
//! It runs a single-threaded tokio runtime for `async-nats` and nothing else. One queue from
//! all shards ([`Outbound`]) carries their publishes and interest changes; one task per NATS
//! subscription hands what arrives to a shard's inbound queue and wakes that shard if it is
//! parked, as the other shards and the auth worker do.
//!
//! Copies: a node whose filters overlap (`a/#` and `a/b`) holds two NATS subscriptions that
//! both match `a/b`, and NATS sends the node one copy per matching subscription. Every
//! message therefore carries its origin (a random id of the sending gateway's run) and a
//! sequence number, and the receiving gateway delivers each (origin, sequence) once,
//! remembering the last [`SEEN_WINDOW`] of each origin.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::StreamExt;

use super::interest::{self, Announcement, RemoteInterest};
use super::messages::{self, Publisher};
use super::sessions::{self, RecordOp};
use super::wills::{self, WillOp, Wills};
use super::{envelope, retained, subject, takeover};
use super::{Inbound, Outbound, ShardLink, INBOUND_CAPACITY, OUTBOUND_CAPACITY};
use crate::index::TopicIndex;
use crate::protocol::ByteStr;

/// Queue group names of shared subscriptions start with this (then the group name and the
/// filter as subject tokens: distinct for each `$share/{name}/{filter}`).
const QUEUE_PREFIX: &str = "midge.q.";

/// Sequence numbers of one origin remembered for de-duplication: copies of one message arrive
/// together, so a window far larger than any burst between them is enough.
const SEEN_WINDOW: usize = 65_536;

/// The node's cluster settings (`cluster_*` lines of the config).
#[derive(Debug, Clone)]
pub struct Settings {
    pub name: String,
    pub node_id: String,
    pub nats_urls: Vec<String>,
    /// Messages from other nodes larger than this are dropped (the node's `max_packet_size`).
    pub max_packet_size: u32,
    /// Copies JetStream keeps of the cluster's streams (`cluster_replicas`; at most the number
    /// of NATS servers).
    pub replicas: usize,
    /// A node silent this long is dead and its clients' wills are published
    /// (`cluster_node_timeout`).
    pub node_timeout: std::time::Duration,
    /// Credentials and TLS for NATS.
    pub auth: super::NatsAuth,
    /// The shard that holds a client id's session (`shard::home_shard`; given by the broker,
    /// which knows both, so that the cluster does not depend on the shards).
    pub home_shard: fn(&[u8], usize) -> usize,
}

/// The running gateway thread.
#[derive(Debug)]
pub struct Gateway {
    thread: Option<JoinHandle<()>>,
}

impl Gateway {
    /// Waits for the thread, which ends once every shard's link is gone (the shards have
    /// stopped) and what they queued is flushed to NATS.
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How the gateway wakes a shard that may be parked (after queueing a message for it).
pub type Wake = Box<dyn Fn() + Send + Sync>;

/// Starts the gateway for the shards that `wake` wakes (one each, in shard order); returns it
/// and one link per shard, in the same order.
pub fn start(settings: Settings, wake: Vec<Wake>) -> io::Result<(Gateway, Vec<ShardLink>)> {
    let (out_tx, out_rx) = tokio::sync::mpsc::channel(OUTBOUND_CAPACITY);
    let mut links = Vec::new();
    let mut inbound = Vec::new();
    let mut interest = Vec::new();
    let retained_by_stream = Arc::new(AtomicBool::new(false));
    let messages_by_stream = Arc::new(AtomicBool::new(false));
    let sessions_by_bucket = Arc::new(AtomicBool::new(false));
    let node_id: Arc<str> = Arc::from(settings.node_id.as_str());
    for shard in 0..wake.len() {
        let (tx, rx) = crossbeam_channel::bounded(INBOUND_CAPACITY);
        let (itx, irx) = crossbeam_channel::unbounded();
        let dropped = Arc::new(AtomicU64::new(0));
        links.push(ShardLink {
            out: out_tx.clone(),
            inbound: rx,
            interest: irx,
            remote: TopicIndex::new(),
            remote_groups: Default::default(),
            dropped: 0,
            inbound_dropped: dropped.clone(),
            retained_by_stream: retained_by_stream.clone(),
            messages_by_stream: messages_by_stream.clone(),
            sessions_by_bucket: sessions_by_bucket.clone(),
            shard,
            durable_dropped: false,
            node_id: node_id.clone(),
        });
        inbound.push((tx, dropped));
        interest.push(itx);
    }
    drop(out_tx);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let thread = std::thread::Builder::new()
        .name("midge-cluster".into())
        .spawn(move || {
            let delivery = Arc::new(Delivery {
                wake,
                inbound,
                interest,
                seen: Mutex::new(HashMap::new()),
                max_packet_size: settings.max_packet_size,
                home_shard: settings.home_shard,
                retained_by_stream,
                messages_by_stream,
                sessions_by_bucket,
            });
            runtime.block_on(run(settings, out_rx, delivery));
        })?;
    Ok((
        Gateway {
            thread: Some(thread),
        },
        links,
    ))
}

/// What the subscription tasks share: where messages go, and what was delivered already.
pub(super) struct Delivery {
    wake: Vec<Wake>,
    inbound: Vec<(crossbeam_channel::Sender<Inbound>, Arc<AtomicU64>)>,
    /// Each shard's queue of changes to the other nodes' interest.
    interest: Vec<crossbeam_channel::Sender<(ByteStr, bool)>>,
    /// Per origin: the sequence numbers delivered lately.
    seen: Mutex<HashMap<u64, Seen>>,
    max_packet_size: u32,
    /// See [`Settings::home_shard`].
    home_shard: fn(&[u8], usize) -> usize,
    /// Shared with every shard's link (see `ShardLink::retained_by_stream`).
    pub(super) retained_by_stream: Arc<AtomicBool>,
    /// Shared with every shard's link: QoS 1/2 messages go through the message stream
    /// ([`messages`]).
    pub(super) messages_by_stream: Arc<AtomicBool>,
    /// Shared with every shard's link: sessions follow their clients ([`sessions`]).
    sessions_by_bucket: Arc<AtomicBool>,
}

impl Delivery {
    /// Hands one NATS message to the shard its topic hashes to, once per (origin, sequence)
    /// (`group`: `None`), or, for the node's members of the shared subscription `group`,
    /// once per arrival (each of its groups that matches brings one copy, one per group).
    fn deliver(&self, subject_str: &str, payload: &Bytes, group: Option<&ByteStr>) {
        let msg = if subject_str.starts_with(subject::DURABLE_PREFIX) {
            // A QoS 1/2 message of the message stream, seen by a shared subscription's
            // queue group (one copy per group: no de-duplication).
            let Some(msg) = self.decode_durable(subject_str, payload) else {
                return;
            };
            msg
        } else {
            let Some((origin, seq, publish)) = unframe(payload) else {
                log::warn!("cluster: malformed message on '{subject_str}' dropped");
                return;
            };
            if group.is_none() && !self.first_copy(origin, seq) {
                return;
            }
            let Some(msg) = envelope::decode(publish, self.max_packet_size) else {
                log::warn!("cluster: undecodable or oversized PUBLISH on '{subject_str}' dropped");
                return;
            };
            if subject::subject_topic(subject_str).as_deref() != Some(&*msg.topic) {
                log::warn!(
                    "cluster: PUBLISH whose topic is not its subject's dropped ('{subject_str}')"
                );
                return;
            }
            msg
        };
        let shard = self.shard_of(&msg.topic);
        let (tx, dropped) = &self.inbound[shard];
        let msg = Arc::new(msg);
        let item = match group {
            None => Inbound::Message(msg),
            Some(g) => Inbound::Shared(msg, g.clone()),
        };
        if tx.try_send(item).is_err() {
            dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        (self.wake[shard])();
    }

    /// Asks the shard that holds `client_id`'s session (the home shard of the id) to hand it
    /// over on `reply`.
    fn hand_over(self: &Arc<Self>, client_id: ByteStr, reply: String) {
        let shard = (self.home_shard)(client_id.as_bytes(), self.shards());
        let delivery = self.clone();
        tokio::spawn(async move {
            delivery
                .push_waiting(shard, Inbound::HandOver(client_id, reply))
                .await;
        });
    }

    /// The number of shards.
    pub(super) fn shards(&self) -> usize {
        self.inbound.len()
    }

    /// Hands a QoS 1/2 message another node published to the message stream to the shard of
    /// its topic. Never dropped: while the shard's queue is full the consumer waits, and
    /// JetStream holds the rest. An expired message is dropped here.
    pub(super) async fn durable_message(&self, subject_str: &str, payload: &[u8]) {
        let Some(msg) = self.decode_durable(subject_str, payload) else {
            return;
        };
        let shard = self.shard_of(&msg.topic);
        self.push_waiting(shard, Inbound::Message(Arc::new(msg)))
            .await;
    }

    /// The message of a message-stream entry on `subject_str`; `None` for one that has
    /// expired, or is malformed (logged).
    fn decode_durable(&self, subject_str: &str, payload: &[u8]) -> Option<crate::message::Message> {
        let decoded = envelope::decode_timed(
            subject::DURABLE_PREFIX,
            subject_str,
            payload,
            self.max_packet_size,
        );
        match decoded {
            Some((msg, false)) => Some(msg),
            Some((_, true)) => None,
            None => {
                log::warn!("cluster: malformed message-stream entry on '{subject_str}' dropped");
                None
            }
        }
    }

    /// Answers `shard`'s ticket: the stream holds (`ok`) or failed to store what it sent
    /// before it. Never dropped: the shard's held acknowledgements wait for it.
    pub(super) async fn settled(&self, shard: usize, ticket: u64, ok: bool) {
        let item = match ok {
            true => Inbound::Committed(ticket),
            false => Inbound::CommitFailed(ticket),
        };
        self.push_waiting(shard, item).await;
    }

    /// One topic always goes to the same shard, which keeps its messages (and its retained
    /// changes) in order.
    fn shard_of(&self, topic: &str) -> usize {
        let hasher = BuildHasherDefault::<DefaultHasher>::default();
        (hasher.hash_one(topic) % self.inbound.len() as u64) as usize
    }

    /// Hands a dead node's client's will to a shard, to publish (the shard of its topic;
    /// waits while that shard's queue is full, as [`Delivery::retained`] does).
    pub(super) async fn will(&self, msg: crate::message::Message) {
        let shard = self.shard_of(&msg.topic);
        self.push_waiting(shard, Inbound::Will(Arc::new(msg))).await;
    }

    /// Queues `item` for `shard`, waiting while its queue is full.
    async fn push_waiting(&self, shard: usize, mut item: Inbound) {
        loop {
            match self.inbound[shard].0.try_send(item) {
                Ok(()) => break,
                Err(crossbeam_channel::TrySendError::Full(back)) => {
                    item = back;
                    (self.wake[shard])();
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                Err(crossbeam_channel::TrySendError::Disconnected(_)) => return,
            }
        }
        (self.wake[shard])();
    }

    /// Hands one entry of the retained stream to the shard of its topic. Never dropped (a
    /// lost change would leave this node's retained message wrong for good): while the
    /// shard's queue is full the follower waits, and JetStream holds the rest.
    pub(super) async fn retained(&self, subject_str: &str, payload: &[u8]) {
        let Some(msg) = retained::unframe(subject_str, payload, self.max_packet_size) else {
            log::warn!("cluster: malformed retained-stream entry on '{subject_str}' dropped");
            return;
        };
        let shard = self.shard_of(&msg.topic);
        self.push_waiting(shard, Inbound::Retained(Arc::new(msg)))
            .await;
    }

    /// Hands every shard the notice that `client_id` connected to another node (the shard
    /// that holds its session closes the connection; the others find nothing).
    fn taken_over(&self, client_id: &str) {
        let id = ByteStr::from(client_id);
        for (shard, (tx, dropped)) in self.inbound.iter().enumerate() {
            if tx.try_send(Inbound::TakenOver(id.clone())).is_err() {
                dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            (self.wake[shard])();
        }
    }

    /// Has every shard keep its sessions' wills in the cluster again (this node's run was
    /// taken for dead, see `Wills::claimed`).
    fn keep_wills_again(self: &Arc<Self>) {
        for shard in 0..self.shards() {
            let delivery = self.clone();
            tokio::spawn(async move { delivery.push_waiting(shard, Inbound::KeepWills).await });
        }
    }

    /// Hands every shard the changes of the other nodes' interest, and wakes them.
    fn interest_changed(&self, changes: Vec<(String, bool)>) {
        if changes.is_empty() {
            return;
        }
        for (tx, wake) in self.interest.iter().zip(&self.wake) {
            for (filter, added) in &changes {
                let _ = tx.send((ByteStr::from(filter.as_str()), *added));
            }
            wake();
        }
    }

    /// True the first time (origin, seq) is seen within the window.
    fn first_copy(&self, origin: u64, seq: u64) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let (set, order) = seen.entry(origin).or_default();
        if !set.insert(seq) {
            return false;
        }
        order.push_back(seq);
        if order.len() > SEEN_WINDOW {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
        true
    }
}

/// The sequence numbers of one origin delivered lately, as a set and in arrival order (the
/// oldest leaves the set when the window is full).
type Seen = (HashSet<u64>, VecDeque<u64>);

/// Frames a message for NATS: origin, sequence, then the PUBLISH (see [`envelope`]).
fn frame(origin: u64, seq: u64, publish: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(16 + publish.len());
    b.put_u64(origin);
    b.put_u64(seq);
    b.put_slice(publish);
    b.freeze()
}

fn unframe(b: &Bytes) -> Option<(u64, u64, &[u8])> {
    if b.len() < 16 {
        return None;
    }
    let mut head = &b[..16];
    Some((head.get_u64(), head.get_u64(), &b[16..]))
}

/// The subscriptions this node holds in NATS: per filter its patterns' subscription tasks
/// and how many subscriptions of the node's clients use it.
type Interest = HashMap<String, (usize, Vec<tokio::task::JoinHandle<()>>)>;

async fn run(
    settings: Settings,
    mut rx: tokio::sync::mpsc::Receiver<Outbound>,
    delivery: Arc<Delivery>,
) {
    let mut origin_bytes = [0u8; 8];
    let _ = getrandom::fill(&mut origin_bytes);
    let origin = u64::from_be_bytes(origin_bytes);
    let addrs: Vec<async_nats::ServerAddr> = settings
        .nats_urls
        .iter()
        .filter_map(|u| u.parse().ok())
        .collect();
    let name = format!("midge {} {}", settings.name, settings.node_id);
    let options = |name: String| {
        let auth = settings.auth.clone();
        async move {
            let label = name.clone();
            let base = async_nats::ConnectOptions::new()
                .name(name)
                .retry_on_initial_connect()
                // What happens to the connection (refused credentials, a server gone, a
                // reconnect) goes to the log: the client retries on its own.
                .event_callback(move |event| {
                    let label = label.clone();
                    async move {
                        match event {
                            async_nats::Event::Connected => {
                                log::info!("cluster: NATS connection '{label}': {event}")
                            }
                            _ => log::warn!("cluster: NATS connection '{label}': {event}"),
                        }
                    }
                });
            auth.apply(base).await
        }
    };
    let (plain_options, shared_options) = match (
        options(name.clone()).await,
        options(format!("{name} shared")).await,
    ) {
        (Ok(p), Ok(s)) => (p, s),
        (Err(e), _) | (_, Err(e)) => {
            log::error!("cluster: cannot read the NATS credentials: {e}");
            return;
        }
    };
    let client = match plain_options.no_echo().connect(addrs.clone()).await {
        Ok(c) => c,
        Err(e) => {
            log::error!("cluster: cannot connect to NATS: {e}");
            return;
        }
    };
    // The shared subscriptions' queue groups live on a second connection, with echo: the
    // queue group may pick this node for a message this node published.
    let share_client = match shared_options.connect(addrs).await {
        Ok(c) => c,
        Err(e) => {
            log::error!("cluster: cannot connect to NATS: {e}");
            return;
        }
    };
    let clients = Clients {
        plain: client.clone(),
        shared: share_client,
    };
    log::info!(
        "cluster '{}': node '{}' on NATS {}",
        settings.name,
        settings.node_id,
        settings.nats_urls.join(", ")
    );
    let announce_to = interest::subject_of(origin);
    let mut announcements = match client.subscribe(format!("{}>", interest::PREFIX)).await {
        Ok(sub) => sub,
        Err(e) => {
            log::error!("cluster: cannot subscribe to the interest announcements: {e}");
            return;
        }
    };
    let announce = |a: Announcement| {
        let client = client.clone();
        let subject = announce_to.clone();
        async move {
            if let Err(e) = client.publish(subject, a.encode()).await {
                log::warn!("cluster: interest announcement failed: {e}");
            }
        }
    };
    // Many QoS 1/2 messages may await JetStream's answer at once: the shards' queue, not the
    // client's default window, is what bounds them.
    let js = async_nats::jetstream::ContextBuilder::new()
        .max_ack_inflight(OUTBOUND_CAPACITY)
        .build(client.clone());
    let consumer = tokio::spawn(messages::consume(
        js.clone(),
        settings.replicas,
        settings.node_id.clone(),
        delivery.clone(),
    ));
    let mut durable = Publisher::start(js.clone(), origin, settings.node_id.clone(), &delivery);
    let bucket: Arc<std::sync::OnceLock<async_nats::jetstream::kv::Store>> = Default::default();
    let (records, records_rx) = tokio::sync::mpsc::unbounded_channel();
    let opener = tokio::spawn(open_sessions(
        js.clone(),
        settings.replicas,
        bucket.clone(),
        records_rx,
        delivery.clone(),
    ));
    tokio::spawn(sessions::check_unique(
        client.clone(),
        settings.node_id.clone(),
    ));
    let mut handovers = match client
        .subscribe(sessions::handover_subject(&settings.node_id))
        .await
    {
        Ok(sub) => sub,
        Err(e) => {
            log::error!("cluster: cannot subscribe to session hand-over requests: {e}");
            return;
        }
    };
    let follower = tokio::spawn(retained::follow(
        js.clone(),
        settings.replicas,
        delivery.clone(),
    ));
    let mut heartbeats = match client
        .subscribe(format!("{}*", wills::HEARTBEAT_PREFIX))
        .await
    {
        Ok(sub) => sub,
        Err(e) => {
            log::error!("cluster: cannot subscribe to the heartbeats: {e}");
            return;
        }
    };
    let mut claims = match client.subscribe(Wills::claims()).await {
        Ok(sub) => sub,
        Err(e) => {
            log::error!("cluster: cannot subscribe to the will claims: {e}");
            return;
        }
    };
    let mut takeovers = match client.subscribe(format!("{}>", takeover::PREFIX)).await {
        Ok(sub) => sub,
        Err(e) => {
            log::error!("cluster: cannot subscribe to the takeover notices: {e}");
            return;
        }
    };
    let mut wills = Wills::start(
        js.clone(),
        settings.replicas,
        origin,
        settings.node_timeout,
        delivery.clone(),
    );
    let mut beat = tokio::time::interval(wills::HEARTBEAT_EVERY);
    announce(Announcement::Hello(Vec::new())).await;
    let mut local: Interest = HashMap::new();
    let mut remote = RemoteInterest::default();
    let mut every = tokio::time::interval(interest::FULL_EVERY);
    let mut seq = 0u64;
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                None => break,
                Some(Outbound::Publish(msg)) => {
                    seq += 1;
                    let body = frame(origin, seq, &envelope::encode(&msg));
                    if let Err(e) = client.publish(subject::topic_subject(&msg.topic), body).await {
                        log::warn!("cluster: publish on '{}' failed: {e}", msg.topic);
                    }
                }
                Some(Outbound::Durable(shard, msg)) => durable.publish(shard, &msg).await,
                Some(Outbound::Ticket(shard, ticket)) => durable.ticket(shard, ticket),
                Some(Outbound::Retained(msg)) => retained::publish(&js, &msg).await,
                Some(Outbound::WillSet(client_id, will)) => wills.op(WillOp::Keep(client_id, will)),
                Some(Outbound::WillGone(client_id)) => wills.op(WillOp::Forget(client_id)),
                Some(Outbound::SessionPut(client_id, record)) => {
                    let _ = records.send(RecordOp::Put(client_id, record));
                }
                Some(Outbound::SessionGone(client_id)) => {
                    let _ = records.send(RecordOp::Delete(client_id));
                }
                Some(Outbound::SessionFetch { shard, token, client_id }) => {
                    let (client, bucket, delivery) = (client.clone(), bucket.clone(), delivery.clone());
                    let me = settings.node_id.clone();
                    tokio::spawn(async move {
                        let found = match bucket.get() {
                            Some(store) => sessions::fetch(&client, store, &me, &client_id).await,
                            None => None,
                        };
                        let answer = Inbound::SessionFetched(token, found.map(Box::new));
                        delivery.push_waiting(shard, answer).await;
                    });
                }
                Some(Outbound::SessionCheck(shard, client_id)) => {
                    let (bucket, delivery) = (bucket.clone(), delivery.clone());
                    let me = settings.node_id.clone();
                    tokio::spawn(async move {
                        let Some(store) = bucket.get() else { return };
                        let elsewhere = sessions::owned_elsewhere(store, &me, &client_id).await;
                        let answer = Inbound::SessionChecked(client_id, elsewhere);
                        delivery.push_waiting(shard, answer).await;
                    });
                }
                Some(Outbound::HandedOver(reply, session)) => {
                    let max = client.server_info().max_payload;
                    let (session, left_out) = sessions::fit_moved(session.unwrap_or_default(), max);
                    if left_out > 0 {
                        log::warn!(
                            "cluster: {left_out} queued message(s) of a session handed over left \
                             out: over the NATS max_payload of {max} bytes"
                        );
                    }
                    if let Err(e) = client.publish(reply, session).await {
                        log::warn!("cluster: session hand-over answer failed: {e}");
                    }
                }
                Some(Outbound::Connected(client_id)) => {
                    if let Err(e) = client.publish(takeover::subject_of(&client_id), Bytes::new()).await {
                        log::warn!("cluster: takeover notice for '{client_id}' failed: {e}");
                    }
                }
                Some(Outbound::Interest(filter, added)) => {
                    if let Some(change) = local_interest(&clients, &delivery, &mut local, &filter, added).await {
                        announce(change).await;
                    }
                }
            },
            Some(m) = announcements.next() => {
                let (Some(from), Some(a)) =
                    (interest::subject_origin(m.subject.as_str()), Announcement::decode(&m.payload))
                else {
                    log::warn!("cluster: malformed interest announcement on '{}' dropped", m.subject);
                    continue;
                };
                if matches!(a, Announcement::Hello(_)) {
                    announce(Announcement::Full(local.keys().cloned().collect())).await;
                }
                delivery.interest_changed(remote.apply(from, a, std::time::Instant::now()));
            }
            Some(m) = heartbeats.next() => wills.heard(m.subject.as_str()),
            Some(m) = claims.next() => {
                if wills.claimed(m.subject.as_str()) {
                    delivery.keep_wills_again();
                }
            }
            Some(m) = handovers.next() => match (m.reply, std::str::from_utf8(&m.payload)) {
                (Some(reply), Ok(id)) => delivery.hand_over(ByteStr::from(id), reply.to_string()),
                _ => log::warn!("cluster: malformed session hand-over request"),
            },
            Some(m) = takeovers.next() => match takeover::client_id_of(m.subject.as_str()) {
                Some(id) => delivery.taken_over(&id),
                None => log::warn!("cluster: malformed takeover notice on '{}'", m.subject),
            },
            _ = beat.tick() => {
                if let Err(e) = client.publish(wills::heartbeat_subject(wills.run()), Bytes::new()).await {
                    log::warn!("cluster: heartbeat failed: {e}");
                }
                wills.tick();
            }
            _ = every.tick() => {
                announce(Announcement::Full(local.keys().cloned().collect())).await;
                delivery.interest_changed(remote.expire(std::time::Instant::now()));
            }
        }
    }
    follower.abort();
    consumer.abort();
    opener.abort();
    wills.finish().await;
    let _ = client.flush().await;
}

/// Opens the session bucket (retrying while JetStream is unavailable), then applies the
/// node's record changes in order for as long as the gateway runs.
async fn open_sessions(
    js: async_nats::jetstream::Context,
    replicas: usize,
    bucket: Arc<std::sync::OnceLock<async_nats::jetstream::kv::Store>>,
    records: tokio::sync::mpsc::UnboundedReceiver<RecordOp>,
    delivery: Arc<Delivery>,
) {
    let mut failing = false;
    let store = loop {
        match sessions::open(&js, replicas).await {
            Ok(store) => break store,
            Err(e) if !failing => {
                log::warn!("cluster: session bucket unavailable ({e}); retrying");
                failing = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    };
    let _ = bucket.set(store);
    delivery.sessions_by_bucket.store(true, Ordering::Release);
    log::info!(
        "cluster: sessions follow their clients (bucket {})",
        sessions::BUCKET
    );
    sessions::apply(js, records).await;
}

/// The node's two NATS connections: `plain` (no echo) for messages and announcements,
/// `shared` (echo on) for the shared subscriptions' queue groups.
struct Clients {
    plain: async_nats::Client,
    shared: async_nats::Client,
}

/// What a filter of the node's clients is to the cluster: a plain filter, or a shared
/// subscription's group name and filter; `None` for what stays on the node (`$SYS/...`, and
/// shared subscriptions to `$` topics).
fn cluster_filter(filter: &str) -> Option<(Option<&str>, &str)> {
    let (group, inner) = match crate::protocol::topic::parse_shared(filter) {
        Some(Ok((name, inner))) => (Some(name), inner),
        Some(Err(_)) => return None,
        None => (None, filter),
    };
    (!inner.starts_with('$')).then_some((group, inner))
}

/// Counts a local subscription on `filter` gained or lost: the first one subscribes its
/// patterns in NATS (a shared subscription's in a queue group named after its group and
/// filter, so that each message goes to one node of those with members), the last one
/// unsubscribes them. Returns the announcement to make when the node's set of filters
/// changed.
async fn local_interest(
    clients: &Clients,
    delivery: &Arc<Delivery>,
    local: &mut Interest,
    filter: &ByteStr,
    added: bool,
) -> Option<Announcement> {
    let (group, inner) = cluster_filter(filter)?;
    if !added {
        let e = local.get_mut(&**filter)?;
        e.0 -= 1;
        if e.0 > 0 {
            return None;
        }
        // Aborting a task drops its subscriber, which unsubscribes in NATS.
        for task in local.remove(&**filter).map(|e| e.1).unwrap_or_default() {
            task.abort();
        }
        return Some(Announcement::Remove(filter.to_string()));
    }
    let e = local.entry(filter.to_string()).or_insert((0, Vec::new()));
    e.0 += 1;
    if e.0 > 1 {
        return None;
    }
    // A shared subscription's group also listens where QoS 1/2 messages go (the message
    // stream's subjects: core NATS carries stream messages to plain subscribers too); a plain
    // filter gets those through the node's stream consumer.
    let mut patterns = subject::filter_patterns(inner);
    if group.is_some() {
        patterns.extend(subject::filter_patterns_under(
            subject::DURABLE_PREFIX,
            inner,
        ));
    }
    for pattern in patterns {
        let sub = match group {
            None => clients.plain.subscribe(pattern.clone()).await,
            Some(name) => {
                let queue = subject::subject_under(QUEUE_PREFIX, &format!("{name}/{inner}"));
                clients.shared.queue_subscribe(pattern.clone(), queue).await
            }
        };
        match sub {
            Ok(mut sub) => {
                let delivery = delivery.clone();
                let group = group.map(|_| filter.clone());
                e.1.push(tokio::spawn(async move {
                    while let Some(m) = sub.next().await {
                        delivery.deliver(m.subject.as_str(), &m.payload, group.as_ref());
                    }
                }));
            }
            Err(err) => log::warn!("cluster: subscribe to '{pattern}' failed: {err}"),
        }
    }
    Some(Announcement::Add(filter.to_string()))
}

#[cfg(test)]
mod tests {
    use super::cluster_filter;

    #[test]
    fn filters_are_plain_or_shared_and_dollar_topics_stay_on_the_node() {
        assert_eq!(cluster_filter("a/+/#"), Some((None, "a/+/#")));
        assert_eq!(cluster_filter("$share/g/a/#"), Some((Some("g"), "a/#")));
        assert_eq!(cluster_filter("$SYS/#"), None);
        assert_eq!(cluster_filter("$share/g/$SYS/#"), None);
        assert_eq!(cluster_filter("$share/g"), None, "no filter");
    }
}
