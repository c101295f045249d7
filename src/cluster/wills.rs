//! The wills of a node that dies: published once, by one of the nodes that survive it.
//!
//! A node cannot publish its clients' wills when it is killed, so it keeps a copy of each
//! in the JetStream stream [`STREAM`] while the client has one (connected with a will, or
//! disconnected with a will waiting for its delay): on `midge.w.<run>.<client id tokens>`,
//! one message per subject, purged when the will is published or dropped. `<run>` is the
//! random origin id of the gateway's run (a node that restarts is a new run, and the old
//! run's wills are the old connections').
//!
//! Every gateway publishes a heartbeat on `midge.h.<run>` every [`HEARTBEAT_EVERY`] and
//! notes the others' ([`Liveness`]). A run silent for `cluster_node_timeout` is dead: each
//! survivor that notices tries to claim it by publishing `midge.wc.<run>` to the stream
//! with "expect no message on this subject", which JetStream grants to one of them. The
//! winner reads the dead run's wills (an ordered consumer on `midge.w.<run>.>`, as many as
//! the consumer says are pending), hands each to one of its shards to publish as the
//! client's will (retained store, local subscribers, the other nodes), then purges them and
//! the claim. A node that starts also sweeps, once, the runs that left wills but send no
//! heartbeat (a cluster of one node that was killed and restarted).
//!
//! A node taken for dead while alive (cut off from NATS, or frozen, for longer than the
//! timeout) sees the claim on its own run (core NATS carries the stream's messages to the
//! node's subscription on `midge.wc.*`): its wills were published and their copies removed,
//! and the run cannot be claimed again, so it goes on under a new random run (its
//! heartbeats announce it) and its shards keep every current will again
//! ([`Wills::claimed`], `Inbound::KeepWills`): its real death later publishes them.
//!
//! What this does not do: the Will Delay Interval is not waited for (the dead node's clients
//! are gone for good), and a node taken for dead has its clients' wills published while
//! they are still connected (choose the timeout above the longest NATS outage to be ridden
//! out). Copies are sent again for up to [`KEEP_FOR`] while JetStream does not take them (a
//! stream electing its leader).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage, stream};
use bytes::Bytes;
use futures_util::StreamExt;

use super::gateway::Delivery;
use super::{envelope, streams, subject};
use crate::message::SharedMessage;
use crate::protocol::ByteStr;

/// What the gateway's main loop asks of the wills task, in order.
#[derive(Debug)]
pub(super) enum WillOp {
    /// Keep (or replace) the copy of a client's will.
    Keep(ByteStr, SharedMessage),
    /// Drop the copy of a client's will.
    Forget(ByteStr),
    /// A run is dead: claim it and publish its wills.
    Dead(u64),
    /// The start-up sweep: every run with wills that is not one of these (alive) is dead.
    Sweep(Vec<u64>),
    /// This node's wills go under run `.0` from now on (see [`Wills::claimed`]).
    NewRun(u64),
}

/// How long the copy of a will is sent again while JetStream does not take it.
const KEEP_FOR: Duration = Duration::from_secs(30);

/// Will operations queued for the wills task at most (a JetStream outage must not grow the
/// gateway without bound; beyond this they are dropped and logged).
const OPS_CAPACITY: usize = 65_536;

/// The gateway's side of the wills: the queue to the task that talks to the stream, and the
/// other runs' liveness.
pub(super) struct Wills {
    tx: tokio::sync::mpsc::Sender<WillOp>,
    task: tokio::task::JoinHandle<()>,
    liveness: Liveness,
    me: u64,
    /// When the start-up sweep is due (`None`: done).
    sweep_at: Option<Instant>,
}

impl Wills {
    /// Starts the wills task of run `me`.
    pub(super) fn start(
        js: jetstream::Context,
        replicas: usize,
        me: u64,
        timeout: Duration,
        delivery: Arc<Delivery>,
    ) -> Wills {
        let (tx, rx) = tokio::sync::mpsc::channel(OPS_CAPACITY);
        let task = tokio::spawn(run_task(js, replicas, me, rx, delivery));
        Wills {
            tx,
            task,
            liveness: Liveness::new(timeout),
            me,
            sweep_at: Some(Instant::now() + timeout),
        }
    }

