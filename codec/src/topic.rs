//! Topic name and topic filter rules (section 4.7 of the MQTT specifications).
//!
//! Pure functions over `&str`: the decoder uses [`validate_topic_name`]-equivalent checks on
//! PUBLISH, the broker uses [`validate_topic_filter`] and [`parse_shared`] on SUBSCRIBE (an
//! invalid filter is answered per filter in SUBACK, so the decoder does not reject it), and
//! [`filter_matches`] is the reference matcher the topic index is tested against.
//!
//! # The rules, as examples (after mosquitto's `subs.c`)
//!
//! Topic levels are separated by `/`. A topic *name* (what a PUBLISH carries) has no wildcards.
//! A topic *filter* (what a SUBSCRIBE carries) may use:
//!
//! * `#`, the multi-level wildcard: alone in its level and only as the last level
//!   [MQTT-4.7.1-2]. It matches the parent level too, so `sport/#` matches `sport`.
//! * `+`, the single-level wildcard: alone in its level [MQTT-4.7.1-3]; it matches exactly one
//!   level, which may be empty.
//!
//! ```text
//! valid filters            invalid filters
//! #                        sport#        (# not alone in its level)
//! sport/#                  sport/#/ball  (# not last)
//! sport/tennis/#           sport+        (+ not alone in its level)
//! +                        sport/+tennis (+ not alone in its level)
//! +/tennis/#               ""            (empty) [MQTT-4.7.3-1]
//! sport/+/player1
//! /+      (first level empty)
//!
//! filter            topic                 matches?
//! sport/tennis/#    sport/tennis          yes (# includes the parent level)
//! sport/tennis/#    sport/tennis/p1/ra    yes
//! sport/#           sport                 yes
//! sport/+           sport/                yes (+ matches the empty level)
//! sport/+           sport                 no
//! +/+               /finance              yes
//! /+                /finance              yes
//! +                 /finance              no  (two levels)
//! #                 $SYS/broker           no  ($ topics are not matched by a leading
//! +/broker          $SYS/broker           no   wildcard [MQTT-4.7.2-1])
//! $SYS/#            $SYS/broker           yes
//! ```
//!
//! Shared subscriptions (MQTT 5, 4.8.2; accepted from every version as mosquitto does) are
//! `$share/{group}/{filter}`: the group is non-empty and has no `/`, `+` or `#`; the filter is
//! a valid non-empty filter. See [`parse_shared`].

/// Why a topic name or filter is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicError {
    /// Topic names and filters are at least one character long [MQTT-4.7.3-1].
    Empty,
    /// Longer than 65,535 bytes, the largest UTF-8 string MQTT can carry [MQTT-4.7.3-3].
    TooLong,
    /// U+0000 is not allowed in a UTF-8 string [MQTT-1.5.3-2] / [MQTT-4.7.3-2].
    ContainsNul,
    /// A topic name (PUBLISH, Will) contains `+` or `#` [MQTT-3.3.2-2].
    WildcardInTopicName,
    /// `#` is not alone in its level, or not the last level [MQTT-4.7.1-2].
    MultiLevelWildcardMisplaced,
    /// `+` is not alone in its level [MQTT-4.7.1-3].
    SingleLevelWildcardMisplaced,
    /// `$share//filter`: the share name is empty [MQTT-4.8.2-1].
    SharedGroupEmpty,
    /// The share name contains `+` or `#` [MQTT-4.8.2-2].
    SharedGroupWildcard,
    /// `$share/group` with no filter after the group [MQTT-4.8.2-1].
    SharedFilterMissing,
    /// More levels than the broker's `max_topic_levels`.
    TooManyLevels { max: usize },
    /// Longer than the broker's `max_topic_length`.
    LongerThanLimit { max: usize },
}

impl std::fmt::Display for TopicError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TopicError::Empty => "topic is empty",
            TopicError::TooLong => "topic is longer than 65535 bytes",
            TopicError::ContainsNul => "topic contains U+0000",
            TopicError::WildcardInTopicName => "topic name contains a wildcard (+ or #)",
            TopicError::MultiLevelWildcardMisplaced => {
                "'#' must be alone in the last level of a filter"
            }
            TopicError::SingleLevelWildcardMisplaced => "'+' must be alone in its level",
            TopicError::SharedGroupEmpty => "shared subscription has an empty share name",
            TopicError::SharedGroupWildcard => "shared subscription share name contains a wildcard",
            TopicError::SharedFilterMissing => "shared subscription has no topic filter",
            TopicError::TooManyLevels { max } => {
                return write!(f, "topic has more than {max} levels (max_topic_levels)")
            }
            TopicError::LongerThanLimit { max } => {
                return write!(f, "topic is longer than {max} bytes (max_topic_length)")
            }
        })
    }
}

