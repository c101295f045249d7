#!/bin/sh
# TLS connect storms with a bystander, midge (handshake threads) against mosquitto, and the
# same storms against midge before the handshake threads (BEFORE=path to that build's binary).
# Run from the repository root after `cargo build --release -p midge -p loadgen`.
# Usage: sh results/tls-20261206/run.sh [REPEATS]
set -eu
R=${1:-3}
L=target/release/loadgen
OUT=results/tls-20261206
# 10,000 full handshakes, then 10,000 resumed ones, as fast as each broker goes, with a
# bystander doing 100 QoS 1 round trips a second (quiet for 3 s first).
$L storm --clients 10000 --repeat "$R" --tls --bystander-rate 100 --quiet-s 3 --out "$OUT"
# The same without TLS, for the cost of TLS per connection.
$L storm --clients 10000 --repeat "$R" --bystander-rate 100 --quiet-s 3 --out "$OUT"
# A storm at a fixed rate below saturation (300 connects/s for 10 s).
$L storm --clients 3000 --rate 300 --repeat "$R" --tls --bystander-rate 100 --quiet-s 3 --out "$OUT"
if [ -n "${BEFORE:-}" ]; then
  # midge before this change (handshakes on the shard loop under a per-turn budget).
  $L storm --clients 10000 --repeat "$R" --tls --bystander-rate 100 --quiet-s 3 \
    --brokers midge --midge "$BEFORE" --out "$OUT"
fi
