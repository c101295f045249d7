//! A bystander: one client that publishes QoS 1 messages to a topic it subscribes to, at a
//! fixed rate, and measures each round trip (intended send time to delivery back to it). Its
//! p99 while the broker is quiet and while a storm runs says what a storm costs the clients
//! that were already connected.
//!
//! It runs on its own thread with a blocking socket (TLS through rustls' `StreamOwned`), one
//! message at a time; a message is measured from its *intended* send time, so one held up by
//! the broker makes the following ones late too and they count that.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use midge_codec::{
    decode, encode, ByteStr, Connect, Packet, Properties, ProtocolVersion, PubResp, Publish, QoS,
    SubOptions, Subscribe,
};
use rustls::{ClientConnection, StreamOwned};

use crate::clock;
use crate::tls::ClientTls;

/// One measured round trip: intended send time (epoch ns) and latency (ns).
pub type Sample = (u64, u64);

/// A running bystander.
pub struct Bystander {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Vec<Sample>, String>>>,
}

trait Io: Read + Write + Send {}
impl<T: Read + Write + Send> Io for T {}

impl Bystander {
    /// Connects and subscribes (before returning, so the caller's quiet window starts with a
    /// ready client), then publishes `rate` messages per second until stopped.
    pub fn start(
        addr: SocketAddr,
        tls: Option<&ClientTls>,
        rate: f64,
        tag: &str,
    ) -> Result<Bystander, String> {
        let sock = TcpStream::connect(addr).map_err(|e| format!("bystander: {e}"))?;
        sock.set_nodelay(true).map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let mut io: Box<dyn Io> = match tls {
            None => Box::new(sock),
            Some(t) => {
                let conn = ClientConnection::new(t.config.clone(), t.server_name.clone())
                    .map_err(|e| format!("bystander TLS: {e}"))?;
                Box::new(StreamOwned::new(conn, sock))
            }
        };
        let v = ProtocolVersion::V311;
        let topic = format!("bystander/{tag}");
        let mut c = Client {
            rbuf: BytesMut::new(),
            version: v,
        };
        c.send(
            &mut io,
            &Packet::Connect(Connect {
                version: v,
                clean_start: true,
                keep_alive: 60,
                client_id: ByteStr::from(format!("bystander-{tag}").as_str()),
                will: None,
                username: None,
                password: None,
                properties: Properties::default(),
            }),
        )?;
        c.expect(&mut io, |p| matches!(p, Packet::ConnAck(a) if a.code == 0))?;
        c.send(
            &mut io,
            &Packet::Subscribe(Subscribe {
                packet_id: 1,
                filters: vec![(
                    ByteStr::from(topic.as_str()),
                    SubOptions {
                        qos: QoS::AtLeastOnce,
                        ..Default::default()
                    },
                )],
                properties: Properties::default(),
            }),
        )?;
        c.expect(&mut io, |p| matches!(p, Packet::SubAck(_)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("bystander".into())
            .spawn(move || c.run(io, &topic, rate, &stop2))
            .map_err(|e| e.to_string())?;
        Ok(Bystander {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops and returns every round trip measured.
    pub fn stop(mut self) -> Result<Vec<Sample>, String> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            _ => Err("bystander thread panicked".into()),
        }
    }
}

struct Client {
    rbuf: BytesMut,
    version: ProtocolVersion,
}

impl Client {
    fn send(&mut self, io: &mut Box<dyn Io>, p: &Packet) -> Result<(), String> {
        let mut b = BytesMut::new();
        encode(p, self.version, &mut b);
        io.write_all(&b)
            .and_then(|_| io.flush())
            .map_err(|e| format!("bystander write: {e}"))
    }

    fn next(&mut self, io: &mut Box<dyn Io>) -> Result<Packet, String> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(p) = decode(&mut self.rbuf, Some(self.version), 1 << 20)
                .map_err(|e| format!("bystander decode: {e:?}"))?
            {
                return Ok(p);
            }
            match io.read(&mut buf) {
                Ok(0) => return Err("bystander: the broker closed the connection".into()),
                Ok(n) => self.rbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("bystander read: {e}")),
            }
        }
    }

    fn expect(&mut self, io: &mut Box<dyn Io>, ok: impl Fn(&Packet) -> bool) -> Result<(), String> {
        let p = self.next(io)?;
        if ok(&p) {
            Ok(())
        } else {
            Err(format!("bystander: unexpected {p:?}"))
        }
    }

    fn run(
        mut self,
        mut io: Box<dyn Io>,
        topic: &str,
        rate: f64,
        stop: &AtomicBool,
    ) -> Result<Vec<Sample>, String> {
        let gap = (1e9 / rate.max(1.0)) as u64;
        let t0 = clock::now_ns();
        let mut samples = Vec::new();
        let mut k: u64 = 0;
        while !stop.load(Ordering::Relaxed) {
            let intended = t0 + k * gap;
            let now = clock::now_ns();
            if intended > now {
                std::thread::sleep(Duration::from_nanos(intended - now));
            }
            let pid = (k % 60_000 + 1) as u16;
            self.send(
                &mut io,
                &Packet::Publish(Publish {
                    qos: QoS::AtLeastOnce,
                    topic: ByteStr::from(topic),
                    packet_id: pid,
                    payload: Bytes::copy_from_slice(&k.to_be_bytes()),
                    ..Default::default()
                }),
            )?;
            let (mut acked, mut delivered) = (false, false);
            while !(acked && delivered) {
                match self.next(&mut io)? {
                    Packet::PubAck(a) if a.packet_id == pid => acked = true,
                    Packet::Publish(p) => {
                        if p.payload.as_ref() == k.to_be_bytes() {
                            samples.push((intended, clock::now_ns().saturating_sub(intended)));
                            delivered = true;
                        }
                        if p.qos == QoS::AtLeastOnce {
                            self.send(
                                &mut io,
                                &Packet::PubAck(PubResp {
                                    packet_id: p.packet_id,
                                    ..Default::default()
                                }),
                            )?;
                        }
                    }
                    _ => {}
                }
            }
            k += 1;
        }
        let _ = self.send(&mut io, &Packet::Disconnect(Default::default()));
        Ok(samples)
    }
}
