#!/usr/bin/env bash
# Issue 6 measurement: persistent-session QoS 1 throughput and latency with midge's
# persistence off, on with `persistence_sync every-batch` (fsync before every PUBACK, group
# commit), and mosquitto with `persistence true` (snapshot every autosave_interval, no fsync
# per message), all in one loadgen run so the ratios come from the same minutes.
#
# Usage: loadgen/scripts/persistence.sh [REPEATS] [extra loadgen run args...]
# Needs: cargo build --release (midge and loadgen), Debian's mosquitto.
set -euo pipefail
cd "$(dirname "$0")/../.."
repeats=${1:-3}
shift || true
work=$(mktemp -d /tmp/midge-persist-bench.XXXXXX)
# `start` runs in a command substitution (a subshell): its PIDs go through a file.
cleanup() {
    if [ -f "$work/pids" ]; then
        while read -r p; do kill "$p" 2>/dev/null || true; done <"$work/pids"
    fi
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start() { # name, binary, config text
    local name=$1 bin=$2 conf="$work/$1.conf" port
    port=$(free_port)
    printf 'listener %s 127.0.0.1\nallow_anonymous true\n%s\n' "$port" "$3" >"$conf"
    "$bin" -c "$conf" >"$work/$name.log" 2>&1 &
    echo $! >>"$work/pids"
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.05
    done
    echo "--broker $name=127.0.0.1:$port,pid=$!"
}

mkdir -p "$work/midge-store" "$work/mosq-store"
chmod 777 "$work/mosq-store"
args=()
args+=($(start midge-nopersist target/release/midge "max_inflight_messages 16"))
args+=($(start midge-every-batch target/release/midge "max_inflight_messages 16
persistence true
persistence_location $work/midge-store
persistence_sync every-batch"))
args+=($(start mosquitto-persist /usr/sbin/mosquitto "max_inflight_messages 16
persistence true
persistence_location $work/mosq-store/
set_tcp_nodelay true
connection_messages false
log_dest stderr
log_type error"))
for i in $(seq "$repeats"); do
    for clients in 10 100; do
        target/release/loadgen run "${args[@]}" --scenario p2p --clients "$clients" --qos 1 \
            --rate max --persistent --warmup 1 --duration 5 --drain 3 --out "${PERSIST_OUT:-results/persistence}" "$@"
    done
done
