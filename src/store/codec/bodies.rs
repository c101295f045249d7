//! The bodies of records: messages, sessions, queued deliveries.

use super::*;

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
