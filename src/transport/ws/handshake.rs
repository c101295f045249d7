//! The HTTP side of a WebSocket listener: reading the request head a client opens with
//! (RFC 6455 §4.2.1) and the answers to it.
//!
//! Any path is accepted for the upgrade (EMQX and many clients use `/mqtt`, mosquitto `/`).
//! `Sec-WebSocket-Protocol` is a comma list, possibly over several header lines; the first
//! MQTT name in it is echoed (a browser aborts the connection when the subprotocol it asked
//! for is not). A request that is not HTTP at all (an MQTT CONNECT on the WebSocket port) is
//! recognised from its first bytes, so the answer does not wait for a header end that will
//! never come.

use std::net::{IpAddr, SocketAddr};

use base64::Engine;

/// The subprotocol names MQTT clients ask for: `mqtt` (3.1.1 and 5.0), `mqttv3.1` (3.1) and
/// `mqttv3.1.1` (some 3.1.1 clients).
const MQTT_PROTOCOLS: [&str; 3] = ["mqtt", "mqttv3.1", "mqttv3.1.1"];

/// RFC 6455 §1.3.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A complete, acceptable request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A WebSocket upgrade: the `Sec-WebSocket-Accept` value to answer and the subprotocol
    /// to echo (`None`: the client asked for none).
    Upgrade {
        accept: String,
        protocol: Option<&'static str>,
        /// The last entry of `X-Forwarded-For` (of its last line), as sent: the address the
        /// nearest proxy saw the connection come from. Used only where the listener trusts it.
        forwarded_for: Option<String>,
    },
    /// A plain `GET` of this target (path and query as sent).
    Get { target: String },
}

/// What the bytes read so far are.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse {
    /// No end of the head yet, and nothing wrong so far.
    Incomplete,
    /// A request; the head took this many bytes (what follows is WebSocket frames).
    Done(Request, usize),
    /// Not an acceptable request: the reason, for the 400 answer and the log.
    Bad(&'static str),
}

/// Reads a request head from the start of `buf`.
pub fn parse(buf: &[u8]) -> Parse {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return match looks_like_http(buf) {
            true => Parse::Incomplete,
            false => Parse::Bad("not an HTTP request"),
        };
    };
    let Ok(head) = std::str::from_utf8(&buf[..end]) else {
        return Parse::Bad("request head is not text");
    };
    match request(head) {
        Ok(r) => Parse::Done(r, end + 4),
        Err(reason) => Parse::Bad(reason),
    }
}

/// Whether a partial head can still become HTTP: a method of capital letters, then a
/// space, and only text after it.
fn looks_like_http(buf: &[u8]) -> bool {
    let method = buf.iter().take_while(|b| b.is_ascii_uppercase()).count();
    let rest = &buf[method..];
    if method > 16
        || (rest.first().is_some_and(|&b| b != b' '))
        || (rest.is_empty() && method == 16)
    {
        return false;
    }
    rest.iter()
        .all(|&b| b == b'\r' || b == b'\n' || b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Whether the comma list `value` holds `token` (ASCII case-insensitive).
fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn request(head: &str) -> Result<Request, &'static str> {
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed request line");
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Err("malformed request line");
    }
    let mut upgrade = None;
    let mut connection = None;
    let mut key = None;
    let mut ws_version = None;
    let mut offered = false;
    let mut protocol = None;
    let mut forwarded_for = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err("malformed header line");
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "upgrade" => upgrade = Some(value),
            "connection" => connection = Some(value),
            "sec-websocket-key" => key = Some(value),
            "sec-websocket-version" => ws_version = Some(value),
            "sec-websocket-protocol" => {
                offered = true;
                if protocol.is_none() {
                    protocol = value
                        .split(',')
                        .map(str::trim)
                        .find_map(|p| MQTT_PROTOCOLS.iter().find(|m| **m == p).copied());
                }
            }
            "x-forwarded-for" => {
                forwarded_for = value.rsplit(',').next().map(|v| v.trim().to_owned());
            }
            _ => {}
        }
    }
    if method != "GET" {
        return Err("only GET is served");
    }
    if upgrade.is_none() && key.is_none() {
        return Ok(Request::Get {
            target: target.to_owned(),
        });
    }
    if !upgrade.is_some_and(|u| has_token(u, "websocket")) {
        return Err("Upgrade is not websocket");
    }
    if !connection.is_some_and(|c| has_token(c, "upgrade")) {
        return Err("Connection does not say Upgrade");
    }
    if ws_version != Some("13") {
        return Err("Sec-WebSocket-Version is not 13");
    }
    let key = key.ok_or("no Sec-WebSocket-Key")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(key)
        .map_err(|_| "Sec-WebSocket-Key is not base64")?;
    if decoded.len() != 16 {
        return Err("Sec-WebSocket-Key is not 16 bytes");
    }
    if offered && protocol.is_none() {
        return Err("no MQTT subprotocol offered (mqtt, mqttv3.1 or mqttv3.1.1)");
    }
    Ok(Request::Upgrade {
        accept: accept(key),
        protocol,
        forwarded_for,
    })
}

