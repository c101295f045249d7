#!/usr/bin/env python3
"""Soak (issue 11): mixed QoS traffic with persistent sessions, clients dropped at random and
the broker SIGKILLed and restarted with persistence on; checks that nothing acknowledged is
lost and that no QoS 2 message is delivered twice; samples the broker's RSS and fd count.

Clients (paho-mqtt, MQTT 3.1.1, clean session 0, automatic reconnect; paho's client with one
fix, see `Client`, checked at start by `check_client`):
- S subscribers, each subscribed to `soak/q0/#` (QoS 0), `soak/q1/#` (QoS 1), `soak/q2/#`
  (QoS 2). Each message's payload is `PUBLISHER:SEQ`; every arrival is recorded.
- P publishers, each publishing at RATE messages/s to `soak/qQ/PUBLISHER` with a QoS Q drawn
  at random. A QoS 1/2 message counts as acknowledged once paho reports it published (PUBACK /
  PUBCOMP received).
Chaos, at random intervals:
- a client's connection is dropped (socket shut down, no DISCONNECT: a crash as the broker
  sees it) while the client keeps its session state, as a device with persistent storage
  does; paho reconnects and resends what was in flight;
- a publisher is replaced by a new one (its in-memory state lost, as a killed process; its
  unacknowledged messages were never acknowledged, so nothing is expected of them);
- the broker is SIGKILLed and restarted on the same port and store (`persistence true`).
At the end, publishing stops, the subscribers get up to --drain seconds to catch up, then:
- lost: acknowledged QoS 1/2 messages a subscriber never received (must be 0);
- QoS 2 duplicates: a QoS 2 message received twice by one subscriber (must be 0);
- QoS 1 duplicates (allowed) and QoS 0 losses (allowed) are reported for information;
- RSS and fd samples (every --sample seconds) with, per broker lifetime, the RSS slope and the
  fd range: flat means no trend.
Writes summary.json and summary.md to --out (default results/soak-YYYYMMDD-HHMMSS); with
--trace (short runs), dup-trace.txt: the packets of the publisher and of every subscriber
around each QoS 2 duplicate.

    python3 loadgen/scripts/soak.py --minutes 30 --midge target/release/midge
"""
import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import paho.mqtt.client as mqtt

from mqttproc import fd_count, free_port, rss_kib


