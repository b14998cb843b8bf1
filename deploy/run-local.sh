#!/usr/bin/env bash
# Installs, builds and runs Herald locally: a throwaway redis-server, one gateway serving the
# web demo, and a small publisher of sample events. Ctrl-C stops everything it started.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

bash deploy/install-deps.sh
bash deploy/build.sh "$root/build"

port=${HERALD_PORT:-8080}
redis_port=${REDIS_PORT:-6390}
run=$root/.run
mkdir -p "$run"
pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "stopped"
}
trap cleanup INT TERM EXIT

redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$run" >"$run/redis.log" 2>&1 &
pids+=($!)

HERALD_LISTEN=0.0.0.0:$port HERALD_REDIS_URL=redis://127.0.0.1:$redis_port/0 \
HERALD_STATIC_DIR=$root/web-demo "$root/build/gateway/herald" 2>"$run/herald.log" &
pids+=($!)

bash "$root/deploy/demo-publisher.sh" "$redis_port" >"$run/publisher.log" 2>&1 &
pids+=($!)

for _ in $(seq 1 50); do
  curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
echo "Herald is running: open http://127.0.0.1:$port/  (logs in $run, Ctrl-C to stop)"
wait
