#!/bin/bash
# As the official image: redis-server started without a configuration file gets
# --protected-mode no (otherwise it refuses every client but loopback), and runs as redis.
set -euo pipefail
if [ "${1:-}" = redis-server ]; then
  shift
  if [[ "${1:-}" != *.conf ]]; then
    set -- "$@" --protected-mode no
  fi
  exec setpriv --reuid=redis --regid=redis --init-groups redis-server "$@"
fi
exec "$@"
