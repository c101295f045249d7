//! WebSocket frames (RFC 6455 §5) as a server reading MQTT sees them.
//!
//! [`Decoder`] turns the bytes a client sends into the MQTT byte stream *in place*: frame
//! headers are dropped, payloads unmasked and moved to the front of the same buffer (the
//! shard's pooled read buffer), so no byte is copied twice and nothing is allocated per frame.
//! Frame boundaries mean nothing to MQTT [MQTT-6.0.0-2]: a packet split over frames, several
//! packets in one frame and a 1-byte frame all come out as the same stream. A header split
//! over two reads is kept in a 14-byte array; a control frame's payload (at most 125 bytes)
//! in another.
//!
//! Everything the client controls is checked before it is used: a length announcing more
//! than the bound (or 2^63 bytes and up) is refused from the header alone, before any byte
//! of payload is awaited, let alone allocated for.

/// Continuation of a fragmented message.
pub const OP_CONTINUATION: u8 = 0x0;
/// A text frame: not MQTT [MQTT-6.0.0-1].
pub const OP_TEXT: u8 = 0x1;
/// A binary frame: the only data frame MQTT uses.
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Close status: normal closure.
pub const CLOSE_NORMAL: u16 = 1000;
/// Close status: the peer broke the protocol.
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// Close status: a kind of data we do not take (text frames).
pub const CLOSE_UNSUPPORTED: u16 = 1003;
/// Close status: a frame or message larger than we take.
pub const CLOSE_TOO_BIG: u16 = 1009;

/// Longest control frame payload (RFC 6455 §5.5).
pub const MAX_CONTROL: usize = 125;

/// Why the client's frames are refused: the close status to send and a reason for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation {
    pub code: u16,
    pub reason: &'static str,
}

fn violation(code: u16, reason: &'static str) -> Violation {
    Violation { code, reason }
}

/// What one [`Decoder::decode`] found besides data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decoded {
    /// Bytes of MQTT stream now at the front of the buffer.
    pub data: usize,
    /// The client sent a close frame: its status (`None`: it gave none). Bytes after it are
    /// ignored.
    pub close: Option<Option<u16>>,
}

/// Incoming frame state of one connection.
#[derive(Debug)]
pub struct Decoder {
    /// Largest frame payload, and largest sum of a fragmented message's payloads.
    max: u64,
    /// Reading a frame header (else a payload).
    in_header: bool,
    head: [u8; 14],
    head_len: usize,
    /// The current frame's opcode and FIN bit.
    op: u8,
    fin: bool,
    /// Payload bytes of the current frame still to come.
    left: u64,
    mask: [u8; 4],
    /// Position in the mask of the next payload byte.
    mask_at: usize,
    /// A fragmented binary message is open (its continuation frames are data).
    in_message: bool,
    /// Payload bytes of the open message so far.
    message: u64,
    control: [u8; MAX_CONTROL],
    control_len: usize,
    /// The payload of the last ping not answered yet.
    ping: Option<([u8; MAX_CONTROL], usize)>,
}

impl Decoder {
    /// A decoder that refuses frames (and fragmented messages) over `max` payload bytes.
    pub fn new(max: u64) -> Decoder {
        Decoder {
            max,
            in_header: true,
            head: [0; 14],
            head_len: 0,
            op: 0,
            fin: false,
            left: 0,
            mask: [0; 4],
            mask_at: 0,
            in_message: false,
            message: 0,
            control: [0; MAX_CONTROL],
            control_len: 0,
            ping: None,
        }
    }

    /// The payload of a ping that wants a pong (the most recent one: RFC 6455 §5.5.3 lets
    /// a pong answer only the last of several pings).
    pub fn take_ping(&mut self) -> Option<([u8; MAX_CONTROL], usize)> {
        self.ping.take()
    }

