#!/usr/bin/env bash
# run-suite.sh: the side-by-side benchmark suite. Herald, Nchan and a minimal C ceiling server
# under the same load generator, the same pinning and the same Redis, in one run.
#
#   tests/bench/run-suite.sh [BUILD_DIR]        (default: build; builds nothing)
#   QUICK=1 tests/bench/run-suite.sh            (a short run: every scenario, tiny sizes)
#
# Servers (SERVERS ["herald nchan ceiling"]), each started fresh for every run, on core 0:
#   herald   build/gateway/herald (no database), fed by Redis PUBLISH
#   nchan    Debian's nginx + libnginx-mod-nchan (tests/bench/nchan/nginx.conf.in: one worker,
#            memory store, WebSocket subscribers), fed by HTTP POST (keep-alive, pipelined)
#   ceiling  build/tests/bench/bench-ceiling: minimal epoll server, prebuilt frames, one write
#            per socket per loop turn, fed by Redis PUBLISH (tests/bench/ceiling.c)
# herald-bench (receiver + publisher thread) and redis-server run on core 1. At every step the
# three servers run back to back, so noise from other work on the machine hits all alike.
# Scenarios (SCENARIOS ["s1 s2 s3 s4 s5 s6"]):
#   s1  1,000 connections, one channel, 100 B payloads, publish rate stepped up (S1_RATES) until
#       p99 > 100 ms, delivered < 95% of expected, or a delivery error (a failed step is run
#       RETRIES [1] more times first: the machine may be shared); reports the highest sustained
#       deliveries/s per server
#   s2  the same with 5,000 connections (S2_RATES)
#   s3  10,000 connections each on its own channel, 5,000 publishes/s spread over them
#   s4  19,000 subscribed idle connections (from 16 loopback source addresses): RSS/connection
#   s5  Herald only: resume storm of 10,000 clients (run-history.sh, variants cold and warm)
#   s6  Herald only: durable publish throughput, 1/8/64 publishers: REST, the SQL function one
#       message per transaction and 100 per herald_publish_batch call (run-history.sh)
# Knobs: STEP_SECONDS [6], WARMUP [2], S1_RATES, S2_RATES, S3_CONNS [10000], S3_RATE [5000],
# S3_SECONDS [10], S4_CONNS [19000], S4_CHANNELS [100], S4_SECONDS [5], HISTORY_SECONDS [8],
# P99_LIMIT_MS [100], MIN_DELIVERED [0.95], OUT [tests/artifacts/suite-<time>],
# CHECK=1: exit 1 unless every run delivered every message verified (the ctest smoke).
# Output: OUT/runs/*.json (one herald-bench report per run, plus the load average before it and
# the machine's CPU use during it), OUT/suite.json (everything, with the ratios) and
# OUT/suite.md (the tables), also printed at the end. Every process started here is stopped by
# PID on exit, Ctrl-C or error; every run is bounded by `timeout`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$(realpath "${1:-$ROOT/build}")
HERALD=$BUILD/gateway/herald
BENCH=$BUILD/tests/bench/herald-bench
CEILING=$BUILD/tests/bench/bench-ceiling
HPUB=$BUILD/tests/bench/hist-publish
HRES=$BUILD/tests/bench/hist-resume
NCHAN_CONF=$ROOT/tests/bench/nchan/nginx.conf.in
NCHAN_MODULE=${NCHAN_MODULE:-/usr/lib/nginx/modules/ngx_nchan_module.so}
QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    S1_RATES=${S1_RATES:-"200 1000"} S2_RATES=${S2_RATES:-"100 200"}
    STEP_SECONDS=${STEP_SECONDS:-1} WARMUP=${WARMUP:-0.5}
    S3_CONNS=${S3_CONNS:-1000} S3_RATE=${S3_RATE:-500} S3_SECONDS=${S3_SECONDS:-1}
    S4_CONNS=${S4_CONNS:-1000} S4_SECONDS=${S4_SECONDS:-1} S2_CONNS=${S2_CONNS:-500}
    S1_CONNS=${S1_CONNS:-200}
