#!/usr/bin/env bash
# callgrind-fanout.sh: instructions per delivery of the gateway's fan-out path, counted by
# callgrind (the VM has no hardware counters), as quoted in docs/PERFORMANCE.md.
#
#   tests/bench/callgrind-fanout.sh [HERALD_BIN] [HERALD_BENCH_BIN]
#
# The gateway runs under `valgrind --tool=callgrind` on core 0; redis-server and herald-bench
# on core 1. herald-bench opens SUBS connections on one channel and PUBLISHes RATE msg/s of
# 100-byte payloads for WARMUP + DURATION seconds; the gateway is then stopped with SIGTERM so
# callgrind writes its counts (user space only, start-up and shutdown included). Prints the
# total instructions, the deliveries, and the instructions per delivery split by shared object
# (self cost; callgrind_summary.py). Two runs of different DURATION give the marginal cost, with
# start-up and connecting cancelled out:
#   callgrind_summary.py LONG/callgrind.out N_LONG --base SHORT/callgrind.out:N_SHORT
# Every process started here is stopped by PID on exit.
# Environment knobs: SUBS [200], RATE [200], WARMUP [2], DURATION [4], HERALD_ARGS [extra
# herald flags], OUT [tests/artifacts/callgrind-<time>].
# Needs valgrind (Debian package valgrind; deploy/install-deps.sh does not install it).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERALD=$(realpath "${1:-$ROOT/build/gateway/herald}")
BENCH=$(realpath "${2:-$ROOT/build/tests/bench/herald-bench}")
SUBS=${SUBS:-200}
RATE=${RATE:-200}
WARMUP=${WARMUP:-2}
DURATION=${DURATION:-4}
HERALD_ARGS=${HERALD_ARGS:-}
OUT=${OUT:-$ROOT/tests/artifacts/callgrind-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"

REDIS_PID=
HERALD_PID=
cleanup() {
    stop_pid "$HERALD_PID"
    stop_pid "$REDIS_PID"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_redis "$OUT/redis.log" 1
HPORT=$(free_port)
# shellcheck disable=SC2086 # HERALD_ARGS is a list of flags
taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" \
    "$HERALD" --listen "127.0.0.1:$HPORT" --redis-url "redis://127.0.0.1:$RPORT/0" \
    --log-level warn --drain-seconds 1 $HERALD_ARGS >"$OUT/herald.log" 2>&1 &
HERALD_PID=$!
wait_for 600 curl -fs "http://127.0.0.1:$HPORT/readyz" ||
    { echo "herald did not become ready" >&2; tail "$OUT/herald.log" >&2; exit 1; }

timeout --kill-after=5 $((WARMUP + DURATION + 120)) taskset -c 1 "$BENCH" \
    --url "ws://127.0.0.1:$HPORT/ws" --redis "127.0.0.1:$RPORT" --connections "$SUBS" \
    --channels 1 --rate "$RATE" --payload-bytes 100 --warmup "$WARMUP" --duration "$DURATION" \
    --json >"$OUT/bench.json" || true
# SIGTERM: the gateway drains and exits, then callgrind writes its file (give it time: under
# valgrind everything is slow; stop_pid would send KILL after 5 s and lose the counts)
kill -TERM "$HERALD_PID"
for _ in $(seq 600); do kill -0 "$HERALD_PID" 2>/dev/null || break; sleep 0.1; done
stop_pid "$HERALD_PID"
HERALD_PID=

deliveries=$(json_get "$OUT/bench.json" received)
echo "$(json_get "$OUT/bench.json" published) published, $deliveries deliveries, missing" \
    "$(json_get "$OUT/bench.json" missing), $(json_get "$OUT/bench.json" messages_per_read)" \
    "messages per read, ok $(json_get "$OUT/bench.json" ok)"
/usr/bin/python3 "$(dirname "$0")/callgrind_summary.py" "$OUT/callgrind.out" "$deliveries" \
    --unit delivery --calls write_batch,lws_partial_buffered
echo "raw: $OUT"