    /// Decodes the raw bytes in `buf` and leaves the MQTT bytes they carry at its front.
    pub fn decode(&mut self, buf: &mut [u8]) -> Result<Decoded, Violation> {
        let mut read = 0;
        let mut out = Decoded::default();
        while read < buf.len() {
            if self.in_header {
                read += self.take_header(&buf[read..])?;
                if self.in_header {
                    break; // the rest of the header is in the next read
                }
                if self.left > 0 {
                    continue;
                }
            } else {
                let take = (buf.len() - read).min(usize::try_from(self.left).unwrap_or(usize::MAX));
                if self.is_data() {
                    buf.copy_within(read..read + take, out.data);
                    unmask(&mut buf[out.data..out.data + take], self.mask, self.mask_at);
                    out.data += take;
                } else {
                    let dst = &mut self.control[self.control_len..self.control_len + take];
                    dst.copy_from_slice(&buf[read..read + take]);
                    unmask(dst, self.mask, self.mask_at);
                    self.control_len += take;
                }
                self.mask_at = (self.mask_at + take) & 3;
                self.left -= take as u64;
                read += take;
                if self.left > 0 {
                    break;
                }
            }
            // The frame is complete.
            self.in_header = true;
            self.head_len = 0;
            if let Some(close) = self.end_frame()? {
                out.close = Some(close);
                break;
            }
        }
        Ok(out)
    }

    fn is_data(&self) -> bool {
        self.op == OP_BINARY || self.op == OP_CONTINUATION
    }

    /// Takes header bytes from `bytes`; returns how many. Leaves `in_header` false once the
    /// header is complete and checked.
    fn take_header(&mut self, bytes: &[u8]) -> Result<usize, Violation> {
        let mut used = 0;
        loop {
            let need = header_len(&self.head[..self.head_len]);
            if self.head_len >= need {
                break;
            }
            let Some(&b) = bytes.get(used) else {
                return Ok(used);
            };
            self.head[self.head_len] = b;
            self.head_len += 1;
            used += 1;
            if self.head_len == 2 {
                // The first two bytes say everything that can be refused early.
                self.check_start()?;
            }
        }
        let h = &self.head[..self.head_len];
        let (len, at) = match h[1] & 0x7f {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
            127 => {
                let len = u64::from_be_bytes(h[2..10].try_into().expect("8 bytes"));
                if len >> 63 != 0 {
                    return Err(violation(
                        CLOSE_PROTOCOL_ERROR,
                        "frame length has its top bit set",
                    ));
                }
                (len, 10)
            }
            n => (u64::from(n), 2),
        };
        self.mask.copy_from_slice(&h[at..at + 4]);
        self.mask_at = 0;
        if len > self.max {
            return Err(violation(
                CLOSE_TOO_BIG,
                "frame larger than max_packet_size",
            ));
        }
        if self.is_data() {
            self.message += len;
            if self.message > self.max {
                return Err(violation(
                    CLOSE_TOO_BIG,
                    "message larger than max_packet_size",
                ));
            }
        } else {
            self.control_len = 0;
        }
        self.left = len;
        self.in_header = false;
        Ok(used)
    }

    /// Checks the first two header bytes (opcode, flags, mask bit, control length).
    fn check_start(&mut self) -> Result<(), Violation> {
        let (b0, b1) = (self.head[0], self.head[1]);
        if b0 & 0x70 != 0 {
            return Err(violation(
                CLOSE_PROTOCOL_ERROR,
                "reserved bits set (no extension was agreed)",
            ));
        }
        if b1 & 0x80 == 0 {
            return Err(violation(CLOSE_PROTOCOL_ERROR, "client frame not masked"));
        }
        self.fin = b0 & 0x80 != 0;
        self.op = b0 & 0x0f;
        match self.op {
            OP_TEXT => Err(violation(
                CLOSE_UNSUPPORTED,
                "text frame (MQTT takes binary frames only)",
            )),
            OP_BINARY if self.in_message => Err(violation(
                CLOSE_PROTOCOL_ERROR,
                "new message before the last one ended",
            )),
            OP_BINARY => {
                self.message = 0;
                Ok(())
            }
            OP_CONTINUATION if !self.in_message => Err(violation(
                CLOSE_PROTOCOL_ERROR,
                "continuation frame without a message",
            )),
            OP_CONTINUATION => Ok(()),
            OP_CLOSE | OP_PING | OP_PONG => {
                if !self.fin {
                    return Err(violation(CLOSE_PROTOCOL_ERROR, "fragmented control frame"));
                }
                if usize::from(b1 & 0x7f) > MAX_CONTROL {
                    return Err(violation(
                        CLOSE_PROTOCOL_ERROR,
                        "control frame over 125 bytes",
                    ));
                }
                Ok(())
            }
            _ => Err(violation(CLOSE_PROTOCOL_ERROR, "unknown opcode")),
        }
    }

