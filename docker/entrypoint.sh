#!/bin/sh
# serve: migrate to head (unless MIGRATE_ON_START=false: an orchestrator that runs the
# migration Job first), then run the service in its ROLE (all, api or worker) with uvloop
# and httptools; SIGTERM drains requests and live streams, then stops the loops through
# the lifespan. Migrating takes a Postgres advisory lock, so replicas starting together
# migrate one after the other and the later ones find nothing to do. Idle keep-alive
# connections are held longer than a load balancer holds them (60 s is common: AWS ALB,
# nginx), so the balancer closes one first; the other way round, a request it sends on a
# connection uvicorn (5 s by default) has just closed fails. X-Forwarded-For is believed
# only from FORWARDED_ALLOW_IPS (addresses or networks of the proxies in front; 127.0.0.1
# unless set): behind an Ingress every client would otherwise have the proxy's address
# (one client's refused keys would lock out all), and trusted from anywhere a forged header
# would give each guess an address of its own. migrate: migrations only.
# simulator: the Seedance simulator. Anything else runs as given.
set -e
case "$1" in
  serve)
    if [ "${MIGRATE_ON_START:-true}" != "false" ]; then
      alembic upgrade head
    fi
    exec uvicorn app.main:create_app --factory --host 0.0.0.0 --port "${PORT:-8000}" \
      --loop uvloop --http httptools --no-access-log \
      --proxy-headers --forwarded-allow-ips "${FORWARDED_ALLOW_IPS:-127.0.0.1}" \
      --timeout-graceful-shutdown "${GRACEFUL_SHUTDOWN_SECONDS:-20}" \
      --timeout-keep-alive "${KEEP_ALIVE_SECONDS:-75}"
    ;;
  migrate)
    exec alembic upgrade head
    ;;
  simulator)
    shift
    exec python -m simulator --host 0.0.0.0 "$@"
    ;;
  *)
    exec "$@"
    ;;
esac
