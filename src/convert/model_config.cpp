#include "convert/model_config.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
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

  int count_of(const json& v, std::initializer_list<const char*> names) const { return narrow(uint_of(v, names), names); }
  uint64_t uint_of(const json& v, std::initializer_list<const char*> names) const {
    if (v.is_number_unsigned()) return v.get<uint64_t>();
    if (v.is_number_integer() && v.get<int64_t>() >= 0) return static_cast<uint64_t>(v.get<int64_t>());
    if (v.is_number_float()) {
      double d = v.get<double>();
      if (d >= 0 && std::floor(d) == d && d < 1.8e19) return static_cast<uint64_t>(d);
    }
    throw ConvertError(source_ + ": " + describe(names) + " must be a non-negative integer, got " + v.dump());
  }

  int count(std::initializer_list<const char*> names) const {
    const json* v = find(names);
    if (!v) throw ConvertError(source_ + ": missing required field " + describe(names));
    return narrow(uint_of(*v, names), names);
  }
  int count_or(std::initializer_list<const char*> names, int def) const {
    const json* v = find(names);
    return v ? narrow(uint_of(*v, names), names) : def;
  }
  // Lengths of context (display and YaRN): any size, kept within int64.
  int64_t length_or(std::initializer_list<const char*> names, int64_t def) const {
    const json* v = find(names);
    return v ? static_cast<int64_t>(std::min<uint64_t>(uint_of(*v, names), INT64_MAX)) : def;
  }
  float f32_or(std::initializer_list<const char*> names, double def) const {
    return static_cast<float>(num_or(names, def));
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
  int narrow(uint64_t v, std::initializer_list<const char*> names) const {
    if (v > INT32_MAX) throw ConvertError(source_ + ": " + describe(names) + " is too large");
    return static_cast<int>(v);
  }
  const json& j_;
  const std::string& source_;
};

}  // namespace

