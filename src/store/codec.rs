//! The on-disk record format of the store, shared by every backend.
//!
//! A store file (the segmented log) is a header followed by frames:
//!
//! ```text
//! header: "MIDGEST\0" | format u32 | generation u64 | crc32(previous 20 bytes) u32   (24 bytes)
//! frame:  len u32 | crc32(len bytes ++ payload) u32 | payload (len bytes)
//! payload: one or more operations, each a tag byte and its fields
//! ```
//!
//! All integers are little-endian; strings and byte strings are a u32 length and the bytes.
//! One frame is one group commit (every batch of every shard that joined it), so a frame is
//! applied whole or not at all: a torn frame (crash mid-write) fails its length or checksum
//! check and is dropped with everything after it.
//!
//! The redb backend stores the same operation bodies as its values, so both backends share
//! one encoding of messages, sessions and deliveries.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::{instant_from_wall, Flow};
use crate::message::{Message, SharedMessage, SubscriptionIds};
use crate::protocol::properties::id;
use crate::protocol::{
    ByteStr, Properties, ProtocolVersion, QoS, RetainHandling, SubOptions, Will,
};
use crate::record::{OutState, Subscription};

use super::StoredSession;

mod bodies;
mod ops;
mod properties;

pub use bodies::*;
pub use ops::*;
pub use properties::*;

/// File magic of a log segment.
pub const MAGIC: &[u8; 8] = b"MIDGEST\0";
/// Version of the record format; bumped on any incompatible change.
pub const FORMAT: u32 = 1;
/// Length of the segment header.
pub const HEADER_LEN: usize = 24;
/// Length of a frame header (length + checksum).
pub const FRAME_HEADER_LEN: usize = 8;
/// Largest frame a reader accepts: a larger length is garbage, not a frame.
pub const MAX_FRAME: usize = 1 << 30;

/// Operation tags.
pub mod tag {
    pub const PUT_RETAINED: u8 = 1;
    pub const DEL_RETAINED: u8 = 2;
    pub const PUT_SESSION: u8 = 3;
    pub const DEL_SESSION: u8 = 4;
    pub const PUT_MSG: u8 = 5;
    pub const DEL_MSG: u8 = 6;
    pub const PUT_QUEUED: u8 = 7;
    pub const DEL_QUEUED: u8 = 8;
    pub const PUT_QOS2: u8 = 9;
    pub const DEL_QOS2: u8 = 10;
}

/// A decoding failure: what was wrong, for the error that names the file and offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

type Result<T> = std::result::Result<T, DecodeError>;

fn bad<T>(what: impl Into<String>) -> Result<T> {
    Err(DecodeError(what.into()))
}

// ---------------------------------------------------------------------------------------------
// Header and frames

/// The 24-byte header of segment `generation`.
pub fn header(generation: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&FORMAT.to_le_bytes());
    h[12..20].copy_from_slice(&generation.to_le_bytes());
    let crc = crc32fast::hash(&h[..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a segment header; returns its generation.
pub fn check_header(h: &[u8]) -> Result<u64> {
    if h.len() < HEADER_LEN {
        return bad(format!(
            "file is {} bytes, shorter than the {HEADER_LEN}-byte store header",
            h.len()
        ));
    }
    if &h[..8] != MAGIC {
        return bad("not a midge store file (bad magic)");
    }
    let crc = u32::from_le_bytes(h[20..24].try_into().unwrap());
    if crc != crc32fast::hash(&h[..20]) {
        return bad("store header checksum mismatch");
    }
    let format = u32::from_le_bytes(h[8..12].try_into().unwrap());
    if format != FORMAT {
        return bad(format!(
            "store format {format} is not supported (this midge reads format {FORMAT})"
        ));
    }
    Ok(u64::from_le_bytes(h[12..20].try_into().unwrap()))
}

/// Appends a frame holding `payload` to `out`.
pub fn put_frame(out: &mut Vec<u8>, payload: &[u8]) {
    let len = (payload.len() as u32).to_le_bytes();
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    h.update(payload);
    out.extend_from_slice(&len);
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(payload);
}

/// What [`next_frame`] found at an offset.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A whole, valid frame and the length it takes (header included).
    Ok(&'a [u8], usize),
    /// Clean end of data.
    End,
    /// Not a valid frame (torn or corrupt): why.
    Bad(String),
}

/// Reads the frame at the start of `buf`.
pub fn next_frame(buf: &[u8]) -> Frame<'_> {
    if buf.is_empty() {
        return Frame::End;
    }
    if buf.len() < FRAME_HEADER_LEN {
        return Frame::Bad(format!(
            "incomplete frame header ({} of {FRAME_HEADER_LEN} bytes)",
            buf.len()
        ));
    }
    let len = u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize;
    if len > MAX_FRAME {
        return Frame::Bad(format!("frame length {len} is not plausible"));
    }
    if buf.len() < FRAME_HEADER_LEN + len {
        return Frame::Bad(format!(
            "incomplete frame ({} of {} bytes)",
            buf.len(),
            FRAME_HEADER_LEN + len
        ));
    }
    let crc = u32::from_le_bytes(buf[4..8].try_into().unwrap());
    let payload = &buf[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len];
    let mut h = crc32fast::Hasher::new();
    h.update(&buf[..4]);
    h.update(payload);
    if h.finalize() != crc {
        return Frame::Bad("frame checksum mismatch".into());
    }
    Frame::Ok(payload, FRAME_HEADER_LEN + len)
}

// ---------------------------------------------------------------------------------------------
// Primitive writer/reader

pub(crate) fn put_u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}
pub(crate) fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len() as u32);
    out.extend_from_slice(b);
}
fn put_opt_u64(out: &mut Vec<u8>, v: Option<u64>) {
    match v {
        Some(v) => {
            put_u8(out, 1);
            put_u64(out, v);
        }
        None => put_u8(out, 0),
    }
}

