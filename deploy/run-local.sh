#!/usr/bin/env bash
# Installs, builds and runs Herald locally: a throwaway redis-server and PostgreSQL, one
# gateway serving the web demo with history, and a publisher of sample events.
# Ctrl-C stops everything it started.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

bash deploy/install-deps.sh
bash deploy/build.sh "$root/build"

port=${HERALD_PORT:-8080}
redis_port=${REDIS_PORT:-6390}
pg_port=${PG_PORT:-5490}
run=$(mktemp -d /tmp/herald-run.XXXXXX)
pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "stopped (logs kept in $run)"
}
trap cleanup INT TERM EXIT

redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$run" >"$run/redis.log" 2>&1 &
pids+=($!)

# PostgreSQL refuses to run as root: its files belong to the postgres user
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  chown postgres "$run"
  as_pg=(runuser -u postgres --)
fi
"${as_pg[@]}" "$pgbin/initdb" -D "$run/pg" -U herald -A trust >"$run/initdb.log" 2>&1
"${as_pg[@]}" "$pgbin/postgres" -D "$run/pg" -p "$pg_port" -k "$run" \
  -c listen_addresses=127.0.0.1 >"$run/postgres.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$pg_port" && break
  sleep 0.1
done
"$pgbin/createdb" -h 127.0.0.1 -p "$pg_port" -U herald herald

HERALD_LISTEN=0.0.0.0:$port HERALD_REDIS_URL=redis://127.0.0.1:$redis_port/0 \
HERALD_DATABASE_URL=postgresql://herald@127.0.0.1:$pg_port/herald HERALD_MIGRATE_ON_START=1 \
HERALD_STATIC_DIR=$root/web-demo "$root/build/gateway/herald" 2>"$run/herald.log" &
pids+=($!)

for _ in $(seq 1 50); do
  curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done

bash "$root/deploy/demo-publisher.sh" "http://127.0.0.1:$port" >"$run/publisher.log" 2>&1 &
pids+=($!)

echo "Herald is running: open http://127.0.0.1:$port/  (logs in $run, Ctrl-C to stop)"
wait
