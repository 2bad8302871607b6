// Seeds of randomized tests. Each call site names its own default; DS4_TEST_SEED in the
// environment replaces every default (mixed with it, so the sites still differ), which lets a
// run explore other inputs. Every seed used is printed, so a failure can be replayed with the
// DS4_TEST_SEED value shown.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <source_location>

namespace ds4::testdata {

inline uint32_t test_seed(uint32_t fallback,
                          std::source_location where = std::source_location::current()) {
  const char* env = std::getenv("DS4_TEST_SEED");
  uint32_t seed = fallback;
  if (env && *env) {
    const uint64_t mixed = (std::strtoull(env, nullptr, 0) + fallback) * 0x9E3779B97F4A7C15ull;
    seed = static_cast<uint32_t>(mixed >> 32);
  }
  std::printf("[seed] %s:%u seed %u (DS4_TEST_SEED=%s)\n", where.file_name(),
              static_cast<unsigned>(where.line()), static_cast<unsigned>(seed),
              env && *env ? env : "unset");
  return seed;
}

}  // namespace ds4::testdata
