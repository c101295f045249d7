#!/bin/sh
# Counts late PUBACKs (order_probe.py, 1,000 QoS 1 messages) on one midge binary with 2 shards
# and the configuration lines given. From the repository root:
#   sh results/wake-first-20261207/probe.sh target/release/midge "shard_dormancy false"
bin=$1; shift
port=18890
conf=${TMPDIR:-/tmp}/probe.conf
{ printf 'listener %s 127.0.0.1\nallow_anonymous true\nlog_type error\nshards 2\n' $port; for l in "$@"; do echo "$l"; done; } > "$conf"
"$bin" -c "$conf" > "${TMPDIR:-/tmp}/probe.log" 2>&1 &
pid=$!
sleep 0.5
python3 results/ack-order-20261207/order_probe.py $port 1000
kill $pid; wait $pid 2>/dev/null
