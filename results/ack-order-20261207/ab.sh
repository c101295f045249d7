#!/bin/sh
# Two midge binaries against mosquitto in the same loadgen run, brokers alternating: BEFORE
# and AFTER (paths to midge binaries, e.g. copies of target/release/midge built at two
# commits), each on 2 shards with the limits loadgen gives managed brokers; mosquitto
# started by loadgen. Arguments go to `loadgen run`. From the repository root:
#   BEFORE=/tmp/midge-old AFTER=target/release/midge sh results/ack-order-20261207/ab.sh \
#       --scenario fan-in --clients 1000 --qos 1 --rate 2 --duration 10 --threads 2 --repeat 5
# The two are named "lifo" and "fifo" in the results unless A_NAME and B_NAME say otherwise;
# A_CONF and B_CONF add configuration lines to each (printf %b: "\n" separates lines).
set -eu
OUT=${OUT:-results/ack-order-20261207}
start() { # binary, name, port, extra configuration lines
    printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\nmax_inflight_messages 100\nconnection_messages false\nlog_type error\n%b\n' "$3" "$4" > "/var/tmp/$2.conf"
    "$1" -c "/var/tmp/$2.conf" > "/var/tmp/$2.log" 2>&1 &
    echo $!
}
a=$(start "$BEFORE" midge-before 18870 "${A_CONF:-}")
b=$(start "$AFTER" midge-after 18871 "${B_CONF:-}")
sleep 1
target/release/loadgen run "$@" --brokers mosquitto \
    --broker "${A_NAME:-lifo}=127.0.0.1:18870,pid=$a" --broker "${B_NAME:-fifo}=127.0.0.1:18871,pid=$b" \
    --baseline mosquitto --out "$OUT" -q || true
kill "$a" "$b"
