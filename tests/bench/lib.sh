# Shell helpers of the benchmark scripts (run-fanout.sh, run-history.sh, run-suite.sh,
# smoke.sh): free ports, polling, stopping what a script started, reading JSON reports.
# Source it; it defines functions only.

# A TCP port nobody listens on right now.
free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_for TENTHS CMD...: poll until CMD succeeds, at most TENTHS tenths of a second.
wait_for() {
    local tries=$1 i
    shift
    for ((i = 0; i < tries; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

# stop_pid PID [SIGNAL]: signal one process we started (TERM by default), KILL it after 5 s,
# and reap it. An empty PID does nothing.
stop_pid() {
    [[ -n ${1:-} ]] || return 0
    kill "-${2:-TERM}" "$1" 2>/dev/null || true
    local i
    for i in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# start_redis LOG [CPUS]: a throwaway redis-server on a free port (RPORT, REDIS_PID), pinned
# to CPUS when given.
start_redis() {
    local pin=()
    [[ -n ${2:-} ]] && pin=(taskset -c "$2")
    RPORT=$(free_port)
    "${pin[@]}" redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no \
        >"$1" 2>&1 &
    REDIS_PID=$!
    wait_for 50 redis-cli -p "$RPORT" ping || { echo "redis-server did not start" >&2; exit 1; }
}

# json_get FILE key[.key] ...: the values at those paths of a JSON report, tab-separated
# (booleans, null, objects and lists as JSON; a missing key as an empty field).
json_get() {
    /usr/bin/python3 - "$@" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
out = []
for path in sys.argv[2:]:
    v = r
    for k in path.split("."):
        v = v.get(k, "") if isinstance(v, dict) else ""
    out.append(json.dumps(v) if isinstance(v, (bool, dict, list)) or v is None else str(v))
print("\t".join(out))
PY
}
