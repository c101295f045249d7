#!/usr/bin/env python3
"""Does loadgen agree with an independent tool? The same three scenarios, against the same
running broker, measured by loadgen and by a separate client written on paho-mqtt (Python),
then one table of both tools' figures and whether they agree.

Neither emqtt-bench (Erlang) nor mqtt-benchmark (Go) is in a registry this machine reaches, so
the independent tool is paho-mqtt at low rates, where Python keeps up: 20 clients at 10 msg/s
each. Each scenario runs against one broker process: first paho, then loadgen (`loadgen run
--broker NAME=127.0.0.1:PORT,pid=PID`), so that both read the same broker's CPU.

What should agree, and what cannot:
- delivered messages per second and losses: both count distinct deliveries of a fixed offered
  rate, so they must match (within 5 %), and both must lose nothing;
- broker CPU per message: both read the broker's /proc (schedstat); the clients speak the same
  packets, so it should agree within the spread of repeats (25 % is allowed: at 200 msg/s a
  5 s window holds a few tens of milliseconds of broker CPU);
- latency cannot agree: paho's callbacks run in Python threads behind one interpreter lock, so
  its figures include milliseconds of client-side scheduling that loadgen's engine does not
  add. The table shows both; loadgen's p50 must be the lower one, and paho's p50 is reported as
  the upper bound it is.

    python3 loadgen/scripts/agreement.py --out results/agreement-YYYYMMDD midge mosquitto

Bounded: three scenarios x brokers x 3 repeats, each ~8 s per tool (about 5 minutes for two brokers); every socket on 127.0.0.1;
brokers started here and stopped by PID.
"""
import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import paho.mqtt.client as mqtt

from mqttproc import free_port, wait_listening

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# (name, loadgen shape, publishers, subscribers, qos, rate per publisher)
SCENARIOS = [
    ("p2p", "p2p", 20, 20, 0, 10.0),
    ("fan-in", "fan-in", 20, 1, 1, 10.0),
    ("fan-out", "fan-out", 1, 20, 0, 10.0),
]
WARMUP_S = 1.0
MEASURE_S = 5.0
DRAIN_S = 1.0


def schedstat_ns(pid):
    """Run time of all threads of PID in nanoseconds (the figure loadgen reads too)."""
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path) as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def start_broker(name, midge, workdir):
    port = free_port()
    conf = os.path.join(workdir, f"{name}.conf")
    common = (
        f"listener {port} 127.0.0.1\nallow_anonymous true\n"
        "max_queued_messages 100000\nmax_inflight_messages 100\n"
    )
    if name == "midge":
        binary = midge
        text = common + "log_dest none\n"
    elif name == "mosquitto":
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        text = common + "persistence false\nset_tcp_nodelay true\nlog_dest none\n"
    else:
        sys.exit(f"unknown broker {name} (midge or mosquitto)")
    with open(conf, "w") as f:
        f.write(text)
    proc = subprocess.Popen([binary, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(port, proc)
    return proc, port


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100.0 * len(sorted_values))) - 1))
    return sorted_values[k]


