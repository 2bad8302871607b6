// ds4-quantize's operations: official checkpoint -> GGUF, synthetic models, inspection and
// dequantization. All throw ConvertError (or gguf::Error) with a message naming the culprit.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "convert/catalogue.h"
#include "convert/model_config.h"
#include "quant/types.h"

namespace ds4::convert {

struct OutputOptions {
  std::string out_path;
  std::string mtp_out_path;    // non-empty: MTP tensors go to this sidecar instead
  Recipe recipe = Recipe::Q8;
  std::string tokenizer_path;  // empty: synthetic byte-level vocabulary
  std::string imatrix_path;
  bool f16_fallback = false;   // non-fitting rows become F16 instead of an error
  bool include_mtp = true;
  std::string name;            // general.name override
  int threads = 0;             // 0 = all cores
  bool verbose = false;
};

struct ConvertOptions : OutputOptions {
  std::string hf_dir;  // config.json + *.safetensors (+ model.safetensors.index.json)
};

struct SyntheticOptions : OutputOptions {
  std::string config_path;  // ModelArgs-form config.json
  uint32_t layers = 0;      // 0 = all
  uint64_t seed = 1;
  // Routed experts all zero, stored as holes: a full-size model (the bandwidth a decode reads)
  // in little disk and write time, for benchmarks (scripts/vulkan_perf.sh).
  bool sparse_experts = false;
};

struct ConvertReport {
  size_t tensors = 0;
  uint64_t bytes = 0;
  std::vector<std::string> fallbacks;
  std::vector<std::string> unused_sources;  // checkpoint tensors nothing read
};

ConvertReport convert_checkpoint(const ConvertOptions& o);
ConvertReport write_synthetic(const SyntheticOptions& o);

// Metadata (arrays abbreviated) and tensor table.
void inspect_gguf(const std::string& path, std::ostream& out);
// Copies a GGUF, turning every tensor not already F32 or integer into F32.
void dequantize_gguf(const std::string& in_path, const std::string& out_path, int threads);

// Encodes rows x cols floats as `t` (row-major, one GGUF row per source row).
void encode_rows(quant::Type t, const float* src, uint64_t rows, uint64_t cols, uint8_t* dst,
                 const float* importance);

}  // namespace ds4::convert