ModelConfig parse_model_config(const json& j, const std::string& source) {
  if (!j.is_object()) throw ConvertError(source + ": config is not a JSON object");
  Fields f(j, source);
  ModelConfig c;
  c.name = kDefaultModelName;
  if (const json* n = f.find({"name", "_name_or_path"}); n && n->is_string()) c.name = n->get<std::string>();
  c.vocab = f.count({"vocab_size"});
  c.dim = f.count({"dim", "hidden_size"});
  c.n_layers = f.count({"n_layers", "num_hidden_layers"});
  c.n_hash_layers = f.count_or({"n_hash_layers", "num_hash_layers"}, 0);
  c.n_mtp_layers = f.count_or({"n_mtp_layers", "num_nextn_predict_layers"}, 0);
  c.n_heads = f.count({"n_heads", "num_attention_heads"});
  c.n_kv_heads = f.count_or({"n_kv_heads", "num_key_value_heads"}, 1);
  c.head_dim = f.count({"head_dim"});
  c.rope_dim = f.count({"rope_head_dim", "qk_rope_head_dim"});
  c.q_lora_rank = f.count({"q_lora_rank"});
  c.o_lora_rank = f.count({"o_lora_rank"});
  c.o_groups = f.count({"o_groups"});
  c.n_experts = f.count({"n_routed_experts"});
  c.n_shared_experts = f.count_or({"n_shared_experts"}, 1);
  c.n_experts_used = f.count({"n_activated_experts", "num_experts_per_tok"});
  c.moe_inter_dim = f.count({"moe_inter_dim", "moe_intermediate_size"});
  c.window = f.count({"window_size", "sliding_window"});
  c.index_heads = f.count_or({"index_n_heads"}, 0);
  c.index_head_dim = f.count_or({"index_head_dim"}, 0);
  c.index_topk = f.count_or({"index_topk"}, 0);
  c.hc = f.count_or({"hc_mult"}, 4);
  c.sinkhorn_iters = f.count_or({"hc_sinkhorn_iters"}, 20);
  c.hc_eps = f.f32_or({"hc_eps"}, 1e-6);
  c.norm_eps = f.f32_or({"norm_eps", "rms_norm_eps"}, 1e-6);
  c.route_scale = f.f32_or({"route_scale", "routed_scaling_factor"}, 1.0);
  const float swiglu_limit = f.f32_or({"swiglu_limit"}, 0.0);
  c.rope_base = f.f32_or({"rope_theta"}, 10000.0);
  c.compress_rope_base = f.f32_or({"compress_rope_theta"}, 160000.0);
  c.weights_norm = f.bool_or({"norm_topk_prob"}, true);
  std::string score_func = "sqrtsoftplus";
  if (const json* s = f.find({"score_func", "scoring_func"})) {
    if (!s->is_string()) throw ConvertError(source + ": score_func must be a string");
    score_func = s->get<std::string>();
  }
  if (score_func != "sqrtsoftplus")
    throw ConvertError(source + ": score_func '" + score_func + "' is not supported (DeepSeek V4 uses sqrtsoftplus)");
  c.context_length = f.length_or({"max_seq_len", "max_position_embeddings"}, 0);
  // The token ids live in the tokenizer (convert/vocab.h); they are only checked here.
  f.count_or({"bos_token_id"}, 0);
  f.count_or({"eos_token_id"}, 1);

  // YaRN: ModelArgs keeps the fields flat; the HF form nests them in rope_scaling.
  c.yarn_factor = f.f32_or({"rope_factor"}, 1.0);
  c.yarn_orig_ctx = f.length_or({"original_seq_len"}, 0);
  c.yarn_beta_fast = f.f32_or({"beta_fast"}, 32.0);
  c.yarn_beta_slow = f.f32_or({"beta_slow"}, 1.0);
  if (const json* rs = f.find({"rope_scaling"})) {
    if (!rs->is_object()) throw ConvertError(source + ": rope_scaling must be an object");
    Fields r(*rs, source);
    c.yarn_factor = r.f32_or({"factor"}, c.yarn_factor);
    c.yarn_orig_ctx = r.length_or({"original_max_position_embeddings"}, c.yarn_orig_ctx);
    c.yarn_beta_fast = r.f32_or({"beta_fast"}, c.yarn_beta_fast);
    c.yarn_beta_slow = r.f32_or({"beta_slow"}, c.yarn_beta_slow);
  }

  const json* cr = f.find({"compress_ratios"});
  if (!cr || !cr->is_array()) throw ConvertError(source + ": missing array compress_ratios");
  for (const auto& v : *cr) c.compress_ratios.push_back(f.count_of(v, {"compress_ratios"}));
  if (c.compress_ratios.size() < static_cast<size_t>(c.n_layers))
    throw ConvertError(source + ": compress_ratios has " + std::to_string(c.compress_ratios.size()) +
                       " entries, fewer than n_layers = " + std::to_string(c.n_layers));
  // A schedule without MTP entries implies ratio 0 for them (docs/gguf.md).
  c.compress_ratios.resize(c.n_layers + c.n_mtp_layers, 0);
  // One clamp for every block, MTP blocks included.
  c.swiglu_limit.assign(c.compress_ratios.size(), swiglu_limit);
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
  need(c.vocab > 0 && c.dim > 0 && c.n_layers > 0, "vocab_size, dim and n_layers must be positive");
  need(c.n_heads > 0 && c.head_dim > 0, "n_heads and head_dim must be positive");
  need(c.rope_dim > 0 && c.rope_dim < c.head_dim && c.rope_dim % 2 == 0,
       "rope_head_dim must be even and smaller than head_dim");
  need(c.n_kv_heads == 1, "only one KV head is supported");
  need(c.q_lora_rank > 0 && c.o_lora_rank > 0 && c.o_groups > 0, "q_lora_rank, o_lora_rank, o_groups must be positive");
  need(c.n_heads % c.o_groups == 0, "n_heads must be a multiple of o_groups");
  need(c.n_experts > 0 && c.n_experts_used > 0 && c.n_experts_used <= c.n_experts,
       "need 0 < n_activated_experts <= n_routed_experts");
  need(c.moe_inter_dim > 0, "moe_inter_dim must be positive");
  need(c.n_hash_layers <= c.n_layers, "n_hash_layers exceeds n_layers");
  need(c.hc > 0, "hc_mult must be positive");
  need(c.window > 0, "window_size must be positive");
  bool any4 = false;
  for (int r : c.compress_ratios) any4 |= r == 4;
  if (any4)
    need(c.index_heads > 0 && c.index_head_dim > 0 && c.index_topk > 0,
         "ratio-4 layers need index_n_heads, index_head_dim and index_topk");
  need(c.compress_ratios.size() == static_cast<size_t>(c.n_layers + c.n_mtp_layers) &&
           c.swiglu_limit.size() == c.compress_ratios.size(),
       "compress_ratios length");
}

ModelConfig truncate_layers(const ModelConfig& c, int n) {
  if (n == 0 || n > c.n_layers)
    throw ConvertError("--layers " + std::to_string(n) + " must be between 1 and n_layers = " +
                       std::to_string(c.n_layers));
  ModelConfig t = c;
  t.n_layers = n;
  t.n_hash_layers = std::min(c.n_hash_layers, n);
  auto keep = [&](const auto& v) {
    std::decay_t<decltype(v)> out(v.begin(), v.begin() + n);
    out.insert(out.end(), v.begin() + c.n_layers, v.end());
    return out;
  };
  t.compress_ratios = keep(c.compress_ratios);
  t.swiglu_limit = keep(c.swiglu_limit);
  return t;
}

