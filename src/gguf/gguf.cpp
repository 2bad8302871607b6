// GGUF v3: validating mmap reader and streaming writer.
//
// The reader trusts nothing in the file: every length, count, offset and size is checked
// against the bytes that remain before it is used, so a corrupt or hostile file yields an
// Error and never an out-of-bounds read or an unbounded allocation.
#include "gguf/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <set>

namespace ds4::gguf {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint32_t kVersion = 3;
constexpr uint32_t kDefaultAlignment = 32;

static_assert(std::endian::native == std::endian::little,
              "GGUF is little-endian; this reader copies fields without swapping");

std::string errno_text() { return std::strerror(errno); }

bool is_pow2(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

// Returns false on overflow.
bool align_up(uint64_t v, uint64_t a, uint64_t* out) {
  const uint64_t rem = v % a;
  if (rem == 0) {
    *out = v;
    return true;
  }
  if (v > std::numeric_limits<uint64_t>::max() - (a - rem)) return false;
  *out = v + (a - rem);
  return true;
}

bool known_value_type(uint32_t t) { return t <= static_cast<uint32_t>(ValueType::FLOAT64); }

// Bytes a scalar of this type occupies; 0 for STRING/ARRAY.
uint64_t scalar_size(ValueType t) {
  switch (t) {
    case ValueType::UINT8:
    case ValueType::INT8:
    case ValueType::BOOL:
      return 1;
    case ValueType::UINT16:
    case ValueType::INT16:
      return 2;
    case ValueType::UINT32:
    case ValueType::INT32:
    case ValueType::FLOAT32:
      return 4;
    case ValueType::UINT64:
    case ValueType::INT64:
    case ValueType::FLOAT64:
      return 8;
    case ValueType::STRING:
    case ValueType::ARRAY:
      return 0;
  }
  return 0;
}

// Smallest encoding of one array element: used to reject counts the file cannot hold
// before anything is allocated.
uint64_t min_encoded_size(ValueType t) {
  if (t == ValueType::STRING) return 8;       // length prefix
  if (t == ValueType::ARRAY) return 4 + 8;    // element type + count
  return scalar_size(t);
}

// FLOAT32 values live in a double. Hardware conversion would quieten signalling NaNs, so
// NaNs are moved bit by bit (payload in the top mantissa bits) to keep round trips exact.
double f32_bits_to_double(uint32_t bits) {
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0) {
    const uint64_t d = (uint64_t{bits >> 31} << 63) | (uint64_t{0x7ff} << 52) |
                       (uint64_t{bits & 0x007fffffu} << 29);
    return std::bit_cast<double>(d);
  }
  return static_cast<double>(std::bit_cast<float>(bits));
}

}  // namespace

uint32_t double_to_f32_bits(double v) {
  const uint64_t d = std::bit_cast<uint64_t>(v);
  if ((d & 0x7ff0000000000000ull) == 0x7ff0000000000000ull && (d & 0x000fffffffffffffull) != 0) {
    uint32_t mant = static_cast<uint32_t>((d >> 29) & 0x007fffffu);
    if (mant == 0) mant = 0x00400000u;  // payload only in the low bits: a quiet NaN
    return (static_cast<uint32_t>(d >> 63) << 31) | 0x7f800000u | mant;
  }
  return std::bit_cast<uint32_t>(static_cast<float>(v));
}

