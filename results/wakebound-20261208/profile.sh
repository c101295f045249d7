#!/bin/sh
# One profile of midge at 100 pairs x 10 msg/s (p2p, QoS 0, 64 B): $1 names it, $2 is its port, $3 one
# more configuration line (e.g. "shards 1"). perf samples the broker for 15 s mid-run at 10 kHz;
# /tmp/prof-NAME.data is left for `perf report`. Run from the repository root after `cargo build --release -p midge -p loadgen`.
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\nmax_inflight_messages 100\nconnection_messages false\nlog_type error\n%s\n' "$2" "$3" > /tmp/prof-$1.conf
${MIDGE_DIR:-.}/target/release/midge -c /tmp/prof-$1.conf > /tmp/prof-$1.log 2>&1 &
P=$!
sleep 1
( sleep 3; timeout 15 perf record -F 10000 -g -p $P -o /tmp/prof-$1.data > /dev/null 2>&1 ) &
W=$!
${MIDGE_DIR:-.}/target/release/loadgen run --scenario p2p --clients 100 --rate 10 --duration 20 --warmup 1 --drain 1 --broker $1=127.0.0.1:$2,pid=$P --out /tmp/prof-out -q --max-duration 20 2>&1 | tail -1
wait $W
kill $P
