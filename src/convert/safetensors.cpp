#include "convert/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "quant/quant.h"

namespace ds4::convert {

namespace {

struct DtypeRow {
  StDtype type;
  const char* name;
  size_t size;
};
constexpr DtypeRow kDtypes[] = {
    {StDtype::F64, "F64", 8},         {StDtype::F32, "F32", 4},       {StDtype::F16, "F16", 2},
    {StDtype::BF16, "BF16", 2},       {StDtype::F8_E4M3, "F8_E4M3", 1}, {StDtype::F8_E5M2, "F8_E5M2", 1},
    {StDtype::F8_E8M0, "F8_E8M0", 1}, {StDtype::I64, "I64", 8},       {StDtype::I32, "I32", 4},
    {StDtype::I16, "I16", 2},         {StDtype::I8, "I8", 1},         {StDtype::U64, "U64", 8},
    {StDtype::U32, "U32", 4},         {StDtype::U16, "U16", 2},       {StDtype::U8, "U8", 1},
    {StDtype::BOOL, "BOOL", 1},
};

// The header is JSON text; anything near this size is not a real checkpoint header.
constexpr uint64_t kMaxHeaderBytes = 512ull << 20;

bool mul_overflows(uint64_t a, uint64_t b, uint64_t* out) {
  return __builtin_mul_overflow(a, b, out);
}

}  // namespace

std::string_view st_dtype_name(StDtype t) {
  for (const auto& r : kDtypes)
    if (r.type == t) return r.name;
  return "?";
}

size_t st_dtype_size(StDtype t) {
  for (const auto& r : kDtypes)
    if (r.type == t) return r.size;
  return 0;
}

uint64_t StTensor::n_elements() const {
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;
  return n;
}

std::string shape_string(const std::vector<uint64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw ConvertError(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    throw ConvertError(path + ": cannot stat: " + std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw ConvertError(path + ": not a regular file");
  }
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->size_ = static_cast<size_t>(st.st_size);
  if (f->size_ > 0) {
    void* p = mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      throw ConvertError(path + ": mmap failed: " + std::strerror(e));
    }
    f->base_ = static_cast<const uint8_t*>(p);
    f->mapped_ = true;
  }
  ::close(fd);
  f->parse();
  return f;
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::from_memory(const void* data, size_t size,
                                                              std::string name) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = std::move(name);
  f->owned_.assign(static_cast<const uint8_t*>(data), static_cast<const uint8_t*>(data) + size);
  f->base_ = f->owned_.data();
  f->size_ = size;
  f->parse();
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapped_) munmap(const_cast<uint8_t*>(base_), size_);
}