namespace {

std::string quoted(std::string_view s) {
  // Keys and names come from the file; keep messages printable and bounded.
  std::string out = "'";
  const size_t limit = 200;
  for (size_t i = 0; i < s.size() && i < limit; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\'') {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  if (s.size() > limit) out += "...";
  out += "'";
  return out;
}

// Where in the file a read happens, built into text only when an error is reported (the
// tokenizer arrays hold >100k elements; formatting a context for each would dominate).
struct Ctx {
  const Ctx* parent = nullptr;
  std::string_view text;  // used when parent == nullptr
  uint64_t index = 0;     // element index when parent != nullptr
  std::string str() const {
    return parent ? parent->str() + "[" + std::to_string(index) + "]" : std::string(text);
  }
};

// Bounds-checked little-endian cursor over the file image.
class Cursor {
 public:
  Cursor(const uint8_t* base, uint64_t size, const std::string& file)
      : base_(base), size_(size), file_(file) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }

  [[noreturn]] void fail(const std::string& what) const {
    throw Error(file_ + ": " + what + " (at byte " + std::to_string(pos_) + ", file size " +
                std::to_string(size_) + ")");
  }
  [[noreturn]] void fail(const Ctx& c, const std::string& what) const {
    fail(c.str() + ": " + what);
  }

  void need(uint64_t n, const Ctx& c, const char* what) const {
    if (n > remaining()) {
      fail(c, std::string("truncated ") + what + ": needs " + std::to_string(n) + " bytes, " +
                  std::to_string(remaining()) + " left");
    }
  }

  template <typename T>
  T read(const Ctx& c, const char* what = "value") {
    need(sizeof(T), c, what);
    T v;
    std::memcpy(&v, base_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string read_string(const Ctx& c, const char* what = "string") {
    const uint64_t len = read<uint64_t>(c, "string length");
    need(len, c, what);
    std::string s(reinterpret_cast<const char*>(base_ + pos_), static_cast<size_t>(len));
    pos_ += len;
    return s;
  }

 private:
  const uint8_t* base_;
  uint64_t size_;
  uint64_t pos_ = 0;
  const std::string& file_;
};

struct ParseState {
  Cursor& cur;
  uint64_t values = 0;  // array elements read so far (memory bound)
};

// Reserve no more than this up front; a bogus count then costs memory only as far as the
// file really holds elements.
constexpr uint64_t kMaxReserve = 1 << 16;

Value read_value(ParseState& st, ValueType type, const Ctx& ctx, uint32_t depth) {
  Cursor& cur = st.cur;
  Value v;
  v.type = type;
  switch (type) {
    case ValueType::UINT8: v.u = cur.read<uint8_t>(ctx); break;
    case ValueType::UINT16: v.u = cur.read<uint16_t>(ctx); break;
    case ValueType::UINT32: v.u = cur.read<uint32_t>(ctx); break;
    case ValueType::UINT64: v.u = cur.read<uint64_t>(ctx); break;
    case ValueType::INT8: v.i = cur.read<int8_t>(ctx); break;
    case ValueType::INT16: v.i = cur.read<int16_t>(ctx); break;
    case ValueType::INT32: v.i = cur.read<int32_t>(ctx); break;
    case ValueType::INT64: v.i = cur.read<int64_t>(ctx); break;
    case ValueType::FLOAT32: v.f = f32_bits_to_double(cur.read<uint32_t>(ctx)); break;
    case ValueType::FLOAT64: v.f = cur.read<double>(ctx); break;
    case ValueType::BOOL: {
      const uint8_t b = cur.read<uint8_t>(ctx);
      if (b > 1) cur.fail(ctx, "bool value " + std::to_string(b) + " is neither 0 nor 1");
      v.u = b;
      break;
    }
    case ValueType::STRING: v.s = cur.read_string(ctx); break;
    case ValueType::ARRAY: {
      if (depth >= kMaxArrayDepth) {
        cur.fail(ctx, "arrays nested deeper than " + std::to_string(kMaxArrayDepth));
      }
      const uint32_t et = cur.read<uint32_t>(ctx, "array element type");
      if (!known_value_type(et)) cur.fail(ctx, "unknown array element type " + std::to_string(et));
      v.elem_type = static_cast<ValueType>(et);
      const uint64_t count = cur.read<uint64_t>(ctx, "array count");
      const uint64_t min_size = min_encoded_size(v.elem_type);
      if (count > cur.remaining() / min_size) {
        cur.fail(ctx, "array of " + std::to_string(count) + " " +
                          std::string(value_type_name(v.elem_type)) +
                          " elements cannot fit in the " + std::to_string(cur.remaining()) +
                          " bytes left");
      }
      if (count > kMaxMetadataValues - st.values) {
        cur.fail(ctx, "more than " + std::to_string(kMaxMetadataValues) +
                          " metadata array elements in total");
      }
      st.values += count;
      v.array.reserve(static_cast<size_t>(std::min(count, kMaxReserve)));
      for (uint64_t k = 0; k < count; ++k) {
        const Ctx elem{&ctx, {}, k};
        v.array.push_back(read_value(st, v.elem_type, elem, depth + 1));
      }
      break;
    }
  }
  return v;
}

}  // namespace

// ---- Value ----------------------------------------------------------------------------

std::string_view value_type_name(ValueType t) {
  switch (t) {
    case ValueType::UINT8: return "u8";
    case ValueType::INT8: return "i8";
    case ValueType::UINT16: return "u16";
    case ValueType::INT16: return "i16";
    case ValueType::UINT32: return "u32";
    case ValueType::INT32: return "i32";
    case ValueType::FLOAT32: return "f32";
    case ValueType::BOOL: return "bool";
    case ValueType::STRING: return "string";
    case ValueType::ARRAY: return "array";
    case ValueType::UINT64: return "u64";
    case ValueType::INT64: return "i64";
    case ValueType::FLOAT64: return "f64";
  }
  return "unknown";
}

namespace {
Value make_unsigned(ValueType t, uint64_t u) {
  Value v;
  v.type = t;
  v.u = u;
  return v;
}
Value make_signed(ValueType t, int64_t i) {
  Value v;
  v.type = t;
  v.i = i;
  return v;
}
Value make_floating(ValueType t, double f) {
  Value v;
  v.type = t;
  v.f = f;
  return v;
}
}  // namespace

Value Value::make_u8(uint8_t v) { return make_unsigned(ValueType::UINT8, v); }
Value Value::make_u16(uint16_t v) { return make_unsigned(ValueType::UINT16, v); }
Value Value::make_u32(uint32_t v) { return make_unsigned(ValueType::UINT32, v); }
Value Value::make_u64(uint64_t v) { return make_unsigned(ValueType::UINT64, v); }
Value Value::make_i8(int8_t v) { return make_signed(ValueType::INT8, v); }
Value Value::make_i16(int16_t v) { return make_signed(ValueType::INT16, v); }
Value Value::make_i32(int32_t v) { return make_signed(ValueType::INT32, v); }
Value Value::make_i64(int64_t v) { return make_signed(ValueType::INT64, v); }
Value Value::make_f32(float v) {
  return make_floating(ValueType::FLOAT32, f32_bits_to_double(std::bit_cast<uint32_t>(v)));
}
Value Value::make_f64(double v) { return make_floating(ValueType::FLOAT64, v); }
Value Value::make_bool(bool v) { return make_unsigned(ValueType::BOOL, v ? 1 : 0); }

Value Value::make_string(std::string v) {
  Value out;
  out.type = ValueType::STRING;
  out.s = std::move(v);
  return out;
}

Value Value::make_array(ValueType elem, std::vector<Value> elems) {
  Value out;
  out.type = ValueType::ARRAY;
  out.elem_type = elem;
  out.array = std::move(elems);
  return out;
}

Value Value::make_string_array(const std::vector<std::string>& v) {
  std::vector<Value> e;
  e.reserve(v.size());
  for (const auto& s : v) e.push_back(make_string(s));
  return make_array(ValueType::STRING, std::move(e));
}

Value Value::make_u32_array(const std::vector<uint32_t>& v) {
  std::vector<Value> e;
  e.reserve(v.size());
  for (uint32_t x : v) e.push_back(make_u32(x));
  return make_array(ValueType::UINT32, std::move(e));
}

Value Value::make_i32_array(const std::vector<int32_t>& v) {
  std::vector<Value> e;
  e.reserve(v.size());
  for (int32_t x : v) e.push_back(make_i32(x));
  return make_array(ValueType::INT32, std::move(e));
}

Value Value::make_f32_array(const std::vector<float>& v) {
  std::vector<Value> e;
  e.reserve(v.size());
  for (float x : v) e.push_back(make_f32(x));
  return make_array(ValueType::FLOAT32, std::move(e));
}

bool Value::is_integer() const {
  switch (type) {
    case ValueType::UINT8:
    case ValueType::UINT16:
    case ValueType::UINT32:
    case ValueType::UINT64:
    case ValueType::INT8:
    case ValueType::INT16:
    case ValueType::INT32:
    case ValueType::INT64:
      return true;
    default:
      return false;
  }
}

bool Value::is_float() const { return type == ValueType::FLOAT32 || type == ValueType::FLOAT64; }

namespace {
bool is_unsigned_type(ValueType t) {
  return t == ValueType::UINT8 || t == ValueType::UINT16 || t == ValueType::UINT32 ||
         t == ValueType::UINT64;
}
}  // namespace

std::optional<int64_t> Value::as_int() const {
  if (!is_integer()) return std::nullopt;
  if (is_unsigned_type(type)) {
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    return static_cast<int64_t>(u);
  }
  return i;
}

std::optional<uint64_t> Value::as_uint() const {
  if (!is_integer()) return std::nullopt;
  if (is_unsigned_type(type)) return u;
  if (i < 0) return std::nullopt;
  return static_cast<uint64_t>(i);
}

std::optional<double> Value::as_number() const {
  if (is_float()) return f;
  if (!is_integer()) return std::nullopt;
  if (is_unsigned_type(type)) return static_cast<double>(u);
  return static_cast<double>(i);
}

bool Value::operator==(const Value& o) const {
  if (type != o.type) return false;
  switch (type) {
    case ValueType::FLOAT32: {
      // Bitwise, so that NaNs and signed zeros round-trip as "equal" only when identical.
      return double_to_f32_bits(f) == double_to_f32_bits(o.f);
    }
    case ValueType::FLOAT64:
      return std::memcmp(&f, &o.f, sizeof f) == 0;
    case ValueType::STRING:
      return s == o.s;
    case ValueType::ARRAY:
      return elem_type == o.elem_type && array == o.array;
    default:
      return is_unsigned_type(type) || type == ValueType::BOOL ? u == o.u : i == o.i;
  }
}

// ---- TensorInfo -----------------------------------------------------------------------

uint64_t TensorInfo::n_elements() const {
  uint64_t n = 1;
  for (uint64_t d : dims) n *= d;  // validated at load / add time not to overflow
  return n;
}

uint64_t TensorInfo::row_bytes() const { return quant::row_bytes(type, ne(0)).value_or(0); }

namespace {

// Validates a tensor's shape and type and returns its byte size. `fail` receives the
// reason; it must throw.
template <typename Fail>
uint64_t tensor_nbytes(uint32_t type_id, const std::vector<uint64_t>& dims, Fail&& fail) {
  const auto info = quant::type_info(type_id);
  if (!info) fail("unknown type id " + std::to_string(type_id));
  if (dims.empty() || dims.size() > kMaxDims) {
    fail(std::to_string(dims.size()) + " dimensions (must be 1.." + std::to_string(kMaxDims) +
         ")");
  }
  // ggml stores ne as int64, so every extent and the element count must fit in one.
  constexpr uint64_t kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  uint64_t elems = 1;
  for (size_t k = 0; k < dims.size(); ++k) {
    if (dims[k] > kMax) fail("dimension " + std::to_string(k) + " is " +
                             std::to_string(dims[k]) + ", beyond int64");
    if (dims[k] != 0 && elems > kMax / dims[k]) fail("element count overflows int64");
    elems *= dims[k];
  }
  if (dims[0] % info->block_elems != 0) {
    fail("ne0 = " + std::to_string(dims[0]) + " is not a multiple of the " +
         std::string(info->name) + " block size " + std::to_string(info->block_elems));
  }
  const auto row = quant::row_bytes(static_cast<quant::Type>(type_id), dims[0]);
  if (!row) fail("row size overflows");
  uint64_t bytes = *row;
  for (size_t k = 1; k < dims.size(); ++k) {
    if (dims[k] != 0 && bytes > std::numeric_limits<uint64_t>::max() / dims[k]) {
      fail("byte size overflows");
    }
    bytes *= dims[k];
  }
  return bytes;
}

std::string dims_text(const std::vector<uint64_t>& dims) {
  std::string s = "[";
  for (size_t k = 0; k < dims.size(); ++k) {
    if (k) s += ", ";
    s += std::to_string(dims[k]);
  }
  return s + "]";
}

}  // namespace

// ---- File -----------------------------------------------------------------------------

std::unique_ptr<File> File::open(const std::string& path) {
  std::unique_ptr<File> f(new File());
  f->path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path + ": cannot open: " + errno_text());
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const std::string e = errno_text();
    ::close(fd);
    throw Error(path + ": cannot stat: " + e);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path + ": not a regular file");
  }
  f->size_ = static_cast<uint64_t>(st.st_size);
  if (f->size_ == 0) {
    ::close(fd);
    throw Error(path + ": empty file, not a GGUF");
  }
  void* p = ::mmap(nullptr, static_cast<size_t>(f->size_), PROT_READ, MAP_PRIVATE, fd, 0);
  const std::string map_err = p == MAP_FAILED ? errno_text() : "";
  ::close(fd);  // the mapping keeps the file alive
  if (p == MAP_FAILED) throw Error(path + ": mmap failed: " + map_err);
  f->base_ = static_cast<const uint8_t*>(p);
  f->mapped_ = true;
  f->parse();  // on throw, ~File unmaps
  return f;
}

