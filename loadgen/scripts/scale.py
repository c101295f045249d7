#!/usr/bin/env python3
"""Scale (issue 11): idle connections and a connect storm, midge against mosquitto.

(a) Idle connections: start each broker on a free loopback port, read its VmRSS, open N MQTT
    3.1.1 connections (CONNECT, keep-alive 600 s, clean session, CONNACK awaited) from several
    client processes and several source addresses (127.0.0.2, .3, ...: a source address has
    about 28k ephemeral ports), let the broker settle, read VmRSS again: RSS per connection =
    (after - before) / N. Kernel socket memory is not in RSS.
(b) Connect storm: for a bounded time, client processes open connections at a paced rate
    (default 10k/s in all), each CONNECT -> CONNACK -> DISCONNECT -> close; reports CONNACKs per
    second, connect latency (TCP connect start to CONNACK) p50/p99/max, and failures (refused,
    reset, no CONNACK within 5 s), and the rate the clients actually offered (on a small
    machine Python clients may be the limit: the report says so).

File descriptors: the broker holds one per connection and so does a client process. Each
process's soft limit is raised to its hard limit; no process may go past its hard limit
without CAP_SYS_RESOURCE. Client processes each hold at most (hard limit - 256) sockets, so
N only needs enough processes. The broker is one process: if its hard limit is below
N + 256, N is reduced to what it can hold, a WARNING is printed and the JSON records both
numbers (`requested`, `connections`). Run where `ulimit -Hn` >= N + 256 for the full 100k.

Every step is bounded in time; only the processes this script starts are stopped, by PID.

    python3 loadgen/scripts/scale.py --midge target/release/midge -n 100000 \\
        --storm-rate 10000 --storm-seconds 10 --out results/scale-$(date +%Y%m%d-%H%M%S)
"""
import argparse
import json
import multiprocessing as mp
import os
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from mqttproc import connect_packet, fd_count, free_port, rss_kib, wait_listening

IP_BIND_ADDRESS_NO_PORT = 24  # Linux: pick the source port at connect(), not at bind()
FD_MARGIN = 256






DISCONNECT = b"\xe0\x00"


