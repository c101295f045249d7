#!/bin/sh
# The low-rate cells (lowrate.toml) against midge with handoffs (the default), midge with
# `shard_handoff false`, and mosquitto, 3 repeats, brokers alternating. The two midges are
# started here with the same limits loadgen gives managed brokers (2 shards each), and given
# to loadgen as external brokers with their PIDs (so their CPU is measured). Run from the
# repository root after `cargo build --release -p midge -p loadgen`.
set -eu
OUT=${OUT:-/var/tmp/midge-lowrate}
SUITE=${SUITE:-results/lowrate-20261207/lowrate.toml}
mkdir -p "$OUT"
start() { # name, port, handoff
    printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\nmax_inflight_messages 100\nshards 2\nshard_handoff %s\n' \
        "$2" "$3" > "$OUT/$1.conf"
    target/release/midge -c "$OUT/$1.conf" > "$OUT/$1.log" 2>&1 &
    echo $!
}
on=$(start on 18830 true)
off=$(start off 18831 false)
sleep 1
target/release/loadgen suite "$SUITE" --brokers mosquitto \
    --broker "midge=127.0.0.1:18830,pid=$on" --broker "midge-no-handoff=127.0.0.1:18831,pid=$off" \
    --repeat 3 --max-duration 30 --baseline midge --out "$OUT" -q || true
kill "$on" "$off"
