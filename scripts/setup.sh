#!/usr/bin/env bash
# Installs every Debian package the build and the tests need. Idempotent; run as root.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config clang libclang-rt-14-dev
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  nlohmann-json3-dev libcpp-httplib-dev libssl-dev
  libpcre2-dev libutf8proc-dev libedit-dev libcli11-dev
  python3 python3-numpy tmux curl ca-certificates iproute2 util-linux
  libvulkan-dev glslc mesa-vulkan-drivers vulkan-validationlayers
  json-schema-test-suite
  openmpi-bin libopenmpi-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

# Node may come from another packaging (e.g. nodesource's nodejs bundles npm): check commands.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

if ((${#missing[@]})); then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# npm packages the tests use (pinned in tests/package.json), and the real coding agents of
# the agent suite (pinned in tests/agents/package.json; ~1.4 GB with their native binaries).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
for dir in "$ROOT/tests" "$ROOT/tests/agents"; do
  [[ -f "$dir/package.json" ]] || continue
  if [[ ! -d "$dir/node_modules" || "$dir/package.json" -nt "$dir/node_modules/.stamp" ]]; then
    (cd "$dir" && npm install --no-audit --no-fund --loglevel=error && touch node_modules/.stamp)
  fi
done
