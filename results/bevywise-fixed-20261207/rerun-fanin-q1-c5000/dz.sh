#!/bin/sh
# midge on 2 shards with dormant shards on ("doze") and off ("awake") against mosquitto in one
# loadgen run; prints shard 1's dormancy counters afterwards. From the repository root, with
# MIDGE a midge binary (default target/release/midge); arguments go to `loadgen run`:
#   sh results/bevywise-fixed-20261207/rerun-fanin-q1-c5000/dz.sh --scenario fan-in --clients 5000 --qos 1 --rate 2 --duration 10 --threads 2 --repeat 3
set -eu
MIDGE=${MIDGE:-target/release/midge}
start() { # name, port, extra line
    printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\nmax_inflight_messages 100\nconnection_messages false\nlog_type error\nsys_interval 1\n%b\n' "$2" "$3" > "/var/tmp/$1.conf"
    "$MIDGE" -c "/var/tmp/$1.conf" > "/var/tmp/$1.log" 2>&1 &
    echo $!
}
a=$(start dz-on 18873 "")
b=$(start dz-off 18874 "shard_dormancy false")
sleep 1
target/release/loadgen run "$@" --brokers mosquitto \
    --broker "doze=127.0.0.1:18873,pid=$a" --broker "awake=127.0.0.1:18874,pid=$b" \
    --baseline mosquitto --out "${OUT:-/var/tmp/dz}" -q || true
timeout 3 mosquitto_sub -p 18873 -t '$SYS/broker/midge/shard/+/dormancy/#' -v -W 2 | sort -u || true
kill "$a" "$b"
