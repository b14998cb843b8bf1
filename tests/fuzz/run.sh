#!/usr/bin/env bash
# Builds the libFuzzer targets with clang in build-fuzz/ and runs each for N seconds
# (default 30), then runs the live fuzzer (live_fuzz.py) against the ASan gateway for M
# seconds (default $FUZZ_LIVE_SECONDS, else 60; 0 skips it).
# Usage: tests/fuzz/run.sh [seconds] [live-seconds]. libFuzzer crash inputs land in
# build-fuzz/tests/fuzz/, failing live cases in build-asan/tests/fuzz/live-crashes/.
# The live fuzzer uses $HERALD_BIN, else build-asan/gateway/herald (configured here with
# -DHERALD_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug when build-asan/ does not exist yet).
set -euo pipefail
secs=${1:-30}
live_secs=${2:-${FUZZ_LIVE_SECONDS:-60}}
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$root/build-fuzz

command -v clang >/dev/null || { echo "run.sh: needs clang (apt-get install -y clang)" >&2; exit 1; }
CC=clang cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Debug >/dev/null
targets=$(cd "$root/tests/fuzz" && ls fuzz_*.c | sed 's/\.c$//')
# shellcheck disable=SC2086
cmake --build "$build" -j"$(nproc)" --target $targets

status=0
cd "$build/tests/fuzz"
for t in $targets; do
  name=${t#fuzz_}
  mkdir -p "corpus/$name"
  echo "=== $t: ${secs}s ==="
  if ./"$t" -max_total_time="$secs" -rss_limit_mb=1024 -timeout=10 -print_final_stats=1 \
      "corpus/$name" "$root/tests/fuzz/corpus/$name" 2>"$t.log"; then
    grep -E '^stat::number_of_executed_units|^#[0-9]+.*DONE' "$t.log" | tail -2 || true
  else
    echo "$t FAILED: see $build/tests/fuzz/$t.log"; tail -40 "$t.log"; status=1
  fi
done

if [ "$live_secs" != 0 ]; then
  if [ -z "${HERALD_BIN:-}" ]; then
    asan=$root/build-asan
    [ -f "$asan/CMakeCache.txt" ] ||
      cmake -S "$root" -B "$asan" -DHERALD_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
    cmake --build "$asan" -j"$(nproc)" --target herald
    export HERALD_BIN=$asan/gateway/herald
  fi
  echo "=== live fuzzer: ${live_secs}s against $HERALD_BIN ==="
  /usr/bin/python3 "$root/tests/fuzz/live_fuzz.py" --seconds "$live_secs" || status=1
fi
exit $status
