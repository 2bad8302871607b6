// GGUF v3 reader (mmap, fully validated) and writer.
#pragma once

#include <functional>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "quant/types.h"

namespace ds4::gguf {

// Every failure (I/O, malformed file, missing key, wrong type) is reported as Error with a
// message that names the file and the offending key or tensor.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

enum class ValueType : uint32_t {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
};
std::string_view value_type_name(ValueType t);

// A metadata value. Scalars keep their exact stored type; arrays may nest.
struct Value {
  ValueType type = ValueType::UINT32;
  uint64_t u = 0;   // UINT8..UINT64, BOOL
  int64_t i = 0;    // INT8..INT64
  double f = 0.0;   // FLOAT32 (exactly representable; NaN payloads kept), FLOAT64
  std::string s;    // STRING
  ValueType elem_type = ValueType::UINT8;  // ARRAY element type
  std::vector<Value> array;                // ARRAY elements

  static Value make_u8(uint8_t v);
  static Value make_i8(int8_t v);
  static Value make_u16(uint16_t v);
  static Value make_i16(int16_t v);
  static Value make_u32(uint32_t v);
  static Value make_i32(int32_t v);
  static Value make_u64(uint64_t v);
  static Value make_i64(int64_t v);
  static Value make_f32(float v);
  static Value make_f64(double v);
  static Value make_bool(bool v);
  static Value make_string(std::string v);
  static Value make_array(ValueType elem, std::vector<Value> elems);
  // Convenience array builders.
  static Value make_string_array(const std::vector<std::string>& v);
  static Value make_u32_array(const std::vector<uint32_t>& v);
  static Value make_i32_array(const std::vector<int32_t>& v);
  static Value make_f32_array(const std::vector<float>& v);

  bool is_integer() const;  // any signed/unsigned integer type
  bool is_float() const;    // FLOAT32 / FLOAT64
  // Lossless integer view (nullopt for non-integers or out-of-range).
  std::optional<int64_t> as_int() const;
  std::optional<uint64_t> as_uint() const;
  // Numeric view of any integer or float type.
  std::optional<double> as_number() const;

  bool operator==(const Value& o) const;
};

// The f32 bit pattern a FLOAT32 Value stores (NaN payloads preserved, unlike a cast).
uint32_t double_to_f32_bits(double v);

struct TensorInfo {
  std::string name;
  std::vector<uint64_t> dims;  // ne0 first (contiguous)
  quant::Type type = quant::Type::F32;
  uint64_t offset = 0;         // relative to the data section, as stored
  uint64_t nbytes = 0;         // computed from type and dims
  const uint8_t* data = nullptr;  // points into the mapping (reader only)

  uint64_t n_elements() const;
  uint64_t ne(size_t i) const { return i < dims.size() ? dims[i] : 1; }
  uint64_t row_bytes() const;  // bytes of one ne0 row
};

class File {
 public:
  // Opens and validates a GGUF v3 file (mmap). Throws Error.
  static std::unique_ptr<File> open(const std::string& path);
  // Parses an in-memory image (copied). Throws Error. Used by the fuzzer and tests.
  static std::unique_ptr<File> from_memory(const void* data, size_t size,
                                           std::string name = "<memory>");
  ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t file_size() const { return size_; }
  uint32_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  const uint8_t* base() const { return base_; }

  // Metadata in file order.
  const std::vector<std::pair<std::string, Value>>& metadata() const { return kv_; }
  const Value* find(std::string_view key) const;
  bool has(std::string_view key) const { return find(key) != nullptr; }

  // Typed accessors. The *_or forms return the default when the key is absent and throw
  // Error when it is present with an incompatible type. The require_* forms throw when absent.
  uint64_t get_uint_or(std::string_view key, uint64_t def) const;
  int64_t get_int_or(std::string_view key, int64_t def) const;
  double get_float_or(std::string_view key, double def) const;  // accepts ints and floats
  bool get_bool_or(std::string_view key, bool def) const;
  std::string get_string_or(std::string_view key, std::string def) const;
  uint64_t require_uint(std::string_view key) const;
  double require_float(std::string_view key) const;
  std::string require_string(std::string_view key) const;
  const Value& require(std::string_view key) const;
  // Arrays: element-wise numeric conversion; throws on non-numeric elements.
  std::vector<int64_t> get_int_array(std::string_view key) const;
  std::vector<double> get_float_array(std::string_view key) const;
  std::vector<std::string> get_string_array(std::string_view key) const;

  const std::vector<TensorInfo>& tensors() const { return tensors_; }

  // Rewrites bytes [p, p+n) of this file's image in memory with fn(ptr, n): the mapping is
  // private, so written pages become this process's copies page by page (the file on disk
  // never changes and no second copy of the range is made). p must point into the image.
  // Used for load-time repacks that keep each tensor's size. Throws Error on failure.
  void rewrite_in_memory(const uint8_t* p, uint64_t n, const std::function<void(uint8_t*, uint64_t)>& fn);
  const TensorInfo* find_tensor(std::string_view name) const;
  const TensorInfo& require_tensor(std::string_view name) const;

 private:
  File() = default;
  void parse();        // validates everything against size_
  void parse_image();  // parse() without the out-of-memory translation

  std::string path_;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  bool mapped_ = false;
  std::vector<uint8_t> owned_;  // from_memory copy
  uint32_t version_ = 0;
  uint32_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, Value>> kv_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> kv_index_;      // key -> position in kv_
  std::map<std::string, size_t, std::less<>> tensor_index_;  // name -> position in tensors_
};

// Reader limits (documented so that callers know what a valid file may contain).
inline constexpr uint32_t kMaxDims = 4;              // as ggml
inline constexpr uint32_t kMaxArrayDepth = 16;       // nested metadata arrays
inline constexpr uint64_t kMaxMetadataValues = 1ull << 22;  // all array elements together

// Builds a GGUF v3 file. Tensor data is either copied in or produced by a callback at write
// time (so converters can stream huge tensors without holding them all in memory).
class Writer {
 public:
  Writer();
  // Replaces an existing key, keeping its first position. Arrays must be homogeneous
  // (every element of elem_type). Setting general.alignment also sets the alignment.
  void set(std::string key, Value v);
  void set_alignment(uint32_t a);      // also writes general.alignment

  void add_tensor(std::string name, quant::Type type, std::vector<uint64_t> dims,
                  std::vector<uint8_t> data);
  using Producer = std::function<void(uint8_t* dst, uint64_t nbytes)>;
  void add_tensor_lazy(std::string name, quant::Type type, std::vector<uint64_t> dims,
                       Producer produce);
  // A tensor of zero bytes (a valid all-zero tensor in every type), left as a hole by write()
  // (sparse file: no disk blocks; reads give zeros). Benchmarks use it for full-size shapes.
  void add_tensor_zeros(std::string name, quant::Type type, std::vector<uint64_t> dims);

  // Writes atomically: path.tmp.<pid>, fsync, rename. Lazy tensors are produced one at a
  // time into a single reused buffer (the producer must fill all nbytes). Throws Error; an
  // exception from a producer removes the temporary file and propagates unchanged.
  void write(const std::string& path) const;
  // Serialises to memory (small files, tests).
  std::vector<uint8_t> to_bytes() const;

 private:
  struct PendingTensor;
  std::vector<std::pair<std::string, Value>> kv_;
  std::vector<std::shared_ptr<PendingTensor>> tensors_;
  uint32_t alignment_ = 32;
};

}  // namespace ds4::gguf
