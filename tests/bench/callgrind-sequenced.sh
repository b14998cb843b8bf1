#!/usr/bin/env bash
# callgrind-sequenced.sh: the gateway's instructions per durable (sequenced) message, counted by
# callgrind, for the cost of the path PostgreSQL -> Redis -> gateway (signing and verifying the
# envelope since issue 12).
#
#   tests/bench/callgrind-sequenced.sh [HERALD_BIN]
#
# A fresh PostgreSQL (initdb in a temporary directory; as root, run as user postgres) and
# Redis; the gateway under `valgrind --tool=callgrind` on core 0 with history on
# (--migrate-on-start: each binary gets its own schema). seq_drive.py opens SUBS WebSocket
# subscribers on one channel and sends MESSAGES durable publishes through POST /v1/messages,
# BATCH per request, one request at a time, paced at RATE messages/s, and checks that every
# subscriber got every message in seq order. The gateway is then stopped with SIGTERM and the
# instructions per message are printed (start-up included; run two MESSAGES counts and use
# callgrind_summary.py --base for the marginal cost), with the calls of envelope_sig_verify
# and envelope_sig_sign and their inclusive cost per call.
# Knobs: SUBS [10], MESSAGES [2000], BATCH [100], RATE [500], HERALD_ARGS, OUT
# [tests/artifacts/callgrind-seq-<time>]. Every process started here is stopped by PID.
# Needs valgrind (Debian package valgrind; deploy/install-deps.sh does not install it).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
HERALD=$(realpath "${1:-$ROOT/build/gateway/herald}")
SUBS=${SUBS:-10}
MESSAGES=${MESSAGES:-2000}
BATCH=${BATCH:-100}
RATE=${RATE:-500}
HERALD_ARGS=${HERALD_ARGS:-}
OUT=${OUT:-$ROOT/tests/artifacts/callgrind-seq-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(realpath "$OUT")
PGBIN=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -1)
[[ -x $PGBIN/postgres ]] || { echo "callgrind-sequenced: PostgreSQL not found" >&2; exit 1; }
WORK=$(mktemp -d /tmp/herald-cgseq.XXXXXX)

REDIS_PID='' HERALD_PID='' PG_PID='' PG_WRAPPER_PID=''
cleanup() {
    stop_pid "$HERALD_PID"
    stop_pid "$REDIS_PID"
    if [[ -n $PG_PID ]]; then
        kill -INT "$PG_PID" 2>/dev/null || true # fast shutdown of the postmaster
        for _ in $(seq 100); do kill -0 "$PG_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$PG_PID" 2>/dev/null || true
    fi
    stop_pid "$PG_WRAPPER_PID"
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

as_pg() { if ((EUID == 0)); then runuser -u postgres -- "$@"; else "$@"; fi; }

PGPORT=$(free_port)
mkdir -p "$WORK/pg"
chmod 755 "$WORK"
((EUID == 0)) && chown postgres "$WORK/pg"
(cd "$WORK/pg" && as_pg "$PGBIN/initdb" -D "$WORK/pg/data" -A trust -U herald -E UTF8 \
    >"$OUT/initdb.log" 2>&1) || { echo "initdb failed" >&2; cat "$OUT/initdb.log" >&2; exit 1; }
pg=("$PGBIN/postgres" -D "$WORK/pg/data" -p "$PGPORT" -k "$WORK/pg" -c listen_addresses=127.0.0.1)
((EUID == 0)) && pg=(runuser -u postgres -- "${pg[@]}")
(cd "$WORK/pg" && exec taskset -c 1 "${pg[@]}") >"$OUT/postgres.log" 2>&1 &
PG_WRAPPER_PID=$!
wait_for 150 psql -h 127.0.0.1 -p "$PGPORT" -U herald -d postgres -Atqc 'SELECT 1' ||
    { echo "postgres did not start" >&2; tail "$OUT/postgres.log" >&2; exit 1; }
PG_PID=$(head -1 "$WORK/pg/data/postmaster.pid")
createdb -h 127.0.0.1 -p "$PGPORT" -U herald herald

start_redis "$OUT/redis.log" 1
HPORT=$(free_port)
# shellcheck disable=SC2086 # HERALD_ARGS is a list of flags
taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" \
    "$HERALD" --listen "127.0.0.1:$HPORT" --redis-url "redis://127.0.0.1:$RPORT/0" \
    --database-url "postgresql://herald@127.0.0.1:$PGPORT/herald" --migrate-on-start \
    --log-level warn --drain-seconds 1 $HERALD_ARGS >"$OUT/herald.log" 2>&1 &
HERALD_PID=$!
db_up() { curl -fs "http://127.0.0.1:$HPORT/metrics" | grep -qx 'herald_db_up 1'; }
if ! wait_for 600 curl -fs "http://127.0.0.1:$HPORT/readyz" || ! wait_for 600 db_up; then
    echo "herald did not become ready" >&2
    tail "$OUT/herald.log" >&2
    exit 1
fi

timeout --kill-after=5 600 taskset -c 1 /usr/bin/python3 "$HERE/seq_drive.py" "$HPORT" \
    --subs "$SUBS" --messages "$MESSAGES" --batch "$BATCH" --rate "$RATE" >"$OUT/drive.json" ||
    echo "seq_drive.py failed: $(cat "$OUT/drive.json")" >&2
curl -fs "http://127.0.0.1:$HPORT/metrics" >"$OUT/metrics.txt" || true
# SIGTERM; under valgrind the exit is slow, and stop_pid would send KILL after 5 s
kill -TERM "$HERALD_PID"
for _ in $(seq 600); do kill -0 "$HERALD_PID" 2>/dev/null || break; sleep 0.1; done
stop_pid "$HERALD_PID"
HERALD_PID=

cat "$OUT/drive.json"
messages=$(json_get "$OUT/drive.json" messages)
/usr/bin/python3 "$HERE/callgrind_summary.py" "$OUT/callgrind.out" "$messages" --unit message \
    --calls envelope_sig_verify,envelope_sig_sign,write_batch
echo "raw: $OUT"
