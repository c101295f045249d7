//! A minimal blocking HTTP/1.1 client for the auth plugin's workers: one POST of a JSON body
//! per connection (`Connection: close`), over a std `TcpStream` or rustls (the `ring`
//! provider the broker's TLS already builds).
//!
//! Why not a crate (ureq, reqwest): the plugin needs exactly one request shape, and everything
//! under it (TCP, rustls, the CA loader) is already in the tree. ~200 lines here against a
//! crate with its own dependency tree and feature matrix (ureq 3 pulls webpki-roots, http,
//! utf-8 decoding, cookie and proxy code). The whole exchange has one deadline: connect,
//! write and every read share it.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

/// Largest answer body read (an auth answer is a few bytes; a bigger one is an error).
const MAX_BODY: usize = 64 * 1024;

/// A parsed `http://` or `https://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Url {
    /// Parses `http[s]://HOST[:PORT][/PATH]`; HOST may be a bracketed IPv6 address.
    pub fn parse(text: &str) -> Result<Url, String> {
        let (https, rest) = if let Some(r) = text.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = text.strip_prefix("https://") {
            (true, r)
        } else {
            return Err(format!(
                "{text:?}: the URL must start with http:// or https://"
            ));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let default_port = if https { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{text:?}: unclosed '[' in the host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| format!("{text:?}: bad port"))?,
                None if after.is_empty() => default_port,
                None => return Err(format!("{text:?}: junk after the host")),
            };
            (h, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, p.parse().map_err(|_| format!("{text:?}: bad port"))?),
                None => (authority, default_port),
            }
        };
        if host.is_empty() || host.contains('@') {
            return Err(format!("{text:?}: no host (user info is not supported)"));
        }
        Ok(Url {
            https,
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    fn host_header(&self) -> String {
        let host = match self.host.contains(':') {
            true => format!("[{}]", self.host),
            false => self.host.clone(),
        };
        match (self.https, self.port) {
            (false, 80) | (true, 443) => host,
            _ => format!("{host}:{}", self.port),
        }
    }
}

/// An answer: the status code and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// POSTs `body` (JSON) to `url` and reads the answer, all within `timeout`. `tls` is needed
/// for an `https` URL.
pub fn post_json(
    url: &Url,
    body: &[u8],
    timeout: Duration,
    tls: Option<&Arc<ClientConfig>>,
) -> io::Result<Response> {
    let deadline = Instant::now() + timeout;
    let addr = resolve(url)?;
    let tcp = TcpStream::connect_timeout(&addr, remaining(deadline)?)?;
    let _ = tcp.set_nodelay(true);
    let mut request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: midge\r\nContent-Type: application/json\r\n\
         Accept: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        url.path,
        url.host_header(),
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    if url.https {
        let config = tls.ok_or_else(|| io::Error::other("https without a TLS configuration"))?;
        let name = ServerName::try_from(url.host.clone())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let conn = ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
        let mut stream = StreamOwned::new(conn, tcp);
        exchange(&mut stream, &request, deadline, |s, d| {
            set_timeouts(&s.sock, d)
        })
    } else {
        let mut stream = tcp;
        exchange(&mut stream, &request, deadline, set_timeouts)
    }
}

fn resolve(url: &Url) -> io::Result<SocketAddr> {
    (url.host.as_str(), url.port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the host has no address"))
}

fn remaining(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
    }
    Ok(left)
}

fn set_timeouts(sock: &TcpStream, deadline: Instant) -> io::Result<()> {
    let left = remaining(deadline)?;
    sock.set_read_timeout(Some(left))?;
    sock.set_write_timeout(Some(left))
}

/// Writes the request and reads until the body is complete or the server closes.
fn exchange<S: Read + Write>(
    stream: &mut S,
    request: &[u8],
    deadline: Instant,
    arm: impl Fn(&S, Instant) -> io::Result<()>,
) -> io::Result<Response> {
    arm(stream, deadline)?;
    stream.write_all(request)?;
    stream.flush()?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(resp) = parse_response(&buf, false)? {
            return Ok(resp);
        }
        arm(stream, deadline)?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            // rustls reports a close without close_notify as UnexpectedEof.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"))
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            return parse_response(&buf, true)?
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "truncated answer"));
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_BODY + 16 * 1024 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "answer too large",
            ));
        }
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Parses a complete answer from `buf`; `Ok(None)` while more bytes are needed. `closed`: the
/// server closed, so a body without length ends here.
pub fn parse_response(buf: &[u8], closed: bool) -> io::Result<Option<Response>> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| bad("header not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    if !parts.next().unwrap_or_default().starts_with("HTTP/1.") {
        return Err(bad("not an HTTP/1.x answer"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| bad("bad Content-Length"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    let rest = &buf[head_end + 4..];
    let body = if chunked {
        match dechunk(rest)? {
            Some(b) => b,
            None if closed => return Err(bad("truncated chunked body")),
            None => return Ok(None),
        }
    } else if let Some(len) = length {
        if len > MAX_BODY {
            return Err(bad("answer too large"));
        }
        if rest.len() < len {
            return match closed {
                true => Err(bad("truncated body")),
                false => Ok(None),
            };
        }
        rest[..len].to_vec()
    } else if status == 204 || status == 304 || (100..200).contains(&status) {
        Vec::new()
    } else if closed {
        rest.to_vec()
    } else {
        return Ok(None);
    };
    Ok(Some(Response { status, body }))
}

/// Decodes a chunked body; `Ok(None)` while the last chunk has not arrived.
fn dechunk(mut rest: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let mut body = Vec::new();
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size_text = std::str::from_utf8(&rest[..eol]).map_err(|_| bad("bad chunk"))?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("bad chunk size"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(Some(body));
        }
        // The server chooses `size`: compare against what is left of the bound, so a size near
        // `usize::MAX` is "too large", never an overflow.
        if size > MAX_BODY - body.len() {
            return Err(bad("answer too large"));
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        if &rest[size..size + 2] != b"\r\n" {
            return Err(bad("chunk without its CRLF"));
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("http://127.0.0.1:8080/auth?x=1").unwrap();
        assert_eq!(
            (u.https, u.host.as_str(), u.port),
            (false, "127.0.0.1", 8080)
        );
        assert_eq!(u.path, "/auth?x=1");
        let u = Url::parse("https://auth.example").unwrap();
        assert_eq!((u.port, u.path.as_str()), (443, "/"));
        assert_eq!(u.host_header(), "auth.example");
        let u = Url::parse("http://[::1]:81/a").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 81));
        assert_eq!(u.host_header(), "[::1]:81");
        assert!(Url::parse("ftp://x").is_err());
        assert!(Url::parse("http://:80/").is_err());
        assert!(Url::parse("http://h:port/").is_err());
    }

    #[test]
    fn answers() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false);
        assert_eq!(r.unwrap().unwrap().body, b"ok");
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok", false)
                .unwrap()
                .is_none()
        );
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok", true).is_err());
        // http.server (HTTP/1.0) without a length: the body ends at close.
        let r = parse_response(b"HTTP/1.0 403 Forbidden\r\n\r\n{}", true)
            .unwrap()
            .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (403, &b"{}"[..]));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(chunked, false).unwrap().unwrap().body,
            b"abcde"
        );
        assert!(parse_response(b"SSH-2.0\r\n\r\n", true).is_err());
    }

    /// A hostile or broken auth server: chunk sizes near `usize::MAX` and chunks without their
    /// closing CRLF are errors, never an overflow panic or a body with the wrong bytes.
    #[test]
    fn hostile_chunks_are_errors() {
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for body in [
            &b"FFFFFFFFFFFFFFFF\r\nok\r\n0\r\n\r\n"[..],
            b"FFFFFFFFFFFFFFFE\r\n",
            b"2\r\nok\r\nFFFFFFFFFFFFFFFF\r\n",
            b"10001\r\n",
            b"2\r\nokXY0\r\n\r\n",
        ] {
            let mut answer = head.clone();
            answer.extend_from_slice(body);
            for closed in [false, true] {
                assert!(
                    parse_response(&answer, closed).is_err(),
                    "{:?} (closed: {closed})",
                    String::from_utf8_lossy(body)
                );
            }
        }
        // What the fuzzer found: a 2-byte chunk followed by junk instead of CRLF, then a chunk
        // size of 2^64 - 1 (byte 0 is the fuzz target's selector: "closed").
        let found =
            include_bytes!("../../../../fuzz/artifacts-found/auth-http-chunk-size-overflow");
        assert!(parse_response(&found[1..], true).is_err());
    }
}