std::unique_ptr<File> File::from_memory(const void* data, size_t size, std::string name) {
  std::unique_ptr<File> f(new File());
  f->path_ = std::move(name);
  if (size > 0) {
    f->owned_.assign(static_cast<const uint8_t*>(data), static_cast<const uint8_t*>(data) + size);
  }
  f->base_ = f->owned_.data();
  f->size_ = size;
  f->parse();
  return f;
}

void File::rewrite_in_memory(const uint8_t* p, uint64_t n, const std::function<void(uint8_t*, uint64_t)>& fn) {
  if (n == 0) return;
  if (p < base_ || n > size_ || static_cast<uint64_t>(p - base_) > size_ - n)
    throw Error(path_ + ": rewrite_in_memory: range outside the file image");
  auto* q = const_cast<uint8_t*>(p);
  if (!mapped_) {  // from_memory: the image is our own vector
    fn(q, n);
    return;
  }
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t lo = reinterpret_cast<uintptr_t>(q) & ~(page - 1);
  const uintptr_t hi = (reinterpret_cast<uintptr_t>(q) + n + page - 1) & ~(page - 1);
  void* start = reinterpret_cast<void*>(lo);
  if (::mprotect(start, hi - lo, PROT_READ | PROT_WRITE) != 0)
    throw Error(path_ + ": cannot make tensor pages writable: " + errno_text());
  fn(q, n);
  // Read-only again, as the rest of the mapping (a stray write must still fault).
  ::mprotect(start, hi - lo, PROT_READ);
}