    /// Queues `op` for the task (dropped and logged when the queue is full).
    pub(super) fn op(&self, op: WillOp) {
        if let Err(e) = self.tx.try_send(op) {
            log::warn!("cluster: will operation dropped ({e})");
        }
    }

    /// This node's run: its heartbeats and will copies are under it.
    pub(super) fn run(&self) -> u64 {
        self.me
    }

    /// A claim was published on `subject_str`. If it claims this node's run, the cluster took
    /// this node for dead (its heartbeats did not arrive for the timeout: a NATS outage): a
    /// survivor publishes and removes the copies of its wills, and nobody could claim the run
    /// again. So this node goes on under a new run (its heartbeats announce it) and returns
    /// true: the caller has the shards keep their wills again, under the new run.
    pub(super) fn claimed(&mut self, subject_str: &str) -> bool {
        let Some(run) = subject_str
            .strip_prefix(CLAIM_PREFIX)
            .and_then(|r| u64::from_str_radix(r, 16).ok())
        else {
            return false;
        };
        if run != self.me {
            return false;
        }
        let mut bytes = [0u8; 8];
        let _ = getrandom::fill(&mut bytes);
        self.me = u64::from_be_bytes(bytes);
        log::warn!(
            "cluster: the cluster took this node for dead (no heartbeat for the timeout): its \
             clients' wills were published; they are kept again under run {:016x}",
            self.me
        );
        self.op(WillOp::NewRun(self.me));
        true
    }

    /// The subject pattern of every claim (core NATS sees the stream's messages too).
    pub(super) fn claims() -> String {
        format!("{CLAIM_PREFIX}*")
    }

    /// A heartbeat arrived on `subject_str`.
    pub(super) fn heard(&mut self, subject_str: &str) {
        if let Some(run) = heartbeat_run(subject_str) {
            if run != self.me {
                self.liveness.heard(run, Instant::now());
            }
        }
    }

    /// Once per heartbeat: the runs that fell silent are dead; the start-up sweep when due.
    pub(super) fn tick(&mut self) {
        let now = Instant::now();
        for run in self.liveness.take_dead(now) {
            log::warn!(
                "cluster: node run {run:016x} silent for {:?}: taken for dead",
                self.liveness.timeout
            );
            self.op(WillOp::Dead(run));
        }
        if self.sweep_at.is_some_and(|at| now >= at) {
            self.sweep_at = None;
            let mut alive: Vec<u64> = self.liveness.last.keys().copied().collect();
            alive.push(self.me);
            self.op(WillOp::Sweep(alive));
        }
    }

    /// The node stops: its clients' connections are closed by now, so the copies of their
    /// wills go (no survivor should publish them); waits for the task to have done so.
    pub(super) async fn finish(self) {
        drop(self.tx);
        if tokio::time::timeout(FINISH_LIMIT, self.task).await.is_err() {
            log::warn!("cluster: will copies of this node left in {STREAM} (JetStream slow)");
        }
    }
}