fi
SERVERS=${SERVERS:-"herald nchan ceiling"}
SCENARIOS=${SCENARIOS:-"s1 s2 s3 s4 s5 s6"}
S1_CONNS=${S1_CONNS:-1000}
S2_CONNS=${S2_CONNS:-5000}
S1_RATES=${S1_RATES:-"50 100 200 500 1000 1500 2000 3000 4000 5000 6000 8000"}
S2_RATES=${S2_RATES:-"20 50 100 200 300 400 600 800 1000 1300 1600"}
STEP_SECONDS=${STEP_SECONDS:-6}
WARMUP=${WARMUP:-2}
S3_CONNS=${S3_CONNS:-10000}
S3_RATE=${S3_RATE:-5000}
S3_SECONDS=${S3_SECONDS:-10}
S4_CONNS=${S4_CONNS:-19000}
S4_CHANNELS=${S4_CHANNELS:-100}
S4_SECONDS=${S4_SECONDS:-5}
HISTORY_SECONDS=${HISTORY_SECONDS:-8}
P99_LIMIT_MS=${P99_LIMIT_MS:-100}
MIN_DELIVERED=${MIN_DELIVERED:-0.95}
RETRIES=${RETRIES:-1}
CHECK=${CHECK:-0}
SOURCE_ADDRS=16
STAMP=$(date +%Y%m%d-%H%M%S)
OUT=${OUT:-$ROOT/tests/artifacts/suite-$STAMP}
WORK=$(mktemp -d /tmp/herald-suite.XXXXXX)

need=("$BENCH")
for s in $SERVERS; do
    case $s in
    herald) need+=("$HERALD") ;;
    ceiling) need+=("$CEILING") ;;
    nchan)
        command -v nginx >/dev/null && [[ -f $NCHAN_MODULE ]] ||
            { echo "run-suite: nchan needs nginx and libnginx-mod-nchan (deploy/install-deps.sh --test)" >&2; exit 1; } ;;
    *) echo "run-suite: unknown server $s" >&2; exit 1 ;;
    esac
done
[[ " $SCENARIOS " == *" s5 "* || " $SCENARIOS " == *" s6 "* ]] && need+=("$HPUB" "$HRES" "$HERALD")
for bin in "${need[@]}"; do
    [[ -x $bin ]] || { echo "run-suite: not executable: $bin (build first: deploy/build.sh)" >&2; exit 1; }
done
mkdir -p "$OUT/runs"
ulimit -n "$(ulimit -Hn)" # children inherit it: S4 needs ~19,000 descriptors in server and bench
if (($(ulimit -n) < S4_CONNS + 500)); then
    echo "run-suite: ulimit -n $(ulimit -n) is too low for $S4_CONNS connections" >&2
    exit 1
fi

REDIS_PID='' SERVER_PID='' MEASURE_PID='' NGINX_DIR='' FAILED=0

stop_server() { # nginx: TERM to the master, which stops its worker; the others: TERM
    stop_pid "$SERVER_PID"
    SERVER_PID='' MEASURE_PID=''
    if [[ -n $NGINX_DIR ]]; then
        cp "$NGINX_DIR/error.log" "$OUT/nginx-error-$(date +%s%N).log" 2>/dev/null || true
        rm -rf "$NGINX_DIR"
        NGINX_DIR=''
    fi
}

cleanup() {
    stop_server
    stop_pid "$REDIS_PID"
    REDIS_PID=''
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server KIND CONNS: a fresh server on core 0 for about CONNS clients. Sets SERVER_PID
# (what we stop), MEASURE_PID (whose RSS and CPU are reported) and BENCH_TARGET (bench flags).
start_server() {
    local kind=$1 conns=$2
    stop_server
    SPORT=$(free_port)
    case $kind in
    herald)
        taskset -c 0 "$HERALD" --listen "127.0.0.1:$SPORT" --redis-url "redis://127.0.0.1:$RPORT/0" \
            --log-level warn --max-connections $((conns + 100)) \
            --max-connections-per-ip $((conns + 100)) >>"$OUT/herald.log" 2>&1 &
        SERVER_PID=$! MEASURE_PID=$SERVER_PID
        BENCH_TARGET=(--url "ws://127.0.0.1:$SPORT/ws" --redis "127.0.0.1:$RPORT")
        wait_for 100 curl -fs "http://127.0.0.1:$SPORT/readyz" || return 1
        ;;
    ceiling)
        taskset -c 0 "$CEILING" --listen "127.0.0.1:$SPORT" --redis "127.0.0.1:$RPORT" \
            >>"$OUT/ceiling.log" 2>&1 &
        SERVER_PID=$! MEASURE_PID=$SERVER_PID
        BENCH_TARGET=(--url "ws://127.0.0.1:$SPORT/ws" --redis "127.0.0.1:$RPORT")
        wait_for 100 curl -fs "http://127.0.0.1:$SPORT/healthz" || return 1
        ;;
    nchan)
        NGINX_DIR=$(mktemp -d "$WORK/nginx.XXXXXX")
        chmod 755 "$WORK" "$NGINX_DIR"
        local user="" # as root, the worker drops to nobody (it only needs the sockets)
        ((EUID == 0)) && user="user nobody nogroup;"
        sed -e "s#@NCHAN_MODULE@#$NCHAN_MODULE#; s#@USER_LINE@#$user#; s#@PREFIX@#$NGINX_DIR#g" \
            -e "s#@NOFILE@#$(ulimit -n)#; s#@WORKER_CONNECTIONS@#$((2 * $(ulimit -n)))#" \
            -e "s#@SHM@#256m#; s#@PORT@#$SPORT#" "$NCHAN_CONF" >"$NGINX_DIR/nginx.conf"
        taskset -c 0 nginx -p "$NGINX_DIR" -c "$NGINX_DIR/nginx.conf" >>"$OUT/nginx.log" 2>&1 &
        SERVER_PID=$!
        BENCH_TARGET=(--url "ws://127.0.0.1:$SPORT/sub/" --nchan-publish "http://127.0.0.1:$SPORT/pub/")
        wait_for 100 curl -fs "http://127.0.0.1:$SPORT/healthz" || return 1
        MEASURE_PID=$(ps -o pid= --ppid "$SERVER_PID" | tr -d ' ' | head -1) # the one worker
        [[ -n $MEASURE_PID ]] || return 1
        ;;
    esac
}

