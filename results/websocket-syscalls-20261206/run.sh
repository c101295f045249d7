#!/usr/bin/env bash
# Syscalls per delivered message of mosquitto over tcp and over ws (libwebsockets), and of
# midge over both, under loadgen p2p QoS 0 at max rate: strace -c -f attached to the broker
# for one measured run each.
set -euo pipefail
cd "$(dirname "$0")/../.."
work=$(mktemp -d)
common="allow_anonymous true
max_queued_messages 100000
max_inflight_messages 100"
printf 'listener 19930 127.0.0.1\n%s\nlistener 19931 127.0.0.1\nprotocol websockets\nlog_dest stderr\nlog_type error\n' "$common" > $work/midge.conf
printf 'listener 19940 127.0.0.1\n%s\nlistener 19941 127.0.0.1\nprotocol websockets\npersistence false\nset_tcp_nodelay true\nconnection_messages false\nlog_dest stderr\nlog_type error\n' "$common" > $work/mosq.conf
target/release/midge -c $work/midge.conf 2> $work/midge.err & midge=$!
/usr/sbin/mosquitto -c $work/mosq.conf 2> $work/mosq.err & mosq=$!
trap 'kill $midge $mosq 2>/dev/null; rm -rf $work' EXIT
sleep 1
for b in mosq midge; do
  for t in tcp ws; do
    pid=$mosq; base=19940; [ $b = midge ] && pid=$midge && base=19930
    port=$base; [ $t = ws ] && port=$((base + 1))
    strace -c -f -p $pid -o $work/strace-$b-$t.txt & st=$!
    sleep 0.5
    timeout 120 target/release/loadgen run --repeat 1 --scenario p2p --clients 10 --rate max --qos 0 \
        --warmup 0.5 --duration 3 --transport $t --broker "$b-$t=127.0.0.1:$port,pid=$pid" --out $work/out -q > /dev/null
    kill -INT $st; wait $st || true
    d=$(ls -td $work/out/*/ | head -1)
    msgs=$(python3 -c "
import json,glob,sys
t=0
for f in glob.glob(sys.argv[1]+'runs/*.json'):
    c=json.load(open(f))['counters']; t+=c['received']+c['received_unmeasured']+c.get('sent',0)*0
print(t)" "$d")
    echo "== $b $t: $msgs messages delivered (warm-up and measured)"
    awk -v m=$msgs 'NR>2 && $NF!="total" && $4+0>0 {printf "  %-14s %10d calls  %.3f per message\n", $NF, $4, $4/m}' $work/strace-$b-$t.txt | sort -k2 -n -r | head -6
  done
done
