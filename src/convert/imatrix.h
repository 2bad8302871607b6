// Importance matrices for the K-quants and IQ2_XXS.
//
// Two formats are read:
//  * llama.cpp's GGUF imatrix (magic "GGUF"): per weight, tensors "<name>.in_sum2"
//    [n_cols, n_mats] F32 and "<name>.counts" [1, n_mats] F32; importance = in_sum2 / count.
//  * the legacy llama.cpp binary .dat (what ds4's quantizer reads): int32 entry count, then per
//    entry int32 name length, name, int32 ncall, int32 nval, nval floats; optionally int32
//    chunk count, int32 dataset-name length, dataset name. importance = value / ncall.
// Entries are looked up by GGUF tensor name (what llama-imatrix writes), or the official name.
// For expert tensors an entry holds n_cols values per expert (or n_cols shared by all).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace ds4::convert {

class Imatrix {
 public:
  static Imatrix load(const std::string& path);  // throws ConvertError

  bool empty() const { return entries_.empty(); }
  size_t size() const { return entries_.size(); }
  const std::string& path() const { return path_; }
  std::string format() const { return format_; }

  // n_cols importance values for (one expert of) a tensor, or nullptr if it has no entry or
  // this expert has no data. Throws ConvertError if the entry's size does not match.
  const float* find(const std::string& gguf_name, const std::string& hf_name, uint64_t n_cols,
                    uint32_t expert, uint32_t n_experts) const;

  // For tests and tools: add an entry directly (values = n_cols * n_mats, already averaged).
  void add(const std::string& name, std::vector<float> values, std::vector<bool> has_data = {});

 private:
  struct Entry {
    std::vector<float> values;
    std::vector<bool> has_data;  // per matrix; empty = all
  };
  std::string path_;
  std::string format_;
  std::map<std::string, Entry> entries_;
};

}  // namespace ds4::convert
