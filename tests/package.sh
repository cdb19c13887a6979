#!/usr/bin/env bash
# Package test (issue 13 item 3): builds the amd64 Debian package with cargo-deb from
# gateway/Cargo.toml [package.metadata.deb] and checks what a site box would install: the
# control fields, the files with their modes, the conffiles, the maintainer scripts, that
# `gateway check` accepts the shipped config with its profiles once the secrets are set and
# names the missing secret without them, and `systemd-analyze verify` of the unit.
#
# The binary in the package is the debug build (stripped) that `cargo test` builds anyway: the
# package's layout is what is tested, and a dist build (fat LTO) would take minutes. The dist
# package is packaging/build-targets.sh --deb's.
#
# Skips, saying so, when cargo-deb is not installed (`cargo install cargo-deb`, about 1.5 min
# of compiling on 2 cores) or dpkg-deb is missing; `systemd-analyze verify` is skipped alone
# when systemd-analyze is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-deb >/dev/null 2>&1; then
  echo "tests/package.sh: SKIPPED: cargo-deb is not installed (cargo install cargo-deb)"
  exit 0
fi
if ! command -v dpkg-deb >/dev/null 2>&1; then
  echo "tests/package.sh: SKIPPED: dpkg-deb is not installed"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() {
  echo "tests/package.sh: FAILED: $*" >&2
  exit 1
}

cargo build --locked --quiet -p anju-gateway --bin gateway
target_dir=${CARGO_TARGET_DIR:-target}
# cargo-deb --no-build takes the binary where the profile of the metadata (dist) puts it.
mkdir -p "$work/target/dist"
strip -o "$work/target/dist/gateway" "$target_dir/debug/gateway"
CARGO_TARGET_DIR="$work/target" cargo deb --locked --quiet -p anju-gateway --no-build --fast \
  -o "$work/anju-gateway.deb" >/dev/null
deb="$work/anju-gateway.deb"

# Control fields.
info=$(dpkg-deb -I "$deb")
for want in "Package: anju-gateway" "Architecture: amd64" "Section: net"; do
  grep -qF " $want" <<<"$info" || fail "dpkg-deb -I has no \"$want\":
$info"
done
depends=$(dpkg-deb -f "$deb" Depends)
[[ "$depends" == *adduser* && "$depends" == *libc6* ]] ||
  fail "Depends is \"$depends\", wants adduser (the postinst) and libc6"

