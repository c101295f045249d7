//! The PROXY protocol (HAProxy's `proxy-protocol.txt`, versions 1 and 2): the header a proxy
//! or load balancer sends before anything else on a connection it relays, naming the client
//! it relays for.
//!
//! - [`parse`]: a pure function from the first bytes of a connection to a header, "not yet"
//!   or an error (unit-tested here, fuzzed by `fuzz/fuzz_targets/proxy_header.rs`).
//! - [`ProxyStream`]: the layer on a listener with `proxy_protocol true`. It reads the header
//!   straight off the TCP socket *before* any other layer sees a byte (TLS's ClientHello and
//!   the WebSocket upgrade follow it on the wire), then hands every call to the transport it
//!   wraps.
//!
//! # Bounds
//! A header is at most [`V1_MAX`] bytes (version 1, the specification's own bound) or 16 +
//! [`V2_MAX_LEN`] bytes (version 2; its length field is checked before anything more is
//! read). It is read with `peek` into a buffer on the stack and consumed with a read of
//! exactly its length once it is whole, so no byte after it is taken from the socket. A
//! header that arrives in pieces has its first pieces kept (they can only be header bytes)
//! in a buffer of that bound, freed once it is read. A prefix that cannot become a header is
//! refused at once; a header that never completes is closed by `connect_timeout`, which runs
//! from accept.
//!
//! # Addresses
//! A version 1 `UNKNOWN`, a version 2 `LOCAL` (a proxy's own health check), and version 2
//! `UNSPEC` or `UNIX` addresses all keep the socket's address, as the specification asks
//! ("use the real connection endpoints"); only a TCP over IPv4/IPv6 source replaces it.

use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::Transport;

/// Version 2's 12-byte signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Longest version 1 header, CRLF included (`proxy-protocol.txt` §2.1).
pub const V1_MAX: usize = 107;

/// Longest version 2 address-and-TLV block accepted. Addresses take at most 216 bytes
/// (UNIX); proxies add a few TLVs (ALPN, authority, a cloud endpoint id, TLS details) that
/// stay well under this.
pub const V2_MAX_LEN: usize = 1024;

/// Longest header of either version.
const MAX_HEADER: usize = 16 + V2_MAX_LEN;

pub use crate::config::ProxyProtocol;

/// A complete header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// 1 or 2.
    pub version: u8,
    /// The client's address; `None`: keep the socket's (LOCAL, UNKNOWN, UNSPEC, UNIX).
    pub source: Option<SocketAddr>,
    /// Version 2 only: the proxy says the client came over TLS (a `PP2_TYPE_SSL` TLV with
    /// its `PP2_CLIENT_SSL` bit).
    pub client_tls: bool,
}

/// What the first bytes of a connection are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Could still become a header: more bytes are needed.
    Incomplete,
    /// A header of this many bytes (what follows is the relayed stream).
    Done(Header, usize),
}

/// Reads a header from the start of `buf`; `Err` names what is wrong.
pub fn parse(buf: &[u8], accept: ProxyProtocol) -> Result<Parsed, &'static str> {
    let v1 = b"PROXY ";
    let is_prefix = |sig: &[u8]| buf[..buf.len().min(sig.len())] == sig[..buf.len().min(sig.len())];
    if accept.v2 && is_prefix(&V2_SIGNATURE) {
        return parse_v2(buf);
    }
    if accept.v1 && is_prefix(v1) {
        return parse_v1(buf);
    }
    Err(match (accept.v1, accept.v2) {
        (true, true) => "no PROXY protocol header",
        (true, false) => "no PROXY protocol version 1 header",
        _ => "no PROXY protocol version 2 header",
    })
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, &'static str> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        if window.len() == V1_MAX || window.contains(&b'\n') {
            return Err("PROXY version 1 header without CRLF within 107 bytes");
        }
        return Ok(Parsed::Incomplete);
    };
    if window[..end].contains(&b'\n') {
        // Refused whole as it is in pieces (a prefix ending at this LF is refused above).
        return Err("PROXY version 1 header with a line feed before its CRLF");
    }
    let line = std::str::from_utf8(&window[6..end]).map_err(|_| "PROXY header is not text")?;
    let mut parts = line.split(' ');
    let source = match parts.next() {
        // "the receiver must ignore anything presented before the CRLF is found"
        Some("UNKNOWN") => None,
        Some(family @ ("TCP4" | "TCP6")) => {
            let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
            ) else {
                return Err("PROXY version 1 header does not have 4 address fields");
            };
            let (src, dst) = match family {
                "TCP4" => (v4(src)?, v4(dst)?),
                _ => (v6(src)?, v6(dst)?),
            };
            let _ = (dst, port(dport)?);
            Some(SocketAddr::new(src, port(sport)?))
        }
        _ => return Err("PROXY version 1 protocol is not TCP4, TCP6 or UNKNOWN"),
    };
    Ok(Parsed::Done(
        Header {
            version: 1,
            source,
            client_tls: false,
        },
        end + 2,
    ))
}

