//! Decoding: a two-phase parse (frame check, then packet parse) over a `BytesMut`.

use bytes::BytesMut;

use super::packet::{Packet, ProtocolVersion};

/// Why a frame could not be decoded. Each maps to the MQTT 5 reason code the broker sends in
/// DISCONNECT (or CONNACK) before closing the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Placeholder until the decoder lands.
    Malformed(&'static str),
}

/// Decodes one packet from the front of `buf`.
pub fn decode(
    _buf: &mut BytesMut,
    _version: Option<ProtocolVersion>,
    _max_packet_size: u32,
) -> Result<Option<Packet>, DecodeError> {
    Err(DecodeError::Malformed("decoder not written yet"))
}
