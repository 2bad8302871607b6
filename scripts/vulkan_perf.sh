#!/usr/bin/env bash
# Vulkan on a real GPU: build, run the Vulkan tests (validation layer on), then the kernel
# benchmark at a working set large enough to leave the GPU's caches. Prints each mat-vec
# format's weight-read rate as a fraction of the copy bandwidth measured in the same run.
#   bash scripts/vulkan_perf.sh [--device N] [--mib N]
# Needs the packages of scripts/setup.sh and a Vulkan driver for the GPU.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${DS4_BUILD_DIR:-$ROOT/build}"
DEVICE=0
MIB=1024
while (($#)); do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --mib) MIB="$2"; shift 2 ;;
    *) echo "usage: $0 [--device N] [--mib N]" >&2; exit 2 ;;
  esac
done
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDS4_VULKAN=ON >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target test_vulkan_ops bench_vulkan
"$BUILD/bin/bench_vulkan" --list-devices
# The op tests on the chosen device (lavapipe's vector-width variants are harmless elsewhere).
DS4_VULKAN_DEVICE="$DEVICE" DS4_VULKAN_VALIDATION="${DS4_VULKAN_VALIDATION:-1}" "$BUILD/bin/test_vulkan_ops" --gtest_brief=1
"$BUILD/bin/bench_vulkan" --device "$DEVICE" --mib "$MIB" --reps 7
