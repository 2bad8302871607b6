// Corrupted files: every one must either load with consistent bounds or throw gguf::Error
// naming the file; nothing may crash or read outside the image (run under ASan to be sure).
#include <gtest/gtest.h>

#include <random>

#include "gguf/gguf.h"
#include "gguf_bytes.h"
#include "test_seed.h"

namespace ds4::gguf {
namespace {

using testing::Bytes;
using testing::small_file;
namespace tb = testing;

struct Outcome {
  std::unique_ptr<File> file;  // null when rejected
  std::string error;
};

// Loads an image from an exactly sized copy (so ASan sees any overread) and checks the
// invariants every accepted file must satisfy.
Outcome load(const std::vector<uint8_t>& bytes, size_t len = SIZE_MAX) {
  len = std::min(len, bytes.size());
  Outcome o;
  try {
    o.file = File::from_memory(bytes.data(), len, "bad.gguf");
  } catch (const Error& e) {
    o.error = e.what();
    EXPECT_EQ(o.error.rfind("bad.gguf: ", 0), 0u) << o.error;
    return o;
  }
  const File& f = *o.file;
  EXPECT_EQ(f.data_offset() % f.alignment(), 0u);
  EXPECT_NE(f.alignment(), 0u);
  EXPECT_EQ(f.alignment() & (f.alignment() - 1), 0u);
  for (const TensorInfo& t : f.tensors()) {
    EXPECT_GE(t.data, f.base() + f.data_offset()) << t.name;
    EXPECT_LE(t.nbytes, f.file_size()) << t.name;
    EXPECT_LE(static_cast<uint64_t>(t.data - f.base()), f.file_size() - t.nbytes) << t.name;
    EXPECT_EQ(t.offset % f.alignment(), 0u) << t.name;
    EXPECT_GE(t.dims.size(), 1u);
    EXPECT_LE(t.dims.size(), 4u);
    EXPECT_EQ(f.find_tensor(t.name), &t);
  }
  return o;
}

void expect_error(const std::vector<uint8_t>& bytes, const std::string& needle,
                  const std::string& what) {
  const Outcome o = load(bytes);
  EXPECT_EQ(o.file, nullptr) << what << ": loaded";
  EXPECT_NE(o.error.find(needle), std::string::npos) << what << ": " << o.error;
}

// A file with every value type and tensors of several types, written by the Writer.
std::vector<uint8_t> rich_file() {
  Writer w;
  w.set("general.architecture", Value::make_string("deepseek4"));
  w.set("u8", Value::make_u8(1));
  w.set("i8", Value::make_i8(-1));
  w.set("u16", Value::make_u16(2));
  w.set("i16", Value::make_i16(-2));
  w.set("u32", Value::make_u32(3));
  w.set("i32", Value::make_i32(-3));
  w.set("u64", Value::make_u64(4));
  w.set("i64", Value::make_i64(-4));
  w.set("f32", Value::make_f32(0.5f));
  w.set("f64", Value::make_f64(0.25));
  w.set("bool", Value::make_bool(true));
  w.set("tokens", Value::make_string_array({"<s>", "a", "", "bc"}));
  w.set("nested", Value::make_array(ValueType::ARRAY, {Value::make_u32_array({1, 2}),
                                                       Value::make_u32_array({})}));
  w.set("ratios", Value::make_i32_array({0, 0, 4, 128, 4}));
  w.set_alignment(32);
  std::vector<uint8_t> d(2 * 34 * 2);
  for (size_t k = 0; k < d.size(); ++k) d[k] = static_cast<uint8_t>(k * 7 + 3);
  w.add_tensor("blk.0.attn_q_a.weight", quant::Type::Q8_0, {64, 2}, d);
  w.add_tensor("blk.0.attn_norm.weight", quant::Type::F32, {5}, std::vector<uint8_t>(20, 0x3f));
  w.add_tensor("blk.0.ffn_down_exps.weight", quant::Type::Q2_K, {256, 1, 2},
               std::vector<uint8_t>(168, 0x55));
  w.add_tensor("tid2eid", quant::Type::I32, {3, 2}, std::vector<uint8_t>(24, 1));
  return w.to_bytes();
}

uint64_t last_data_end(const File& f) {
  uint64_t end = 0;
  for (const TensorInfo& t : f.tensors()) {
    end = std::max<uint64_t>(end, static_cast<uint64_t>(t.data - f.base()) + t.nbytes);
  }
  return end;
}

TEST(GgufCorrupt, EveryTruncationIsRejectedUntilTheDataIsComplete) {
  for (const auto& bytes : {small_file().b, rich_file()}) {
    const Outcome full = load(bytes);
    ASSERT_NE(full.file, nullptr) << full.error;
    const uint64_t need = last_data_end(*full.file);
    ASSERT_GT(need, full.file->data_offset());
    for (size_t len = 0; len <= bytes.size(); ++len) {
      const Outcome o = load(bytes, len);
      if (len < need) {
        EXPECT_EQ(o.file, nullptr) << "truncated to " << len << " bytes loaded";
      } else {
        EXPECT_NE(o.file, nullptr) << "length " << len << ": " << o.error;
      }
    }
  }
}

TEST(GgufCorrupt, TruncatedTensorDataMessageNamesTheTensor) {
  const Bytes b = small_file();
  const Outcome o = load(b.b, b.size() - 40);  // cuts into tensor 'c' (last 20 bytes + pad)
  EXPECT_NE(o.error.find("bad.gguf: tensor 'c': data ["), std::string::npos) << o.error;
  EXPECT_NE(o.error.find("beyond end of file (size " + std::to_string(b.size() - 40) + ")"),
            std::string::npos)
      << o.error;
}

TEST(GgufCorrupt, RandomBitFlipsLoadOrThrow) {
  const std::vector<uint8_t> orig = rich_file();
  const Outcome base = load(orig);
  ASSERT_NE(base.file, nullptr);
  std::mt19937_64 rng(ds4::testdata::test_seed(20240611));
  int loaded = 0, rejected = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::vector<uint8_t> b = orig;
    const int flips = 1 + static_cast<int>(rng() % 3);
    for (int k = 0; k < flips; ++k) {
      const size_t pos = rng() % b.size();
      b[pos] ^= static_cast<uint8_t>(1u << (rng() % 8));
    }
    const Outcome o = load(b);
    (o.file ? loaded : rejected)++;
  }
  // Both outcomes occur: header flips get rejected, flips in strings or data still load.
  EXPECT_GT(loaded, 100);
  EXPECT_GT(rejected, 100);

