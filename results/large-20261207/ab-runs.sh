#!/bin/sh
# 64 KiB at saturation (the `max` cells of the Bevywise suite: 8 clients, window 64), BEFORE and
# AFTER (two midge binaries, 2 shards each) against mosquitto in the same runs, 5 repeats.
# From the repository root:
#   BEFORE=/tmp/midge-916ab0b AFTER=target/release/midge sh results/large-20261207/ab-runs.sh
export A_NAME=before B_NAME=after OUT=results/large-20261207
for qos in 0 1; do
    sh results/ack-order-20261207/ab.sh --scenario p2p --clients 8 --rate max --window 64 \
        --payload 65536 --qos $qos --duration 5 --threads 2 --repeat 5
done
