//! One storm pass: a single mio loop that starts connections on schedule and walks each one
//! through TCP connect, TLS handshake (inside the stream), CONNECT/CONNACK, SUBSCRIBE/SUBACK
//! and DISCONNECT.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use midge_codec::{
    decode, encode, ByteStr, Connect, Disconnect, Packet, Properties, ProtocolVersion, QoS,
    SubOptions, Subscribe,
};
use mio::{Events, Interest, Poll, Token};
use serde::{Deserialize, Serialize};

use crate::clock;
use crate::stats::LatencyHistogram;
use crate::tls::stream::Stream;
use crate::tls::{ClientTls, TlsInfo};

/// What one pass does.
#[derive(Debug, Clone)]
pub struct StormConfig {
    pub clients: usize,
    /// Intended connects per second; 0: as fast as `concurrency` allows.
    pub rate: f64,
    /// Connections between their start and their SUBACK at once (the listen backlog and the
    /// client's file descriptors are finite).
    pub concurrency: usize,
    pub version: ProtocolVersion,
    pub tls: Option<ClientTls>,
    /// Unique per pass: client ids and topics.
    pub tag: String,
    /// The whole pass stops after this, counting what has not finished as failed.
    pub timeout: Duration,
}

/// What one pass measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PassResult {
    pub attempted: u64,
    /// CONNACK accepted.
    pub connected: u64,
    /// Through SUBACK and DISCONNECT.
    pub completed: u64,
    pub failed: u64,
    /// TLS handshakes that resumed a session.
    pub resumed: u64,
    /// From the first intended start to the last connection's end.
    pub elapsed_s: f64,
    /// Completed connections per second of `elapsed_s`.
    pub connects_per_s: f64,
    /// CONNACK time minus intended start, HdrHistogram (base64).
    #[serde(skip)]
    pub connack: LatencyHistogram,
    pub connack_p50_us: f64,
    pub connack_p99_us: f64,
    pub connack_max_us: f64,
    pub errors: Vec<String>,
    pub tls: Option<TlsInfo>,
    /// Wall-clock (epoch ns) of the pass's start and end, for the bystander's windows.
    pub start_ns: u64,
    pub end_ns: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    AwaitConnAck,
    AwaitSubAck,
}

struct Conn {
    stream: Stream,
    state: State,
    intended_ns: u64,
    rbuf: BytesMut,
    wbuf: BytesMut,
}

/// Reading more than this from a broker in one connection's life is an error: the storm
/// expects a CONNACK and a SUBACK.
const MAX_READ: usize = 64 * 1024;

/// Runs one pass against `addr`.
pub fn run_pass(addr: SocketAddr, cfg: &StormConfig) -> Result<PassResult, String> {
    let mut poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    let mut events = Events::with_capacity(1024);
    let mut conns: Vec<Option<Conn>> = (0..cfg.clients).map(|_| None).collect();
    let mut r = PassResult {
        attempted: cfg.clients as u64,
        ..Default::default()
    };
    let gap_ns = if cfg.rate > 0.0 { 1e9 / cfg.rate } else { 0.0 };
    let t0 = clock::now_ns();
    let deadline = t0 + cfg.timeout.as_nanos() as u64;
    let intended = |i: usize| t0 + (i as f64 * gap_ns) as u64;
    let (mut next, mut open, mut done) = (0usize, 0usize, 0usize);
    let mut scratch = vec![0u8; 16 * 1024];
    r.start_ns = t0;
    while done < cfg.clients {
        let now = clock::now_ns();
        if now >= deadline {
            break;
        }
        while next < cfg.clients
            && open < cfg.concurrency
            && (gap_ns == 0.0 || intended(next) <= now)
        {
            let start = if gap_ns == 0.0 { now } else { intended(next) };
            match Stream::connect(addr, cfg.tls.as_ref()) {
                Ok(mut stream) => {
                    let reg = poll.registry().register(
                        &mut stream,
                        Token(next),
                        Interest::READABLE | Interest::WRITABLE,
                    );
                    if let Err(e) = reg {
                        note(&mut r, format!("register: {e}"));
                        done += 1;
                    } else {
                        conns[next] = Some(Conn {
                            stream,
                            state: State::Connecting,
                            intended_ns: start,
                            rbuf: BytesMut::new(),
                            wbuf: BytesMut::new(),
                        });
                        open += 1;
                    }
                }
                Err(e) => {
                    note(&mut r, format!("connect: {e}"));
                    done += 1;
                }
            }
            next += 1;
        }
        let wait_ns = if next < cfg.clients && open < cfg.concurrency && gap_ns > 0.0 {
            intended(next).saturating_sub(now).min(50_000_000)
        } else {
            50_000_000
        };
        poll.poll(&mut events, Some(Duration::from_nanos(wait_ns)))
            .or_else(|e| {
                if e.kind() == io::ErrorKind::Interrupted {
                    Ok(())
                } else {
                    Err(format!("poll: {e}"))
                }
            })?;
        for ev in events.iter() {
            let i = ev.token().0;
            let Some(c) = conns[i].as_mut() else { continue };
            let outcome = step(c, cfg, i, &mut scratch, &mut r);
            match outcome {
                Ok(false) => {}
                Ok(true) | Err(_) => {
                    if let Err(e) = outcome {
                        note(&mut r, e);
                    }
                    if let Some(mut c) = conns[i].take() {
                        let _ = poll.registry().deregister(&mut c.stream);
                    }
                    open -= 1;
                    done += 1;
                }
            }
        }
    }
    // What has not finished by the deadline failed.
    for c in conns.iter_mut() {
        if c.take().is_some() {
            r.failed += 1;
        }
    }
    r.failed += (cfg.clients - next) as u64;
    r.end_ns = clock::now_ns();
    r.elapsed_s = (r.end_ns - t0) as f64 / 1e9;
    r.connects_per_s = if r.elapsed_s > 0.0 {
        r.completed as f64 / r.elapsed_s
    } else {
        0.0
    };
    let p = r.connack.percentiles();
    (r.connack_p50_us, r.connack_p99_us, r.connack_max_us) = (p.p50_us, p.p99_us, p.max_us);
    Ok(r)
}

