//! The JetStream shapes the cluster's keyed state uses (retained messages, wills): a stream
//! that keeps the last message of each subject, and an ordered consumer that reads the last
//! message of each subject under a filter, then every later change.

use async_nats::jetstream::{consumer, stream};

/// How long a follower waits before trying JetStream again.
const RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs `once` (a follower of a stream) for as long as the gateway runs: again [`RETRY`]
/// after it ends or fails, a failure logged once per outage (`what`: the stream's role).
pub(super) async fn keep_following<F, Fut>(what: &str, mut once: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), async_nats::Error>>,
{
    let mut failing = false;
    loop {
        match once().await {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                log::warn!("cluster: {what} stream unavailable ({e}); retrying");
                failing = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// A stream of `name` over `subjects` that keeps one message per subject, on disk, with
/// `replicas` copies.
pub(super) fn one_per_subject(
    name: &str,
    subjects: Vec<String>,
    replicas: usize,
) -> stream::Config {
    stream::Config {
        name: name.into(),
        subjects,
        max_messages_per_subject: 1,
        num_replicas: replicas,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::Old,
        ..Default::default()
    }
}

/// An ordered consumer of `stream` under `filter`: the last message of each subject first.
pub(super) async fn latest_per_subject(
    stream: &stream::Stream,
    filter: String,
) -> Result<consumer::Consumer<consumer::pull::OrderedConfig>, async_nats::Error> {
    Ok(stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: filter,
            deliver_policy: consumer::DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await?)
}
