#!/usr/bin/env python3
"""How often a broker writes a publisher's PUBACK before the subscriber's copy.

One subscriber (QoS 0) and 8 publishers on a broker at 127.0.0.1:PORT; N QoS 1 messages,
taking turns among the publishers, 2 ms apart. After each PUBACK the subscriber's socket is
polled without waiting: on loopback a send completes into the receiver's socket, so a copy
written before the PUBACK is always there, and one written after it usually is not yet.
Prints "late K of N". Usage: python3 order_probe.py PORT N
"""
import select
import socket
import sys
import time


def connect(port, cid):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
    s.sendall(bytes([0x10, len(body)]) + body)
    assert s.recv(4)[0] == 0x20, "CONNACK"
    return s


def main():
    port, n = int(sys.argv[1]), int(sys.argv[2])
    sub = connect(port, b"probe-sub")
    body = b"\x00\x01" + b"\x00\x01t" + b"\x00"
    sub.sendall(bytes([0x82, len(body)]) + body)
    sub.recv(5)
    pubs = [connect(port, b"probe-p%d" % i) for i in range(8)]
    time.sleep(1.5)  # long enough for midge's second shard to doze
    late = 0
    for i in range(n):
        p = pubs[i % len(pubs)]
        pid = i % 60000 + 1
        body = b"\x00\x01t" + pid.to_bytes(2, "big") + b"x"
        p.sendall(bytes([0x32, len(body)]) + body)
        assert p.recv(4)[0] == 0x40, "PUBACK"
        ready, _, _ = select.select([sub], [], [], 0)
        if not ready:
            late += 1
        sub.recv(64)  # the copy: 6 bytes
        time.sleep(0.002)
    print("late", late, "of", n)


main()