jiffies() { # jiffies PID...: user+system CPU ticks of those processes (0 for gone ones)
    local p
    for p in "$@"; do
        [[ -n $p ]] && cat "/proc/$p/stat" 2>/dev/null
    done | awk '{ split($0, a, ") "); split(a[2], f, " "); s += f[12] + f[13] } END { print s + 0 }'
}
cpu_busy() { # jiffies of the whole machine: in tasks (user+nice+system), total, irq+softirq, steal
    awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print $2 + $3 + $4, t, $7 + $8, $9 }' /proc/stat
}

# run_case SCENARIO SERVER NAME CONNS BENCH-ARGS...: a fresh SERVER, one herald-bench run on
# core 1 into runs/NAME.json with the load average before and the machine's CPU during it.
run_case() {
    local scen=$1 kind=$2 name=$3 conns=$4 f="$OUT/runs/$3.json" rc=0
    shift 4
    local load
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    if ! start_server "$kind" "$conns"; then
        echo "   $name: $kind did not start" >&2
        echo "{\"scenario\":\"$scen\",\"server\":\"$kind\",\"name\":\"$name\",\"ok\":false,\"first_error\":\"server did not start\"}" >"$f"
        stop_server
        FAILED=1
        return 1
    fi
    local s0 r0 b0 t0 i0 x0 w0 s1 r1 b1 t1 i1 x1 w1
    s0=$(jiffies "$MEASURE_PID") r0=$(jiffies "$REDIS_PID")
    read -r b0 t0 i0 x0 < <(cpu_busy)
    w0=$(date +%s.%N)
    timeout --kill-after=5 300 taskset -c 1 "$BENCH" "${BENCH_TARGET[@]}" --gateway-pid "$MEASURE_PID" \
        --connections "$conns" --json "$@" >"$f.tmp" 2>"$OUT/runs/$name.err" || rc=$?
    w1=$(date +%s.%N)
    s1=$(jiffies "$MEASURE_PID") r1=$(jiffies "$REDIS_PID")
    read -r b1 t1 i1 x1 < <(cpu_busy)
    stop_server
    if [[ ! -s $f.tmp ]]; then
        echo "   $name: no report (exit $rc): $(head -c 300 "$OUT/runs/$name.err")" >&2
        echo "{\"scenario\":\"$scen\",\"server\":\"$kind\",\"name\":\"$name\",\"ok\":false,\"exit\":$rc}" >"$f"
        rm -f "$f.tmp"
        FAILED=1
        return 1
    fi
    /usr/bin/python3 - "$f.tmp" "$f" "$scen" "$kind" "$name" "$rc" "$load" "$w0" "$w1" "$s0" "$s1" \
        "$r0" "$r1" "$b0" "$t0" "$b1" "$t1" "$(getconf CLK_TCK)" "$i0" "$i1" "$x0" "$x1" <<'PY'
import json, sys
(src, dst, scen, kind, name, rc, load, w0, w1, s0, s1, r0, r1, b0, t0, b1, t1, hz, i0, i1, x0,
 x1) = sys.argv[1:]
r = json.load(open(src))
wall = float(w1) - float(w0)
hz = float(hz)
busy = int(b1) - int(b0)
total = max(1, int(t1) - int(t0))
ours = (float(s1) - float(s0)) + (float(r1) - float(r0)) + r["bench_cpu"]["process_s"] * hz
r = {"scenario": scen, "server": kind, "name": name, "exit": int(rc),
     "loadavg_before": [float(x) for x in load.split()], **r,
     "wall_s": round(wall, 2),
     "server_cpu_s": round((float(s1) - float(s0)) / hz, 2),
     "redis_cpu_s": round((float(r1) - float(r0)) / hz, 2),
     # both cores: time in processes, in interrupts (loopback TCP is mostly softirq), stolen
     "machine_busy_pct": round(100 * busy / total, 1),
     "machine_softirq_pct": round(100 * (int(i1) - int(i0)) / total, 1),
     "machine_steal_pct": round(100 * (int(x1) - int(x0)) / total, 1),
     # process time of what this suite did not start (other work on the machine), % of both cores
     "foreign_busy_pct": round(max(0.0, 100 * (busy - ours) / total), 1)}
json.dump(r, open(dst, "w"))
PY
    rm -f "$f.tmp"
}

