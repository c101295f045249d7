#!/usr/bin/env python3
"""Issue 11 item 7 cost: round trip of a QoS 1 PUBLISH whose publisher subscribes to its own
topic (PUBACK + own copy, acknowledged), and of one whose subscriber is another connection,
against a midge binary with persistence (every-batch) in a directory on disk. Persistent
(clean session 0) 3.1.1 sessions, one message at a time.

Usage: loadgen/scripts/self_echo.py MIDGE_BINARY [MESSAGES] [STORE_PARENT_DIR]"""
import os, shutil, socket, struct, subprocess, sys, tempfile, time

def enc_len(n):
    out = b""
    while True:
        b = n % 128; n //= 128
        out += bytes([b | (0x80 if n else 0)])
        if not n: return out
def pkt(first, body): return bytes([first]) + enc_len(len(body)) + body
def s(x): return struct.pack(">H", len(x)) + x
def recv_pkt(sock, buf):
    while True:
        if len(buf) >= 2:
            mult, n, i = 1, 0, 1
            while True:
                if i >= len(buf): break
                b = buf[i]; n += (b & 127) * mult; mult *= 128; i += 1
                if not b & 128:
                    if len(buf) >= i + n:
                        p = (buf[0], bytes(buf[i:i+n])); del buf[:i+n]; return p
                    break
        d = sock.recv(65536)
        if not d: raise EOFError
        buf += d
def connect(port, cid):
    c = socket.create_connection(("127.0.0.1", port)); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.sendall(pkt(0x10, s(b"MQTT") + bytes([4, 0]) + struct.pack(">H", 60) + s(cid)))
    buf = bytearray(); assert recv_pkt(c, buf)[0] == 0x20
    return c, buf
def subscribe(c, buf, topic):
    c.sendall(pkt(0x82, struct.pack(">H", 1) + s(topic) + b"\x01")); assert recv_pkt(c, buf)[0] == 0x90

def run(binary, n):
    d = tempfile.mkdtemp(dir=sys.argv[3] if len(sys.argv) > 3 else ".")
    probe = socket.socket(); probe.bind(("127.0.0.1", 0)); port = probe.getsockname()[1]; probe.close()
    conf = os.path.join(d, "m.conf")
    open(conf, "w").write(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {d}/\n")
    p = subprocess.Popen([binary, "-c", conf], stdout=open(os.path.join(d, "log"), "w"), stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            try: socket.create_connection(("127.0.0.1", port)).close(); break
            except OSError: time.sleep(0.05)
        res = {}
        # self: one connection publishes and gets its own copy
        c, buf = connect(port, b"self-echo"); subscribe(c, buf, b"e/self")
        t = []
        for i in range(n):
            pid = i % 60000 + 1; t0 = time.perf_counter()
            c.sendall(pkt(0x32, s(b"e/self") + struct.pack(">H", pid) + b"x" * 64))
            got_ack = got_copy = False
            while not (got_ack and got_copy):
                first, body = recv_pkt(c, buf)
                if first >> 4 == 4: got_ack = True
                elif first >> 4 == 3:
                    got_copy = True; tl = struct.unpack(">H", body[:2])[0]
                    cpid = body[2+tl:4+tl]; c.sendall(pkt(0x40, cpid))
            t.append(time.perf_counter() - t0)
        res["self"] = t
        # other: publisher and subscriber are different connections
        sub, sbuf = connect(port, b"echo-sub"); subscribe(sub, sbuf, b"e/other")
        pub, pbuf = connect(port, b"echo-pub")
        t = []
        for i in range(n):
            pid = i % 60000 + 1; t0 = time.perf_counter()
            pub.sendall(pkt(0x32, s(b"e/other") + struct.pack(">H", pid) + b"x" * 64))
            first, body = recv_pkt(sub, sbuf); assert first >> 4 == 3
            tl = struct.unpack(">H", body[:2])[0]; sub.sendall(pkt(0x40, body[2+tl:4+tl]))
            first, _ = recv_pkt(pub, pbuf); assert first >> 4 == 4
            t.append(time.perf_counter() - t0)
        res["other"] = t
        return res
    finally:
        p.terminate(); p.wait(); shutil.rmtree(d, ignore_errors=True)

n = int(sys.argv[2]) if len(sys.argv) > 2 else 300
r = run(sys.argv[1], n)
for k, t in r.items():
    t = sorted(t); q = lambda f: t[min(len(t)-1, int(f*len(t)))] * 1e3
    print(f"{sys.argv[1]} {k:5} n={n} p50={q(.5):.2f} ms p90={q(.9):.2f} ms p99={q(.99):.2f} ms total={sum(t):.2f} s")
