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

// ---------------------------------------------------------------------------------------------
// Properties: every field, tagged with its MQTT property identifier.

fn put_str_prop(out: &mut Vec<u8>, n: &mut u32, pid: u8, v: &Option<ByteStr>) {
    if let Some(v) = v {
        put_u8(out, pid);
        put_bytes(out, v.as_bytes());
        *n += 1;
    }
}
fn put_bin_prop(out: &mut Vec<u8>, n: &mut u32, pid: u8, v: &Option<Bytes>) {
    if let Some(v) = v {
        put_u8(out, pid);
        put_bytes(out, v);
        *n += 1;
    }
}
fn put_u8_prop(out: &mut Vec<u8>, n: &mut u32, pid: u8, v: Option<u8>) {
    if let Some(v) = v {
        put_u8(out, pid);
        put_u8(out, v);
        *n += 1;
    }
}
fn put_u16_prop(out: &mut Vec<u8>, n: &mut u32, pid: u8, v: Option<u16>) {
    if let Some(v) = v {
        put_u8(out, pid);
        put_u16(out, v);
        *n += 1;
    }
}
fn put_u32_prop(out: &mut Vec<u8>, n: &mut u32, pid: u8, v: Option<u32>) {
    if let Some(v) = v {
        put_u8(out, pid);
        put_u32(out, v);
        *n += 1;
    }
}

/// Encodes `p` as a count and `(id, value)` pairs. Empty properties take 4 bytes.
pub fn put_properties(out: &mut Vec<u8>, p: &Properties) {
    let at = out.len();
    put_u32(out, 0);
    if p.is_empty() {
        return;
    }
    let mut n = 0u32;
    put_u8_prop(
        out,
        &mut n,
        id::PAYLOAD_FORMAT_INDICATOR,
        p.payload_format_indicator,
    );
    put_u32_prop(
        out,
        &mut n,
        id::MESSAGE_EXPIRY_INTERVAL,
        p.message_expiry_interval,
    );
    put_str_prop(out, &mut n, id::CONTENT_TYPE, &p.content_type);
    put_str_prop(out, &mut n, id::RESPONSE_TOPIC, &p.response_topic);
    put_bin_prop(out, &mut n, id::CORRELATION_DATA, &p.correlation_data);
    for &s in &p.subscription_identifiers {
        put_u32_prop(out, &mut n, id::SUBSCRIPTION_IDENTIFIER, Some(s));
    }
    put_u32_prop(
        out,
        &mut n,
        id::SESSION_EXPIRY_INTERVAL,
        p.session_expiry_interval,
    );
    put_str_prop(
        out,
        &mut n,
        id::ASSIGNED_CLIENT_IDENTIFIER,
        &p.assigned_client_identifier,
    );
    put_u16_prop(out, &mut n, id::SERVER_KEEP_ALIVE, p.server_keep_alive);
    put_str_prop(
        out,
        &mut n,
        id::AUTHENTICATION_METHOD,
        &p.authentication_method,
    );
    put_bin_prop(out, &mut n, id::AUTHENTICATION_DATA, &p.authentication_data);
    put_u8_prop(
        out,
        &mut n,
        id::REQUEST_PROBLEM_INFORMATION,
        p.request_problem_information,
    );
    put_u32_prop(out, &mut n, id::WILL_DELAY_INTERVAL, p.will_delay_interval);
    put_u8_prop(
        out,
        &mut n,
        id::REQUEST_RESPONSE_INFORMATION,
        p.request_response_information,
    );
    put_str_prop(
        out,
        &mut n,
        id::RESPONSE_INFORMATION,
        &p.response_information,
    );
    put_str_prop(out, &mut n, id::SERVER_REFERENCE, &p.server_reference);
    put_str_prop(out, &mut n, id::REASON_STRING, &p.reason_string);
    put_u16_prop(out, &mut n, id::RECEIVE_MAXIMUM, p.receive_maximum);
    put_u16_prop(out, &mut n, id::TOPIC_ALIAS_MAXIMUM, p.topic_alias_maximum);
    put_u16_prop(out, &mut n, id::TOPIC_ALIAS, p.topic_alias);
    put_u8_prop(out, &mut n, id::MAXIMUM_QOS, p.maximum_qos);
    put_u8_prop(out, &mut n, id::RETAIN_AVAILABLE, p.retain_available);
    for (k, v) in &p.user_properties {
        put_u8(out, id::USER_PROPERTY);
        put_bytes(out, k.as_bytes());
        put_bytes(out, v.as_bytes());
        n += 1;
    }
    put_u32_prop(out, &mut n, id::MAXIMUM_PACKET_SIZE, p.maximum_packet_size);
    put_u8_prop(
        out,
        &mut n,
        id::WILDCARD_SUBSCRIPTION_AVAILABLE,
        p.wildcard_subscription_available,
    );
    put_u8_prop(
        out,
        &mut n,
        id::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        p.subscription_identifier_available,
    );
    put_u8_prop(
        out,
        &mut n,
        id::SHARED_SUBSCRIPTION_AVAILABLE,
        p.shared_subscription_available,
    );
    out[at..at + 4].copy_from_slice(&n.to_le_bytes());
}

