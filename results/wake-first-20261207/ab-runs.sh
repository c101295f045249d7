#!/bin/sh
# The loadgen cells of this directory: BEFORE and AFTER are two midge binaries (here 017e913
# and 4abc055), each on 2 shards, against mosquitto in the same runs. From the repository root:
#   BEFORE=/tmp/midge-017e913 AFTER=target/release/midge sh results/wake-first-20261207/ab-runs.sh
export A_NAME=before B_NAME=after OUT=results/wake-first-20261207
ab() { sh results/ack-order-20261207/ab.sh --qos 1 --duration 10 --threads 2 "$@"; }
ab --scenario fan-in --clients 5000 --rate 2 --repeat 3
ab --scenario p2p --clients 5000 --payload 1024 --rate 1 --repeat 3
ab --scenario fan-in --clients 1000 --rate 2 --repeat 3
ab --scenario p2p --clients 100 --rate 100 --repeat 3
ab --scenario fan-in --clients 1000 --rate 2 --repeat 5
