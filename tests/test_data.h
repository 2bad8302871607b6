// Where the tests find their data: tests/data in the repository (the tiny-a oracle, the chat
// renderings, the official API vectors), then the extended data (the tiny-b and tiny-q
// oracles) under DS4_SHARED_DIR, which a bare clone does not have. See tests/data/README.md.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

namespace ds4::testdata {

inline std::string vectors_dir() { return std::string(DS4_TEST_DATA_DIR) + "/vectors"; }

inline std::string oracle_dir(const std::string& config) {
  const std::string vendored = std::string(DS4_TEST_DATA_DIR) + "/oracle/" + config;
  if (std::filesystem::exists(vendored + "/config.json")) return vendored;
  return std::string(DS4_SHARED_DIR) + "/oracle/" + config;
}

inline bool have_oracle(const std::string& config) {
  return std::filesystem::exists(oracle_dir(config) + "/model.safetensors");
}

inline std::string missing_oracle_reason(const std::string& config) {
  return "extended test data absent: " + oracle_dir(config) +
         " (the " + config + " oracle is not in the repository; tests/data/README.md)";
}

}  // namespace ds4::testdata

// Skips the current test, naming the missing folder, when an oracle is not available.
#define DS4_SKIP_WITHOUT_ORACLE(config)                                          \
  do {                                                                           \
    if (!::ds4::testdata::have_oracle(config))                                   \
      GTEST_SKIP() << ::ds4::testdata::missing_oracle_reason(config);            \
  } while (0)
