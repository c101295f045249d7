#!/bin/sh
# epoll against io_uring (`io_backend`): system calls, context switches and CPU per delivered
# message for midge on its default 2 shards with each backend, and mosquitto, in one run.
# 1,000 pairs at RATE msg/s each (default 10: 10k msg/s), QoS QOS (default 0), 64 B; or
# SCENARIO=fanout (10 publishers to one topic, 100 subscribers, RATE msg/s per publisher). Each
# broker is started here, driven by loadgen for 12 s, and counted by `perf stat`
# (tracepoints raw_syscalls:sys_enter and sched:sched_switch, all its threads) over 8 s in the
# middle. Run from the repository root after `cargo build --release -p midge -p loadgen`;
# needs perf. Prints one line per broker and run.
set -eu
RUNS=${1:-3}
QOS=${QOS:-0}
RATE=${RATE:-10}
SCENARIO=${SCENARIO:-p2p}
OUT=${OUT:-/var/tmp/midge-iouring}
mkdir -p "$OUT"
PORT=18860
common="allow_anonymous true
max_queued_messages 100000
max_inflight_messages 100"
conf() { # name, extra lines
    printf 'listener %s 127.0.0.1\n%s\n%s\n' "$PORT" "$common" "$2" > "$OUT/$1.conf"
}
conf midge-epoll "io_backend epoll"
conf midge-io_uring "io_backend io_uring"
conf mosquitto "persistence false
set_tcp_nodelay true
connection_messages false
log_dest none"
case $SCENARIO in
p2p) shape="--scenario p2p --clients 1000"; per_s=$((1000 * RATE)) ;;
fanout) shape="--scenario fan-out --publishers 10 --clients 100"; per_s=$((10 * RATE * 100)) ;;
esac
echo "broker run syscalls/msg switches/msg cpu_us/msg"
for run in $(seq "$RUNS"); do
    for b in midge-epoll midge-io_uring mosquitto; do
        if [ "$b" = mosquitto ]; then
            mosquitto -c "$OUT/$b.conf" > "$OUT/$b.log" 2>&1 &
        else
            target/release/midge -c "$OUT/$b.conf" > "$OUT/$b.log" 2>&1 &
        fi
        pid=$!
        sleep 1
        # shellcheck disable=SC2086
        target/release/loadgen run $shape --rate "$RATE" --qos "$QOS" \
            --duration 12 --broker "$b=127.0.0.1:$PORT,pid=$pid" --out "$OUT/runs" -q \
            > "$OUT/loadgen.log" 2>&1 &
        lg=$!
        sleep 5
        t0=$(awk '{print $14+$15}' /proc/$pid/stat)
        perf stat -x, -e raw_syscalls:sys_enter,sched:sched_switch -p "$pid" -o "$OUT/perf.txt" -- sleep 8
        t1=$(awk '{print $14+$15}' /proc/$pid/stat)
        wait $lg
        kill "$pid"; wait "$pid" 2>/dev/null || true
        sys=$(grep raw_syscalls "$OUT/perf.txt" | cut -d, -f1)
        sw=$(grep sched_switch "$OUT/perf.txt" | cut -d, -f1)
        tck=$(getconf CLK_TCK)
        echo "$b $run $sys $sw $t0 $t1 $tck" | awk '{m=8*'"$per_s"'; printf "%s %s %.2f %.2f %.1f\n", $1, $2, $3/m, $4/m, ($6-$5)/$7*1e6/m}'
    done
done
