#!/usr/bin/env bash
# Configure and build into build/ (binaries in build/bin).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${DS4_BUILD_DIR:-$ROOT/build}"
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE="${DS4_BUILD_TYPE:-Release}" "$@"
cmake --build "$BUILD" -j"$(nproc)"
