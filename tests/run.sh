#!/usr/bin/env bash
# The test command: every unit and system test of the workspace, then the package test and
# the aarch64 cross-check.
#
# The system tests start a real mosquitto, a real VictoriaMetrics and socat pseudo-terminals on
# free 127.0.0.1 ports, and open the console's pages in headless Chromium. When one of them is
# missing, this script installs it from Debian's packages first, so a fresh Debian machine with
# Rust needs nothing else (chromium is the largest: about 100 MB of packages).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
[ -x /usr/bin/victoria-metrics ] || need+=(victoria-metrics)
command -v socat >/dev/null 2>&1 || need+=(socat)
# The package test looks up the owner of every program the unit runs (/bin/kill: procps).
[ -x /bin/kill ] || need+=(procps)
# Headless browser for the console's page test (tests/system/console_browser.rs), and a Chinese
# font (4 MB) so that its screenshots show the pages' Chinese text instead of empty boxes.
[ -x /usr/bin/chromium ] || need+=(chromium)
# ChromeDriver, to fill in and submit a console form in that browser (W3C WebDriver).
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
[ -n "$(fc-list :lang=zh 2>/dev/null)" ] || need+=(fonts-wqy-microhei)
if [ ${#need[@]} -gt 0 ]; then
  echo "tests/run.sh: installing ${need[*]} (needed by the system tests)"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

cargo test --workspace --locked "$@"
# The Debian package (skipped, saying so, without cargo-deb): about 20 s.
bash tests/package.sh
# The gateway still compiles for the site boxes' aarch64 (installs the Rust target and the cross
# gcc when missing; skipped, saying so, when it cannot): about 2 min cold, 10 s warm.
bash tests/cross-check.sh
