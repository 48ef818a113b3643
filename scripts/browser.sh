#!/usr/bin/env bash
# Make sure Debian's Chromium is there for the playground's browser test (Playwright drives
# it through executable_path; no browser is ever downloaded). As root, install it; else say how.
set -euo pipefail
[ -n "${CHROMIUM:-}" ] && [ -x "$CHROMIUM" ] && exit 0   # the tests use it as given
command -v chromium >/dev/null && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "browser.sh: installing chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  exit 0
fi
echo "browser.sh: the browser test needs Chromium: sudo apt-get install chromium" \
     "(or set CHROMIUM=/path/to/chromium)" >&2
exit 1
