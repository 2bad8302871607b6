// quantize_row against bytes written by ggml's own quantizers (tests/data/ggml-quant, made by
// scripts/make_ggml_quant_vectors.sh): for every case the same input rows and importance
// must give the same bytes, block for block.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include "quant/quant.h"
#include "quant/types.h"

namespace ds4::quant {
namespace {

struct VectorCase {
  uint32_t type = 0;
  uint32_t rows = 0;
  uint32_t n = 0;
  std::vector<float> input;
  std::vector<float> importance;
  std::vector<uint8_t> expected;
};

struct VectorFile {
  std::string commit;
  std::vector<VectorCase> cases;
};

class Reader {
 public:
  explicit Reader(std::vector<uint8_t> bytes) : b_(std::move(bytes)) {}
  void take(void* dst, size_t n) {
    if (n > b_.size() - pos_) throw std::runtime_error("vector file truncated at byte " + std::to_string(pos_));
    std::memcpy(dst, b_.data() + pos_, n);
    pos_ += n;
  }
  uint32_t u32() {
    uint32_t v;
    take(&v, 4);
    return v;
  }
  bool done() const { return pos_ == b_.size(); }

 private:
  std::vector<uint8_t> b_;
  size_t pos_ = 0;
};

VectorFile load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  Reader r(std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {}));
  char magic[8];
  r.take(magic, 8);
  if (std::memcmp(magic, "DS4QGGML", 8) != 0) throw std::runtime_error(path + ": bad magic");
  if (r.u32() != 1) throw std::runtime_error(path + ": unknown version");
  const uint32_t count = r.u32();
  char commit[64];
  r.take(commit, 64);
  VectorFile f;
  f.commit.assign(commit, strnlen(commit, 64));
  for (uint32_t i = 0; i < count; ++i) {
    VectorCase c;
    c.type = r.u32();
    c.rows = r.u32();
    c.n = r.u32();
    const bool has_importance = r.u32() != 0;
    if (c.rows == 0 || c.n == 0 || uint64_t(c.rows) * c.n > (1u << 20)) throw std::runtime_error(path + ": bad shape");
    c.input.resize(size_t(c.rows) * c.n);
    r.take(c.input.data(), c.input.size() * 4);
    if (has_importance) {
      c.importance.resize(c.n);
      r.take(c.importance.data(), c.importance.size() * 4);
    }
    c.expected.resize(r.u32());
    r.take(c.expected.data(), c.expected.size());
    f.cases.push_back(std::move(c));
  }
  if (!r.done()) throw std::runtime_error(path + ": trailing bytes");
  return f;
}

const VectorFile& vectors() {
  static const VectorFile f = load(std::string(DS4_TEST_DATA_DIR) + "/ggml-quant/vectors.bin");
  return f;
}

TEST(GgmlVectors, CoverEveryQuantizer) {
  // Each type quantize_row supports beyond plain f32, with and without importance where the
  // type uses it.
  std::vector<std::pair<Type, bool>> seen;
  for (const auto& c : vectors().cases) seen.emplace_back(static_cast<Type>(c.type), !c.importance.empty());
  for (auto want : std::vector<std::pair<Type, bool>>{{Type::F16, false},    {Type::BF16, false}, {Type::Q8_0, false},
                                                      {Type::Q8_K, false},   {Type::Q2_K, false}, {Type::Q2_K, true},
                                                      {Type::Q4_K, false},   {Type::Q4_K, true},  {Type::IQ2_XXS, false},
                                                      {Type::IQ2_XXS, true}}) {
    EXPECT_NE(std::find(seen.begin(), seen.end(), want), seen.end())
        << type_name(want.first) << (want.second ? " with" : " without") << " importance";
  }
}

TEST(GgmlVectors, QuantizeRowIsByteIdentical) {
  const VectorFile& f = vectors();
  SCOPED_TRACE("vectors from ggml " + f.commit);
  for (const VectorCase& c : f.cases) {
    const Type t = static_cast<Type>(c.type);
    const auto info = type_info(c.type);
    ASSERT_TRUE(info.has_value());
    const auto rb = row_bytes(t, c.n);
    ASSERT_TRUE(rb.has_value());
    ASSERT_EQ(*rb * c.rows, c.expected.size()) << type_name(t);
    std::vector<uint8_t> got(c.expected.size(), 0xA5);
    for (uint32_t r = 0; r < c.rows; ++r) {
      quantize_row(t, c.input.data() + size_t(r) * c.n, got.data() + r * *rb, c.n,
                   c.importance.empty() ? nullptr : c.importance.data());
      const uint8_t* want = c.expected.data() + r * *rb;
      const uint8_t* have = got.data() + r * *rb;
      if (std::memcmp(want, have, *rb) == 0) continue;
      size_t i = 0;
      while (want[i] == have[i]) ++i;
      ADD_FAILURE() << type_name(t) << (c.importance.empty() ? "" : " (importance)") << " row " << r << ": byte "
                    << i << " of block " << i / info->block_bytes << " is " << int(have[i]) << ", ggml wrote "
                    << int(want[i]);
    }
  }
}

}  // namespace
}  // namespace ds4::quant
