// The GGUF metadata schema of a DeepSeek V4 model (docs/gguf.md): the architecture name and
// every metadata key, defined once for the loader (model/config.cpp) and the converter
// (convert/model_config.cpp, ds4-quantize). The tensors are in catalogue.h, the values in
// hparams.h.
#pragma once

#include <string>
#include <string_view>

namespace ds4::model::schema {

inline constexpr std::string_view kArchitecture = "deepseek4";
inline constexpr std::string_view kGeneralArchitecture = "general.architecture";
inline constexpr std::string_view kGeneralName = "general.name";

// Keys under "deepseek4." (key() gives the full name).
namespace key {
inline constexpr std::string_view context_length = "context_length";
inline constexpr std::string_view block_count = "block_count";
inline constexpr std::string_view embedding_length = "embedding_length";
inline constexpr std::string_view vocab_size = "vocab_size";
inline constexpr std::string_view attention_head_count = "attention.head_count";
inline constexpr std::string_view attention_head_count_kv = "attention.head_count_kv";
inline constexpr std::string_view attention_key_length = "attention.key_length";
inline constexpr std::string_view attention_value_length = "attention.value_length";
inline constexpr std::string_view rope_dimension_count = "rope.dimension_count";
inline constexpr std::string_view attention_q_lora_rank = "attention.q_lora_rank";
inline constexpr std::string_view attention_output_lora_rank = "attention.output_lora_rank";
inline constexpr std::string_view attention_output_group_count = "attention.output_group_count";
inline constexpr std::string_view expert_count = "expert_count";
inline constexpr std::string_view expert_used_count = "expert_used_count";
inline constexpr std::string_view expert_feed_forward_length = "expert_feed_forward_length";
inline constexpr std::string_view expert_shared_count = "expert_shared_count";
inline constexpr std::string_view expert_group_count = "expert_group_count";
inline constexpr std::string_view expert_group_used_count = "expert_group_used_count";
inline constexpr std::string_view hash_layer_count = "hash_layer_count";
inline constexpr std::string_view nextn_predict_layers = "nextn_predict_layers";
inline constexpr std::string_view attention_sliding_window = "attention.sliding_window";
inline constexpr std::string_view attention_indexer_head_count = "attention.indexer.head_count";
inline constexpr std::string_view attention_indexer_key_length = "attention.indexer.key_length";
inline constexpr std::string_view attention_indexer_top_k = "attention.indexer.top_k";
inline constexpr std::string_view hyper_connection_count = "hyper_connection.count";
inline constexpr std::string_view hyper_connection_sinkhorn_iterations = "hyper_connection.sinkhorn_iterations";
inline constexpr std::string_view hyper_connection_epsilon = "hyper_connection.epsilon";
inline constexpr std::string_view attention_layer_norm_rms_epsilon = "attention.layer_norm_rms_epsilon";
inline constexpr std::string_view attention_compress_ratios = "attention.compress_ratios";
inline constexpr std::string_view attention_compress_rope_freq_base = "attention.compress_rope_freq_base";
inline constexpr std::string_view swiglu_clamp_exp = "swiglu_clamp_exp";
inline constexpr std::string_view rope_freq_base = "rope.freq_base";
inline constexpr std::string_view rope_scaling_type = "rope.scaling.type";
inline constexpr std::string_view rope_scaling_factor = "rope.scaling.factor";
inline constexpr std::string_view rope_scaling_original_context_length = "rope.scaling.original_context_length";
inline constexpr std::string_view rope_scaling_yarn_beta_fast = "rope.scaling.yarn_beta_fast";
inline constexpr std::string_view rope_scaling_yarn_beta_slow = "rope.scaling.yarn_beta_slow";
inline constexpr std::string_view expert_weights_scale = "expert_weights_scale";
inline constexpr std::string_view expert_weights_norm = "expert_weights_norm";
}  // namespace key

inline std::string key_name(std::string_view k) { return std::string(kArchitecture) + "." + std::string(k); }

}  // namespace ds4::model::schema
