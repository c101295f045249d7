#!/usr/bin/env python3
"""Broker memory per idle MQTT connection (issue #7: "10k idle connections: RSS per
connection <= mosquitto's").

For each broker named on the command line: start it on a free loopback port with a generated
config, read its VmRSS, open N MQTT 3.1.1 connections (CONNECT with a keep-alive of 600 s,
clean session, wait for CONNACK), wait for the broker to settle, read VmRSS again, close everything
and stop the broker by PID. Prints one line per broker and the difference per connection.

Bounded: N connections (default 10000), a few seconds of waiting, every socket on 127.0.0.1.
It is a script rather than a loadgen scenario because loadgen's engine measures traffic; an
idle connection sends nothing after CONNECT.

    python3 loadgen/scripts/idle_rss.py --midge target/release/midge -n 10000 midge mosquitto

With --tls the listener is TLS (a self-signed P-256 certificate made with the openssl command)
and every connection completes its handshake first: what a broker keeps per idle TLS session
(its TLS library's buffers and keys) is then part of the figure.
"""
import argparse
import os
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

from mqttproc import connect_packet, free_port, rss_kib, wait_listening





def make_cert(workdir):
    """A self-signed certificate for localhost; the client trusts it as its CA."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", os.path.join(workdir, "key.pem"),
                    "-out", os.path.join(workdir, "cert.pem")],
                   check=True, capture_output=True)
    # mosquitto started as root reads its files as the mosquitto user: a throwaway key may be
    # world-readable.
    os.chmod(workdir, 0o755)
    os.chmod(os.path.join(workdir, "key.pem"), 0o644)


def tls_lines(workdir):
    return (f"certfile {os.path.join(workdir, 'cert.pem')}\n"
            f"keyfile {os.path.join(workdir, 'key.pem')}\n")


def start(name, midge, rumqttd, port, workdir, shards, tls):
    tls_conf = tls_lines(workdir) if tls else ""
    if tls and name not in ("midge", "mosquitto"):
        raise SystemExit(f"--tls: {name} is not set up for TLS here")
    if name.startswith("midge"):
        conf = f"listener {port} 127.0.0.1\n{tls_conf}allow_anonymous true\nlog_dest none\n"
        if shards:
            conf += f"shards {shards}\n"
        cmd = [midge, "-c", "midge.conf"]
        fname = "midge.conf"
    elif name == "mosquitto":
        conf = (f"listener {port} 127.0.0.1\n{tls_conf}allow_anonymous true\npersistence false\n"
                "connection_messages false\nlog_dest none\n")
        cmd = [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", "mosquitto.conf"]
        fname = "mosquitto.conf"
    elif name == "rumqttd":
        conf = (f"id = 0\n\n[router]\nid = 0\nmax_connections = 20010\n"
                "max_outgoing_packet_count = 100\nmax_segment_size = 104857600\n"
                "max_segment_count = 10\n\n[v4.1]\nname = \"v4-1\"\n"
                f"listen = \"127.0.0.1:{port}\"\nnext_connection_delay_ms = 0\n\n"
                "[v4.1.connections]\nconnection_timeout_ms = 60000\n"
                "max_payload_size = 16777216\nmax_inflight_count = 100\n"
                "dynamic_filters = true\n")
        cmd = [rumqttd, "-c", "rumqttd.toml"]
        fname = "rumqttd.toml"
    else:
        raise SystemExit(f"unknown broker {name}")
    with open(os.path.join(workdir, fname), "w") as f:
        f.write(conf)
    log = open(os.path.join(workdir, f"{name}.log"), "w")
    p = subprocess.Popen(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_listening(port, p)
    except RuntimeError as e:
        log.close()
        raise SystemExit(f"{name}: {e}: {open(log.name).read().strip()}")
    return p


def measure(name, args, workdir):
    port = free_port()
    p = start(name, args.midge, args.rumqttd, port, workdir,
              args.shards if name == "midge" else None, args.tls)
    ctx = None
    if args.tls:
        ctx = ssl.create_default_context(cafile=os.path.join(workdir, "cert.pem"))
    socks = []
    try:
        time.sleep(1)
        before = rss_kib(p.pid)
        t0 = time.time()
        for i in range(args.n):
            if time.time() - t0 > args.timeout:
                raise SystemExit(f"{name}: only {i} connections in {args.timeout} s")
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            if ctx:
                s = ctx.wrap_socket(s, server_hostname="localhost")
            s.sendall(connect_packet(f"idle-{i:06d}"))
            ack = s.recv(4)
            if len(ack) < 4 or ack[0] != 0x20 or ack[3] != 0:
                raise SystemExit(f"{name}: connection {i}: bad CONNACK {ack!r}")
            socks.append(s)
        time.sleep(args.settle)
        if p.poll() is not None:
            raise SystemExit(f"{name} died")
        after = rss_kib(p.pid)
        peak = rss_kib(p.pid, "VmHWM:")
        per = (after - before) * 1024 / args.n
        print(f"{name:10} connections={args.n} rss_before={before / 1024:.1f} MiB "
              f"rss_after={after / 1024:.1f} MiB peak={peak / 1024:.1f} MiB "
              f"per_connection={per:.0f} B", flush=True)
        return per
    finally:
        for s in socks:
            s.close()
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("brokers", nargs="+", help="midge, mosquitto, rumqttd")
    ap.add_argument("-n", type=int, default=10000, help="connections (default 10000)")
    ap.add_argument("--midge", default="target/release/midge")
    ap.add_argument("--rumqttd", default=shutil.which("rumqttd") or "/work/tools/bin/rumqttd")
    ap.add_argument("--shards", type=int, default=None, help="midge shards (default: cores)")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds to wait before sampling")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds allowed to connect")
    ap.add_argument("--tls", action="store_true", help="TLS listeners (midge and mosquitto)")
    args = ap.parse_args()
    args.midge = os.path.abspath(args.midge)
    # One descriptor per connection here and in the broker (a child inherits the limit).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.n + 1000
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            raise SystemExit(f"ulimit -n hard limit {hard} < {want}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    results = {}
    with tempfile.TemporaryDirectory(prefix="idle-rss-") as workdir:
        if args.tls:
            make_cert(workdir)
        for name in args.brokers:
            results[name] = measure(name, args, workdir)
    if "mosquitto" in results:
        for name, per in results.items():
            if name != "mosquitto":
                print(f"{name}: {per / max(results['mosquitto'], 1):.2f}x mosquitto's RSS per connection")


if __name__ == "__main__":
    sys.exit(main())
