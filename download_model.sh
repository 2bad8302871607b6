#!/bin/sh
# Fetches a published DeepSeek V4 Flash GGUF from huggingface.co/antirez/deepseek-v4-gguf.
# Downloads resume where they stopped; the main variants are linked as ./ds4flash.gguf.
set -eu

REPO="antirez/deepseek-v4-gguf"
BASE_Q2="DeepSeek-V4-Flash-IQ2XXS-w2Q2K-AProjQ8-SExpQ8-OutQ8-chat-v2"
BASE_Q4="DeepSeek-V4-Flash-Q4KExperts-F16HC-F16Compressor-F16Indexer-Q8Attn-Q8Shared-Q8Out-chat-v2"
MTP_NAME="DeepSeek-V4-Flash-MTP-Q4K-Q8_0-F32.gguf"

HERE=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
DEST=${DS4_GGUF_DIR:-"$HERE/gguf"}
case "$DEST" in /*) ;; *) DEST="$HERE/$DEST" ;; esac
TOKEN=${HF_TOKEN:-}

print_help() {
  cat <<HELP
Usage: ./download_model.sh VARIANT [--token TOKEN]

Variants (imatrix builds are the better choice):
  q2-imatrix  2-bit routed experts, ~81 GB  (96-128 GB RAM machines)
  q4-imatrix  4-bit routed experts, ~153 GB (256 GB RAM or more)
  q2          legacy 2-bit build without imatrix, ~81 GB
  q4          legacy 4-bit build without imatrix, ~153 GB
  mtp         optional MTP draft block, ~3.5 GB (use with --mtp FILE)

Files go to \$DS4_GGUF_DIR (default ./gguf). After q2*/q4* the link ./ds4flash.gguf points
at the downloaded file, so 'ds4 -p "Hello"' and 'ds4-server' find it by default.
An interrupted download continues from where it stopped when run again.
The token comes from --token, \$HF_TOKEN or ~/.cache/huggingface/token (public files need none).
HELP
}

[ $# -ge 1 ] || { print_help >&2; exit 1; }
VARIANT=$1; shift
case "$VARIANT" in
  q2-imatrix) NAME="$BASE_Q2-imatrix.gguf" ;;
  q4-imatrix) NAME="$BASE_Q4-imatrix.gguf" ;;
  q2) NAME="$BASE_Q2.gguf" ;;
  q4) NAME="$BASE_Q4.gguf" ;;
  mtp) NAME="$MTP_NAME" ;;
  -h|--help|help) print_help; exit 0 ;;
  *) echo "unknown variant: $VARIANT" >&2; print_help >&2; exit 1 ;;
esac

while [ $# -gt 0 ]; do
  case "$1" in
    --token) [ $# -ge 2 ] || { echo "--token needs a value" >&2; exit 1; }; TOKEN=$2; shift ;;
    *) echo "unknown option: $1" >&2; exit 1 ;;
  esac
  shift
done
if [ -z "$TOKEN" ] && [ -s "$HOME/.cache/huggingface/token" ]; then
  TOKEN=$(cat "$HOME/.cache/huggingface/token")
fi

command -v curl >/dev/null 2>&1 || { echo "curl is required" >&2; exit 1; }
mkdir -p "$DEST"
URL="https://huggingface.co/$REPO/resolve/main/$NAME"
OUT="$DEST/$NAME"
PART="$OUT.part"

if [ -s "$OUT" ]; then
  echo "already downloaded: $OUT"
else
  echo "downloading $NAME"
  echo "  into $DEST"
  # -C - resumes a partial file; retries cover flaky connections on 80+ GB transfers.
  if [ -n "$TOKEN" ]; then
    curl -fL --retry 10 --retry-delay 5 -C - -H "Authorization: Bearer $TOKEN" -o "$PART" "$URL"
  else
    curl -fL --retry 10 --retry-delay 5 -C - -o "$PART" "$URL"
  fi
  mv "$PART" "$OUT"
fi

if [ "$VARIANT" != "mtp" ]; then
  ln -sfn "$OUT" "$HERE/ds4flash.gguf"
  echo "linked ./ds4flash.gguf -> $OUT"
  echo "try: build/bin/ds4 -p \"Hello\"   or   build/bin/ds4-server --ctx 100000"
else
  echo "enable it with: build/bin/ds4 --mtp $OUT"
fi
