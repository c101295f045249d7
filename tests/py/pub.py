#!/usr/bin/env python3
"""paho-mqtt 2.x publisher for midge's integration tests.

Publishes --message (repeated --count times, payload suffixed with the index when --count > 1),
waits for each QoS flow to complete, disconnects cleanly, prints {"event": "published", ...}.
"""
import argparse
import json
import sys

import paho.mqtt.client as mqtt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--id", default="")
    ap.add_argument("--proto", choices=["31", "311"], default="311")
    ap.add_argument("--topic", required=True)
    ap.add_argument("--message", default="")
    ap.add_argument("--qos", type=int, default=0)
    ap.add_argument("--retain", action="store_true")
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=10.0)
    a = ap.parse_args()

    proto = mqtt.MQTTv31 if a.proto == "31" else mqtt.MQTTv311
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=a.id,
                    protocol=proto, clean_session=True)
    c.connect(a.host, a.port, keepalive=30)
    c.loop_start()
    mids = []
    for i in range(a.count):
        payload = a.message if a.count == 1 else f"{a.message}{i}"
        info = c.publish(a.topic, payload, qos=a.qos, retain=a.retain)
        info.wait_for_publish(timeout=a.timeout)
        if not info.is_published():
            print(json.dumps({"event": "error", "error": f"message {i} not published"}), flush=True)
            c.loop_stop()
            return 2
        mids.append(info.mid)
    c.disconnect()
    c.loop_stop()
    print(json.dumps({"event": "published", "count": len(mids)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