/// Decodes what [`put_properties`] wrote.
pub fn read_properties(r: &mut Reader<'_>) -> Result<Properties> {
    let n = r.u32()?;
    let mut p = Properties::default();
    for _ in 0..n {
        let pid = r.u8()?;
        match pid {
            id::PAYLOAD_FORMAT_INDICATOR => p.payload_format_indicator = Some(r.u8()?),
            id::MESSAGE_EXPIRY_INTERVAL => p.message_expiry_interval = Some(r.u32()?),
            id::CONTENT_TYPE => p.content_type = Some(r.string()?),
            id::RESPONSE_TOPIC => p.response_topic = Some(r.string()?),
            id::CORRELATION_DATA => p.correlation_data = Some(r.bytes()?),
            id::SUBSCRIPTION_IDENTIFIER => p.subscription_identifiers.push(r.u32()?),
            id::SESSION_EXPIRY_INTERVAL => p.session_expiry_interval = Some(r.u32()?),
            id::ASSIGNED_CLIENT_IDENTIFIER => p.assigned_client_identifier = Some(r.string()?),
            id::SERVER_KEEP_ALIVE => p.server_keep_alive = Some(r.u16()?),
            id::AUTHENTICATION_METHOD => p.authentication_method = Some(r.string()?),
            id::AUTHENTICATION_DATA => p.authentication_data = Some(r.bytes()?),
            id::REQUEST_PROBLEM_INFORMATION => p.request_problem_information = Some(r.u8()?),
            id::WILL_DELAY_INTERVAL => p.will_delay_interval = Some(r.u32()?),
            id::REQUEST_RESPONSE_INFORMATION => p.request_response_information = Some(r.u8()?),
            id::RESPONSE_INFORMATION => p.response_information = Some(r.string()?),
            id::SERVER_REFERENCE => p.server_reference = Some(r.string()?),
            id::REASON_STRING => p.reason_string = Some(r.string()?),
            id::RECEIVE_MAXIMUM => p.receive_maximum = Some(r.u16()?),
            id::TOPIC_ALIAS_MAXIMUM => p.topic_alias_maximum = Some(r.u16()?),
            id::TOPIC_ALIAS => p.topic_alias = Some(r.u16()?),
            id::MAXIMUM_QOS => p.maximum_qos = Some(r.u8()?),
            id::RETAIN_AVAILABLE => p.retain_available = Some(r.u8()?),
            id::USER_PROPERTY => {
                let k = r.string()?;
                let v = r.string()?;
                p.user_properties.push((k, v));
            }
            id::MAXIMUM_PACKET_SIZE => p.maximum_packet_size = Some(r.u32()?),
            id::WILDCARD_SUBSCRIPTION_AVAILABLE => {
                p.wildcard_subscription_available = Some(r.u8()?)
            }
            id::SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                p.subscription_identifier_available = Some(r.u8()?)
            }
            id::SHARED_SUBSCRIPTION_AVAILABLE => p.shared_subscription_available = Some(r.u8()?),
            other => return bad(format!("unknown property id {other:#04x}")),
        }
    }
    Ok(p)
}

