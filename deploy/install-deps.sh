#!/usr/bin/env bash
# Installs everything Herald needs to build, run and test, from Debian's packages only.
# Used by the README's two commands and by .ci/run. Safe to run again.
set -euo pipefail

packages=(
  build-essential cmake pkg-config clang-format
  libwebsockets-dev libwebsockets-evlib-uv libuv1-dev libhiredis-dev libjansson-dev
  libpq-dev libcmocka-dev libjwt-dev clang libclang-rt-14-dev postgresql
  redis-server
  nginx
  python3 python3-websockets
  curl procps util-linux openssl
  chromium
  python3-yaml docker-compose
  libnginx-mod-nchan
)

# Node.js runs the browser client's unit tests; use the machine's node when there is one
command -v node >/dev/null 2>&1 || packages+=(nodejs)
# npm installs the browser and manifest test tools (Debian packages it apart from nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)

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
