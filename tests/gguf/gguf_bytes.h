// Hand assembly of GGUF v3 images for tests, written from the format description (not via
// gguf::Writer) so that reader and writer are checked against an independent encoding.
// It records where each field lands so that corruption tests can patch exact offsets.
#pragma once

#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

namespace ds4::gguf::testing {

class Bytes {
 public:
  std::vector<uint8_t> b;
  std::map<std::string, size_t> at;  // field label -> offset of the field

  size_t size() const { return b.size(); }
  void mark(const std::string& label) { at[label] = b.size(); }

  template <typename T>
  void pod(T v) {
    uint8_t tmp[sizeof(T)];
    std::memcpy(tmp, &v, sizeof(T));
    b.insert(b.end(), tmp, tmp + sizeof(T));
  }
  void u8(uint8_t v) { pod(v); }
  void u32(uint32_t v) { pod(v); }
  void u64(uint64_t v) { pod(v); }
  void raw(const void* p, size_t n) {
    const auto* c = static_cast<const uint8_t*>(p);
    b.insert(b.end(), c, c + n);
  }
  void str(const std::string& s) {
    u64(s.size());
    raw(s.data(), s.size());
  }
  void pad_to(size_t alignment) {
    while (b.size() % alignment) b.push_back(0);
  }

  template <typename T>
  void patch(size_t off, T v) {
    std::memcpy(b.data() + off, &v, sizeof(T));
  }
  template <typename T>
  T peek(size_t off) const {
    T v;
    std::memcpy(&v, b.data() + off, sizeof(T));
    return v;
  }
};

// GGUF value type codes, spelled out independently of gguf::ValueType.
enum : uint32_t {
  kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7,
  kString = 8, kArray = 9, kU64 = 10, kI64 = 11, kF64 = 12,
};

// "t<k>.<field>"; appended piecewise because GCC 12 warns falsely (-Wrestrict) on
// `"literal" + std::string` chains.
inline std::string tensor_label(int k, const char* field) {
  std::string s = "t";
  s += std::to_string(k);
  s += '.';
  s += field;
  return s;
}

// A small valid file: header, a few typed keys, then three tensors
//   "a" F32 [3, 2]  (24 bytes), "b" Q8_0 [64] (68 bytes), "c" I32 [5] (20 bytes),
// with data at 32-byte boundaries. Labels: "n_tensors", "n_kv", "key0.len", "arr.count",
// "str.len", "t<k>.name_len", "t<k>.n_dims", "t<k>.dim0", "t<k>.type", "t<k>.offset",
// "data", "t<k>.data".
inline Bytes small_file(uint32_t alignment = 32, bool with_alignment_key = false) {
  Bytes f;
  f.raw("GGUF", 4);
  f.mark("version");
  f.u32(3);
  f.mark("n_tensors");
  f.u64(3);
  f.mark("n_kv");
  f.u64(with_alignment_key ? 5 : 4);

  f.mark("key0.len");
  f.str("general.architecture");
  f.u32(kString);
  f.mark("str.len");
  f.str("deepseek4");

  f.str("deepseek4.block_count");
  f.mark("u32.type");
  f.u32(kU32);
  f.u32(43);

  f.str("deepseek4.rope.freq_base");
  f.u32(kF32);
  f.pod<float>(10000.0f);

  f.str("deepseek4.attention.compress_ratios");
  f.u32(kArray);
  f.mark("arr.elem_type");
  f.u32(kI32);
  f.mark("arr.count");
  f.u64(4);
  for (int32_t v : {0, 0, 4, 128}) f.pod<int32_t>(v);

  if (with_alignment_key) {
    f.str("general.alignment");
    f.mark("align.type");
    f.u32(kU32);
    f.mark("align.value");
    f.u32(alignment);
  }

  struct T {
    const char* name;
    uint32_t type;
    std::vector<uint64_t> dims;
    uint64_t nbytes;
  };
  const T ts[] = {{"a", 0, {3, 2}, 24}, {"b", 8, {64}, 68}, {"c", 26, {5}, 20}};
  uint64_t off = 0;
  std::vector<uint64_t> offsets;
  for (int k = 0; k < 3; ++k) {
    const std::string p = tensor_label(k, "");
    f.mark(p + "name_len");
    f.str(ts[k].name);
    f.mark(p + "n_dims");
    f.u32(static_cast<uint32_t>(ts[k].dims.size()));
    for (size_t d = 0; d < ts[k].dims.size(); ++d) {
      f.mark(p + "dim" + std::to_string(d));
      f.u64(ts[k].dims[d]);
    }
    f.mark(p + "type");
    f.u32(ts[k].type);
    f.mark(p + "offset");
    f.u64(off);
    offsets.push_back(off);
    off += ts[k].nbytes;
    off = (off + alignment - 1) / alignment * alignment;
  }
  f.pad_to(alignment);
  f.mark("data");
  for (int k = 0; k < 3; ++k) {
    while (f.size() < f.at["data"] + offsets[k]) f.u8(0);
    f.mark(tensor_label(k, "data"));
    for (uint64_t j = 0; j < ts[k].nbytes; ++j) f.u8(static_cast<uint8_t>(17 * k + 3 * j + 1));
  }
  f.pad_to(alignment);
  return f;
}

}  // namespace ds4::gguf::testing
