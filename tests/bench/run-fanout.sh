#!/usr/bin/env bash
# run-fanout.sh: Herald's fan-out benchmark, the numbers quoted in the docs.
#
#   tests/bench/run-fanout.sh [HERALD_BIN] [HERALD_BENCH_BIN]
#
# Builds nothing: defaults are build/gateway/herald and build/tests/bench/herald-bench.
# herald runs alone on core 0 (taskset -c 0); herald-bench and redis-server share core 1.
# Scenarios:
#   (a) 1,000 subscribers on one channel, 100-byte payloads, publish rate stepped up
#       (deliveries = rate x 1,000) until p99 > 100 ms or delivered < 90% of expected;
#   (b) latency at 500,000 deliveries/s (500 msg/s x 1,000 subscribers);
#   (c) idle memory: 19,000 subscribed idle connections, gateway RSS per connection.
# Every step is bounded in time; every process started here is stopped by PID on exit.
# Environment knobs (defaults in brackets): RATES ["100 200 400 600 800 1000 1200 1500 2000
# 2500 3000"], SUBS [1000], STEP_SECONDS [10], WARMUP [2], LATENCY_RATE [500],
# LATENCY_SECONDS [20], IDLE_CONNS [19000], IDLE_CHANNELS [100], IDLE_SECONDS [10],
# SCENARIOS ["a b c"],
# HERALD_ARGS [extra herald flags], HERALD_CPUS [0: the cores herald may use, e.g. "0,1" with
# HERALD_ARGS="--workers 2"], BENCH_ARGS [extra herald-bench flags: HERALD_ARGS=--deflate
# BENCH_ARGS=--deflate measures permessage-deflate], OUT [tests/artifacts/bench-<time>].
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERALD=$(realpath "${1:-$ROOT/build/gateway/herald}")
BENCH=$(realpath "${2:-$ROOT/build/tests/bench/herald-bench}")
RATES=${RATES:-"100 200 400 600 800 1000 1200 1500 2000 2500 3000"}
SUBS=${SUBS:-1000}
STEP_SECONDS=${STEP_SECONDS:-10}
WARMUP=${WARMUP:-2}
LATENCY_RATE=${LATENCY_RATE:-500}
LATENCY_SECONDS=${LATENCY_SECONDS:-20}
IDLE_CONNS=${IDLE_CONNS:-19000}
IDLE_SECONDS=${IDLE_SECONDS:-10}
IDLE_CHANNELS=${IDLE_CHANNELS:-100}
SCENARIOS=${SCENARIOS:-"a b c"}
HERALD_ARGS=${HERALD_ARGS:-}
BENCH_ARGS=${BENCH_ARGS:-}
HERALD_CPUS=${HERALD_CPUS:-0}
OUT=${OUT:-$ROOT/tests/artifacts/bench-$(date +%Y%m%d-%H%M%S)}
P99_LIMIT_MS=100

for bin in "$HERALD" "$BENCH"; do
    [[ -x $bin ]] || { echo "run-fanout: not executable: $bin (build first)" >&2; exit 1; }
done
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)" # children inherit it: herald needs ~IDLE_CONNS descriptors too

REDIS_PID=
HERALD_PID=
TABLE_A=()
TABLE_C=()

# Stop the gateway, if running, by PID.
stop_herald() {
    if [[ -n $HERALD_PID ]]; then
        kill "$HERALD_PID" 2>/dev/null || true
        wait "$HERALD_PID" 2>/dev/null || true
        HERALD_PID=
    fi
}

