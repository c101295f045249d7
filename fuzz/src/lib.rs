//! What the fuzz targets share: the codec stream check, used by `codec_v3` and `codec_v5`.
//!
//! The targets themselves are in `fuzz_targets/`; `examples/seeds.rs` writes their seed
//! corpora with midge's own encoder and store (see README.md here).

use bytes::BytesMut;
use midge_codec::{connect_level, decode, encode, encoded_len, Packet, ProtocolVersion};

/// Most packets decoded from one input: a stream of empty packets (PINGREQ is 2 bytes) must
/// not make one run slow.
const MAX_PACKETS: usize = 4096;

/// Decodes `stream` as a connection would: packet after packet with `version` (None before
/// CONNECT, then the version CONNECT names), until it is incomplete or an error. Each decoded
/// packet must encode to `encoded_len` bytes and decode back to itself.
pub fn codec_stream(stream: &[u8], mut version: Option<ProtocolVersion>, max_packet_size: u32) {
    // What the broker asks of a CONNECT the decoder refused.
    let _ = connect_level(stream);
    let mut buf = BytesMut::from(stream);
    for _ in 0..MAX_PACKETS {
        let packet = match decode(&mut buf, version, max_packet_size) {
            Ok(Some(p)) => p,
            Ok(None) | Err(_) => return,
        };
        round_trip(&packet, version);
        if let (None, Packet::Connect(c)) = (version, &packet) {
            version = Some(c.version);
        }
    }
}

/// encode -> decode must give the packet back, in exactly the bytes `encoded_len` promised.
fn round_trip(packet: &Packet, version: Option<ProtocolVersion>) {
    let rules = match packet {
        Packet::Connect(c) => c.version,
        _ => version.unwrap_or(ProtocolVersion::V311),
    };
    let mut out = BytesMut::new();
    let n = encode(packet, rules, &mut out);
    assert_eq!(n, out.len(), "encode's return value is not what it wrote");
    assert_eq!(
        encoded_len(packet, rules),
        n,
        "encoded_len disagrees with encode"
    );
    if n == 0 {
        // AUTH has no 3.x encoding; the decoder refuses AUTH under 3.x rules anyway.
        return;
    }
    // Every strict prefix of the frame is "incomplete", never an error or another packet: a
    // packet split across reads decodes as if it had come whole.
    for cut in (0..n).filter(|&c| n <= 64 || c < 32 || c >= n - 32) {
        let mut prefix = BytesMut::from(&out[..cut]);
        match decode(&mut prefix, version, 0) {
            Ok(None) => assert_eq!(prefix.len(), cut, "an incomplete decode consumed bytes"),
            other => panic!("{cut} of {n} bytes of {packet:?} decoded as {other:?}"),
        }
    }
    let again = decode(&mut out, version, 0)
        .unwrap_or_else(|e| panic!("re-decoding {packet:?} failed: {e}"));
    assert_eq!(
        again.as_ref(),
        Some(packet),
        "round trip changed the packet"
    );
    assert!(out.is_empty(), "re-decoding left {} bytes", out.len());
}
