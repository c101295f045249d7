//! Decoder unit tests, one file per packet family; the helpers here are shared by all.

use super::*;
use crate::encode::{encode, encoded_len};
use crate::packet::*;
use crate::properties::{id, Properties};
use crate::reason::v5 as rc;
use bytes::Bytes;
use proptest::prelude::*;
use ProtocolVersion::{V31, V311, V5};

const ALL: [Option<ProtocolVersion>; 4] = [None, Some(V31), Some(V311), Some(V5)];

/// Decodes `bytes` as one whole frame; also checks that every shorter prefix is
/// "incomplete" and consumes nothing.
fn ok(bytes: &[u8], version: Option<ProtocolVersion>) -> Packet {
    for n in 0..bytes.len() {
        let mut prefix = BytesMut::from(&bytes[..n]);
        assert_eq!(
            decode(&mut prefix, version, 0),
            Ok(None),
            "prefix {n} of {bytes:02x?}"
        );
        assert_eq!(&prefix[..], &bytes[..n], "prefix {n} was consumed");
    }
    let mut buf = BytesMut::from(bytes);
    buf.extend_from_slice(&[0xC0, 0x00]); // a PINGREQ behind it must stay in the buffer
    let packet = decode(&mut buf, version, 0)
        .expect("decodes")
        .expect("complete");
    assert_eq!(&buf[..], &[0xC0, 0x00], "exactly one frame consumed");
    packet
}

/// Like [`ok`], and the packet encodes back to exactly `bytes` (canonical vectors).
fn canonical(bytes: &[u8], version: Option<ProtocolVersion>) -> Packet {
    let packet = ok(bytes, version);
    let mut out = BytesMut::new();
    let v = match &packet {
        Packet::Connect(c) => c.version,
        _ => version.unwrap_or(V311),
    };
    assert_eq!(encode(&packet, v, &mut out), bytes.len());
    assert_eq!(encoded_len(&packet, v), bytes.len());
    assert_eq!(&out[..], bytes, "re-encoding {packet:?}");
    packet
}

fn err(bytes: &[u8], version: Option<ProtocolVersion>) -> DecodeError {
    let mut buf = BytesMut::from(bytes);
    match decode(&mut buf, version, 0) {
        Err(e) => e,
        other => panic!("expected an error for {bytes:02x?}, got {other:?}"),
    }
}

/// A frame: first byte, minimal remaining length, body.
fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.extend_from_slice(&[first]);
    crate::encode::put_var_int(&mut out, body.len());
    out.extend_from_slice(body);
    out.to_vec()
}

/// A v5 property block: length, then `props`.
fn props(props: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    crate::encode::put_var_int(&mut out, props.len());
    out.extend_from_slice(props);
    out.to_vec()
}

/// A v5 QoS 0 PUBLISH to "a" carrying `p` as properties.
fn v5_publish_with(p: &[u8]) -> Vec<u8> {
    let mut body = vec![0x00, 0x01, b'a'];
    body.extend(props(p));
    body.extend_from_slice(b"x");
    frame(0x30, &body)
}

fn s(v: &str) -> ByteStr {
    ByteStr::from(v)
}

/// CONNECT with protocol name `name`, level, flags, keep alive 0, client id "c", `extra`.
fn connect_with(name: &[u8], level: u8, flags: u8, extra: &[u8]) -> Vec<u8> {
    let mut body = vec![0, name.len() as u8];
    body.extend_from_slice(name);
    body.extend_from_slice(&[level, flags, 0, 0]);
    if level == 5 {
        body.push(0);
    }
    body.extend_from_slice(&[0, 1, b'c']);
    body.extend_from_slice(extra);
    frame(0x10, &body)
}

mod connect;
mod frame;
mod properties;
mod publish;
mod roundtrip;
mod subscribe;
