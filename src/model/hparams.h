// The hyperparameters of a DeepSeek V4 model: what the deepseek4.* GGUF metadata holds
// (schema.h names the keys). One struct for every reader and writer: the loader fills it from
// a GGUF (config.h), the converter and ds4-quantize from a checkpoint's config.json and write
// it back as metadata (convert/model_config.h); the tensor catalogue derives names and shapes
// from it (catalogue.h). The public API re-exports it as ds4::ModelConfig.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ds4::model {

struct ModelConfig {
  std::string name;       // general.name
  int n_layers = 0;
  int n_mtp_layers = 0;   // MTP blocks the model was trained with (nextn_predict_layers)
  int dim = 0;
  int vocab = 0;
  int n_heads = 0;
  int n_kv_heads = 1;     // always 1 (single shared KV head)
  int head_dim = 0;       // = value width
  int rope_dim = 0;       // rotary dims, the tail of each row
  int q_lora_rank = 0;
  int o_lora_rank = 0;
  int o_groups = 0;
  int n_experts = 0;      // routed experts
  int n_experts_used = 0; // experts per token
  int moe_inter_dim = 0;
  int n_shared_experts = 0;
  int n_hash_layers = 0;
  int window = 0;
  int index_heads = 0;
  int index_head_dim = 0;
  int index_topk = 0;
  int hc = 0;             // hyper-connection copies
  int sinkhorn_iters = 0;
  float hc_eps = 1e-6f;
  float norm_eps = 1e-6f;
  // One entry per block: the n_layers main layers, then the MTP blocks. A loaded model always
  // has the entry of MTP block 0 (ratio 0 and the last layer's clamp when the file has none);
  // a converted config has n_layers + n_mtp_layers entries.
  std::vector<int> compress_ratios;
  std::vector<float> swiglu_limit;  // 0: no clamp
  float rope_base = 10000.f;
  float compress_rope_base = 160000.f;
  float yarn_factor = 1.f;
  int64_t yarn_orig_ctx = 0;
  float yarn_beta_fast = 32.f;
  float yarn_beta_slow = 1.f;
  float route_scale = 1.f;
  bool weights_norm = true;    // normalise the routing weights of the chosen experts
  int64_t context_length = 0;  // declared maximum (display)

  // Compression ratio of block `block` (main layers first, then MTP blocks); 0 past the end.
  int ratio(int block) const {
    return block >= 0 && block < static_cast<int>(compress_ratios.size()) ? compress_ratios[block] : 0;
  }
  // Rows of a hyper-connection mixing matrix: pre, post and the hc x hc combination.
  int hc_mix() const { return (2 + hc) * hc; }
};

}  // namespace ds4::model