class Broker:
    """The broker under test: our own child, signalled only by its PID."""

    def __init__(self, args, workdir):
        self.port = free_port()
        self.workdir = workdir
        store = os.path.join(workdir, "store")
        os.makedirs(store, exist_ok=True)
        if args.broker == "midge":
            conf = (f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                    f"persistence {args.persistence}\npersistence_location {store}/\n"
                    "max_queued_messages 1000000\nlog_dest stdout\n")
            self.cmd = [os.path.abspath(args.midge), "-c", "broker.conf"]
        else:
            # `user root`: stay root to write the store in our private directory.
            conf = (f"listener {self.port} 127.0.0.1\nallow_anonymous true\nuser root\n"
                    f"persistence {args.persistence}\npersistence_location {store}/\n"
                    "autosave_interval 1\nmax_queued_messages 1000000\n"
                    "log_dest stdout\nlog_type all\n")
            self.cmd = ["stdbuf", "-oL", shutil.which("mosquitto") or "/usr/sbin/mosquitto",
                        "-c", "broker.conf"]
        with open(os.path.join(workdir, "broker.conf"), "w") as f:
            f.write(conf)
        self.log = open(os.path.join(workdir, "broker.log"), "ab")
        self.proc = None
        self.starts = 0

    def start(self):
        self.proc = subprocess.Popen(self.cmd, cwd=self.workdir, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.starts += 1
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"broker exited with {self.proc.returncode} at start {self.starts};"
                                 f" see {self.log.name}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("broker did not listen within 30 s")

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def alive(self):
        return self.proc.poll() is None


class Client(mqtt.Client):
    """paho-mqtt's client with its QoS 2 resumption fixed, so that the soak measures the
    broker and not this client bug.

    paho (2.2.0, as the 1.x releases before it) puts its in-flight messages "in a valid state"
    in `reconnect()` *before* it opens the socket, so a reconnection that fails (the broker is
    down: refused) and is retried does it twice. The first pass turns a QoS 2 message whose
    PUBREL was sent (waiting for PUBCOMP) into "resend PUBREL"; the second pass, seeing no
    "waiting for PUBCOMP", turns it into "publish": the client sends the PUBLISH again, DUP 0,
    with the id the broker already released. MQTT 3.1.1 section 4.3.3 forbids it ("MUST NOT
    re-send the PUBLISH once it has sent the corresponding PUBREL") and tells the receiver to
    take such a PUBLISH as a new publication, so every subscriber gets the message twice.
    This happened in the soak after a broker SIGKILL that fell between a publisher's PUBREL
    and the PUBCOMP (results/soak-20261205-qos2-dup/README.md). Here, a message that was owed
    a PUBREL stays so until the reconnection succeeds ([MQTT-4.4.0-1]); see `check_client`.
    """

    # QoS 2 messages, over all clients, whose PUBLISH stock paho would have re-sent after
    # their PUBREL (a duplicate at every subscriber if the broker had made the release durable
    # before it died): the summary reports it.
    kept_pubrel = 0
    _count_lock = threading.Lock()

    def _messages_reconnect_reset_out(self):
        with self._out_message_mutex:
            owed = [m for m in self._out_messages.values()
                    if m.qos == 2 and m.state == mqtt.mqtt_ms_resend_pubrel]
            super()._messages_reconnect_reset_out()
            changed = {m.mid for m in owed if m.state != mqtt.mqtt_ms_resend_pubrel}
            for m in owed:
                m.state = mqtt.mqtt_ms_resend_pubrel
            # Once per message, however many attempts fail.
            kept = self.__dict__.setdefault("_kept_mids", set())
            new = changed - kept
            kept |= new
        if new:
            with Client._count_lock:
                Client.kept_pubrel += len(new)


def check_client(client_class=None, timeout=10.0):
    """Checks the soak's publisher against the broker SIGKILL it meets: a scripted broker
    takes a QoS 2 PUBLISH, answers PUBREC, reads the PUBREL and dies before PUBCOMP; the next
    connection attempt is refused; then the broker is back with the session. The client must
    resume with PUBREL for that id, not the PUBLISH ([MQTT-4.4.0-1], MQTT 3.1.1 section
    4.3.3). Returns None if it does, else what it sent instead."""
    client_class = client_class or Client

    def read_packet(conn):
        head = conn.recv(1)
        if not head:
            raise ConnectionError("closed")
        n, shift = 0, 0
        while True:
            b = conn.recv(1)[0]
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        body = b""
        while len(body) < n:
            chunk = conn.recv(n - len(body))
            if not chunk:
                raise ConnectionError("closed")
            body += chunk
        return head[0], body

    def listen(port):
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", port))
        ls.listen(1)
        ls.settimeout(timeout)
        return ls

    port = free_port()
    ls = listen(port)
    failed = threading.Event()
    c = client_class(mqtt.CallbackAPIVersion.VERSION2, client_id="soak-check",
                     clean_session=False, protocol=mqtt.MQTTv311)
    c.reconnect_delay_set(min_delay=0.1, max_delay=0.2)
    c.on_connect_fail = lambda *a: failed.set()
    c.connect_async("127.0.0.1", port, keepalive=30)
    c.loop_start()
    try:
        conn, _ = ls.accept()
        conn.settimeout(timeout)
        assert read_packet(conn)[0] >> 4 == 1  # CONNECT
        conn.sendall(bytes([0x20, 2, 0, 0]))
        c.publish("soak/check", b"x", qos=2)
        kind, body = read_packet(conn)
        assert kind >> 4 == 3, kind  # PUBLISH
        pid = body[2 + int.from_bytes(body[:2], "big"):][:2]
        conn.sendall(bytes([0x50, 2]) + pid)  # PUBREC
        kind, body = read_packet(conn)
        assert (kind, body) == (0x62, pid), (kind, body)  # PUBREL
        # The broker dies before its PUBCOMP, and stays down for one connection attempt.
        conn.close()
        ls.close()
        if not failed.wait(timeout):
            raise SystemExit("check_client: the client did not try to reconnect")
        ls = listen(port)
        conn, _ = ls.accept()
        conn.settimeout(timeout)
        assert read_packet(conn)[0] >> 4 == 1  # CONNECT
        conn.sendall(bytes([0x20, 2, 1, 0]))  # session present
        kind, body = read_packet(conn)
        conn.close()
        if (kind, body[:2]) == (0x62, pid):
            return None
        pid = int.from_bytes(pid, "big")
        return f"packet type {kind >> 4} (flags {kind & 15:#x}) instead of PUBREL {pid}"
    finally:
        c.loop_stop()
        ls.close()


class Trace:
    """With --trace: every packet a client sends or receives, as paho logs it
    ("Sending PUBLISH (d1, q2, r0, m7), ...", "Received PUBREC (Mid: 7)"), with its time, so
    that the packets around a QoS 2 duplicate can be read afterwards."""

    def __init__(self, t0):
        self.t0 = t0
        self.lines = []  # (seconds since the start, line)

    def on_log(self, client, userdata, level, buf):
        if buf.startswith(("Sending", "Received", "Connection failed")):
            self.lines.append((round(time.time() - self.t0, 3), buf))

    def around(self, mids, times, window):
        """The lines about one of `mids` (or a CONNECT/CONNACK) within `window` s of `times`."""
        keys = [f"m{m})," for m in mids] + [f"(Mid: {m})" for m in mids]
        return [(t, x) for t, x in self.lines
                if any(abs(t - t1) <= window for t1 in times)
                and ("CONN" in x or "failed" in x or any(k in x for k in keys))]


def make_client(client_id, port, on_message=None, on_connect=None, trace=None):
    c = Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
               clean_session=False, protocol=mqtt.MQTTv311)
    if trace is not None:
        c.on_log = trace.on_log
    c.reconnect_delay_set(min_delay=0.1, max_delay=1)
    c.max_inflight_messages_set(20)
    if on_message:
        c.on_message = on_message
    if on_connect:
        c.on_connect = on_connect
    c.connect_async("127.0.0.1", port, keepalive=30)
    c.loop_start()
    return c


