//! A message between nodes: the MQTT 5 PUBLISH that carries it, as the codec writes it.
//!
//! No format of our own: the codec already encodes and checks everything a message holds
//! (topic, QoS, RETAIN, every MQTT 5 property, payload), and a node decodes what another
//! sent with the same bounds it applies to clients. The Message Expiry Interval travels as
//! what is left of it, so a message does not live longer for having crossed nodes.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::message::{Delivery, Message, SharedMessage};
use crate::protocol::{self, Packet, ProtocolVersion, QoS};

/// The bytes that carry `msg` to another node.
pub(crate) fn encode(msg: &SharedMessage) -> Bytes {
    let d = Delivery::new(msg.clone(), msg.qos, msg.retain);
    let packet_id = u16::from(msg.qos != QoS::AtMostOnce);
    let r = msg.publish_ref(&d, packet_id, false);
    let mut out = BytesMut::new();
    protocol::encode_publish(&r, ProtocolVersion::V5, &mut out);
    out.freeze()
}

/// The message another node sent; `None` (logged by the caller) for anything that is not
/// exactly one well-formed PUBLISH no larger than `max_packet_size` (0: the protocol maximum).
pub(crate) fn decode(bytes: &[u8], max_packet_size: u32) -> Option<Message> {
    let mut buf = BytesMut::from(bytes);
    match protocol::decode(&mut buf, Some(ProtocolVersion::V5), max_packet_size) {
        Ok(Some(Packet::Publish(p))) if buf.is_empty() => Some(Message::from_publish(p, None)),
        _ => None,
    }
}

/// The bytes a JetStream stream keeps for `msg`: when it expires (Unix milliseconds, 0 for
/// never), then the PUBLISH. A stream entry may be read long after it was written (a node
/// that starts later, a consumer that was down), so the expiry travels as a wall-clock time,
/// not as the interval left when it was sent.
pub(crate) fn encode_timed(msg: &SharedMessage) -> Bytes {
    let publish = encode(msg);
    let expires = msg.expires_at.map_or(0, |at| {
        let left = at.saturating_duration_since(Instant::now());
        // At least 1: 0 means "never".
        unix_millis(SystemTime::now() + left).max(1)
    });
    let mut b = BytesMut::with_capacity(8 + publish.len());
    b.put_u64(expires);
    b.put_slice(&publish);
    b.freeze()
}

/// The message a stream entry on `subject` (under `prefix`) carries, with its remaining
/// lifetime, and whether it has expired (its `expires_at` is then `None`). `None` for
/// anything malformed, oversized, or whose topic is not its subject's.
pub(crate) fn decode_timed(
    prefix: &str,
    subject: &str,
    b: &[u8],
    max_packet_size: u32,
) -> Option<(Message, bool)> {
    if b.len() < 8 {
        return None;
    }
    let mut head = &b[..8];
    let expires = head.get_u64();
    let mut msg = decode(&b[8..], max_packet_size)?;
    if super::subject::topic_under(prefix, subject).as_deref() != Some(&*msg.topic) {
        return None;
    }
    let mut expired = false;
    if expires != 0 {
        let now = unix_millis(SystemTime::now());
        if expires <= now {
            expired = true;
            msg.expires_at = None;
        } else {
            msg.expires_at = Some(Instant::now() + Duration::from_millis(expires - now));
        }
    }
    Some((msg, expired))
}

pub(crate) fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ByteStr, Properties};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    #[test]
    fn a_message_crosses_with_its_qos_retain_properties_and_remaining_expiry() {
        let properties = Properties {
            content_type: Some(ByteStr::from("text/plain")),
            user_properties: vec![(ByteStr::from("k"), ByteStr::from("v"))],
            ..Properties::default()
        };
        let msg = Arc::new(Message {
            topic: ByteStr::from("a/b"),
            payload: Bytes::from_static(b"hello"),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties,
            expires_at: Some(Instant::now() + Duration::from_secs(30)),
            origin: None,
        });
        let got = decode(&encode(&msg), 0).expect("decodes");
        assert_eq!(got.topic, msg.topic);
        assert_eq!(got.payload, msg.payload);
        assert_eq!(got.qos, QoS::ExactlyOnce);
        assert!(got.retain);
        assert_eq!(got.properties.content_type, msg.properties.content_type);
        assert_eq!(
            got.properties.user_properties,
            msg.properties.user_properties
        );
        let left = got.expires_at.unwrap() - Instant::now();
        assert!(
            left <= Duration::from_secs(30) && left > Duration::from_secs(25),
            "{left:?}"
        );
    }

    #[test]
    fn anything_but_one_well_formed_publish_is_refused() {
        let msg = Arc::new(Message {
            topic: ByteStr::from("a"),
            payload: Bytes::from(vec![7u8; 100]),
            ..Message::empty()
        });
        let bytes = encode(&msg);
        assert!(decode(&bytes[..bytes.len() - 1], 0).is_none(), "truncated");
        let mut two = bytes.to_vec();
        two.extend_from_slice(&bytes);
        assert!(decode(&two, 0).is_none(), "two packets");
        assert!(decode(&bytes, 50).is_none(), "over max_packet_size");
        assert!(decode(&[0xC0, 0x00], 0).is_none(), "a PINGREQ");
        assert!(decode(&bytes, 0).is_some());
    }
}
