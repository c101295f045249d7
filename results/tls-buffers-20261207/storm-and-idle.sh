#!/bin/sh
# TLS connect storms (handshake CPU, bystander) and idle TLS memory: midge before and after
# the unbuffered TLS streams, alternating run by run, and mosquitto. BEFORE = a release build
# before the change. From the repository root, after `cargo build --release -p midge -p loadgen`:
#   BEFORE=/var/tmp/midge-before sh results/tls-buffers-20261207/storm-and-idle.sh [REPEATS]
set -eu
R=${1:-3}
L=target/release/loadgen
OUT=results/tls-buffers-20261207
for i in $(seq "$R"); do
    $L storm --clients 10000 --repeat 1 --tls --bystander-rate 100 --quiet-s 3 \
        --brokers midge --midge target/release/midge --out "$OUT/storm-after"
    $L storm --clients 10000 --repeat 1 --tls --bystander-rate 100 --quiet-s 3 \
        --brokers midge --midge "$BEFORE" --out "$OUT/storm-before"
done
# 2,000 connections: mosquitto stalled at 2,725 TLS connections (twice; not investigated)
# from this one-connection-at-a-time Python client.
for i in $(seq "$R"); do
    python3 loadgen/scripts/idle_rss.py --midge target/release/midge -n 2000 --tls midge mosquitto
    python3 loadgen/scripts/idle_rss.py --midge "$BEFORE" -n 2000 --tls midge
done