/// The wills task: creates the stream (retrying while JetStream is not there: the queue
/// holds what comes meanwhile), then applies the operations in order.
async fn run_task(
    js: jetstream::Context,
    replicas: usize,
    me: u64,
    mut rx: tokio::sync::mpsc::Receiver<WillOp>,
    delivery: Arc<Delivery>,
) {
    let mut warned = false;
    let stream = loop {
        match js.get_or_create_stream(stream_config(replicas)).await {
            Ok(s) => break s,
            Err(e) => {
                if !warned {
                    log::warn!("cluster: will stream {STREAM} unavailable ({e}); retrying");
                    warned = true;
                }
                // Stopping before JetStream ever answered: nothing was kept.
                if rx.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    // From here a client's will is kept where survivors find it (before, the copies wait
    // in the queue, and die with the node).
    log::info!("cluster: client wills kept in the stream {STREAM}");
    let take = |run: u64| {
        tokio::spawn(take_over(
            js.clone(),
            stream.clone(),
            me,
            run,
            delivery.clone(),
        ));
    };
    let mut me = me;
    while let Some(op) = rx.recv().await {
        match op {
            WillOp::NewRun(run) => me = run,
            WillOp::Keep(client_id, will) => keep(&js, me, &client_id, &will).await,
            WillOp::Forget(client_id) => forget(&stream, me, &client_id).await,
            WillOp::Dead(run) => take(run),
            WillOp::Sweep(alive) => match runs_with_wills(&stream).await {
                Ok(runs) => runs
                    .into_iter()
                    .filter(|r| !alive.contains(r))
                    .for_each(take),
                Err(e) => log::warn!("cluster: sweep of {STREAM} failed: {e}"),
            },
        }
    }
    let _ = stream
        .purge()
        .filter(format!("{WILL_PREFIX}{me:016x}.>"))
        .await;
}

/// How long a stopping node waits for its will copies to be removed.
const FINISH_LIMIT: Duration = Duration::from_secs(5);

/// The stream's name.
pub(super) const STREAM: &str = "MIDGE_WILLS";
/// Wills: `midge.w.<run>.<client id tokens>`.
const WILL_PREFIX: &str = "midge.w.";
/// Claims: `midge.wc.<run>`.
const CLAIM_PREFIX: &str = "midge.wc.";
/// Heartbeats (core NATS): `midge.h.<run>`.
pub(super) const HEARTBEAT_PREFIX: &str = "midge.h.";
/// How often a gateway says it is alive.
pub(super) const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// The longest a dead run's wills are read for: a stream that does not answer for this long
/// leaves the rest for the next sweep.
const READ_LIMIT: Duration = Duration::from_secs(30);

/// The subject of `client_id`'s will, kept by run `run`.
pub(super) fn will_subject(run: u64, client_id: &str) -> String {
    subject::subject_under(&format!("{WILL_PREFIX}{run:016x}."), client_id)
}

/// The subject of run `run`'s heartbeat.
pub(super) fn heartbeat_subject(run: u64) -> String {
    format!("{HEARTBEAT_PREFIX}{run:016x}")
}

/// The run a heartbeat subject names.
pub(super) fn heartbeat_run(subject_str: &str) -> Option<u64> {
    u64::from_str_radix(subject_str.strip_prefix(HEARTBEAT_PREFIX)?, 16).ok()
}

/// The run a will subject belongs to.
fn will_run(subject_str: &str) -> Option<u64> {
    let rest = subject_str.strip_prefix(WILL_PREFIX)?;
    u64::from_str_radix(rest.split('.').next()?, 16).ok()
}

/// Which other runs are alive: the last heartbeat heard from each.
#[derive(Debug)]
pub(super) struct Liveness {
    last: HashMap<u64, Instant>,
    timeout: Duration,
}

impl Liveness {
    pub(super) fn new(timeout: Duration) -> Liveness {
        Liveness {
            last: HashMap::new(),
            timeout,
        }
    }

    pub(super) fn heard(&mut self, run: u64, now: Instant) {
        self.last.insert(run, now);
    }

    /// The runs silent for the timeout, forgotten as they are returned.
    pub(super) fn take_dead(&mut self, now: Instant) -> Vec<u64> {
        let timeout = self.timeout;
        let dead: Vec<u64> = self
            .last
            .iter()
            .filter(|(_, &at)| now.duration_since(at) >= timeout)
            .map(|(&run, _)| run)
            .collect();
        for run in &dead {
            self.last.remove(run);
        }
        dead
    }
}

fn stream_config(replicas: usize) -> stream::Config {
    let subjects = vec![format!("{WILL_PREFIX}>"), format!("{CLAIM_PREFIX}>")];
    streams::one_per_subject(STREAM, subjects, replicas)
}

/// Keeps a copy of `client_id`'s will (as the PUBLISH it becomes). Waits for JetStream's
/// acknowledgement: a purge is an API request that JetStream may apply before a publish
/// sent earlier is stored, so each operation on the stream waits for the one before (the
/// task works through its queue at JetStream's round-trip time, off the message path).
async fn keep(js: &jetstream::Context, run: u64, client_id: &str, will: &SharedMessage) {
    let subject = will_subject(run, client_id);
    let payload = envelope::encode(will);
    // A stream just created (or one whose leader died) takes a moment to elect a leader:
    // the copy is sent again meanwhile, for a while (the operations after it wait).
    let deadline = Instant::now() + KEEP_FOR;
    loop {
        let stored = match js.publish(subject.clone(), payload.clone()).await {
            Ok(ack) => ack.await.map(drop).map_err(async_nats::Error::from),
            Err(e) => Err(e.into()),
        };
        match stored {
            Ok(()) => return,
            Err(e) if Instant::now() >= deadline => {
                log::warn!("cluster: a will was not kept in {STREAM}: {e}");
                return;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Drops the copy of `client_id`'s will.
async fn forget(stream: &stream::Stream, run: u64, client_id: &str) {
    if let Err(e) = stream.purge().filter(will_subject(run, client_id)).await {
        log::warn!("cluster: a will copy was not removed from {STREAM}: {e}");
    }
}

/// Claims dead run `run` and, if this node got it, publishes its wills through the shards.
async fn take_over(
    js: jetstream::Context,
    stream: stream::Stream,
    me: u64,
    run: u64,
    delivery: Arc<Delivery>,
) {
    let claim = PublishMessage::build()
        .payload(Bytes::from(format!("{me:016x}")))
        .expected_last_subject_sequence(0);
    let granted = match js
        .send_publish(format!("{CLAIM_PREFIX}{run:016x}"), claim)
        .await
    {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    };
    if !granted {
        return;
    }
    match publish_wills(&stream, run, &delivery).await {
        Ok(n) => log::info!("cluster: published {n} will(s) of dead node run {run:016x}"),
        Err(e) => log::warn!("cluster: wills of dead node run {run:016x}: {e}"),
    }
    let _ = stream
        .purge()
        .filter(format!("{WILL_PREFIX}{run:016x}.>"))
        .await;
    let _ = stream
        .purge()
        .filter(format!("{CLAIM_PREFIX}{run:016x}"))
        .await;
}

/// Reads run `run`'s wills and hands each to a shard; returns how many.
async fn publish_wills(
    stream: &stream::Stream,
    run: u64,
    delivery: &Delivery,
) -> Result<usize, async_nats::Error> {
    let consumer =
        streams::latest_per_subject(stream, format!("{WILL_PREFIX}{run:016x}.>")).await?;
    let pending = consumer.cached_info().num_pending;
    let mut messages = consumer.messages().await?;
    let deadline = tokio::time::Instant::now() + READ_LIMIT;
    let mut published = 0;
    for _ in 0..pending {
        let Ok(Some(m)) = tokio::time::timeout_at(deadline, messages.next()).await else {
            break;
        };
        let m = m?;
        if m.payload.is_empty() {
            continue;
        }
        match envelope::decode(&m.payload, 0) {
            Some(will) => {
                delivery.will(will).await;
                published += 1;
            }
            None => log::warn!("cluster: malformed will on '{}' dropped", m.subject),
        }
    }
    Ok(published)
}

/// The runs that left wills in the stream (for the start-up sweep).
async fn runs_with_wills(stream: &stream::Stream) -> Result<Vec<u64>, async_nats::Error> {
    let mut subjects = stream.info_with_subjects(format!("{WILL_PREFIX}>")).await?;
    let mut runs = Vec::new();
    while let Some(s) = subjects.next().await {
        let (subject_str, _count) = s?;
        if let Some(run) = will_run(&subject_str) {
            if !runs.contains(&run) {
                runs.push(run);
            }
        }
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_dead_after_the_timeout_without_a_heartbeat() {
        let t0 = Instant::now();
        let mut l = Liveness::new(Duration::from_secs(5));
        l.heard(1, t0);
        l.heard(2, t0);
        l.heard(2, t0 + Duration::from_secs(3));
        assert!(l.take_dead(t0 + Duration::from_secs(4)).is_empty());
        assert_eq!(l.take_dead(t0 + Duration::from_secs(5)), [1]);
        assert!(l.take_dead(t0 + Duration::from_secs(6)).is_empty(), "once");
        assert_eq!(l.take_dead(t0 + Duration::from_secs(8)), [2]);
    }

    #[test]
    fn subjects_name_their_run() {
        let s = will_subject(0xabc, "client/with.dots");
        assert!(s.starts_with("midge.w.0000000000000abc._client"), "{s}");
        assert_eq!(will_run(&s), Some(0xabc));
        assert_eq!(heartbeat_run(&heartbeat_subject(42)), Some(42));
        assert_eq!(heartbeat_run("midge.h.zz"), None);
    }
}