void SafetensorsFile::parse() {
  const std::string& p = path_;
  if (size_ < 8) throw ConvertError(p + ": not a safetensors file (shorter than its 8-byte header length)");
  uint64_t header_len = 0;
  std::memcpy(&header_len, base_, 8);
  if (header_len == 0 || header_len > kMaxHeaderBytes || header_len > size_ - 8)
    throw ConvertError(p + ": bad safetensors header length " + std::to_string(header_len) +
                       " (file is " + std::to_string(size_) + " bytes; truncated or not safetensors)");
  const char* hdr = reinterpret_cast<const char*>(base_ + 8);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(hdr, hdr + header_len);
  } catch (const std::exception& e) {
    throw ConvertError(p + ": safetensors header is not valid JSON: " + e.what());
  }
  if (!j.is_object()) throw ConvertError(p + ": safetensors header is not a JSON object");
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = size_ - data_start;
  struct Range {
    uint64_t begin, end;
    size_t index;
  };
  std::vector<Range> ranges;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const auto& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) throw ConvertError(p + ": __metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m)
        metadata_[m.key()] = m.value().is_string() ? m.value().get<std::string>() : m.value().dump();
      continue;
    }
    const std::string where = p + ": tensor '" + name + "': ";
    if (!v.is_object()) throw ConvertError(where + "entry is not an object");
    auto dt = v.find("dtype");
    auto sh = v.find("shape");
    auto off = v.find("data_offsets");
    if (dt == v.end() || !dt->is_string()) throw ConvertError(where + "missing or non-string dtype");
    if (sh == v.end() || !sh->is_array()) throw ConvertError(where + "missing or non-array shape");
    if (off == v.end() || !off->is_array() || off->size() != 2)
      throw ConvertError(where + "data_offsets must be an array of two integers");
    StTensor t;
    t.name = name;
    bool known = false;
    const std::string dname = dt->get<std::string>();
    for (const auto& r : kDtypes)
      if (dname == r.name) {
        t.dtype = r.type;
        known = true;
      }
    if (!known) throw ConvertError(where + "unsupported dtype " + dname);
    uint64_t n = 1;
    for (const auto& d : *sh) {
      if (!d.is_number_unsigned() && !(d.is_number_integer() && d.get<int64_t>() >= 0))
        throw ConvertError(where + "shape entries must be non-negative integers");
      uint64_t dv = d.get<uint64_t>();
      t.shape.push_back(dv);
      if (mul_overflows(n, dv, &n)) throw ConvertError(where + "shape overflows");
    }
    for (const auto& o : *off)
      if (!o.is_number_unsigned() && !(o.is_number_integer() && o.get<int64_t>() >= 0))
        throw ConvertError(where + "data_offsets must be non-negative integers");
    uint64_t begin = (*off)[0].get<uint64_t>(), end = (*off)[1].get<uint64_t>();
    uint64_t expect = 0;
    if (mul_overflows(n, st_dtype_size(t.dtype), &expect)) throw ConvertError(where + "size overflows");
    if (begin > end || end > data_size)
      throw ConvertError(where + "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                         ") outside the " + std::to_string(data_size) + "-byte data section (truncated file?)");
    if (end - begin != expect)
      throw ConvertError(where + "data_offsets span " + std::to_string(end - begin) + " bytes but " +
                         dname + " " + shape_string(t.shape) + " needs " + std::to_string(expect));
    t.data = base_ + data_start + begin;
    t.nbytes = expect;
    t.file = &path_;
    ranges.push_back({begin, end, tensors_.size()});
    tensors_.push_back(std::move(t));
  }
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) { return a.begin < b.begin; });
  // Empty tensors may share an offset; non-empty ones must not overlap.
  uint64_t covered_end = 0;
  size_t covered_by = 0;
  for (const Range& r : ranges) {
    if (r.begin == r.end) continue;
    if (r.begin < covered_end)
      throw ConvertError(p + ": tensors '" + tensors_[covered_by].name + "' and '" + tensors_[r.index].name +
                         "' overlap");
    covered_end = r.end;
    covered_by = r.index;
  }
}

// ---- Checkpoint ------------------------------------------------------------------------

Checkpoint Checkpoint::open(const std::string& path) {
  namespace fs = std::filesystem;
  Checkpoint ck;
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) {
    ck.files_.push_back(SafetensorsFile::open(path));
    ck.index_files();
    return ck;
  }
  if (!fs::is_directory(path, ec)) throw ConvertError(path + ": no such checkpoint file or directory");
  const fs::path dir(path);
  const fs::path index = dir / "model.safetensors.index.json";
  std::map<std::string, std::string> weight_map;
  if (fs::exists(index, ec)) {
    std::ifstream in(index);
    nlohmann::json j;
    try {
      in >> j;
    } catch (const std::exception& e) {
      throw ConvertError(index.string() + ": not valid JSON: " + e.what());
    }
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
      throw ConvertError(index.string() + ": missing object 'weight_map'");
    std::set<std::string> shards;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it.value().is_string()) throw ConvertError(index.string() + ": weight_map['" + it.key() + "'] is not a string");
      std::string shard = it.value().get<std::string>();
      if (shard.find('/') != std::string::npos || shard == "..")
        throw ConvertError(index.string() + ": shard name '" + shard + "' must be a plain file name");
      weight_map[it.key()] = shard;
      shards.insert(shard);
    }
    if (shards.empty()) throw ConvertError(index.string() + ": weight_map is empty");
    for (const auto& s : shards) ck.files_.push_back(SafetensorsFile::open((dir / s).string()));
  } else {
    std::vector<std::string> paths;
    for (const auto& e : fs::directory_iterator(dir, ec))
      if (e.is_regular_file() && e.path().extension() == ".safetensors") paths.push_back(e.path().string());
    if (ec) throw ConvertError(path + ": cannot list directory: " + ec.message());
    std::sort(paths.begin(), paths.end());
    if (paths.empty()) throw ConvertError(path + ": no *.safetensors files");
    for (const auto& s : paths) ck.files_.push_back(SafetensorsFile::open(s));
  }
  ck.index_files();
  for (const auto& [name, shard] : weight_map) {
    const StTensor* t = ck.find(name);
    if (!t) throw ConvertError(index.string() + ": tensor '" + name + "' is listed in shard " + shard + " but not found in it");
    if (fs::path(*t->file).filename() != shard)
      throw ConvertError(index.string() + ": tensor '" + name + "' is listed in " + shard + " but stored in " + *t->file);
  }
  return ck;
}

