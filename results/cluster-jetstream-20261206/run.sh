#!/usr/bin/env bash
# QoS 1/2 between nodes through JetStream, and sessions that move: what they cost.
#
# One nats-server with JetStream, one midge alone (19870) and two clustered nodes a (19871)
# and b (19872). For QoS 0 and 1, p2p at max rate (10 pairs) and at 10k msg/s (100 pairs at
# 100 msg/s): alone against clustered (messages that stay on the node), then across
# (publishers on a, subscribers on b), with node b's and nats-server's CPU read from /proc
# over each whole invocation, as in results/cluster-20261206/run.sh. Then the time a
# CONNECT takes when its session moves between nodes, against a resume on the same node.
# Run from the repository root after `cargo build --release -p midge -p loadgen`, with
# nats-server and mosquitto_sub on PATH; writes out/ here (not committed).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
common="allow_anonymous true
max_queued_messages 100000
max_inflight_messages 100
log_dest stderr
log_type error"
printf 'listener 19870 127.0.0.1\n%s\n' "$common" > "$work/alone.conf"
for n in a b; do
    port=19871; [ "$n" = b ] && port=19872
    printf 'listener %s 127.0.0.1\n%s\ncluster_name bench\ncluster_node_id %s\ncluster_nats_url nats://127.0.0.1:19851\n' \
        "$port" "$common" "$n" > "$work/$n.conf"
done
nats-server -a 127.0.0.1 -p 19851 -js -sd "$work/js" 2> "$work/nats.err" & nats=$!
sleep 1
target/release/midge -c "$work/alone.conf" 2> "$work/alone.err" & alone=$!
target/release/midge -c "$work/a.conf" 2> "$work/a.err" & a=$!
target/release/midge -c "$work/b.conf" 2> "$work/b.err" & b=$!
trap 'kill $alone $a $b $nats; rm -rf "$work"' EXIT
sleep 2
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
for qos in ${QOS:-0 1}; do
    for shape in "--clients 10 --rate max" "--clients 100 --rate 100"; do
        timeout 900 target/release/loadgen run --repeat 3 --scenario p2p $shape --qos "$qos" \
            --warmup 1 --duration 4 \
            --broker "alone=127.0.0.1:19870,pid=$alone" \
            --broker "clustered=127.0.0.1:19871,pid=$a" \
            --out "$here/out" -q
        before_b=$(ticks $b); before_n=$(ticks $nats)
        timeout 900 target/release/loadgen run --repeat 3 --scenario p2p $shape --qos "$qos" \
            --warmup 1 --duration 4 \
            --broker "cross=127.0.0.1:19871,pid=$a,sub=127.0.0.1:19872" \
            --out "$here/out" -q
        after_b=$(ticks $b); after_n=$(ticks $nats)
        dir=$(ls -td "$here"/out/*/ | head -1)
        received=$(python3 -c "
import json,glob,sys
t=0
for f in glob.glob(sys.argv[1]+'runs/*.json'):
    c=json.load(open(f))['counters']; t+=c['received']+c['received_unmeasured']
print(t)" "$dir")
        python3 -c "
import sys
b,n,hz,m=map(float,sys.argv[1:5])
print(f'cross qos $qos [$shape]: node b {b/hz/m*1e6:.2f} us/msg, nats-server {n/hz/m*1e6:.2f} us/msg over {int(m)} messages ({sys.argv[5]})')
" $((after_b - before_b)) $((after_n - before_n)) "$hz" "$received" "$dir"
    done
done
# CONNECT to CONNACK+SUBACK of a persistent session (mosquitto_sub -E exits after SUBACK),
# 100 times: resumed on the node that has it, then moved between a and b each time.
timeit() {
    local start end
    start=$(date +%s%N)
    for i in $(seq 100); do
        port=$1; [ "$2" = alternate ] && [ $((i % 2)) = 0 ] && port=19872
        mosquitto_sub -p "$port" -c -i "mover-$2" -q 1 -t s/# -E
    done
    end=$(date +%s%N)
    echo "session $2: $(( (end - start) / 100000 )) us per connect (100 connects)"
}
timeit 19871 same
timeit 19871 alternate
