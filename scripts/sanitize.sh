#!/usr/bin/env bash
# Sanitizer runs (too slow for .ci/run; run them before resolving an issue):
#   bash scripts/sanitize.sh [asan|tsan|all] [extra ctest arguments]
# asan: AddressSanitizer + UndefinedBehaviorSanitizer (every UB report is fatal) in build-asan/,
#       the whole suite.
# tsan: ThreadSanitizer in build-tsan/, the threaded tests (thread pool, server, KV cache).
# Both build with clang and scale every test's time limit by DS4_TEST_TIME_SCALE (default 4),
# which also reaches the tests' own waits through the environment.
# DS4_SANITIZE_EXCLUDE: ctest label regex left out of the asan run (default fuzz; e.g.
# 'fuzz|agents|vulkan' for a shorter run). DS4_SANITIZE_CMAKE_ARGS: extra configure arguments
# (e.g. -DCMAKE_CXX_COMPILER_LAUNCHER=ccache).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODE="${1:-all}"
[[ $# -gt 0 ]] && shift
SCALE="${DS4_TEST_TIME_SCALE:-4}"
export DS4_TEST_TIME_SCALE="$SCALE"

configure_and_build() {  # build-dir sanitizer-flags
  local dir="$1" flags="$2"
  CC="${DS4_SANITIZE_CC:-clang}" CXX="${DS4_SANITIZE_CXX:-clang++}" \
    cmake -S "$ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" \
    -DCMAKE_EXE_LINKER_FLAGS="$flags" -DCMAKE_SHARED_LINKER_FLAGS="$flags" \
    -DDS4_BUILD_BENCH=OFF -DDS4_CUDA=OFF -DDS4_TEST_TIME_SCALE="$SCALE" ${DS4_SANITIZE_CMAKE_ARGS:-} >/dev/null
  cmake --build "$dir" -j"$(nproc)"
}

status=0
if [[ "$MODE" == asan || "$MODE" == all ]]; then
  # Without the Vulkan backend: Mesa's lavapipe keeps two 128-byte allocations made while it
  # enumerates devices, after our instance is destroyed and the driver unloaded, and an
  # unloaded driver's frames cannot be matched by a leak suppression. The Vulkan code is
  # checked by the validation layer in the vulkan label instead.
  DS4_SANITIZE_CMAKE_ARGS="-DDS4_VULKAN=OFF ${DS4_SANITIZE_CMAKE_ARGS:-}" configure_and_build "$ROOT/build-asan" \
    "-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
  # The libFuzzer run has its own sanitizer build (scripts/fuzz.sh).
  ASAN_OPTIONS="detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
    ctest --test-dir "$ROOT/build-asan" --output-on-failure -j"$(nproc)" -LE "${DS4_SANITIZE_EXCLUDE:-fuzz}|mpi" "$@" || status=1
  # Open MPI frees little of what it allocates at MPI_Finalize and unloads its plugins, whose
  # frames no leak suppression can name: the MPI tests run with memory-error and UB checks
  # but without leak detection.
  if [[ ! "mpi" =~ ^(${DS4_SANITIZE_EXCLUDE:-fuzz})$ ]]; then
    ASAN_OPTIONS="detect_leaks=0:strict_string_checks=1:detect_stack_use_after_return=1" \
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
      ctest --test-dir "$ROOT/build-asan" --output-on-failure -j"$(nproc)" -L mpi "$@" || status=1
  fi
fi
if [[ "$MODE" == tsan || "$MODE" == all ]]; then
  configure_and_build "$ROOT/build-tsan" "-fsanitize=thread"
  TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$ROOT/scripts/tsan.supp" \
    ctest --test-dir "$ROOT/build-tsan" --output-on-failure -j"$(nproc)" \
    -R "${DS4_TSAN_TESTS:-ThreadPool|Pool|Arena|Batch|Rewind|EngineThreads|server|kvcache|KvCache|DiskCache|Concurrent}" "$@" || status=1
fi
exit $status
