#!/usr/bin/env bash
# Browser tests drive Debian's Chromium through Playwright; install it once if missing.
set -euo pipefail
CHROMIUM=${CHROMIUM_PATH:-/usr/bin/chromium}
[ -x "$CHROMIUM" ] && exit 0
if [ "$(id -u)" = 0 ]; then
  echo "installing Debian's chromium for the browser tests"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
else
  echo "Chromium is missing: run 'sudo apt-get install chromium' (or set CHROMIUM_PATH)" >&2
  exit 1
fi
