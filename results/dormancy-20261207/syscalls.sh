#!/bin/sh
# System calls, context switches and CPU per delivered message for p2p at a fixed rate
# (1,000 pairs, RATE msg/s each, QoS QOS, 64 B): midge on 1 shard, on 2 shards (the default:
# dormancy on), on 2 shards with `shard_dormancy false`, and mosquitto. Each broker is started
# here, driven by loadgen for 12 s and counted over 8 s in the middle: `perf stat`
# (tracepoints raw_syscalls:sys_enter and sched:sched_switch, all its threads) and its
# threads' CPU time in nanoseconds (/proc/PID/task/*/schedstat). Run from the repository root
# after `cargo build --release -p midge -p loadgen`; needs perf. One line per broker and run.
# Usage: [QOS=0|1] [RATE=N] sh results/dormancy-20261207/syscalls.sh [RUNS]
set -eu
RUNS=${1:-3}
QOS=${QOS:-1}
RATE=${RATE:-1}
OUT=${OUT:-/var/tmp/midge-dormancy}
mkdir -p "$OUT"
PORT=18850
common="allow_anonymous true
max_queued_messages 100000
max_inflight_messages 100"
conf() { # name, extra lines
    printf 'listener %s 127.0.0.1\n%s\n%s\n' "$PORT" "$common" "$2" > "$OUT/$1.conf"
}
conf midge-1shard "shards 1"
conf midge "shards 2"
conf midge-awake "shards 2
shard_dormancy false"
conf mosquitto "persistence false
set_tcp_nodelay true
connection_messages false
log_dest none"
cpu_ns() { cat /proc/"$1"/task/*/schedstat | awk '{s+=$1} END {print s}'; }
echo "broker run syscalls/msg switches/msg cpu_us/msg"
for run in $(seq "$RUNS"); do
    for b in midge-1shard midge midge-awake mosquitto; do
        if [ "$b" = mosquitto ]; then
            mosquitto -c "$OUT/$b.conf" > "$OUT/$b.log" 2>&1 &
        else
            target/release/midge -c "$OUT/$b.conf" > "$OUT/$b.log" 2>&1 &
        fi
        pid=$!
        sleep 1
        target/release/loadgen run --scenario p2p --clients 1000 --rate "$RATE" --qos "$QOS" \
            --duration 12 --broker "$b=127.0.0.1:$PORT,pid=$pid" --out "$OUT/runs" -q \
            > "$OUT/loadgen.log" 2>&1 &
        lg=$!
        sleep 5
        t0=$(cpu_ns "$pid")
        perf stat -x, -e raw_syscalls:sys_enter,sched:sched_switch -p "$pid" -o "$OUT/perf.txt" -- sleep 8
        t1=$(cpu_ns "$pid")
        wait $lg
        kill "$pid"; wait "$pid" 2>/dev/null || true
        sys=$(grep raw_syscalls "$OUT/perf.txt" | cut -d, -f1)
        sw=$(grep sched_switch "$OUT/perf.txt" | cut -d, -f1)
        echo "$b $run $sys $sw $t0 $t1" | awk '{m=8*'"$RATE"'*1000; printf "%s %s %.2f %.2f %.1f\n", $1, $2, $3/m, $4/m, ($6-$5)/1e3/m}'
    done
done
