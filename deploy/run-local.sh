#!/usr/bin/env bash
# Installs, builds and runs Herald's web demo locally: a throwaway redis-server and PostgreSQL,
# the schema, two gateways on two ports (both serve the dashboard and share Redis and the
# history, like two instances behind a load balancer) and the demo publisher.
# Prints the URLs; Ctrl-C stops everything it started, by PID.
#
# Settings (environment): HERALD_PORT (8080; the second gateway takes the next port),
# HERALD_PORT_B, REDIS_PORT (6390), PG_PORT (5490), BIND (127.0.0.1; 0.0.0.0 to reach the demo
# from another machine), DEMO_RATE (messages per second, 5), DEMO_BOTS (6).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

bash deploy/install-deps.sh
bash deploy/build.sh "$root/build"

port_a=${HERALD_PORT:-8080}
port_b=${HERALD_PORT_B:-$((port_a + 1))}
redis_port=${REDIS_PORT:-6390}
pg_port=${PG_PORT:-5490}
bind=${BIND:-127.0.0.1}
herald=$root/build/gateway/herald

busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$port_a" "$port_b" "$redis_port" "$pg_port"; do
  if busy "$p"; then
    echo "run-local: port $p is in use (set HERALD_PORT, HERALD_PORT_B, REDIS_PORT or PG_PORT)" >&2
    exit 1
  fi
done

run=$(mktemp -d /tmp/herald-run.XXXXXX)
chmod 755 "$run"
pids=() # in start order; stopped in reverse
cleanup() {
  trap - INT TERM EXIT
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  echo "run-local: stopped everything (logs kept in $run)"
}
trap cleanup INT TERM EXIT

wait_until() { # what, tries (0.1 s each), command...
  local what=$1 tries=$2
  shift 2
  for _ in $(seq 1 "$tries"); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "run-local: $what did not come up (logs in $run)" >&2
  exit 1
}

redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$run" >"$run/redis.log" 2>&1 &
pids+=($!)
wait_until redis 100 redis-cli -p "$redis_port" ping

# PostgreSQL refuses to run as root: as root, its files and process belong to the postgres
# user (setpriv execs the server itself, so its PID is the one stopped)
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  mkdir "$run/pg"
  chown postgres "$run/pg"
  as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups)
fi
"${as_pg[@]}" "$pgbin/initdb" -D "$run/pg/data" -U herald -A trust -E UTF8 >"$run/initdb.log" 2>&1
"${as_pg[@]}" "$pgbin/postgres" -D "$run/pg/data" -p "$pg_port" -k "$run/pg" \
  -c listen_addresses=127.0.0.1 >"$run/postgres.log" 2>&1 &
pids+=($!)
wait_until PostgreSQL 200 "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$pg_port"
"$pgbin/createdb" -h 127.0.0.1 -p "$pg_port" -U herald herald
db=postgresql://herald@127.0.0.1:$pg_port/herald
"$herald" migrate --database-url "$db" 2>"$run/migrate.log"

start_gateway() { # name port
  HERALD_LISTEN=$bind:$2 HERALD_INSTANCE_ID=$1 HERALD_REDIS_URL=redis://127.0.0.1:$redis_port/0 \
    HERALD_DATABASE_URL=$db HERALD_STATIC_DIR=$root/web-demo HERALD_DRAIN_SECONDS=2 \
    HERALD_PRESENCE='chat:*' "$herald" 2>"$run/herald-$1.log" &
  pids+=($!)
}
start_gateway gateway-a "$port_a"
start_gateway gateway-b "$port_b"
wait_until "gateway A" 200 curl -fs "http://127.0.0.1:$port_a/readyz"
wait_until "gateway B" 200 curl -fs "http://127.0.0.1:$port_b/readyz"

# the publisher talks to gateway B and fails over to A
/usr/bin/python3 "$root/deploy/demo-publisher.py" --url "ws://127.0.0.1:$port_b/ws" \
  --url "ws://127.0.0.1:$port_a/ws" >"$run/publisher.log" 2>&1 &
pids+=($!)

host=127.0.0.1
[ "$bind" = 127.0.0.1 ] || host=$(hostname -f 2>/dev/null || hostname)
cat <<EOF

Herald's web demo is running (Ctrl-C stops everything):
  gateway A   http://$host:$port_a/?peer=$port_b
  gateway B   http://$host:$port_b/?peer=$port_a
Open both to chat between the two gateways. Logs: $run
EOF
wait
