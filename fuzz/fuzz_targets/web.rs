//! What a client sends to a WebSocket or metrics listener. Byte 0 picks what (`pick % 4`: 0 a
//! WebSocket request head, 1 a metrics scrape's request head, 2-3 WebSocket frames, with bits
//! 2-3 the size bound and 4-7 a read size); the rest is the input.
//!
//! - WebSocket head: `parse` gives a request, "incomplete" or a refusal, never a panic; a
//!   request's head is within the input and parses the same cut at its end. A plain `GET` is
//!   answered from an `http_dir` holding pages, next to a secret file and with a link to it:
//!   the answer never carries the secret, whatever the target's dots, slashes and escapes.
//! - Metrics head: a request, "incomplete" or an error status, never a panic; a request is
//!   within the input and the head bound, parses the same cut at its end, and shorter cuts
//!   of it are "incomplete" (what the server relies on when a head arrives in pieces).
//! - Frames: the MQTT stream the decoder leaves is the same whether the bytes arrive at once
//!   or in reads of any size, and so is the refusal; the stream is never longer than the
//!   input, and nothing is accepted past a close frame.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use midge::metrics::http::{self as metrics_http, Parsed, MAX_HEAD};
use midge::transport::ws::frame::{Decoded, Decoder, Violation};
use midge::transport::ws::handshake::{parse, Parse, Request};
use midge::transport::ws::http::answer;

const SECRET: &[u8] = b"SECRET-5f1d0c";

/// `DIR/www/index.html` served; `DIR/secret.txt` and the link `DIR/www/link` to it not.
fn http_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("midge-fuzz-web-{}", std::process::id()));
        let www = root.join("www");
        std::fs::create_dir_all(www.join("sub")).unwrap();
        std::fs::write(www.join("index.html"), b"<p>index</p>").unwrap();
        std::fs::write(www.join("sub/a.js"), b"let a;").unwrap();
        std::fs::write(root.join("secret.txt"), SECRET).unwrap();
        let _ = std::os::unix::fs::symlink(root.join("secret.txt"), www.join("link"));
        www
    })
}

fn ws_head(bytes: &[u8]) {
    let Parse::Done(request, len) = parse(bytes) else {
        return;
    };
    assert!(len <= bytes.len());
    assert_eq!(parse(&bytes[..len]), Parse::Done(request.clone(), len));
    if let Request::Get { target } = request {
        let mut out = Vec::new();
        answer(Some(http_dir()), &target, &mut out);
        assert!(
            !out.windows(SECRET.len()).any(|w| w == SECRET),
            "{target:?} served the file outside http_dir"
        );
    }
}

/// Feeds `bytes` in reads of `step`: the stream, and the refusal if one came. Stops at a close.
fn feed(max: u64, bytes: &[u8], step: usize) -> (Vec<u8>, Option<Violation>, bool) {
    let mut d = Decoder::new(max);
    let mut stream = Vec::new();
    for piece in bytes.chunks(step) {
        let mut buf = piece.to_vec();
        match d.decode(&mut buf) {
            Ok(Decoded { data, close }) => {
                assert!(data <= piece.len());
                stream.extend_from_slice(&buf[..data]);
                if close.is_some() {
                    return (stream, None, true);
                }
            }
            Err(v) => return (stream, Some(v), false),
        }
    }
    (stream, None, false)
}

fn metrics_head(bytes: &[u8]) {
    let Parsed::Request(request) = metrics_http::parse(bytes) else {
        return;
    };
    let len = request.len;
    assert!(len <= bytes.len() && len <= MAX_HEAD);
    assert_eq!(metrics_http::parse(&bytes[..len]), Parsed::Request(request));
    // Up to 32 cuts spread over the head (every one would be quadratic in the head's length).
    for cut in (0..len).step_by(len.div_ceil(32).max(1)) {
        assert_eq!(
            metrics_http::parse(&bytes[..cut]),
            Parsed::Incomplete,
            "cut at {cut}"
        );
    }
}

fn frames(pick: u8, bytes: &[u8]) {
    let max = [16, 125, 1000, 1 << 20][usize::from(pick >> 2 & 3)];
    let step = usize::from(pick >> 4).max(1);
    let (whole, whole_err, whole_closed) = feed(max, bytes, bytes.len().max(1));
    let (split, split_err, split_closed) = feed(max, bytes, step);
    assert!(whole.len() <= bytes.len());
    assert_eq!(
        whole_err, split_err,
        "the refusal depends on read size {step}"
    );
    assert_eq!(whole_closed, split_closed);
    if whole_err.is_none() {
        assert_eq!(whole, split, "the stream depends on read size {step}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    match pick % 4 {
        0 => ws_head(bytes),
        1 => metrics_head(bytes),
        _ => frames(pick, bytes),
    }
});
