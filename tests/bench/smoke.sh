#!/usr/bin/env bash
# bench_smoke: run herald-bench (20 connections, 200 msg/s, 2 s) against a real herald and
# redis-server on free ports and assert that every message arrived exactly once.
# Correctness only: no speed is asserted. Usage: smoke.sh HERALD_BIN HERALD_BENCH_BIN
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HERALD=${1:?usage: smoke.sh HERALD_BIN HERALD_BENCH_BIN}
BENCH=${2:?usage: smoke.sh HERALD_BIN HERALD_BENCH_BIN}
WORK=$(mktemp -d)
PIDS=()

# Stop what this script started, by PID, and remove its files.
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

RPORT=$(free_port)
HPORT=$(free_port)

redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no \
    >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
wait_for 50 redis-cli -p "$RPORT" ping || { echo "redis-server did not start"; cat "$WORK/redis.log"; exit 1; }

"$HERALD" --listen "127.0.0.1:$HPORT" --redis-url "redis://127.0.0.1:$RPORT/0" --log-level warn \
    >"$WORK/herald.log" 2>&1 &
HERALD_PID=$!
PIDS+=("$HERALD_PID")
wait_for 100 curl -fs "http://127.0.0.1:$HPORT/healthz" || { echo "herald did not start"; cat "$WORK/herald.log"; exit 1; }
# Ready means the Redis subscription is proven; not fatal if it takes long, the bench then shows it.
wait_for 50 curl -fs "http://127.0.0.1:$HPORT/readyz" || echo "note: /readyz not 200 after 5 s"

rc=0
timeout 30 "$BENCH" --url "ws://127.0.0.1:$HPORT/ws" --redis "127.0.0.1:$RPORT" \
    --connections 20 --rate 200 --duration 2 --warmup 1 --gateway-pid "$HERALD_PID" --json \
    >"$WORK/bench.json" || rc=$?
cat "$WORK/bench.json"

fail=0
for want in '"ok":true' '"failed":0' '"gaps":0' '"duplicates":0' '"missing":0' '"closes":0'; do
    if ! grep -qF "$want" "$WORK/bench.json"; then
        echo "bench_smoke: expected $want"
        fail=1
    fi
done
if [[ $rc -ne 0 || $fail -ne 0 ]]; then
    echo "bench_smoke: FAILED (herald-bench exit $rc); herald log:"
    tail -n 50 "$WORK/herald.log"
    exit 1
fi
echo "bench_smoke: OK"