impl std::error::Error for TopicError {}

/// The longest string an MQTT UTF-8 string field can carry.
const MAX_LEN: usize = u16::MAX as usize;

/// The prefix of a shared subscription filter.
pub const SHARED_PREFIX: &str = "$share/";

/// Checks a topic name (PUBLISH, Will topic): non-empty, at most 65,535 bytes, no U+0000, no
/// wildcard.
///
/// ```
/// use midge_codec::topic::{validate_topic_name, TopicError};
/// assert!(validate_topic_name("sport/tennis/player1").is_ok());
/// assert!(validate_topic_name("/").is_ok());
/// assert_eq!(validate_topic_name("sport/+"), Err(TopicError::WildcardInTopicName));
/// assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
/// ```
pub fn validate_topic_name(topic: &str) -> Result<(), TopicError> {
    check_len(topic)?;
    for &b in topic.as_bytes() {
        match b {
            b'+' | b'#' => return Err(TopicError::WildcardInTopicName),
            0 => return Err(TopicError::ContainsNul),
            _ => {}
        }
    }
    Ok(())
}

/// Checks a topic filter (SUBSCRIBE, UNSUBSCRIBE): non-empty, at most 65,535 bytes, no U+0000,
/// `#` alone in the last level, `+` alone in its level. A `$share/...` filter is checked as a
/// plain filter here; use [`parse_shared`] to check its parts.
///
/// ```
/// use midge_codec::topic::{validate_topic_filter, TopicError};
/// assert!(validate_topic_filter("sport/+/player1/#").is_ok());
/// assert_eq!(validate_topic_filter("sport#"), Err(TopicError::MultiLevelWildcardMisplaced));
/// assert_eq!(validate_topic_filter("a/#/b"), Err(TopicError::MultiLevelWildcardMisplaced));
/// assert_eq!(validate_topic_filter("a/b+"), Err(TopicError::SingleLevelWildcardMisplaced));
/// ```
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    check_len(filter)?;
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let bytes = level.as_bytes();
        if bytes.contains(&0) {
            return Err(TopicError::ContainsNul);
        }
        if bytes.contains(&b'#') && (level != "#" || levels.peek().is_some()) {
            return Err(TopicError::MultiLevelWildcardMisplaced);
        }
        if bytes.contains(&b'+') && level != "+" {
            return Err(TopicError::SingleLevelWildcardMisplaced);
        }
    }
    Ok(())
}

fn check_len(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        Err(TopicError::Empty)
    } else if s.len() > MAX_LEN {
        Err(TopicError::TooLong)
    } else {
        Ok(())
    }
}

/// The broker's limits on topic names and filters beyond the protocol's (`max_topic_levels`,
/// `max_topic_length`). Every level of a filter is a node in the subscription index and a
/// step of every walk, so depth is what a client could otherwise use against the broker.
///
/// As mosquitto (`mosquitto_pub_topic_check` / `mosquitto_sub_topic_check`), a PUBLISH, will,
/// SUBSCRIBE or UNSUBSCRIBE beyond them is a malformed packet: the connection is closed.
/// A shared filter counts as a whole, `$share/{group}/` included, as in mosquitto.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicLimits {
    /// Most `/`-separated levels.
    pub max_levels: usize,
    /// Most bytes.
    pub max_length: usize,
}

impl TopicLimits {
    /// Checks a topic name or filter against the limits (only: validity is checked by
    /// [`validate_topic_name`] / [`validate_topic_filter`]). One pass, stopping at the
    /// first level past the limit.
    ///
    /// ```
    /// use midge_codec::topic::{TopicError, TopicLimits};
    /// let limits = TopicLimits { max_levels: 3, max_length: 10 };
    /// assert!(limits.check("a/b/c").is_ok());
    /// assert_eq!(limits.check("a/b/c/d"), Err(TopicError::TooManyLevels { max: 3 }));
    /// assert_eq!(limits.check("abcdefghijk"), Err(TopicError::LongerThanLimit { max: 10 }));
    /// ```
    pub fn check(&self, topic: &str) -> Result<(), TopicError> {
        if topic.len() > self.max_length {
            return Err(TopicError::LongerThanLimit {
                max: self.max_length,
            });
        }
        // Levels are separators + 1; counting stops as soon as the limit is passed.
        let separators = topic.bytes().filter(|&b| b == b'/');
        if separators.take(self.max_levels).count() >= self.max_levels {
            return Err(TopicError::TooManyLevels {
                max: self.max_levels,
            });
        }
        Ok(())
    }
}

