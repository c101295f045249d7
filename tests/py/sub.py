#!/usr/bin/env python3
"""paho-mqtt 2.x subscriber for midge's integration tests.

Connects, optionally subscribes, prints one JSON object per line and exits:
  {"event": "connack", "rc": 0, "failure": false, "session_present": false}
  {"event": "suback", "granted": [1]}
  {"event": "message", "topic": "a", "payload": "x", "qos": 1, "retain": false, "dup": false}
  {"event": "done", "received": N}
It exits after --count messages or --timeout seconds, with a clean DISCONNECT.
"""
import argparse
import json
import sys
import threading
import time

import paho.mqtt.client as mqtt


def emit(**kw):
    print(json.dumps(kw), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--id", default="")
    ap.add_argument("--clean", type=int, default=1)
    ap.add_argument("--proto", choices=["31", "311"], default="311")
    ap.add_argument("--topic", action="append", default=[], help="FILTER or FILTER:QOS")
    ap.add_argument("--count", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--keepalive", type=int, default=30)
    a = ap.parse_args()

    proto = mqtt.MQTTv31 if a.proto == "31" else mqtt.MQTTv311
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=a.id,
                    protocol=proto, clean_session=bool(a.clean))
    connected = threading.Event()
    subscribed = threading.Event()
    done = threading.Event()
    state = {"received": 0, "rc_failure": False}

    def on_connect(client, userdata, flags, reason_code, properties):
        state["rc_failure"] = reason_code.is_failure
        emit(event="connack", rc=reason_code.value, failure=reason_code.is_failure,
             session_present=bool(flags.session_present))
        connected.set()

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        emit(event="suback", granted=[rc.value for rc in reason_codes])
        subscribed.set()

    def on_message(client, userdata, msg):
        state["received"] += 1
        emit(event="message", topic=msg.topic,
             payload=msg.payload.decode("utf-8", "replace"),
             qos=msg.qos, retain=bool(msg.retain), dup=bool(msg.dup), mid=msg.mid)
        if a.count and state["received"] >= a.count:
            done.set()

    c.on_connect = on_connect
    c.on_subscribe = on_subscribe
    c.on_message = on_message
    deadline = time.monotonic() + a.timeout
    try:
        c.connect(a.host, a.port, keepalive=a.keepalive)
    except Exception as e:  # noqa: BLE001 - report anything as a JSON error
        emit(event="error", error=repr(e))
        return 2
    c.loop_start()
    if not connected.wait(max(0.0, deadline - time.monotonic())):
        emit(event="error", error="no CONNACK")
        c.loop_stop()
        return 2
    if state["rc_failure"]:
        c.loop_stop()
        emit(event="done", received=0)
        return 0
    if a.topic:
        subs = []
        for t in a.topic:
            f, _, q = t.rpartition(":") if ":" in t else (t, "", "0")
            subs.append((f, int(q)))
        c.subscribe(subs)
        if not subscribed.wait(max(0.0, deadline - time.monotonic())):
            emit(event="error", error="no SUBACK")
            c.loop_stop()
            return 2
    if a.count:
        done.wait(max(0.0, deadline - time.monotonic()))
    c.disconnect()
    c.loop_stop()
    emit(event="done", received=state["received"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