def hard_nofile():
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def raise_nofile():
    """Soft limit to the hard limit (inherited by children)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def start_broker(name, midge, port, workdir, shards):
    if name == "midge":
        conf = f"listener {port} 127.0.0.1\nallow_anonymous true\nlog_dest none\n"
        if shards:
            conf += f"shards {shards}\n"
        cmd = [midge, "-c", "midge.conf"]
        fname = "midge.conf"
    elif name == "mosquitto":
        conf = (f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                "connection_messages false\nlog_dest none\nmax_connections -1\n")
        cmd = [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", "mosquitto.conf"]
        fname = "mosquitto.conf"
    else:
        raise SystemExit(f"unknown broker {name}")
    with open(os.path.join(workdir, fname), "w") as f:
        f.write(conf)
    log = open(os.path.join(workdir, f"{name}.log"), "w")
    p = subprocess.Popen(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                         preexec_fn=raise_nofile)
    try:
        wait_listening(port, p)
    except RuntimeError as e:
        raise SystemExit(f"{name}: {e}; see {log.name}")
    return p


def stop_broker(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def source_addr(worker, i, per_addr):
    """127.0.0.(2 + k): a new source address every `per_addr` connections of a worker."""
    k = (worker * 7 + i // per_addr) % 250
    return f"127.0.0.{2 + k}"


def new_socket(src):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.bind((src, 0))
    return s


# ---------------------------------------------------------------- (a) idle connections

def idle_worker(worker, port, count, timeout, conn, release):
    """Opens `count` connections, reports, holds them until `release` is set, closes them."""
    raise_nofile()
    socks, failures, first_error = [], 0, None
    t0 = time.time()
    sel = selectors.DefaultSelector()
    pending = {}
    i = 0
    # Up to 256 handshakes in flight at a time: fast, without flooding the accept backlog.
    while (i < count or pending) and time.time() - t0 < timeout:
        while i < count and len(pending) < 256:
            try:
                s = new_socket(source_addr(worker, i, 20000))
                s.setblocking(False)
                try:
                    s.connect(("127.0.0.1", port))
                except BlockingIOError:
                    pass
                sel.register(s, selectors.EVENT_WRITE, (i, b""))
                pending[s] = time.time()
            except OSError as e:
                failures += 1
                first_error = first_error or repr(e)
            i += 1
        for key, ev in sel.select(timeout=0.5):
            s = key.fileobj
            idx, got = key.data
            try:
                if ev & selectors.EVENT_WRITE and not got and key.events == selectors.EVENT_WRITE:
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise OSError(err, os.strerror(err))
                    s.send(connect_packet(f"idle-{worker}-{idx}"))
                    sel.modify(s, selectors.EVENT_READ, (idx, b""))
                    continue
                data = s.recv(4)
                if not data:
                    raise OSError("closed before CONNACK")
                got += data
                if len(got) < 4:
                    sel.modify(s, selectors.EVENT_READ, (idx, got))
                    continue
                if got[0] != 0x20 or got[3] != 0:
                    raise OSError(f"CONNACK {got!r}")
                sel.unregister(s)
                del pending[s]
                socks.append(s)
            except OSError as e:
                failures += 1
                first_error = first_error or repr(e)
                sel.unregister(s)
                del pending[s]
                s.close()
        now = time.time()
        for s, since in list(pending.items()):
            if now - since > 10:
                failures += 1
                first_error = first_error or "no CONNACK within 10 s"
                sel.unregister(s)
                del pending[s]
                s.close()
    for s in list(pending):
        s.close()
        failures += 1
    conn.send({"worker": worker, "connected": len(socks), "failures": failures,
               "first_error": first_error, "seconds": time.time() - t0})
    release.wait(600)
    for s in socks:
        s.close()


def idle_run(name, args, workdir, n):
    port = free_port()
    p = start_broker(name, args.midge, port, workdir, args.shards if name == "midge" else None)
    per_worker = max(1, hard_nofile() - FD_MARGIN)
    workers = max(args.workers, -(-n // per_worker))
    shares = [n // workers + (1 if w < n % workers else 0) for w in range(workers)]
    release = mp.Event()
    procs, pipes = [], []
    try:
        time.sleep(1)
        before = rss_kib(p.pid)
        fds_before = fd_count(p.pid)
        t0 = time.time()
        for w, share in enumerate(shares):
            a, b = mp.Pipe(duplex=False)
            pr = mp.Process(target=idle_worker, args=(w, port, share, args.timeout, b, release))
            pr.start()
            procs.append(pr)
            pipes.append(a)
        reports = []
        for a in pipes:
            if a.poll(args.timeout + 30):
                reports.append(a.recv())
        took = time.time() - t0
        connected = sum(r["connected"] for r in reports)
        failures = sum(r["failures"] for r in reports)
        errors = [r["first_error"] for r in reports if r["first_error"]]
        time.sleep(args.settle)
        alive = p.poll() is None
        after = rss_kib(p.pid) if alive else 0
        peak = rss_kib(p.pid, "VmHWM:") if alive else 0
        fds_after = fd_count(p.pid)
        per = (after - before) * 1024 / connected if connected else 0
        res = {"broker": name, "requested": n, "connected": connected, "failures": failures,
               "errors": errors[:3], "connect_seconds": round(took, 2),
               "rss_before_kib": before, "rss_after_kib": after, "rss_peak_kib": peak,
               "fds_before": fds_before, "fds_after": fds_after,
               "rss_per_connection_bytes": round(per), "alive": alive}
        print(f"idle  {name:9} connected={connected}/{n} failures={failures} in {took:.1f} s "
              f"rss {before / 1024:.1f} -> {after / 1024:.1f} MiB (peak {peak / 1024:.1f}) "
              f"fds {fds_before} -> {fds_after}  per connection {per:.0f} B", flush=True)
        if errors:
            print(f"      first errors: {errors[:3]}", flush=True)
        return res
    finally:
        release.set()
        for pr in procs:
            pr.join(30)
            if pr.is_alive():
                pr.kill()
        stop_broker(p)


# ---------------------------------------------------------------- (b) connect storm

def storm_worker(worker, port, rate, seconds, conn):
    """Opens connections at `rate`/s for `seconds` (open loop), each CONNECT -> CONNACK ->
    DISCONNECT -> close; reports latencies and failures."""
    raise_nofile()
    sel = selectors.DefaultSelector()
    lat, failures, errors = [], 0, {}
    pending = {}
    t0 = time.time()
    end = t0 + seconds
    issued = 0
    interval = 1.0 / rate

    def fail(s, why):
        nonlocal failures
        failures += 1
        errors[why] = errors.get(why, 0) + 1
        try:
            sel.unregister(s)
        except (KeyError, ValueError):
            pass
        pending.pop(s, None)
        s.close()

    while time.time() < end + 5 and (time.time() < end or pending):
        now = time.time()
        due = min(int((min(now, end) - t0) / interval), int(rate * seconds))
        while issued < due:
            try:
                s = new_socket(source_addr(worker, issued, 15000))
                s.setblocking(False)
                started = time.time()
                try:
                    s.connect(("127.0.0.1", port))
                except BlockingIOError:
                    pass
                sel.register(s, selectors.EVENT_WRITE, [started, b"", True])
                pending[s] = started
            except OSError as e:
                failures += 1
                k = type(e).__name__ + ":" + str(e.errno)
                errors[k] = errors.get(k, 0) + 1
            issued += 1
        for key, ev in sel.select(timeout=0.002):
            s = key.fileobj
            state = key.data
            try:
                if state[2]:
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        fail(s, os.strerror(err))
                        continue
                    s.send(connect_packet(f"storm-{worker}-{issued}-{id(s)}", 60))
                    state[2] = False
                    sel.modify(s, selectors.EVENT_READ, state)
                    continue
                data = s.recv(4)
                if not data:
                    fail(s, "closed before CONNACK")
                    continue
                state[1] += data
                if len(state[1]) < 4:
                    continue
                if state[1][0] != 0x20 or state[1][3] != 0:
                    fail(s, f"CONNACK rc {state[1][3]}")
                    continue
                lat.append(time.time() - state[0])
                try:
                    s.send(DISCONNECT)
                except OSError:
                    pass
                sel.unregister(s)
                pending.pop(s, None)
                s.close()
            except OSError as e:
                fail(s, e.strerror or repr(e))
        now = time.time()
        for s, since in list(pending.items()):
            if now - since > 5:
                fail(s, "no CONNACK within 5 s")
    for s in list(pending):
        fail(s, "no CONNACK by the end")
    conn.send({"issued": issued, "ok": len(lat), "failures": failures, "errors": errors,
               "latencies": lat, "first": t0, "elapsed": time.time() - t0})


def pct(xs, q):
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def storm_run(name, args, workdir):
    port = free_port()
    p = start_broker(name, args.midge, port, workdir, args.shards if name == "midge" else None)
    procs, pipes = [], []
    try:
        time.sleep(1)
        fds_before = fd_count(p.pid)
        w = args.storm_workers
        for i in range(w):
            a, b = mp.Pipe(duplex=False)
            pr = mp.Process(target=storm_worker,
                            args=(i, port, args.storm_rate / w, args.storm_seconds, b))
            pr.start()
            procs.append(pr)
            pipes.append(a)
        reports = [a.recv() for a in pipes if a.poll(args.storm_seconds + 60)]
        lat = [x for r in reports for x in r["latencies"]]
        ok = sum(r["ok"] for r in reports)
        issued = sum(r["issued"] for r in reports)
        failures = sum(r["failures"] for r in reports)
        errors = {}
        for r in reports:
            for k, v in r["errors"].items():
                errors[k] = errors.get(k, 0) + v
        time.sleep(2)
        alive = p.poll() is None
        res = {"broker": name, "target_rate": args.storm_rate, "seconds": args.storm_seconds,
               "offered": issued, "offered_per_sec": round(issued / args.storm_seconds),
               "connacks": ok, "connacks_per_sec": round(ok / args.storm_seconds),
               "failures": failures, "errors": errors,
               "latency_ms_p50": round(pct(lat, 0.50) * 1000, 2),
               "latency_ms_p99": round(pct(lat, 0.99) * 1000, 2),
               "latency_ms_max": round(max(lat) * 1000, 2) if lat else 0,
               "fds_before": fds_before, "fds_after": fd_count(p.pid),
               "rss_peak_kib": rss_kib(p.pid, "VmHWM:") if alive else 0, "alive": alive}
        print(f"storm {name:9} offered {res['offered_per_sec']}/s (target {args.storm_rate}/s) "
              f"CONNACKs {res['connacks_per_sec']}/s  p50 {res['latency_ms_p50']} ms "
              f"p99 {res['latency_ms_p99']} ms max {res['latency_ms_max']} ms "
              f"failures {failures} {errors or ''} fds {fds_before} -> {res['fds_after']}",
              flush=True)
        return res
    finally:
        for pr in procs:
            pr.join(30)
            if pr.is_alive():
                pr.kill()
        stop_broker(p)


def markdown(out, args, n, idle, storm):
    lines = [f"# Scale: idle connections and a connect storm ({time.strftime('%Y-%m-%d %H:%M')})",
             "", "Command:", "", "```", " ".join(["python3"] + sys.argv), "```", "",
             f"Machine: {os.cpu_count()} cores; open-file hard limit {hard_nofile()}.", ""]
    if n < args.n:
        lines += [f"**Only {n} of the {args.n} requested connections**: the broker process "
                  f"cannot hold more descriptors than its hard limit ({hard_nofile()}) and "
                  "this machine does not allow raising it.", ""]
    if idle:
        lines += ["## Idle connections", "",
                  "| broker | connected | failures | RSS before | RSS after | per connection |",
                  "|---|--:|--:|--:|--:|--:|"]
        for r in idle:
            lines.append(f"| {r['broker']} | {r['connected']} | {r['failures']} | "
                         f"{r['rss_before_kib'] / 1024:.1f} MiB | {r['rss_after_kib'] / 1024:.1f} MiB"
                         f" | {r['rss_per_connection_bytes']} B |")
        lines.append("")
    if storm:
        lines += ["## Connect storm (CONNECT, CONNACK, DISCONNECT, close)", "",
                  "| broker | offered/s | CONNACK/s | p50 ms | p99 ms | max ms | failures |",
                  "|---|--:|--:|--:|--:|--:|--:|"]
        for r in storm:
            lines.append(f"| {r['broker']} | {r['offered_per_sec']} | {r['connacks_per_sec']} | "
                         f"{r['latency_ms_p50']} | {r['latency_ms_p99']} | {r['latency_ms_max']} | "
                         f"{r['failures']} {r['errors'] or ''} |")
        lines += ["", f"Target {args.storm_rate}/s for {args.storm_seconds} s from "
                  f"{args.storm_workers} Python client processes; when 'offered/s' is below "
                  "the target the clients, not the broker, were the limit."]
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("brokers", nargs="*", default=["midge", "mosquitto"])
    ap.add_argument("-n", type=int, default=100000, help="idle connections (default 100000)")
    ap.add_argument("--midge", default="target/release/midge")
    ap.add_argument("--shards", type=int, default=None, help="midge shards (default: cores)")
    ap.add_argument("--workers", type=int, default=4, help="client processes, at least")
    ap.add_argument("--settle", type=float, default=3.0)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds allowed to connect")
    ap.add_argument("--storm-rate", type=int, default=10000, help="connects per second")
    ap.add_argument("--storm-seconds", type=float, default=10.0)
    ap.add_argument("--storm-workers", type=int, default=2,
                    help="client processes for the storm (default 2: more starve the broker of CPU on a 2-core machine)")
    ap.add_argument("--skip-idle", action="store_true")
    ap.add_argument("--skip-storm", action="store_true")
    ap.add_argument("--out", default=None, help="directory for summary.json and summary.md")
    args = ap.parse_args()
    args.midge = os.path.abspath(args.midge)
    raise_nofile()
    hard = hard_nofile()
    n = args.n
    if hard != resource.RLIM_INFINITY and hard - FD_MARGIN < n:
        n = hard - FD_MARGIN
        print(f"WARNING: open-file hard limit {hard}: a broker can hold at most {n} "
              f"connections here, not {args.n} (raising it needs CAP_SYS_RESOURCE); "
              "measuring with that many", flush=True)
    idle, storm = [], []
    with tempfile.TemporaryDirectory(prefix="scale-") as workdir:
        if not args.skip_idle:
            for name in args.brokers:
                idle.append(idle_run(name, args, workdir, n))
        if not args.skip_storm:
            for name in args.brokers:
                storm.append(storm_run(name, args, workdir))
    by = {r["broker"]: r for r in idle}
    if "midge" in by and "mosquitto" in by and by["mosquitto"]["rss_per_connection_bytes"]:
        print(f"midge: {by['midge']['rss_per_connection_bytes'] / by['mosquitto']['rss_per_connection_bytes']:.2f}x "
              "mosquitto's RSS per idle connection")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "summary.json"), "w") as f:
            json.dump({"command": sys.argv, "requested": args.n, "connections": n,
                       "nofile_hard_limit": hard, "idle": idle, "storm": storm}, f, indent=2)
        markdown(args.out, args, n, idle, storm)
        print(f"wrote {args.out}/summary.json and summary.md")


if __name__ == "__main__":
    sys.exit(main())
