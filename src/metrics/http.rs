//! Just enough HTTP/1.1 (RFC 9112) for a scrape endpoint: one request head parsed from a
//! bounded buffer, and a response with a known length. Bodies are never read: a request
//! that announces one is answered and its connection closed, so no client input has to be
//! skipped or buffered past the head.

use std::fmt::Write as _;

/// Largest request head (request line and headers) read; past it the request is refused
/// (414 while the request line is still incomplete, 431 after).
pub const MAX_HEAD: usize = 8 * 1024;
/// Most header fields in one request (431 past it).
pub const MAX_HEADERS: usize = 64;

/// A response status this server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    UriTooLong,
    HeadersTooLarge,
    VersionNotSupported,
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::UriTooLong => 414,
            Status::HeadersTooLarge => 431,
            Status::VersionNotSupported => 505,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::UriTooLong => "URI Too Long",
            Status::HeadersTooLarge => "Request Header Fields Too Large",
            Status::VersionNotSupported => "HTTP Version Not Supported",
        }
    }
}

/// One parsed request head, borrowing from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The path of the target, without its query.
    pub path: &'a str,
    /// The connection may carry another request after this one's response.
    pub keep_alive: bool,
    /// Bytes of the buffer this head took (leading empty lines included).
    pub len: usize,
}

/// What the buffer holds so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// Not a whole head yet, and nothing wrong so far: read more.
    Incomplete,
    Request(Request<'a>),
    /// A bad request: answer with this status and close.
    Error(Status),
}

/// `tchar` of RFC 9110 §5.6.2 (method and header names).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses the request head at the start of `buf`. Never reads past [`MAX_HEAD`] bytes of it.
pub fn parse(buf: &[u8]) -> Parsed<'_> {
    // RFC 9112 §2.2: empty lines before a request line are ignored.
    let mut start = 0;
    while let Some(rest) = buf.get(start..) {
        if rest.starts_with(b"\r\n") {
            start += 2;
        } else if rest.starts_with(b"\n") {
            start += 1;
        } else {
            break;
        }
        if start > MAX_HEAD {
            return Parsed::Error(Status::BadRequest);
        }
    }
    let window = &buf[..buf.len().min(MAX_HEAD)];
    let head = &window[start.min(window.len())..];
    // Lines end in CRLF or a bare LF (§2.2 allows recipients to accept LF).
    let mut lines = Vec::new();
    let mut at = 0;
    let mut end = None;
    while let Some(nl) = head[at..].iter().position(|&b| b == b'\n') {
        let line = &head[at..at + nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        at += nl + 1;
        if line.is_empty() {
            end = Some(start + at);
            break;
        }
        lines.push(line);
        if lines.len() > MAX_HEADERS + 1 {
            return Parsed::Error(Status::HeadersTooLarge);
        }
    }
    // The request line can be judged as soon as it is complete (or as soon as a byte no
    // request line may hold arrives), so garbage is refused at once, not at the timeout.
    match lines.first() {
        Some(line) => {
            if let Err(status) = request_line(line) {
                return Parsed::Error(status);
            }
        }
        None if head[at..]
            .iter()
            .any(|&b| !(0x20..0x7f).contains(&b) && b != b'\r') =>
        {
            return Parsed::Error(Status::BadRequest);
        }
        None => {}
    }
    let Some(len) = end else {
        return if buf.len() >= MAX_HEAD {
            Parsed::Error(if lines.is_empty() {
                Status::UriTooLong
            } else {
                Status::HeadersTooLarge
            })
        } else {
            Parsed::Incomplete
        };
    };
    match request(&lines, len) {
        Ok(r) => Parsed::Request(r),
        Err(status) => Parsed::Error(status),
    }
}

/// Method, target and version of a request line.
fn request_line(line: &[u8]) -> Result<(&str, &str, bool), Status> {
    let text = std::str::from_utf8(line).map_err(|_| Status::BadRequest)?;
    let mut parts = text.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        // Two words is HTTP/0.9 ("GET /path"), which has no status line to answer with;
        // anything else is not a request line.
        return Err(Status::BadRequest);
    };
    if method.is_empty() || method.len() > 16 || !method.bytes().all(is_tchar) {
        return Err(Status::BadRequest);
    }
    if !target.starts_with('/') || !target.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return Err(Status::BadRequest);
    }
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        v if v.len() == 8
            && v.starts_with("HTTP/")
            && v.as_bytes()[5].is_ascii_digit()
            && v.as_bytes()[6] == b'.'
            && v.as_bytes()[7].is_ascii_digit() =>
        {
            return Err(Status::VersionNotSupported)
        }
        _ => return Err(Status::BadRequest),
    };
    Ok((method, target, http11))
}

