//! One connection per client id across the cluster: a client that connects to one node is
//! disconnected from any other node where it was still connected, with 0x8E (Session taken
//! over) [MQTT-3.1.4-3], as a second connection on one node does.
//!
//! When a node accepts a CONNECT it publishes the client id on `midge.o.<client id tokens>`
//! (core NATS); every other node hears it (the node's own connection does not echo) and hands
//! it to its shards, and the shard that holds a connected session of that client id closes
//! the connection (and ends the session if it was not to outlive it). The session itself
//! does not move between nodes (sessions are per node for now): a persistent session left
//! on the old node waits there for the client to come back, or for its expiry.
//!
//! A notice that arrives late (the client connected to node A, then quickly to node B, and
//! A's notice reaches B after B accepted the new connection) closes the new connection once;
//! the client's reconnect settles it.

use super::subject;

/// Takeover notices: `midge.o.<client id tokens>`.
pub(super) const PREFIX: &str = "midge.o.";

/// The subject of `client_id`'s notice.
pub(super) fn subject_of(client_id: &str) -> String {
    subject::subject_under(PREFIX, client_id)
}

/// The client id a notice's subject names.
pub(super) fn client_id_of(subject_str: &str) -> Option<String> {
    subject::topic_under(PREFIX, subject_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_id_round_trips_through_its_subject() {
        for id in ["dev-1", "a/b.c", "", "ünï code", "$x"] {
            assert_eq!(client_id_of(&subject_of(id)).as_deref(), Some(id), "{id}");
        }
        assert_eq!(client_id_of("midge.m._x"), None);
    }
}
