#!/usr/bin/env bash
# Build the gateway for the site boxes with the dist profile ([profile.dist] in Cargo.toml) and
# print, per target, the binary, its size and the oldest glibc it needs (README §Building for the
# site boxes). With --deb, also the Debian package of each glibc target (cargo-deb).
#
#   bash packaging/build-targets.sh                     # every target below
#   bash packaging/build-targets.sh --deb aarch64-unknown-linux-gnu
#
# Needs, once per machine (Debian): the Rust targets (added here when missing, through rustup)
# and the cross gcc of each target, which this script does not install:
#   apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross \
#                   gcc-arm-linux-gnueabihf libc6-dev-armhf-cross
# and for --deb: cargo install cargo-deb. Each target is a fat-LTO build with one codegen unit:
# several minutes each on a 2-core machine (CARGO_BUILD_JOBS is respected).
set -euo pipefail
cd "$(dirname "$0")/.."

all_targets=(
  x86_64-unknown-linux-gnu
  aarch64-unknown-linux-gnu
  armv7-unknown-linux-gnueabihf
  aarch64-unknown-linux-musl
)
deb=0
targets=()
for arg in "$@"; do
  case "$arg" in
    --deb) deb=1 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    -*) echo "build-targets.sh: unknown option $arg" >&2; exit 2 ;;
    *) targets+=("$arg") ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")

# The C compiler and linker each target uses (.cargo/config.toml says the same to cargo).
cross_gcc() {
  case "$1" in
    aarch64-*) echo aarch64-linux-gnu-gcc ;;
    armv7-*) echo arm-linux-gnueabihf-gcc ;;
    *) echo cc ;;
  esac
}

target_dir=${CARGO_TARGET_DIR:-target}
declared_glibc=$(sed -n 's/^depends = .*libc6 (>= \([0-9.]*\)).*/\1/p' gateway/Cargo.toml)
rows=()
for t in "${targets[@]}"; do
  gcc=$(cross_gcc "$t")
  if ! command -v "$gcc" >/dev/null 2>&1; then
    echo "build-targets.sh: $t needs $gcc (see the apt-get line at the top of this script)" >&2
    exit 1
  fi
  if ! rustup target list --installed | grep -qx "$t"; then
    rustup target add "$t"
  fi
  echo "== $t: cargo build --profile dist --target $t"
  cargo build --locked --profile dist -p anju-gateway --bin gateway --target "$t"
  bin="$target_dir/$t/dist/gateway"
  size=$(stat -c %s "$bin")
  case "$t" in
    *-musl*) floor="none (static)" ;;
    *)
      floor=$(objdump -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n 1)
      # The package promises this floor (depends in gateway/Cargo.toml [package.metadata.deb]).
      if [ "$(printf '%s\n' "GLIBC_$declared_glibc" "$floor" | sort -V | tail -n 1)" != "GLIBC_$declared_glibc" ]; then
        echo "build-targets.sh: $t needs $floor, above the libc6 (>= $declared_glibc) the package declares" >&2
        exit 1
      fi
      ;;
  esac
  rows+=("$(awk -v t="$t" -v s="$size" -v f="$floor" 'BEGIN { printf "%-32s %10d B  %5.2f MiB  glibc floor: %s", t, s, s / 1048576, f }')")
  if [ $deb -eq 1 ] && [[ "$t" != *-musl* ]]; then
    if ! command -v cargo-deb >/dev/null 2>&1; then
      echo "build-targets.sh: --deb needs cargo-deb (cargo install cargo-deb)" >&2
      exit 1
    fi
    cargo deb --locked -p anju-gateway --no-build --target "$t"
  fi
done

echo
echo "gateway binaries (profile dist, default features, stripped):"
printf '%s\n' "${rows[@]}"
if [ $deb -eq 1 ]; then
  echo
  echo "packages:"
  ls -l "$target_dir"/debian/*.deb
fi
