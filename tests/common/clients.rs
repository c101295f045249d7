//! Real MQTT clients driven from tests: mosquitto_pub/mosquitto_sub, paho-mqtt (Python scripts
//! in tests/py/), and rumqttc. Each call is bounded in time.

use std::process::Command;
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use rumqttc::{Client, ConnAck, Event, MqttOptions, Packet as RPacket, QoS};
use serde_json::Value;

use super::{run, Finished, Spawned, STEP};

/// A message as seen by a subscriber client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Msg {
    pub topic: String,
    pub payload: String,
    pub qos: u8,
    pub retain: bool,
}

// ---------------------------------------------------------------- mosquitto_pub / mosquitto_sub

/// Runs `mosquitto_pub -h 127.0.0.1 -p PORT ARGS...`, bounded to 10 s; panics on failure.
pub fn mosquitto_pub(port: u16, args: &[&str]) -> Finished {
    let out = run(
        Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args),
        Duration::from_secs(10),
    );
    assert!(
        out.success(),
        "mosquitto_pub {args:?} failed: {out:?} (is mosquitto-clients installed?)"
    );
    out
}

/// A running `mosquitto_sub`, started with `-d` (to see when the SUBACK arrived) and a
/// line format that carries QoS and the retain flag.
pub struct MosqSub {
    proc: Spawned,
    /// Messages seen while waiting for the SUBACK (a resumed session may deliver first).
    early: Vec<Msg>,
}

/// The `-F` format; `=MSG` marks message lines among `-d` debug lines.
const SUB_FORMAT: &str = "=MSG %q %r %t %p";

impl MosqSub {
    /// Starts `mosquitto_sub` with ARGS (add `-t`, `-q`, `-c`, `-i`, `-V`, ...) and waits for
    /// its SUBACK. `-W` is always set so the process ends by itself.
    pub fn start(port: u16, args: &[&str]) -> MosqSub {
        let mut sub = MosqSub::spawn(port, args);
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match sub.proc.next_line(left) {
                Some(l) if l.starts_with("Subscribed (mid") => return sub,
                Some(l) if l.starts_with("=MSG ") => sub.early.push(parse_sub_line(&l)),
                Some(_) => {}
                None => panic!(
                    "mosquitto_sub did not get a SUBACK: {}",
                    sub.proc.describe()
                ),
            }
        }
    }

    /// Starts `mosquitto_sub` without waiting for anything.
    pub fn spawn(port: u16, args: &[&str]) -> MosqSub {
        // mosquitto_sub prints its debug lines with stdio and does not flush them: make stdout
        // line buffered so the "Subscribed" line is seen while it runs.
        let mut cmd = super::line_buffered("mosquitto_sub");
        cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-d"])
            .args(["-F", SUB_FORMAT]);
        if !args.contains(&"-W") {
            cmd.args(["-W", "20"]);
        }
        cmd.args(args);
        MosqSub {
            proc: Spawned::spawn(&mut cmd),
            early: Vec::new(),
        }
    }

    /// Collects messages until `n` have arrived or `limit` passes.
    pub fn messages(&mut self, n: usize, limit: Duration) -> Vec<Msg> {
        let deadline = Instant::now() + limit;
        let mut out: Vec<Msg> = self.early.drain(..).collect();
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.proc.wait_line(left, |l| l.starts_with("=MSG ")) {
                Some(l) => out.push(parse_sub_line(&l)),
                None => break,
            }
        }
        out
    }

    /// Kills the process (SIGKILL): its TCP connection drops without DISCONNECT.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    pub fn describe(&self) -> String {
        self.proc.describe()
    }
}

fn parse_sub_line(l: &str) -> Msg {
    // "=MSG <qos> <retain> <topic> <payload...>"
    let mut it = l.splitn(5, ' ');
    it.next();
    let qos = it.next().unwrap().parse().expect("qos");
    let retain = it.next().unwrap() == "1";
    let topic = it.next().unwrap().to_string();
    let payload = it.next().unwrap_or("").to_string();
    Msg {
        topic,
        payload,
        qos,
        retain,
    }
}

// ---------------------------------------------------------------- paho-mqtt (Python)

/// Path of a script in tests/py/.
pub fn py_script(name: &str) -> String {
    format!("{}/tests/py/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A running paho-mqtt script that prints one JSON object per line.
pub struct Paho {
    proc: Spawned,
}

impl Paho {
    /// Runs `python3 tests/py/SCRIPT --port PORT ARGS...`.
    pub fn spawn(script: &str, port: u16, args: &[&str]) -> Paho {
        let mut cmd = Command::new("python3");
        cmd.arg(py_script(script))
            .args(["--port", &port.to_string()])
            .args(args);
        Paho {
            proc: Spawned::spawn(&mut cmd),
        }
    }

    /// The next JSON event whose "event" field is `event` (None on timeout / exit).
    pub fn wait_event(&mut self, event: &str, limit: Duration) -> Option<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.proc.next_line(left)?;
            let v: Value = match serde_json::from_str(&line) {
                Ok(v) => v,
                Err(_) => continue,
            };
            if v["event"] == event {
                return Some(v);
            }
            if v["event"] == "error" {
                panic!("paho script error: {v}\n{}", self.describe());
            }
        }
    }

    /// Like [`Paho::wait_event`] but panics on timeout.
    pub fn expect_event(&mut self, event: &str) -> Value {
        match self.wait_event(event, STEP * 2) {
            Some(v) => v,
            None => {
                let err = self.proc.stderr_text(Duration::from_millis(200));
                panic!(
                    "paho: no {event:?} event; {}\nstderr: {err} (is paho-mqtt 2.x installed?)",
                    self.describe()
                )
            }
        }
    }

    /// Collects up to `n` "message" events within `limit`.
    pub fn messages(&mut self, n: usize, limit: Duration) -> Vec<Msg> {
        let deadline = Instant::now() + limit;
        let mut out = Vec::new();
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.wait_event("message", left) {
                Some(v) => out.push(Msg {
                    topic: v["topic"].as_str().unwrap().into(),
                    payload: v["payload"].as_str().unwrap().into(),
                    qos: v["qos"].as_u64().unwrap() as u8,
                    retain: v["retain"].as_bool().unwrap(),
                }),
                None => break,
            }
        }
        out
    }

    /// Waits for the script to exit; panics unless it exits 0 within `limit`.
    pub fn finish(mut self, limit: Duration) {
        match self.proc.wait(limit) {
            Some(s) if s.success() => {}
            other => {
                let err = self.proc.stderr_text(Duration::from_millis(200));
                panic!(
                    "paho script ended with {other:?}; {}\nstderr: {err}",
                    self.describe()
                )
            }
        }
    }

    pub fn describe(&self) -> String {
        self.proc.describe()
    }
}