def paho_run(port, pid, shape, pubs, subs, qos, rate):
    """Open loop at `rate` per publisher; latency from each message's intended send time."""
    tag = f"agree{os.getpid()}{int(time.time() * 1000) % 100000}"
    lock = threading.Lock()
    state = {"measuring": False, "lat": [], "seen": set(), "dup": 0}
    t0 = time.monotonic()
    measure_from = t0 + WARMUP_S + 0.5
    measure_to = measure_from + MEASURE_S

    def topic_for(i):
        if shape == "p2p":
            return f"{tag}/p2p/{i}"
        return f"{tag}/{shape}"

    def on_message(client, userdata, msg):
        now = time.monotonic()
        pub, seq, intended = msg.payload[:48].split(b" ", 3)[:3]
        intended = float(intended)
        if measure_from <= intended < measure_to:
            with lock:
                key = (userdata, int(pub), int(seq))
                if key in state["seen"]:
                    state["dup"] += 1
                else:
                    state["seen"].add(key)
                    state["lat"].append((now - intended) * 1e6)

    def client(cid, userdata=None):
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, clean_session=True, userdata=userdata)
        c.max_inflight_messages_set(100)
        c.connect("127.0.0.1", port, keepalive=60)
        return c

    sub_clients = []
    for i in range(subs):
        c = client(f"{tag}-s{i}", userdata=i)
        c.on_message = on_message
        c.loop_start()
        topic = topic_for(i) if shape == "p2p" else topic_for(0)
        done = threading.Event()
        c.on_subscribe = lambda *a, done=done: done.set()
        c.subscribe(topic, qos)
        if not done.wait(5):
            raise RuntimeError("SUBACK not received")
        sub_clients.append(c)
    pub_clients = [client(f"{tag}-p{i}") for i in range(pubs)]
    for c in pub_clients:
        c.loop_start()

    def publisher(i, c):
        interval = 1.0 / rate
        # Publishers start staggered across one interval, as loadgen's do.
        start = t0 + 0.5 + interval * i / pubs
        n = 0
        end = measure_to + 0.001
        while True:
            intended = start + n * interval
            if intended >= end:
                return
            delay = intended - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            # 64 bytes, as loadgen's payload: publisher, sequence, intended time, padding.
            c.publish(topic_for(i), f"{i} {n} {intended:.6f} ".encode().ljust(64, b"x"), qos=qos)
            n += 1

    threads = [threading.Thread(target=publisher, args=(i, c)) for i, c in enumerate(pub_clients)]
    cpu0 = cpu1 = None
    for t in threads:
        t.start()
    time.sleep(max(0.0, measure_from - time.monotonic()))
    cpu0 = schedstat_ns(pid)
    time.sleep(max(0.0, measure_to - time.monotonic()))
    cpu1 = schedstat_ns(pid)
    for t in threads:
        t.join()
    time.sleep(DRAIN_S)
    for c in pub_clients + sub_clients:
        c.disconnect()
        c.loop_stop()
    per_pub = int(MEASURE_S * rate)
    copies = 1 if shape in ("p2p", "fan-in") else subs
    expected = pubs * per_pub * copies
    lat = sorted(state["lat"])
    received = len(lat)
    return {
        "throughput": received / MEASURE_S,
        "expected": expected,
        "lost": max(0, expected - received),
        "dup": state["dup"],
        "p50_us": percentile(lat, 50),
        "p99_us": percentile(lat, 99),
        "cpu_us_per_msg": (cpu1 - cpu0) / 1000.0 / max(1, received),
    }


