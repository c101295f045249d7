#!/bin/sh
# The hot-path suite (saturation), the binary before the write-order change (BEFORE) against
# the one after (AFTER) and mosquitto, 3 repeats, brokers alternating; the midges on 2 shards
# with loadgen's limits, given to loadgen with their PIDs. From the repository root:
#   BEFORE=/tmp/midge-old AFTER=target/release/midge sh results/ack-order-20261207/hotpath.sh
set -eu
OUT=${OUT:-results/ack-order-20261207}
start() { # binary, name, port
    printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\nmax_inflight_messages 100\n' \
        "$3" > "/var/tmp/$2.conf"
    "$1" -c "/var/tmp/$2.conf" > "/var/tmp/$2.log" 2>&1 &
    echo $!
}
a=$(start "$BEFORE" midge-before 18870)
b=$(start "$AFTER" midge-after 18871)
sleep 1
target/release/loadgen suite loadgen/suites/hotpath.toml --brokers mosquitto \
    --broker "before=127.0.0.1:18870,pid=$a" --broker "after=127.0.0.1:18871,pid=$b" \
    --repeat 3 --baseline before --out "$OUT" -q || true
kill "$a" "$b"
