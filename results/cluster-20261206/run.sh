#!/usr/bin/env bash
# Cluster cost: midge alone against a clustered node whose messages stay on it, and a
# message that crosses nodes (publishers on node a, subscribers on node b, through one
# nats-server with JetStream). loadgen measures node a's CPU by PID (schedstat, per delivered
# message); for the cross-node runs this script also reads node b's and nats-server's CPU
# from /proc over each whole invocation (warm-up and set-up included) and divides by every
# message received in it. Run from the repository root after
# `cargo build --release -p midge -p loadgen`, with nats-server on PATH; writes out/ here
# (not committed) and prints the extra CPU lines that README.md quotes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
common="allow_anonymous true
max_queued_messages 100000
max_inflight_messages 100
log_dest stderr
log_type error"
printf 'listener 19860 127.0.0.1\n%s\n' "$common" > "$work/alone.conf"
for n in a b; do
    port=19861; [ "$n" = b ] && port=19862
    printf 'listener %s 127.0.0.1\n%s\ncluster_name bench\ncluster_node_id %s\ncluster_nats_url nats://127.0.0.1:19850\n' \
        "$port" "$common" "$n" > "$work/$n.conf"
done
nats-server -a 127.0.0.1 -p 19850 -js -sd "$work/js" 2> "$work/nats.err" & nats=$!
sleep 1
target/release/midge -c "$work/alone.conf" 2> "$work/alone.err" & alone=$!
target/release/midge -c "$work/a.conf" 2> "$work/a.err" & a=$!
target/release/midge -c "$work/b.conf" 2> "$work/b.err" & b=$!
trap 'kill $alone $a $b $nats; rm -rf "$work"' EXIT
sleep 2
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
for qos in 0 1; do
    for shape in "--clients 10 --rate max" "--clients 100 --rate 100"; do
        # Messages that stay on one node: alone and clustered alternate in one invocation.
        timeout 900 target/release/loadgen run --repeat 3 --scenario p2p $shape --qos "$qos" \
            --warmup 1 --duration 4 \
            --broker "alone=127.0.0.1:19860,pid=$alone" \
            --broker "clustered=127.0.0.1:19861,pid=$a" \
            --out "$here/out" -q
        # Messages that cross: publish on a, subscribe on b.
        before_b=$(ticks $b); before_n=$(ticks $nats)
        start=$(date +%s)
        timeout 900 target/release/loadgen run --repeat 3 --scenario p2p $shape --qos "$qos" \
            --warmup 1 --duration 4 \
            --broker "cross=127.0.0.1:19861,pid=$a,sub=127.0.0.1:19862" \
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