def drop_connection(c):
    """Shuts the client's socket down under it: the broker sees a connection lost without
    DISCONNECT; paho notices and reconnects with its session state."""
    s = c.socket()
    if s is not None:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class Subscriber:
    def __init__(self, name, port, trace=None):
        self.name = name
        self.lock = threading.Lock()
        self.got = {0: {}, 1: {}, 2: {}}  # qos topic class -> payload -> count
        self.ready = threading.Event()
        self.connects = 0
        self.sessions_lost = 0
        self.trace = trace
        # With --trace: QoS 2 payload -> [(seconds, packet id, DUP flag, connection number)].
        self.arrivals = {}
        self.client = make_client(name, port, self.on_message, trace=trace)
        self.client.on_connect = self.on_connect
        self.client.on_subscribe = lambda *a: self.ready.set()

    def on_connect(self, client, userdata, flags, reason_code, properties):
        # Subscribing again on every connect is harmless with a persistent session and covers
        # the first connect. A reconnect without session present means the broker lost the
        # session (with its queued and in-flight messages): counted, it tells a broker loss
        # from a client one.
        if not reason_code.is_failure:
            self.connects += 1
            if self.connects > 1 and not flags.session_present:
                self.sessions_lost += 1
            client.subscribe([("soak/q0/#", 0), ("soak/q1/#", 1), ("soak/q2/#", 2)])

    def on_message(self, client, userdata, msg):
        q = int(msg.topic.split("/")[1][1])
        p = msg.payload.decode()
        with self.lock:
            self.got[q][p] = self.got[q].get(p, 0) + 1
            if self.trace is not None and q == 2:
                t = round(time.time() - self.trace.t0, 3)
                self.arrivals.setdefault(p, []).append((t, msg.mid, int(msg.dup), self.connects))


