#!/usr/bin/env python3
"""A tiny raw MQTT 5 client with the client side of SCRAM-SHA-256/-512 (RFC 5802, written
here from the RFC with hashlib/hmac: independent of midge's Rust implementation), for
tests/enhanced_auth.rs. paho-mqtt 2.x sends an Authentication Method in CONNECT but cannot
answer an AUTH packet, so the exchange is driven over a plain socket.

Usage: scram_client.py --port P --scenario NAME [--user U] [--password PW] [--mech M]
         [--password2 PW2] [--connect-user NAME]
Prints one JSON object per line, the last one {"result": {...}}; exits 0 unless the script
itself failed (the test asserts on the result). Every socket wait is bounded (5 s).

Scenarios:
  connect     full exchange: {"connack": rc, "server_ok": bool, "ping": bool}
  reauth      connect, then AUTH 0x19 with --password2: {"connack", "auth_rc" | "disconnect",
              "server_ok", "ping"}
  replay      a full exchange, then its client messages again on a new connection:
              {"first": rc, "replayed": rc}
  publish_in_exchange  CONNECT, then PUBLISH instead of AUTH: {"closed": bool, "packets": [...]}
  auth_continue_connected  connect, then AUTH 0x18 with no exchange: {"disconnect": rc}
  reauth_other_method      connect, then AUTH 0x19 with another method: {"disconnect": rc}
  oversize    CONNECT with 9000 bytes of data: {"connack": rc}
"""
import argparse
import base64
import hashlib
import hmac
import json
import os
import socket
import struct
import sys
import time

TIMEOUT = 5.0


def emit(**kw):
    print(json.dumps(kw), flush=True)


# ------------------------------------------------------------------ MQTT 5 encoding

def varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def s(b):
    if isinstance(b, str):
        b = b.encode()
    return struct.pack("!H", len(b)) + b


def props(method=None, data=None):
    p = b""
    if method is not None:
        p += b"\x15" + s(method)
    if data is not None:
        p += b"\x16" + s(data)
    return varint(len(p)) + p


def packet(first, body):
    return bytes([first]) + varint(len(body)) + body


def connect_packet(client_id, method=None, data=None, user=None, password=None):
    flags = 0x02  # clean start
    if user is not None:
        flags |= 0x80
    if password is not None:
        flags |= 0x40
    body = s("MQTT") + bytes([5, flags]) + struct.pack("!H", 60) + props(method, data)
    body += s(client_id)
    if user is not None:
        body += s(user)
    if password is not None:
        body += s(password)
    return packet(0x10, body)


def auth_packet(reason, method, data=None):
    return packet(0xF0, bytes([reason]) + props(method, data))


# ------------------------------------------------------------------ MQTT 5 decoding

# Property id -> kind, for the packets a server sends here.
KINDS = {
    0x01: "b", 0x02: "i4", 0x03: "s", 0x08: "s", 0x09: "bin", 0x0B: "v", 0x11: "i4",
    0x12: "s", 0x13: "i2", 0x15: "s", 0x16: "bin", 0x17: "b", 0x19: "b", 0x1A: "s",
    0x1C: "s", 0x1F: "s", 0x21: "i2", 0x22: "i2", 0x23: "i2", 0x24: "b", 0x25: "b",
    0x26: "pair", 0x27: "i4", 0x28: "b", 0x29: "b", 0x2A: "b",
}


def read_varint(buf, i):
    n, mult = 0, 1
    while True:
        b = buf[i]
        i += 1
        n += (b & 0x7F) * mult
        mult *= 128
        if not b & 0x80:
            return n, i


def parse_props(buf, i):
    length, i = read_varint(buf, i)
    end = i + length
    out = {}
    while i < end:
        pid, i = read_varint(buf, i)
        kind = KINDS[pid]
        if kind == "b":
            v, i = buf[i], i + 1
        elif kind == "i2":
            v, i = struct.unpack("!H", buf[i:i + 2])[0], i + 2
        elif kind == "i4":
            v, i = struct.unpack("!I", buf[i:i + 4])[0], i + 4
        elif kind == "v":
            v, i = read_varint(buf, i)
        elif kind in ("s", "bin"):
            n = struct.unpack("!H", buf[i:i + 2])[0]
            v, i = bytes(buf[i + 2:i + 2 + n]), i + 2 + n
            if kind == "s":
                v = v.decode()
        else:  # pair
            a = struct.unpack("!H", buf[i:i + 2])[0]
            i += 2 + a
            b = struct.unpack("!H", buf[i:i + 2])[0]
            i += 2 + b
            v = None
        out[pid] = v
    return out, end