# Did a step hold: clean deliveries, p99 under the limit, enough delivered?
held() {
    /usr/bin/python3 - "$1" "$P99_LIMIT_MS" "$MIN_DELIVERED" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
try:
    ok = (r.get("ok") is True and r["latency_ms"]["p99"] <= float(sys.argv[2])
          and r["delivered_per_s"] >= float(sys.argv[3]) * r["expected_delivered_per_s"])
except (KeyError, TypeError):
    ok = False
sys.exit(0 if ok else 1)
PY
}

# One line per run, for whoever watches.
say() {
    local f=$1
    IFS=$'\t' read -r ok del exp p50 p99 gcpu rcpu pcpu rss load fb err < <(json_get "$f" ok \
        delivered_per_s expected_delivered_per_s latency_ms.p50 latency_ms.p99 gateway.cpu_pct \
        bench_cpu.receiver_pct bench_cpu.publisher_pct gateway.rss_per_conn_kib loadavg_before \
        foreign_busy_pct first_error)
    printf '   %-24s ok=%-5s delivered %10.0f/s of %10.0f/s  p50 %7s  p99 %8s ms  server cpu %5s%%  bench rx %5s%% pub %5s%%  load %s  foreign %s%% %s\n' \
        "$(basename "$f" .json)" "$ok" "${del:-0}" "${exp:-0}" "$p50" "$p99" "$gcpu" "$rcpu" "$pcpu" \
        "$load" "$fb" "${err:+($err)}"
}

