#!/usr/bin/env python3
"""paho-mqtt 2.x TLS client for midge's integration tests.

Connects over TLS (tls_set with the test CA and optionally a client certificate), subscribes
to --topic, publishes --message to it at QoS 1, waits for it to come back, and prints one JSON
object per line:
  {"event": "connack", "rc": 0, "failure": false}
  {"event": "message", "topic": "t", "payload": "x", "qos": 1}
  {"event": "done", "received": 1}
A TLS or connection failure prints {"event": "connect_failed", "error": "..."} and exits 3.
"""
import argparse
import json
import ssl
import sys
import threading

import paho.mqtt.client as mqtt


def emit(**kw):
    print(json.dumps(kw), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="localhost")
    ap.add_argument("--cafile", required=True)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--topic", default="tls/paho")
    ap.add_argument("--message", default="over tls")
    ap.add_argument("--timeout", type=float, default=8.0)
    a = ap.parse_args()

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv311)
    c.tls_set(ca_certs=a.cafile, certfile=a.cert, keyfile=a.key,
              cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    connected = threading.Event()
    subscribed = threading.Event()
    got = threading.Event()
    lost = threading.Event()
    state = {"failure": False, "received": 0}

    def on_connect(client, userdata, flags, reason_code, properties):
        state["failure"] = reason_code.is_failure
        emit(event="connack", rc=reason_code.value, failure=reason_code.is_failure)
        connected.set()

    def on_disconnect(client, userdata, flags, reason_code, properties):
        lost.set()

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        subscribed.set()

    def on_message(client, userdata, msg):
        state["received"] += 1
        emit(event="message", topic=msg.topic, payload=msg.payload.decode("utf-8", "replace"),
             qos=msg.qos)
        got.set()

    c.on_connect = on_connect
    c.on_disconnect = on_disconnect
    c.on_subscribe = on_subscribe
    c.on_message = on_message
    try:
        c.connect(a.host, a.port, keepalive=30)
    except Exception as e:  # noqa: BLE001 - TLS errors surface here (handshake in connect)
        emit(event="connect_failed", error=repr(e))
        return 3
    c.loop_start()
    if not connected.wait(a.timeout) or state["failure"]:
        emit(event="connect_failed", error="no successful CONNACK", lost=lost.is_set())
        c.loop_stop()
        return 3
    c.subscribe(a.topic, qos=1)
    if not subscribed.wait(a.timeout):
        emit(event="error", error="no SUBACK")
        c.loop_stop()
        return 2
    c.publish(a.topic, a.message, qos=1)
    got.wait(a.timeout)
    c.disconnect()
    c.loop_stop()
    emit(event="done", received=state["received"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
