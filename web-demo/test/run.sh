#!/bin/sh
# Runs the herald.js unit tests (Node's built-in test runner, Node >= 20, no dependencies).
# Exits non-zero when a test fails or is cancelled. For ctest:
#   add_test(NAME web_client COMMAND ${CMAKE_SOURCE_DIR}/web-demo/test/run.sh)
set -eu
dir=$(cd "$(dirname "$0")" && pwd)
if ! command -v node >/dev/null 2>&1; then
    echo "run.sh: node not found (Node >= 20 is needed)" >&2
    exit 1
fi
# Explicit file list: `node --test <dir>` means different things in Node 20 and 22.
exec node --test "$dir"/*.test.mjs
