// Reader against hand-assembled bytes, writer against the same bytes, and write->read round
// trips of every metadata value type and of copied and lazily produced tensors.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <chrono>
#include <cstdio>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include "gguf/gguf.h"
#include "gguf_bytes.h"

namespace ds4::gguf {
namespace {

using testing::Bytes;
using testing::small_file;

std::string tmp_path(const std::string& name) {
  return std::string(DS4_TEST_TMP) + "/gguf_" + std::to_string(::getpid()) + "_" + name;
}

std::vector<uint8_t> slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

TEST(GgufRead, HandAssembledFile) {
  const Bytes b = small_file();
  auto f = File::from_memory(b.b.data(), b.size(), "small.gguf");
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->alignment(), 32u);
  EXPECT_EQ(f->data_offset(), b.at.at("data"));
  EXPECT_EQ(f->data_offset() % 32, 0u);
  ASSERT_EQ(f->metadata().size(), 4u);
  EXPECT_EQ(f->metadata()[0].first, "general.architecture");
  EXPECT_EQ(f->metadata()[3].first, "deepseek4.attention.compress_ratios");
  EXPECT_EQ(f->require_string("general.architecture"), "deepseek4");
  EXPECT_EQ(f->require_uint("deepseek4.block_count"), 43u);
  EXPECT_EQ(f->require_float("deepseek4.rope.freq_base"), 10000.0);
  EXPECT_EQ(f->get_int_array("deepseek4.attention.compress_ratios"),
            (std::vector<int64_t>{0, 0, 4, 128}));