/// A cursor over a record. Byte strings are sliced out of `buf` without copying when `buf`
/// is a `Bytes`.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// The owning buffer, when there is one (zero-copy payloads).
    owner: Option<&'a Bytes>,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader {
            buf,
            pos: 0,
            owner: None,
        }
    }
    pub fn from_bytes(buf: &'a Bytes) -> Reader<'a> {
        Reader {
            buf,
            pos: 0,
            owner: Some(buf),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() - self.pos < n {
            return bad(format!(
                "record truncated: needs {n} bytes at {}, has {}",
                self.pos,
                self.buf.len() - self.pos
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    pub fn slice(&mut self) -> Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub fn bytes(&mut self) -> Result<Bytes> {
        let start = self.pos + 4;
        let s = self.slice()?;
        Ok(match self.owner {
            Some(b) => b.slice(start..start + s.len()),
            None => Bytes::copy_from_slice(s),
        })
    }
    pub fn string(&mut self) -> Result<ByteStr> {
        let b = self.bytes()?;
        match ByteStr::from_utf8(b) {
            Some(s) => Ok(s),
            None => bad("string is not UTF-8"),
        }
    }
    fn bool(&mut self) -> Result<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => bad(format!("bad boolean {v}")),
        }
    }
    fn opt_u64(&mut self) -> Result<Option<u64>> {
        Ok(if self.bool()? {
            Some(self.u64()?)
        } else {
            None
        })
    }
    fn qos(&mut self) -> Result<QoS> {
        let v = self.u8()?;
        QoS::from_u8(v).map_or_else(|| bad(format!("bad QoS {v}")), Ok)
    }
}

// ---------------------------------------------------------------------------------------------
// Wall-clock deadlines

/// Milliseconds since the Unix epoch (saturating; times before it are 0).
pub fn wall_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis().min(u128::from(u64::MAX)) as u64)
        .unwrap_or(0)
}

/// The inverse of [`wall_ms`].
pub fn from_wall_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_round_trip_every_field() {
        let s = |v: &str| Some(ByteStr::from(v));
        let p = Properties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(77),
            content_type: s("text/plain"),
            response_topic: s("r/t"),
            correlation_data: Some(Bytes::from_static(b"\x00\x01")),
            subscription_identifiers: vec![1, 268_435_455],
            session_expiry_interval: Some(9),
            assigned_client_identifier: s("a"),
            server_keep_alive: Some(5),
            authentication_method: s("m"),
            authentication_data: Some(Bytes::from_static(b"d")),
            request_problem_information: Some(0),
            will_delay_interval: Some(3),
            request_response_information: Some(1),
            response_information: s("ri"),
            server_reference: s("sr"),
            reason_string: s("rs"),
            receive_maximum: Some(10),
            topic_alias_maximum: Some(11),
            topic_alias: Some(12),
            maximum_qos: Some(1),
            retain_available: Some(0),
            user_properties: vec![("k".into(), "v".into()), ("k".into(), "w".into())],
            maximum_packet_size: Some(1000),
            wildcard_subscription_available: Some(1),
            subscription_identifier_available: Some(0),
            shared_subscription_available: Some(1),
        };
        let mut out = Vec::new();
        put_properties(&mut out, &p);
        let b = Bytes::from(out);
        let mut r = Reader::from_bytes(&b);
        assert_eq!(read_properties(&mut r).unwrap(), p);
        assert!(r.is_empty());
        let mut out = Vec::new();
        put_properties(&mut out, &Properties::default());
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn header_round_trip_and_rejects_garbage() {
        assert_eq!(check_header(&header(42)).unwrap(), 42);
        let mut h = header(42);
        h[13] ^= 1;
        assert!(check_header(&h).unwrap_err().0.contains("checksum"));
        assert!(check_header(b"garbage garbage garbage!!")
            .unwrap_err()
            .0
            .contains("magic"));
        assert!(check_header(b"MIDGE").unwrap_err().0.contains("shorter"));
    }

    #[test]
    fn frames_detect_every_truncation_and_flip() {
        let mut out = Vec::new();
        put_frame(&mut out, b"hello world");
        assert_eq!(next_frame(&out), Frame::Ok(&b"hello world"[..], out.len()));
        for cut in 1..out.len() {
            assert!(
                matches!(next_frame(&out[..cut]), Frame::Bad(_)),
                "cut {cut}"
            );
        }
        for i in 0..out.len() {
            let mut o = out.clone();
            o[i] ^= 0x40;
            assert!(matches!(next_frame(&o), Frame::Bad(_)), "flip {i}");
        }
        assert_eq!(next_frame(&[]), Frame::End);
    }
}