/// The reference matcher: does the (valid) `filter` match the (valid) topic name `topic`?
///
/// `#` matches any number of levels including the parent (`sport/#` matches `sport`), `+`
/// matches one level (possibly empty), and a topic starting with `$` is not matched by a filter
/// whose first level is a wildcard [MQTT-4.7.2-1]. Shared filters must be stripped of their
/// `$share/{group}/` first ([`parse_shared`]).
///
/// ```
/// use midge_codec::topic::filter_matches;
/// assert!(filter_matches("sport/#", "sport"));
/// assert!(filter_matches("+/+", "/finance"));
/// assert!(!filter_matches("#", "$SYS/uptime"));
/// ```
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            // `#` is the last level of a valid filter: it matches what is left, even nothing
            // (the parent level).
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) => {
                if fl != tl {
                    return false;
                }
            }
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Splits a shared subscription filter `$share/{group}/{filter}` into `(group, filter)`.
///
/// Returns `None` when `filter` is not a shared filter (does not start with `$share/`),
/// `Some(Err(..))` when it is one but the group is empty or has a wildcard, or the filter is
/// missing or invalid.
///
/// ```
/// use midge_codec::topic::{parse_shared, TopicError};
/// assert_eq!(parse_shared("$share/g1/sport/#"), Some(Ok(("g1", "sport/#"))));
/// assert_eq!(parse_shared("sport/#"), None);
/// assert_eq!(parse_shared("$share//a"), Some(Err(TopicError::SharedGroupEmpty)));
/// assert_eq!(parse_shared("$share/g1"), Some(Err(TopicError::SharedFilterMissing)));
/// ```
pub fn parse_shared(filter: &str) -> Option<Result<(&str, &str), TopicError>> {
    let rest = filter.strip_prefix(SHARED_PREFIX)?;
    Some(split_shared(rest))
}

