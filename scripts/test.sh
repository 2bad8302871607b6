#!/usr/bin/env bash
# The one command that runs every test on a fresh machine: setup, build, ctest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
bash "$ROOT/scripts/build.sh"
ctest --test-dir "${DS4_BUILD_DIR:-$ROOT/build}" --output-on-failure -j"$(nproc)" "$@"
