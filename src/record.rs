//! Records of a client's state that the session keeps and the store persists: where an
//! outgoing QoS 1/2 flow stands ([`OutState`]) and what a subscription asked for
//! ([`Subscription`]).
//!
//! They are plain data with no behaviour of either side, so they live here, below both:
//! `session` writes its changes into the store's batches (session depends on store), and the
//! store encodes and recovers these records without depending on the session state machine
//! (docs/ARCHITECTURE.md §2: dependencies point one way). Named for what it holds, the
//! records both sides agree on.

use crate::protocol::SubOptions;

/// Where an outgoing QoS 1/2 message stands in its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutState {
    /// QoS 1 PUBLISH sent, waiting for PUBACK.
    AwaitPubAck,
    /// QoS 2 PUBLISH sent, waiting for PUBREC.
    AwaitPubRec,
    /// QoS 2 PUBREL sent, waiting for PUBCOMP.
    AwaitPubComp,
}

/// A subscription as the session remembers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    pub options: SubOptions,
    pub identifier: Option<u32>,
}