/// Counts a failure and keeps its reason (the first few).
fn note(r: &mut PassResult, why: String) {
    r.failed += 1;
    if r.errors.len() < 5 {
        r.errors.push(why);
    }
}

/// Moves connection `i` on after a readiness event; `Ok(true)` once it is finished.
fn step(
    c: &mut Conn,
    cfg: &StormConfig,
    i: usize,
    scratch: &mut [u8],
    r: &mut PassResult,
) -> Result<bool, String> {
    if c.state == State::Connecting {
        if let Some(e) = c.stream.take_error().map_err(|e| e.to_string())? {
            return Err(format!("connect: {e}"));
        }
        match c.stream.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
            Err(e) => return Err(format!("connect: {e}")),
        }
        let _ = c.stream.set_nodelay(true);
        let id = format!("storm-{}-{i}", cfg.tag);
        let connect = Packet::Connect(Connect {
            version: cfg.version,
            clean_start: true,
            keep_alive: 60,
            client_id: ByteStr::from(id.as_str()),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
        });
        encode(&connect, cfg.version, &mut c.wbuf);
        c.state = State::AwaitConnAck;
    }
    // Read whatever is there (this also drives the TLS handshake).
    loop {
        match c.stream.read(scratch) {
            Ok(0) => return Err(format!("{:?}: connection closed by the broker", c.state)),
            Ok(n) => {
                if c.rbuf.len() + n > MAX_READ {
                    return Err("the broker sent more than a CONNACK and a SUBACK".into());
                }
                c.rbuf.extend_from_slice(&scratch[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    while let Some(p) = decode(&mut c.rbuf, Some(cfg.version), MAX_READ as u32)
        .map_err(|e| format!("undecodable packet: {e:?}"))?
    {
        match (c.state, p) {
            (State::AwaitConnAck, Packet::ConnAck(a)) => {
                if a.code != 0 {
                    return Err(format!("CONNACK refused with code {:#04x}", a.code));
                }
                r.connected += 1;
                r.connack
                    .record(clock::now_ns().saturating_sub(c.intended_ns));
                let topic = format!("storm/{}/{i}", cfg.tag);
                let sub = Packet::Subscribe(Subscribe {
                    packet_id: 1,
                    filters: vec![(
                        ByteStr::from(topic.as_str()),
                        SubOptions {
                            qos: QoS::AtMostOnce,
                            ..Default::default()
                        },
                    )],
                    properties: Properties::default(),
                });
                encode(&sub, cfg.version, &mut c.wbuf);
                c.state = State::AwaitSubAck;
            }
            (State::AwaitSubAck, Packet::SubAck(a)) => {
                if let Some(bad) = a.codes.iter().find(|&&code| code >= 0x80) {
                    return Err(format!("SUBACK refused with code {bad:#04x}"));
                }
                encode(
                    &Packet::Disconnect(Disconnect::default()),
                    cfg.version,
                    &mut c.wbuf,
                );
                write_out(c)?;
                r.completed += 1;
                if c.stream.resumed() == Some(true) {
                    r.resumed += 1;
                }
                if r.tls.is_none() {
                    let cert = cfg
                        .tls
                        .as_ref()
                        .is_some_and(|t| t.config.client_auth_cert_resolver.has_certs());
                    r.tls = c.stream.tls_info(cert);
                }
                return Ok(true);
            }
            (state, p) => return Err(format!("{state:?}: unexpected {}", p.name())),
        }
    }
    write_out(c)?;
    Ok(false)
}

/// Writes the connection's buffer (and TLS records) as far as the socket takes them.
fn write_out(c: &mut Conn) -> Result<(), String> {
    while !c.wbuf.is_empty() {
        match c.stream.write(&c.wbuf) {
            Ok(0) => return Err("write returned 0".into()),
            Ok(n) => {
                let _ = c.wbuf.split_to(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("write: {e}")),
        }
    }
    c.stream.flush().map_err(|e| format!("write: {e}"))
}
