//! CONNECT (3.1): its length and its bytes.

use bytes::{BufMut, BytesMut};

use super::put_str;
use crate::packet::Connect;
use crate::properties::{properties_block_len, put_properties};

pub(super) fn connect_len(c: &Connect) -> usize {
    let v5 = c.version.is_v5();
    let mut n = 2 + c.version.name().len() + 1 + 1 + 2;
    if v5 {
        n += properties_block_len(&c.properties);
    }
    n += 2 + c.client_id.len();
    if let Some(w) = &c.will {
        if v5 {
            n += properties_block_len(&w.properties);
        }
        n += 2 + w.topic.len() + 2 + w.payload.len();
    }
    if let Some(u) = &c.username {
        n += 2 + u.len();
    }
    if let Some(p) = &c.password {
        n += 2 + p.len();
    }
    n
}

pub(super) fn put_connect(out: &mut BytesMut, c: &Connect) {
    let v5 = c.version.is_v5();
    put_str(out, c.version.name().as_bytes());
    out.put_u8(c.version.level());
    let mut flags = 0u8;
    if c.clean_start {
        flags |= 0x02;
    }
    if let Some(w) = &c.will {
        flags |= 0x04 | (w.qos as u8) << 3;
        if w.retain {
            flags |= 0x20;
        }
    }
    if c.password.is_some() {
        flags |= 0x40;
    }
    if c.username.is_some() {
        flags |= 0x80;
    }
    out.put_u8(flags);
    out.put_u16(c.keep_alive);
    if v5 {
        put_properties(out, &c.properties);
    }
    put_str(out, c.client_id.as_bytes());
    if let Some(w) = &c.will {
        if v5 {
            put_properties(out, &w.properties);
        }
        put_str(out, w.topic.as_bytes());
        put_str(out, &w.payload);
    }
    if let Some(u) = &c.username {
        put_str(out, u.as_bytes());
    }
    if let Some(p) = &c.password {
        put_str(out, p);
    }
}