# Files and modes: "mode path" pairs from dpkg-deb -c.
contents=$(dpkg-deb -c "$deb" | awk '{ print $1, $6 }')
has() {
  grep -qxF -e "$1 $2" <<<"$contents" || fail "the package has no $2 with mode $1:
$contents"
}
has -rwxr-xr-x ./usr/bin/gateway
has -rw-r--r-- ./etc/anju/gateway.toml
has -rw------- ./etc/anju/secrets.env
has -rw-r--r-- ./usr/lib/systemd/system/anju-gateway.service
for profile in config/profiles/*.toml; do
  has -rw-r--r-- "./etc/anju/profiles/$(basename "$profile")"
done
owners=$(dpkg-deb -c "$deb" | awk '{ print $2 }' | sort -u)
[ "$owners" = "0/0" ] || fail "files not all root-owned: $owners"

# Conffiles: everything under /etc, so an upgrade keeps the technician's edits.
dpkg-deb -e "$deb" "$work/control"
for conffile in /etc/anju/gateway.toml /etc/anju/secrets.env /etc/anju/profiles/levelling-8ch.toml; do
  grep -qxF "$conffile" "$work/control/conffiles" || fail "$conffile is not a conffile"
done
# The maintainer scripts: the anju user, and the unit installed but neither enabled nor
# started (the config must describe the site first).
grep -q 'adduser --system --group --home /var/lib/anju' "$work/control/postinst" ||
  fail "postinst does not create the anju system user"
grep -q '#DEBHELPER#' "$work/control/postinst" && fail "postinst kept the #DEBHELPER# token"
grep -q 'deb-systemd-invoke start' "$work/control/postinst" &&
  fail "postinst starts the service before the site is configured"
grep -q 'deb-systemd-invoke stop anju-gateway.service' "$work/control/prerm" ||
  fail "prerm does not stop the service on removal"

# The shipped config with the shipped profiles: invalid only for the secrets it names.
root="$work/root"
dpkg-deb -x "$deb" "$root"
gw="$root/usr/bin/gateway"
config="$root/etc/anju/gateway.toml"
set +e
without=$(env -u ANJU_INFLUX_TOKEN -u ANJU_MQTT_PASSWORD "$gw" check -c "$config" 2>&1)
without_rc=$?
with=$(ANJU_INFLUX_TOKEN=t ANJU_MQTT_PASSWORD=p "$gw" check -c "$config" 2>&1)
with_rc=$?
set -e
[ $without_rc -eq 2 ] && grep -q ANJU_ <<<"$without" ||
  fail "gateway check without secrets: exit $without_rc, wants 2 naming the variable:
$without"
[ $with_rc -eq 0 ] || fail "gateway check of the shipped config with its secrets: exit $with_rc:
$with"

# Every program the unit runs is in the package, in an Essential package or in one the package
# depends on: systemd-analyze verify only looks on this machine, and a minimal box image lacks
# what a build machine has (/bin/kill of ExecReload failed so under a real systemd).
unit_file="$root/usr/lib/systemd/system/anju-gateway.service"
for exe in $(sed -n 's/^Exec[A-Za-z]*=[-@:+!]*\(\/[^ ]*\).*/\1/p' "$unit_file" | sort -u); do
  awk -v f=".$exe" '$2 == f { found = 1 } END { exit !found }' <<<"$contents" && continue
  owner=$(dpkg -S "$exe" 2>/dev/null | head -1 | cut -d: -f1) ||
    fail "the unit runs $exe, which neither the package nor this machine has"
  [ -n "$owner" ] || fail "the unit runs $exe, which neither the package nor this machine has"
  [ "$(dpkg-query -W -f='${Essential}' "$owner" 2>/dev/null)" = yes ] && continue
  [[ ", $depends," == *", $owner"[\ ,]* ]] ||
    fail "the unit runs $exe (package $owner), which is neither Essential nor in Depends: \"$depends\""
done

# The unit, with ExecStart pointing at the packaged binary (verify wants it to exist).
if command -v systemd-analyze >/dev/null 2>&1; then
  mkdir -p "$work/unit"
  sed "s#/usr/bin/gateway#$gw#g" "$root/usr/lib/systemd/system/anju-gateway.service" \
    >"$work/unit/anju-gateway.service"
  verify=$(systemd-analyze verify "$work/unit/anju-gateway.service" 2>&1) ||
    fail "systemd-analyze verify:
$verify"
  [ -z "$verify" ] || fail "systemd-analyze verify warns:
$verify"
  for directive in Type=notify User=anju WatchdogSec= StateDirectory=anju \
    ConfigurationDirectory=anju EnvironmentFile=-/etc/anju/secrets.env \
    "ExecStartPre=$gw check" "ExecReload=$gw check" "ExecReload=/bin/kill -HUP" Restart=on-failure ProtectSystem=strict NoNewPrivileges=yes \
    "CapabilityBoundingSet=" SupplementaryGroups=dialout; do
    grep -q "^$directive" "$work/unit/anju-gateway.service" || fail "the unit has no $directive"
  done
  verified="systemd-analyze verify clean"
else
  verified="systemd-analyze verify SKIPPED (systemd-analyze not installed: apt-get install systemd)"
fi

echo "tests/package.sh: OK: anju-gateway amd64 package: control, $(wc -l <<<"$contents") entries, conffiles, maintainer scripts, gateway check of the shipped config; $verified"
