#include "convert/model_config.h"

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "convert/safetensors.h"
#include "gguf/gguf.h"
#include "model/schema.h"

namespace ds4::convert {

namespace {

using nlohmann::json;

// Looks a field up under any of its names (ModelArgs first, then Hugging Face).
class Fields {
 public:
  Fields(const json& j, const std::string& source) : j_(j), source_(source) {}

  const json* find(std::initializer_list<const char*> names) const {
    for (const char* n : names) {
      auto it = j_.find(n);
      if (it != j_.end() && !it->is_null()) return &*it;
    }
    return nullptr;
  }

  std::string describe(std::initializer_list<const char*> names) const {
    std::string s;
    for (const char* n : names) s += (s.empty() ? "" : " / ") + std::string(n);
    return s;
  }

  uint64_t uint_of(const json& v, std::initializer_list<const char*> names) const {
    if (v.is_number_unsigned()) return v.get<uint64_t>();
    if (v.is_number_integer() && v.get<int64_t>() >= 0) return static_cast<uint64_t>(v.get<int64_t>());
    if (v.is_number_float()) {
      double d = v.get<double>();
      if (d >= 0 && std::floor(d) == d && d < 1.8e19) return static_cast<uint64_t>(d);
    }
    throw ConvertError(source_ + ": " + describe(names) + " must be a non-negative integer, got " + v.dump());
  }

  uint32_t u32(std::initializer_list<const char*> names) const {
    const json* v = find(names);
    if (!v) throw ConvertError(source_ + ": missing required field " + describe(names));
    return narrow(uint_of(*v, names), names);
  }
  uint32_t u32_or(std::initializer_list<const char*> names, uint32_t def) const {
    const json* v = find(names);
    return v ? narrow(uint_of(*v, names), names) : def;
  }
  uint64_t u64_or(std::initializer_list<const char*> names, uint64_t def) const {
    const json* v = find(names);
    return v ? uint_of(*v, names) : def;
  }
  double num_or(std::initializer_list<const char*> names, double def) const {
    const json* v = find(names);
    if (!v) return def;
    if (!v->is_number()) throw ConvertError(source_ + ": " + describe(names) + " must be a number, got " + v->dump());
    return v->get<double>();
  }
  bool bool_or(std::initializer_list<const char*> names, bool def) const {
    const json* v = find(names);
    if (!v) return def;
    if (!v->is_boolean()) throw ConvertError(source_ + ": " + describe(names) + " must be true or false");
    return v->get<bool>();
  }

