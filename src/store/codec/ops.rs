//! Operations: the records of a frame, each a tag byte and its fields.

use super::*;

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