  // Bytes in the data section carry no structure: flipping them must never be rejected.
  const uint64_t data = base.file->data_offset();
  for (int iter = 0; iter < 500; ++iter) {
    std::vector<uint8_t> b = orig;
    const size_t pos = data + rng() % (b.size() - data);
    b[pos] ^= static_cast<uint8_t>(1u << (rng() % 8));
    const Outcome o = load(b);
    ASSERT_NE(o.file, nullptr) << "flip at " << pos << ": " << o.error;
    EXPECT_EQ(o.file->metadata().size(), base.file->metadata().size());
    EXPECT_EQ(o.file->tensors().size(), base.file->tensors().size());
  }
}

TEST(GgufCorrupt, RandomByteOverwritesLoadOrThrow) {
  const std::vector<uint8_t> orig = rich_file();
  std::mt19937_64 rng(ds4::testdata::test_seed(7));
  const uint8_t specials[] = {0x00, 0xff, 0x80, 0x7f, 0x01, 0x20};
  for (int iter = 0; iter < 2000; ++iter) {
    std::vector<uint8_t> b = orig;
    const size_t pos = rng() % b.size();
    const size_t run = 1 + rng() % 8;
    const uint8_t v = specials[rng() % std::size(specials)];
    for (size_t k = pos; k < std::min(b.size(), pos + run); ++k) b[k] = v;
    load(b);
  }
}

TEST(GgufCorrupt, HeaderMagicAndVersion) {
  Bytes b = small_file();
  b.b[3] = 'G';
  expect_error(b.b, "bad magic", "magic");
  for (uint32_t v : {1u, 2u}) {
    Bytes c = small_file();
    c.patch<uint32_t>(c.at["version"], v);
    expect_error(c.b, "GGUF version " + std::to_string(v) + " is not supported (only version 3",
                 "version");
  }
  for (uint32_t v : {0u, 4u, 0xffffffffu}) {
    Bytes c = small_file();
    c.patch<uint32_t>(c.at["version"], v);
    expect_error(c.b, "unknown GGUF version", "version");
  }
  expect_error({}, "too small", "empty");
  expect_error({'G', 'G', 'U'}, "too small", "3 bytes");
  expect_error({'G', 'G', 'U', 'F', 3, 0, 0}, "truncated", "partial version");
}

TEST(GgufCorrupt, HugeCountsAndLengths) {
  const uint64_t huge[] = {~0ull, 1ull << 63, 1ull << 62, 1ull << 40, 1ull << 32, 1ull << 20};
  for (uint64_t v : huge) {
    const std::string what = "value " + std::to_string(v);
    Bytes b = small_file();
    b.patch<uint64_t>(b.at["n_tensors"], v);
    expect_error(b.b, "tensor count", what);
    b = small_file();
    b.patch<uint64_t>(b.at["n_kv"], v);
    expect_error(b.b, "metadata count", what);
    b = small_file();
    b.patch<uint64_t>(b.at["key0.len"], v);
    expect_error(b.b, "truncated key", what);
    b = small_file();
    b.patch<uint64_t>(b.at["str.len"], v);
    expect_error(b.b, "key 'general.architecture': truncated string", what);
    b = small_file();
    b.patch<uint64_t>(b.at["arr.count"], v);
    expect_error(b.b, "key 'deepseek4.attention.compress_ratios': array of", what);
    b = small_file();
    b.patch<uint64_t>(b.at["t1.name_len"], v);
    expect_error(b.b, "tensor 1: truncated name", what);
  }
  // One more tensor than the directory holds: the parser runs into padding/data and fails.
  Bytes b = small_file();
  b.patch<uint64_t>(b.at["n_tensors"], 4);
  EXPECT_EQ(load(b.b).file, nullptr);
}

TEST(GgufCorrupt, UnknownValueTypes) {
  for (uint32_t t : {13u, 100u, 0xffffffffu}) {
    Bytes b = small_file();
    b.patch<uint32_t>(b.at["u32.type"], t);
    expect_error(b.b, "key 'deepseek4.block_count': unknown value type", "value type");
    b = small_file();
    b.patch<uint32_t>(b.at["arr.elem_type"], t);
    expect_error(b.b, "unknown array element type", "elem type");
  }
  // Reinterpreting the i32 array as strings reads lengths from the payload: must fail cleanly.
  Bytes b = small_file();
  b.patch<uint32_t>(b.at["arr.elem_type"], tb::kString);
  EXPECT_EQ(load(b.b).file, nullptr);
}

TEST(GgufCorrupt, TensorShapes) {
  for (uint32_t n : {0u, 5u, 0xffffffffu}) {
    Bytes b = small_file();
    b.patch<uint32_t>(b.at["t0.n_dims"], n);
    expect_error(b.b, "tensor 'a': " + std::to_string(n) + " dimensions (must be 1..4)", "n_dims");
  }
  Bytes b = small_file();
  b.patch<uint64_t>(b.at["t0.dim0"], ~0ull);
  expect_error(b.b, "beyond int64", "dim max");
  b = small_file();
  b.patch<uint64_t>(b.at["t0.dim0"], 1ull << 62);  // 2^63 elements: fits int64? no
  expect_error(b.b, "tensor 'a'", "dim 2^62 x 2");
  b = small_file();
  b.patch<uint64_t>(b.at["t0.dim0"], (1ull << 61) + 1);  // elements fit, bytes overflow
  expect_error(b.b, "overflows", "byte overflow");
  b = small_file();
  b.patch<uint64_t>(b.at["t0.dim0"], 1ull << 30);  // valid shape, data far beyond the file
  expect_error(b.b, "tensor 'a': data [", "beyond file");
  b = small_file();
  b.patch<uint64_t>(b.at["t1.dim0"], 33);
  expect_error(b.b, "tensor 'b' [33]: ne0 = 33 is not a multiple of the Q8_0 block size 32",
               "block");
  // A zero extent is legal (an empty tensor), as in ggml.
  b = small_file();
  b.patch<uint64_t>(b.at["t0.dim0"], 0);
  const Outcome o = load(b.b);
  ASSERT_NE(o.file, nullptr) << o.error;
  EXPECT_EQ(o.file->require_tensor("a").nbytes, 0u);
}

TEST(GgufCorrupt, TensorTypes) {
  for (uint32_t t : {4u, 5u, 31u, 1000u, 0xffffffffu}) {
    Bytes b = small_file();
    b.patch<uint32_t>(b.at["t0.type"], t);
    expect_error(b.b, "tensor 'a' [3, 2]: unknown type id " + std::to_string(t), "type");
  }
  // Reinterpreting 'a' (F32 [3, 2], 24 bytes) as F64 makes it 48 bytes: it overlaps 'b'.
  Bytes b = small_file();
  b.patch<uint32_t>(b.at["t0.type"], 28);
  expect_error(b.b, "tensor 'b' at data offset 32 overlaps tensor 'a' [0, 48)", "overlap via type");
  // Reinterpreting 'b' (Q8_0 [64], 68 bytes) as F32 makes it 256 bytes: past the end.
  b = small_file();
  b.patch<uint32_t>(b.at["t1.type"], 0);
  expect_error(b.b, "tensor 'b': data [", "grown past the end");
}

TEST(GgufCorrupt, TensorOffsets) {
  for (uint64_t delta : {1ull, 4ull, 31ull}) {
    Bytes b = small_file();
    b.patch<uint64_t>(b.at["t1.offset"], b.peek<uint64_t>(b.at["t1.offset"]) + delta);
    expect_error(b.b, "tensor 'b': data offset", "misaligned");
  }
  Bytes b = small_file();
  b.patch<uint64_t>(b.at["t1.offset"], 0);  // same bytes as 'a'
  expect_error(b.b, "overlaps tensor 'a'", "overlap");
  b = small_file();
  b.patch<uint64_t>(b.at["t2.offset"], b.peek<uint64_t>(b.at["t2.offset"]) + 32);
  expect_error(b.b, "tensor 'c': data [", "past end");
  for (uint64_t off : {1ull << 40, ~0ull - 31, 1ull << 63}) {
    b = small_file();
    b.patch<uint64_t>(b.at["t0.offset"], off);
    expect_error(b.b, "beyond end of file", "offset " + std::to_string(off));
  }
  // Tensors stored out of order but disjoint are fine.
  b = small_file();
  const uint64_t oa = b.peek<uint64_t>(b.at["t0.offset"]);
  const uint64_t oc = b.peek<uint64_t>(b.at["t2.offset"]);
  b.patch<uint64_t>(b.at["t0.offset"], oc);
  b.patch<uint64_t>(b.at["t2.offset"], oa);
  EXPECT_NE(load(b.b).file, nullptr);
}

TEST(GgufCorrupt, DuplicateNames) {
  Bytes b = small_file();
  b.b[b.at["t1.name_len"] + 8] = 'a';
  expect_error(b.b, "duplicate tensor 'a'", "tensor");

  Bytes m;
  m.raw("GGUF", 4);
  m.u32(3);
  m.u64(0);
  m.u64(2);
  for (int k = 0; k < 2; ++k) {
    m.str("general.name");
    m.u32(tb::kU32);
    m.u32(k);
  }
  expect_error(m.b, "duplicate metadata key 'general.name'", "key");
}

Bytes one_key_file(const std::string& key, uint32_t type, const Bytes& payload) {
  Bytes m;
  m.raw("GGUF", 4);
  m.u32(3);
  m.u64(0);
  m.u64(1);
  m.str(key);
  m.u32(type);
  m.raw(payload.b.data(), payload.size());
  return m;
}

TEST(GgufCorrupt, Alignment) {
  for (uint32_t a : {0u, 3u, 48u, 0x80000001u}) {
    Bytes b = small_file(32, true);
    b.patch<uint32_t>(b.at["align.value"], a);
    expect_error(b.b, "key 'general.alignment' must be a nonzero power of two", "align");
  }
  // A larger power of two makes the stored offsets misaligned.
  Bytes b = small_file(32, true);
  b.patch<uint32_t>(b.at["align.value"], 64);
  expect_error(b.b, "not a multiple of the alignment 64", "align 64");
  // Alignment stored with another type: any unsigned value that fits u32 is accepted ...
  Bytes v;
  v.u64(64);
  auto ok = load(one_key_file("general.alignment", tb::kU64, v).b);
  ASSERT_NE(ok.file, nullptr) << ok.error;
  EXPECT_EQ(ok.file->alignment(), 64u);
  // ... one beyond u32 or of a non-integer type is not.
  Bytes big;
  big.u64(1ull << 32);
  expect_error(one_key_file("general.alignment", tb::kU64, big).b, "power of two", "u64 2^32");
  Bytes s;
  s.str("32");
  expect_error(one_key_file("general.alignment", tb::kString, s).b, "(got string)", "string");
  Bytes neg;
  neg.pod<int32_t>(-32);
  expect_error(one_key_file("general.alignment", tb::kI32, neg).b, "power of two", "negative");
}

TEST(GgufCorrupt, BoolMustBeZeroOrOne) {
  Bytes v;
  v.u8(2);
  expect_error(one_key_file("flag", tb::kBool, v).b, "key 'flag': bool value 2", "bool");
  Bytes arr;
  arr.u32(tb::kBool);
  arr.u64(3);
  arr.u8(1);
  arr.u8(0);
  arr.u8(9);
  expect_error(one_key_file("flags", tb::kArray, arr).b, "key 'flags'[2]: bool value 9", "arr");
}

TEST(GgufCorrupt, NestingDepthIsBounded) {
  auto nested = [](int depth) {
    Bytes p;
    for (int k = 0; k < depth - 1; ++k) {
      p.u32(tb::kArray);
      p.u64(1);
    }
    p.u32(tb::kU8);
    p.u64(1);
    p.u8(42);
    return one_key_file("deep", tb::kArray, p);
  };
  const Outcome ok = load(nested(16).b);
  ASSERT_NE(ok.file, nullptr) << ok.error;
  const Value* v = &ok.file->require("deep");
  for (int k = 0; k < 15; ++k) v = &v->array.at(0);
  EXPECT_EQ(v->array.at(0).u, 42u);
  expect_error(nested(17).b, "arrays nested deeper than 16", "depth 17");
  // Very deep nesting must not exhaust the stack either.
  expect_error(nested(100000).b, "nested deeper", "depth 1e5");
}

TEST(GgufCorrupt, TotalMetadataElementsAreBounded) {
  Bytes p;
  p.u32(tb::kU8);
  p.u64(kMaxMetadataValues + 1);
  p.b.resize(p.b.size() + kMaxMetadataValues + 1, 0);
  expect_error(one_key_file("blob", tb::kArray, p).b, "metadata array elements in total", "cap");
}

TEST(GgufCorrupt, KeyNamesAreEscapedInMessages) {
  Bytes v;
  v.u8(5);
  const Outcome o = load(one_key_file(std::string("bad\n\x01key", 8), tb::kBool, v).b);
  EXPECT_NE(o.error.find("key 'bad\\x0a\\x01key': bool value 5"), std::string::npos) << o.error;
}

}  // namespace
}  // namespace ds4::gguf
