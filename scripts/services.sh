#!/usr/bin/env bash
# Make sure PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) answer, for the tests.
# Already running: nothing to do. Otherwise: `docker compose up` where Docker runs, else
# (as root, e.g. CI) install them from Debian's packages and start them.
set -euo pipefail
cd "$(dirname "$0")/.."

pg_up() { python3 - <<'PY'
import socket, sys
try:
    socket.create_connection(("127.0.0.1", 5432), timeout=1).close()
except OSError:
    sys.exit(1)
PY
}
redis_up() { python3 - <<'PY'
import socket, sys
try:
    s = socket.create_connection(("127.0.0.1", 6379), timeout=1)
    s.sendall(b"PING\r\n")
    sys.exit(0 if s.recv(16).startswith(b"+PONG") else 1)
except OSError:
    sys.exit(1)
PY
}
wait_for() { # name, check
  for _ in $(seq 1 60); do "$2" && return 0; sleep 1; done
  echo "services.sh: $1 did not come up" >&2; return 1
}

if pg_up && redis_up; then exit 0; fi

if docker compose version >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  echo "services.sh: starting postgres and redis with docker compose"
  env_file=.env; [ -f .env ] || env_file=.env.example
  docker compose --env-file "$env_file" up -d --wait postgres redis
  exit 0
fi

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "services.sh: start PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379" \
       "(docker compose up -d postgres redis), then run this again" >&2
  exit 1
fi

if ! pg_up; then
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    echo "services.sh: installing PostgreSQL"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    version=$(ls /etc/postgresql)
    # local test server: trust loopback connections, like the CI machines
    sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' \
      "/etc/postgresql/$version/main/pg_hba.conf"
  fi
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start || true
  wait_for postgres pg_up
fi

if ! redis_up; then
  if ! command -v redis-server >/dev/null; then
    echo "services.sh: installing Redis"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  fi
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  wait_for redis redis_up
fi