fn v4(s: &str) -> Result<IpAddr, &'static str> {
    s.parse::<Ipv4Addr>()
        .map(IpAddr::V4)
        .map_err(|_| "PROXY version 1 address is not IPv4")
}

fn v6(s: &str) -> Result<IpAddr, &'static str> {
    s.parse::<Ipv6Addr>()
        .map(IpAddr::V6)
        .map_err(|_| "PROXY version 1 address is not IPv6")
}

/// A port as version 1 writes it: decimal, 0..=65535, no sign, no leading zero.
fn port(s: &str) -> Result<u16, &'static str> {
    let bad = "PROXY version 1 port is not a decimal in 0..65535";
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad);
    }
    if s.len() > 1 && s.starts_with('0') {
        return Err(bad);
    }
    s.parse().map_err(|_| bad)
}

const PP2_TYPE_SSL: u8 = 0x20;
const PP2_TYPE_CRC32C: u8 = 0x03;
const PP2_CLIENT_SSL: u8 = 0x01;

fn parse_v2(buf: &[u8]) -> Result<Parsed, &'static str> {
    if buf.len() < 16 {
        return Ok(Parsed::Incomplete);
    }
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Err("PROXY version 2 header with another version");
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return Err("PROXY version 2 command is neither LOCAL nor PROXY"),
    };
    let family = buf[13] >> 4;
    if family > 3 || buf[13] & 0x0f > 2 {
        return Err("PROXY version 2 address family or protocol unknown");
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > V2_MAX_LEN {
        return Err("PROXY version 2 header longer than 1024 bytes");
    }
    let need = match family {
        // LOCAL: what follows is ignored, as the specification asks.
        _ if local => 0,
        1 => 12,
        2 => 36,
        3 => 216,
        _ => 0,
    };
    if len < need {
        return Err("PROXY version 2 address block shorter than its family");
    }
    if buf.len() < 16 + len {
        return Ok(Parsed::Incomplete);
    }
    let block = &buf[16..16 + len];
    let header = |source, client_tls| {
        Ok(Parsed::Done(
            Header {
                version: 2,
                source,
                client_tls,
            },
            16 + len,
        ))
    };
    if local {
        return header(None, false);
    }
    let source = match family {
        1 => {
            let ip: [u8; 4] = block[0..4].try_into().unwrap_or_default();
            let port = u16::from_be_bytes([block[8], block[9]]);
            Some(SocketAddr::new(IpAddr::from(ip), port))
        }
        2 => {
            let ip: [u8; 16] = block[0..16].try_into().unwrap_or_default();
            let port = u16::from_be_bytes([block[32], block[33]]);
            Some(SocketAddr::new(IpAddr::from(ip), port))
        }
        _ => None,
    };
    header(source, tlvs(&buf[..16 + len], 16 + need)?)
}

/// Walks the TLVs of `header` (the whole version 2 header) from `at`, after the addresses
/// (each must fit in the block); whether a `PP2_TYPE_SSL` one says the client used TLS. A
/// `PP2_TYPE_CRC32C` one must match the header's checksum, or the header is refused, as the
/// specification asks of a receiver that supports it. Unknown types are skipped.
fn tlvs(header: &[u8], at: usize) -> Result<bool, &'static str> {
    let mut tls = false;
    let mut pos = at;
    while pos < header.len() {
        let [kind, hi, lo, tail @ ..] = &header[pos..] else {
            return Err("PROXY version 2 TLV cut short");
        };
        let n = usize::from(u16::from_be_bytes([*hi, *lo]));
        if n > tail.len() {
            return Err("PROXY version 2 TLV longer than the header");
        }
        match *kind {
            PP2_TYPE_SSL => tls |= tail.first().is_some_and(|c| c & PP2_CLIENT_SSL != 0),
            PP2_TYPE_CRC32C => {
                let &[a, b, c, d] = &tail[..n] else {
                    return Err("PROXY version 2 CRC32c TLV is not 4 bytes");
                };
                let value = pos + 3;
                // The checksum is of the header with its own field zeroed.
                let mut crc = crc32c_update(!0, &header[..value]);
                crc = crc32c_update(crc, &[0; 4]);
                crc = !crc32c_update(crc, &header[value + 4..]);
                if crc != u32::from_be_bytes([a, b, c, d]) {
                    return Err("PROXY version 2 CRC32c checksum does not match the header");
                }
            }
            _ => {}
        }
        pos += 3 + n;
    }
    Ok(tls)
}