 private:
  uint32_t narrow(uint64_t v, std::initializer_list<const char*> names) const {
    if (v > UINT32_MAX) throw ConvertError(source_ + ": " + describe(names) + " is too large");
    return static_cast<uint32_t>(v);
  }
  const json& j_;
  const std::string& source_;
};

}  // namespace

ModelConfig parse_model_config(const json& j, const std::string& source) {
  if (!j.is_object()) throw ConvertError(source + ": config is not a JSON object");
  Fields f(j, source);
  ModelConfig c;
  if (const json* n = f.find({"name", "_name_or_path"}); n && n->is_string()) c.name = n->get<std::string>();
  c.vocab_size = f.u32({"vocab_size"});
  c.dim = f.u32({"dim", "hidden_size"});
  c.n_layers = f.u32({"n_layers", "num_hidden_layers"});
  c.n_hash_layers = f.u32_or({"n_hash_layers", "num_hash_layers"}, 0);
  c.n_mtp_layers = f.u32_or({"n_mtp_layers", "num_nextn_predict_layers"}, 0);
  c.n_heads = f.u32({"n_heads", "num_attention_heads"});
  c.n_kv_heads = f.u32_or({"n_kv_heads", "num_key_value_heads"}, 1);
  c.head_dim = f.u32({"head_dim"});
  c.rope_head_dim = f.u32({"rope_head_dim", "qk_rope_head_dim"});
  c.q_lora_rank = f.u32({"q_lora_rank"});
  c.o_lora_rank = f.u32({"o_lora_rank"});
  c.o_groups = f.u32({"o_groups"});
  c.n_routed_experts = f.u32({"n_routed_experts"});
  c.n_shared_experts = f.u32_or({"n_shared_experts"}, 1);
  c.n_activated_experts = f.u32({"n_activated_experts", "num_experts_per_tok"});
  c.moe_inter_dim = f.u32({"moe_inter_dim", "moe_intermediate_size"});
  c.window_size = f.u32({"window_size", "sliding_window"});
  c.index_n_heads = f.u32_or({"index_n_heads"}, 0);
  c.index_head_dim = f.u32_or({"index_head_dim"}, 0);
  c.index_topk = f.u32_or({"index_topk"}, 0);
  c.hc_mult = f.u32_or({"hc_mult"}, 4);
  c.hc_sinkhorn_iters = f.u32_or({"hc_sinkhorn_iters"}, 20);
  c.hc_eps = f.num_or({"hc_eps"}, 1e-6);
  c.norm_eps = f.num_or({"norm_eps", "rms_norm_eps"}, 1e-6);
  c.route_scale = f.num_or({"route_scale", "routed_scaling_factor"}, 1.0);
  c.swiglu_limit = f.num_or({"swiglu_limit"}, 0.0);
  c.rope_theta = f.num_or({"rope_theta"}, 10000.0);
  c.compress_rope_theta = f.num_or({"compress_rope_theta"}, 160000.0);
  c.norm_topk_prob = f.bool_or({"norm_topk_prob"}, true);
  if (const json* s = f.find({"score_func", "scoring_func"})) {
    if (!s->is_string()) throw ConvertError(source + ": score_func must be a string");
    c.score_func = s->get<std::string>();
  }
  if (c.score_func != "sqrtsoftplus")
    throw ConvertError(source + ": score_func '" + c.score_func + "' is not supported (DeepSeek V4 uses sqrtsoftplus)");
  c.max_seq_len = f.u64_or({"max_seq_len", "max_position_embeddings"}, 0);
  c.bos_id = f.u32_or({"bos_token_id"}, 0);
  c.eos_id = f.u32_or({"eos_token_id"}, 1);

  // YaRN: ModelArgs keeps the fields flat; the HF form nests them in rope_scaling.
  c.rope_factor = f.num_or({"rope_factor"}, 1.0);
  c.original_seq_len = f.u64_or({"original_seq_len"}, 0);
  c.beta_fast = f.num_or({"beta_fast"}, 32.0);
  c.beta_slow = f.num_or({"beta_slow"}, 1.0);
  if (const json* rs = f.find({"rope_scaling"})) {
    if (!rs->is_object()) throw ConvertError(source + ": rope_scaling must be an object");
    Fields r(*rs, source);
    c.rope_factor = r.num_or({"factor"}, c.rope_factor);
    c.original_seq_len = r.u64_or({"original_max_position_embeddings"}, c.original_seq_len);
    c.beta_fast = r.num_or({"beta_fast"}, c.beta_fast);
    c.beta_slow = r.num_or({"beta_slow"}, c.beta_slow);
  }

  const json* cr = f.find({"compress_ratios"});
  if (!cr || !cr->is_array()) throw ConvertError(source + ": missing array compress_ratios");
  for (const auto& v : *cr) c.compress_ratios.push_back(static_cast<uint32_t>(f.uint_of(v, {"compress_ratios"})));
  if (c.compress_ratios.size() < c.n_layers)
    throw ConvertError(source + ": compress_ratios has " + std::to_string(c.compress_ratios.size()) +
                       " entries, fewer than n_layers = " + std::to_string(c.n_layers));
  // A schedule without MTP entries implies ratio 0 for them (docs/gguf.md).
  c.compress_ratios.resize(c.n_layers + c.n_mtp_layers, 0);
  validate_model_config(c, source);
  return c;
}

ModelConfig load_model_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConvertError(path + ": cannot open config");
  json j;
  try {
    in >> j;
  } catch (const std::exception& e) {
    throw ConvertError(path + ": not valid JSON: " + e.what());
  }
  return parse_model_config(j, path);
}

