// The model hyper-parameters a converter needs, read from either config.json form
// (the reference's ModelArgs names or the Hugging Face names), and their GGUF metadata.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace ds4::gguf {
class Writer;
}

namespace ds4::convert {

struct ModelConfig {
  std::string name = "DeepSeek-V4";
  uint32_t vocab_size = 0;
  uint32_t dim = 0;
  uint32_t n_layers = 0;
  uint32_t n_hash_layers = 0;
  uint32_t n_mtp_layers = 0;
  uint32_t n_heads = 0;
  uint32_t n_kv_heads = 1;
  uint32_t head_dim = 0;
  uint32_t rope_head_dim = 0;
  uint32_t q_lora_rank = 0;
  uint32_t o_lora_rank = 0;
  uint32_t o_groups = 0;
  uint32_t n_routed_experts = 0;
  uint32_t n_shared_experts = 1;
  uint32_t n_activated_experts = 0;
  uint32_t moe_inter_dim = 0;
  uint32_t window_size = 0;
  uint32_t index_n_heads = 0;
  uint32_t index_head_dim = 0;
  uint32_t index_topk = 0;
  uint32_t hc_mult = 4;
  uint32_t hc_sinkhorn_iters = 20;
  double hc_eps = 1e-6;
  double norm_eps = 1e-6;
  double route_scale = 1.0;
  double swiglu_limit = 0.0;
  double rope_theta = 10000.0;
  double compress_rope_theta = 160000.0;
  double rope_factor = 1.0;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  uint64_t original_seq_len = 0;
  uint64_t max_seq_len = 0;  // context length (display only)
  bool norm_topk_prob = true;
  std::string score_func = "sqrtsoftplus";
  uint32_t bos_id = 0;
  uint32_t eos_id = 1;
  // n_layers + n_mtp_layers entries; entry n_layers + j belongs to MTP block j.
  std::vector<uint32_t> compress_ratios;

  uint32_t ratio(uint32_t layer) const { return layer < compress_ratios.size() ? compress_ratios[layer] : 0; }
  uint32_t hc_mix() const { return (2 + hc_mult) * hc_mult; }
};

// Throws ConvertError naming the missing/invalid field. `source` names the file in messages.
ModelConfig parse_model_config(const nlohmann::json& j, const std::string& source);
ModelConfig load_model_config(const std::string& path);
// Checks the shape constraints the catalogue relies on (divisibility etc.).
void validate_model_config(const ModelConfig& c, const std::string& source);
// Keeps the first n layers of the schedule and the MTP entries.
ModelConfig truncate_layers(const ModelConfig& c, uint32_t n);

// Every general.* and deepseek4.* key (docs/gguf.md).
void write_model_metadata(const ModelConfig& c, gguf::Writer& w);

}  // namespace ds4::convert
