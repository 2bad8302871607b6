#include "convert/imatrix.h"

#include <cmath>
#include <cstring>
#include <fstream>

#include "convert/safetensors.h"
#include "gguf/gguf.h"

namespace ds4::convert {

namespace {

void load_legacy(const std::string& path, Imatrix& im) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConvertError(path + ": cannot open imatrix");
  auto read_i32 = [&](const char* what) {
    int32_t v = 0;
    if (!in.read(reinterpret_cast<char*>(&v), 4)) throw ConvertError(path + ": imatrix truncated reading " + what);
    return v;
  };
  const int32_t n = read_i32("entry count");
  if (n <= 0 || n > 1000000) throw ConvertError(path + ": bad imatrix entry count " + std::to_string(n));
  for (int32_t i = 0; i < n; ++i) {
    const int32_t len = read_i32("name length");
    if (len <= 0 || len > 4096) throw ConvertError(path + ": bad imatrix name length " + std::to_string(len));
    std::string name(static_cast<size_t>(len), '\0');
    if (!in.read(name.data(), len)) throw ConvertError(path + ": imatrix truncated in a name");
    const int32_t ncall = read_i32("call count");
    const int32_t nval = read_i32("value count");
    if (nval <= 0 || nval > (1 << 28)) throw ConvertError(path + ": bad imatrix value count for " + name);
    std::vector<float> v(static_cast<size_t>(nval));
    if (!in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(v.size() * 4)))
      throw ConvertError(path + ": imatrix truncated in the values of " + name);
    for (float& x : v) {
      if (!std::isfinite(x) || x < 0) throw ConvertError(path + ": bad imatrix value in " + name);
      if (ncall > 0) x /= static_cast<float>(ncall);
    }
    im.add(name, std::move(v));
  }
}

void load_gguf(const std::string& path, Imatrix& im) {
  std::unique_ptr<gguf::File> f;
  try {
    f = gguf::File::open(path);
  } catch (const gguf::Error& e) {
    throw ConvertError(std::string("imatrix: ") + e.what());
  }
  const std::string sum_suffix = ".in_sum2", count_suffix = ".counts";
  for (const auto& t : f->tensors()) {
    if (t.name.size() <= sum_suffix.size() ||
        t.name.compare(t.name.size() - sum_suffix.size(), sum_suffix.size(), sum_suffix) != 0)
      continue;
    const std::string base = t.name.substr(0, t.name.size() - sum_suffix.size());
    const gguf::TensorInfo* c = f->find_tensor(base + count_suffix);
    if (!c) throw ConvertError(path + ": imatrix has " + t.name + " but no " + base + count_suffix);
    if (t.type != quant::Type::F32 || c->type != quant::Type::F32)
      throw ConvertError(path + ": imatrix tensors of " + base + " must be F32");
    const uint64_t ncols = t.ne(0), nmats = t.n_elements() / std::max<uint64_t>(1, ncols);
    if (c->n_elements() != nmats) throw ConvertError(path + ": " + base + ".counts has the wrong size");
    std::vector<float> sums(t.n_elements()), counts(nmats);
    std::memcpy(sums.data(), t.data, sums.size() * 4);
    std::memcpy(counts.data(), c->data, counts.size() * 4);
    std::vector<bool> has(nmats);
    for (uint64_t m = 0; m < nmats; ++m) {
      has[m] = counts[m] > 0;
      for (uint64_t j = 0; j < ncols; ++j) {
        float& x = sums[m * ncols + j];
        if (!std::isfinite(x) || x < 0) throw ConvertError(path + ": bad imatrix value in " + base);
        if (has[m]) x /= counts[m];
      }
    }
    im.add(base, std::move(sums), std::move(has));
  }
  if (im.empty()) throw ConvertError(path + ": GGUF imatrix has no *.in_sum2 tensors");
}

}  // namespace

Imatrix Imatrix::load(const std::string& path) {
  Imatrix im;
  im.path_ = path;
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConvertError(path + ": cannot open imatrix");
  char magic[4] = {};
  in.read(magic, 4);
  in.close();
  if (std::memcmp(magic, "GGUF", 4) == 0) {
    im.format_ = "gguf";
    load_gguf(path, im);
  } else {
    im.format_ = "legacy-dat";
    load_legacy(path, im);
  }
  return im;
}

void Imatrix::add(const std::string& name, std::vector<float> values, std::vector<bool> has_data) {
  entries_[name] = Entry{std::move(values), std::move(has_data)};
}

const float* Imatrix::find(const std::string& gguf_name, const std::string& hf_name, uint64_t n_cols,
                           uint32_t expert, uint32_t n_experts) const {
  auto it = entries_.find(gguf_name);
  if (it == entries_.end()) it = entries_.find(hf_name);
  if (it == entries_.end()) return nullptr;
  const Entry& e = it->second;
  if (e.values.size() == n_cols) return (e.has_data.empty() || e.has_data[0]) ? e.values.data() : nullptr;
  if (n_experts > 0 && e.values.size() == n_cols * n_experts) {
    if (!e.has_data.empty() && !e.has_data[expert]) return nullptr;
    return e.values.data() + static_cast<size_t>(expert) * n_cols;
  }
  throw ConvertError("imatrix entry " + it->first + " has " + std::to_string(e.values.size()) + " values, expected " +
                     std::to_string(n_cols) + (n_experts ? " or " + std::to_string(n_cols * n_experts) : ""));
}

}  // namespace ds4::convert
