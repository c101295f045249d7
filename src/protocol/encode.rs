//! Encoding packets for a given protocol version.

use bytes::BytesMut;

use super::packet::{Packet, ProtocolVersion};

/// Appends `packet`, encoded for `version`, to `out`; returns the bytes written.
pub fn encode(_packet: &Packet, _version: ProtocolVersion, _out: &mut BytesMut) -> usize {
    0
}

/// The size `packet` takes on the wire for `version` (fixed header included).
pub fn encoded_len(_packet: &Packet, _version: ProtocolVersion) -> usize {
    0
}