  ASSERT_EQ(f->tensors().size(), 3u);
  const TensorInfo& a = f->require_tensor("a");
  EXPECT_EQ(a.dims, (std::vector<uint64_t>{3, 2}));
  EXPECT_EQ(a.type, quant::Type::F32);
  EXPECT_EQ(a.nbytes, 24u);
  EXPECT_EQ(a.n_elements(), 6u);
  EXPECT_EQ(a.row_bytes(), 12u);
  EXPECT_EQ(a.ne(1), 2u);
  EXPECT_EQ(a.ne(3), 1u);
  const TensorInfo& q = f->require_tensor("b");
  EXPECT_EQ(q.type, quant::Type::Q8_0);
  EXPECT_EQ(q.nbytes, 68u);
  EXPECT_EQ(q.row_bytes(), 68u);
  const TensorInfo& c = f->require_tensor("c");
  EXPECT_EQ(c.type, quant::Type::I32);
  EXPECT_EQ(c.nbytes, 20u);
  for (int k = 0; k < 3; ++k) {
    const TensorInfo& t = f->tensors()[k];
    EXPECT_EQ(t.data - f->base(), static_cast<ptrdiff_t>(b.at.at(testing::tensor_label(k, "data"))));
    EXPECT_EQ(t.offset % 32, 0u);
    EXPECT_EQ(t.data[0], static_cast<uint8_t>(17 * k + 1));
    EXPECT_EQ(t.data[t.nbytes - 1], static_cast<uint8_t>(17 * k + 3 * (t.nbytes - 1) + 1));
  }
  EXPECT_EQ(f->find_tensor("d"), nullptr);
  EXPECT_NE(error_of([&] { f->require_tensor("missing.weight"); }).find("small.gguf: missing tensor 'missing.weight'"),
            std::string::npos);
}

// The writer must emit exactly the bytes the format description gives for the same content.
TEST(GgufWrite, MatchesHandAssembledBytes) {
  for (uint32_t align : {32u, 64u}) {
    const Bytes b = small_file(align, align != 32);
    Writer w;
    w.set("general.architecture", Value::make_string("deepseek4"));
    w.set("deepseek4.block_count", Value::make_u32(43));
    w.set("deepseek4.rope.freq_base", Value::make_f32(10000.0f));
    w.set("deepseek4.attention.compress_ratios", Value::make_i32_array({0, 0, 4, 128}));
    if (align != 32) w.set_alignment(align);
    auto data = [&](int k, size_t n) {
      std::vector<uint8_t> d(n);
      for (size_t j = 0; j < n; ++j) d[j] = static_cast<uint8_t>(17 * k + 3 * j + 1);
      return d;
    };
    w.add_tensor("a", quant::Type::F32, {3, 2}, data(0, 24));
    w.add_tensor("b", quant::Type::Q8_0, {64}, data(1, 68));
    w.add_tensor_lazy("c", quant::Type::I32, {5}, [&](uint8_t* dst, uint64_t n) {
      ASSERT_EQ(n, 20u);
      auto d = data(2, 20);
      std::memcpy(dst, d.data(), n);
    });
    EXPECT_EQ(w.to_bytes(), b.b) << "alignment " << align;
    const std::string path = tmp_path("match.gguf");
    w.write(path);
    EXPECT_EQ(slurp(path), b.b);
    auto f = File::open(path);
    EXPECT_EQ(f->alignment(), align);
    EXPECT_EQ(f->path(), path);
    EXPECT_EQ(f->file_size(), b.size());
    std::filesystem::remove(path);
  }
}

// Zero tensors are the same bytes as written-out zeros, but holes on disk: a 64 MiB one
// (middle and end of the file) takes almost no blocks.
TEST(GgufWrite, ZeroTensorsAreHoles) {
  const uint64_t big = 64ull << 20;
  Writer w, dense;
  for (Writer* x : {&w, &dense}) x->add_tensor("head", quant::Type::F32, {4}, std::vector<uint8_t>(16, 7));
  w.add_tensor_zeros("mid", quant::Type::Q8_0, {big / 34 * 32});
  dense.add_tensor("mid", quant::Type::Q8_0, {big / 34 * 32}, std::vector<uint8_t>(big / 34 * 34, 0));
  for (Writer* x : {&w, &dense}) x->add_tensor("tail_data", quant::Type::I32, {2}, std::vector<uint8_t>{1, 0, 0, 0, 2, 0, 0, 0});
  w.add_tensor_zeros("end", quant::Type::F32, {big / 4});
  dense.add_tensor("end", quant::Type::F32, {big / 4}, std::vector<uint8_t>(big, 0));
  const std::string path = tmp_path("zeros.gguf");
  w.write(path);
  EXPECT_EQ(slurp(path), dense.to_bytes());
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_GT(static_cast<uint64_t>(st.st_size), 2 * big - 4096);
  // The filesystem may round holes to its block size; far below the 128 MiB written as holes.
  EXPECT_LT(static_cast<uint64_t>(st.st_blocks) * 512, 16ull << 20) << "not sparse";
  auto f = File::open(path);
  EXPECT_EQ(f->file_size(), static_cast<uint64_t>(st.st_size));
  std::filesystem::remove(path);
}

std::vector<std::pair<std::string, Value>> every_value_type() {
  const float nan_payload = std::bit_cast<float>(0x7fa00001u);  // signalling NaN
  std::vector<std::pair<std::string, Value>> kv = {
      {"u8.min", Value::make_u8(0)},
      {"u8.max", Value::make_u8(255)},
      {"i8.min", Value::make_i8(-128)},
      {"i8.max", Value::make_i8(127)},
      {"u16", Value::make_u16(65535)},
      {"i16", Value::make_i16(-32768)},
      {"u32", Value::make_u32(4294967295u)},
      {"i32", Value::make_i32(std::numeric_limits<int32_t>::min())},
      {"u64", Value::make_u64(std::numeric_limits<uint64_t>::max())},
      {"i64", Value::make_i64(std::numeric_limits<int64_t>::min())},
      {"f32", Value::make_f32(1e-6f)},
      {"f32.neg_zero", Value::make_f32(-0.0f)},
      {"f32.inf", Value::make_f32(-std::numeric_limits<float>::infinity())},
      {"f32.denormal", Value::make_f32(std::numeric_limits<float>::denorm_min())},
      {"f32.snan", Value::make_f32(nan_payload)},
      {"f64", Value::make_f64(0.1)},
      {"f64.nan", Value::make_f64(std::numeric_limits<double>::quiet_NaN())},
      {"bool.true", Value::make_bool(true)},
      {"bool.false", Value::make_bool(false)},
      {"str", Value::make_string("héllo ▁world")},
      {"str.empty", Value::make_string("")},
      {"str.nul", Value::make_string(std::string("a\0b", 3))},
      {"", Value::make_string("empty key")},
      {"arr.u8", Value::make_array(ValueType::UINT8, {Value::make_u8(1), Value::make_u8(2)})},
      {"arr.i8", Value::make_array(ValueType::INT8, {Value::make_i8(-1)})},
      {"arr.u16", Value::make_array(ValueType::UINT16, {Value::make_u16(7)})},
      {"arr.i16", Value::make_array(ValueType::INT16, {Value::make_i16(-7)})},
      {"arr.u32", Value::make_u32_array({1, 2, 3})},
      {"arr.i32", Value::make_i32_array({-1, 0, 1})},
      {"arr.u64", Value::make_array(ValueType::UINT64, {Value::make_u64(1ull << 40)})},
      {"arr.i64", Value::make_array(ValueType::INT64, {Value::make_i64(-(1ll << 40))})},
      {"arr.f32", Value::make_f32_array({10.0f, 10.0f, -2.5f})},
      {"arr.f64", Value::make_array(ValueType::FLOAT64, {Value::make_f64(1.5), Value::make_f64(-1e300)})},
      {"arr.bool", Value::make_array(ValueType::BOOL, {Value::make_bool(true), Value::make_bool(false)})},
      {"arr.str", Value::make_string_array({"a", "", "ccc"})},
      {"arr.empty.u32", Value::make_u32_array({})},
      {"arr.empty.str", Value::make_string_array({})},
      {"arr.empty.arr", Value::make_array(ValueType::ARRAY, {})},
      {"arr.nested",
       Value::make_array(ValueType::ARRAY,
                         {Value::make_u32_array({1, 2}), Value::make_string_array({"x"}),
                          Value::make_array(ValueType::ARRAY, {Value::make_f32_array({}),
                                                               Value::make_f32_array({0.5f})})})},
  };
  return kv;
}

TEST(GgufRoundTrip, EveryValueType) {
  const auto kv = every_value_type();
  Writer w;
  for (const auto& [k, v] : kv) w.set(k, v);
  const std::string path = tmp_path("values.gguf");
  w.write(path);
  auto f = File::open(path);
  ASSERT_EQ(f->metadata().size(), kv.size());
  for (size_t i = 0; i < kv.size(); ++i) {
    EXPECT_EQ(f->metadata()[i].first, kv[i].first);
    EXPECT_TRUE(f->metadata()[i].second == kv[i].second) << kv[i].first;
  }
  EXPECT_TRUE(f->tensors().empty());
  // The signalling NaN keeps its exact bits through the file.
  EXPECT_EQ(double_to_f32_bits(f->require("f32.snan").f), 0x7fa00001u);
  EXPECT_TRUE(std::signbit(f->require("f32.neg_zero").f));
  const Value& nested = f->require("arr.nested");
  ASSERT_EQ(nested.array.size(), 3u);
  EXPECT_EQ(nested.array[2].array[1].array[0].f, 0.5);
  // Bytes of the same content written twice are identical (deterministic output).
  EXPECT_EQ(w.to_bytes(), slurp(path));
  std::filesystem::remove(path);
}

TEST(GgufValue, EqualityDistinguishesTypesAndBits) {
  EXPECT_FALSE(Value::make_u32(1) == Value::make_u64(1));
  EXPECT_FALSE(Value::make_i32(1) == Value::make_i32(2));
  EXPECT_FALSE(Value::make_f32(0.0f) == Value::make_f32(-0.0f));
  EXPECT_TRUE(Value::make_f64(NAN) == Value::make_f64(NAN));
  EXPECT_FALSE(Value::make_u32_array({1}) == Value::make_i32_array({1}));
  EXPECT_FALSE(Value::make_string_array({"a"}) == Value::make_string_array({"a", "b"}));
  EXPECT_FALSE(Value::make_string("a") == Value::make_string("b"));
  EXPECT_TRUE(Value::make_bool(true) == Value::make_bool(true));
}

TEST(GgufValue, NumericViews) {
  EXPECT_EQ(Value::make_u64(std::numeric_limits<uint64_t>::max()).as_int(), std::nullopt);
  EXPECT_EQ(Value::make_u64(5).as_int(), 5);
  EXPECT_EQ(Value::make_i8(-3).as_uint(), std::nullopt);
  EXPECT_EQ(Value::make_i64(3).as_uint(), 3u);
  EXPECT_EQ(Value::make_f32(2.5f).as_int(), std::nullopt);
  EXPECT_EQ(Value::make_f32(2.5f).as_number(), 2.5);
  EXPECT_EQ(Value::make_i16(-4).as_number(), -4.0);
  EXPECT_EQ(Value::make_bool(true).as_number(), std::nullopt);
  EXPECT_EQ(Value::make_string("1").as_number(), std::nullopt);
  EXPECT_TRUE(Value::make_u16(1).is_integer());
  EXPECT_FALSE(Value::make_f64(1).is_integer());
  EXPECT_TRUE(Value::make_f64(1).is_float());
  EXPECT_EQ(value_type_name(ValueType::FLOAT64), "f64");
  EXPECT_EQ(value_type_name(ValueType::ARRAY), "array");
}

class GgufAccessors : public ::testing::Test {
 protected:
  void SetUp() override {
    Writer w;
    w.set("u8", Value::make_u8(200));
    w.set("i32.neg", Value::make_i32(-5));
    w.set("i32.pos", Value::make_i32(7));
    w.set("u64.big", Value::make_u64(std::numeric_limits<uint64_t>::max()));
    w.set("u32", Value::make_u32(1000));
    w.set("f32", Value::make_f32(1.5f));
    w.set("f64", Value::make_f64(1e-6));
    w.set("bool", Value::make_bool(true));
    w.set("str", Value::make_string("hi"));
    w.set("ratios.u32", Value::make_u32_array({0, 4, 128}));
    w.set("ratios.i32", Value::make_i32_array({0, -4}));
    w.set("ratios.f32", Value::make_f32_array({4.0f, 128.0f}));
    w.set("clamp.f32", Value::make_f32_array({10.0f, 10.0f}));
    w.set("clamp.f64", Value::make_array(ValueType::FLOAT64, {Value::make_f64(10.0)}));
    w.set("frac.f32", Value::make_f32_array({0.5f}));
    w.set("tokens", Value::make_string_array({"<s>", "</s>", ""}));
    w.set("mixed", Value::make_array(ValueType::ARRAY, {Value::make_u32_array({})}));
    const auto bytes = w.to_bytes();
    f = File::from_memory(bytes.data(), bytes.size(), "acc.gguf");
  }
  std::unique_ptr<File> f;
};

TEST_F(GgufAccessors, Integers) {
  EXPECT_EQ(f->get_uint_or("u8", 0), 200u);
  EXPECT_EQ(f->get_uint_or("i32.pos", 0), 7u);
  EXPECT_EQ(f->get_uint_or("absent", 99), 99u);
  EXPECT_EQ(f->get_uint_or("u64.big", 0), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(f->get_int_or("i32.neg", 0), -5);
  EXPECT_EQ(f->get_int_or("u32", 0), 1000);
  EXPECT_EQ(f->get_int_or("absent", -1), -1);
  EXPECT_NE(error_of([&] { f->get_uint_or("i32.neg", 0); }).find("acc.gguf: key 'i32.neg'"),
            std::string::npos);
  EXPECT_NE(error_of([&] { f->get_int_or("u64.big", 0); }).find("'u64.big'"), std::string::npos);
  EXPECT_NE(error_of([&] { f->get_uint_or("f32", 0); }).find("has type f32"), std::string::npos);
  EXPECT_NE(error_of([&] { f->get_int_or("str", 0); }).find("has type string"), std::string::npos);
  EXPECT_NE(error_of([&] { f->get_uint_or("bool", 0); }).find("has type bool"), std::string::npos);
  EXPECT_EQ(f->require_uint("u32"), 1000u);
  EXPECT_NE(error_of([&] { f->require_uint("deepseek4.block_count"); })
                .find("acc.gguf: missing required key 'deepseek4.block_count'"),
            std::string::npos);
}

TEST_F(GgufAccessors, FloatsAcceptIntegersAndBothWidths) {
  EXPECT_EQ(f->get_float_or("f32", 0), 1.5);
  EXPECT_EQ(f->get_float_or("f64", 0), 1e-6);
  EXPECT_EQ(f->get_float_or("u32", 0), 1000.0);
  EXPECT_EQ(f->get_float_or("i32.neg", 0), -5.0);
  EXPECT_EQ(f->get_float_or("absent", 2.25), 2.25);
  EXPECT_EQ(f->require_float("f64"), 1e-6);
  EXPECT_THROW(f->get_float_or("str", 0), Error);
  EXPECT_THROW(f->get_float_or("bool", 0), Error);
  EXPECT_THROW(f->require_float("absent"), Error);
}

TEST_F(GgufAccessors, BoolsAndStrings) {
  EXPECT_TRUE(f->get_bool_or("bool", false));
  EXPECT_FALSE(f->get_bool_or("absent", false));
  EXPECT_THROW(f->get_bool_or("u8", false), Error);
  EXPECT_EQ(f->get_string_or("str", "x"), "hi");
  EXPECT_EQ(f->get_string_or("absent", "x"), "x");
  EXPECT_THROW(f->get_string_or("u32", "x"), Error);
  EXPECT_EQ(f->require_string("str"), "hi");
  EXPECT_THROW(f->require_string("absent"), Error);
  EXPECT_TRUE(f->has("str"));
  EXPECT_FALSE(f->has("st"));
  EXPECT_EQ(f->find("absent"), nullptr);
  EXPECT_EQ(f->require("str").s, "hi");
}

TEST_F(GgufAccessors, Arrays) {
  EXPECT_EQ(f->get_int_array("ratios.u32"), (std::vector<int64_t>{0, 4, 128}));
  EXPECT_EQ(f->get_int_array("ratios.i32"), (std::vector<int64_t>{0, -4}));
  EXPECT_EQ(f->get_int_array("ratios.f32"), (std::vector<int64_t>{4, 128}));
  EXPECT_THROW(f->get_int_array("frac.f32"), Error);
  EXPECT_EQ(f->get_float_array("clamp.f32"), (std::vector<double>{10.0, 10.0}));
  EXPECT_EQ(f->get_float_array("clamp.f64"), (std::vector<double>{10.0}));
  EXPECT_EQ(f->get_float_array("ratios.u32"), (std::vector<double>{0, 4, 128}));
  EXPECT_EQ(f->get_string_array("tokens"), (std::vector<std::string>{"<s>", "</s>", ""}));
  EXPECT_NE(error_of([&] { f->get_string_array("ratios.u32"); }).find("element 0 has type u32"),
            std::string::npos);
  EXPECT_THROW(f->get_float_array("tokens"), Error);
  EXPECT_THROW(f->get_int_array("mixed"), Error);
  EXPECT_THROW(f->get_int_array("u32"), Error);  // not an array
  EXPECT_THROW(f->get_int_array("absent"), Error);
}

// Fills a tensor with a pattern unique to (tensor, byte index).
std::vector<uint8_t> pattern(uint64_t n, uint32_t seed) {
  std::vector<uint8_t> d(n);
  uint32_t x = seed * 2654435761u + 1;
  for (auto& b : d) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b = static_cast<uint8_t>(x);
  }
  return d;
}

TEST(GgufRoundTrip, TensorsOfManyTypesAndAlignments) {
  struct Spec {
    std::string name;
    quant::Type type;
    std::vector<uint64_t> dims;
    uint64_t nbytes;  // from the ggml block layouts
  };
  const std::vector<Spec> specs = {
      {"f32", quant::Type::F32, {7}, 28},
      {"f16", quant::Type::F16, {3, 5}, 30},
      {"bf16", quant::Type::BF16, {2, 2, 2}, 16},
      {"q8_0", quant::Type::Q8_0, {64, 3}, 2 * 3 * 34},
      {"q2_k", quant::Type::Q2_K, {256, 2}, 2 * 84},
      {"q4_k", quant::Type::Q4_K, {512, 1, 3}, 2 * 3 * 144},
      {"iq2_xxs", quant::Type::IQ2_XXS, {256, 2, 1, 2}, 4 * 66},
      {"i32", quant::Type::I32, {6, 4}, 96},
      {"empty", quant::Type::F32, {0}, 0},
      {"q8_k", quant::Type::Q8_K, {256}, 292},
  };
  for (uint32_t align : {1u, 8u, 32u, 4096u}) {
    Writer w;
    w.set("general.name", Value::make_string("t"));
    w.set_alignment(align);
    int lazy_calls = 0;
    for (size_t k = 0; k < specs.size(); ++k) {
      const Spec& s = specs[k];
      if (k % 2) {
        w.add_tensor(s.name, s.type, s.dims, pattern(s.nbytes, k));
      } else {
        w.add_tensor_lazy(s.name, s.type, s.dims, [&, k, n = s.nbytes](uint8_t* dst, uint64_t got) {
          ++lazy_calls;
          EXPECT_EQ(got, n);
          auto p = pattern(n, k);
          std::copy(p.begin(), p.end(), dst);
        });
      }
    }
    const std::string path = tmp_path("tensors.gguf");
    w.write(path);
    EXPECT_EQ(lazy_calls, 5);
    auto f = File::open(path);
    EXPECT_EQ(f->alignment(), align);
    EXPECT_EQ(f->get_uint_or("general.alignment", 0), align);
    EXPECT_EQ(f->data_offset() % align, 0u);
    ASSERT_EQ(f->tensors().size(), specs.size());
    for (size_t k = 0; k < specs.size(); ++k) {
      const TensorInfo& t = f->tensors()[k];
      EXPECT_EQ(t.name, specs[k].name);
      EXPECT_EQ(t.type, specs[k].type);
      EXPECT_EQ(t.dims, specs[k].dims);
      EXPECT_EQ(t.nbytes, specs[k].nbytes) << t.name;
      EXPECT_EQ((t.data - f->base()) % align, 0) << t.name;
      EXPECT_EQ(std::vector<uint8_t>(t.data, t.data + t.nbytes), pattern(specs[k].nbytes, k))
          << t.name << " align " << align;
    }
    std::filesystem::remove(path);
  }
}

TEST(GgufWrite, SetReplacesInPlace) {
  Writer w;
  w.set("a", Value::make_u32(1));
  w.set("b", Value::make_u32(2));
  w.set("a", Value::make_string("x"));
  const auto bytes = w.to_bytes();
  auto f = File::from_memory(bytes.data(), bytes.size());
  ASSERT_EQ(f->metadata().size(), 2u);
  EXPECT_EQ(f->metadata()[0].first, "a");
  EXPECT_EQ(f->metadata()[0].second.s, "x");
  EXPECT_EQ(f->metadata()[1].first, "b");
}

TEST(GgufWrite, RejectsMisuse) {
  Writer w;
  EXPECT_THROW(w.set_alignment(0), Error);
  EXPECT_THROW(w.set_alignment(48), Error);
  EXPECT_THROW(w.set("general.alignment", Value::make_string("32")), Error);
  EXPECT_THROW(w.set("mixed", Value::make_array(ValueType::UINT32, {Value::make_i32(1)})), Error);
  EXPECT_THROW(w.set("deep", Value::make_array(ValueType::ARRAY,
                                               {Value::make_array(ValueType::UINT8, {Value::make_u16(1)})})),
               Error);
  Value wide = Value::make_u8(0);
  wide.u = 256;
  EXPECT_THROW(w.set("wide.u8", wide), Error);
  Value low = Value::make_i16(0);
  low.i = -32769;
  EXPECT_THROW(w.set("low.i16", low), Error);
  Value flag = Value::make_bool(true);
  flag.u = 2;
  EXPECT_THROW(w.set("flag", Value::make_array(ValueType::BOOL, {flag})), Error);
  EXPECT_THROW(w.add_tensor("short", quant::Type::F32, {4}, std::vector<uint8_t>(15)), Error);
  EXPECT_THROW(w.add_tensor("block", quant::Type::Q8_0, {33}, std::vector<uint8_t>(34)), Error);
  EXPECT_THROW(w.add_tensor("nodims", quant::Type::F32, {}, {}), Error);
  EXPECT_THROW(w.add_tensor("fivedims", quant::Type::F32, {1, 1, 1, 1, 1}, std::vector<uint8_t>(4)), Error);
  EXPECT_THROW(w.add_tensor("badtype", static_cast<quant::Type>(4), {1}, std::vector<uint8_t>(4)), Error);
  EXPECT_THROW(w.add_tensor_lazy("huge", quant::Type::F32, {1ull << 62, 1ull << 62}, [](uint8_t*, uint64_t) {}),
               Error);
  EXPECT_THROW(w.add_tensor_lazy("null", quant::Type::F32, {1}, nullptr), Error);
  w.add_tensor("x", quant::Type::F32, {1}, std::vector<uint8_t>(4));
  EXPECT_THROW(w.add_tensor("x", quant::Type::F32, {1}, std::vector<uint8_t>(4)), Error);
  EXPECT_THROW(w.add_tensor_lazy("x", quant::Type::F32, {1}, [](uint8_t*, uint64_t) {}), Error);
  // The state after rejected calls is still writable and holds only what was accepted.
  const auto bytes = w.to_bytes();
  auto f = File::from_memory(bytes.data(), bytes.size());
  EXPECT_EQ(f->tensors().size(), 1u);
  EXPECT_EQ(f->metadata().size(), 0u);
  EXPECT_EQ(f->alignment(), 32u);
}

TEST(GgufWrite, ProducerFailureLeavesNoFile) {
  const std::string path = tmp_path("fail.gguf");
  {
    std::ofstream old(path, std::ios::binary);
    old << "previous contents";
  }
  Writer w;
  w.add_tensor_lazy("t", quant::Type::F32, {4}, [](uint8_t*, uint64_t) {
    throw std::runtime_error("producer broke");
  });
  EXPECT_THROW(w.write(path), std::runtime_error);
  // The old file is untouched and no temporary is left behind.
  const auto old = slurp(path);
  EXPECT_EQ(std::string(old.begin(), old.end()), "previous contents");
  for (const auto& e : std::filesystem::directory_iterator(DS4_TEST_TMP)) {
    EXPECT_EQ(e.path().string().find(path + ".tmp."), std::string::npos) << e.path();
  }
  std::filesystem::remove(path);
}

TEST(GgufWrite, UnwritableDestinationIsAnError) {
  Writer w;
  const std::string err =
      error_of([&] { w.write(std::string(DS4_TEST_TMP) + "/no/such/dir/x.gguf"); });
  EXPECT_NE(err.find("no/such/dir/x.gguf.tmp."), std::string::npos) << err;
}

TEST(GgufWrite, ReusedBufferIsClearedBetweenLazyTensors) {
  // A producer that writes only part of its buffer must not leak the previous tensor's bytes.
  Writer w;
  w.add_tensor_lazy("big", quant::Type::I32, {8}, [](uint8_t* d, uint64_t n) { std::memset(d, 0xee, n); });
  w.add_tensor_lazy("partial", quant::Type::I32, {8}, [](uint8_t* d, uint64_t) { d[0] = 1; });
  const auto bytes = w.to_bytes();
  auto f = File::from_memory(bytes.data(), bytes.size());
  const TensorInfo& t = f->require_tensor("partial");
  EXPECT_EQ(t.data[0], 1);
  for (uint64_t k = 1; k < t.nbytes; ++k) EXPECT_EQ(t.data[k], 0) << k;
}

TEST(GgufOpen, FileSystemErrorsNameThePath) {
  const std::string missing = tmp_path("does-not-exist.gguf");
  EXPECT_NE(error_of([&] { File::open(missing); }).find(missing + ": cannot open"), std::string::npos);
  EXPECT_NE(error_of([&] { File::open(DS4_TEST_TMP); }).find("not a regular file"), std::string::npos);
  const std::string empty = tmp_path("empty.gguf");
  { std::ofstream o(empty); }
  EXPECT_NE(error_of([&] { File::open(empty); }).find("empty file"), std::string::npos);
  std::filesystem::remove(empty);
}

}  // namespace
}  // namespace ds4::gguf

