//! What a recovered store may bring back under the limits in force now.
//!
//! A store written under looser limits (`max_topic_levels 10000`, or before limits existed)
//! can hold a filter or a retained topic that the broker would refuse from a client today.
//! Loading it would bypass the limit, and before the index walks were loops such a filter
//! aborted the broker at every restart. So recovery drops exactly those items, keeps the
//! rest of each session, and says what it dropped.

use super::Recovered;
use crate::protocol::topic::{validate_topic_filter, validate_topic_name, TopicLimits};

/// Drops from `recovered` the subscriptions and retained messages that `limits` (or the
/// topic rules) refuse; appends one line per dropped item to `recovered.dropped`.
pub fn apply(recovered: &mut Recovered, limits: TopicLimits) {
    let dropped = &mut recovered.dropped;
    recovered.retained.retain(|m| {
        let verdict = validate_topic_name(&m.topic).and_then(|()| limits.check(&m.topic));
        if let Err(e) = verdict {
            dropped.push(format!(
                "dropped the retained message on '{}': {e}",
                shorten(&m.topic)
            ));
        }
        verdict.is_ok()
    });
    for s in &mut recovered.sessions {
        s.session.subscriptions.retain(|(filter, _)| {
            let verdict = validate_topic_filter(filter).and_then(|()| limits.check(filter));
            if let Err(e) = verdict {
                dropped.push(format!(
                    "dropped the subscription of client '{}' to '{}': {e}",
                    s.client_id,
                    shorten(filter)
                ));
            }
            verdict.is_ok()
        });
    }
}

/// The first 64 characters of a topic that may be 64 KiB long, for a log line.
fn shorten(topic: &str) -> String {
    match topic.char_indices().nth(64) {
        Some((i, _)) => format!("{}...", &topic[..i]),
        None => topic.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::message::Message;
    use crate::protocol::QoS;
    use crate::record::Subscription;
    use crate::store::{RecoveredSession, StoredSession};

    #[test]
    fn refused_filters_and_topics_go_the_rest_stays() {
        let deep = vec!["+"; 300].join("/");
        let deep_topic = vec!["a"; 300].join("/");
        let sub = Subscription {
            options: Default::default(),
            identifier: None,
        };
        let msg = |t: &str| {
            Arc::new(Message {
                topic: t.into(),
                payload: bytes::Bytes::from_static(b"x"),
                qos: QoS::AtMostOnce,
                retain: true,
                properties: Default::default(),
                expires_at: None,
                origin: None,
            })
        };
        let mut r = Recovered {
            retained: vec![msg("ok/t"), msg(&deep_topic)],
            sessions: vec![RecoveredSession {
                client_id: "c1".into(),
                session: StoredSession {
                    expiry_interval: u32::MAX,
                    expires_at: None,
                    version: crate::protocol::ProtocolVersion::V311,
                    subscriptions: vec![
                        ("ok/+".into(), sub),
                        (deep.as_str().into(), sub),
                        ("a/#/b".into(), sub),
                    ],
                    pending_will: None,
                },
                queued: Vec::new(),
                incoming_qos2: Vec::new(),
            }],
            dropped: Vec::new(),
        };
        apply(
            &mut r,
            TopicLimits {
                max_levels: 200,
                max_length: 65535,
            },
        );
        let topics: Vec<&str> = r.retained.iter().map(|m| &*m.topic).collect();
        assert_eq!(topics, ["ok/t"]);
        let filters: Vec<&str> = r.sessions[0]
            .session
            .subscriptions
            .iter()
            .map(|(f, _)| &**f)
            .collect();
        assert_eq!(filters, ["ok/+"]);
        assert_eq!(r.dropped.len(), 3, "{:?}", r.dropped);
        assert!(r.dropped[1].contains("client 'c1'") && r.dropped[1].contains("200 levels"));
    }
}