void validate_model_config(const ModelConfig& c, const std::string& source) {
  auto need = [&](bool ok, const std::string& what) {
    if (!ok) throw ConvertError(source + ": invalid config: " + what);
  };
  need(c.vocab_size > 0 && c.dim > 0 && c.n_layers > 0, "vocab_size, dim and n_layers must be positive");
  need(c.n_heads > 0 && c.head_dim > 0, "n_heads and head_dim must be positive");
  need(c.rope_head_dim > 0 && c.rope_head_dim < c.head_dim && c.rope_head_dim % 2 == 0,
       "rope_head_dim must be even and smaller than head_dim");
  need(c.n_kv_heads == 1, "only one KV head is supported");
  need(c.q_lora_rank > 0 && c.o_lora_rank > 0 && c.o_groups > 0, "q_lora_rank, o_lora_rank, o_groups must be positive");
  need(c.n_heads % c.o_groups == 0, "n_heads must be a multiple of o_groups");
  need(c.n_routed_experts > 0 && c.n_activated_experts > 0 && c.n_activated_experts <= c.n_routed_experts,
       "need 0 < n_activated_experts <= n_routed_experts");
  need(c.moe_inter_dim > 0, "moe_inter_dim must be positive");
  need(c.n_hash_layers <= c.n_layers, "n_hash_layers exceeds n_layers");
  need(c.hc_mult > 0, "hc_mult must be positive");
  need(c.window_size > 0, "window_size must be positive");
  bool any4 = false;
  for (uint32_t r : c.compress_ratios) any4 |= r == 4;
  if (any4)
    need(c.index_n_heads > 0 && c.index_head_dim > 0 && c.index_topk > 0,
         "ratio-4 layers need index_n_heads, index_head_dim and index_topk");
  need(c.compress_ratios.size() == c.n_layers + c.n_mtp_layers, "compress_ratios length");
}

ModelConfig truncate_layers(const ModelConfig& c, uint32_t n) {
  if (n == 0 || n > c.n_layers)
    throw ConvertError("--layers " + std::to_string(n) + " must be between 1 and n_layers = " +
                       std::to_string(c.n_layers));
  ModelConfig t = c;
  t.n_layers = n;
  t.n_hash_layers = std::min(c.n_hash_layers, n);
  t.compress_ratios.assign(c.compress_ratios.begin(), c.compress_ratios.begin() + n);
  t.compress_ratios.insert(t.compress_ratios.end(), c.compress_ratios.begin() + c.n_layers, c.compress_ratios.end());
  return t;
}

