//! MQTT topics and filters as NATS subjects and subject patterns.
//!
//! NATS subjects are dot-separated tokens that may not be empty, may not contain whitespace,
//! and give `*` and `>` a meaning of their own; MQTT topic levels may be empty and may hold
//! any character but NUL (and `+`/`#` in topic names). So every MQTT level becomes one token
//! that starts with `_` (never empty, never a bare wildcard) followed by the level with every
//! byte outside `[A-Za-z0-9_-]` written as `%XX`: an injective, reversible mapping whose
//! tokens hold only characters NATS treats as plain.
//!
//! A filter becomes one or two subject patterns: `+` -> `*`, and `a/#` -> `a.>` plus `a`
//! itself (MQTT's `#` also matches its parent level; NATS's `>` needs at least one token).
//! The patterns are a superset of what the filter matches: `#` and `+/x` also match topics
//! that begin with `$`, which MQTT excludes [MQTT-4.7.2-1]. That is safe because a message
//! that arrives from the cluster is routed through the node's own subscription index, which
//! applies MQTT's rules exactly; the patterns only decide what NATS sends to the node.

/// Every cluster message subject starts with this.
pub const PREFIX: &str = "midge.m.";
/// Every subject of the QoS 1/2 message stream starts with this (see `cluster::messages`).
pub const DURABLE_PREFIX: &str = "midge.p.";
/// Every subject of the retained-message stream starts with this (see `cluster::retained`).
pub const RETAINED_PREFIX: &str = "midge.r.";

/// The subject a message on `topic` is published on.
pub fn topic_subject(topic: &str) -> String {
    subject_under(PREFIX, topic)
}

/// The topic a subject made by [`topic_subject`] carries; `None` for anything else.
pub fn subject_topic(subject: &str) -> Option<String> {
    topic_under(PREFIX, subject)
}

/// `topic` as a subject under `prefix` (one token per level).
pub fn subject_under(prefix: &str, topic: &str) -> String {
    let mut s = String::with_capacity(prefix.len() + topic.len() * 2 + 8);
    s.push_str(prefix);
    for (i, level) in topic.split('/').enumerate() {
        if i > 0 {
            s.push('.');
        }
        push_token(&mut s, level);
    }
    s
}

/// The topic a subject made by [`subject_under`] with `prefix` carries; `None` for anything
/// else.
pub fn topic_under(prefix: &str, subject: &str) -> Option<String> {
    let rest = subject.strip_prefix(prefix)?;
    let mut topic = Vec::with_capacity(rest.len());
    for (i, token) in rest.split('.').enumerate() {
        if i > 0 {
            topic.push(b'/');
        }
        let mut bytes = token.strip_prefix('_')?.bytes();
        while let Some(b) = bytes.next() {
            if b == b'%' {
                let hi = hex_value(bytes.next()?)?;
                let lo = hex_value(bytes.next()?)?;
                topic.push(hi << 4 | lo);
            } else if plain(b) {
                topic.push(b);
            } else {
                return None;
            }
        }
    }
    String::from_utf8(topic).ok()
}

/// The subject patterns that together cover every topic `filter` matches (one, or two for a
/// filter ending in `#`).
pub fn filter_patterns(filter: &str) -> Vec<String> {
    filter_patterns_under(PREFIX, filter)
}

/// [`filter_patterns`] for the subjects under `prefix`.
pub fn filter_patterns_under(prefix: &str, filter: &str) -> Vec<String> {
    let mut base = String::with_capacity(prefix.len() + filter.len() * 2 + 8);
    base.push_str(prefix);
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        let last = i + 1 == levels.len();
        match *level {
            "#" if last => {
                if i == 0 {
                    // `#` alone: every topic (one token at least, as every topic has).
                    base.push('>');
                    return vec![base];
                }
                let parent = base.trim_end_matches('.').to_string();
                base.push('>');
                return vec![parent, base];
            }
            "+" => base.push('*'),
            _ => push_token(&mut base, level),
        }
        if !last {
            base.push('.');
        }
    }
    vec![base]
}

/// Appends `level` as one token.
fn push_token(s: &mut String, level: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    s.push('_');
    for b in level.bytes() {
        if plain(b) {
            s.push(b as char);
        } else {
            s.push('%');
            s.push(HEX[usize::from(b >> 4)] as char);
            s.push(HEX[usize::from(b & 15)] as char);
        }
    }
}

