#!/bin/sh
# A loadgen suite (default: the hot-path suite at saturation; SUITE=... for another, e.g.
# results/lowrate-20261207/lowrate.toml) against midge on epoll, midge on io_uring, and
# mosquitto, 3 repeats, brokers alternating. The two midges are started here on their default
# 2 shards with the limits loadgen gives managed brokers, and given to loadgen as external
# brokers with their PIDs (so their CPU is measured). Run from the repository root after
# `cargo build --release -p midge -p loadgen`.
set -eu
OUT=${OUT:-/var/tmp/midge-iouring}
SUITE=${SUITE:-loadgen/suites/hotpath.toml}
mkdir -p "$OUT"
start() { # name, port, backend
    printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\nmax_inflight_messages 100\nshards 2\nio_backend %s\n' \
        "$2" "$3" > "$OUT/$1.conf"
    target/release/midge -c "$OUT/$1.conf" > "$OUT/$1.log" 2>&1 &
    echo $!
}
epoll=$(start epoll 18870 epoll)
uring=$(start io_uring 18871 io_uring)
sleep 1
target/release/loadgen suite "$SUITE" --brokers mosquitto \
    --broker "midge-epoll=127.0.0.1:18870,pid=$epoll" --broker "midge-io_uring=127.0.0.1:18871,pid=$uring" \
    --repeat 3 --max-duration 30 --baseline midge-epoll --out "$OUT" -q || true
kill "$epoll" "$uring"