/// An `X-Forwarded-For` entry as an address: an IP (v6 with or without brackets), or an IP
/// with a port as some proxies write it; port 0 when none is given.
pub fn forwarded_addr(entry: &str) -> Option<SocketAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 0));
    }
    if let Some(ip) = entry.strip_prefix('[').and_then(|e| e.strip_suffix(']')) {
        return ip.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 0));
    }
    entry.parse().ok()
}

/// `Sec-WebSocket-Accept` for a client's key.
pub fn accept(key: &str) -> String {
    let mut input = Vec::with_capacity(key.len() + ACCEPT_GUID.len());
    input.extend_from_slice(key.as_bytes());
    input.extend_from_slice(ACCEPT_GUID.as_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// The 101 answer to an upgrade.
pub fn switching(accept: &str, protocol: Option<&str>, out: &mut Vec<u8>) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
    );
    out.extend_from_slice(format!("Sec-WebSocket-Accept: {accept}\r\n").as_bytes());
    if let Some(p) = protocol {
        out.extend_from_slice(format!("Sec-WebSocket-Protocol: {p}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// A complete HTTP answer that closes the connection: status line, headers, body.
pub fn response(status: &str, content_type: &str, body: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
             Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade(extra: &str) -> String {
        format!(
            "GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    }

    #[test]
    fn accept_is_rfc_6455s_example() {
        assert_eq!(
            accept("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn the_first_mqtt_subprotocol_of_the_list_is_echoed() {
        for (header, want) in [
            ("", None),
            ("Sec-WebSocket-Protocol: mqtt\r\n", Some("mqtt")),
            (
                "Sec-WebSocket-Protocol: chat, mqttv3.1.1,mqtt\r\n",
                Some("mqttv3.1.1"),
            ),
            (
                "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: mqttv3.1\r\n",
                Some("mqttv3.1"),
            ),
        ] {
            let text = upgrade(header);
            let Parse::Done(
                Request::Upgrade {
                    protocol, accept, ..
                },
                used,
            ) = parse(text.as_bytes())
            else {
                panic!("{header}: {:?}", parse(text.as_bytes()));
            };
            assert_eq!(protocol, want);
            assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
            assert_eq!(used, text.len());
        }
        assert!(matches!(
            parse(upgrade("Sec-WebSocket-Protocol: chat\r\n").as_bytes()),
            Parse::Bad(_)
        ));
    }

    #[test]
    fn the_last_forwarded_for_entry_is_kept() {
        let forwarded = |extra: &str| match parse(upgrade(extra).as_bytes()) {
            Parse::Done(Request::Upgrade { forwarded_for, .. }, _) => forwarded_for,
            other => panic!("{other:?}"),
        };
        assert_eq!(forwarded(""), None);
        assert_eq!(
            forwarded("X-Forwarded-For: 203.0.113.9, 10.0.0.2\r\n").as_deref(),
            Some("10.0.0.2")
        );
        assert_eq!(
            forwarded("X-Forwarded-For: 1.1.1.1\r\nx-forwarded-for: 2001:db8::7\r\n").as_deref(),
            Some("2001:db8::7")
        );
        assert_eq!(
            forwarded_addr("10.0.0.2"),
            Some("10.0.0.2:0".parse().unwrap())
        );
        assert_eq!(
            forwarded_addr("[2001:db8::7]"),
            Some("[2001:db8::7]:0".parse().unwrap())
        );
        assert_eq!(
            forwarded_addr("10.0.0.2:4711"),
            Some("10.0.0.2:4711".parse().unwrap())
        );
        assert_eq!(
            forwarded_addr("[::1]:80"),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(forwarded_addr("unknown"), None);
        assert_eq!(forwarded_addr(""), None);
    }

    #[test]
    fn bad_requests_are_named() {
        let bad = |text: &str| match parse(text.as_bytes()) {
            Parse::Bad(r) => r,
            other => panic!("{text:?}: {other:?}"),
        };
        assert_eq!(bad("\x10\x0c\x00\x04MQTT"), "not an HTTP request");
        assert_eq!(parse(b"GET"), Parse::Incomplete);
        assert_eq!(bad("GARBAGE\x00"), "not an HTTP request");
        assert_eq!(bad("GET /\r\n\r\n"), "malformed request line");
        assert_eq!(bad("POST / HTTP/1.1\r\n\r\n"), "only GET is served");
        assert_eq!(
            bad(&upgrade("").replace("websocket", "h2c")),
            "Upgrade is not websocket"
        );
        assert_eq!(
            bad(&upgrade("").replace("Version: 13", "Version: 8")),
            "Sec-WebSocket-Version is not 13"
        );
        assert_eq!(
            bad(&upgrade("").replace("dGhlIHNhbXBsZSBub25jZQ==", "abc")),
            "Sec-WebSocket-Key is not base64"
        );
        assert_eq!(
            bad("GET / HTTP/1.1\r\nno colon\r\n\r\n"),
            "malformed header line"
        );
    }

    #[test]
    fn partial_heads_wait_and_plain_gets_are_files() {
        assert_eq!(parse(b"GE"), Parse::Incomplete);
        assert_eq!(
            parse(b"GET /index.html HTTP/1.1\r\nHost: x\r\n"),
            Parse::Incomplete
        );
        let text = "GET /index.html?x=1 HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(
            parse(text.as_bytes()),
            Parse::Done(
                Request::Get {
                    target: "/index.html?x=1".into()
                },
                text.len()
            )
        );
    }
}
