#!/usr/bin/env bash
# Make sure Node.js (18 or newer) and npm are there for the TypeScript client's build and
# tests (clients/typescript). As root, install Debian's packages; else say how.
set -euo pipefail
if command -v node >/dev/null && command -v npm >/dev/null \
   && node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)'; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "node.sh: installing nodejs and npm"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  exit 0
fi
echo "node.sh: the TypeScript client needs Node.js 18+ and npm: sudo apt-get install nodejs npm" >&2
exit 1