    /// A frame ended: data frames open or close the message; control frames act. Returns
    /// the close status when it was a close frame.
    fn end_frame(&mut self) -> Result<Option<Option<u16>>, Violation> {
        match self.op {
            OP_BINARY | OP_CONTINUATION => {
                self.in_message = !self.fin;
                Ok(None)
            }
            OP_PING => {
                self.ping = Some((self.control, self.control_len));
                Ok(None)
            }
            OP_CLOSE => match self.control_len {
                0 => Ok(Some(None)),
                1 => Err(violation(
                    CLOSE_PROTOCOL_ERROR,
                    "close frame with a 1-byte payload",
                )),
                _ => {
                    let code = u16::from_be_bytes([self.control[0], self.control[1]]);
                    if !valid_close_code(code) {
                        return Err(violation(CLOSE_PROTOCOL_ERROR, "invalid close status"));
                    }
                    Ok(Some(Some(code)))
                }
            },
            _ => Ok(None), // pong: nothing to do
        }
    }
}

/// The header length the bytes so far announce (2 until the second byte is known).
fn header_len(head: &[u8]) -> usize {
    match head.get(1).map(|b| b & 0x7f) {
        None => 2 + 4,
        Some(126) => 4 + 4,
        Some(127) => 10 + 4,
        Some(_) => 2 + 4,
    }
}

/// Close statuses a peer may send (RFC 6455 §7.4).
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

/// XORs `data` with `mask`, starting at position `at` of the mask; eight bytes at a time.
pub fn unmask(data: &mut [u8], mask: [u8; 4], at: usize) {
    let mut rotated = [0u8; 8];
    for (i, b) in rotated.iter_mut().enumerate() {
        *b = mask[(at + i) & 3];
    }
    let word = u64::from_ne_bytes(rotated);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let v = u64::from_ne_bytes(chunk.try_into().expect("8 bytes")) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= rotated[i];
    }
}