# Stop everything this script started.
cleanup() {
    stop_herald
    if [[ -n $REDIS_PID ]]; then
        kill "$REDIS_PID" 2>/dev/null || true
        wait "$REDIS_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Start a fresh herald on HERALD_CPUS with extra flags "$@"; waits for /healthz and /readyz.
start_herald() {
    stop_herald
    HPORT=$(free_port)
    # shellcheck disable=SC2086 # HERALD_ARGS is a list of flags
    taskset -c "$HERALD_CPUS" "$HERALD" --listen "127.0.0.1:$HPORT" --redis-url "redis://127.0.0.1:$RPORT/0" \
        --log-level warn "$@" $HERALD_ARGS >>"$OUT/herald.log" 2>&1 &
    HERALD_PID=$!
    wait_for 100 curl -fs "http://127.0.0.1:$HPORT/healthz" ||
        { echo "herald did not start" >&2; tail "$OUT/herald.log" >&2; exit 1; }
    wait_for 100 curl -fs "http://127.0.0.1:$HPORT/readyz" || echo "note: /readyz not 200 after 10 s"
}

# Run herald-bench on core 1 into $1 (JSON), bounded by timeout; extra flags "${@:2}".
run_bench() {
    local out=$1 limit
    shift
    limit=$((${WARMUP%.*} + ${STEP_SECONDS%.*} + ${LATENCY_SECONDS%.*} + ${IDLE_SECONDS%.*} + 120))
    # shellcheck disable=SC2086 # BENCH_ARGS is a list of flags
    timeout --kill-after=5 "$limit" taskset -c 1 "$BENCH" --url "ws://127.0.0.1:$HPORT/ws" \
        --redis "127.0.0.1:$RPORT" --gateway-pid "$HERALD_PID" --json $BENCH_ARGS "$@" >"$out" ||
        true # exit 2 (delivery errors) is a result, reported in the table
    [[ -s $out ]] || { echo "herald-bench produced no report ($out)" >&2; return 1; }
}

# One fan-out run at rate $2 msg/s for $3 s, saved as $1.json; appends a table row.
fanout_row() {
    local name=$1 rate=$2 secs=$3 f="$OUT/$1.json"
    run_bench "$f" --connections "$SUBS" --channels 1 --rate "$rate" --payload-bytes 100 \
        --warmup "$WARMUP" --duration "$secs" || return 1
    local row
    row=$(json_get "$f" expected_delivered_per_s delivered_per_s latency_ms.p50 latency_ms.p99 \
        latency_ms.p999 latency_ms.max gateway.cpu_pct bench_cpu.receiver_pct messages_per_read gaps \
        duplicates closes missing)
    IFS=$'\t' read -r exp del p50 p99 p999 max gcpu bcpu mpr gaps dups closes missing <<<"$row"
    printf '%-8s rate %5s msg/s: delivered %9.0f/s of %9.0f/s, p50 %8s ms, p99 %8s ms, gateway cpu %s%%, bench cpu %s%%, %s msgs/read\n' \
        "$name" "$rate" "$del" "$exp" "$p50" "$p99" "$gcpu" "$bcpu" "$mpr"
    TABLE_A+=("| $name | $rate | $SUBS | $(printf '%.0f' "$exp") | $(printf '%.0f' "$del") | $p50 | $p99 | $p999 | $max | $gcpu | $bcpu | $mpr | $gaps/$dups/$closes/$missing |")
    LAST_DEL=$del LAST_EXP=$exp LAST_P99=$p99
}

# Did a step miss its targets (p99 over the limit, under 90% delivered, or no numbers)?
saturated() {
    /usr/bin/python3 - "$@" <<PY
import sys
try:
    d, e, p = map(float, sys.argv[1:])
except ValueError:
    sys.exit(0)
sys.exit(0 if p > $P99_LIMIT_MS or d < 0.9 * e else 1)
PY
}

# (a) Step the publish rate until the gateway no longer keeps up.
scenario_a() {
    echo "== (a) $SUBS subscribers, 1 channel, 100 B payloads, stepping the publish rate"
    start_herald
    for rate in $RATES; do
        fanout_row "step-$rate" "$rate" "$STEP_SECONDS" || break
        if saturated "$LAST_DEL" "$LAST_EXP" "$LAST_P99"; then
            echo "   stop: p99 > $P99_LIMIT_MS ms or delivered < 90% of expected"
            break
        fi
    done
    stop_herald
}

# (b) Latency at LATENCY_RATE x SUBS deliveries/s, longer.
scenario_b() {
    echo "== (b) latency at $LATENCY_RATE msg/s x $SUBS subscribers"
    start_herald
    fanout_row "latency" "$LATENCY_RATE" "$LATENCY_SECONDS" || true
    stop_herald
}

# (c) Idle memory: IDLE_CONNS subscribed connections on a fresh gateway.
scenario_c() {
    echo "== (c) idle memory: $IDLE_CONNS subscribed idle connections"
    # all clients come from a few loopback addresses: lift the per-address limit too
    start_herald --max-connections $((IDLE_CONNS + 100)) --max-connections-per-ip $((IDLE_CONNS + 100))
    local f="$OUT/idle.json"
    run_bench "$f" --idle --connections "$IDLE_CONNS" --channels "$IDLE_CHANNELS" --source-addrs 4 \
        --duration "$IDLE_SECONDS" || { stop_herald; return 0; }
    local row
    row=$(json_get "$f" subscribed failed connect_s gateway.rss_before_kib \
        gateway.rss_subscribed_kib gateway.rss_end_kib gateway.rss_per_conn_kib closes first_error)
    IFS=$'\t' read -r sub failed cs before after end per closes err <<<"$row"
    echo "   $sub subscribed ($failed failed) in $cs s; gateway RSS $before -> $after KiB = $per KiB/connection ${err:+(first error: $err)}"
    TABLE_C+=("| $IDLE_CONNS | $sub | $failed | $cs | $before | $after | $end | $per | $closes |")
    stop_herald
}

echo "herald: $HERALD"
echo "bench:  $BENCH"
echo "output: $OUT"
start_redis "$OUT/redis.log" 1
for s in $SCENARIOS; do
    "scenario_$s"
done

echo
echo "## Herald fan-out benchmark ($(date -u +%Y-%m-%d), $(nproc) cores; herald on core 0, bench + redis on core 1)"
if ((${#TABLE_A[@]})); then
    echo
    echo "| step | publish msg/s | subscribers | expected deliveries/s | delivered/s | p50 ms | p99 ms | p99.9 ms | max ms | gateway CPU % | bench CPU % | msgs/read | gaps/dups/closes/missing |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${TABLE_A[@]}"
fi
if ((${#TABLE_C[@]})); then
    echo
    echo "| idle connections | subscribed | failed | connect s | RSS before KiB | RSS subscribed KiB | RSS end KiB | KiB per connection | closes |"
    echo "|---|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${TABLE_C[@]}"
fi
echo
echo "raw reports: $OUT"
