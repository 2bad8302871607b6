#!/usr/bin/env bash
# Fuzzes the GGUF reader for a bounded time with libFuzzer (clang, ASan+UBSan).
#   DS4_FUZZ_SECONDS   run time (default 60)
#   DS4_FUZZ_BUILD_DIR build folder (default build-fuzz; configured with clang, only the
#                      fuzz targets are built there)
# Extra arguments go to the fuzzer (e.g. -jobs=2). Exit status is non-zero on a finding;
# the crashing input is left in $DS4_FUZZ_BUILD_DIR/fuzz-artifacts/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${DS4_FUZZ_BUILD_DIR:-$ROOT/build-fuzz}"
SECONDS_TO_RUN="${DS4_FUZZ_SECONDS:-60}"

CC="${DS4_FUZZ_CC:-clang}" CXX="${DS4_FUZZ_CXX:-clang++}" \
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DDS4_FUZZ=ON -DDS4_BUILD_TESTS=OFF -DDS4_BUILD_BENCH=OFF -DDS4_CUDA=OFF >/dev/null
cmake --build "$BUILD" --target fuzz_gguf gguf_fuzz_seeds fuzz_tokenizer fuzz_dsml -j"$(nproc)"

SEEDS="$BUILD/fuzz-seeds/gguf"
CORPUS="$BUILD/fuzz-corpus/gguf"   # kept between runs so coverage accumulates
ARTIFACTS="$BUILD/fuzz-artifacts"
mkdir -p "$SEEDS" "$CORPUS" "$ARTIFACTS"
"$BUILD/bin/gguf_fuzz_seeds" "$SEEDS"

echo "fuzz_gguf: running for ${SECONDS_TO_RUN}s"
"$BUILD/bin/fuzz_gguf" "$CORPUS" "$SEEDS" \
  -dict="$ROOT/fuzz/gguf.dict" \
  -max_total_time="$SECONDS_TO_RUN" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
  -artifact_prefix="$ARTIFACTS/" -print_final_stats=1 "$@"

# Text layer: the tokenizer and the DSML parser, each for DS4_FUZZ_TEXT_SECONDS (default 30).
TEXT_SECONDS="${DS4_FUZZ_TEXT_SECONDS:-30}"
for target in fuzz_tokenizer fuzz_dsml; do
  mkdir -p "$BUILD/fuzz-corpus/$target"
  echo "$target: running for ${TEXT_SECONDS}s"
  "$BUILD/bin/$target" "$BUILD/fuzz-corpus/$target" \
    -max_total_time="$TEXT_SECONDS" -timeout=10 -rss_limit_mb=4096 -max_len=4096 \
    -artifact_prefix="$ARTIFACTS/$target-" -print_final_stats=1
done
