#!/bin/sh
# serve: migrate to head, then run the API (uvloop + httptools; SIGTERM drains the
# dispatcher and reconciler through the lifespan). migrate: migrations only.
# simulator: the Seedance simulator. Anything else runs as given.
set -e
case "$1" in
  serve)
    alembic upgrade head
    exec uvicorn app.main:create_app --factory --host 0.0.0.0 --port "${PORT:-8000}" \
      --loop uvloop --http httptools --no-access-log --proxy-headers \
      --timeout-graceful-shutdown "${GRACEFUL_SHUTDOWN_SECONDS:-20}"
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
