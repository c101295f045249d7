#!/bin/sh
# The hot-path suite (saturation), midge before and after the power-of-two read-buffer classes
# (BEFORE, AFTER: release builds), both on the backend BACKEND (epoll or io_uring, default
# io_uring, where the change removed most allocations), and mosquitto; 3 repeats, brokers
# alternating; the midges on 2 shards with loadgen's limits, given to loadgen with their PIDs.
# From the repository root:
#   BEFORE=/var/tmp/midge-old AFTER=target/release/midge BACKEND=io_uring sh results/pool-classes-20261207/hotpath.sh
set -eu
OUT=${OUT:-results/pool-classes-20261207}
B=${BACKEND:-io_uring}
start() { # binary, name, port
    printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\nmax_inflight_messages 100\nio_backend %s\n' \
        "$3" "$B" > "/var/tmp/$2.conf"
    "$1" -c "/var/tmp/$2.conf" > "/var/tmp/$2.log" 2>&1 &
    echo $!
}
a=$(start "$BEFORE" midge-before 18870)
b=$(start "$AFTER" midge-after 18871)
sleep 1
target/release/loadgen suite loadgen/suites/hotpath.toml --brokers mosquitto \
    --broker "before-$B=127.0.0.1:18870,pid=$a" --broker "after-$B=127.0.0.1:18871,pid=$b" \
    --repeat 3 --baseline "before-$B" --out "$OUT" -q || true
kill "$a" "$b"
