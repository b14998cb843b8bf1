#!/usr/bin/env bash
# Publishes sample bot-status and task-progress events to Redis (raw payloads, live only)
# so the demo page has something to show. Usage: demo-publisher.sh REDIS_PORT [RATE_PER_S]
set -euo pipefail
port=$1
rate=${2:-2}
states=(joining active recording finalizing completed)
i=0
while true; do
  bot=$((i % 3 + 1))
  state=${states[$(((i / 3) % ${#states[@]}))]}
  redis-cli -p "$port" PUBLISH "bot:status:$bot" \
    "{\"bot\":$bot,\"state\":\"$state\",\"participants\":$((i % 7))}" >/dev/null
  redis-cli -p "$port" PUBLISH task_updates \
    "{\"task\":\"import-$((i / 20))\",\"progress\":$(((i % 20) * 5 + 5))}" >/dev/null
  i=$((i + 1))
  sleep "$(awk "BEGIN{print 1/$rate}")"
done