/// Runs tests/py/pub.py to completion (it waits for the QoS flow of each message).
pub fn paho_pub(port: u16, args: &[&str]) {
    let out = run(
        Command::new("python3")
            .arg(py_script("pub.py"))
            .args(["--port", &port.to_string()])
            .args(args),
        Duration::from_secs(15),
    );
    assert!(
        out.success(),
        "pub.py {args:?} failed: {out:?} (is paho-mqtt 2.x installed?)"
    );
}

// ---------------------------------------------------------------- rumqttc

pub fn qos(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        _ => panic!("qos {q}"),
    }
}

/// A rumqttc sync client whose connection is driven by a thread that forwards events.
pub struct Rumq {
    pub client: Client,
    events: Receiver<Result<Event, String>>,
}

impl Rumq {
    /// Connects and waits for a successful CONNACK.
    pub fn connect(port: u16, id: &str, clean: bool) -> (Rumq, ConnAck) {
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_clean_session(clean);
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut connection) = Client::new(opts, 100);
        let (tx, events) = mpsc::channel();
        thread::spawn(move || {
            for ev in connection.iter() {
                let stop = ev.is_err();
                if tx.send(ev.map_err(|e| e.to_string())).is_err() || stop {
                    // Stop on the first error: the iterator would otherwise reconnect forever.
                    break;
                }
            }
        });
        let mut r = Rumq { client, events };
        let ack = match r.wait(STEP, |p| matches!(p, RPacket::ConnAck(_))) {
            Some(RPacket::ConnAck(a)) => a,
            other => panic!("rumqttc: no CONNACK: {other:?}"),
        };
        (r, ack)
    }

    /// Waits for an incoming packet matching `pred`.
    pub fn wait(&mut self, limit: Duration, pred: impl Fn(&RPacket) -> bool) -> Option<RPacket> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Ok(Event::Incoming(p))) if pred(&p) => return Some(p),
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => panic!("rumqttc connection error: {e}"),
                Err(_) => return None,
            }
        }
    }

    /// SUBSCRIBE and wait for the SUBACK.
    pub fn subscribe(&mut self, filter: &str, q: u8) {
        self.client
            .subscribe(filter, qos(q))
            .expect("rumqttc subscribe");
        if self
            .wait(STEP, |p| matches!(p, RPacket::SubAck(_)))
            .is_none()
        {
            panic!("rumqttc: no SUBACK for {filter}");
        }
    }

    /// Publishes and, for QoS 1/2, waits for the PUBACK/PUBCOMP.
    pub fn publish(&mut self, topic: &str, payload: &str, q: u8, retain: bool) {
        self.client
            .publish(topic, qos(q), retain, payload.as_bytes().to_vec())
            .expect("rumqttc publish");
        let done = match q {
            0 => return,
            1 => self.wait(STEP, |p| matches!(p, RPacket::PubAck(_))),
            _ => self.wait(STEP, |p| matches!(p, RPacket::PubComp(_))),
        };
        assert!(done.is_some(), "rumqttc: QoS {q} publish not acknowledged");
    }

    /// Publishes at QoS 1 and returns whether the PUBACK came within `limit`; false, without
    /// a panic, when the connection failed (for tests that kill the broker meanwhile).
    pub fn try_publish_qos1(&mut self, topic: &str, payload: &str, limit: Duration) -> bool {
        if self
            .client
            .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
            .is_err()
        {
            return false;
        }
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Ok(Event::Incoming(RPacket::PubAck(_)))) => return true,
                Ok(Ok(_)) => continue,
                Ok(Err(_)) | Err(_) => return false,
            }
        }
    }

    /// Collects up to `n` messages within `limit`.
    pub fn messages(&mut self, n: usize, limit: Duration) -> Vec<Msg> {
        let deadline = Instant::now() + limit;
        let mut out = Vec::new();
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.wait(left, |p| matches!(p, RPacket::Publish(_))) {
                Some(RPacket::Publish(p)) => out.push(Msg {
                    topic: p.topic.clone(),
                    payload: String::from_utf8_lossy(&p.payload).into_owned(),
                    qos: p.qos as u8,
                    retain: p.retain,
                }),
                _ => break,
            }
        }
        out
    }

    /// Sends DISCONNECT.
    pub fn disconnect(self) {
        let _ = self.client.disconnect();
        // Give the event loop a moment to write it.
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            match self.events.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect))) | Ok(Err(_)) | Err(_) => {
                    break
                }
                _ => {}
            }
        }
    }
}