/// Writes an unmasked (server) frame header for `len` payload bytes into `out`; returns its
/// length.
pub fn header(op: u8, len: usize, out: &mut [u8; 10]) -> usize {
    out[0] = 0x80 | op;
    if len < 126 {
        out[1] = len as u8;
        2
    } else if let Ok(len) = u16::try_from(len) {
        out[1] = 126;
        out[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// Appends a whole control frame (server side, unmasked) to `out`.
pub fn control(op: u8, payload: &[u8], out: &mut Vec<u8>) {
    let payload = &payload[..payload.len().min(MAX_CONTROL)];
    let mut head = [0u8; 10];
    let n = header(op, payload.len(), &mut head);
    out.extend_from_slice(&head[..n]);
    out.extend_from_slice(payload);
}

/// Appends a close frame with `code` to `out`.
pub fn close(code: u16, out: &mut Vec<u8>) {
    control(OP_CLOSE, &code.to_be_bytes(), out);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked with a fixed mask.
    fn frame(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut f = vec![(u8::from(fin) << 7) | op];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    /// Feeds `bytes` in pieces of `step` and returns the stream and the last result.
    fn feed(d: &mut Decoder, bytes: &[u8], step: usize) -> (Vec<u8>, Result<Decoded, Violation>) {
        let mut stream = Vec::new();
        let mut last = Ok(Decoded::default());
        for piece in bytes.chunks(step) {
            let mut buf = piece.to_vec();
            last = d.decode(&mut buf);
            match last {
                Ok(r) => stream.extend_from_slice(&buf[..r.data]),
                Err(_) => break,
            }
        }
        (stream, last)
    }

    #[test]
    fn stream_is_independent_of_frame_and_read_boundaries() {
        let payload: Vec<u8> = (0..70_000u32).map(|i| (i * 7) as u8).collect();
        let mut bytes = frame(true, OP_BINARY, &payload[..1]);
        bytes.extend(frame(false, OP_BINARY, &payload[1..300]));
        bytes.extend(frame(true, OP_PING, b"hi"));
        bytes.extend(frame(false, OP_CONTINUATION, &payload[300..20_000]));
        bytes.extend(frame(true, OP_CONTINUATION, &payload[20_000..]));
        for step in [1, 2, 3, 7, 13, 100, 4096, bytes.len()] {
            let mut d = Decoder::new(1 << 20);
            let (stream, last) = feed(&mut d, &bytes, step);
            assert!(last.is_ok(), "step {step}: {last:?}");
            assert_eq!(stream, payload, "step {step}");
            let (ping, len) = d.take_ping().expect("ping seen");
            assert_eq!(&ping[..len], b"hi");
        }
    }

    #[test]
    fn refusals_carry_the_right_close_status() {
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (frame(true, OP_TEXT, b"x"), CLOSE_UNSUPPORTED),
            (vec![0x82, 0x01, b'x'], CLOSE_PROTOCOL_ERROR), // unmasked
            (frame(true, OP_CONTINUATION, b"x"), CLOSE_PROTOCOL_ERROR),
            (frame(false, OP_PING, b"x"), CLOSE_PROTOCOL_ERROR),
            (frame(true, 0x3, b"x"), CLOSE_PROTOCOL_ERROR),
            (frame(true, OP_BINARY | 0x40, b"x"), CLOSE_PROTOCOL_ERROR),
            (frame(true, OP_BINARY, &[0; 200]), CLOSE_TOO_BIG),
            (frame(true, OP_CLOSE, &[3]), CLOSE_PROTOCOL_ERROR),
            (
                frame(true, OP_CLOSE, &999u16.to_be_bytes()),
                CLOSE_PROTOCOL_ERROR,
            ),
            (
                [frame(false, OP_BINARY, b"a"), frame(true, OP_BINARY, b"b")].concat(),
                CLOSE_PROTOCOL_ERROR,
            ),
            (
                [
                    frame(false, OP_BINARY, &[0; 60]),
                    frame(true, OP_CONTINUATION, &[0; 60]),
                ]
                .concat(),
                CLOSE_TOO_BIG,
            ),
        ];
        for (bytes, code) in cases {
            let mut d = Decoder::new(100);
            let (_, last) = feed(&mut d, &bytes, 1);
            assert_eq!(last.map_err(|v| v.code), Err(code), "{bytes:02x?}");
        }
    }

    #[test]
    fn a_huge_length_is_refused_from_the_header_alone() {
        // 2^63 (top bit set) and 2^63 - 1 (over any bound): refused with no payload sent.
        for len in [1u64 << 63, (1u64 << 63) - 1] {
            let mut bytes = vec![0x82, 0x80 | 127];
            bytes.extend_from_slice(&len.to_be_bytes());
            bytes.extend_from_slice(&[1, 2, 3, 4]);
            let mut d = Decoder::new(u64::from(u32::MAX));
            let err = d.decode(&mut bytes).unwrap_err();
            let expect = if len >> 63 == 1 {
                CLOSE_PROTOCOL_ERROR
            } else {
                CLOSE_TOO_BIG
            };
            assert_eq!(err.code, expect);
        }
    }

    #[test]
    fn close_frames_end_decoding() {
        let mut bytes = frame(true, OP_BINARY, b"ab");
        bytes.extend(frame(true, OP_CLOSE, &1000u16.to_be_bytes()));
        bytes.extend(frame(true, OP_BINARY, b"ignored"));
        let mut d = Decoder::new(100);
        let r = d.decode(&mut bytes).unwrap();
        assert_eq!((r.data, r.close), (2, Some(Some(1000))));
        assert_eq!(&bytes[..2], b"ab");
        let mut empty = frame(true, OP_CLOSE, b"");
        assert_eq!(
            Decoder::new(100).decode(&mut empty).unwrap().close,
            Some(None)
        );
    }

    #[test]
    fn headers_encode_each_length_form() {
        let mut h = [0u8; 10];
        assert_eq!(header(OP_BINARY, 125, &mut h), 2);
        assert_eq!(&h[..2], &[0x82, 125]);
        assert_eq!(header(OP_BINARY, 126, &mut h), 4);
        assert_eq!(&h[..4], &[0x82, 126, 0, 126]);
        assert_eq!(header(OP_BINARY, 70_000, &mut h), 10);
        assert_eq!(&h[..10], &[0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
    }

    #[test]
    fn unmask_matches_bytewise_xor_at_every_offset() {
        let mask = [1, 2, 3, 4];
        for at in 0..4 {
            for len in 0..20 {
                let mut data: Vec<u8> = (0..len as u8).collect();
                unmask(&mut data, mask, at);
                let want: Vec<u8> = (0..len as u8)
                    .map(|i| i ^ mask[(at + i as usize) % 4])
                    .collect();
                assert_eq!(data, want);
            }
        }
    }
}