/// The whole head: request line and header fields (RFC 9112 §3, §5, §6).
fn request<'a>(lines: &[&'a [u8]], len: usize) -> Result<Request<'a>, Status> {
    let (method, target, http11) = request_line(lines[0])?;
    let mut hosts = 0;
    let mut close = !http11;
    let mut body = false;
    let mut content_length: Option<u64> = None;
    for line in &lines[1..] {
        // Obsolete line folding and whitespace before the colon are refused (§5.1, §5.2).
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(Status::BadRequest)?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(Status::BadRequest);
        }
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(Status::BadRequest);
        }
        let value = value.trim_ascii();
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let n = std::str::from_utf8(value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(Status::BadRequest)?;
            if content_length.is_some_and(|c| c != n) {
                return Err(Status::BadRequest);
            }
            content_length = Some(n);
            body |= n > 0;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            body = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && !http11 {
                    close = false;
                }
            }
        }
    }
    // §3.2: an HTTP/1.1 request has exactly one Host field.
    if (http11 && hosts == 0) || hosts > 1 {
        return Err(Status::BadRequest);
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    Ok(Request {
        method,
        path,
        keep_alive: !close && !body,
        len,
    })
}

/// A complete response. `head_only` (HEAD) leaves the body out but keeps its length.
pub fn response(
    out: &mut Vec<u8>,
    status: Status,
    content_type: &str,
    body: &[u8],
    head_only: bool,
    keep_alive: bool,
) {
    let mut head = String::with_capacity(160);
    let _ = write!(
        head,
        "HTTP/1.1 {} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
        status.code(),
        status.reason(),
        body.len()
    );
    if status == Status::MethodNotAllowed {
        head.push_str("Allow: GET, HEAD\r\n");
    }
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    out.extend_from_slice(head.as_bytes());
    if !head_only {
        out.extend_from_slice(body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Request<'_> {
        match parse(text.as_bytes()) {
            Parsed::Request(r) => r,
            other => panic!("{text:?}: {other:?}"),
        }
    }

    fn err(text: &[u8]) -> Status {
        match parse(text) {
            Parsed::Error(s) => s,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(text)),
        }
    }

    #[test]
    fn a_scrape_request_parses_with_its_length_and_keep_alive() {
        let text = "GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\nGET";
        let r = ok(text);
        assert_eq!((r.method, r.path, r.keep_alive), ("GET", "/metrics", true));
        assert_eq!(r.len, text.len() - 3);
        let r = ok("\r\nGET / HTTP/1.0\n\n");
        assert!(!r.keep_alive, "HTTP/1.0 closes unless asked");
        assert!(ok("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        assert!(!ok("GET / HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n").keep_alive);
        assert!(!ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n").keep_alive);
    }

    #[test]
    fn partial_heads_wait_for_more() {
        for text in [
            "",
            "GE",
            "GET /metrics HTTP/1.1",
            "GET / HTTP/1.1\r\nHost: a\r\n",
        ] {
            assert_eq!(parse(text.as_bytes()), Parsed::Incomplete, "{text:?}");
        }
    }

    #[test]
    fn malformed_requests_get_400() {
        for text in [
            &b"GET /metrics\r\n\r\n"[..],      // HTTP/0.9
            b"GET  /metrics HTTP/1.1\r\n\r\n", // two spaces
            b"GET metrics HTTP/1.1\r\nHost: a\r\n\r\n",
            b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n", // no Host
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", // space before the colon
            b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\x00\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nno colon\r\n\r\n",
            b"\x16\x03\x01\x02\x00", // a TLS hello: refused before any line end
            b"\xff\xfe garbage",
        ] {
            assert_eq!(
                err(text),
                Status::BadRequest,
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
        assert_eq!(err(b"GET / HTTP/2.0\r\n\r\n"), Status::VersionNotSupported);
    }

    #[test]
    fn oversize_heads_are_refused_without_reading_past_the_bound() {
        let long_line = format!("GET /{} HTTP/1.1", "a".repeat(MAX_HEAD));
        assert_eq!(err(long_line.as_bytes()), Status::UriTooLong);
        let big_header = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "b".repeat(MAX_HEAD)
        );
        assert_eq!(err(big_header.as_bytes()), Status::HeadersTooLarge);
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "A: b\r\n".repeat(MAX_HEADERS + 2)
        );
        assert_eq!(err(many.as_bytes()), Status::HeadersTooLarge);
    }

    #[test]
    fn responses_carry_length_and_connection() {
        let mut out = Vec::new();
        response(
            &mut out,
            Status::MethodNotAllowed,
            "text/plain",
            b"no\n",
            false,
            false,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{text}"
        );
        assert!(text.contains("Content-Length: 3\r\n") && text.contains("Allow: GET, HEAD\r\n"));
        assert!(text.ends_with("Connection: close\r\n\r\nno\n"), "{text}");
        let mut out = Vec::new();
        response(&mut out, Status::Ok, "text/plain", b"abc", true, true);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.ends_with("Content-Length: 3\r\n\r\n"),
            "HEAD: no body: {text}"
        );
    }
}
