// Replays a generated corpus of corrupted GGUF images through the fuzz harness's entry point
// (gguf_fuzz_replay, built without libFuzzer): the harness aborts on a crash, an unexpected
// exception or a write->read round-trip mismatch, so a zero exit means every input passed.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "gguf/gguf.h"
#include "gguf_bytes.h"
#include "test_seed.h"

namespace ds4::gguf {
namespace {

std::vector<uint8_t> sample() {
  Writer w;
  w.set("general.architecture", Value::make_string("deepseek4"));
  w.set("deepseek4.block_count", Value::make_u32(43));
  w.set("deepseek4.rope.freq_base", Value::make_f32(10000.0f));
  w.set("deepseek4.hyper_connection.epsilon", Value::make_f64(1e-6));
  w.set("tokens", Value::make_string_array({"<s>", "", "x"}));
  w.set("nested", Value::make_array(ValueType::ARRAY, {Value::make_i32_array({-1})}));
  w.set("flag", Value::make_bool(false));
  w.set_alignment(64);
  w.add_tensor("w", quant::Type::Q8_0, {32, 2}, std::vector<uint8_t>(68, 0x11));
  w.add_tensor("n", quant::Type::F32, {4}, std::vector<uint8_t>(16, 0x22));
  return w.to_bytes();
}

TEST(GgufReplay, CorruptCorpusThroughFuzzHarness) {
  const std::string replay = std::string(DS4_BIN_DIR) + "/gguf_fuzz_replay";
  ASSERT_TRUE(std::filesystem::exists(replay)) << replay;
  const std::filesystem::path dir =
      std::string(DS4_TEST_TMP) + "/gguf_replay_corpus_" + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);

  const auto base = sample();
  size_t n = 0;
  auto emit = [&](const std::vector<uint8_t>& b, size_t len) {
    std::ofstream out(dir / ("in" + std::to_string(n++)), std::ios::binary);
    out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(len));
  };
  emit(base, base.size());
  const auto small = testing::small_file().b;
  emit(small, small.size());
  for (size_t len = 0; len < base.size(); len += 7) emit(base, len);
  std::mt19937 rng(ds4::testdata::test_seed(99));
  for (int k = 0; k < 400; ++k) {
    auto b = base;
    b[rng() % b.size()] ^= static_cast<uint8_t>(1u << (rng() % 8));
    if (k % 2) b[rng() % b.size()] = static_cast<uint8_t>(rng());
    emit(b, b.size());
  }

  const std::string out_file = (dir / "replay.out").string();
  std::string cmd = replay;  // built with += : GCC 12 warns falsely (-Wrestrict) on a + chain
  cmd += ' ';
  cmd += dir.string();
  cmd += " > ";
  cmd += out_file;
  cmd += " 2>&1";
  const int rc = std::system(cmd.c_str());
  std::ifstream in(out_file);
  const std::string out((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(rc, 0) << out;
  // The output file itself sits in the folder when the listing happens or not; accept both.
  const bool counted = out.find("replayed " + std::to_string(n) + " inputs") != std::string::npos ||
                       out.find("replayed " + std::to_string(n + 1) + " inputs") != std::string::npos;
  EXPECT_TRUE(counted) << out;
  // At least the two intact files are accepted by the reader.
  EXPECT_EQ(out.find("(0 accepted"), std::string::npos) << out;
  EXPECT_EQ(out.find("(1 accepted"), std::string::npos) << out;
  std::filesystem::remove_all(dir);
}

TEST(GgufReplay, HarnessRejectsMissingInput) {
  const std::string replay = std::string(DS4_BIN_DIR) + "/gguf_fuzz_replay";
  std::string cmd = replay;
  cmd += " /nonexistent/gguf/input > /dev/null 2>&1";
  const int rc = std::system(cmd.c_str());
  EXPECT_NE(rc, 0);
}

}  // namespace
}  // namespace ds4::gguf