// ---------------------------------------------------------------------------------------------
// Bodies

/// A message body: topic, payload, QoS, RETAIN, wall-clock expiry, properties.
pub fn put_message(out: &mut Vec<u8>, m: &Message, expires_ms: Option<u64>) {
    put_bytes(out, m.topic.as_bytes());
    put_bytes(out, &m.payload);
    put_u8(out, m.qos as u8);
    put_u8(out, u8::from(m.retain));
    put_opt_u64(out, expires_ms);
    put_properties(out, &m.properties);
}

/// Decodes a message body; returns it with its wall-clock expiry (ms since the epoch).
pub fn read_message(r: &mut Reader<'_>) -> Result<(SharedMessage, Option<u64>)> {
    let topic = r.string()?;
    let payload = r.bytes()?;
    let qos = r.qos()?;
    let retain = r.bool()?;
    let expires_ms = r.opt_u64()?;
    let properties = read_properties(r)?;
    let msg = Message {
        topic,
        payload,
        qos,
        retain,
        properties,
        expires_at: expires_ms.map(|ms| instant_from_wall(from_wall_ms(ms))),
        origin: None,
    };
    Ok((Arc::new(msg), expires_ms))
}

fn version_byte(v: ProtocolVersion) -> u8 {
    v.level()
}

fn read_version(r: &mut Reader<'_>) -> Result<ProtocolVersion> {
    match r.u8()? {
        3 => Ok(ProtocolVersion::V31),
        4 => Ok(ProtocolVersion::V311),
        5 => Ok(ProtocolVersion::V5),
        v => bad(format!("bad protocol level {v}")),
    }
}

fn options_byte(o: &SubOptions) -> u8 {
    let rh = match o.retain_handling {
        RetainHandling::SendAtSubscribe => 0,
        RetainHandling::SendIfNew => 1,
        RetainHandling::DoNotSend => 2,
    };
    (o.qos as u8) | (u8::from(o.no_local) << 2) | (u8::from(o.retain_as_published) << 3) | (rh << 4)
}

fn read_options(b: u8) -> Result<SubOptions> {
    let qos = QoS::from_u8(b & 3).map_or_else(|| bad("bad subscription QoS"), Ok)?;
    let retain_handling = match (b >> 4) & 3 {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendIfNew,
        2 => RetainHandling::DoNotSend,
        _ => return bad("bad retain handling"),
    };
    Ok(SubOptions {
        qos,
        no_local: b & 4 != 0,
        retain_as_published: b & 8 != 0,
        retain_handling,
    })
}

/// A session body.
pub fn put_session(out: &mut Vec<u8>, s: &StoredSession) {
    put_u32(out, s.expiry_interval);
    put_opt_u64(out, s.expires_at.map(wall_ms));
    put_u8(out, version_byte(s.version));
    put_u32(out, s.subscriptions.len() as u32);
    for (filter, sub) in &s.subscriptions {
        put_bytes(out, filter.as_bytes());
        put_u8(out, options_byte(&sub.options));
        match sub.identifier {
            Some(i) => {
                put_u8(out, 1);
                put_u32(out, i);
            }
            None => put_u8(out, 0),
        }
    }
    match &s.pending_will {
        Some((at, will)) => {
            put_u8(out, 1);
            put_u64(out, wall_ms(*at));
            put_bytes(out, will.topic.as_bytes());
            put_bytes(out, &will.payload);
            put_u8(out, will.qos as u8);
            put_u8(out, u8::from(will.retain));
            put_properties(out, &will.properties);
        }
        None => put_u8(out, 0),
    }
}