def loadgen_run(loadgen, port, pid, name, shape, pubs, subs, qos, rate, workdir):
    out = os.path.join(workdir, f"lg-{name}-{shape}")
    cmd = [loadgen, "run", "--scenario", shape, "--qos", str(qos), "--rate", str(rate),
           "--payload", "64", "--warmup", str(WARMUP_S), "--duration", str(MEASURE_S),
           "--drain", str(DRAIN_S), "--min-messages", "0", "--min-cpu-ms", "0",
           "--broker", f"{name}=127.0.0.1:{port},pid={pid}", "--out", out, "-q"]
    if shape == "p2p":
        cmd += ["--clients", str(pubs)]
    elif shape == "fan-in":
        cmd += ["--clients", str(pubs), "--subscribers", str(subs)]
    else:
        cmd += ["--clients", str(subs), "--publishers", str(pubs)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    runs = glob.glob(os.path.join(out, "*", "runs", "*.json"))
    if len(runs) != 1:
        raise RuntimeError(f"expected one loadgen run in {out}, found {runs}")
    with open(runs[0]) as f:
        r = json.load(f)
    return {
        "throughput": r["throughput_msgs_s"],
        "expected": None,
        "lost": r["lost"],
        "dup": r["counters"].get("duplicates", 0),
        "p50_us": r["latency"]["p50_us"],
        "p99_us": r["latency"]["p99_us"],
        "cpu_us_per_msg": (r.get("broker_cpu") or {}).get("us_per_msg", float("nan")),
        "measured_s": r["measured_s"],
    }


def median_of(runs):
    """Each figure's median over repeated runs (and the throughput's range, for the note)."""
    out = {}
    for k in runs[0]:
        vals = sorted(r[k] for r in runs if r[k] is not None)
        out[k] = vals[len(vals) // 2] if vals else None
    out["cpu_range"] = (min(r["cpu_us_per_msg"] for r in runs), max(r["cpu_us_per_msg"] for r in runs))
    return out


def verdict(p, l):
    notes = []
    tp_ok = abs(p["throughput"] - l["throughput"]) <= 0.05 * max(p["throughput"], l["throughput"])
    notes.append("throughput agrees" if tp_ok else "THROUGHPUT DIFFERS")
    loss_ok = p["lost"] == 0 and l["lost"] == 0 and p["dup"] == 0 and l["dup"] == 0
    notes.append("no loss in either" if loss_ok else "LOSS/DUP")
    # CPU per message agrees when the medians are within 25 % or the repeats' ranges overlap.
    (plo, phi), (llo, lhi) = p["cpu_range"], l["cpu_range"]
    cpu_ok = (abs(p["cpu_us_per_msg"] - l["cpu_us_per_msg"])
              <= 0.25 * max(p["cpu_us_per_msg"], l["cpu_us_per_msg"])) or (plo <= lhi and llo <= phi)
    notes.append("CPU/msg agrees" if cpu_ok else "CPU/msg differs")
    lat_ok = l["p50_us"] <= p["p50_us"]
    notes.append("loadgen p50 below paho's" if lat_ok else "LOADGEN P50 ABOVE PAHO'S")
    return tp_ok and loss_ok and lat_ok, cpu_ok, "; ".join(notes)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("brokers", nargs="*", default=["midge", "mosquitto"])
    ap.add_argument("--midge", default=os.path.join(ROOT, "target/release/midge"))
    ap.add_argument("--loadgen", default=os.path.join(ROOT, "target/release/loadgen"))
    ap.add_argument("--repeat", type=int, default=3, help="runs of each tool per scenario (medians)")
    ap.add_argument("--out", help="directory for README.md and results.json (default: print only)")
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="agreement-")
    rows = []
    try:
        for name in args.brokers:
            for label, shape, pubs, subs, qos, rate in SCENARIOS:
                proc, port = start_broker(name, args.midge, workdir)
                pr, lr = [], []
                try:
                    # The tools alternate on one broker process, so that both see it alike.
                    for rep in range(args.repeat):
                        pr.append(paho_run(port, proc.pid, shape, pubs, subs, qos, rate))
                        lr.append(loadgen_run(args.loadgen, port, proc.pid, name, shape, pubs, subs,
                                              qos, rate, os.path.join(workdir, str(rep))))
                finally:
                    proc.terminate()
                    proc.wait(timeout=10)
                p, l = median_of(pr), median_of(lr)
                core_ok, cpu_ok, why = verdict(p, l)
                rows.append({"broker": name, "scenario": f"{label} {pubs}->{subs} q{qos} {rate:g}/s",
                             "paho": p, "loadgen": l, "paho_runs": pr, "loadgen_runs": lr,
                             "agree": core_ok, "cpu_agrees": cpu_ok, "why": why})
                print(f"{name:10} {label:8} paho {p['throughput']:.0f}/s p50 {p['p50_us']:.0f}us "
                      f"cpu {p['cpu_us_per_msg']:.1f}us | loadgen {l['throughput']:.0f}/s "
                      f"p50 {l['p50_us']:.0f}us cpu {l['cpu_us_per_msg']:.1f}us -> {why}", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    lines = ["| broker | scenario | msg/s paho / loadgen | lost+dup paho / loadgen | p50 us paho / loadgen | "
             "p99 us paho / loadgen | broker CPU us/msg paho / loadgen, median [range] | verdict |", "|---" * 8 + "|"]
    for r in rows:
        p, l = r["paho"], r["loadgen"]
        lines.append(
            f"| {r['broker']} | {r['scenario']} | {p['throughput']:.1f} / {l['throughput']:.1f} | "
            f"{p['lost'] + p['dup']} / {l['lost'] + l['dup']} | {p['p50_us']:.0f} / {l['p50_us']:.0f} | "
            f"{p['p99_us']:.0f} / {l['p99_us']:.0f} | {p['cpu_us_per_msg']:.1f} [{p['cpu_range'][0]:.1f}-{p['cpu_range'][1]:.1f}] / "
            f"{l['cpu_us_per_msg']:.1f} [{l['cpu_range'][0]:.1f}-{l['cpu_range'][1]:.1f}] | {r['why']} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump(rows, f, indent=1)
        with open(os.path.join(args.out, "table.md"), "w") as f:
            f.write(table + "\n")
    return 0 if all(r["agree"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
