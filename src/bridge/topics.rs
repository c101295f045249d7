//! A bridge's topic remapping: `topic PATTERN DIR QOS LOCAL_PREFIX REMOTE_PREFIX` makes
//! `LOCAL_PREFIX + T` here and `REMOTE_PREFIX + T` there the same topic.

use crate::config::BridgeTopic;
use crate::protocol::topic::filter_matches;

/// The bridge's topics, with their filters computed once.
#[derive(Debug)]
pub struct TopicMap {
    entries: Vec<(BridgeTopic, String, String)>,
}

impl TopicMap {
    pub fn new(topics: &[BridgeTopic]) -> TopicMap {
        TopicMap {
            entries: topics
                .iter()
                .map(|t| (t.clone(), t.local_filter(), t.remote_filter()))
                .collect(),
        }
    }

    /// The filters to subscribe to on this broker (out and both), with their QoS.
    pub fn local_filters(&self) -> impl Iterator<Item = (&BridgeTopic, &str)> {
        self.entries
            .iter()
            .filter(|(t, _, _)| t.direction.is_out())
            .map(|(t, local, _)| (t, local.as_str()))
    }

    /// The filters to subscribe to on the remote (in and both).
    pub fn remote_filters(&self) -> impl Iterator<Item = (&BridgeTopic, &str)> {
        self.entries
            .iter()
            .filter(|(t, _, _)| t.direction.is_in())
            .map(|(t, _, remote)| (t, remote.as_str()))
    }

    /// The remote filters of out-only topics (unsubscribed on connect, so that a remote
    /// session kept from an earlier configuration stops sending them).
    pub fn out_only_remote_filters(&self) -> impl Iterator<Item = &str> {
        self.entries
            .iter()
            .filter(|(t, _, _)| !t.direction.is_in())
            .map(|(_, _, remote)| remote.as_str())
    }

    /// The local topic of a message received on `remote` (None: no `in` topic covers it).
    pub fn to_local(&self, remote: &str) -> Option<Remapped> {
        self.entries
            .iter()
            .filter(|(t, _, f)| t.direction.is_in() && filter_matches(f, remote))
            .find_map(|(t, _, _)| remap(remote, &t.remote_prefix, &t.local_prefix))
    }

    /// The remote topic of a message published here on `local` (None: no `out` topic covers it).
    pub fn to_remote(&self, local: &str) -> Option<Remapped> {
        self.entries
            .iter()
            .filter(|(t, f, _)| t.direction.is_out() && filter_matches(f, local))
            .find_map(|(t, _, _)| remap(local, &t.local_prefix, &t.remote_prefix))
    }
}

/// A topic on the other side.
#[derive(Debug, PartialEq, Eq)]
pub enum Remapped {
    /// The same topic (equal prefixes): nothing is allocated per message.
    Same,
    To(String),
}

/// `topic` with `from` replaced by `to` (None when it does not start with `from`, e.g. the
/// parent level `a` that filter `a/#` also matches, or when the result would be empty).
fn remap(topic: &str, from: &str, to: &str) -> Option<Remapped> {
    let rest = topic.strip_prefix(from)?;
    if from == to {
        return Some(Remapped::Same);
    }
    let out = format!("{to}{rest}");
    (!out.is_empty()).then_some(Remapped::To(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Direction;
    use crate::protocol::QoS;

    fn topic(pattern: &str, direction: Direction, local: &str, remote: &str) -> BridgeTopic {
        BridgeTopic {
            pattern: pattern.into(),
            direction,
            qos: QoS::AtLeastOnce,
            local_prefix: local.into(),
            remote_prefix: remote.into(),
        }
    }

    fn to(s: &str) -> Option<Remapped> {
        Some(Remapped::To(s.into()))
    }

    #[test]
    fn prefixes_are_swapped_each_way() {
        let map = TopicMap::new(&[
            topic("sensors/#", Direction::Both, "here/", "there/"),
            topic("cmd/+", Direction::In, "", "r/"),
        ]);
        assert_eq!(map.to_local("there/sensors/t"), to("here/sensors/t"));
        assert_eq!(map.to_remote("here/sensors/t"), to("there/sensors/t"));
        assert_eq!(map.to_local("r/cmd/x"), to("cmd/x"));
        assert_eq!(
            map.to_remote("cmd/x"),
            None,
            "an in-only topic is not sent out"
        );
        assert_eq!(map.to_local("other"), None);
        let same = TopicMap::new(&[topic("#", Direction::Both, "", "")]);
        assert_eq!(same.to_remote("a/b"), Some(Remapped::Same));
    }

    #[test]
    fn an_empty_pattern_maps_one_topic_to_another() {
        let map = TopicMap::new(&[topic("", Direction::Out, "local/t", "remote/t")]);
        assert_eq!(map.to_remote("local/t"), to("remote/t"));
        assert_eq!(map.to_remote("local/t/x"), None);
    }
}
