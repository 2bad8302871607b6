#include "model/config.h"

#include "model/catalogue.h"
#include "model/schema.h"

#include <algorithm>
#include <cctype>
#include <cmath>

namespace ds4::model {

namespace {

[[noreturn]] void bad(const std::string& file, const std::string& msg) {
  throw Error(Error::Kind::BadModel, file + ": " + msg);
}

struct Reader {
  const gguf::File& f;
  const std::string prefix = schema::key_name("");

  const gguf::Value& need(std::string_view key) const {
    const gguf::Value* v = f.find(prefix + std::string(key));
    if (!v) bad(f.path(), "missing metadata key " + prefix + std::string(key));
    return *v;
  }
  int64_t integer(std::string_view key) const {
    const gguf::Value& v = need(key);
    auto i = v.as_int();
    if (!i) bad(f.path(), "metadata key " + prefix + std::string(key) + " must be an integer");
    return *i;
  }
  int positive(std::string_view key, int64_t max = (1 << 30)) const {
    int64_t i = integer(key);
    if (i <= 0 || i > max)
      bad(f.path(), "metadata key " + prefix + std::string(key) + " = " + std::to_string(i) + " out of range");
    return static_cast<int>(i);
  }
  int nonneg(std::string_view key, int64_t def, bool optional) const {
    if (optional && !f.has(prefix + std::string(key))) return static_cast<int>(def);
    int64_t i = integer(key);
    if (i < 0 || i > (1 << 30))
      bad(f.path(), "metadata key " + prefix + std::string(key) + " = " + std::to_string(i) + " out of range");
    return static_cast<int>(i);
  }
  double number(std::string_view key) const {
    const gguf::Value& v = need(key);
    auto d = v.as_number();
    if (!d || !std::isfinite(*d)) bad(f.path(), "metadata key " + prefix + std::string(key) + " must be a number");
    return *d;
  }
  double number_or(std::string_view key, double def) const {
    if (!f.has(prefix + std::string(key))) return def;
    return number(key);
  }
  std::vector<double> numbers(std::string_view key) const {
    const gguf::Value& v = need(key);
    if (v.type != gguf::ValueType::ARRAY)
      bad(f.path(), "metadata key " + prefix + std::string(key) + " must be an array");
    std::vector<double> out;
    for (const auto& e : v.array) {
      auto d = e.as_number();
      if (!d) bad(f.path(), "metadata key " + prefix + std::string(key) + " has a non-numeric element");
      out.push_back(*d);
    }
    return out;
  }
};

bool icontains(const std::string& s, const std::string& needle) {
  auto it = std::search(s.begin(), s.end(), needle.begin(), needle.end(),
                        [](char a, char b) { return std::tolower(a) == std::tolower(b); });
  return it != s.end();
}

}  // namespace

ModelConfig read_config(const gguf::File& f) {
  Reader r{f};
  ModelConfig c;
  c.name = f.get_string_or(std::string(schema::kGeneralName), "");
  c.n_layers = r.positive(schema::key::block_count, 4096);
  c.dim = r.positive(schema::key::embedding_length);
  if (f.has(schema::key_name(schema::key::vocab_size))) {
    c.vocab = r.positive(schema::key::vocab_size);
  } else if (const auto* t = f.find_tensor(tensor_name(Tensor::TokenEmbd)); t && t->dims.size() == 2) {
    c.vocab = static_cast<int>(t->dims[1]);
  } else {
    bad(f.path(), "missing metadata key " + schema::key_name(schema::key::vocab_size));
  }
  c.n_heads = r.positive(schema::key::attention_head_count);
  c.n_kv_heads = r.positive(schema::key::attention_head_count_kv);
  if (c.n_kv_heads != 1) bad(f.path(), schema::key_name(schema::key::attention_head_count_kv) + " must be 1 (single KV head)");
  c.head_dim = r.positive(schema::key::attention_key_length);
  int vlen = r.positive(schema::key::attention_value_length);
  if (vlen != c.head_dim)
    bad(f.path(), schema::key_name(schema::key::attention_value_length) + " must equal " + std::string(schema::key::attention_key_length));
  c.rope_dim = r.positive(schema::key::rope_dimension_count);
  c.q_lora_rank = r.positive(schema::key::attention_q_lora_rank);
  c.o_lora_rank = r.positive(schema::key::attention_output_lora_rank);
  c.o_groups = r.positive(schema::key::attention_output_group_count);
  c.n_experts = r.positive(schema::key::expert_count);
  c.n_experts_used = r.positive(schema::key::expert_used_count);
  c.moe_inter_dim = r.positive(schema::key::expert_feed_forward_length);
  c.n_shared_experts = r.nonneg(schema::key::expert_shared_count, 1, false);
  c.n_hash_layers = r.nonneg(schema::key::hash_layer_count, 0, false);
  c.n_mtp_layers = r.nonneg(schema::key::nextn_predict_layers, 0, true);
  if (r.nonneg(schema::key::expert_group_count, 0, true) != 0 || r.nonneg(schema::key::expert_group_used_count, 0, true) != 0)
    bad(f.path(), "grouped expert routing (" + schema::key_name(schema::key::expert_group_count) + ") is not supported");
  c.window = r.positive(schema::key::attention_sliding_window);
  c.index_heads = r.positive(schema::key::attention_indexer_head_count);
  c.index_head_dim = r.positive(schema::key::attention_indexer_key_length);
  c.index_topk = r.positive(schema::key::attention_indexer_top_k);
  c.hc = r.positive(schema::key::hyper_connection_count, 64);
  c.sinkhorn_iters = r.positive(schema::key::hyper_connection_sinkhorn_iterations, 1000);
  c.hc_eps = static_cast<float>(r.number(schema::key::hyper_connection_epsilon));
  c.norm_eps = static_cast<float>(r.number(schema::key::attention_layer_norm_rms_epsilon));

  auto ratios = r.numbers(schema::key::attention_compress_ratios);
  if (static_cast<int>(ratios.size()) < c.n_layers)
    bad(f.path(), schema::key_name(schema::key::attention_compress_ratios) + " has " + std::to_string(ratios.size()) +
                      " entries, need at least " + std::to_string(c.n_layers));
  for (int i = 0; i <= c.n_layers; ++i) {
    double v = i < static_cast<int>(ratios.size()) ? ratios[i] : 0.0;  // missing MTP entry = 0
    if (v < 0 || v != std::floor(v) || v > (1 << 20))
      bad(f.path(), schema::key_name(schema::key::attention_compress_ratios) + "[" + std::to_string(i) + "] is invalid");
    c.compress_ratios.push_back(static_cast<int>(v));
  }
  auto limits = r.numbers(schema::key::swiglu_clamp_exp);
  if (static_cast<int>(limits.size()) < c.n_layers)
    bad(f.path(), schema::key_name(schema::key::swiglu_clamp_exp) + " has " + std::to_string(limits.size()) +
                      " entries, need at least " + std::to_string(c.n_layers));
  for (int i = 0; i <= c.n_layers; ++i) {
    double v = i < static_cast<int>(limits.size()) ? limits[i] : limits[c.n_layers - 1];
    if (!(v >= 0) || !std::isfinite(v))
      bad(f.path(), schema::key_name(schema::key::swiglu_clamp_exp) + "[" + std::to_string(i) + "] is invalid");
    c.swiglu_limit.push_back(static_cast<float>(v));
  }
  c.rope_base = static_cast<float>(r.number(schema::key::rope_freq_base));
  c.compress_rope_base = static_cast<float>(r.number(schema::key::attention_compress_rope_freq_base));
  c.yarn_factor = static_cast<float>(r.number_or(schema::key::rope_scaling_factor, 1.0));
  c.yarn_orig_ctx = f.has(schema::key_name(schema::key::rope_scaling_original_context_length))
                        ? r.integer(schema::key::rope_scaling_original_context_length)
                        : 0;
  c.yarn_beta_fast = static_cast<float>(r.number_or(schema::key::rope_scaling_yarn_beta_fast, 32.0));
  c.yarn_beta_slow = static_cast<float>(r.number_or(schema::key::rope_scaling_yarn_beta_slow, 1.0));
  c.route_scale = static_cast<float>(r.number(schema::key::expert_weights_scale));
  c.weights_norm = f.get_bool_or(schema::key_name(schema::key::expert_weights_norm), true);
  c.context_length = f.has(schema::key_name(schema::key::context_length)) ? r.integer(schema::key::context_length) : 0;

  validate_config(c, f.path());

  // A truncated synthetic (e.g. 4 Flash-shaped layers) is not Flash; 43 layers are.
  const bool flash = c.n_layers == 43 && (icontains(c.name, "flash") || c.dim == 4096);
  if (flash) {
    auto eq = [&](const char* what, double got, double exp) {
      if (std::fabs(got - exp) > std::max(1.0, std::fabs(exp)) * 1e-6)
        bad(f.path(), std::string("file says DeepSeek V4 Flash but ") + what + " = " +
                          std::to_string(got) + ", Flash has " + std::to_string(exp));
    };
    eq("block_count", c.n_layers, 43);
    eq("embedding_length", c.dim, 4096);
    eq("vocab_size", c.vocab, 129280);
    eq("attention.head_count", c.n_heads, 64);
    eq("attention.key_length", c.head_dim, 512);
    eq("rope.dimension_count", c.rope_dim, 64);
    eq("attention.q_lora_rank", c.q_lora_rank, 1024);
    eq("attention.output_lora_rank", c.o_lora_rank, 1024);
    eq("attention.output_group_count", c.o_groups, 8);
    eq("expert_count", c.n_experts, 256);
    eq("expert_used_count", c.n_experts_used, 6);
    eq("expert_feed_forward_length", c.moe_inter_dim, 2048);
    eq("expert_shared_count", c.n_shared_experts, 1);
    eq("hash_layer_count", c.n_hash_layers, 3);
    eq("attention.sliding_window", c.window, 128);
    eq("attention.indexer.head_count", c.index_heads, 64);
    eq("attention.indexer.key_length", c.index_head_dim, 128);
    eq("attention.indexer.top_k", c.index_topk, 512);
    eq("hyper_connection.count", c.hc, 4);
    eq("hyper_connection.sinkhorn_iterations", c.sinkhorn_iters, 20);
    eq("hyper_connection.epsilon", c.hc_eps, 1e-6);
    eq("attention.layer_norm_rms_epsilon", c.norm_eps, 1e-6);
    eq("rope.freq_base", c.rope_base, 10000);
    eq("attention.compress_rope_freq_base", c.compress_rope_base, 160000);
    eq("rope.scaling.factor", c.yarn_factor, 16);
    eq("rope.scaling.original_context_length", static_cast<double>(c.yarn_orig_ctx), 65536);
    eq("rope.scaling.yarn_beta_fast", c.yarn_beta_fast, 32);
    eq("rope.scaling.yarn_beta_slow", c.yarn_beta_slow, 1);
    eq("expert_weights_scale", c.route_scale, 1.5);
    for (int il = 0; il < 43; ++il) {
      int exp = il < 2 ? 0 : (il % 2 == 0 ? 4 : 128);
      eq(("attention.compress_ratios[" + std::to_string(il) + "]").c_str(), c.compress_ratios[il], exp);
      eq(("swiglu_clamp_exp[" + std::to_string(il) + "]").c_str(), c.swiglu_limit[il], 10);
    }
  }
  return c;
}

void validate_config(const ModelConfig& c, const std::string& file) {
  auto check = [&](bool ok, const std::string& msg) {
    if (!ok) bad(file, "inconsistent hyperparameters: " + msg);
  };
  check(c.rope_dim % 2 == 0 && c.rope_dim <= c.head_dim, "rope dims must be even and <= head dim");
  check((c.head_dim - c.rope_dim) % 64 == 0, "head_dim - rope_dim must be a multiple of 64 (FP8 blocks)");
  check(c.index_head_dim % 32 == 0 && (c.index_head_dim & (c.index_head_dim - 1)) == 0,
        "indexer head dim must be a power of two and a multiple of 32");
  check(c.rope_dim <= c.index_head_dim, "rope dims must not exceed the indexer head dim");
  check(c.n_heads % c.o_groups == 0, "head count must be a multiple of the output group count");
  check(c.n_experts_used <= c.n_experts, "expert_used_count exceeds expert_count");
  check(c.n_shared_experts <= 1, "at most one shared expert is supported");
  check(c.n_hash_layers <= c.n_layers, "hash_layer_count exceeds block_count");
  check(c.hc_eps >= 0 && c.norm_eps > 0, "epsilons must be positive");
  check(c.rope_base > 1 && c.compress_rope_base > 1, "rope bases must exceed 1");
  check(c.yarn_factor > 0, "rope scaling factor must be positive");
  check(c.yarn_orig_ctx >= 0, "rope scaling original context must be >= 0");
}

}  // namespace ds4::model