/// Decodes a session body.
pub fn read_session(r: &mut Reader<'_>) -> Result<StoredSession> {
    let expiry_interval = r.u32()?;
    let expires_at = r.opt_u64()?.map(from_wall_ms);
    let version = read_version(r)?;
    let n = r.u32()? as usize;
    let mut subscriptions = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let filter = r.string()?;
        let options = read_options(r.u8()?)?;
        let identifier = if r.bool()? { Some(r.u32()?) } else { None };
        subscriptions.push((
            filter,
            Subscription {
                options,
                identifier,
            },
        ));
    }
    let pending_will = if r.bool()? {
        let at = from_wall_ms(r.u64()?);
        let topic = r.string()?;
        let payload = r.bytes()?;
        let qos = r.qos()?;
        let retain = r.bool()?;
        let properties = read_properties(r)?;
        Some((
            at,
            Will {
                topic,
                payload,
                qos,
                retain,
                properties,
            },
        ))
    } else {
        None
    };
    Ok(StoredSession {
        expiry_interval,
        expires_at,
        version,
        subscriptions,
        pending_will,
    })
}

/// The delivery part of a queued entry (the message is referenced by id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedBody {
    pub msg_id: u64,
    pub qos: QoS,
    pub retain: bool,
    pub subscription_ids: SubscriptionIds,
    pub shared: Option<ByteStr>,
    pub flow: Option<Flow>,
}

fn state_byte(s: OutState) -> u8 {
    match s {
        OutState::AwaitPubAck => 1,
        OutState::AwaitPubRec => 2,
        OutState::AwaitPubComp => 3,
    }
}

pub fn put_queued_body(out: &mut Vec<u8>, q: &QueuedBody) {
    put_u64(out, q.msg_id);
    put_u8(out, q.qos as u8);
    put_u8(out, u8::from(q.retain));
    put_u32(out, q.subscription_ids.len() as u32);
    for &s in &q.subscription_ids {
        put_u32(out, s);
    }
    match &q.shared {
        Some(s) => {
            put_u8(out, 1);
            put_bytes(out, s.as_bytes());
        }
        None => put_u8(out, 0),
    }
    match q.flow {
        Some(f) => {
            put_u8(out, state_byte(f.state));
            put_u16(out, f.packet_id);
        }
        None => put_u8(out, 0),
    }
}

pub fn read_queued_body(r: &mut Reader<'_>) -> Result<QueuedBody> {
    let msg_id = r.u64()?;
    let qos = r.qos()?;
    let retain = r.bool()?;
    let n = r.u32()? as usize;
    let mut subscription_ids = SubscriptionIds::new();
    for _ in 0..n {
        subscription_ids.push(r.u32()?);
    }
    let shared = if r.bool()? { Some(r.string()?) } else { None };
    let flow = match r.u8()? {
        0 => None,
        s => {
            let state = match s {
                1 => OutState::AwaitPubAck,
                2 => OutState::AwaitPubRec,
                3 => OutState::AwaitPubComp,
                _ => return bad(format!("bad flow state {s}")),
            };
            Some(Flow {
                packet_id: r.u16()?,
                state,
            })
        }
    };
    Ok(QueuedBody {
        msg_id,
        qos,
        retain,
        subscription_ids,
        shared,
        flow,
    })
}

// ---------------------------------------------------------------------------------------------
// Operations

/// One decoded operation.
#[derive(Debug, Clone)]
pub enum Op {
    PutRetained {
        topic: ByteStr,
        msg: SharedMessage,
        expires_ms: Option<u64>,
    },
    DelRetained {
        topic: ByteStr,
    },
    PutSession {
        client: ByteStr,
        session: Box<StoredSession>,
    },
    DelSession {
        client: ByteStr,
    },
    PutMsg {
        id: u64,
        msg: SharedMessage,
        expires_ms: Option<u64>,
    },
    DelMsg {
        id: u64,
    },
    PutQueued {
        client: ByteStr,
        seq: u64,
        body: QueuedBody,
    },
    DelQueued {
        client: ByteStr,
        seq: u64,
    },
    PutQos2 {
        client: ByteStr,
        packet_id: u16,
    },
    DelQos2 {
        client: ByteStr,
        packet_id: u16,
    },
}

