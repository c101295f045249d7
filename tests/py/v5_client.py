#!/usr/bin/env python3
"""paho-mqtt 2.x MQTT 5.0 client for midge's v5 integration tests, driven by a list of steps.

Usage: v5_client.py --port PORT --steps JSON

JSON is a list of steps run in order; every packet the broker sends is printed as one JSON
object per line (properties as paho's Properties.json(), correlation data in hex):
  {"op": "connect", "id": "c1", "clean": true, "keepalive": 60, "username": "u", "password": "p",
   "props": {"SessionExpiryInterval": 60, "ReceiveMaximum": 5, ...},
   "will": {"topic": "w", "payload": "x", "qos": 1, "retain": false, "props": {...}}}
      -> {"event": "connack", "rc": 0, "session_present": false, "props": {...}}
  {"op": "subscribe", "subs": [{"topic": "a/#", "qos": 1, "nl": false, "rap": false, "rh": 0}],
   "props": {"SubscriptionIdentifier": 3}}
      -> {"event": "suback", "codes": [1], "props": {...}}
  {"op": "unsubscribe", "topics": ["a/#"]}  -> {"event": "unsuback", "codes": [17]}
  {"op": "publish", "topic": "a/b", "payload": "x", "qos": 1, "retain": false, "props": {...}}
      -> {"event": "published", "mid": 1, "rc": 0}   (after PUBACK/PUBCOMP for QoS > 0)
  {"op": "messages", "count": 2, "timeout": 5}      waits until COUNT messages arrived in total
      (each arrival: {"event": "message", "topic", "payload", "hex", "qos", "retain", "props"})
  {"op": "sleep", "secs": 1.5}
  {"op": "disconnect", "rc": 0, "props": {...}}
A DISCONNECT from the broker prints {"event": "disconnected", "rc": N}. At the end:
{"event": "done", "received": N}. A failed wait prints {"event": "timeout", "op": ...} and exits 3.
"""
import argparse
import json
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode


def emit(**kw):
    print(json.dumps(kw), flush=True)


def props_json(p):
    if p is None:
        return {}
    try:
        return p.json()
    except Exception:  # noqa: BLE001
        return {}


def make_props(packet_type, d):
    if not d:
        return None
    p = Properties(packet_type)
    for k, v in d.items():
        if k == "UserProperty":
            p.UserProperty = [tuple(x) for x in v]
        elif k == "CorrelationData":
            p.CorrelationData = v.encode() if isinstance(v, str) else bytes(v)
        else:
            setattr(p, k, v)
    return p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--steps", required=True)
    a = ap.parse_args()
    steps = json.loads(a.steps)

    lock = threading.Lock()
    cond = threading.Condition(lock)
    st = {"connack": False, "suback": 0, "unsuback": 0, "published": set(), "received": 0,
          "disconnected": False}

    c = None

    def on_connect(client, userdata, flags, reason_code, properties):
        emit(event="connack", rc=reason_code.value, session_present=bool(flags.session_present),
             props=props_json(properties))
        with cond:
            st["connack"] = True
            cond.notify_all()

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        emit(event="suback", codes=[rc.value for rc in reason_codes], props=props_json(properties))
        with cond:
            st["suback"] += 1
            cond.notify_all()

    def on_unsubscribe(client, userdata, mid, reason_codes, properties):
        emit(event="unsuback", codes=[rc.value for rc in reason_codes],
             props=props_json(properties))
        with cond:
            st["unsuback"] += 1
            cond.notify_all()

    def on_publish(client, userdata, mid, reason_code, properties):
        emit(event="published", mid=mid, rc=reason_code.value, props=props_json(properties))
        with cond:
            st["published"].add(mid)
            cond.notify_all()

    def on_message(client, userdata, msg):
        emit(event="message", topic=msg.topic, payload=msg.payload.decode("utf-8", "replace"),
             hex=msg.payload.hex(), qos=msg.qos, retain=bool(msg.retain),
             props=props_json(getattr(msg, "properties", None)))
        with cond:
            st["received"] += 1
            cond.notify_all()

    def on_disconnect(client, userdata, flags, reason_code, properties):
        emit(event="disconnected", rc=reason_code.value if reason_code is not None else -1,
             props=props_json(properties))
        with cond:
            st["disconnected"] = True
            cond.notify_all()

    def wait(pred, secs, op):
        with cond:
            ok = cond.wait_for(pred, timeout=secs)
        if not ok:
            emit(event="timeout", op=op)
            sys.exit(3)

    for s in steps:
        op = s["op"]
        if op == "connect":
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=s.get("id", ""),
                            protocol=mqtt.MQTTv5)
            if "username" in s:
                c.username_pw_set(s["username"], s.get("password"))
            c.on_connect = on_connect
            c.on_subscribe = on_subscribe
            c.on_unsubscribe = on_unsubscribe
            c.on_publish = on_publish
            c.on_message = on_message
            c.on_disconnect = on_disconnect
            w = s.get("will")
            if w:
                c.will_set(w["topic"], w.get("payload", ""), w.get("qos", 0),
                           w.get("retain", False),
                           make_props(PacketTypes.WILLMESSAGE, w.get("props")))
            if "username" in s:
                c.username_pw_set(s["username"], s.get("password"))
            c.connect(a.host, a.port, keepalive=s.get("keepalive", 60),
                      clean_start=s.get("clean", True),
                      properties=make_props(PacketTypes.CONNECT, s.get("props")))
            c.loop_start()
            wait(lambda: st["connack"], 5, op)
        elif op == "subscribe":
            subs = []
            for x in s["subs"]:
                o = mqtt.SubscribeOptions(qos=x.get("qos", 0), noLocal=x.get("nl", False),
                                          retainAsPublished=x.get("rap", False),
                                          retainHandling=x.get("rh", 0))
                subs.append((x["topic"], o))
            n = st["suback"]
            c.subscribe(subs, properties=make_props(PacketTypes.SUBSCRIBE, s.get("props")))
            wait(lambda: st["suback"] > n, 5, op)
        elif op == "unsubscribe":
            n = st["unsuback"]
            c.unsubscribe(s["topics"])
            wait(lambda: st["unsuback"] > n, 5, op)
        elif op == "publish":
            info = c.publish(s["topic"], s.get("payload", ""), s.get("qos", 0),
                             s.get("retain", False),
                             make_props(PacketTypes.PUBLISH, s.get("props")))
            mid = info.mid
            wait(lambda: mid in st["published"] or st["disconnected"], 5, op)
        elif op == "messages":
            n = s["count"]
            wait(lambda: st["received"] >= n, s.get("timeout", 5), op)
        elif op == "sleep":
            time.sleep(s["secs"])
        elif op == "disconnect":
            rc = s.get("rc", 0)
            c.disconnect(ReasonCode(PacketTypes.DISCONNECT, identifier=rc),
                         make_props(PacketTypes.DISCONNECT, s.get("props")))
            time.sleep(0.2)
            c.loop_stop()
        else:
            emit(event="error", error="unknown op " + op)
            return 2
    emit(event="done", received=st["received"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
