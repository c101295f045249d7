#!/bin/sh
# The hot-path suite (saturation) against midge with dormant shards (the default) and with
# `shard_dormancy false`, and mosquitto, 3 repeats, brokers alternating. The midges are started
# here with loadgen's limits (2 shards each) and given to loadgen with their PIDs. Run from the
# repository root after `cargo build --release -p midge -p loadgen`.
set -eu
OUT=${OUT:-results/dormancy-20261207}
start() { # name, port, dormancy
    printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\nmax_inflight_messages 100\nshard_dormancy %s\n' \
        "$2" "$3" > "/var/tmp/$1.conf"
    target/release/midge -c "/var/tmp/$1.conf" > "/var/tmp/$1.log" 2>&1 &
    echo $!
}
on=$(start midge 18870 true)
off=$(start midge-awake 18871 false)
sleep 1
target/release/loadgen suite loadgen/suites/hotpath.toml --brokers mosquitto \
    --broker "midge=127.0.0.1:18870,pid=$on" --broker "midge-awake=127.0.0.1:18871,pid=$off" \
    --repeat 3 --baseline midge-awake --out "$OUT" -q || true
kill "$on" "$off"
