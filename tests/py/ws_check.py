#!/usr/bin/env python3
"""paho-mqtt 2.x over WebSocket (transport="websockets") for midge's integration tests.

Runs one scenario against a WebSocket listener (ws, or wss with --cafile) and prints one JSON
object with what it saw; the Rust test asserts on it:
  qos       a subscriber (QoS 2) gets QoS 0, 1, 2 messages and a 100 kB one, each at its QoS
  retained  a retained message reaches a subscriber that comes later, flagged retained
  v5        MQTT 5 properties (user property, content type, response topic, correlation
            data, message expiry) arrive as sent
  will      a client with a will is killed (SIGKILL: no DISCONNECT); its will arrives
Every wait is bounded (--timeout).
"""
import argparse
import json
import os
import ssl
import subprocess
import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def client(a, v5=False, cid=""):
    proto = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=proto,
                    transport="websockets")
    c.ws_set_options(path=a.path)
    if a.cafile:
        c.tls_set(ca_certs=a.cafile, cert_reqs=ssl.CERT_REQUIRED,
                  tls_version=ssl.PROTOCOL_TLS_CLIENT)
    return c


class Sub:
    """A connected subscriber that records what it receives."""

    def __init__(self, a, topic, qos, v5=False):
        self.messages = []
        self.cond = threading.Condition()
        self.subscribed = threading.Event()
        self.c = client(a, v5)
        self.c.on_message = self.on_message
        self.c.on_subscribe = lambda *args: self.subscribed.set()
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos)
        self.c.connect(a.host, a.port, keepalive=30)
        self.c.loop_start()
        if not self.subscribed.wait(a.timeout):
            fail("subscriber never got SUBACK")

    def on_message(self, c, u, m):
        with self.cond:
            self.messages.append(m)
            self.cond.notify_all()

    def wait(self, n, timeout):
        deadline = time.time() + timeout
        with self.cond:
            while len(self.messages) < n and time.time() < deadline:
                self.cond.wait(deadline - time.time())
            return list(self.messages)

    def stop(self):
        self.c.disconnect()
        self.c.loop_stop()


def publisher(a, v5=False):
    p = client(a, v5)
    connected = threading.Event()
    p.on_connect = lambda *args: connected.set()
    p.connect(a.host, a.port, keepalive=30)
    p.loop_start()
    if not connected.wait(a.timeout):
        fail("publisher never got CONNACK")
    return p


def fail(why):
    print(json.dumps({"error": why}), flush=True)
    sys.exit(3)


def qos(a, base):
    sub = Sub(a, base + "/#", 2)
    pub = publisher(a)
    big = bytes(i % 251 for i in range(100_000))
    for q in (0, 1, 2):
        pub.publish(f"{base}/q{q}", f"q{q}", qos=q).wait_for_publish(a.timeout)
    pub.publish(f"{base}/big", big, qos=1).wait_for_publish(a.timeout)
    got = sub.wait(4, a.timeout)
    pub.disconnect()
    pub.loop_stop()
    sub.stop()
    out = []
    for m in got:
        payload = m.payload.decode() if len(m.payload) < 10 else ("big-ok" if m.payload == big else "big-bad")
        out.append([m.topic[len(base) + 1:], payload, m.qos])
    return {"received": out}


def retained(a, base):
    pub = publisher(a)
    pub.publish(base + "/r", "kept", qos=1, retain=True).wait_for_publish(a.timeout)
    sub = Sub(a, base + "/r", 1)
    got = sub.wait(1, a.timeout)
    pub.publish(base + "/r", b"", qos=1, retain=True).wait_for_publish(a.timeout)
    pub.disconnect()
    pub.loop_stop()
    sub.stop()
    return {"received": [[m.payload.decode(), m.qos, bool(m.retain)] for m in got]}


def v5(a, base):
    sub = Sub(a, base + "/p", 1, v5=True)
    pub = publisher(a, v5=True)
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("k", "v")]
    props.ContentType = "text/plain"
    props.ResponseTopic = base + "/resp"
    props.CorrelationData = b"cd"
    props.MessageExpiryInterval = 60
    pub.publish(base + "/p", "props", qos=1, properties=props).wait_for_publish(a.timeout)
    got = sub.wait(1, a.timeout)
    pub.disconnect()
    pub.loop_stop()
    sub.stop()
    out = []
    for m in got:
        p = m.properties
        out.append({
            "payload": m.payload.decode(),
            "user": [list(x) for x in getattr(p, "UserProperty", [])],
            "content_type": getattr(p, "ContentType", None),
            "response_topic": getattr(p, "ResponseTopic", None),
            "correlation": getattr(p, "CorrelationData", b"").decode(),
            "expiry": getattr(p, "MessageExpiryInterval", None),
        })
    return {"received": out}


def will(a, base):
    sub = Sub(a, base + "/will", 1)
    args = [sys.executable, __file__, "--port", str(a.port), "--path", a.path,
            "--scenario", "victim", "--base", base]
    if a.cafile:
        args += ["--cafile", a.cafile]
    victim = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    line = victim.stdout.readline()
    if "connected" not in line:
        victim.kill()
        fail("will client did not connect: " + line)
    victim.kill()  # SIGKILL: the kernel closes the socket, no DISCONNECT, no close frame
    victim.wait()
    got = sub.wait(1, a.timeout)
    sub.stop()
    return {"received": [[m.payload.decode(), m.qos] for m in got]}


def victim(a, base):
    c = client(a, cid="will-" + uuid.uuid4().hex[:8])
    c.will_set(base + "/will", "gone", qos=1)
    connected = threading.Event()
    c.on_connect = lambda *args: connected.set()
    c.connect(a.host, a.port, keepalive=30)
    c.loop_start()
    if connected.wait(a.timeout):
        print("connected", flush=True)
    time.sleep(60)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="localhost")
    ap.add_argument("--path", default="/mqtt")
    ap.add_argument("--cafile")
    ap.add_argument("--scenario", required=True)
    ap.add_argument("--base", default="ws/" + uuid.uuid4().hex[:8])
    ap.add_argument("--timeout", type=float, default=8.0)
    a = ap.parse_args()
    run = {"qos": qos, "retained": retained, "v5": v5, "will": will, "victim": victim}
    result = run[a.scenario](a, a.base)
    if result is not None:
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
