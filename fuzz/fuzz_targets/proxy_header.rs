//! PROXY protocol headers (versions 1 and 2): any bytes parse to a header, "incomplete" or
//! an error, never a panic. Byte 0 picks the versions the listener accepts; the rest is what
//! the connection starts with.
//!
//! What the reading layer relies on is checked too: a header is never longer than the bound
//! or the input, the same bytes cut at its end parse to the same header, and every shorter
//! prefix is "incomplete" (a header that arrives in pieces is read as it is whole).
#![no_main]

use libfuzzer_sys::fuzz_target;
use midge::transport::proxy::{parse, Parsed, ProxyProtocol, V1_MAX, V2_MAX_LEN};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let accept = ProxyProtocol {
        v1: pick & 1 != 0 || pick & 2 == 0,
        v2: pick & 2 != 0,
        require_tls: false,
    };
    let Ok(Parsed::Done(header, len)) = parse(bytes, accept) else {
        return;
    };
    assert!(len <= bytes.len() && len <= (16 + V2_MAX_LEN).max(V1_MAX));
    assert!(matches!(header.version, 1 | 2));
    assert_eq!(parse(&bytes[..len], accept), Ok(Parsed::Done(header, len)));
    for cut in 0..len {
        assert_eq!(
            parse(&bytes[..cut], accept),
            Ok(Parsed::Incomplete),
            "cut at {cut}"
        );
    }
});
