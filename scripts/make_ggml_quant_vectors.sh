#!/usr/bin/env bash
# Regenerates tests/data/ggml-quant/vectors.bin: fixed input rows quantized by ggml's own
# quantizers (F16, BF16, Q8_0, Q8_K, Q2_K, Q4_K, IQ2_XXS), which tests/quant/test_ggml_vectors.cpp
# compares with ours byte for byte. ggml is a measuring stick only: it is cloned and built in
# a scratch folder outside the repository and nothing of it is committed.
#
#   bash scripts/make_ggml_quant_vectors.sh [GGML_SOURCE [COMMIT]]
#
# GGML_SOURCE: a ggml git repository (path or URL; default https://github.com/ggml-org/ggml),
# COMMIT: what to check out (default: its HEAD). The vectors in the repository were made from
# ggml-org/ggml d99724f2b141fed9e1a9f402213506c081433465.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="${1:-https://github.com/ggml-org/ggml}"
COMMIT="${2:-}"
SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT

git clone -q "$SRC" "$SCRATCH/ggml"
if [[ -n "$COMMIT" ]]; then git -C "$SCRATCH/ggml" checkout -q "$COMMIT"; fi
REV="$(git -C "$SCRATCH/ggml" rev-parse HEAD)"
# Only ggml-base holds the quantizers; GGML_NATIVE off keeps the build machine out of it.
cmake -S "$SCRATCH/ggml" -B "$SCRATCH/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF \
  -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$SCRATCH/build" --target ggml-base -j"$(nproc)" >/dev/null
"${CXX:-g++}" -O2 -std=c++17 -I"$SCRATCH/ggml/include" "$ROOT/scripts/ggml_quant_vectors.cpp" \
  -L"$SCRATCH/build/src" -lggml-base -Wl,-rpath,"$SCRATCH/build/src" -o "$SCRATCH/gen"
mkdir -p "$ROOT/tests/data/ggml-quant"
"$SCRATCH/gen" "$ROOT/tests/data/ggml-quant/vectors.bin" "$REV"
echo "wrote tests/data/ggml-quant/vectors.bin from ggml $REV"
