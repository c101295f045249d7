#!/usr/bin/env bash
# ws against tcp, midge against mosquitto 2.0.11's websockets listener (libwebsockets).
# Both brokers run for the whole script, each with a TCP and a WebSocket listener and
# loadgen's managed-broker limits; loadgen measures them as external brokers (by PID), the two
# brokers alternating within each invocation, 3 repeats (medians). Run from the repository
# root after `cargo build --release -p midge -p loadgen`; writes out/ here (not committed).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
common="allow_anonymous true
max_queued_messages 100000
max_inflight_messages 100"
cat > "$work/midge.conf" <<CONF
listener 19830 127.0.0.1
$common
listener 19831 127.0.0.1
protocol websockets
log_dest stderr
log_type error
CONF
cat > "$work/mosquitto.conf" <<CONF
listener 19840 127.0.0.1
$common
listener 19841 127.0.0.1
protocol websockets
persistence false
set_tcp_nodelay true
connection_messages false
log_dest stderr
log_type error
CONF
target/release/midge -c "$work/midge.conf" 2> "$work/midge.err" & midge=$!
/usr/sbin/mosquitto -c "$work/mosquitto.conf" 2> "$work/mosquitto.err" & mosq=$!
trap 'kill $midge $mosq; rm -rf "$work"' EXIT
sleep 1
for qos in 0 1; do
    for t in tcp ws; do
        off=0; [ "$t" = ws ] && off=1
        timeout 600 target/release/loadgen run --repeat 3 --scenario p2p --clients 10 \
            --rate max --qos "$qos" --warmup 1 --duration 4 --transport "$t" \
            --broker "midge-$t=127.0.0.1:$((19830 + off)),pid=$midge" \
            --broker "mosquitto-$t=127.0.0.1:$((19840 + off)),pid=$mosq" \
            --out "$here/out" -q
    done
done