void write_model_metadata(const ModelConfig& c, gguf::Writer& w) {
  using gguf::Value;
  namespace key = model::schema::key;
  const std::string a = model::schema::key_name("");
  const auto u32 = [](int64_t v) { return Value::make_u32(static_cast<uint32_t>(std::min<int64_t>(v, UINT32_MAX))); };
  w.set(std::string(model::schema::kGeneralArchitecture), Value::make_string(std::string(model::schema::kArchitecture)));
  w.set(std::string(model::schema::kGeneralName), Value::make_string(c.name));
  w.set_alignment(32);
  w.set(a + std::string(key::context_length), u32(c.context_length));
  w.set(a + std::string(key::block_count), u32(c.n_layers));
  w.set(a + std::string(key::embedding_length), u32(c.dim));
  w.set(a + std::string(key::vocab_size), u32(c.vocab));
  w.set(a + std::string(key::attention_head_count), u32(c.n_heads));
  w.set(a + std::string(key::attention_head_count_kv), u32(c.n_kv_heads));
  w.set(a + std::string(key::attention_key_length), u32(c.head_dim));
  w.set(a + std::string(key::attention_value_length), u32(c.head_dim));
  w.set(a + std::string(key::rope_dimension_count), u32(c.rope_dim));
  w.set(a + std::string(key::attention_q_lora_rank), u32(c.q_lora_rank));
  w.set(a + std::string(key::attention_output_lora_rank), u32(c.o_lora_rank));
  w.set(a + std::string(key::attention_output_group_count), u32(c.o_groups));
  w.set(a + std::string(key::expert_count), u32(c.n_experts));
  w.set(a + std::string(key::expert_used_count), u32(c.n_experts_used));
  w.set(a + std::string(key::expert_feed_forward_length), u32(c.moe_inter_dim));
  w.set(a + std::string(key::expert_shared_count), u32(c.n_shared_experts));
  w.set(a + std::string(key::expert_group_count), u32(0));
  w.set(a + std::string(key::expert_group_used_count), u32(0));
  w.set(a + std::string(key::hash_layer_count), u32(c.n_hash_layers));
  w.set(a + std::string(key::nextn_predict_layers), u32(c.n_mtp_layers));
  w.set(a + std::string(key::attention_sliding_window), u32(c.window));
  w.set(a + std::string(key::attention_indexer_head_count), u32(c.index_heads));
  w.set(a + std::string(key::attention_indexer_key_length), u32(c.index_head_dim));
  w.set(a + std::string(key::attention_indexer_top_k), u32(c.index_topk));
  w.set(a + std::string(key::hyper_connection_count), u32(c.hc));
  w.set(a + std::string(key::hyper_connection_sinkhorn_iterations), u32(c.sinkhorn_iters));
  w.set(a + std::string(key::hyper_connection_epsilon), Value::make_f32(c.hc_eps));
  w.set(a + std::string(key::attention_layer_norm_rms_epsilon), Value::make_f32(c.norm_eps));
  w.set(a + std::string(key::attention_compress_ratios),
        Value::make_u32_array(std::vector<uint32_t>(c.compress_ratios.begin(), c.compress_ratios.end())));
  w.set(a + std::string(key::attention_compress_rope_freq_base), Value::make_f32(c.compress_rope_base));
  // One clamp per block, MTP blocks included, like compress_ratios.
  w.set(a + std::string(key::swiglu_clamp_exp), Value::make_f32_array(c.swiglu_limit));
  w.set(a + std::string(key::rope_freq_base), Value::make_f32(c.rope_base));
  w.set(a + std::string(key::rope_scaling_type), Value::make_string("yarn"));
  w.set(a + std::string(key::rope_scaling_factor), Value::make_f32(c.yarn_factor));
  w.set(a + std::string(key::rope_scaling_original_context_length), u32(c.yarn_orig_ctx));
  w.set(a + std::string(key::rope_scaling_yarn_beta_fast), Value::make_f32(c.yarn_beta_fast));
  w.set(a + std::string(key::rope_scaling_yarn_beta_slow), Value::make_f32(c.yarn_beta_slow));
  w.set(a + std::string(key::expert_weights_scale), Value::make_f32(c.route_scale));
  w.set(a + std::string(key::expert_weights_norm), Value::make_bool(c.weights_norm));
}

}  // namespace ds4::convert
