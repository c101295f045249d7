#!/usr/bin/env python3
"""Where a point-to-point message's broker CPU goes: system calls and kernel time per message.

Issue 7's point-to-point rows ask for broker CPU per delivered message at 0.15x (QoS 0) and
0.12x (QoS 1) of mosquitto's. This script shows what bounds that on the machine it runs on:
for midge (one shard) and mosquitto, both driven by the same loadgen scenario (1000 pairs,
64 B, closed loop, window 4), it counts the broker's socket system calls with `perf stat`
tracepoints and splits its CPU into user and kernel time from /proc/PID/stat. Kernel time
per system call times system calls per message is a floor no user-space change goes under.

Usage: loadgen/scripts/syscalls.py [--repeats N] [--out results]
Needs: cargo build --release (midge and loadgen), Debian's mosquitto and linux-perf (the
syscalls tracepoints readable: run as root or with kernel.perf_event_paranoid <= 1).
Writes results/syscalls-<timestamp>/summary.md and runs.json.
"""

import argparse
import glob
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from mqttproc import cpu_times, free_port, wait_listening

EVENTS = [
    "read", "recvfrom", "recvmsg", "readv",
    "write", "sendto", "sendmsg", "writev",
    "epoll_wait", "epoll_pwait", "epoll_ctl",
]
BROKERS = {
    "midge-1shard": ("target/release/midge", "shards 1\n"),
    "mosquitto": ("/usr/sbin/mosquitto", "set_tcp_nodelay true\n"),
}
LIMITS = "max_queued_messages 100000\nmax_inflight_messages 100\n"





def one_run(name, qos, work, out_root):
    binary, extra = BROKERS[name]
    port = free_port()
    conf = os.path.join(work, f"{name}.conf")
    with open(conf, "w") as f:
        f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\n{LIMITS}{extra}")
    log = open(os.path.join(work, f"{name}.log"), "w")
    broker = subprocess.Popen([binary, "-c", conf], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_listening(port, broker)
        events = ",".join(f"syscalls:sys_enter_{e}" for e in EVENTS)
        perf_out = os.path.join(work, "perf.csv")
        perf = subprocess.Popen(
            ["perf", "stat", "-x", ",", "-e", events, "-p", str(broker.pid), "-o", perf_out])
        time.sleep(0.3)
        u0, s0 = cpu_times(broker.pid)
        run_dir = os.path.join(work, "loadgen")
        subprocess.run(
            ["target/release/loadgen", "run", "--scenario", "p2p", "--clients", "1000",
             "--qos", str(qos), "--rate", "max", "--window", "4", "--threads", "2",
             "--warmup", "2", "--duration", "5", "--drain", "1", "--quiet",
             "--broker", f"{name}=127.0.0.1:{port},pid={broker.pid}", "--out", run_dir],
            check=True)
        u1, s1 = cpu_times(broker.pid)
        perf.send_signal(signal.SIGINT)
        perf.wait(timeout=10)
        counts = {}
        for line in open(perf_out):
            parts = line.strip().split(",")
            if len(parts) > 2 and parts[2].startswith("syscalls:sys_enter_"):
                counts[parts[2].removeprefix("syscalls:sys_enter_")] = (
                    int(parts[0]) if parts[0].isdigit() else 0)
        newest = sorted(glob.glob(os.path.join(run_dir, "run-*", "runs", "*.json")))[-1]
        result = json.load(open(newest))
        os.remove(newest)
    finally:
        broker.terminate()
        broker.wait(timeout=10)
    c = result["counters"]
    # Every delivery of the whole run (warm-up and drain too), as the counts cover it all.
    delivered = c["received"] + c["received_unmeasured"] + c["duplicates"]
    reads = sum(counts.get(e, 0) for e in ("read", "recvfrom", "recvmsg", "readv"))
    writes = sum(counts.get(e, 0) for e in ("write", "sendto", "sendmsg", "writev"))
    polls = sum(counts.get(e, 0) for e in ("epoll_wait", "epoll_pwait", "epoll_ctl"))
    calls = reads + writes + polls
    user, system = u1 - u0, s1 - s0
    return {
        "broker": name, "qos": qos, "delivered": delivered, "lost": result["lost"],
        "msgs_per_s": result["throughput_msgs_s"], "syscalls": counts,
        "user_s": user, "system_s": system,
        "cpu_us_per_msg": (user + system) * 1e6 / delivered,
        "system_share": system / (user + system) if user + system else 0.0,
        "reads_per_msg": reads / delivered, "writes_per_msg": writes / delivered,
        "syscalls_per_msg": calls / delivered,
        "system_us_per_syscall": system * 1e6 / calls if calls else 0.0,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="results")
    args = ap.parse_args()
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = os.path.join(args.out, f"syscalls-{stamp}")
    runs = []
    with tempfile.TemporaryDirectory(prefix="midge-syscalls.") as work:
        for rep in range(args.repeats):
            for qos in (0, 1):
                for name in BROKERS:
                    r = one_run(name, qos, work, out)
                    r["repeat"] = rep
                    runs.append(r)
                    print(f"{name} QoS {qos}: {r['msgs_per_s']:.0f} msg/s, "
                          f"{r['cpu_us_per_msg']:.2f} us/msg ({r['system_share']:.0%} kernel), "
                          f"{r['syscalls_per_msg']:.2f} syscalls/msg, "
                          f"{r['system_us_per_syscall']:.1f} us kernel/syscall, lost {r['lost']}",
                          flush=True)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "runs.json"), "w") as f:
        json.dump(runs, f, indent=1)
    med = lambda rows, k: statistics.median(r[k] for r in rows)
    lines = [
        "# Broker system calls and kernel time per point-to-point message",
        "",
        f"`loadgen/scripts/syscalls.py --repeats {args.repeats}`: 1000 pairs, 64 B, closed loop,"
        " window 4, loadgen with 2 threads on the same 2 cores; counts from `perf stat`"
        " syscall tracepoints on the broker's PID, CPU from /proc/PID/stat, over the whole run"
        " (warm-up and drain included). Medians of the repeats; ratios to mosquitto are of"
        " the medians.",
        "",
        "| QoS | broker | CPU us/msg | ratio | kernel share | reads/msg | writes/msg |"
        " syscalls/msg | kernel us/syscall | user us/msg | msg/s | lost |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for qos in (0, 1):
        base = med([r for r in runs if r["qos"] == qos and r["broker"] == "mosquitto"],
                   "cpu_us_per_msg")
        for name in BROKERS:
            rows = [r for r in runs if r["qos"] == qos and r["broker"] == name]
            cpu = med(rows, "cpu_us_per_msg")
            user = statistics.median(r["user_s"] * 1e6 / r["delivered"] for r in rows)
            lines.append(
                f"| {qos} | {name} | {cpu:.2f} | {cpu / base:.2f} | {med(rows, 'system_share'):.0%}"
                f" | {med(rows, 'reads_per_msg'):.2f} | {med(rows, 'writes_per_msg'):.2f}"
                f" | {med(rows, 'syscalls_per_msg'):.2f} | {med(rows, 'system_us_per_syscall'):.1f}"
                f" | {user:.2f} | {med(rows, 'msgs_per_s'):,.0f} | {sum(r['lost'] for r in rows)} |")
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