class Publisher:
    def __init__(self, name, port, t0, trace=False):
        self.name = name
        self.port = port
        self.t0 = t0
        self.tracing = trace
        self.traces = {}  # generation -> Trace (with --trace)
        self.mid_of = {}  # QoS 2 payload -> (generation, packet id) (with --trace)
        self.published_at = {}  # payload -> seconds since the start (QoS 1/2)
        self.sent_by = {}  # payload -> client id (QoS 2: its home shard places a duplicate)
        self.gen = 0
        self.seq = 0
        self.client = None
        self.outstanding = []  # (info, qos, payload)
        # Reconnects without session present: the broker forgot the publisher's unreleased
        # QoS 2 ids, so a DUP retransmission is routed again (a QoS 2 duplicate's cause).
        self.sessions_lost = 0
        self.new_client()

    def new_client(self):
        if self.client is not None:
            self.client.loop_stop()
            try:
                self.client.socket() and self.client.socket().close()
            except OSError:
                pass
        self.gen += 1
        self.outstanding = []  # never acknowledged: nothing is expected of them
        connects = [0]

        def on_connect(client, userdata, flags, reason_code, properties):
            if not reason_code.is_failure:
                connects[0] += 1
                if connects[0] > 1 and not flags.session_present:
                    self.sessions_lost += 1

        trace = None
        if self.tracing:
            trace = self.traces[self.gen] = Trace(self.t0)
        self.client = make_client(f"{self.name}-g{self.gen}", self.port, on_connect=on_connect,
                                  trace=trace)

    def publish(self, qos):
        self.seq += 1
        payload = f"{self.name}:{self.seq}"
        info = self.client.publish(f"soak/q{qos}/{self.name}", payload, qos=qos)
        if qos > 0:
            self.published_at[payload] = round(time.time() - self.t0, 2)
        if qos == 2:
            self.sent_by[payload] = f"{self.name}-g{self.gen}"
            if self.tracing:
                self.mid_of[payload] = (self.gen, info.mid)
        if qos > 0:
            self.outstanding.append((info, qos, payload))
        return payload

    def collect_acked(self, acked):
        keep = []
        for info, qos, payload in self.outstanding:
            # `is_published()` raises for a message queued while disconnected (rc NO_CONN)
            # although paho sends it on reconnect; the flag itself is what PUBACK/PUBCOMP set.
            with info._condition:
                published = info._published
            if published:
                acked[qos].add(payload)
            else:
                keep.append((info, qos, payload))
        self.outstanding = keep


def slope_per_min(samples):
    """Least-squares slope of (t, value) in value units per minute."""
    if len(samples) < 3:
        return 0.0
    n = len(samples)
    mt = sum(t for t, _ in samples) / n
    mv = sum(v for _, v in samples) / n
    den = sum((t - mt) ** 2 for t, _ in samples)
    if den == 0:
        return 0.0
    return sum((t - mt) * (v - mv) for t, v in samples) / den * 60


