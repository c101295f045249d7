//! What a client (or an authentication server) sends that the authentication plugins parse:
//! SCRAM's client-first and client-final messages (MQTT 5 AUTH data), an HTTP auth server's
//! response, a JWT in a CONNECT password. Any bytes give an answer or an error, never a panic.
//! Byte 0 picks the parser; the rest is its input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use midge::auth::scram::{decoy_verifier, parse_client_first, Exchange, Mechanism};
use midge::plugin::builtin::http::client::parse_response;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    match pick % 4 {
        0 => {
            let _ = parse_client_first(bytes);
        }
        1 => {
            // A well-formed start, then whatever the client sends as its final message.
            let mechanism = if pick & 4 == 0 {
                Mechanism::Sha256
            } else {
                Mechanism::Sha512
            };
            let first = parse_client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").expect("valid");
            let verifier = decoy_verifier(mechanism, "user", b"fuzz");
            let (exchange, _) = Exchange::start(&first, verifier, "%hvYDpWUa2RaTCAfuxFIlj)hNlF");
            assert!(
                exchange.finish(bytes).is_err(),
                "a made-up proof never verifies"
            );
        }
        2 => {
            if let Ok(Some(response)) = parse_response(bytes, pick & 4 != 0) {
                let _ = response;
            }
        }
        _ => {
            if let Ok(token) = std::str::from_utf8(bytes) {
                let _ = midge::fuzzing::jwt_verify(token);
            }
        }
    }
});
