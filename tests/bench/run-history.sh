#!/usr/bin/env bash
# run-history.sh: benchmarks of Herald's PostgreSQL history (durable publish, delivery latency,
# resume storm) against a fresh PostgreSQL, Redis and Herald started here.
#
#   tests/bench/run-history.sh [HERALD_BIN] [HIST_PUBLISH_BIN] [HIST_RESUME_BIN]
#
# Builds nothing: defaults are build/gateway/herald and build/tests/bench/hist-{publish,resume}.
# herald runs on core 0 (taskset -c 0), the tools on core 1; postgres and redis float.
# PostgreSQL refuses root: as root, initdb and postgres run as user postgres (runuser) in a
# temporary directory; it listens on 127.0.0.1 and a free port only. Every process started
# here is stopped by PID on exit; every tool run is bounded by `timeout`.
# Scenarios (SCENARIOS ["sql rest latency resume"]):
#   sql      hist-publish --mode sql  with PUBLISHERS ["1 8 64"] for SECONDS_EACH [10] s each
#   sqlbatch the same with --batch SQL_BATCH [100]: herald_publish_batch, SQL_BATCH per call
#   rest     hist-publish --mode rest with PUBLISHERS, same length
#   restbatch the same with --batch REST_BATCH [100]: POST /v1/messages, REST_BATCH per request
#   latency  REST publishes at LATENCY_RATE [1000]/s for LATENCY_SECONDS [10] s, one WebSocket
#            subscriber measures publish-to-delivery latency
#   resume   RESUME_CONNS [10000] clients over RESUME_CHANNELS [10] channels resume at once,
#            cold (the gateway never saw the channels), warm (its recent cache has them), and
#            plain (the same storm without `since`: the baseline cost of a subscribe)
# Other knobs: CHANNELS [10] (publish runs), LATENCY_PUBLISHERS [4], RESUME_MESSAGES [100],
# RESUME_VARIANTS ["cold warm plain"], RESUME_PAUSE [3] (seconds idle between connecting and the
# storm, so the gateway's periodic 2 s head check is not what the query count measures),
# PG_CPUS [unset: floating; e.g. 1 pins postgres with taskset -c], SQL_ARGS [extra hist-publish
# flags in sql mode, e.g. --no-prepare to parse and plan every call, or --batch 100 to publish
# 100 messages per herald_publish_batch call],
# SOURCE_ADDRS [16: 625 clients per address at 10,000, under herald's default
# HERALD_MAX_CONNECTIONS_PER_IP of 1000], DB_POOL [herald's default], HERALD_ARGS [extra herald flags],
# PG_ARGS [extra postgres -c flags, e.g. "-c synchronous_commit=off"],
# HERALD_REV [label of the gateway build in the report; default: the repo's HEAD],
# OUT [tests/artifacts/history-<time>]; SMOKE=1: a few seconds of each, correctness asserted.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERALD=$(realpath "${1:-$ROOT/build/gateway/herald}")
HPUB=$(realpath "${2:-$ROOT/build/tests/bench/hist-publish}")
HRES=$(realpath "${3:-$ROOT/build/tests/bench/hist-resume}")
SMOKE=${SMOKE:-0}
if [[ $SMOKE == 1 ]]; then
    PUBLISHERS=${PUBLISHERS:-"2"} SECONDS_EACH=${SECONDS_EACH:-1} LATENCY_RATE=${LATENCY_RATE:-200}
    LATENCY_SECONDS=${LATENCY_SECONDS:-1} RESUME_CONNS=${RESUME_CONNS:-200}
    RESUME_CHANNELS=${RESUME_CHANNELS:-4} RESUME_MESSAGES=${RESUME_MESSAGES:-30}
    WARMUP=${WARMUP:-0.2} RESUME_PAUSE=${RESUME_PAUSE:-0}