void write_model_metadata(const ModelConfig& c, gguf::Writer& w) {
  using gguf::Value;
  namespace key = model::schema::key;
  const std::string a = model::schema::key_name("");
  w.set(std::string(model::schema::kGeneralArchitecture), Value::make_string(std::string(model::schema::kArchitecture)));
  w.set(std::string(model::schema::kGeneralName), Value::make_string(c.name));
  w.set_alignment(32);
  w.set(a + std::string(key::context_length), Value::make_u32(static_cast<uint32_t>(std::min<uint64_t>(c.max_seq_len, UINT32_MAX))));
  w.set(a + std::string(key::block_count), Value::make_u32(c.n_layers));
  w.set(a + std::string(key::embedding_length), Value::make_u32(c.dim));
  w.set(a + std::string(key::vocab_size), Value::make_u32(c.vocab_size));
  w.set(a + std::string(key::attention_head_count), Value::make_u32(c.n_heads));
  w.set(a + std::string(key::attention_head_count_kv), Value::make_u32(c.n_kv_heads));
  w.set(a + std::string(key::attention_key_length), Value::make_u32(c.head_dim));
  w.set(a + std::string(key::attention_value_length), Value::make_u32(c.head_dim));
  w.set(a + std::string(key::rope_dimension_count), Value::make_u32(c.rope_head_dim));
  w.set(a + std::string(key::attention_q_lora_rank), Value::make_u32(c.q_lora_rank));
  w.set(a + std::string(key::attention_output_lora_rank), Value::make_u32(c.o_lora_rank));
  w.set(a + std::string(key::attention_output_group_count), Value::make_u32(c.o_groups));
  w.set(a + std::string(key::expert_count), Value::make_u32(c.n_routed_experts));
  w.set(a + std::string(key::expert_used_count), Value::make_u32(c.n_activated_experts));
  w.set(a + std::string(key::expert_feed_forward_length), Value::make_u32(c.moe_inter_dim));
  w.set(a + std::string(key::expert_shared_count), Value::make_u32(c.n_shared_experts));
  w.set(a + std::string(key::expert_group_count), Value::make_u32(0));
  w.set(a + std::string(key::expert_group_used_count), Value::make_u32(0));
  w.set(a + std::string(key::hash_layer_count), Value::make_u32(c.n_hash_layers));
  w.set(a + std::string(key::nextn_predict_layers), Value::make_u32(c.n_mtp_layers));
  w.set(a + std::string(key::attention_sliding_window), Value::make_u32(c.window_size));
  w.set(a + std::string(key::attention_indexer_head_count), Value::make_u32(c.index_n_heads));
  w.set(a + std::string(key::attention_indexer_key_length), Value::make_u32(c.index_head_dim));
  w.set(a + std::string(key::attention_indexer_top_k), Value::make_u32(c.index_topk));
  w.set(a + std::string(key::hyper_connection_count), Value::make_u32(c.hc_mult));
  w.set(a + std::string(key::hyper_connection_sinkhorn_iterations), Value::make_u32(c.hc_sinkhorn_iters));
  w.set(a + std::string(key::hyper_connection_epsilon), Value::make_f32(static_cast<float>(c.hc_eps)));
  w.set(a + std::string(key::attention_layer_norm_rms_epsilon), Value::make_f32(static_cast<float>(c.norm_eps)));
  w.set(a + std::string(key::attention_compress_ratios), Value::make_u32_array(c.compress_ratios));
  w.set(a + std::string(key::attention_compress_rope_freq_base), Value::make_f32(static_cast<float>(c.compress_rope_theta)));
  // One clamp per block, MTP blocks included, like compress_ratios.
  w.set(a + std::string(key::swiglu_clamp_exp),
        Value::make_f32_array(std::vector<float>(c.n_layers + c.n_mtp_layers, static_cast<float>(c.swiglu_limit))));
  w.set(a + std::string(key::rope_freq_base), Value::make_f32(static_cast<float>(c.rope_theta)));
  w.set(a + std::string(key::rope_scaling_type), Value::make_string("yarn"));
  w.set(a + std::string(key::rope_scaling_factor), Value::make_f32(static_cast<float>(c.rope_factor)));
  w.set(a + std::string(key::rope_scaling_original_context_length),
        Value::make_u32(static_cast<uint32_t>(std::min<uint64_t>(c.original_seq_len, UINT32_MAX))));
  w.set(a + std::string(key::rope_scaling_yarn_beta_fast), Value::make_f32(static_cast<float>(c.beta_fast)));
  w.set(a + std::string(key::rope_scaling_yarn_beta_slow), Value::make_f32(static_cast<float>(c.beta_slow)));
  w.set(a + std::string(key::expert_weights_scale), Value::make_f32(static_cast<float>(c.route_scale)));
  w.set(a + std::string(key::expert_weights_norm), Value::make_bool(c.norm_topk_prob));
}

}  // namespace ds4::convert
