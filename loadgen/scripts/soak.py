#!/usr/bin/env python3
"""Soak (issue 11): mixed QoS traffic with persistent sessions, clients dropped at random and
the broker SIGKILLed and restarted with persistence on; checks that nothing acknowledged is
lost and that no QoS 2 message is delivered twice; samples the broker's RSS and fd count.

Clients (paho-mqtt, MQTT 3.1.1, clean session 0, automatic reconnect):
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
Writes summary.json and summary.md to --out (default results/soak-YYYYMMDD-HHMMSS).

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


def make_client(client_id, port, on_message=None, on_connect=None):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                    clean_session=False, protocol=mqtt.MQTTv311)
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
    def __init__(self, name, port):
        self.name = name
        self.lock = threading.Lock()
        self.got = {0: {}, 1: {}, 2: {}}  # qos topic class -> payload -> count
        self.ready = threading.Event()
        self.connects = 0
        self.sessions_lost = 0
        self.client = make_client(name, port, self.on_message)
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


class Publisher:
    def __init__(self, name, port, t0):
        self.name = name
        self.port = port
        self.t0 = t0
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

        self.client = make_client(f"{self.name}-g{self.gen}", self.port, on_connect=on_connect)

    def publish(self, qos):
        self.seq += 1
        payload = f"{self.name}:{self.seq}"
        info = self.client.publish(f"soak/q{qos}/{self.name}", payload, qos=qos)
        if qos > 0:
            self.published_at[payload] = round(time.time() - self.t0, 2)
        if qos == 2:
            self.sent_by[payload] = f"{self.name}-g{self.gen}"
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
    args = ap.parse_args()
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
    subs = [Subscriber(f"soak-sub-{i}", broker.port) for i in range(args.subscribers)]
    for s in subs:
        if not s.ready.wait(15):
            raise SystemExit(f"{s.name} did not subscribe within 15 s")
    pubs = [Publisher(f"p{i}", broker.port, t_start) for i in range(args.publishers)]
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
        "broker_workdir": workdir, "qos0_received_per_subscriber": q0_received,
        "rss_slope_kib_per_min_whole_run": rss_all_slope, "segments": segments, "samples": samples, "events": events,
    }
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
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
    print("\n".join(md[6:13]), flush=True)
    print(f"wrote {out}/summary.json and summary.md; broker log {broker.log.name}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
