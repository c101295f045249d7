#!/bin/sh
# Builds the .deb, installs it on this machine (as root), checks the unit, starts the
# installed binary the way the unit's ExecStart does (as the midge user), serves a client,
# then removes and purges the package. CI runs it with BINARY=target/debug/midge (already
# built by the tests: no release build).
set -eu
cd "$(dirname "$0")/.."
fail() { echo "test-deb: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "run as root (dpkg -i)"
! dpkg -s midge >/dev/null 2>&1 || fail "a midge package is already installed"

DEB=$(packaging/build-deb.sh)
dpkg-deb --contents "$DEB"
dpkg -i "$DEB"
PID=
cleanup() { [ -z "$PID" ] || kill "$PID" 2>/dev/null || true; dpkg -P midge >/dev/null 2>&1 || true; }
trap cleanup EXIT

getent passwd midge >/dev/null || fail "no midge user"
[ "$(stat -c %U /var/lib/midge)" = midge ] || fail "/var/lib/midge is not midge's"
/usr/sbin/midge check -c /etc/midge/midge.conf
man -w midge >/dev/null 2>&1 || [ -f /usr/share/man/man8/midge.8.gz ] || fail "no midge(8)"
zcat /usr/share/man/man5/midge.conf.5.gz | grep -q 'log_dest' || fail "midge.conf(5) lacks the options"
if command -v systemd-analyze >/dev/null; then
    # Checks the unit's syntax and that ExecStart's binary exists.
    systemd-analyze verify /lib/systemd/system/midge.service
fi

# As ExecStart, as User=midge; another port in case 1883 is taken.
PORT=${PORT:-18983}
setpriv --reuid=midge --regid=midge --init-groups /usr/sbin/midge -c /etc/midge/midge.conf -p "$PORT" &
PID=$!
i=0
until mosquitto_pub -h 127.0.0.1 -p "$PORT" -t deb/test -m up 2>/dev/null; do
    i=$((i + 1)); [ $i -lt 50 ] || fail "the installed midge does not serve"; sleep 0.1
done
[ "$(stat -c %U "/proc/$PID")" = midge ] || fail "not running as midge"
ls /var/lib/midge | grep -q . || fail "no store in /var/lib/midge"
kill -HUP "$PID"; sleep 0.2; kill -0 "$PID" || fail "SIGHUP (ExecReload) stopped it"
kill "$PID"; wait "$PID" || true; PID=

# midge passwd as mosquitto_passwd: a file mosquitto_passwd's options make.
/usr/sbin/midge passwd -c -b /tmp/midge-deb-passwd alice secret
grep -q '^alice:\$7\$' /tmp/midge-deb-passwd || fail "midge passwd"
rm -f /tmp/midge-deb-passwd

dpkg -r midge
[ ! -e /usr/sbin/midge ] || fail "dpkg -r left the binary"
[ -f /etc/midge/midge.conf ] || fail "dpkg -r removed the conffile (purge does)"
dpkg -P midge
[ ! -e /etc/midge/midge.conf ] || fail "purge left the config"
! getent passwd midge >/dev/null || fail "purge left the midge user"
echo "test-deb: ok"