/// CRC-32C (Castagnoli, RFC 4960 appendix B) of `data` continued from `crc` (start with
/// `!0`, finish with `!`). Bitwise: it runs once per connection, over at most 1 KiB.
fn crc32c_update(mut crc: u32, data: &[u8]) -> u32 {
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// A connection on a `proxy_protocol` listener: the header, then the wrapped transport.
#[derive(Debug)]
pub struct ProxyStream {
    inner: Transport,
    /// `Err`: the header is still to be read, by these versions.
    header: Result<Header, ProxyProtocol>,
    /// The start of a header that arrived in pieces (empty, unallocated, when it came
    /// whole: the usual case).
    held: Vec<u8>,
}

impl ProxyStream {
    /// `inner`: the transport the listener would make without the header (plain, TLS,
    /// WebSocket), built but not yet read from.
    pub fn new(inner: Transport, accept: ProxyProtocol) -> ProxyStream {
        ProxyStream {
            inner,
            header: Err(accept),
            held: Vec::new(),
        }
    }

    pub(super) fn inner(&self) -> &Transport {
        &self.inner
    }

    pub(super) fn inner_mut(&mut self) -> &mut Transport {
        &mut self.inner
    }

    /// The header, once it is read.
    pub fn header(&self) -> Option<&Header> {
        self.header.as_ref().ok()
    }

    /// Reads the header if it is not read yet (`WouldBlock` while it is incomplete), then
    /// reads through the wrapped transport.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.read_header_only()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.inner.read(buf)
    }

    /// Reads the header if it is not read yet, and nothing after it: whether it is read now.
    pub(super) fn read_header_only(&mut self) -> io::Result<bool> {
        if let Err(accept) = self.header {
            match self.read_header(accept)? {
                Some(h) => self.header = Ok(h),
                None => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Peeks at the socket; once a whole header is there, consumes exactly it. While it is
    /// not, every byte the socket holds is part of it: those are consumed into `held` (so
    /// that an end of stream behind them is seen) and the socket is peeked again, until it
    /// is drained.
    fn read_header(&mut self, accept: ProxyProtocol) -> io::Result<Option<Header>> {
        let mut buf = [0u8; MAX_HEADER];
        loop {
            let held = self.held.len();
            buf[..held].copy_from_slice(&self.held);
            let n = match self.inner.tcp().peek(&mut buf[held..]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "closed before its PROXY protocol header ended",
                    ))
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(e),
            };
            let invalid = |reason| io::Error::new(io::ErrorKind::InvalidData, reason);
            let (header, len) = match parse(&buf[..held + n], accept).map_err(invalid)? {
                Parsed::Done(header, len) => (header, len),
                Parsed::Incomplete => {
                    self.consume(&mut buf[held..held + n])?;
                    self.held.extend_from_slice(&buf[held..held + n]);
                    continue;
                }
            };
            if accept.require_tls && !header.client_tls {
                return Err(invalid(
                    "PROXY header does not say the client used TLS (proxy_protocol_v2_require_tls)",
                ));
            }
            self.consume(&mut buf[held..len.max(held)])?;
            self.held = Vec::new();
            return Ok(Some(header));
        }
    }

    /// Reads exactly `into.len()` bytes that a peek has shown the socket holds.
    fn consume(&mut self, into: &mut [u8]) -> io::Result<()> {
        let mut tcp = self.inner.tcp();
        let mut taken = 0;
        while taken < into.len() {
            match tcp.read(&mut into[taken..]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(k) => taken += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(buf: &[u8]) -> (Header, usize) {
        match parse(buf, ProxyProtocol::ANY) {
            Ok(Parsed::Done(h, n)) => (h, n),
            other => panic!("{buf:?}: {other:?}"),
        }
    }

    fn v2(cmd: u8, fam: u8, block: &[u8]) -> Vec<u8> {
        let mut b = V2_SIGNATURE.to_vec();
        b.push(0x20 | cmd);
        b.push(fam);
        b.extend_from_slice(&(block.len() as u16).to_be_bytes());
        b.extend_from_slice(block);
        b
    }

    #[test]
    fn crc32c_is_castagnoli() {
        // RFC 3720 B.4's check value of "123456789".
        assert_eq!(!crc32c_update(!0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn version_2_crc32c_tlv_is_checked() {
        let mut block = vec![192, 0, 2, 7, 10, 0, 0, 1, 0xdc, 0x04, 0x07, 0x5b];
        block.extend_from_slice(&[PP2_TYPE_CRC32C, 0, 4, 0, 0, 0, 0]);
        let mut good = v2(1, 0x11, &block);
        let at = good.len() - 4;
        let crc = !crc32c_update(!0, &good);
        good[at..].copy_from_slice(&crc.to_be_bytes());
        let (h, n) = done(&good);
        assert_eq!(
            (h.source, n),
            (Some("192.0.2.7:56324".parse().unwrap()), good.len())
        );
        // One bit of the address flipped, or of the checksum: refused.
        for flip in [16, at + 3] {
            let mut bad = good.clone();
            bad[flip] ^= 0x01;
            assert_eq!(
                parse(&bad, ProxyProtocol::ANY),
                Err("PROXY version 2 CRC32c checksum does not match the header"),
                "byte {flip}"
            );
        }
        // A checksum TLV of the wrong size.
        let mut short = block[..12].to_vec();
        short.extend_from_slice(&[PP2_TYPE_CRC32C, 0, 2, 0, 0]);
        assert!(parse(&v2(1, 0x11, &short), ProxyProtocol::ANY).is_err());
    }

    #[test]
    fn version_1_tcp4_tcp6_and_unknown() {
        let text = b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 1883\r\n\x10";
        let (h, n) = done(text);
        assert_eq!(h.source, Some("192.0.2.7:56324".parse().unwrap()));
        assert_eq!((h.version, n), (1, text.len() - 1));
        let (h, _) = done(b"PROXY TCP6 2001:db8::1 ::1 65535 1883\r\n");
        assert_eq!(h.source, Some("[2001:db8::1]:65535".parse().unwrap()));
        let (h, n) = done(b"PROXY UNKNOWN\r\n");
        assert_eq!((h.source, n), (None, 15));
        let (h, _) = done(b"PROXY UNKNOWN ffff::1 ::1 1 2\r\n");
        assert_eq!(h.source, None);
    }

    #[test]
    fn version_1_partial_headers_wait() {
        let full = b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 1883\r\n";
        for cut in 0..full.len() {
            assert_eq!(
                parse(&full[..cut], ProxyProtocol::ANY),
                Ok(Parsed::Incomplete)
            );
        }
    }

    #[test]
    fn version_1_bad_headers_are_named() {
        for bad in [
            &b"PROXY TCP4 192.0.2.7 10.0.0.1 56324\r\n"[..],
            b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 1883 x\r\n",
            b"PROXY TCP4 ::1 10.0.0.1 1 2\r\n",
            b"PROXY TCP6 192.0.2.7 ::1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 65536 1883\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 0080 1883\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 -1 1883\r\n",
            b"PROXY TCP4  192.0.2.7 10.0.0.1 1 1883\r\n",
            b"PROXY UDP4 192.0.2.7 10.0.0.1 1 1883\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 1 1883\n",
            b"PROXY \xff\r\n",
            b"PROXY UNKNOWN a\nb\r\n",
            b"\x10\x0c\x00\x04MQTT",
            b"GET / HTTP/1.1\r\n",
        ] {
            assert!(parse(bad, ProxyProtocol::ANY).is_err(), "{bad:?}");
        }
        let long = format!("PROXY UNKNOWN {}\r\n", "x".repeat(100));
        assert!(parse(long.as_bytes(), ProxyProtocol::ANY).is_err());
        // 107 bytes with the CRLF: the longest there is.
        let longest = format!("PROXY UNKNOWN {}\r\n", "x".repeat(V1_MAX - 16));
        assert_eq!(done(longest.as_bytes()).1, V1_MAX);
    }

    #[test]
    fn version_2_proxy_local_families_and_tlvs() {
        let mut block = vec![192, 0, 2, 7, 10, 0, 0, 1, 0xdc, 0x04, 0x07, 0x5b];
        block.extend_from_slice(&[0x04, 0, 2, 0, 0]); // NOOP
        block.extend_from_slice(&[0x20, 0, 5, 0x01, 0, 0, 0, 0]); // SSL, client used TLS
        let header = v2(1, 0x11, &block);
        let (h, n) = done(&header);
        assert_eq!(h.source, Some("192.0.2.7:56324".parse().unwrap()));
        assert!(h.client_tls);
        assert_eq!((h.version, n), (2, header.len()));

        let mut block6 = [0u8; 36];
        block6[15] = 1;
        block6[32..34].copy_from_slice(&1234u16.to_be_bytes());
        let (h, _) = done(&v2(1, 0x21, &block6));
        assert_eq!(h.source, Some("[::1]:1234".parse().unwrap()));
        assert!(!h.client_tls);

        // LOCAL (a health check), UNSPEC and UNIX: the socket's address is kept.
        assert_eq!(done(&v2(0, 0x00, &[])).0.source, None);
        assert_eq!(done(&v2(0, 0x11, &block)).0.source, None);
        assert_eq!(done(&v2(0, 0x11, &[])).0.source, None);
        assert_eq!(done(&v2(1, 0x00, &[0x04, 0, 0])).0.source, None);
        assert_eq!(done(&v2(1, 0x31, &[0u8; 216])).0.source, None);
    }

    #[test]
    fn version_2_bad_and_partial_headers() {
        let block = [192, 0, 2, 7, 10, 0, 0, 1, 0xdc, 0x04, 0x07, 0x5b];
        let good = v2(1, 0x11, &block);
        for cut in 0..good.len() {
            assert_eq!(
                parse(&good[..cut], ProxyProtocol::ANY),
                Ok(Parsed::Incomplete)
            );
        }
        let mut wrong_version = good.clone();
        wrong_version[12] = 0x11;
        let mut wrong_command = good.clone();
        wrong_command[12] = 0x22;
        let mut wrong_family = good.clone();
        wrong_family[13] = 0x41;
        let mut tlv_too_long = block.to_vec();
        tlv_too_long.extend_from_slice(&[0x04, 0, 9, 0]);
        let mut tlv_cut = block.to_vec();
        tlv_cut.extend_from_slice(&[0x04, 0]);
        for bad in [
            wrong_version,
            wrong_command,
            wrong_family,
            v2(1, 0x11, &block[..11]),
            v2(1, 0x21, &[0; 35]),
            v2(1, 0x31, &[0; 215]),
            v2(1, 0x11, &tlv_too_long),
            v2(1, 0x11, &tlv_cut),
        ] {
            assert!(parse(&bad, ProxyProtocol::ANY).is_err(), "{bad:?}");
        }
        // The length is checked before the rest is waited for.
        let mut huge = good[..16].to_vec();
        huge[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(parse(&huge, ProxyProtocol::ANY).is_err());
        let at_limit = v2(1, 0x11, &[0; V2_MAX_LEN]);
        assert!(parse(&at_limit[..16], ProxyProtocol::ANY) == Ok(Parsed::Incomplete));
    }

    #[test]
    fn a_listener_takes_only_the_versions_it_accepts() {
        let one = ProxyProtocol {
            v2: false,
            ..ProxyProtocol::ANY
        };
        let two = ProxyProtocol {
            v1: false,
            ..ProxyProtocol::ANY
        };
        let text = b"PROXY UNKNOWN\r\n";
        let bin = v2(0, 0, &[]);
        assert!(parse(text, one).is_ok() && parse(text, two).is_err());
        assert!(parse(&bin, two).is_ok() && parse(&bin, one).is_err());
        // A first byte no header starts with is refused before more is read.
        assert!(parse(b"\x10", ProxyProtocol::ANY).is_err());
        assert_eq!(parse(b"\r\n", ProxyProtocol::ANY), Ok(Parsed::Incomplete));
        assert_eq!(parse(b"PRO", ProxyProtocol::ANY), Ok(Parsed::Incomplete));
    }
}
