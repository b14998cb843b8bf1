#!/usr/bin/env bash
# Installs, builds and runs the whole test suite: every test once in a normal build with
# -Werror and once under AddressSanitizer + UndefinedBehaviorSanitizer (leaks fail the run),
# then the fuzzers for a bounded time: the libFuzzer targets, and the live fuzzer against the
# ASan gateway just built (so it runs last).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

bash deploy/install-deps.sh --test
ulimit -n "$(ulimit -Hn)" || true

# CI must run the container test (tests/deploy/test_container.py), not skip it
export HERALD_CONTAINER_TESTS=required

status=0
run_suite() {
  local name=$1 dir=$2
  shift 2
  echo "=== $name build ==="
  bash deploy/build.sh "$dir" -DHERALD_WERROR=ON "$@"
  echo "=== $name tests ==="
  (cd "$dir" && ctest --output-on-failure --timeout 300) || status=1
}

# a small quarantine keeps RSS meaningful for the memory-bound tests under ASan
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1:quarantine_size_mb=16
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LSAN_OPTIONS=suppressions=$root/tests/lsan.supp:print_suppressions=0

run_suite release "$root/build"
run_suite "asan+ubsan" "$root/build-asan" -DHERALD_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug

echo "=== fuzz: libFuzzer targets under ASan/UBSan, ${FUZZ_SECONDS:-30} s each;" \
     "live fuzzer against build-asan's gateway, ${FUZZ_LIVE_SECONDS:-60} s ==="
bash tests/fuzz/run.sh "${FUZZ_SECONDS:-30}" "${FUZZ_LIVE_SECONDS:-60}" || status=1

if [ $status -eq 0 ]; then echo "ALL SUITES PASSED"; else echo "SOME TESTS FAILED"; fi
exit $status
