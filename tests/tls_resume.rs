//! TLS handshakes at scale: session resumption (a client that kept the session of its first
//! connection resumes it on the second, no certificate signed, by ticket on TLS 1.3 and by
//! session id or ticket on TLS 1.2; a certificate reload keeps sessions resumable), and a
//! burst of simultaneous handshakes, more than a shard processes in one loop turn, in which
//! every client still gets its CONNACK (the deferred ones are read on later turns). Passes
//! against mosquitto too (`MIDGE_TEST_BROKER=mosquitto`), except the midge-only reload check.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::tls::{strs, Certs};
use common::{is_midge, run, Broker, STEP};
use rustls::client::Resumption;
use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, HandshakeKind, RootCertStore, StreamOwned};

/// A client config trusting the test CA, limited to `version`, with its own session store.
fn client_config(
    certs: &Certs,
    version: &'static rustls::SupportedProtocolVersion,
) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(certs.path_buf("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = Resumption::in_memory_sessions(16);
    config
}

/// Connects over TLS, does CONNECT/CONNACK (which also reads the server's session tickets)
/// and returns how the handshake went.
fn connect_once(port: u16, config: &Arc<ClientConfig>, id: &str) -> HandshakeKind {
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(config.clone(), name).unwrap();
    let mut tls = StreamOwned::new(conn, sock);
    let mut connect = vec![0x10, 0, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 30];
    connect.extend((id.len() as u16).to_be_bytes());
    connect.extend(id.as_bytes());
    connect[1] = (connect.len() - 2) as u8;
    tls.write_all(&connect).unwrap();
    let mut connack = [0u8; 4];
    tls.read_exact(&mut connack).unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0], "CONNACK accepted");
    // DISCONNECT, then read to the end so the tickets sent after CONNACK are taken in.
    tls.write_all(&[0xe0, 0]).unwrap();
    let mut rest = Vec::new();
    let _ = tls.read_to_end(&mut rest);
    tls.conn.handshake_kind().expect("handshake done")
}

fn second_connection_resumes(version: &'static rustls::SupportedProtocolVersion) {
    let certs = Certs::generate();
    let mut lines = certs.server_lines();
    lines.push("tls_version tlsv1.2".into());
    let broker = Broker::start_with(&strs(&lines));
    let config = Arc::new(client_config(&certs, version));
    assert_eq!(
        connect_once(broker.port(), &config, "resume-a"),
        HandshakeKind::Full,
        "the first connection has nothing to resume"
    );
    assert_eq!(
        connect_once(broker.port(), &config, "resume-b"),
        HandshakeKind::Resumed,
        "the second connection resumes the first one's session"
    );
}

#[test]
fn tls13_second_connection_resumes_by_ticket() {
    second_connection_resumes(&rustls::version::TLS13);
}

#[test]
fn tls12_second_connection_resumes_by_session_id_or_ticket() {
    second_connection_resumes(&rustls::version::TLS12);
}

/// The subject of the certificate the server at `port` presents.
fn served_subject(certs: &Certs, port: u16) -> String {
    let script = format!(
        "openssl s_client -connect 127.0.0.1:{port} -CAfile {} </dev/null 2>/dev/null \
         | openssl x509 -noout -subject",
        certs.path("ca.pem")
    );
    run(Command::new("sh").args(["-c", &script]), STEP).stdout
}

#[test]
fn sessions_stay_resumable_across_a_certificate_reload() {
    if !is_midge() {
        println!("note: SIGHUP reload is midge's; skipped for mosquitto");
        return;
    }
    let certs = Certs::generate();
    certs.server_cert("reloaded", "reloaded-server");
    let live = |ext: &str| certs.dir().join(format!("live.{ext}"));
    std::fs::copy(certs.path_buf("server.pem"), live("pem")).unwrap();
    std::fs::copy(certs.path_buf("server.key"), live("key")).unwrap();
    certs.open_up();
    let lines = vec![
        format!("certfile {}", live("pem").display()),
        format!("keyfile {}", live("key").display()),
    ];
    let broker = Broker::start_with(&strs(&lines));
    let config = Arc::new(client_config(&certs, &rustls::version::TLS13));
    assert_eq!(
        connect_once(broker.port(), &config, "reload-a"),
        HandshakeKind::Full
    );
    std::fs::copy(certs.path_buf("reloaded.pem"), live("pem")).unwrap();
    std::fs::copy(certs.path_buf("reloaded.key"), live("key")).unwrap();
    let kill = run(
        Command::new("kill").args(["-HUP", &broker.pid().to_string()]),
        STEP,
    );
    assert!(kill.success(), "{kill:?}");
    assert!(
        common::eventually(STEP, || served_subject(&certs, broker.port())
            .contains("CN = reloaded-server")),
        "the reload did not happen; log:\n{}",
        broker.log()
    );
    // The ticket keys outlive the reload: the session from before it still resumes.
    assert_eq!(
        connect_once(broker.port(), &config, "reload-b"),
        HandshakeKind::Resumed
    );
}

#[test]
fn a_burst_of_simultaneous_handshakes_all_complete() {
    // 48 clients send their ClientHello at once: far more than the handshake steps a shard
    // takes per loop turn, so most are deferred to later turns and must not be forgotten
    // (a deferred socket that is not re-armed raises no new readiness event: its client would
    // wait for a CONNACK until the read timeout fails this test).
    let certs = Certs::generate();
    let broker = Broker::start_with(&strs(&certs.server_lines()));
    let config = Arc::new(client_config(&certs, &rustls::version::TLS13));
    let port = broker.port();
    let start = Arc::new(std::sync::Barrier::new(48));
    let clients: Vec<_> = (0..48)
        .map(|i| {
            let (config, start) = (config.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                connect_once(port, &config, &format!("burst-{i}"))
            })
        })
        .collect();
    for c in clients {
        c.join().expect("every client got its CONNACK");
    }
}
