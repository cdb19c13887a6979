#!/usr/bin/env bash
# The gateway still compiles for the site boxes' aarch64 (issue 13 item 2; README §Building
# for the site boxes). `cargo check`, not a build: the cross link and fat LTO are
# packaging/build-targets.sh's job, minutes this budget has not got.
#
# Installs what the check needs when it is missing, as tests/run.sh does for its servers: the
# Rust target (rustup) and Debian's aarch64 gcc (ring's build script compiles its C parts even
# for `cargo check`). When either cannot be installed here, it says so and skips: a runner
# without network must not fail CI for a check it cannot make.
set -euo pipefail
cd "$(dirname "$0")/.."

target=aarch64-unknown-linux-gnu
skip() {
  echo "cross-check: SKIPPED, $target not checked: $*"
  exit 0
}

if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  command -v rustup >/dev/null 2>&1 || skip "no rustup here to add the $target standard library"
  echo "cross-check: installing the Rust target $target"
  rustup target add "$target" || skip "rustup target add $target failed"
fi
if ! command -v aarch64-linux-gnu-gcc >/dev/null 2>&1; then
  echo "cross-check: installing gcc-aarch64-linux-gnu (ring's C parts)"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  { $sudo apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
      gcc-aarch64-linux-gnu libc6-dev-arm64-cross; } ||
    skip "apt-get could not install gcc-aarch64-linux-gnu"
fi

started=$(date +%s)
cargo check --locked --target "$target" -p anju-gateway
echo "cross-check: anju-gateway checks for $target ($(($(date +%s) - started)) s)"
