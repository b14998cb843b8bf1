#!/usr/bin/env bash
# Publishes sample bot-status and task-progress events durably (REST: PostgreSQL, then Redis)
# so the demo page has something to show. Usage: demo-publisher.sh BASE_URL [RATE_PER_S]
set -euo pipefail
base=$1
rate=${2:-2}
states=(joining active recording finalizing completed)
post() {
  curl -fsS -X POST -H 'content-type: application/json' -d "$2" \
    "$base/v1/channels/$1/messages" >/dev/null || echo "publish to $1 failed" >&2
}
i=0
while true; do
  bot=$((i % 3 + 1))
  state=${states[$(((i / 3) % ${#states[@]}))]}
  post "bot:status:$bot" "{\"bot\":$bot,\"state\":\"$state\",\"participants\":$((i % 7))}"
  post task_updates "{\"task\":\"import-$((i / 20))\",\"progress\":$(((i % 20) * 5 + 5))}"
  i=$((i + 1))
  sleep "$(awk "BEGIN{print 1/$rate}")"
done