namespace ds4::gguf {
namespace {

// Concatenation without `"literal" + std::string`, on which GCC 12 warns falsely (-Wrestrict).
template <typename... Parts>
std::string cat(const Parts&... parts) {
  std::string s;
  ((s += parts), ...);
  return s;
}

// Lazy tensors are produced one at a time, in directory order, into one reused buffer:
// the converter relies on this to stream multi-GB files.
TEST(GgufWrite, LazyTensorsStreamThroughOneBuffer) {
  Writer w;
  std::vector<std::string> order;
  std::vector<const uint8_t*> buffers;
  const uint64_t n = 1 << 20;  // 4 MiB of F32 per tensor
  for (int k = 0; k < 4; ++k) {
    const std::string name = cat("t", std::to_string(k));
    w.add_tensor_lazy(name, quant::Type::F32, {n}, [&, name, k](uint8_t* dst, uint64_t bytes) {
      order.push_back(name);
      buffers.push_back(dst);
      for (uint64_t j = 0; j < bytes; j += 4096) dst[j] = static_cast<uint8_t>(k + 1);
    });
  }
  const std::string path = tmp_path("stream.gguf");
  w.write(path);
  EXPECT_EQ(order, (std::vector<std::string>{"t0", "t1", "t2", "t3"}));
  ASSERT_EQ(buffers.size(), 4u);
  for (const uint8_t* b : buffers) EXPECT_EQ(b, buffers[0]);
  auto f = File::open(path);
  for (int k = 0; k < 4; ++k) {
    const TensorInfo& t = f->tensors()[k];
    ASSERT_EQ(t.nbytes, 4 * n);
    EXPECT_EQ(t.data[0], k + 1);
    EXPECT_EQ(t.data[4096 * 7], k + 1);
    EXPECT_EQ(t.data[1], 0);
  }
  std::filesystem::remove(path);
}

// A directory shaped like the real model's (1328 tensors, a 129280-entry vocabulary and
// as many merges) must open quickly: this is on the start-up path of every command.
TEST(GgufRead, ModelSizedDirectoryOpensQuickly) {
  Writer w;
  std::vector<std::string> tokens(129280), merges(127741);
  for (size_t k = 0; k < tokens.size(); ++k) tokens[k] = cat("tok", std::to_string(k));
  for (size_t k = 0; k < merges.size(); ++k) merges[k] = cat("a", std::to_string(k), " b");
  w.set("tokenizer.ggml.tokens", Value::make_string_array(tokens));
  w.set("tokenizer.ggml.merges", Value::make_string_array(merges));
  w.set("tokenizer.ggml.token_type", Value::make_i32_array(std::vector<int32_t>(129280, 1)));
  for (int k = 0; k < 1328; ++k) {
    w.add_tensor(cat("blk.", std::to_string(k), ".w"), quant::Type::F32, {8}, std::vector<uint8_t>(32));
  }
  const std::string path = tmp_path("big_directory.gguf");
  w.write(path);
  const auto t0 = std::chrono::steady_clock::now();
  auto f = File::open(path);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(f->tensors().size(), 1328u);
  EXPECT_EQ(f->get_string_array("tokenizer.ggml.tokens")[129279], "tok129279");
  EXPECT_EQ(f->require_tensor("blk.1327.w").nbytes, 32u);
  // Generous bound (sanitizer builds, a loaded 2-core machine); typical is ~30 ms.
  EXPECT_LT(ms, 3000.0);
  std::printf("open of a model-sized directory: %.1f ms\n", ms);
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace ds4::gguf
