#!/bin/sh
# Bridged throughput and latency with loadgen: midge -> mosquitto against mosquitto ->
# mosquitto, in the same run, plus the remote mosquitto alone (publish and subscribe there)
# as the ceiling. Usage (from the repository root, after `cargo build --release -p midge
# --bin midge` and `cargo build --release -p loadgen --bin loadgen`):
#   sh results/bridge-20261205/run-loadgen.sh [REPEATS]
set -eu
REPEATS=${1:-3}
MIDGE=${MIDGE:-target/release/midge}
LOADGEN=${LOADGEN:-target/release/loadgen}
OUT=results/bridge-20261205
DIR=$(mktemp -d /tmp/bridged.XXXXXX)
chmod 755 "$DIR"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PR=$(port); PM=$(port); PQ=$(port)
common="allow_anonymous true
max_queued_messages 100000"
bridge() { # NAME: the bridge block (the same for both local brokers)
  printf 'connection b\naddress 127.0.0.1:%s\nremote_clientid %s\ntopic lg/# out 1\ncleansession true\nnotifications false\n' "$PR" "$1"
}
printf 'listener %s 127.0.0.1\n%s\n' "$PR" "$common" > "$DIR/remote.conf"
printf 'listener %s 127.0.0.1\n%s\nuser root\n' "$PM" "$common" > "$DIR/midge.conf"
bridge midge-bridge >> "$DIR/midge.conf"
printf 'listener %s 127.0.0.1\n%s\n' "$PQ" "$common" > "$DIR/mosquitto.conf"
bridge mosquitto-bridge >> "$DIR/mosquitto.conf"
mosquitto -c "$DIR/remote.conf" > "$DIR/remote.log" 2>&1 & R=$!
sleep 0.5
"$MIDGE" -c "$DIR/midge.conf" > "$DIR/midge.log" 2>&1 & M=$!
mosquitto -c "$DIR/mosquitto.conf" > "$DIR/mosquitto.log" 2>&1 & Q=$!
trap 'kill $R $M $Q 2>/dev/null; wait 2>/dev/null' EXIT
sleep 2
grep -q "Bridge b: connected" "$DIR/midge.log" || { cat "$DIR/midge.log"; exit 1; }
"$LOADGEN" suite "$OUT/bridged.toml" --repeat "$REPEATS" --quiet --out "$OUT" \
  --broker "midge-bridge=127.0.0.1:$PM,pid=$M,sub=127.0.0.1:$PR" \
  --broker "mosquitto-bridge=127.0.0.1:$PQ,pid=$Q,sub=127.0.0.1:$PR" \
  --broker "remote-alone=127.0.0.1:$PR,pid=$R"
