//! The MQTT codec: bytes to packets and packets to bytes, for 3.1, 3.1.1 and 5.0.
//!
//! Pure by design (ARCHITECTURE.md §1.4): no I/O, no sessions, no clock. The broker hands it a read
//! buffer and gets whole packets back, or `Ok(None)` when a frame is still incomplete (normal
//! control flow, not an error); it hands it a packet and an output buffer to encode into.
//! Everything here is fuzzed (proptest: arbitrary bytes never panic) and round-trip tested.

mod decode;
mod encode;
pub mod packet;
pub mod properties;
pub mod reason;
pub mod topic;

pub use decode::{
    check_first_packet, connect_level, decode, frame_size, DecodeError, MAX_PACKET_SIZE,
    MAX_REMAINING_LENGTH,
};
pub use encode::{encode, encode_publish, encoded_len, publish_encoded_len, PublishRef};
pub use packet::*;
pub use properties::{Properties, PropertiesPatch};
