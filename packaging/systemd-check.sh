#!/usr/bin/env bash
# Try the Debian package under a real systemd (issue 13): a minimal Debian 12 (debootstrap
# minbase, what many box images start from) booted in a container, the package installed with
# its dependencies, the service started with the shipped config and dummy secrets, then checked
# the way a technician would meet it:
#   - `systemctl start` returns once the gateway said READY=1 (Type=notify), ExecStartPre passed;
#   - the spool is in /var/lib/anju, owned by anju, directory 0750 and files 0600;
#   - the watchdog is fed (WatchdogTimestamp moves, no restart) within the unit's period;
#   - `systemctl reload` applies (RELOADING=1 / READY=1 from the gateway, same main PID);
#   - kill -9 of the gateway: systemd starts it again (Restart=on-failure);
#   - a missing secret: the start fails with the variable's name in the journal;
#   - `systemctl stop`: exit 0 and "Gateway stopped." in the journal.
# The container has its own network namespace with loopback only (--private-network), so the
# shipped config's devices and servers are unreachable, as the gateway is made to expect.
#
#   sudo bash packaging/systemd-check.sh path/to/anju-gateway_*.deb
#
# Needs root, debootstrap and systemd-container (apt-get install debootstrap systemd-container)
# and the Debian mirror (about 60 MB downloaded, 250 MB in a temporary directory). Not run by
# .ci/run: it downloads a distribution and boots a container. Takes about 3 minutes, most of it
# waiting for one watchdog period.
set -euo pipefail

deb=${1:?usage: systemd-check.sh path/to/anju-gateway.deb}
deb=$(realpath "$deb")
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
work=$(mktemp -d /var/tmp/anju-systemd-check.XXXXXX)
root="$work/root"
boot_pid=
cleanup() {
  [ -n "$boot_pid" ] && kill "$boot_pid" 2>/dev/null && wait "$boot_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "systemd-check.sh: FAILED: $*" >&2
  [ -n "${init:-}" ] && nsenter -t "$init" -a journalctl -u anju-gateway --no-pager -n 30 >&2
  exit 1
}
step() { echo "systemd-check.sh: $*"; }

step "debootstrap minbase (Debian 12) into $root"
debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus bookworm "$root" "$mirror" \
  >"$work/debootstrap.log" 2>&1 || fail "debootstrap (log: $work/debootstrap.log)"
cp "$deb" "$root/anju-gateway.deb"
# No machined and no system bus outside: run in this cgroup, unregistered.
nspawn=(systemd-nspawn -q --keep-unit --register=no -D "$root")
step "apt-get install ./anju-gateway.deb (its Depends from the mirror)"
"${nspawn[@]}" --pipe sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq /anju-gateway.deb' \
  >"$work/install.log" 2>&1 || fail "install: $(tail -5 "$work/install.log")"
printf 'ANJU_INFLUX_TOKEN=dummy-token\nANJU_MQTT_PASSWORD=dummy-password\n' >>"$root/etc/anju/secrets.env"

step "boot"
setsid "${nspawn[@]}" --private-network -b >"$work/boot.log" 2>&1 </dev/null &
boot_pid=$!
init=
for _ in $(seq 1 100); do
  init=$(pgrep -P "$boot_pid" | head -1 || true)
  [ -n "$init" ] && nsenter -t "$init" -a systemctl is-system-running --wait >/dev/null 2>&1 && break
  sleep 0.3
done
[ -n "$init" ] || fail "the container did not boot: $(tail -5 "$work/boot.log")"
inside() { nsenter -t "$init" -a "$@"; }
prop() { inside systemctl show anju-gateway -p "$1" --value; }

step "systemctl start anju-gateway"
inside systemctl start anju-gateway || fail "start"
[ "$(prop ActiveState)" = active ] || fail "not active after start: $(prop ActiveState)"
main=$(prop MainPID)
dir=$(inside stat -c '%a %U' /var/lib/anju)
[ "$dir" = "750 anju" ] || fail "/var/lib/anju is \"$dir\", wants \"750 anju\""
sleep 2
files=$(inside find /var/lib/anju -type f -printf '%m %u %f\n')
grep -q "600 anju spool.redb" <<<"$files" || fail "spool files: $files"
! grep -qv '^600 anju' <<<"$files" || fail "a file in /var/lib/anju is not 0600 anju: $files"

step "watchdog (WatchdogSec=$(prop WatchdogUSec); fed at half of it)"
first=$(prop WatchdogTimestampMonotonic)
# The unit's 2 min period: a keep-alive within 70 s, and no restart by the watchdog.
for _ in $(seq 1 70); do [ "$(prop WatchdogTimestampMonotonic)" != "$first" ] && break; sleep 1; done
[ "$(prop WatchdogTimestampMonotonic)" != "$first" ] || fail "no keep-alive within 70 s"
[ "$(prop MainPID)" = "$main" ] && [ "$(prop NRestarts)" = 0 ] || fail "restarted meanwhile"

step "systemctl reload"
inside systemctl reload anju-gateway || fail "reload"
inside journalctl -u anju-gateway --no-pager | grep -q "Config reloaded." || fail "no \"Config reloaded.\""
[ "$(prop MainPID)" = "$main" ] || fail "reload changed the main PID"

step "kill -9: started again by systemd"
inside kill -9 "$main"
for _ in $(seq 1 40); do [ "$(prop NRestarts)" = 1 ] && [ "$(prop ActiveState)" = active ] && break; sleep 0.5; done
[ "$(prop NRestarts)" = 1 ] && [ "$(prop ActiveState)" = active ] || fail "not restarted after kill -9"

step "a missing secret"
inside systemctl stop anju-gateway
cp "$root/etc/anju/secrets.env" "$work/secrets.env"
grep -v ANJU_MQTT_PASSWORD "$work/secrets.env" >"$root/etc/anju/secrets.env"
! inside systemctl start anju-gateway 2>/dev/null || fail "started without ANJU_MQTT_PASSWORD"
inside journalctl -u anju-gateway --no-pager | grep -q "ANJU_MQTT_PASSWORD is not set" ||
  fail "the journal does not name the missing variable"
inside systemctl stop anju-gateway
cp "$work/secrets.env" "$root/etc/anju/secrets.env"
inside systemctl reset-failed anju-gateway 2>/dev/null || true

step "start and stop"
inside systemctl start anju-gateway || fail "start after the secret is back"
inside systemctl stop anju-gateway || fail "stop"
[ "$(prop Result)" = success ] && [ "$(prop ExecMainStatus)" = 0 ] ||
  fail "stop: Result=$(prop Result) status=$(prop ExecMainStatus)"
inside journalctl -u anju-gateway --no-pager -n 20 | grep -q "Gateway stopped." || fail "no \"Gateway stopped.\""
if inside journalctl -u anju-gateway --no-pager -o cat | grep -q $'\e'; then
  fail "colour codes in the journal"
fi
echo "systemd-check.sh: OK: $(basename "$deb") under systemd $(inside systemctl --version | head -1 | cut -d' ' -f2) in Debian $(cat "$root/etc/debian_version") minbase: notify start, state directory modes, watchdog fed, reload, restart after kill -9, missing secret named, clean stop"
