#!/usr/bin/env python3
"""Broker CPU to receive one large PUBLISH (issue 11, item 5b). Clients use keep-alive 0: a
broker that takes minutes over one packet would otherwise close the publisher on keep-alive.

For each broker and size: start the broker on a free port (max packet size raised to the
protocol maximum), connect one subscriber and one publisher, publish one QoS 1 message of SIZE
MB, wait for the PUBACK and for the subscriber to receive it all, and report the broker's CPU
time (utime + stime from /proc/PID/stat) spent between just before the PUBLISH and the end.
Each cell is repeated REPEAT times; the median is reported.

usage: big_publish.py [--repeat N] [--sizes 8,32,128] NAME=COMMAND_WITH_{conf} ...
  e.g. big_publish.py midge=target/release/midge mosquitto=/usr/sbin/mosquitto
"""
import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from mqttproc import (cpu_seconds, free_port, mqtt_str, packet, recv_exact, recv_packet_len,
                      wait_listening)








def connect(port, cid):
    s = socket.create_connection(("127.0.0.1", port), timeout=900)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = mqtt_str(b"MQTT") + bytes([4, 2]) + (0).to_bytes(2, "big") + mqtt_str(cid)
    s.sendall(packet(0x10, body))
    ack = recv_exact(s, 4)
    assert ack[0] == 0x20 and ack[3] == 0, ack
    return s




def start(cmd, port, tmp):
    conf = os.path.join(tmp, f"{port}.conf")
    with open(conf, "w") as f:
        f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_packet_size 268435460\n")
    log = open(os.path.join(tmp, f"{port}.log"), "w")
    p = subprocess.Popen([cmd, "-c", conf], stdout=log, stderr=log)
    wait_listening(port, p)
    return p


def one(cmd, size_mb, tmp):
    port = free_port()
    p = start(cmd, port, tmp)
    try:
        sub = connect(port, b"big-sub")
        sub.sendall(packet(0x82, (1).to_bytes(2, "big") + mqtt_str(b"big") + bytes([0])))
        first, n = recv_packet_len(sub)
        recv_exact(sub, n)
        assert first == 0x90, first
        pub = connect(port, b"big-pub")
        payload = bytes(size_mb * 1024 * 1024)
        body = mqtt_str(b"big") + (1).to_bytes(2, "big") + payload
        data = packet(0x32, body)
        time.sleep(0.3)
        before = cpu_seconds(p.pid)
        t0 = time.monotonic()
        pub.sendall(data)
        first, n = recv_packet_len(pub)
        recv_exact(pub, n)
        assert first == 0x40, first
        first, n = recv_packet_len(sub)
        got = 0
        while got < n:
            chunk = sub.recv(min(n - got, 1 << 20))
            if not chunk:
                raise EOFError
            got += len(chunk)
        wall = time.monotonic() - t0
        cpu = cpu_seconds(p.pid) - before
        pub.close()
        sub.close()
        return cpu, wall
    finally:
        p.terminate()
        p.wait(timeout=10)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sizes", default="8,32,128")
    ap.add_argument("brokers", nargs="+")
    a = ap.parse_args()
    sizes = [int(x) for x in a.sizes.split(",")]
    print("| broker | size | broker CPU s (runs) | median CPU s | median wall s |")
    print("|---|--:|---|--:|--:|")
    with tempfile.TemporaryDirectory() as tmp:
        for spec in a.brokers:
            name, cmd = spec.split("=", 1)
            for size in sizes:
                runs = [one(cmd, size, tmp) for _ in range(a.repeat)]
                cpus = [c for c, _ in runs]
                walls = [w for _, w in runs]
                print(
                    f"| {name} | {size} MB | {' / '.join(f'{c:.2f}' for c in cpus)} | "
                    f"{statistics.median(cpus):.2f} | {statistics.median(walls):.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    sys.exit(main())
