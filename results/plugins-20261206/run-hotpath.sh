#!/bin/bash
# Three midge builds of the same config (no plugin, a trivial C ACL plugin, the same through the Rust trait),
# started here, measured by loadgen's hotpath suite with mosquitto alongside.
set -e
OUT=${OUT:-/tmp/plugin-hotpath}; mkdir -p $OUT
W=/work/wt-integ
base="allow_anonymous true
shards 2
max_queued_messages 100000
max_inflight_messages 100
sys_interval 0"
printf 'listener 19001 127.0.0.1\n%s\n' "$base" > $OUT/plain.conf
printf 'listener 19002 127.0.0.1\n%s\nplugin %s/target/acl_trivial.so\n' "$base" "$W" > $OUT/cabi.conf
printf 'listener 19003 127.0.0.1\n%s\n' "$base" > $OUT/trait.conf
$W/target/release/midge -c $OUT/plain.conf > $OUT/plain.log 2>&1 & P1=$!
$W/target/release/midge -c $OUT/cabi.conf > $OUT/cabi.log 2>&1 & P2=$!
$W/target/release/examples/plugin_broker $OUT/trait.conf > $OUT/trait.log 2>&1 & P3=$!
sleep 1
cd $W
timeout 3000 target/release/loadgen suite loadgen/suites/hotpath.toml --brokers mosquitto --repeat 3 -q \
  --broker midge=127.0.0.1:19001,pid=$P1 --broker midge-c-acl=127.0.0.1:19002,pid=$P2 --broker midge-rust-acl=127.0.0.1:19003,pid=$P3 \
  --out results/plugins-$(date +%Y%m%d) || echo "loadgen rc=$?"
kill $P1 $P2 $P3
