// Seeds of randomized tests. Each call site names its own default; DS4_TEST_SEED in the
// environment replaces every default (mixed with it, so the sites still differ), which lets a
// run explore other inputs. Every seed used is printed, so a failure can be replayed with the
// DS4_TEST_SEED value shown.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace ds4::testdata {

// The call site comes from __builtin_FILE/__builtin_LINE (GCC and Clang): the clang 14 of the
// sanitizer builds has no std::source_location with libstdc++.
inline uint32_t test_seed(uint32_t fallback, const char* file = __builtin_FILE(),
                          unsigned line = __builtin_LINE()) {
  const char* env = std::getenv("DS4_TEST_SEED");
  uint32_t seed = fallback;
  if (env && *env) {
    const uint64_t mixed = (std::strtoull(env, nullptr, 0) + fallback) * 0x9E3779B97F4A7C15ull;
    seed = static_cast<uint32_t>(mixed >> 32);
  }
  std::printf("[seed] %s:%u seed %u (DS4_TEST_SEED=%s)\n", file, line, static_cast<unsigned>(seed),
              env && *env ? env : "unset");
  return seed;
}

}  // namespace ds4::testdata
