#!/usr/bin/env bash
# Browser tests of the web demo (tests/browser/dashboard.test.mjs, presence.test.mjs, sse.test.mjs) and of CORS (cors.test.mjs): installs what is missing
# (Debian's chromium; playwright-core from npm into tests/browser/node_modules), then runs them
# with Node's test runner against the gateway binary given as $1 (default build/gateway/herald).
# Screenshots go to tests/artifacts/. For ctest:
#   add_test(NAME browser_dashboard COMMAND bash .../tests/browser/run.sh $<TARGET_FILE:herald>)
set -euo pipefail
dir=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$dir/../.." && pwd)
export HERALD_BIN=${1:-${HERALD_BIN:-$root/build/gateway/herald}}

if [ ! -x /usr/bin/chromium ]; then
  echo "browser tests: installing chromium"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
  $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends chromium >/dev/null
fi
command -v node >/dev/null || { echo "browser tests: node not found (deploy/install-deps.sh --test installs it)" >&2; exit 1; }

# playwright-core, pinned in package-lock.json; reinstalled when the lock file changes
stamp=$dir/node_modules/.herald-lock
if ! cmp -s "$dir/package-lock.json" "$stamp" 2>/dev/null; then
  echo "browser tests: npm ci (playwright-core)"
  # a lock so that two runs at once (plain and ASan suites) do not install over each other
  exec 9>/tmp/herald-browser-npm.lock
  flock 9
  if ! cmp -s "$dir/package-lock.json" "$stamp" 2>/dev/null; then
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$dir/package-lock.json" "$stamp"
  fi
  flock -u 9
fi

cd "$dir"
exec node --test --test-concurrency=1 dashboard.test.mjs cors.test.mjs presence.test.mjs sse.test.mjs
