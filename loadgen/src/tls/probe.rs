//! One blocking TLS connection before a run: it proves the broker's certificate verifies and
//! the broker accepts loadgen's (client certificate refusals arrive as an alert after the
//! client thinks the TLS 1.3 handshake is done, so it goes as far as CONNACK), and it returns
//! what was negotiated for the record.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use rustls::{ClientConnection, StreamOwned};

use super::{ClientTls, TlsInfo};

/// Connects to `addr` over TLS, sends an MQTT 3.1.1 CONNECT and waits for a CONNACK (any
/// return code: the probe is about TLS, not about being let in).
pub fn probe(
    addr: SocketAddr,
    tls: &ClientTls,
    client_certificate: bool,
) -> Result<TlsInfo, String> {
    let limit = Duration::from_secs(5);
    let sock = TcpStream::connect_timeout(&addr, limit).map_err(|e| format!("{addr}: {e}"))?;
    let _ = sock.set_read_timeout(Some(limit));
    let _ = sock.set_write_timeout(Some(limit));
    let conn = ClientConnection::new(tls.config.clone(), tls.server_name.clone())
        .map_err(|e| format!("TLS: {e}"))?;
    let mut s = StreamOwned::new(conn, sock);
    let id = format!("loadgen-tls-probe-{}", std::process::id());
    let mut connect = vec![0x10, 0, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 10];
    connect.extend((id.len() as u16).to_be_bytes());
    connect.extend(id.as_bytes());
    connect[1] = (connect.len() - 2) as u8;
    let failed = |e: std::io::Error| format!("TLS connection to {addr} failed: {e}");
    s.write_all(&connect).map_err(failed)?;
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).map_err(failed)?;
    if connack[0] != 0x20 {
        return Err(format!(
            "TLS connection to {addr}: expected CONNACK, got packet type {:#x}",
            connack[0] >> 4
        ));
    }
    let info = TlsInfo::of(&s.conn, client_certificate);
    let _ = s.write_all(&[0xe0, 0]);
    Ok(info)
}