fn split_shared(rest: &str) -> Result<(&str, &str), TopicError> {
    let Some((group, filter)) = rest.split_once('/') else {
        return Err(if rest.is_empty() {
            TopicError::SharedGroupEmpty
        } else {
            TopicError::SharedFilterMissing
        });
    };
    if group.is_empty() {
        return Err(TopicError::SharedGroupEmpty);
    }
    if group.contains(['+', '#']) {
        return Err(TopicError::SharedGroupWildcard);
    }
    if filter.is_empty() {
        return Err(TopicError::SharedFilterMissing);
    }
    validate_topic_filter(filter)?;
    Ok((group, filter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_name_rejects_wildcards_mqtt_3_3_2_2() {
        for bad in ["+", "#", "a/+", "a/#", "a+b", "sport/tennis#"] {
            assert_eq!(
                validate_topic_name(bad),
                Err(TopicError::WildcardInTopicName),
                "{bad}"
            );
        }
        for good in ["a", "/", "//", "a/b/c", "$SYS/broker", " ", "ü/€"] {
            assert_eq!(validate_topic_name(good), Ok(()), "{good}");
        }
    }

    #[test]
    fn topic_name_and_filter_length_mqtt_4_7_3_1_and_4_7_3_3() {
        assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
        assert_eq!(validate_topic_filter(""), Err(TopicError::Empty));
        let max = "a".repeat(65535);
        assert_eq!(validate_topic_name(&max), Ok(()));
        assert_eq!(validate_topic_filter(&max), Ok(()));
        let long = "a".repeat(65536);
        assert_eq!(validate_topic_name(&long), Err(TopicError::TooLong));
        assert_eq!(validate_topic_filter(&long), Err(TopicError::TooLong));
    }

    #[test]
    fn nul_is_rejected_mqtt_1_5_3_2() {
        assert_eq!(validate_topic_name("a\0b"), Err(TopicError::ContainsNul));
        assert_eq!(validate_topic_filter("a/\0"), Err(TopicError::ContainsNul));
    }

    #[test]
    fn filter_wildcard_placement_mqtt_4_7_1_2_and_4_7_1_3() {
        for good in [
            "#",
            "+",
            "sport/#",
            "sport/tennis/#",
            "+/tennis/#",
            "sport/+/player1",
            "/+",
            "+/+",
            "/",
            "$SYS/#",
            "+/#",
        ] {
            assert_eq!(validate_topic_filter(good), Ok(()), "{good}");
        }
        for bad in ["sport#", "sport/#/ball", "#/", "##", "a/#b", "a/b#"] {
            assert_eq!(
                validate_topic_filter(bad),
                Err(TopicError::MultiLevelWildcardMisplaced),
                "{bad}"
            );
        }
        for bad in ["sport+", "sport/+tennis", "++", "+a/b", "a/b+"] {
            assert_eq!(
                validate_topic_filter(bad),
                Err(TopicError::SingleLevelWildcardMisplaced),
                "{bad}"
            );
        }
    }

    #[test]
    fn matcher_follows_the_spec_examples_mqtt_4_7_1() {
        let cases = [
            ("sport/tennis/player1/#", "sport/tennis/player1", true),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/ranking",
                true,
            ),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/score/wimbledon",
                true,
            ),
            ("sport/#", "sport", true),
            ("#", "sport", true),
            ("#", "/", true),
            ("sport/tennis/+", "sport/tennis/player1", true),
            ("sport/tennis/+", "sport/tennis/player1/ranking", false),
            ("sport/+", "sport", false),
            ("sport/+", "sport/", true),
            ("+/+", "/finance", true),
            ("/+", "/finance", true),
            ("+", "/finance", false),
            ("+", "finance", true),
            ("a/b", "a/b", true),
            ("a/b", "a/b/c", false),
            ("a/b/c", "a/b", false),
            ("a/b", "a/c", false),
            ("sport/tennis/#", "sport", false),
            ("+/#", "a", true),
            ("+/#", "a/b/c", true),
        ];
        for (filter, topic, expected) in cases {
            assert_eq!(
                filter_matches(filter, topic),
                expected,
                "{filter} vs {topic}"
            );
        }
    }

    #[test]
    fn dollar_topics_not_matched_by_leading_wildcard_mqtt_4_7_2_1() {
        assert!(!filter_matches("#", "$SYS/broker/uptime"));
        assert!(!filter_matches("+/broker/uptime", "$SYS/broker/uptime"));
        assert!(!filter_matches("+/#", "$SYS"));
        assert!(filter_matches("$SYS/#", "$SYS/broker/uptime"));
        assert!(filter_matches("$SYS/+/uptime", "$SYS/broker/uptime"));
        // Only the first character matters: `$` later in a topic is an ordinary character.
        assert!(filter_matches("#", "a/$b"));
    }

    #[test]
    fn shared_filters_mqtt_4_8_2() {
        assert_eq!(parse_shared("$share/g/a/b"), Some(Ok(("g", "a/b"))));
        assert_eq!(parse_shared("$share/g/#"), Some(Ok(("g", "#"))));
        assert_eq!(parse_shared("$share/g//"), Some(Ok(("g", "/"))));
        assert_eq!(parse_shared("a/b"), None);
        assert_eq!(parse_shared("$share"), None);
        assert_eq!(parse_shared("$shared/g/a"), None);
        assert_eq!(
            parse_shared("$share/"),
            Some(Err(TopicError::SharedGroupEmpty))
        );
        assert_eq!(
            parse_shared("$share//a"),
            Some(Err(TopicError::SharedGroupEmpty))
        );
        assert_eq!(
            parse_shared("$share/g"),
            Some(Err(TopicError::SharedFilterMissing))
        );
        assert_eq!(
            parse_shared("$share/g/"),
            Some(Err(TopicError::SharedFilterMissing))
        );
        assert_eq!(
            parse_shared("$share/g+/a"),
            Some(Err(TopicError::SharedGroupWildcard))
        );
        assert_eq!(
            parse_shared("$share/#/a"),
            Some(Err(TopicError::SharedGroupWildcard))
        );
        assert_eq!(
            parse_shared("$share/g/a#"),
            Some(Err(TopicError::MultiLevelWildcardMisplaced))
        );
    }

    #[test]
    fn limits_count_levels_and_bytes() {
        let limits = TopicLimits {
            max_levels: 200,
            max_length: 65535,
        };
        let at = vec!["+"; 200].join("/");
        let over = vec!["+"; 201].join("/");
        assert_eq!(limits.check(&at), Ok(()));
        assert_eq!(
            limits.check(&over),
            Err(TopicError::TooManyLevels { max: 200 })
        );
        assert_eq!(limits.check("a"), Ok(()));
        assert_eq!(limits.check(&"/".repeat(199)), Ok(()), "200 empty levels");
        assert!(limits.check(&"/".repeat(200)).is_err());
        let one = TopicLimits {
            max_levels: 1,
            max_length: 3,
        };
        assert_eq!(one.check("abc"), Ok(()));
        assert!(one.check("a/b").is_err());
        assert_eq!(
            one.check("abcd"),
            Err(TopicError::LongerThanLimit { max: 3 })
        );
    }
}
