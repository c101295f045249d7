#!/bin/sh
# midge (its defaults: 2 shards on this machine, epoll, dormant shards), mosquitto and rumqttd
# (all three started by loadgen with the limits of subset.toml) on a subset of the fixed-rate
# Bevywise cells, 3 repeats, brokers alternating. From the repository root, after
# `cargo build --release -p midge -p loadgen` and `cargo install rumqttd --root DIR`:
#   RUMQTTD=DIR/bin/rumqttd sh results/rumqttd-20261207/run.sh
set -eu
OUT=${OUT:-results/rumqttd-20261207}
target/release/loadgen suite "$OUT/subset.toml" --brokers midge,mosquitto,rumqttd \
    --rumqttd "${RUMQTTD:-rumqttd}" --repeat 3 --max-duration "${MAXD:-15}" \
    --baseline mosquitto --out "$OUT" -q