class Conn:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk

    def recv(self):
        """The next packet as (type, flags, body); None when the peer closed."""
        deadline = time.monotonic() + TIMEOUT
        try:
            self._fill(2, deadline)
            length, i = 0, 1
            mult = 1
            while True:
                self._fill(i + 1, deadline)
                b = self.buf[i]
                i += 1
                length += (b & 0x7F) * mult
                mult *= 128
                if not b & 0x80:
                    break
            self._fill(i + length, deadline)
        except (EOFError, ConnectionResetError):
            return None
        first = self.buf[0]
        body = self.buf[i:i + length]
        self.buf = self.buf[i + length:]
        return first >> 4, first & 0x0F, body

    def close(self):
        self.sock.close()


def describe(pkt):
    """A packet as JSON-able data."""
    if pkt is None:
        return {"type": "closed"}
    kind, _, body = pkt
    if kind == 2:  # CONNACK
        p, _ = parse_props(body, 2)
        return {"type": "connack", "rc": body[1], "props": p}
    if kind in (14, 15):  # DISCONNECT, AUTH
        rc = body[0] if body else 0
        p = parse_props(body, 1)[0] if len(body) > 1 else {}
        return {"type": "disconnect" if kind == 14 else "auth", "rc": rc, "props": p}
    return {"type": {13: "pingresp"}.get(kind, str(kind))}


def jsonable(d):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            v = jsonable(v)
        elif isinstance(v, bytes):
            v = v.decode(errors="replace")
        out[str(k)] = v
    return out


# ------------------------------------------------------------------ SCRAM, client side

HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}


class Scram:
    def __init__(self, mech, user, password):
        self.h = HASHES[mech]
        self.user = user
        self.password = password.encode()
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        name = user.replace("=", "=3D").replace(",", "=2C")
        self.bare = f"n={name},r={self.nonce}"

    def first(self):
        return ("n,," + self.bare).encode()

    def final(self, server_first):
        server_first = server_first.decode()
        f = dict(x.split("=", 1) for x in server_first.split(","))
        assert f["r"].startswith(self.nonce), "server nonce must extend the client's"
        salted = hashlib.pbkdf2_hmac(self.h, self.password, base64.b64decode(f["s"]), int(f["i"]))
        client_key = hmac.new(salted, b"Client Key", self.h).digest()
        stored_key = hashlib.new(self.h, client_key).digest()
        without_proof = "c=biws,r=" + f["r"]
        auth = f"{self.bare},{server_first},{without_proof}".encode()
        sig = hmac.new(stored_key, auth, self.h).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, sig))
        server_key = hmac.new(salted, b"Server Key", self.h).digest()
        self.expected = b"v=" + base64.b64encode(hmac.new(server_key, auth, self.h).digest())
        return (without_proof + ",p=" + base64.b64encode(proof).decode()).encode()


# ------------------------------------------------------------------ scenarios

def exchange(conn, a, mech, cid, connect_user=None):
    """CONNECT + AUTH with SCRAM `a`; returns (final packet, client messages sent)."""
    first = a.first()
    conn.send(connect_packet(cid, mech, first, user=connect_user))
    pkt = conn.recv()
    d = describe(pkt)
    emit(step="after connect", packet=jsonable(d))
    if d["type"] != "auth" or d["rc"] != 0x18:
        return d, [first]
    final = a.final(d["props"][0x16])
    conn.send(auth_packet(0x18, mech, final))
    d = describe(conn.recv())
    emit(step="after client-final", packet=jsonable(d))
    return d, [first, final]


def subscribe(conn, topic):
    """SUBSCRIBE (5.0, QoS 1) to `topic`; the SUBACK's reason code."""
    t = topic.encode()
    body = struct.pack("!H", 7) + b"\x00" + struct.pack("!H", len(t)) + t + b"\x01"
    conn.send(packet(0x82, body))
    pkt = conn.recv()
    if pkt is None or pkt[0] != 9:
        return None
    _, props_end = parse_props(pkt[2], 2)
    return pkt[2][props_end]


def ping(conn):
    conn.send(packet(0xC0, b""))
    return describe(conn.recv())["type"] == "pingresp"