/// Encodes one operation.
pub fn put_op(out: &mut Vec<u8>, op: &Op) {
    match op {
        Op::PutRetained {
            topic,
            msg,
            expires_ms,
        } => {
            put_u8(out, tag::PUT_RETAINED);
            put_bytes(out, topic.as_bytes());
            put_message(out, msg, *expires_ms);
        }
        Op::DelRetained { topic } => {
            put_u8(out, tag::DEL_RETAINED);
            put_bytes(out, topic.as_bytes());
        }
        Op::PutSession { client, session } => {
            put_u8(out, tag::PUT_SESSION);
            put_bytes(out, client.as_bytes());
            put_session(out, session);
        }
        Op::DelSession { client } => {
            put_u8(out, tag::DEL_SESSION);
            put_bytes(out, client.as_bytes());
        }
        Op::PutMsg {
            id,
            msg,
            expires_ms,
        } => {
            put_u8(out, tag::PUT_MSG);
            put_u64(out, *id);
            put_message(out, msg, *expires_ms);
        }
        Op::DelMsg { id } => {
            put_u8(out, tag::DEL_MSG);
            put_u64(out, *id);
        }
        Op::PutQueued { client, seq, body } => {
            put_u8(out, tag::PUT_QUEUED);
            put_bytes(out, client.as_bytes());
            put_u64(out, *seq);
            put_queued_body(out, body);
        }
        Op::DelQueued { client, seq } => {
            put_u8(out, tag::DEL_QUEUED);
            put_bytes(out, client.as_bytes());
            put_u64(out, *seq);
        }
        Op::PutQos2 { client, packet_id } => {
            put_u8(out, tag::PUT_QOS2);
            put_bytes(out, client.as_bytes());
            put_u16(out, *packet_id);
        }
        Op::DelQos2 { client, packet_id } => {
            put_u8(out, tag::DEL_QOS2);
            put_bytes(out, client.as_bytes());
            put_u16(out, *packet_id);
        }
    }
}

/// Decodes the next operation.
pub fn read_op(r: &mut Reader<'_>) -> Result<Op> {
    Ok(match r.u8()? {
        tag::PUT_RETAINED => {
            let topic = r.string()?;
            let (msg, expires_ms) = read_message(r)?;
            Op::PutRetained {
                topic,
                msg,
                expires_ms,
            }
        }
        tag::DEL_RETAINED => Op::DelRetained { topic: r.string()? },
        tag::PUT_SESSION => Op::PutSession {
            client: r.string()?,
            session: Box::new(read_session(r)?),
        },
        tag::DEL_SESSION => Op::DelSession {
            client: r.string()?,
        },
        tag::PUT_MSG => {
            let id = r.u64()?;
            // Ids are allocated upward from 1: this one can never have been written, and the
            // replay could not allocate past it.
            if id == u64::MAX {
                return bad(format!("message id {id} is out of range"));
            }
            let (msg, expires_ms) = read_message(r)?;
            Op::PutMsg {
                id,
                msg,
                expires_ms,
            }
        }
        tag::DEL_MSG => Op::DelMsg { id: r.u64()? },
        tag::PUT_QUEUED => Op::PutQueued {
            client: r.string()?,
            seq: r.u64()?,
            body: read_queued_body(r)?,
        },
        tag::DEL_QUEUED => Op::DelQueued {
            client: r.string()?,
            seq: r.u64()?,
        },
        tag::PUT_QOS2 => Op::PutQos2 {
            client: r.string()?,
            packet_id: r.u16()?,
        },
        tag::DEL_QOS2 => Op::DelQos2 {
            client: r.string()?,
            packet_id: r.u16()?,
        },
        t => return bad(format!("unknown operation tag {t}")),
    })
}

/// Decodes every operation of a frame payload, with the encoded length of each. Byte strings
/// are copied out of `payload` (so that a live record does not pin a whole file buffer).
pub fn read_ops(payload: &[u8], mut f: impl FnMut(Op, usize)) -> Result<()> {
    let mut r = Reader::new(payload);
    while !r.is_empty() {
        let at = r.pos;
        let op = read_op(&mut r)?;
        f(op, r.pos - at);
    }
    Ok(())
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
