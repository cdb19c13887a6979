#!/usr/bin/env bash
# Run a cross-built gateway (packaging/build-targets.sh) on this machine under qemu-user, as a
# box would run it: `gateway check` of the example site config, then the demo site for a while
# (config/demo.toml against the native simulator: Modbus TCP, two RS-485 buses on pseudo-
# terminals, MQTT nodes on the gateway's embedded broker) with an InfluxDB sink to a local
# VictoriaMetrics, and count the readings that landed there.
#
#   bash packaging/qemu-demo.sh aarch64-unknown-linux-gnu [SECONDS]   (default 30)
#
# Needs: apt-get install qemu-user socat victoria-metrics, and the simulator
# (cargo build -p anju-firmware-sim). Uses the demo's fixed 127.0.0.1 ports (15021-15025,
# 18830, 18080), so not while `anju-demo` runs.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${1:?usage: qemu-demo.sh TARGET [SECONDS]}
seconds=${2:-30}
# GATEWAY=path runs a binary built elsewhere.
bin="${GATEWAY:-${CARGO_TARGET_DIR:-target}/$target/dist/gateway}"
sim="${CARGO_TARGET_DIR:-target}/debug/firmware-sim"
case "$target" in
  aarch64-*-gnu) run=(qemu-aarch64 -L /usr/aarch64-linux-gnu) ;;
  armv7-*-gnueabihf) run=(qemu-arm -L /usr/arm-linux-gnueabihf) ;;
  aarch64-*-musl) run=(qemu-aarch64) ;;
  armv7-*-musleabihf) run=(qemu-arm) ;;
  *) echo "qemu-demo.sh: no qemu for $target" >&2; exit 2 ;;
esac
for need in "$bin" "$sim"; do
  [ -x "$need" ] || { echo "qemu-demo.sh: $need is not built" >&2; exit 1; }
done
command -v "${run[0]}" >/dev/null || { echo "qemu-demo.sh: apt-get install qemu-user" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== $target: gateway check -c config/site.example.toml (placeholder secrets)"
ANJU_INFLUX_TOKEN=placeholder ANJU_MQTT_PASSWORD=placeholder \
  "${run[@]}" "$bin" check -c config/site.example.toml | tail -n 1

vm_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
victoria-metrics -httpListenAddr="127.0.0.1:$vm_port" -storageDataPath="$work/vm" \
  -retentionPeriod=1 >"$work/vm.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do
  curl -sf "http://127.0.0.1:$vm_port/health" >/dev/null && break
  sleep 0.2
done

# The demo config, with its data and pseudo-terminals in $work and an InfluxDB sink.
{
  echo "profiles_dir = \"$PWD/config/profiles\""
  sed -e "s#/tmp/anju-demo/data#$work/data#" -e "s#/tmp/anju-demo/pty#$work/pty#" config/demo.toml
  cat <<EOF

[[sinks]]
type = "influxdb"
url = "http://127.0.0.1:$vm_port"
org = "county"
bucket = "anju"
EOF
} >"$work/gateway.toml"

"$sim" --scenario config/sim/demo.toml --mqtt 127.0.0.1:18830 --pty-dir "$work/pty" --forever \
  >"$work/sim.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do
  [ -e "$work/pty/rs485-2/gw" ] && break
  sleep 0.1
done

echo "== $target: gateway run, $seconds s, demo site -> VictoriaMetrics"
# MALLOC_ARENA_MAX=1 as the Debian unit sets it: without it `gateway run` starts itself again
# with it (main.rs, one_malloc_heap), and under qemu-user without binfmt_misc that exec of an
# ARM binary fails (glibc's execvp hands the file to /bin/sh: "ELF...: not found").
MALLOC_ARENA_MAX=1 ANJU_LOG=info "${run[@]}" "$bin" run -c "$work/gateway.toml" >"$work/gateway.log" 2>&1 &
gateway=$!
sleep "$seconds"
metrics=$(curl -s 127.0.0.1:18080/metrics || true)
counter() { awk -v n="$1" '$1 ~ "^"n { s += $2 } END { printf "%d", s }' <<<"$metrics"; }
spooled=$(counter anju_readings_spooled_total)
written=$(counter anju_influx_written_records_total)
kill -TERM "$gateway"
status=0
wait "$gateway" || status=$?

curl -s "http://127.0.0.1:$vm_port/internal/force_flush" >/dev/null || true
sleep 1
# Every reading has a quality field. The export, not a query: queries leave out the last 30 s
# (VictoriaMetrics' latency offset).
count=$(curl -s "http://127.0.0.1:$vm_port/api/v1/export" \
  --data-urlencode 'match[]={__name__=~".+_quality",gateway="demo-gw"}' |
  python3 -c 'import json, sys; print(sum(len(json.loads(l)["values"]) for l in sys.stdin if l.strip()))')
grep -E 'Gateway starting|Summary of the last|Gateway stopped|ERROR' "$work/gateway.log" | tail -n 6 || true
echo "== $target: exit status $status after SIGTERM; readings spooled $spooled, accepted by the store $written (console counters before the stop), $count queryable in VictoriaMetrics"
[ "$status" -eq 0 ] && [ "$count" -gt 0 ]
