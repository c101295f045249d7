#!/bin/sh
# Messages over TLS: two midge binaries (BEFORE and AFTER, e.g. release builds at two commits)
# and Debian's mosquitto, all started here on one generated certificate (EC P-256, openssl), in
# the same loadgen suite (tls.toml: p2p and fan-in, QoS 0 and 1, at saturation and at 10 msg/s
# per client), brokers alternating. Extra arguments go to `loadgen suite` (e.g. --repeat 3).
# From the repository root, after `cargo build --release -p loadgen`:
#   BEFORE=/var/tmp/midge-before AFTER=target/release/midge sh results/tls-buffers-20261207/ab.sh --repeat 3
set -eu
OUT=${OUT:-results/tls-buffers-20261207}
D=$(mktemp -d /var/tmp/tls-ab.XXXXXX)
cd "$D"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=bench-ca -keyout ca.key -out ca.pem 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj /CN=localhost -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n' > ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -extfile ext -out server.pem 2>/dev/null
# mosquitto started as root reads its files as the mosquitto user.
chmod 755 "$D" && chmod 644 server.key
cd - > /dev/null
start() { # binary, name, port, extra configuration lines
    printf 'listener %s 127.0.0.1\ncertfile %s/server.pem\nkeyfile %s/server.key\nallow_anonymous true\nmax_queued_messages 100000\nmax_inflight_messages 100\nconnection_messages false\nlog_type error\n%b\n' \
        "$3" "$D" "$D" "$4" > "$D/$2.conf"
    "$1" -c "$D/$2.conf" > "$D/$2.log" 2>&1 &
    echo $!
}
a=$(start "$BEFORE" before 18870 "")
b=$(start "$AFTER" after 18871 "")
m=$(start "$(command -v mosquitto || echo /usr/sbin/mosquitto)" mosquitto 18872 "persistence false")
sleep 1
target/release/loadgen suite results/tls-buffers-20261207/tls.toml --tls --cafile "$D/ca.pem" \
    --broker "before=127.0.0.1:18870,pid=$a" --broker "after=127.0.0.1:18871,pid=$b" \
    --broker "mosquitto=127.0.0.1:18872,pid=$m" --baseline mosquitto --out "$OUT" -q "$@" || true
kill "$a" "$b" "$m"
rm -rf "$D"