Checkpoint Checkpoint::from_files(std::vector<std::unique_ptr<SafetensorsFile>> files) {
  Checkpoint ck;
  ck.files_ = std::move(files);
  ck.index_files();
  return ck;
}

void Checkpoint::index_files() {
  for (const auto& f : files_)
    for (const auto& t : f->tensors()) {
      auto [it, inserted] = by_name_.emplace(t.name, &t);
      if (!inserted)
        throw ConvertError("tensor '" + t.name + "' appears in both " + *it->second->file + " and " + f->path());
    }
}

const StTensor* Checkpoint::find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

const StTensor& Checkpoint::require(std::string_view name) const {
  const StTensor* t = find(name);
  if (!t) throw ConvertError("checkpoint has no tensor '" + std::string(name) + "'");
  return *t;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  for (const auto& [k, v] : by_name_) out.push_back(k);
  return out;
}

// ---- element access ---------------------------------------------------------------------

namespace {

void check_shape(const StTensor& t, const std::vector<uint64_t>& shape) {
  if (t.shape != shape)
    throw ConvertError("tensor '" + t.name + "' has shape " + shape_string(t.shape) + ", expected " +
                       shape_string(shape));
}

template <typename T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

void floats_to_f32(const StTensor& t, uint64_t n, float* out) {
  const uint8_t* p = t.data;
  switch (t.dtype) {
    case StDtype::F32:
      std::memcpy(out, p, n * 4);
      return;
    case StDtype::F64:
      for (uint64_t i = 0; i < n; ++i) out[i] = static_cast<float>(load<double>(p + 8 * i));
      return;
    case StDtype::F16:
      for (uint64_t i = 0; i < n; ++i) out[i] = quant::f16_to_f32(load<uint16_t>(p + 2 * i));
      return;
    case StDtype::BF16:
      for (uint64_t i = 0; i < n; ++i) out[i] = quant::bf16_to_f32(load<uint16_t>(p + 2 * i));
      return;
    default:
      throw ConvertError("tensor '" + t.name + "' has dtype " + std::string(st_dtype_name(t.dtype)) +
                         ", expected a float type");
  }
}

bool is_float_dtype(StDtype d) {
  return d == StDtype::F32 || d == StDtype::F64 || d == StDtype::F16 || d == StDtype::BF16;
}

std::string scale_name_for(const std::string& name) {
  const std::string suffix = ".weight";
  if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
    return name.substr(0, name.size() - suffix.size()) + ".scale";
  return name + ".scale";
}

uint64_t ceil_div(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

}  // namespace

std::vector<float> read_float_tensor(const StTensor& t, const std::vector<uint64_t>& shape) {
  check_shape(t, shape);
  std::vector<float> out(t.n_elements());
  floats_to_f32(t, out.size(), out.data());
  return out;
}

WeightSource resolve_weight(const Checkpoint& ck, const std::string& name, const std::vector<uint64_t>& shape) {
  WeightSource src;
  const StTensor& t = ck.require(name);
  src.weight = &t;
  if (is_float_dtype(t.dtype)) {
    check_shape(t, shape);
    return src;
  }
  if (shape.size() != 2)
    throw ConvertError("tensor '" + name + "' has dtype " + std::string(st_dtype_name(t.dtype)) +
                       "; only 2-D weights may be FP8/FP4");
  const uint64_t rows = shape[0], cols = shape[1];
  std::string sname = scale_name_for(name);
  const StTensor* s = ck.find(sname);
  if (!s && name.size() > 7 && name.compare(name.size() - 7, 7, ".weight") == 0) {
    // Hugging Face exports before convert.py's rename call it weight_scale_inv.
    const std::string alt = name.substr(0, name.size() - 7) + ".weight_scale_inv";
    if ((s = ck.find(alt))) sname = alt;
  }
  src.scale = s;
  if (t.dtype == StDtype::F8_E4M3) {
    check_shape(t, shape);
    if (!s) throw ConvertError("FP8 tensor '" + name + "' has no scale tensor '" + sname + "'");
    const std::vector<uint64_t> sshape = {ceil_div(rows, 128), ceil_div(cols, 128)};
    if (s->shape != sshape)
      throw ConvertError("scale '" + sname + "' has shape " + shape_string(s->shape) + ", expected " +
                         shape_string(sshape) + " (128x128 blocks of " + shape_string(shape) + ")");
    if (s->dtype == StDtype::F32)
      src.scale_f32 = true;
    else if (s->dtype != StDtype::F8_E8M0 && s->dtype != StDtype::U8)
      throw ConvertError("scale '" + sname + "' has dtype " + std::string(st_dtype_name(s->dtype)) +
                         ", expected F8_E8M0 or F32");
    src.kind = WeightSource::Kind::Fp8;
    return src;
  }
  if (t.dtype == StDtype::I8 || t.dtype == StDtype::U8) {
    if (cols % 32 != 0 || t.shape != std::vector<uint64_t>{rows, cols / 2})
      throw ConvertError("packed FP4 tensor '" + name + "' has shape " + shape_string(t.shape) + ", expected " +
                         shape_string({rows, cols / 2}) + " for a " + shape_string(shape) + " weight");
    if (!s) throw ConvertError("FP4 tensor '" + name + "' has no scale tensor '" + sname + "'");
    const std::vector<uint64_t> sshape = {rows, cols / 32};
    if (s->shape != sshape)
      throw ConvertError("scale '" + sname + "' has shape " + shape_string(s->shape) + ", expected " +
                         shape_string(sshape) + " (one per 32 inputs)");
    if (s->dtype != StDtype::F8_E8M0 && s->dtype != StDtype::U8 && s->dtype != StDtype::I8)
      throw ConvertError("scale '" + sname + "' has dtype " + std::string(st_dtype_name(s->dtype)) +
                         ", expected F8_E8M0");
    src.kind = WeightSource::Kind::Fp4;
    return src;
  }
  throw ConvertError("tensor '" + name + "' has unsupported weight dtype " + std::string(st_dtype_name(t.dtype)));
}

void read_weight_f32(const WeightSource& src, const std::vector<uint64_t>& shape, float* out) {
  const StTensor& t = *src.weight;
  switch (src.kind) {
    case WeightSource::Kind::Float:
      floats_to_f32(t, t.n_elements(), out);
      return;
    case WeightSource::Kind::Fp8:
      quant::dequantize_fp8_weight(t.data, src.scale->data,
                                   src.scale_f32 ? quant::ScaleFormat::F32 : quant::ScaleFormat::E8M0,
                                   static_cast<int64_t>(shape[0]), static_cast<int64_t>(shape[1]), out);
      return;
    case WeightSource::Kind::Fp4:
      quant::dequantize_fp4_weight(t.data, src.scale->data, static_cast<int64_t>(shape[0]),
                                   static_cast<int64_t>(shape[1]), out);
      return;
  }
}

void read_weight_f32(const Checkpoint& ck, const std::string& name, const std::vector<uint64_t>& shape,
                     float* out) {
  read_weight_f32(resolve_weight(ck, name, shape), shape, out);
}

std::vector<int32_t> read_int_tensor(const StTensor& t, const std::vector<uint64_t>& shape) {
  check_shape(t, shape);
  const uint64_t n = t.n_elements();
  std::vector<int32_t> out(n);
  const size_t es = st_dtype_size(t.dtype);
  auto put = [&](uint64_t i, int64_t v) {
    if (v < INT32_MIN || v > INT32_MAX)
      throw ConvertError("tensor '" + t.name + "' element " + std::to_string(i) + " = " + std::to_string(v) +
                         " does not fit int32");
    out[i] = static_cast<int32_t>(v);
  };
  for (uint64_t i = 0; i < n; ++i) {
    const uint8_t* p = t.data + i * es;
    switch (t.dtype) {
      case StDtype::I64: put(i, load<int64_t>(p)); break;
      case StDtype::I32: out[i] = load<int32_t>(p); break;
      case StDtype::I16: out[i] = load<int16_t>(p); break;
      case StDtype::I8: out[i] = load<int8_t>(p); break;
      case StDtype::U8: out[i] = load<uint8_t>(p); break;
      case StDtype::U16: out[i] = load<uint16_t>(p); break;
      case StDtype::U32: {
        uint32_t v = load<uint32_t>(p);
        put(i, static_cast<int64_t>(v));
        break;
      }
      case StDtype::U64: {
        uint64_t v = load<uint64_t>(p);
        if (v > static_cast<uint64_t>(INT32_MAX))
          throw ConvertError("tensor '" + t.name + "' element " + std::to_string(i) + " does not fit int32");
        out[i] = static_cast<int32_t>(v);
        break;
      }
      default:
        throw ConvertError("tensor '" + t.name + "' has dtype " + std::string(st_dtype_name(t.dtype)) +
                           ", expected an integer type");
    }
  }
  return out;
}

}  // namespace ds4::convert
