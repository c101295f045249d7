#!/bin/sh
# The fixed-rate cells of the Bevywise matrix (fixed-rate.toml), 3 repeats, brokers
# alternating: midge on epoll (its default, dormant shards on), midge on io_uring, and
# mosquitto (started by loadgen). The two midges are started here with the limits loadgen
# gives managed brokers (2 shards each, the default on 2 cores) and given to loadgen as
# external brokers with their PIDs, so their CPU is measured. Run from the repository root
# after `cargo build --release -p midge -p loadgen`. With RUMQTTD=path/to/rumqttd, rumqttd
# (started by loadgen, MQTT 3.1.1 cells only) runs too; with IOURING=0 midge on io_uring does
# not; with ONESHARD=1 a third midge runs on one shard (`shards 1`); OUT names another results
# directory, SUITE another suite file.
set -eu
OUT=${OUT:-results/bevywise-fixed-20261207}
SUITE=${SUITE:-results/bevywise-fixed-20261207/fixed-rate.toml}
BROKERS=mosquitto
[ -n "${RUMQTTD:-}" ] && BROKERS="mosquitto,rumqttd --rumqttd $RUMQTTD"
MAXD=${MAXD:-15}
start() { # name, port, backend[, one more configuration line]
    printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\nmax_inflight_messages 100\nio_backend %s\nconnection_messages false\nlog_type error\nlog_type warning\n%s\n' \
        "$2" "$3" "${4:-}" > "/var/tmp/$1.conf"
    target/release/midge -c "/var/tmp/$1.conf" > "/var/tmp/$1.log" 2>&1 &
    echo $!
}
e=$(start midge 18860 epoll)
MIDGES="--broker midge=127.0.0.1:18860,pid=$e"
u=
if [ "${IOURING:-1}" != 0 ]; then
    u=$(start midge-io_uring 18861 io_uring)
    MIDGES="$MIDGES --broker midge-io_uring=127.0.0.1:18861,pid=$u"
fi
o=
if [ "${ONESHARD:-0}" = 1 ]; then
    o=$(start midge-1shard 18862 epoll 'shards 1')
    MIDGES="$MIDGES --broker midge-1shard=127.0.0.1:18862,pid=$o"
fi
sleep 1
# shellcheck disable=SC2086 # BROKERS and MIDGES are several arguments
target/release/loadgen suite "$SUITE" --brokers $BROKERS $MIDGES \
    --repeat 3 --max-duration "$MAXD" --baseline mosquitto --out "$OUT" -q || true
kill "$e" $u $o
