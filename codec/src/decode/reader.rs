//! The cursor the packet parsers read a frame's body with.

use bytes::{Buf, Bytes};

use super::{read_remaining_length, DecodeError, Result};
use crate::packet::ByteStr;

/// A cursor over the body of one frame. Every read checks the length first: running off the
/// end is [`DecodeError::Truncated`], never a panic.
pub(crate) struct Reader {
    pub(crate) buf: Bytes,
}

impl Reader {
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn need(&self, n: usize) -> Result<()> {
        if self.buf.len() < n {
            Err(DecodeError::Truncated)
        } else {
            Ok(())
        }
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        self.need(2)?;
        Ok(self.buf.get_u16())
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }

    /// A non-zero packet identifier [MQTT-2.3.1-1].
    pub(crate) fn packet_id(&mut self) -> Result<u16> {
        match self.u16()? {
            0 => Err(DecodeError::ZeroPacketId),
            id => Ok(id),
        }
    }

    /// A variable byte integer inside the body (property length, subscription identifier).
    pub(crate) fn var_int(&mut self) -> Result<u32> {
        match read_remaining_length(&self.buf)? {
            Some((n, value)) => {
                self.buf.advance(n);
                Ok(value as u32)
            }
            None => Err(DecodeError::Truncated),
        }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<Bytes> {
        self.need(n)?;
        Ok(self.buf.split_to(n))
    }

    /// Binary data: a two-byte length and that many bytes (1.5.6).
    pub(crate) fn binary(&mut self) -> Result<Bytes> {
        let n = self.u16()? as usize;
        self.take(n)
    }

    /// A UTF-8 encoded string (1.5.4): valid UTF-8 [MQTT-1.5.4-1] without U+0000
    /// [MQTT-1.5.4-2] (3.1.1: [MQTT-1.5.3-1], [MQTT-1.5.3-2]).
    pub(crate) fn string(&mut self) -> Result<ByteStr> {
        let bytes = self.binary()?;
        if bytes.contains(&0) {
            return Err(DecodeError::InvalidUtf8);
        }
        ByteStr::from_utf8(bytes).ok_or(DecodeError::InvalidUtf8)
    }

    /// A topic name: a string without `+` or `#` [MQTT-3.3.2-2] (may be empty; the caller
    /// decides whether that is allowed). One pass for NUL and wildcards, one for UTF-8.
    pub(crate) fn topic_name(&mut self) -> Result<ByteStr> {
        let bytes = self.binary()?;
        for &b in bytes.iter() {
            match b {
                0 => return Err(DecodeError::InvalidUtf8),
                b'+' | b'#' => return Err(DecodeError::TopicNameInvalid),
                _ => {}
            }
        }
        ByteStr::from_utf8(bytes).ok_or(DecodeError::InvalidUtf8)
    }

    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// Every byte of the frame must belong to the packet.
    pub(crate) fn finish(&self) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }
}