/// Bytes a token carries as they are.
fn plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::topic::filter_matches;

    /// NATS's own matching rule for a subject against a pattern (`*` one token, `>` one or
    /// more trailing tokens), as the server applies it.
    fn nats_matches(pattern: &str, subject: &str) -> bool {
        let mut p = pattern.split('.');
        let mut s = subject.split('.');
        loop {
            match (p.next(), s.next()) {
                (Some(">"), Some(_)) => return true,
                (Some("*"), Some(_)) => {}
                (Some(a), Some(b)) if a == b => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }

    #[test]
    fn topics_round_trip_through_subjects_made_of_plain_tokens() {
        for topic in [
            "a/b",
            "",
            "/",
            "a//b",
            "a.b/c d",
            "*/>",
            "$SYS/broker",
            "séance/🙂",
            "%41",
            "_",
        ] {
            let subject = topic_subject(topic);
            let tokens: Vec<&str> = subject[PREFIX.len()..].split('.').collect();
            assert_eq!(tokens.len(), topic.split('/').count(), "{topic:?}");
            for t in tokens {
                assert!(t.starts_with('_'), "{subject}");
                assert!(t[1..].bytes().all(|b| plain(b) || b == b'%'), "{subject}");
            }
            assert_eq!(subject_topic(&subject).as_deref(), Some(topic), "{subject}");
        }
        assert_eq!(topic_subject("a/b.c"), "midge.m._a._b%2Ec");
        assert_eq!(subject_topic("other.a"), None);
        assert_eq!(subject_topic("midge.m.a"), None, "tokens start with _");
        assert_eq!(subject_topic("midge.m._%4"), None, "truncated escape");
        assert_eq!(subject_topic("midge.m._%FF"), None, "not UTF-8");
    }

    #[test]
    fn filters_become_patterns_with_hash_covering_its_parent() {
        assert_eq!(filter_patterns("a/+/c"), ["midge.m._a.*._c"]);
        assert_eq!(filter_patterns("a/#"), ["midge.m._a", "midge.m._a.>"]);
        assert_eq!(filter_patterns("#"), ["midge.m.>"]);
        assert_eq!(filter_patterns("+"), ["midge.m.*"]);
        assert_eq!(
            filter_patterns("a.b/#"),
            ["midge.m._a%2Eb", "midge.m._a%2Eb.>"]
        );
    }

    /// Every (filter, topic) pair that MQTT matches is matched by one of the filter's patterns
    /// (the patterns never lose a message); the only extra matches are `$` topics under a
    /// leading wildcard, which the receiving node's index drops.
    #[test]
    fn patterns_cover_exactly_what_the_filter_matches_except_dollar_topics() {
        let levels = ["a", "b", "", "$x", "a.b", "*"];
        let mut topics = Vec::new();
        for n in 1..=3 {
            let mut idx = vec![0usize; n];
            loop {
                let t: Vec<&str> = idx.iter().map(|&i| levels[i]).collect();
                topics.push(t.join("/"));
                let mut k = 0;
                while k < n {
                    idx[k] += 1;
                    if idx[k] < levels.len() {
                        break;
                    }
                    idx[k] = 0;
                    k += 1;
                }
                if k == n {
                    break;
                }
            }
        }
        let filters = [
            "#", "+", "a/#", "+/#", "a/+", "+/b", "a/+/#", "/#", "+/+", "a//b", "$x/#", "a.b/+",
            "*/#", "a/b", "+/+/+",
        ];
        for f in filters {
            let patterns = filter_patterns(f);
            for t in &topics {
                let subject = topic_subject(t);
                let nats = patterns.iter().any(|p| nats_matches(p, &subject));
                let mqtt = filter_matches(f, t);
                if mqtt {
                    assert!(
                        nats,
                        "filter {f:?} topic {t:?}: {patterns:?} miss {subject}"
                    );
                } else if nats {
                    assert!(
                        t.starts_with('$') && (f.starts_with('+') || f.starts_with('#')),
                        "filter {f:?} topic {t:?}: {patterns:?} over-match {subject}"
                    );
                }
            }
        }
    }
}
