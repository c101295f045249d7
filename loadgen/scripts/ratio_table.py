#!/usr/bin/env python3
"""A Markdown table of a suite's cells from its summary.json: for each broker named with
--vs, the ratio of its median CPU per message, p50 and p99 to the baseline's (--to), with the
ratios above 1.0 in bold, the baseline's own figures, and a count of the cells at or below 1.0.

    python3 loadgen/scripts/ratio_table.py results/DIR/summary.json --to mosquitto \
        --vs midge --vs midge-io_uring [--fixed-rate]

--fixed-rate leaves out the closed-loop (mode "max") cells. Medians are loadgen's (over the
repeats); a figure loadgen marked unreliable carries ⚠.
"""
import argparse
import json
import sys


def figure(entry, key):
    f = entry.get(key) or {}
    return f.get("median"), bool(f.get("unreliable"))


def ratio_cell(mine, base):
    (m, mu), (b, bu) = mine, base
    if m is None or not b:
        return "–"
    r = m / b
    text = f"{r:.2f}"
    if r > 1.0:
        text = f"**{text}**"
    return text + (" ⚠" if mu or bu else "")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("summary")
    ap.add_argument("--to", required=True, help="the baseline broker")
    ap.add_argument("--vs", action="append", required=True, help="a broker to compare")
    ap.add_argument("--fixed-rate", action="store_true", help="leave out closed-loop cells")
    a = ap.parse_args()
    summary = json.load(open(a.summary))
    head = ["cell", "msg/s", f"{a.to} CPU µs/msg", f"{a.to} p50 / p99 µs"]
    for v in a.vs:
        head.append(f"{v}: CPU / p50 / p99 (x {a.to})")
    head.append("lost")
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    within = {v: [0, 0] for v in a.vs}
    for cell in summary["cells"]:
        if a.fixed_rate and cell["scenario"].get("mode") == "max":
            continue
        by = {b["broker"]: b for b in cell["brokers"]}
        base = by.get(a.to)
        if base is None or base.get("runs", 0) == 0:
            continue
        rate, _ = figure(base, "offered")
        cpu, cu = figure(base, "cpu_us_per_msg")
        p50, _ = figure(base, "p50")
        p99, _ = figure(base, "p99")
        row = [
            cell["name"],
            f"{rate:.0f}" if rate else "–",
            f"{cpu:.1f}" + (" ⚠" if cu else "") if cpu else "–",
            f"{p50:.0f} / {p99:.0f}" if p50 and p99 else "–",
        ]
        lost = []
        for v in a.vs:
            mine = by.get(v)
            if mine is None or mine.get("runs", 0) == 0:
                row.append("not run")
                continue
            ratios = [figure(mine, k) for k in ("cpu_us_per_msg", "p50", "p99")]
            bases = [figure(base, k) for k in ("cpu_us_per_msg", "p50", "p99")]
            row.append(" / ".join(ratio_cell(m, b) for m, b in zip(ratios, bases)))
            ok = all(m is not None and b and m / b <= 1.0 for (m, _), (b, _) in zip(ratios, bases))
            within[v][0] += ok
            within[v][1] += 1
            lost.append(str(mine.get("lost", 0) or 0))
        row.append(" / ".join(lost) + f" / {base.get('lost', 0) or 0}")
        out.append("| " + " | ".join(row) + " |")
    print("\n".join(out))
    print()
    for v, (ok, n) in within.items():
        print(f"- {v}: CPU, p50 and p99 all at or below {a.to}'s in {ok} of {n} cells.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
