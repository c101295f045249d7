//! MQTT 3.1 / 3.1.1 streams: the first byte picks the stream's version (before CONNECT, 3.1,
//! 3.1.1) and the maximum packet size; the rest is what the client sends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use midge_codec::ProtocolVersion;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, stream)) = data.split_first() else {
        return;
    };
    let version = match mode % 3 {
        0 => None,
        1 => Some(ProtocolVersion::V31),
        _ => Some(ProtocolVersion::V311),
    };
    let max = if mode & 0x80 != 0 {
        u32::from(mode & 0x7f) * 4
    } else {
        0
    };
    midge_fuzz::codec_stream(stream, version, max);
});