# s1/s2: step the publish rate; at each step every server still holding runs back to back.
stepped() {
    local scen=$1 conns=$2 rates=$3 rate kind active=" $SERVERS "
    echo "== $scen: $conns connections on one channel, 100 B payloads, stepping the publish rate"
    for rate in $rates; do
        for kind in $SERVERS; do
            [[ $active == *" $kind "* ]] || continue
            local try name
            for ((try = 1; try <= 1 + RETRIES; try++)); do
                name="$scen-$kind-$rate"
                ((try > 1)) && name+="-try$try"
                run_case "$scen" "$kind" "$name" "$conns" --channels 1 --rate "$rate" \
                    --payload-bytes 100 --warmup "$WARMUP" --duration "$STEP_SECONDS" \
                    --channel-prefix "$name-$STAMP-" || break
                say "$OUT/runs/$name.json"
                held "$OUT/runs/$name.json" && continue 2
                ((try <= RETRIES)) && echo "   $kind did not hold $rate msg/s: once more"
            done
            echo "   $kind stops at $rate msg/s (p99 > $P99_LIMIT_MS ms, < $MIN_DELIVERED delivered, or errors)"
            active=${active/ $kind / }
        done
        [[ -n ${active// /} ]] || break
    done
}

scenario_s1() { stepped s1 "$S1_CONNS" "$S1_RATES"; }
scenario_s2() { stepped s2 "$S2_CONNS" "$S2_RATES"; }

scenario_s3() {
    echo "== s3: $S3_CONNS connections, each on its own channel, $S3_RATE publishes/s over them"
    local kind
    for kind in $SERVERS; do
        run_case s3 "$kind" "s3-$kind" "$S3_CONNS" --channels "$S3_CONNS" --rate "$S3_RATE" \
            --payload-bytes 100 --warmup "$WARMUP" --duration "$S3_SECONDS" \
            --source-addrs "$SOURCE_ADDRS" --channel-prefix "s3-$kind-$STAMP-" || continue
        say "$OUT/runs/s3-$kind.json"
    done
}

scenario_s4() {
    echo "== s4: $S4_CONNS subscribed idle connections over $S4_CHANNELS channels"
    local kind
    for kind in $SERVERS; do
        run_case s4 "$kind" "s4-$kind" "$S4_CONNS" --idle --channels "$S4_CHANNELS" \
            --duration "$S4_SECONDS" --source-addrs "$SOURCE_ADDRS" --connect-timeout 120 \
            --channel-prefix "s4-$kind-$STAMP-" || continue
        say "$OUT/runs/s4-$kind.json"
    done
}

# s5 and s6 are Herald's history paths (PostgreSQL): run-history.sh runs them once for both.
HISTORY_DONE=0
scenario_history() {
    ((HISTORY_DONE)) && return 0
    HISTORY_DONE=1
    local scen=() hist_env=()
    [[ " $SCENARIOS " == *" s6 "* ]] && scen+=(sql sqlbatch rest restbatch)
    [[ " $SCENARIOS " == *" s5 "* ]] && scen+=(resume)
    echo "== s5/s6 (Herald only, via run-history.sh): ${scen[*]}"
    hist_env=(SCENARIOS="${scen[*]}" RESUME_VARIANTS="cold warm" OUT="$OUT/history"
        SECONDS_EACH="$HISTORY_SECONDS" PUBLISHERS="1 8 64")
    [[ $QUICK == 1 ]] && hist_env=(SMOKE=1 SCENARIOS="${scen[*]}" RESUME_VARIANTS="cold" OUT="$OUT/history")
    echo "{\"loadavg_before\":[$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' ',')]}" >"$OUT/history-load.json"
    env "${hist_env[@]}" "$ROOT/tests/bench/run-history.sh" "$HERALD" "$HPUB" "$HRES" \
        >"$OUT/history.log" 2>&1 || { echo "   run-history.sh failed (see $OUT/history.log)"; FAILED=1; }
    sed -n '/^## /,$p' "$OUT/history.log"
}
scenario_s5() { scenario_history; }
scenario_s6() { scenario_history; }

versions() {
    local rev
    rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    git -C "$ROOT" diff --quiet HEAD -- gateway common 2>/dev/null || rev="$rev (gateway modified)"
    /usr/bin/python3 - "$OUT/versions.json" <<PY
import json, sys
json.dump({
  "date_utc": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "machine": "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -m | awk '/Mem:/ {print $2}') MiB RAM",
  "kernel": "$(uname -r)",
  "os": "$(. /etc/os-release && echo "$PRETTY_NAME")",
  "herald_rev": "$rev",
  "libwebsockets": "$(pkg-config --modversion libwebsockets 2>/dev/null)",
  "libuv": "$(pkg-config --modversion libuv 2>/dev/null)",
  "hiredis": "$(pkg-config --modversion hiredis 2>/dev/null)",
  "redis": "$(redis-server --version | grep -o 'v=[^ ]*' | cut -d= -f2)",
  "nginx": "$(dpkg-query -W -f='${Version}' nginx 2>/dev/null)",
  "nchan": "$(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null)",
  "gcc": "$(gcc -dumpfullversion 2>/dev/null)",
  "build_type": "$(grep -m1 CMAKE_BUILD_TYPE: "$BUILD/CMakeCache.txt" 2>/dev/null | cut -d= -f2)",
  "pinning": "servers on core 0 (taskset -c 0); herald-bench and redis-server on core 1",
  "settings": {"step_seconds": "$STEP_SECONDS", "warmup_s": "$WARMUP", "p99_limit_ms": $P99_LIMIT_MS,
               "min_delivered": $MIN_DELIVERED, "quick": $QUICK, "servers": "$SERVERS"}
}, open(sys.argv[1], "w"), indent=1)
PY
}

echo "build:  $BUILD"
echo "output: $OUT"
echo "load:   $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min) before the suite"
versions
start_redis "$OUT/redis.log" 1
for s in $SCENARIOS; do
    "scenario_$s"
done
stop_pid "$REDIS_PID"
REDIS_PID=''

check=()
((CHECK)) && check=(--check)
/usr/bin/python3 "$ROOT/tests/bench/suite_report.py" "$OUT" "${check[@]}" || FAILED=1
echo
echo "JSON: $OUT/suite.json   tables: $OUT/suite.md"
exit $((FAILED ? 1 : 0))
