//! Incoming QoS 2 messages delivered and not yet released (PUBREL), kept from one
//! connection's session to the next while the server keeps the session: the server resends
//! such a message after a reconnect (DUP, same packet id), and the id held here is what
//! makes that resend an acknowledgement only, not a second delivery [MQTT-4.3.3-2].

use std::collections::HashMap;

/// The unreleased incoming QoS 2 ids of a session, each with whether its PUBREC may go out
/// (with `manual_acks`: once the owner acknowledged the message). Bounded by the session
/// that filled it (its receive maximum; 3.x: the 16-bit id space).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Unreleased(pub(super) HashMap<u16, bool>);

impl Unreleased {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The owner acknowledged this message while no connection was up: the resend on the
    /// next one gets its PUBREC at once. Nothing for an id not held.
    pub fn acknowledge(&mut self, packet_id: u16) {
        if let Some(rec) = self.0.get_mut(&packet_id) {
            *rec = true;
        }
    }
}
