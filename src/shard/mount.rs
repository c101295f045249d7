//! `mount_point`: a listener whose clients live in a subtree of their own, as mosquitto's.
//!
//! The prefix is put before every topic a client of that listener publishes (wills too) and
//! every filter it subscribes or unsubscribes, so the rest of the broker (the ACL, the index,
//! the retained store, persistence) only ever sees full topics; it is taken off the topic of
//! what the client receives. Its client cannot reach a topic outside its mount point: its
//! topics and filters all start with it, and a delivery outside it (a session subscribed
//! through another listener and resumed through this one) is not made.
//!
//! Where midge differs from mosquitto 2.0, on purpose:
//! - a shared subscription `$share/G/F` becomes `$share/G/` + mount + `F` (mosquitto makes it
//!   `mount$share/G/F`, an ordinary filter, so the group never shares anything);
//! - UNSUBSCRIBE is mounted as SUBSCRIBE is (mosquitto 2.0 does not, so a mounted client
//!   cannot unsubscribe there);
//! - the prefix is taken off what the client receives, as mosquitto does since 2.0.12
//!   (Debian 12's 2.0.11 sends the full topic).
//!
//! Listeners without a mount point pay one test of [`Shard::mounted`] (false when no listener
//! of the configuration has one) on the delivery path, and nothing else.

use super::Shard;
use crate::config::Config;
use crate::protocol::topic::parse_shared;
use crate::protocol::ByteStr;

/// Whether any listener of `config` has a mount point.
pub(crate) fn any(config: &Config) -> bool {
    config.listeners.iter().any(|l| l.mount_point.is_some())
}

/// The mount point of listener `listener` (a connection's `Conn::listener`).
#[inline]
pub(crate) fn of(config: &Config, listener: u8) -> Option<&str> {
    // The configuration refuses mount points past the untracked index (`config::parse`).
    config
        .listeners
        .get(usize::from(listener))?
        .mount_point
        .as_deref()
}

/// The full topic of a client's `topic` (a PUBLISH or a will): the mount point and the topic,
/// as they are (mosquitto: `"%s%s"`).
pub(crate) fn topic(mount: &str, topic: &str) -> ByteStr {
    let mut full = String::with_capacity(mount.len() + topic.len());
    full.push_str(mount);
    full.push_str(topic);
    ByteStr::from(full)
}

/// The full filter of a client's `filter`: a shared subscription's inner filter is mounted
/// inside it (see the module documentation); an invalid shared filter is left as it is, to be
/// refused as such.
pub(crate) fn filter(mount: &str, filter: &str) -> ByteStr {
    match parse_shared(filter) {
        Some(Ok((group, inner))) => ByteStr::from(format!("$share/{group}/{mount}{inner}")),
        Some(Err(_)) => ByteStr::from(filter),
        None => topic(mount, filter),
    }
}

/// The topic a client of mount point `mount` receives for the full `topic`, or `None` when
/// `topic` is outside its mount point (or is the mount point itself: no topic is left).
#[inline]
pub(crate) fn strip<'t>(mount: &str, topic: &'t [u8]) -> Option<&'t [u8]> {
    match topic.strip_prefix(mount.as_bytes()) {
        Some(rest) if !rest.is_empty() => Some(rest),
        _ => None,
    }
}

impl Shard {
    /// The mount point of connection `key`'s listener, if it has one.
    #[inline]
    pub(crate) fn mount_of(&self, key: usize) -> Option<&str> {
        if !self.mounted {
            return None;
        }
        let conn = self.conns.get(key)?;
        of(&self.shared.config, conn.listener)
    }

    /// Whether a delivery of `topic` to a session connected as `conn` would leave the
    /// client's mount point (it is then not made).
    #[inline]
    pub(crate) fn outside_mount(&self, conn: Option<usize>, topic: &str) -> bool {
        if !self.mounted {
            return false;
        }
        match conn.and_then(|key| self.mount_of(key)) {
            Some(mount) => strip(mount, topic.as_bytes()).is_none(),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_filters_are_prefixed_as_they_are() {
        assert_eq!(&*topic("m/", "a/b"), "m/a/b");
        assert_eq!(&*topic("m", "a/b"), "ma/b");
        assert_eq!(&*filter("m/", "a/#"), "m/a/#");
        assert_eq!(&*filter("m/", "#"), "m/#");
        assert_eq!(&*filter("m/", "$SYS/#"), "m/$SYS/#");
    }

    #[test]
    fn a_shared_filter_is_mounted_inside_its_group() {
        assert_eq!(&*filter("m/", "$share/g/a/+"), "$share/g/m/a/+");
        // Invalid: left for the subscribe handler to refuse.
        assert_eq!(&*filter("m/", "$share//a"), "$share//a");
    }

    #[test]
    fn strip_takes_the_prefix_off_or_refuses_a_topic_outside() {
        assert_eq!(strip("m/", b"m/a/b"), Some(&b"a/b"[..]));
        assert_eq!(strip("m/", b"x/a/b"), None);
        assert_eq!(strip("m/", b"m/"), None);
        assert_eq!(strip("m/", b"m"), None);
    }
}