fi
SCENARIOS=${SCENARIOS:-"sql rest latency resume"}
PUBLISHERS=${PUBLISHERS:-"1 8 64"}
SECONDS_EACH=${SECONDS_EACH:-10}
WARMUP=${WARMUP:-1}
CHANNELS=${CHANNELS:-10}
LATENCY_RATE=${LATENCY_RATE:-1000}
LATENCY_SECONDS=${LATENCY_SECONDS:-10}
LATENCY_PUBLISHERS=${LATENCY_PUBLISHERS:-4}
RESUME_CONNS=${RESUME_CONNS:-10000}
RESUME_CHANNELS=${RESUME_CHANNELS:-10}
RESUME_MESSAGES=${RESUME_MESSAGES:-100}
RESUME_VARIANTS=${RESUME_VARIANTS:-"cold warm plain"}
RESUME_PAUSE=${RESUME_PAUSE:-3}
PG_CPUS=${PG_CPUS:-}
SQL_ARGS=${SQL_ARGS:-}
SOURCE_ADDRS=${SOURCE_ADDRS:-16}
DB_POOL=${DB_POOL:-}
HERALD_ARGS=${HERALD_ARGS:-}
PG_ARGS=${PG_ARGS:-}
STAMP=$(date +%Y%m%d-%H%M%S)
WORK=$(mktemp -d /tmp/herald-history.XXXXXX)
if [[ $SMOKE == 1 ]]; then
    OUT=${OUT:-$WORK/out}
else
    OUT=${OUT:-$ROOT/tests/artifacts/history-$STAMP}
fi

for bin in "$HERALD" "$HPUB" "$HRES"; do
    [[ -x $bin ]] || { echo "run-history: not executable: $bin (build first)" >&2; exit 1; }
done
PGBIN=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -1)
[[ -x $PGBIN/postgres ]] || { echo "run-history: PostgreSQL not found" >&2; exit 1; }
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)" # herald and hist-resume each need RESUME_CONNS descriptors
if (($(ulimit -n) < RESUME_CONNS + 200)); then
    echo "run-history: ulimit -n $(ulimit -n) is too low for $RESUME_CONNS connections" >&2
    exit 1
fi

REDIS_PID='' HERALD_PID='' PG_PID='' PG_WRAPPER_PID=
ROWS_PUB=() ROWS_LAT=() ROWS_RES=() REPORTS=() FAILED=0

stop_herald() {
    stop_pid "$HERALD_PID"
    HERALD_PID=
}