def scenario(args):
    mech, user, pw = args.mech, args.user, args.password
    cid = "scram-" + base64.b16encode(os.urandom(4)).decode()
    if args.scenario == "connect":
        c = Conn(args.port)
        a = Scram(mech, user, pw)
        d, _ = exchange(c, a, mech, cid, args.connect_user)
        r = {"connack": d.get("rc") if d["type"] == "connack" else None, "type": d["type"]}
        if d["type"] == "connack" and d["rc"] == 0:
            r["server_ok"] = d["props"].get(0x16) == a.expected
            r["method"] = d["props"].get(0x15)
            r["ping"] = ping(c)
            if args.subscribe:
                r["suback"] = subscribe(c, args.subscribe)
        return r
    if args.scenario == "reauth":
        c = Conn(args.port)
        d, _ = exchange(c, Scram(mech, user, pw), mech, cid)
        r = {"connack": d.get("rc")}
        a = Scram(mech, user, args.password2)
        c.send(auth_packet(0x19, mech, a.first()))
        d = describe(c.recv())
        emit(step="after reauth first", packet=jsonable(d))
        if d["type"] == "auth" and d["rc"] == 0x18:
            c.send(auth_packet(0x18, mech, a.final(d["props"][0x16])))
            d = describe(c.recv())
            emit(step="after reauth final", packet=jsonable(d))
        if d["type"] == "auth":
            r["auth_rc"] = d["rc"]
            r["server_ok"] = d["props"].get(0x16) == a.expected
            r["method"] = d["props"].get(0x15)
            r["ping"] = ping(c)
        elif d["type"] == "disconnect":
            r["disconnect"] = d["rc"]
            r["closed"] = c.recv() is None
        return r
    if args.scenario == "replay":
        c = Conn(args.port)
        d, sent = exchange(c, Scram(mech, user, pw), mech, cid)
        r = {"first": d.get("rc")}
        c.close()
        c = Conn(args.port)
        c.send(connect_packet(cid + "r", mech, sent[0]))
        d = describe(c.recv())
        if d["type"] == "auth":
            c.send(auth_packet(0x18, mech, sent[1]))
            d = describe(c.recv())
        emit(step="replayed", packet=jsonable(d))
        r["replayed"] = d.get("rc") if d["type"] == "connack" else d["type"]
        return r
    if args.scenario == "publish_in_exchange":
        c = Conn(args.port)
        c.send(connect_packet(cid, mech, Scram(mech, user, pw).first()))
        d = describe(c.recv())
        c.send(packet(0x30, s("t") + b"\x00" + b"x"))
        packets = [d["type"]]
        while True:
            d = describe(c.recv())
            packets.append(d["type"])
            if d["type"] == "closed":
                break
        return {"packets": packets}
    if args.scenario in ("auth_continue_connected", "reauth_other_method"):
        c = Conn(args.port)
        d, _ = exchange(c, Scram(mech, user, pw), mech, cid)
        other = "SCRAM-SHA-512" if mech == "SCRAM-SHA-256" else "SCRAM-SHA-256"
        if args.scenario == "auth_continue_connected":
            c.send(auth_packet(0x18, mech, b"c=biws,r=x,p=AAAA"))
        else:
            c.send(auth_packet(0x19, other, Scram(other, user, pw).first()))
        d = describe(c.recv())
        return {"connack": 0, "disconnect": d.get("rc") if d["type"] == "disconnect" else d["type"]}
    if args.scenario == "oversize":
        c = Conn(args.port)
        c.send(connect_packet(cid, mech, b"n,,n=" + b"u" * 9000 + b",r=x"))
        d = describe(c.recv())
        return {"connack": d.get("rc") if d["type"] == "connack" else d["type"]}
    raise SystemExit(f"unknown scenario {args.scenario}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--scenario", required=True)
    ap.add_argument("--user", default="alice")
    ap.add_argument("--password", default="secret")
    ap.add_argument("--password2", default="secret")
    ap.add_argument("--mech", default="SCRAM-SHA-256")
    ap.add_argument("--connect-user", default=None)
    ap.add_argument("--subscribe", default=None)
    args = ap.parse_args()
    try:
        emit(result=scenario(args))
    except (TimeoutError, socket.timeout):
        emit(result={"error": "timeout"})
    except Exception as e:  # noqa: BLE001
        emit(result={"error": repr(e)})
    sys.exit(0)


if __name__ == "__main__":
    main()
