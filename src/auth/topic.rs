//! Topic-filter relations used by the ACL: "is this topic (or subscription filter) covered by
//! that ACL filter" and "can these two filters match a common topic".
//!
//! Both walk the two strings level by level with `split('/')`: no allocation, so they can run
//! once per PUBLISH. Inputs are assumed valid (the codec validates client topics and filters,
//! and [`valid_filter`] validates ACL filters when the file is loaded).
//!
//! As in MQTT (`[MQTT-4.7.2-1]`) and mosquitto's `topic_matches_sub`, a topic or filter that
//! starts with `$` is only matched by a filter that also starts with `$`: `#` and `+/...` never
//! reach `$SYS`.

/// True if every topic matched by `sub` is also matched by `acl`: `sub` is a topic name or a
/// subscription filter, `acl` an ACL filter. This is mosquitto's `sub_matches_acl` (and, for a
/// topic without wildcards, its `topic_matches_sub`):
/// - `acl` `#` covers the rest of `sub`, wildcards included, and its parent level
///   (`foo` is covered by `foo/#`);
/// - `acl` `+` covers any single level of `sub` except `#`;
/// - a literal level of `acl` covers only the same literal (not `+`).
pub fn covers(acl: &str, sub: &str) -> bool {
    if acl.starts_with('$') != sub.starts_with('$') {
        return false;
    }
    let mut acl_levels = acl.split('/');
    let mut sub_levels = sub.split('/');
    loop {
        match (acl_levels.next(), sub_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(s)) => {
                if s == "#" {
                    return false;
                }
            }
            (Some(a), Some(s)) => {
                if a != s {
                    return false;
                }
            }
            (None, None) => return true,
            // `sub` ended: covered only if what is left of `acl` is exactly `#` (parent match).
            (Some(_), None) => return false,
            (None, Some(_)) => return false,
        }
        // Parent-level rule: `foo` is covered by `foo/#`.
        if sub_levels.clone().next().is_none() {
            let mut rest = acl_levels.clone();
            if rest.next() == Some("#") && rest.next().is_none() {
                return true;
            }
        }
    }
}

/// True if at least one topic name is matched by both filters `a` and `b`.
pub fn overlap(a: &str, b: &str) -> bool {
    if a.starts_with('$') != b.starts_with('$') {
        return false;
    }
    let mut a_levels = a.split('/');
    let mut b_levels = b.split('/');
    loop {
        match (a_levels.next(), b_levels.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (Some(x), Some(y)) => {
                if x != "+" && y != "+" && x != y {
                    return false;
                }
            }
            (None, None) => return true,
            // One ended: the other must go on with exactly `#` (which matches its parent).
            (Some(x), None) => return x == "#" && a_levels.next().is_none(),
            (None, Some(y)) => return y == "#" && b_levels.next().is_none(),
        }
    }
}

/// Checks that `filter` is a valid topic filter (mosquitto's `mosquitto_sub_topic_check`):
/// not empty, at most 65535 bytes, `+` only as a whole level, `#` only as the whole last level.
pub fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.len() > 65535 {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('+') && level != "+" {
            return false;
        }
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_topics_like_topic_matches_sub() {
        // [MQTT-4.7.1-2] multi-level wildcard, [MQTT-4.7.1-3] single-level wildcard.
        assert!(covers("a/b", "a/b"));
        assert!(!covers("a/b", "a/c"));
        assert!(covers("a/#", "a/b/c"));
        assert!(covers("a/#", "a"));
        assert!(covers("#", "a/b"));
        assert!(covers("+/b", "a/b"));
        assert!(covers("+/+", "/b"));
        assert!(!covers("+", "a/b"));
        assert!(covers("a/+/#", "a/b"));
        assert!(covers("a/+/#", "a/b/c/d"));
        assert!(!covers("a/+/c", "a/b"));
        assert!(!covers("a/b/c", "a/b"));
        assert!(!covers("a", "a/b"));
        assert!(covers("a//b", "a//b"));
        assert!(covers("a/+/b", "a//b"));
    }

    #[test]
    fn dollar_topics_need_a_dollar_filter() {
        // [MQTT-4.7.2-1]
        assert!(!covers("#", "$SYS/broker"));
        assert!(!covers("+/broker", "$SYS/broker"));
        assert!(covers("$SYS/#", "$SYS/broker"));
        assert!(!covers("$SYS/#", "SYS/broker"));
        assert!(!overlap("#", "$SYS/#"));
        assert!(overlap("$SYS/+", "$SYS/#"));
    }

    #[test]
    fn covers_filters_like_sub_matches_acl() {
        assert!(covers("a/#", "a/+"));
        assert!(covers("a/#", "a/#"));
        assert!(covers("a/#", "a/b/#"));
        assert!(covers("a/+", "a/+"));
        assert!(!covers("a/+", "a/#"));
        assert!(!covers("a/b", "a/+"));
        assert!(!covers("a/+/c", "a/#"));
        assert!(covers("#", "#"));
        assert!(covers("+/+", "+/b"));
        assert!(!covers("a/b", "#"));
    }

    #[test]
    fn overlap_finds_a_common_topic() {
        assert!(overlap("a/+/c", "a/#"));
        assert!(overlap("a/b", "+/b"));
        assert!(overlap("a/#", "a"));
        assert!(overlap("a", "a/#"));
        assert!(overlap("+/+", "x/y"));
        assert!(!overlap("a/b", "a/c"));
        assert!(!overlap("a/+", "a"));
        assert!(!overlap("a/+/c", "a/b"));
        assert!(!overlap("a/b/c", "a/b"));
        assert!(overlap("#", "anything/at/all"));
    }

    #[test]
    fn filter_validity() {
        for ok in ["a", "a/b", "#", "+", "a/+/b", "a/#", "/", "+/+/#", "a b/c"] {
            assert!(valid_filter(ok), "{ok}");
        }
        for bad in ["", "a+", "a/b+", "#/a", "a/#/b", "a#", "+a/b"] {
            assert!(!valid_filter(bad), "{bad}");
        }
    }
}
