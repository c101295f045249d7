#!/bin/sh
# The fixed-rate cells of the Bevywise matrix (fixed-rate.toml), 3 repeats, brokers
# alternating: midge on epoll (its default, dormant shards on), midge on io_uring, and
# mosquitto (started by loadgen). The two midges are started here with the limits loadgen
# gives managed brokers (2 shards each, the default on 2 cores) and given to loadgen as
# external brokers with their PIDs, so their CPU is measured. Run from the repository root
# after `cargo build --release -p midge -p loadgen`.
set -eu
OUT=${OUT:-results/bevywise-fixed-20261207}
MAXD=${MAXD:-15}
start() { # name, port, backend
    printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\nmax_inflight_messages 100\nio_backend %s\nconnection_messages false\nlog_type error\nlog_type warning\n' \
        "$2" "$3" > "/var/tmp/$1.conf"
    target/release/midge -c "/var/tmp/$1.conf" > "/var/tmp/$1.log" 2>&1 &
    echo $!
}
e=$(start midge 18860 epoll)
u=$(start midge-io_uring 18861 io_uring)
sleep 1
target/release/loadgen suite "$OUT/fixed-rate.toml" --brokers mosquitto \
    --broker "midge=127.0.0.1:18860,pid=$e" --broker "midge-io_uring=127.0.0.1:18861,pid=$u" \
    --repeat 3 --max-duration "$MAXD" --baseline mosquitto --out "$OUT" -q || true
kill "$e" "$u"
