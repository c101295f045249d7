#!/usr/bin/env python3
"""Bridged throughput: publish N messages on a local broker, read them on a remote
mosquitto through a bridge (`topic b/# out QOS`); midge -> mosquitto against
mosquitto -> mosquitto in the same run, R rounds each, medians reported.

Publisher: one `mosquitto_pub -l` (N lines). Reader: `mosquitto_sub -C N` on the remote,
subscribed before the publisher starts. Measured: wall time from the publisher's start to
the reader's N-th message, and the local broker's CPU time (utime+stime from /proc) over
the run, per message.

Usage: run.py MIDGE_BINARY [N] [ROUNDS]
"""
import os, socket, statistics, subprocess, sys, tempfile, time

MIDGE = sys.argv[1]
N = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, limit=10):
    end = time.time() + limit
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port}")


def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK


def start(cmd, conf_text, d, name):
    path = os.path.join(d, name + ".conf")
    open(path, "w").write(conf_text)
    log = open(os.path.join(d, name + ".log"), "w")
    return subprocess.Popen(cmd + ["-c", path], stdout=log, stderr=subprocess.STDOUT)


def round_(kind, qos, d):
    rport, lport = free_port(), free_port()
    remote = start(["mosquitto"], f"listener {rport} 127.0.0.1\nallow_anonymous true\n"
                   "max_queued_messages 0\n", d, f"remote-{kind}")
    wait_port(rport)
    bridge = (f"listener {lport} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
              f"connection b\naddress 127.0.0.1:{rport}\ntopic b/# out {qos}\n"
              "cleansession true\nnotifications false\n")
    cmd = [MIDGE] if kind == "midge" else ["mosquitto"]
    local = start(cmd, bridge, d, f"local-{kind}")
    wait_port(lport)
    time.sleep(1.0)  # the bridge connects
    reader = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(rport), "-t", "b/#",
                               "-q", str(qos), "-C", str(N), "-W", "120"],
                              stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    lines = "".join(f"{i}\n" for i in range(N)).encode()
    c0, t0 = cpu(local.pid), time.time()
    pub = subprocess.Popen(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(lport), "-t", "b/x",
                            "-q", str(qos), "-l"], stdin=subprocess.PIPE)
    pub.communicate(lines, timeout=120)
    ok = reader.wait(timeout=120) == 0
    wall, c1 = time.time() - t0, cpu(local.pid)
    for p in (local, remote):
        p.terminate()
        p.wait(timeout=10)
    if not ok:
        raise SystemExit(f"{kind}: the reader did not get {N} messages")
    return N / wall, (c1 - c0) / N * 1e6


def main():
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o777)
        print(f"N={N} messages per round, {ROUNDS} rounds, medians")
        print("| local broker | QoS | msg/s through the bridge | local CPU us/msg |")
        print("|---|---|---|---|")
        for qos in (0, 1):
            for kind in ("midge", "mosquitto"):
                runs = [round_(kind, qos, d) for _ in range(ROUNDS)]
                rate = statistics.median(r[0] for r in runs)
                us = statistics.median(r[1] for r in runs)
                print(f"| {kind} | {qos} | {rate:,.0f} | {us:.1f} |", flush=True)


main()