cleanup() {
    stop_herald
    stop_pid "$REDIS_PID"
    REDIS_PID=
    if [[ -n $PG_PID ]]; then
        kill -INT "$PG_PID" 2>/dev/null || true # fast shutdown of the postmaster
        for _ in $(seq 100); do kill -0 "$PG_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$PG_PID" 2>/dev/null || true
        PG_PID=
    fi
    stop_pid "$PG_WRAPPER_PID"
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

as_pg() { # run as the unprivileged postgres account when we are root
    if ((EUID == 0)); then runuser -u postgres -- "$@"; else "$@"; fi
}

start_postgres() {
    PGPORT=$(free_port)
    mkdir -p "$WORK/pg"
    chmod 755 "$WORK"
    ((EUID == 0)) && chown postgres "$WORK/pg"
    (cd "$WORK/pg" && as_pg "$PGBIN/initdb" -D "$WORK/pg/data" -A trust -U herald -E UTF8 \
        >"$OUT/initdb.log" 2>&1) || { echo "initdb failed" >&2; cat "$OUT/initdb.log" >&2; exit 1; }
    # shellcheck disable=SC2206 # PG_ARGS is a list of flags
    local pg=("$PGBIN/postgres" -D "$WORK/pg/data" -p "$PGPORT" -k "$WORK/pg"
        -c listen_addresses=127.0.0.1 -c max_connections=300 $PG_ARGS)
    ((EUID == 0)) && pg=(runuser -u postgres -- "${pg[@]}")
    [[ -n $PG_CPUS ]] && pg=(taskset -c "$PG_CPUS" "${pg[@]}")
    (cd "$WORK/pg" && exec "${pg[@]}") >"$OUT/postgres.log" 2>&1 &
    PG_WRAPPER_PID=$!
    wait_for 150 psql -h 127.0.0.1 -p "$PGPORT" -U herald -d postgres -Atqc 'SELECT 1' ||
        { echo "postgres did not start" >&2; tail "$OUT/postgres.log" >&2; exit 1; }
    PG_PID=$(head -1 "$WORK/pg/data/postmaster.pid")
    createdb -h 127.0.0.1 -p "$PGPORT" -U herald herald
    DBURL="postgresql://herald@127.0.0.1:$PGPORT/herald"
}

start_herald() { # a fresh gateway on core 0
    stop_herald
    HPORT=$(free_port)
    local pool=()
    [[ -n $DB_POOL ]] && pool=(--db-pool "$DB_POOL")
    # shellcheck disable=SC2086 # HERALD_ARGS is a list of flags
    taskset -c 0 "$HERALD" --listen "127.0.0.1:$HPORT" --redis-url "redis://127.0.0.1:$RPORT/0" \
        --database-url "$DBURL" --migrate-on-start --log-level warn "${pool[@]}" $HERALD_ARGS \
        >>"$OUT/herald.log" 2>&1 &
    HERALD_PID=$!
    wait_for 100 curl -fs "http://127.0.0.1:$HPORT/healthz" ||
        { echo "herald did not start" >&2; tail "$OUT/herald.log" >&2; exit 1; }
    wait_for 100 curl -fs "http://127.0.0.1:$HPORT/readyz" || echo "note: /readyz not 200 after 10 s"
    # /readyz does not wait for PostgreSQL; a publish before the pool is up is answered 503
    wait_for 100 db_connected || echo "note: herald_db_up not 1 after 10 s"
}

db_connected() { curl -fs "http://127.0.0.1:$HPORT/metrics" | grep -qx 'herald_db_up 1'; }

cpu_herald() { # CPU seconds used by herald so far
    awk '{ split($0, a, ") "); split(a[2], f, " "); print (f[12] + f[13]) / '"$(getconf CLK_TCK)"' }' \
        "/proc/$HERALD_PID/stat"
}
cpu_busy() { # busy and total jiffies of the whole machine
    awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}

cpu_mine() { # jiffies used by what this script runs: itself and reaped children (the tools),
    # herald, redis, the postmaster with its reaped backends and its live children
    local pids=("$$" "$HERALD_PID" "$REDIS_PID" "$PG_PID")
    [[ -n $PG_PID ]] && mapfile -t -O 4 pids < <(ps -o pid= --ppid "$PG_PID" | tr -d ' ')
    local p
    for p in "$$" "$HERALD_PID" "$REDIS_PID" "$PG_PID" "${pids[@]:4}"; do
        [[ -n $p ]] && cat "/proc/$p/stat" 2>/dev/null
    done | awk '{ split($0, a, ") "); split(a[2], f, " "); s += f[12] + f[13] + f[14] + f[15] } END { print s + 0 }'
}

# run_tool NAME LIMIT BIN ARGS...: one tool run on core 1 into $OUT/NAME.json, with the
# gateway's and the machine's CPU use added to the report.
run_tool() {
    local name=$1 limit=$2 bin=$3 f="$OUT/$1.json" rc=0
    shift 3
    local h0 b0 t0 h1 b1 t1 w0 w1 m0 m1
    h0=$(cpu_herald)
    m0=$(cpu_mine)
    read -r b0 t0 < <(cpu_busy)
    w0=$(date +%s.%N)
    timeout --kill-after=5 "$limit" taskset -c 1 "$bin" --json "$@" >"$f.tmp" 2>"$OUT/$name.err" || rc=$?
    w1=$(date +%s.%N)
    h1=$(cpu_herald)
    m1=$(cpu_mine)
    read -r b1 t1 < <(cpu_busy)
    if [[ ! -s $f.tmp ]]; then
        echo "   $name: no report (exit $rc): $(head -c 300 "$OUT/$name.err")" >&2
        echo "{\"name\":\"$name\",\"ok\":false,\"exit\":$rc}" >"$f"
        FAILED=1
        return 1
    fi
    /usr/bin/python3 - "$f.tmp" "$f" "$name" "$rc" "$h0" "$h1" "$w0" "$w1" "$b0" "$t0" "$b1" "$t1" \
        "$m0" "$m1" <<'PY'
import json, sys
src, dst, name, rc, h0, h1, w0, w1, b0, t0, b1, t1, m0, m1 = sys.argv[1:]
r = json.load(open(src))
wall = float(w1) - float(w0)
r = {"name": name, "exit": int(rc), **r,
     "herald_cpu_pct": round(100 * (float(h1) - float(h0)) / wall, 1),
     "machine_busy_pct": round(100 * (int(b1) - int(b0)) / max(1, int(t1) - int(t0)), 1),
     # busy time of processes this script did not start (other jobs on the machine)
     "foreign_busy_pct": round(max(0.0, 100 * ((int(b1) - int(b0)) - (float(m1) - float(m0)))
                                   / max(1, int(t1) - int(t0))), 1),
     "wall_s": round(wall, 2)}
json.dump(r, open(dst, "w"))
PY
    rm -f "$f.tmp"
    REPORTS+=("$f")
    [[ $(json_get "$f" ok) == true ]] || { FAILED=1; echo "   $name: NOT OK: $(json_get "$f" first_error)"; }
    ((rc == 0)) || { FAILED=1; echo "   $name: exit $rc: $(head -c 300 "$OUT/$name.err")"; }
}

publish_rows() { # publish_rows MODE [NAME [HIST-PUBLISH FLAGS...]]
    local mode=$1 name=${2:-$1} n f
    shift $(($# < 2 ? $# : 2))
    start_herald
    for n in $PUBLISHERS; do
        local args=(--mode "$mode" --publishers "$n" --duration "$SECONDS_EACH" --warmup "$WARMUP"
            --channels "$CHANNELS" --prefix "$name$n-$STAMP-" --database-url "$DBURL" "$@")
        # shellcheck disable=SC2206 # SQL_ARGS is a list of flags
        [[ $mode == sql ]] && args+=(--redis "127.0.0.1:$RPORT" $SQL_ARGS)
        [[ $mode == rest ]] && args+=(--gateway "127.0.0.1:$HPORT")
        run_tool "$name-$n" $((${SECONDS_EACH%.*} + 60)) "$HPUB" "${args[@]}" || continue
        f="$OUT/$name-$n.json"
        IFS=$'\t' read -r rate p50 p99 mx err dbc hcpu mcpu fcpu < <(json_get "$f" publishes_per_s \
            publish_ms.p50 publish_ms.p99 publish_ms.max errors_total db_check herald_cpu_pct \
            machine_busy_pct foreign_busy_pct)
        echo "   $mode x$n: $rate publishes/s, p50 $p50 ms, p99 $p99 ms, errors $err, db check $dbc, herald CPU $hcpu%, machine $mcpu%"
        local label=$mode
        [[ $mode == sql && $SQL_ARGS == *no-prepare* ]] && label="sql (unprepared)"
        [[ $mode == sql && "$SQL_ARGS $*" =~ --batch\ ([0-9]+) ]] && label="sql (batches of ${BASH_REMATCH[1]})"
        [[ $mode == rest && "$*" =~ --batch\ ([0-9]+) ]] && label="rest (batches of ${BASH_REMATCH[1]})"
        [[ $mode == rest && -n $DB_POOL ]] && label="$label (db-pool $DB_POOL)"
        ROWS_PUB+=("| $label | $n | $rate | $p50 | $p99 | $mx | $err | $dbc | $hcpu | $mcpu ($fcpu) |")
    done
    stop_herald
}

scenario_sql() { echo "== durable publish through SQL + Redis PUBLISH"; publish_rows sql; }
scenario_sqlbatch() {
    echo "== durable publish through SQL, ${SQL_BATCH:-100} messages per herald_publish_batch call"
    publish_rows sql sqlbatch --batch "${SQL_BATCH:-100}"
}
scenario_rest() { echo "== durable publish through the gateway's REST API"; publish_rows rest; }
scenario_restbatch() {
    echo "== durable publish through REST, ${REST_BATCH:-100} messages per POST /v1/messages"
    publish_rows rest restbatch --batch "${REST_BATCH:-100}"
}

scenario_latency() {
    echo "== publish-to-delivery latency at $LATENCY_RATE/s (REST -> WebSocket)"
    start_herald
    local f="$OUT/latency.json"
    run_tool latency $((${LATENCY_SECONDS%.*} + 60)) "$HPUB" --mode latency \
        --publishers "$LATENCY_PUBLISHERS" --rate "$LATENCY_RATE" --duration "$LATENCY_SECONDS" \
        --warmup "$WARMUP" --channels "$CHANNELS" --prefix "lat-$STAMP-" --database-url "$DBURL" \
        --gateway "127.0.0.1:$HPORT" || { stop_herald; return 0; }
    IFS=$'\t' read -r pub del p50 p99 p999 mx gaps dups ap50 ap99 lag hcpu fcpu < <(json_get "$f" \
        acked_total delivered latency_ms.p50 latency_ms.p99 latency_ms.p999 latency_ms.max gaps \
        duplicates publish_ms.p50 publish_ms.p99 publisher_max_lag_ms herald_cpu_pct foreign_busy_pct)
    echo "   delivered $del of $pub, p50 $p50 ms, p99 $p99 ms, max $mx ms, gaps $gaps, dups $dups"
    ROWS_LAT+=("| $LATENCY_RATE | $LATENCY_PUBLISHERS | $del / $pub | $p50 | $p99 | $p999 | $mx | $gaps / $dups | $ap50 / $ap99 | $lag | $hcpu | $fcpu |")
    stop_herald
}

scenario_resume() {
    local variant warm f
    for variant in $RESUME_VARIANTS; do
        echo "== resume storm ($variant): $RESUME_CONNS clients over $RESUME_CHANNELS channels"
        start_herald
        warm=()
        [[ $variant == warm ]] && warm=(--warm)
        [[ $variant == plain ]] && warm=(--plain)
        f="$OUT/resume-$variant.json"
        run_tool "resume-$variant" 200 "$HRES" --gateway "127.0.0.1:$HPORT" \
            --connections "$RESUME_CONNS" --channels "$RESUME_CHANNELS" \
            --messages "$RESUME_MESSAGES" --source-addrs "$SOURCE_ADDRS" \
            --prefix "res-$variant-$STAMP-" --pause "$RESUME_PAUSE" --gateway-pid "$HERALD_PID" \
            "${warm[@]}" || { stop_herald; continue; }
        IFS=$'\t' read -r res conn storm sendms p50 p99 mx msgs exp q rec fail ok hcpu fcpu < <(json_get "$f" \
            resumed connections storm_ms send_all_ms reply_ms.p50 reply_ms.p99 reply_ms.max \
            messages_replayed messages_expected db_queries_delta resumes_recovered_delta \
            resumes_failed_delta ok storm_gateway_cpu_s foreign_busy_pct)
        echo "   $res/$conn resumed in $storm ms (p50 $p50, p99 $p99 ms), $msgs/$exp messages, db queries +$q, ok $ok"
        ROWS_RES+=("| $variant | $conn | $res | $storm | $sendms | $p50 / $p99 / $mx | $msgs / $exp | $q | $rec / $fail | $hcpu | $fcpu | $ok |")
        stop_herald
    done
}

echo "herald: $HERALD"
echo "tools:  $HPUB $HRES"
echo "output: $OUT"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
start_postgres
start_redis "$OUT/redis.log"
for s in $SCENARIOS; do
    "scenario_$s"
done

PGSET=$(psql -h 127.0.0.1 -p "$PGPORT" -U herald -d herald -Atqc \
    "SELECT string_agg(name || '=' || setting, ' ') FROM pg_settings WHERE name IN
     ('fsync','synchronous_commit','shared_buffers','max_connections','wal_level')")
PGVER=$(psql -h 127.0.0.1 -p "$PGPORT" -U herald -d herald -Atqc "SHOW server_version")
POOL=${DB_POOL:-4 (default)}
MACHINE="$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -m | awk '/Mem:/ {print $2}') MiB RAM, $(uname -r), load before $LOAD_BEFORE"
REV=${HERALD_REV:-"repo HEAD $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"}
/usr/bin/python3 - "$OUT/history.json" "$MACHINE" "$PGVER" "$PGSET" "$POOL" "$REV" "${REPORTS[@]}" <<'PY'
import json, sys
dst, machine, pgver, pgset, pool, rev, *files = sys.argv[1:]
json.dump({"machine": machine, "postgres": pgver, "postgres_settings": pgset,
           "herald_db_pool": pool, "herald_rev": rev,
           "runs": [json.load(open(f)) for f in files]}, open(dst, "w"), indent=1)
PY

echo
echo "## Herald history benchmark ($(date -u +%Y-%m-%d), herald $REV)"
echo "$MACHINE; herald on core 0, tools on core 1, redis floating, postgres $PGVER $([[ -n $PG_CPUS ]] && echo "on core(s) $PG_CPUS" || echo floating);"
echo "postgres: $PGSET; herald --db-pool $POOL"
if ((${#ROWS_PUB[@]})); then
    echo
    echo "| path | publishers | publishes/s | p50 ms | p99 ms | max ms | errors | seq check | herald CPU % | machine busy % (not ours) |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${ROWS_PUB[@]}"
fi
if ((${#ROWS_LAT[@]})); then
    echo
    echo "| rate/s | publishers | delivered / acked | p50 ms | p99 ms | p99.9 ms | max ms | gaps / dups | POST p50 / p99 ms | publisher max lag ms | herald CPU % | machine % not ours |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${ROWS_LAT[@]}"
fi
if ((${#ROWS_RES[@]})); then
    echo
    echo "| resume | clients | resumed | first send -> last reply ms | sending took ms | reply p50 / p99 / max ms | replayed / expected | db queries | recovered / failed | herald CPU s in storm | machine % not ours (whole run) | verified |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${ROWS_RES[@]}"
fi
echo
echo "JSON: $OUT/history.json"
if [[ $SMOKE == 1 ]]; then
    if ((FAILED)); then
        echo "bench_history_smoke: FAILED; herald log:"
        tail -n 30 "$OUT/herald.log"
        exit 1
    fi
    echo "bench_history_smoke: OK"
fi
