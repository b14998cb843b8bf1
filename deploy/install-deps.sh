#!/usr/bin/env bash
# Installs what Herald needs from Debian's packages only. Safe to run again.
#   install-deps.sh          build and run (the README's first command, deploy/run-local.sh)
#   install-deps.sh --test   the same plus every tool the test suite uses (tests/run-all.sh, CI)
set -euo pipefail

# build (the tree builds its unit tests and benchmark tools too, hence cmocka) and run:
# Redis, PostgreSQL and the demo publisher (python3-websockets)
packages=(
  build-essential cmake pkg-config
  libwebsockets-dev libwebsockets-evlib-uv libuv1-dev libhiredis-dev libjansson-dev
  libpq-dev libcmocka-dev libjwt-dev
  libssl-dev                   # OpenSSL: envelope HMACs, RS256/ES256 keys, the JWK Set over https
  postgresql redis-server
  python3 python3-websockets
  curl procps util-linux openssl
)

if [ "${1:-}" = "--test" ]; then
  packages+=(
    clang-format
    clang libclang-rt-14-dev     # the libFuzzer targets
    gdb                          # the live fuzzer's stack of a hung gateway
    nginx libnginx-mod-nchan     # the load-balanced tests; Nchan in the benchmark suite
    redis-sentinel               # the Sentinel failover tests
    stunnel4                     # the TLS-to-Redis sidecar test (openssl makes its certificates)
    chromium                     # the browser tests
    python3-yaml docker-compose  # the offline checks of the compose file and manifests
    prometheus                   # promtool: the ops kit's rules, metrics and dashboard checks
    # the container test: a Docker engine (started by the test where none runs), debootstrap
    # for the base images (no registry is reachable), and what docker.io recommends for
    # running containers
    docker.io debootstrap apparmor cgroupfs-mount
  )
  # Node.js runs the browser client's unit tests and npm installs the browser and manifest
  # test tools; use the machine's node when there is one (Debian packages npm apart)
  command -v node >/dev/null 2>&1 || packages+=(nodejs)
  command -v npm >/dev/null 2>&1 || packages+=(npm)
elif [ $# -gt 0 ]; then
  echo "usage: install-deps.sh [--test]" >&2
  exit 2
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