def write_dup_trace(path, subs, pubs, events, when, window=3.0):
    """For each QoS 2 payload some subscriber got twice: the broker's kills and starts around
    it, the publisher's packets with its packet id, and each subscriber's arrivals of it (time,
    packet id, DUP, connection number) with the packets about those ids."""
    by_name = {p.name: p for p in pubs}
    dups = sorted({x for s in subs for x, n in s.got[2].items() if n > 1})
    out = []
    for x in dups:
        t = when.get(x) or 0.0
        out.append(f"=== {x} published at t={t}s")
        out += [f"  broker {e['event']} at t={e['t']}s" for e in events
                if abs(e["t"] - t) <= 2 * window]
        p = by_name[x.split(":")[0]]
        gen, mid = p.mid_of.get(x, (None, None))
        if gen is not None:
            out.append(f"  publisher {p.name}-g{gen}, packet id {mid}:")
            lines = p.traces[gen].around([mid], [t], window)
            out += [f"    {tl:9.3f} {line}" for tl, line in lines]
        for s in subs:
            arr = s.arrivals.get(x, [])
            out.append(f"  {s.name} got it {len(arr)}x: " + ", ".join(
                f"t={a[0]} m{a[1]} dup{a[2]} conn{a[3]}" for a in arr))
            if arr:
                mids = sorted({a[1] for a in arr})
                times = [t] + [a[0] for a in arr]
                out += [f"    {tl:9.3f} {line}" for tl, line in s.trace.around(mids, times, window)]
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--broker", choices=["midge", "mosquitto"], default="midge")
    ap.add_argument("--midge", default="target/release/midge")
    ap.add_argument("--persistence", choices=["true", "false"], default="true",
                    help="false: a control run, where a SIGKILL must show up as losses")
    ap.add_argument("--publishers", type=int, default=4)
    ap.add_argument("--subscribers", type=int, default=3)
    ap.add_argument("--rate", type=float, default=25.0, help="messages/s per publisher")
    ap.add_argument("--client-drop-every", type=float, default=2.0,
                    help="mean seconds between client connection drops")
    ap.add_argument("--publisher-replace-every", type=float, default=30.0,
                    help="mean seconds between publisher replacements")
    ap.add_argument("--broker-kill-every", type=float, default=45.0,
                    help="mean seconds between broker SIGKILLs (uniform in [0.3, 1.7] x this)")
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between RSS/fd samples")
    ap.add_argument("--drain", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--check-client", action="store_true",
                    help="only run `check_client` (the publisher resumes QoS 2 with PUBREL after "
                    "a failed reconnection) and exit 0 if it passes")
    ap.add_argument("--trace", action="store_true",
                    help="log every client's packets and write, for each QoS 2 duplicate, the "
                    "packets around it to dup-trace.txt (for short runs: kept in memory)")
    args = ap.parse_args()
    # A client that sends a PUBLISH again after its PUBREL makes QoS 2 duplicates of its own:
    # never soak with one (a paho upgrade could change what `Client` relies on).
    wrong = check_client()
    if args.check_client or wrong:
        print(f"check_client: {wrong or 'QoS 2 resumes with PUBREL after a failed reconnection'}")
        return 1 if wrong else 0
    Client.kept_pubrel = 0  # the check's own
    seed = args.seed if args.seed is not None else int(time.time())
    rng = random.Random(seed)
    out = args.out or time.strftime("results/soak-%Y%m%d-%H%M%S")
    os.makedirs(out, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="soak-")
    broker = Broker(args, workdir)
    broker.start()
    t_start = time.time()
    samples = []  # (t, start number, rss KiB, fds)
    events = []
    subs = [Subscriber(f"soak-sub-{i}", broker.port, Trace(t_start) if args.trace else None)
            for i in range(args.subscribers)]
    for s in subs:
        if not s.ready.wait(15):
            raise SystemExit(f"{s.name} did not subscribe within 15 s")
    pubs = [Publisher(f"p{i}", broker.port, t_start, args.trace) for i in range(args.publishers)]
    acked = {1: set(), 2: set()}
    published = {0: 0, 1: 0, 2: 0}
    end = t_start + args.minutes * 60
    next_pub = time.time()
    period = 1.0 / (args.rate * args.publishers)
    next_drop = time.time() + rng.expovariate(1 / args.client_drop_every)
    next_replace = time.time() + rng.expovariate(1 / args.publisher_replace_every)
    next_kill = time.time() + args.broker_kill_every * rng.uniform(0.3, 1.7)
    next_sample = time.time()
    counts = {"client_drops": 0, "publisher_replacements": 0, "broker_kills": 0}
    print(f"soak: {args.minutes} min, seed {seed}, broker {args.broker} on port {broker.port}, "
          f"store {workdir}/store, output {out}", flush=True)
    i = 0
    while time.time() < end:
        now = time.time()
        if now >= next_pub:
            p = pubs[i % len(pubs)]
            i += 1
            q = rng.choice((0, 1, 2))
            p.publish(q)
            published[q] += 1
            next_pub += period
            if next_pub < now - 1:  # do not burst to catch up after a stall
                next_pub = now
        if now >= next_drop:
            c = rng.choice(subs + pubs).client
            drop_connection(c)
            counts["client_drops"] += 1
            next_drop = now + rng.expovariate(1 / args.client_drop_every)
        if now >= next_replace:
            p = rng.choice(pubs)
            p.collect_acked(acked)
            p.new_client()
            counts["publisher_replacements"] += 1
            next_replace = now + rng.expovariate(1 / args.publisher_replace_every)
        if now >= next_kill:
            broker.kill9()
            counts["broker_kills"] += 1
            events.append({"t": round(now - t_start, 1), "event": "SIGKILL"})
            time.sleep(rng.uniform(0.1, 1.0))
            broker.start()
            events.append({"t": round(time.time() - t_start, 1), "event": f"start {broker.starts}"})
            print(f"  t={now - t_start:.0f}s broker killed and restarted (start {broker.starts})",
                  flush=True)
            next_kill = time.time() + args.broker_kill_every * rng.uniform(0.3, 1.7)
        if now >= next_sample:
            if not broker.alive():
                raise SystemExit(f"the broker died by itself (exit {broker.proc.returncode}); "
                                 f"see {broker.log.name}")
            pid = broker.proc.pid
            samples.append((round(now - t_start, 1), broker.starts, rss_kib(pid), fd_count(pid)))
            for p in pubs:
                p.collect_acked(acked)
            next_sample = now + args.sample
        time.sleep(max(0.0, min(next_pub, next_sample) - time.time()))

    # Drain: publishers keep their sessions (and paho resends what is in flight); subscribers
    # catch up. Stop once every acknowledged message reached every subscriber or --drain.
    print("publishing stopped; draining", flush=True)
    drain_end = time.time() + args.drain
    missing = None
    while time.time() < drain_end:
        for p in pubs:
            p.collect_acked(acked)
        missing = {}
        for s in subs:
            with s.lock:
                for q in (1, 2):
                    m = [x for x in acked[q] if x not in s.got[q]]
                    if m:
                        missing[(s.name, q)] = m
        pending = sum(len(p.outstanding) for p in pubs)
        if not missing and pending == 0:
            break
        time.sleep(1)
    pid = broker.proc.pid
    samples.append((round(time.time() - t_start, 1), broker.starts, rss_kib(pid), fd_count(pid)))
    alive = broker.alive()
    for c in [s.client for s in subs] + [p.client for p in pubs]:
        c.disconnect()
        c.loop_stop()
    broker.stop()

    when = {}
    sent_by = {}
    for p in pubs:
        when.update(p.published_at)
        sent_by.update(p.sent_by)
    # Each lost message with the second it was published (to place it among the events).
    lost = {f"{k[0]} qos{k[1]}": [f"{x} (t={when.get(x)}s)" for x in sorted(v)[:20]]
            for k, v in (missing or {}).items()}
    sessions_lost = {s.name: s.sessions_lost for s in subs}
    sessions_lost.update({p.name: p.sessions_lost for p in pubs})
    lost_count = sum(len(v) for v in (missing or {}).values())
    dup2 = {}
    dup1 = 0
    q0_received = []
    for s in subs:
        d = [p for p, n in s.got[2].items() if n > 1]
        if d:
            dup2[s.name] = [f"{x} (t={when.get(x)}s, by {sent_by.get(x)})" for x in sorted(d)[:20]]
        dup1 += sum(n - 1 for n in s.got[1].values() if n > 1)
        q0_received.append(len(s.got[0]))
    dup2_count = sum(sum(1 for n in s.got[2].values() if n > 1) for s in subs)
    # Across lifetimes too: state that survives restarts (the store, recovery) and leaks shows
    # as a trend over the whole run even when each lifetime is short.
    rss_all_slope = round(slope_per_min([(x[0], x[2]) for x in samples]), 1)
    segments = []
    for start_no in sorted({x[1] for x in samples}):
        seg = [x for x in samples if x[1] == start_no]
        # The first 30 s of a lifetime are warm-up (recovery, reconnection storm).
        settled = [x for x in seg if x[0] - seg[0][0] >= 30] or seg
        segments.append({
            "start": start_no, "from_s": seg[0][0], "to_s": seg[-1][0], "samples": len(seg),
            "rss_kib_min": min(x[2] for x in seg), "rss_kib_max": max(x[2] for x in seg),
            "rss_slope_kib_per_min": round(slope_per_min([(x[0], x[2]) for x in settled]), 1),
            "fds_min": min(x[3] for x in seg), "fds_max": max(x[3] for x in seg)})
    summary = {
        "command": sys.argv, "seed": seed, "broker": args.broker, "minutes": args.minutes,
        "publishers": args.publishers, "subscribers": args.subscribers, "rate": args.rate,
        "published": published, "acknowledged": {q: len(v) for q, v in acked.items()},
        "chaos": counts, "broker_alive_at_end": alive,
        "lost_acknowledged": lost_count, "lost_examples": lost,
        "qos2_duplicates": dup2_count, "qos2_duplicate_examples": dup2,
        "qos1_duplicates": dup1, "subscriber_sessions_lost": sessions_lost,
        "paho_pubrel_resumptions_fixed": Client.kept_pubrel,
        "broker_workdir": workdir, "qos0_received_per_subscriber": q0_received,
        "rss_slope_kib_per_min_whole_run": rss_all_slope, "segments": segments, "samples": samples, "events": events,
    }
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    if args.trace and dup2_count:
        write_dup_trace(os.path.join(out, "dup-trace.txt"), subs, pubs, events, when)
    ok = lost_count == 0 and dup2_count == 0 and alive
    md = [f"# Soak ({time.strftime('%Y-%m-%d %H:%M')}): {'PASS' if ok else 'FAIL'}", "",
          "```", " ".join(["python3"] + sys.argv) + f"   # seed {seed}", "```", "",
          f"{args.minutes} min, broker {args.broker}, {args.publishers} publishers x "
          f"{args.rate}/s (QoS 0/1/2 at random), {args.subscribers} persistent subscribers.", "",
          f"- published: QoS 0 {published[0]}, QoS 1 {published[1]}, QoS 2 {published[2]}; "
          f"acknowledged: QoS 1 {len(acked[1])}, QoS 2 {len(acked[2])}",
          f"- chaos: {counts['client_drops']} client connection drops, "
          f"{counts['publisher_replacements']} publisher replacements, "
          f"{counts['broker_kills']} broker SIGKILL + restart",
          f"- **acknowledged QoS 1/2 messages lost: {lost_count}** {lost or ''}",
          f"- **QoS 2 duplicates: {dup2_count}** {dup2 or ''}",
          f"- QoS 1 duplicates (allowed): {dup1}; QoS 0 received per subscriber: {q0_received}",
          f"- QoS 2 flows resumed with PUBREL where stock paho would re-send the PUBLISH "
          f"(a duplicate at every subscriber; see `Client`): {Client.kept_pubrel}",
          f"- subscriber and publisher reconnects that found no session (broker lost it): {sessions_lost}",
          f"- broker alive at the end: {alive}; its log and store: {workdir}",
          f"- RSS slope over the whole run (all lifetimes): {rss_all_slope} KiB/min", "",
          "| lifetime | from s | to s | samples | RSS min-max MiB | RSS slope KiB/min (after 30 s) "
          "| fds min-max |", "|--:|--:|--:|--:|--:|--:|--:|"]
    for s in segments:
        md.append(f"| {s['start']} | {s['from_s']} | {s['to_s']} | {s['samples']} | "
                  f"{s['rss_kib_min'] / 1024:.1f}-{s['rss_kib_max'] / 1024:.1f} | "
                  f"{s['rss_slope_kib_per_min']} | {s['fds_min']}-{s['fds_max']} |")
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md[6:14]), flush=True)
    print(f"wrote {out}/summary.json and summary.md; broker log {broker.log.name}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