File::~File() {
  if (mapped_ && base_) ::munmap(const_cast<uint8_t*>(base_), static_cast<size_t>(size_));
}

void File::parse() {
  try {
    parse_image();
  } catch (const std::bad_alloc&) {
    throw Error(path_ + ": out of memory while reading the GGUF directory");
  }
}

void File::parse_image() {
  Cursor cur(base_, size_, path_);
  ParseState st{cur};
  const Ctx header{nullptr, "header"};

  if (size_ < 4) cur.fail("file too small to be a GGUF");
  const uint32_t magic = cur.read<uint32_t>(header, "magic");
  if (magic != kMagic) cur.fail("bad magic, not a GGUF file");
  version_ = cur.read<uint32_t>(header, "version");
  if (version_ == 1 || version_ == 2) {
    cur.fail("GGUF version " + std::to_string(version_) +
             " is not supported (only version 3; re-convert the model)");
  }
  if (version_ != kVersion) cur.fail("unknown GGUF version " + std::to_string(version_));
  const uint64_t n_tensors = cur.read<uint64_t>(header, "tensor count");
  const uint64_t n_kv = cur.read<uint64_t>(header, "metadata count");

  // A key needs at least its length, its type and one byte of value.
  if (n_kv > cur.remaining() / (8 + 4 + 1)) {
    cur.fail("metadata count " + std::to_string(n_kv) + " cannot fit in the file");
  }
  kv_.reserve(static_cast<size_t>(std::min(n_kv, kMaxReserve)));
  for (uint64_t k = 0; k < n_kv; ++k) {
    const std::string key_ctx = "metadata key " + std::to_string(k);
    std::string key = cur.read_string(Ctx{nullptr, key_ctx}, "key");
    const std::string ctx_text = "key " + quoted(key);
    const Ctx ctx{nullptr, ctx_text};
    if (kv_index_.count(key)) cur.fail("duplicate metadata " + ctx_text);
    const uint32_t t = cur.read<uint32_t>(ctx, "value type");
    if (!known_value_type(t)) cur.fail(ctx, "unknown value type " + std::to_string(t));
    Value v = read_value(st, static_cast<ValueType>(t), ctx, 0);
    kv_index_.emplace(key, kv_.size());
    kv_.emplace_back(std::move(key), std::move(v));
  }

  if (const Value* a = find("general.alignment")) {
    const auto av = a->as_uint();
    if (!av || !is_pow2(*av) || *av > std::numeric_limits<uint32_t>::max()) {
      throw Error(path_ + ": key 'general.alignment' must be a nonzero power of two that fits "
                  "u32 (got " +
                  (av ? std::to_string(*av) : std::string(value_type_name(a->type))) + ")");
    }
    alignment_ = static_cast<uint32_t>(*av);
  } else {
    alignment_ = kDefaultAlignment;
  }

  // name length + n_dims + one dim + type + offset.
  if (n_tensors > cur.remaining() / (8 + 4 + 8 + 4 + 8)) {
    cur.fail("tensor count " + std::to_string(n_tensors) + " cannot fit in the file");
  }
  tensors_.reserve(static_cast<size_t>(std::min(n_tensors, kMaxReserve)));
  for (uint64_t k = 0; k < n_tensors; ++k) {
    TensorInfo t;
    const std::string name_ctx = "tensor " + std::to_string(k);
    t.name = cur.read_string(Ctx{nullptr, name_ctx}, "name");
    const std::string ctx_text = "tensor " + quoted(t.name);
    const Ctx ctx{nullptr, ctx_text};
    if (tensor_index_.count(t.name)) cur.fail("duplicate " + ctx_text);
    const uint32_t n_dims = cur.read<uint32_t>(ctx, "n_dims");
    if (n_dims == 0 || n_dims > kMaxDims) {
      cur.fail(ctx, std::to_string(n_dims) + " dimensions (must be 1.." +
                        std::to_string(kMaxDims) + ")");
    }
    t.dims.resize(n_dims);
    for (uint32_t d = 0; d < n_dims; ++d) t.dims[d] = cur.read<uint64_t>(ctx, "dimension");
    const uint32_t type_id = cur.read<uint32_t>(ctx, "type");
    t.nbytes = tensor_nbytes(type_id, t.dims, [&](const std::string& why) {
      cur.fail(ctx_text + " " + dims_text(t.dims) + ": " + why);
    });
    t.type = static_cast<quant::Type>(type_id);
    t.offset = cur.read<uint64_t>(ctx, "offset");
    if (t.offset % alignment_ != 0) {
      cur.fail(ctx, "data offset " + std::to_string(t.offset) +
                        " is not a multiple of the alignment " + std::to_string(alignment_));
    }
    tensor_index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
  }

  if (!align_up(cur.pos(), alignment_, &data_offset_)) cur.fail("data offset overflows");

  for (TensorInfo& t : tensors_) {
    const uint64_t max = std::numeric_limits<uint64_t>::max();
    const bool fits = t.offset <= max - data_offset_ &&
                      t.nbytes <= max - (data_offset_ + t.offset) &&
                      data_offset_ + t.offset + t.nbytes <= size_;
    if (!fits) {
      const uint64_t begin = data_offset_ + std::min(t.offset, max - data_offset_);
      throw Error(path_ + ": tensor " + quoted(t.name) + ": data [" + std::to_string(begin) +
                  ", " + std::to_string(begin) + "+" + std::to_string(t.nbytes) +
                  ") beyond end of file (size " + std::to_string(size_) + ")");
    }
    t.data = base_ + data_offset_ + t.offset;
  }

  // Tensors must not share bytes: a writer never produces that, and a reader that allowed it
  // would let one tensor silently alias another.
  std::vector<const TensorInfo*> by_offset;
  by_offset.reserve(tensors_.size());
  for (const TensorInfo& t : tensors_) {
    if (t.nbytes) by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
  for (size_t k = 1; k < by_offset.size(); ++k) {
    const TensorInfo& a = *by_offset[k - 1];
    const TensorInfo& b = *by_offset[k];
    if (a.offset + a.nbytes > b.offset) {
      throw Error(path_ + ": tensor " + quoted(b.name) + " at data offset " +
                  std::to_string(b.offset) + " overlaps tensor " + quoted(a.name) + " [" +
                  std::to_string(a.offset) + ", " + std::to_string(a.offset + a.nbytes) + ")");
    }
  }
}

const Value* File::find(std::string_view key) const {
  const auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

namespace {
[[noreturn]] void wrong_type(const std::string& file, std::string_view key, const Value& v,
                             const char* expected) {
  throw Error(file + ": key " + quoted(key) + " has type " +
              std::string(value_type_name(v.type)) + ", expected " + expected);
}
}  // namespace

const Value& File::require(std::string_view key) const {
  const Value* v = find(key);
  if (!v) throw Error(path_ + ": missing required key " + quoted(key));
  return *v;
}

uint64_t File::get_uint_or(std::string_view key, uint64_t def) const {
  const Value* v = find(key);
  if (!v) return def;
  if (!v->is_integer()) wrong_type(path_, key, *v, "an unsigned integer");
  const auto u = v->as_uint();
  if (!u) {
    throw Error(path_ + ": key " + quoted(key) + " is negative (" + std::to_string(v->i) +
                "), expected an unsigned integer");
  }
  return *u;
}

int64_t File::get_int_or(std::string_view key, int64_t def) const {
  const Value* v = find(key);
  if (!v) return def;
  if (!v->is_integer()) wrong_type(path_, key, *v, "an integer");
  const auto i = v->as_int();
  if (!i) {
    throw Error(path_ + ": key " + quoted(key) + " value " + std::to_string(v->u) +
                " does not fit int64");
  }
  return *i;
}

double File::get_float_or(std::string_view key, double def) const {
  const Value* v = find(key);
  if (!v) return def;
  const auto d = v->as_number();
  if (!d) wrong_type(path_, key, *v, "a number");
  return *d;
}

bool File::get_bool_or(std::string_view key, bool def) const {
  const Value* v = find(key);
  if (!v) return def;
  if (v->type != ValueType::BOOL) wrong_type(path_, key, *v, "bool");
  return v->u != 0;
}

std::string File::get_string_or(std::string_view key, std::string def) const {
  const Value* v = find(key);
  if (!v) return def;
  if (v->type != ValueType::STRING) wrong_type(path_, key, *v, "string");
  return v->s;
}

uint64_t File::require_uint(std::string_view key) const {
  require(key);
  return get_uint_or(key, 0);
}

double File::require_float(std::string_view key) const {
  require(key);
  return get_float_or(key, 0.0);
}

std::string File::require_string(std::string_view key) const {
  require(key);
  return get_string_or(key, {});
}

namespace {
const Value& require_array(const File& f, std::string_view key) {
  const Value& v = f.require(key);
  if (v.type != ValueType::ARRAY) wrong_type(f.path(), key, v, "an array");
  return v;
}
[[noreturn]] void bad_element(const File& f, std::string_view key, size_t k, const Value& e,
                              const char* expected) {
  throw Error(f.path() + ": key " + quoted(key) + " element " + std::to_string(k) +
              " has type " + std::string(value_type_name(e.type)) + ", expected " + expected);
}
}  // namespace

std::vector<int64_t> File::get_int_array(std::string_view key) const {
  const Value& v = require_array(*this, key);
  std::vector<int64_t> out;
  out.reserve(v.array.size());
  for (size_t k = 0; k < v.array.size(); ++k) {
    const Value& e = v.array[k];
    if (const auto i = e.as_int()) {
      out.push_back(*i);
    } else if (e.is_float() && std::nearbyint(e.f) == e.f && e.f >= -0x1p63 && e.f < 0x1p63) {
      // Integral floats are accepted: some converters store integer lists as floats.
      out.push_back(static_cast<int64_t>(e.f));
    } else {
      bad_element(*this, key, k, e, "an integer (fitting int64)");
    }
  }
  return out;
}

std::vector<double> File::get_float_array(std::string_view key) const {
  const Value& v = require_array(*this, key);
  std::vector<double> out;
  out.reserve(v.array.size());
  for (size_t k = 0; k < v.array.size(); ++k) {
    const auto d = v.array[k].as_number();
    if (!d) bad_element(*this, key, k, v.array[k], "a number");
    out.push_back(*d);
  }
  return out;
}

std::vector<std::string> File::get_string_array(std::string_view key) const {
  const Value& v = require_array(*this, key);
  std::vector<std::string> out;
  out.reserve(v.array.size());
  for (size_t k = 0; k < v.array.size(); ++k) {
    if (v.array[k].type != ValueType::STRING) bad_element(*this, key, k, v.array[k], "string");
    out.push_back(v.array[k].s);
  }
  return out;
}

const TensorInfo* File::find_tensor(std::string_view name) const {
  const auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& File::require_tensor(std::string_view name) const {
  const TensorInfo* t = find_tensor(name);
  if (!t) throw Error(path_ + ": missing tensor " + quoted(name));
  return *t;
}

// ---- Writer ---------------------------------------------------------------------------

struct Writer::PendingTensor {
  std::string name;
  quant::Type type;
  std::vector<uint64_t> dims;
  uint64_t nbytes = 0;
  std::vector<uint8_t> data;  // when not lazy
  Producer produce;           // when lazy
  bool zeros = false;         // add_tensor_zeros: a hole in the file
};

namespace {

// Where serialised bytes go: a vector (to_bytes) or a file descriptor (write).
class Sink {
 public:
  virtual ~Sink() = default;
  virtual void put(const void* p, size_t n) = 0;
  // n zero bytes that need not be stored (a file sink leaves a hole).
  virtual void skip(uint64_t n) { zeros(n); }
  void zeros(uint64_t n) {
    static const uint8_t kZero[64] = {};
    while (n) {
      const size_t k = static_cast<size_t>(std::min<uint64_t>(n, sizeof kZero));
      put(kZero, k);
      n -= k;
    }
  }
  template <typename T>
  void pod(T v) {
    put(&v, sizeof v);
  }
  void str(const std::string& s) {
    pod<uint64_t>(s.size());
    put(s.data(), s.size());
  }
};

class VectorSink final : public Sink {
 public:
  explicit VectorSink(std::vector<uint8_t>& out) : out_(out) {}
  void put(const void* p, size_t n) override {
    const auto* b = static_cast<const uint8_t*>(p);
    out_.insert(out_.end(), b, b + n);
  }

 private:
  std::vector<uint8_t>& out_;
};

// Buffers small writes (headers, metadata) and passes large ones straight through.
class FdSink final : public Sink {
 public:
  FdSink(int fd, const std::string& path) : fd_(fd), path_(path) { buf_.reserve(kBuf); }
  void put(const void* p, size_t n) override {
    if (buf_.size() + n > kBuf) flush();
    if (n >= kBuf) {
      write_all(static_cast<const uint8_t*>(p), n);
      return;
    }
    const auto* b = static_cast<const uint8_t*>(p);
    buf_.insert(buf_.end(), b, b + n);
  }
  void flush() {
    if (!buf_.empty()) write_all(buf_.data(), buf_.size());
    buf_.clear();
  }
  void skip(uint64_t n) override {
    flush();
    if (::lseek(fd_, static_cast<off_t>(n), SEEK_CUR) < 0) throw Error(path_ + ": seek failed: " + errno_text());
  }
  // After the last byte: a file ending in a hole gets its size.
  void finish() {
    flush();
    const off_t end = ::lseek(fd_, 0, SEEK_CUR);
    if (end < 0 || ::ftruncate(fd_, end) != 0) throw Error(path_ + ": cannot set the file size: " + errno_text());
  }

 private:
  static constexpr size_t kBuf = 1 << 20;
  void write_all(const uint8_t* p, size_t n) {
    while (n) {
      const ssize_t w = ::write(fd_, p, std::min<size_t>(n, size_t{1} << 30));
      if (w < 0) {
        if (errno == EINTR) continue;
        throw Error(path_ + ": write failed: " + errno_text());
      }
      p += w;
      n -= static_cast<size_t>(w);
    }
  }
  int fd_;
  const std::string& path_;
  std::vector<uint8_t> buf_;
};

void check_value(const std::string& ctx, const Value& v, uint32_t depth) {
  if (!known_value_type(static_cast<uint32_t>(v.type))) {
    throw Error(ctx + ": unknown value type " + std::to_string(static_cast<uint32_t>(v.type)));
  }
  // A hand-filled Value may hold more than its stored width; refuse rather than truncate.
  const uint64_t width = scalar_size(v.type);
  const bool out_of_range =
      v.type == ValueType::BOOL ? v.u > 1
      : is_unsigned_type(v.type) ? width < 8 && v.u >> (8 * width) != 0
      : v.is_integer() ? width < 8 && (v.i < -(int64_t{1} << (8 * width - 1)) ||
                                       v.i >= (int64_t{1} << (8 * width - 1)))
                       : false;
  if (out_of_range) {
    throw Error(ctx + ": value does not fit its type " + std::string(value_type_name(v.type)));
  }
  if (v.type != ValueType::ARRAY) return;
  if (depth >= kMaxArrayDepth) {
    throw Error(ctx + ": arrays nested deeper than " + std::to_string(kMaxArrayDepth));
  }
  if (!known_value_type(static_cast<uint32_t>(v.elem_type))) {
    throw Error(ctx + ": unknown array element type " +
                std::to_string(static_cast<uint32_t>(v.elem_type)));
  }
  for (size_t k = 0; k < v.array.size(); ++k) {
    const std::string ectx = ctx + "[" + std::to_string(k) + "]";
    if (v.array[k].type != v.elem_type) {
      throw Error(ectx + " has type " + std::string(value_type_name(v.array[k].type)) +
                  " in an array of " + std::string(value_type_name(v.elem_type)));
    }
    check_value(ectx, v.array[k], depth + 1);
  }
}

void put_value(Sink& s, const Value& v) {
  switch (v.type) {
    case ValueType::UINT8: s.pod<uint8_t>(static_cast<uint8_t>(v.u)); break;
    case ValueType::UINT16: s.pod<uint16_t>(static_cast<uint16_t>(v.u)); break;
    case ValueType::UINT32: s.pod<uint32_t>(static_cast<uint32_t>(v.u)); break;
    case ValueType::UINT64: s.pod<uint64_t>(v.u); break;
    case ValueType::INT8: s.pod<int8_t>(static_cast<int8_t>(v.i)); break;
    case ValueType::INT16: s.pod<int16_t>(static_cast<int16_t>(v.i)); break;
    case ValueType::INT32: s.pod<int32_t>(static_cast<int32_t>(v.i)); break;
    case ValueType::INT64: s.pod<int64_t>(v.i); break;
    case ValueType::FLOAT32: s.pod<uint32_t>(double_to_f32_bits(v.f)); break;
    case ValueType::FLOAT64: s.pod<double>(v.f); break;
    case ValueType::BOOL: s.pod<uint8_t>(v.u ? 1 : 0); break;
    case ValueType::STRING: s.str(v.s); break;
    case ValueType::ARRAY:
      s.pod<uint32_t>(static_cast<uint32_t>(v.elem_type));
      s.pod<uint64_t>(v.array.size());
      for (const Value& e : v.array) put_value(s, e);
      break;
  }
}

}  // namespace

Writer::Writer() = default;

void Writer::set(std::string key, Value v) {
  const std::string ctx = "gguf writer: key " + quoted(key);
  check_value(ctx, v, 0);
  if (key == "general.alignment") {
    const auto a = v.as_uint();
    if (!a || !is_pow2(*a) || *a > std::numeric_limits<uint32_t>::max()) {
      throw Error(ctx + ": alignment must be a nonzero power of two that fits u32");
    }
    alignment_ = static_cast<uint32_t>(*a);
  }
  for (auto& kv : kv_) {
    if (kv.first == key) {
      kv.second = std::move(v);
      return;
    }
  }
  kv_.emplace_back(std::move(key), std::move(v));
}

void Writer::set_alignment(uint32_t a) { set("general.alignment", Value::make_u32(a)); }

namespace {
uint64_t checked_tensor_bytes(const std::string& name, quant::Type type,
                              const std::vector<uint64_t>& dims) {
  return tensor_nbytes(static_cast<uint32_t>(type), dims, [&](const std::string& why) {
    throw Error("gguf writer: tensor " + quoted(name) + " " + dims_text(dims) + ": " + why);
  });
}
}  // namespace

void Writer::add_tensor(std::string name, quant::Type type, std::vector<uint64_t> dims,
                        std::vector<uint8_t> data) {
  auto t = std::make_shared<PendingTensor>();
  t->nbytes = checked_tensor_bytes(name, type, dims);
  if (data.size() != t->nbytes) {
    throw Error("gguf writer: tensor " + quoted(name) + ": " + std::to_string(data.size()) +
                " data bytes given, " + std::to_string(t->nbytes) + " expected");
  }
  for (const auto& o : tensors_) {
    if (o->name == name) throw Error("gguf writer: duplicate tensor " + quoted(name));
  }
  t->name = std::move(name);
  t->type = type;
  t->dims = std::move(dims);
  t->data = std::move(data);
  tensors_.push_back(std::move(t));
}

void Writer::add_tensor_lazy(std::string name, quant::Type type, std::vector<uint64_t> dims,
                             Producer produce) {
  auto t = std::make_shared<PendingTensor>();
  t->nbytes = checked_tensor_bytes(name, type, dims);
  if (!produce) throw Error("gguf writer: tensor " + quoted(name) + ": no producer");
  for (const auto& o : tensors_) {
    if (o->name == name) throw Error("gguf writer: duplicate tensor " + quoted(name));
  }
  t->name = std::move(name);
  t->type = type;
  t->dims = std::move(dims);
  t->produce = std::move(produce);
  tensors_.push_back(std::move(t));
}

void Writer::add_tensor_zeros(std::string name, quant::Type type, std::vector<uint64_t> dims) {
  add_tensor_lazy(std::move(name), type, std::move(dims), [](uint8_t*, uint64_t) {});
  tensors_.back()->zeros = true;
}

// Serialisation shared by write() and to_bytes(); reaches PendingTensor through the class.
namespace {
template <typename Tensor>
void serialise_impl(Sink& s, const std::vector<std::pair<std::string, Value>>& kv,
                    const std::vector<std::shared_ptr<Tensor>>& tensors, uint32_t alignment) {
  uint64_t pos = 0;
  auto put = [&](const void* p, size_t n) {
    s.put(p, n);
    pos += n;
  };
  auto pod32 = [&](uint32_t v) { put(&v, 4); };
  auto pod64 = [&](uint64_t v) { put(&v, 8); };
  auto str = [&](const std::string& x) {
    pod64(x.size());
    put(x.data(), x.size());
  };

  pod32(kMagic);
  pod32(kVersion);
  pod64(tensors.size());
  pod64(kv.size());
  for (const auto& [key, value] : kv) {
    str(key);
    pod32(static_cast<uint32_t>(value.type));
    std::vector<uint8_t> tmp;
    VectorSink vs(tmp);
    put_value(vs, value);
    put(tmp.data(), tmp.size());
  }
  uint64_t data_pos = 0;
  std::vector<uint64_t> offsets;
  offsets.reserve(tensors.size());
  for (const auto& t : tensors) {
    str(t->name);
    pod32(static_cast<uint32_t>(t->dims.size()));
    for (uint64_t d : t->dims) pod64(d);
    pod32(static_cast<uint32_t>(t->type));
    pod64(data_pos);
    offsets.push_back(data_pos);
    uint64_t next = 0;
    if (t->nbytes > std::numeric_limits<uint64_t>::max() - data_pos ||
        !align_up(data_pos + t->nbytes, alignment, &next)) {
      throw Error("gguf writer: tensor data exceeds the 64-bit offset range");
    }
    data_pos = next;
  }
  uint64_t aligned = 0;
  align_up(pos, alignment, &aligned);
  s.zeros(aligned - pos);
  pos = aligned;

  std::vector<uint8_t> buffer;  // reused by every lazy tensor
  for (size_t k = 0; k < tensors.size(); ++k) {
    const auto& t = *tensors[k];
    if (t.zeros) {
      s.skip(t.nbytes);
      pos += t.nbytes;
    } else if (t.produce) {
      buffer.resize(static_cast<size_t>(t.nbytes));
      // Deterministic output even if a producer leaves bytes untouched.
      std::fill(buffer.begin(), buffer.end(), uint8_t{0});
      t.produce(buffer.data(), t.nbytes);
      put(buffer.data(), buffer.size());
    } else {
      put(t.data.data(), t.data.size());
    }
    const uint64_t end = k + 1 < tensors.size() ? offsets[k + 1] : data_pos;
    const uint64_t pad = end - (offsets[k] + t.nbytes);
    s.zeros(pad);
    pos += pad;
  }
}
}  // namespace

std::vector<uint8_t> Writer::to_bytes() const {
  std::vector<uint8_t> out;
  VectorSink s(out);
  serialise_impl(s, kv_, tensors_, alignment_);
  return out;
}

void Writer::write(const std::string& path) const {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw Error(tmp + ": cannot create: " + errno_text());
  bool open = true;
  try {
    FdSink s(fd, tmp);
    serialise_impl(s, kv_, tensors_, alignment_);
    s.finish();
    if (::fsync(fd) != 0) throw Error(tmp + ": fsync failed: " + errno_text());
    open = false;
    if (::close(fd) != 0) throw Error(tmp + ": close failed: " + errno_text());
  } catch (...) {
    if (open) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string e = errno_text();
    ::unlink(tmp.c_str());
    throw Error(path + ": cannot rename " + tmp + " into place: " + e);
  }
  // Make the rename itself durable.
  const size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace ds4::gguf
