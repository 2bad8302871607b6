// Oracle checkpoints -> GGUF: exact f32 copies, metadata from config.json, and the quantized
// recipes dequantizing close to the source.
#include <gtest/gtest.h>

#include <cmath>
#include <regex>
#include <set>

#include "convert/convert.h"
#include "convert/safetensors.h"
#include "gguf/gguf.h"
#include "quant/quant.h"
#include "test_util.h"

using namespace ds4;
using ds4test::RawTensor;
using ds4test::gguf_target;
using ds4test::Target;

namespace {

std::vector<float> dequantized(const gguf::TensorInfo& t) {
  std::vector<float> out(t.n_elements());
  const uint64_t cols = t.ne(0), rows = t.n_elements() / cols;
  for (uint64_t r = 0; r < rows; ++r)
    quant::dequantize_row(t.type, t.data + r * t.row_bytes(), out.data() + r * cols, static_cast<int64_t>(cols));
  return out;
}

std::string convert(const std::string& cfg, const std::string& recipe, bool fallback = false) {
  convert::ConvertOptions o;
  o.hf_dir = ds4test::oracle_dir(cfg);
  o.out_path = ds4test::tmp_dir("oracle") + "/" + cfg + "-" + recipe + (fallback ? "-fb" : "") + ".gguf";
  o.recipe = *convert::parse_recipe(recipe);
  o.f16_fallback = fallback;
  o.threads = 2;
  convert::convert_checkpoint(o);
  return o.out_path;
}

class OracleTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { DS4_SKIP_WITHOUT_ORACLE(GetParam()); }
};

TEST_P(OracleTest, F32CopiesEveryTensorExactly) {
  const std::string cfg = GetParam();
  const auto src = ds4test::read_safetensors(ds4test::oracle_dir(cfg) + "/model.safetensors");
  const auto f = gguf::File::open(convert(cfg, "f32"));
  std::map<std::string, std::set<int>> experts_seen;
  std::set<std::string> covered;
  for (const auto& [name, t] : src) {
    const Target tg = gguf_target(name);
    ASSERT_FALSE(tg.gguf.empty()) << "no spec mapping for " << name;
    const gguf::TensorInfo* g = f->find_tensor(tg.gguf);
    ASSERT_NE(g, nullptr) << name << " -> " << tg.gguf << " missing";
    covered.insert(tg.gguf);
    const std::vector<uint64_t> reversed(t.shape.rbegin(), t.shape.rend());
    if (tg.expert >= 0) {
      // Stacked: GGUF [in, out, n_experts]; expert e is the e-th slab of `out` rows.
      ASSERT_EQ(g->dims.size(), 3u) << tg.gguf;
      EXPECT_EQ(std::vector<uint64_t>(g->dims.begin(), g->dims.begin() + 2), reversed) << name;
      ASSERT_EQ(g->type, quant::Type::F32);
      ASSERT_LT(static_cast<uint64_t>(tg.expert), g->ne(2));
      const size_t slab = t.bytes.size();
      EXPECT_EQ(std::memcmp(g->data + slab * tg.expert, t.bytes.data(), slab), 0) << name;
      experts_seen[tg.gguf].insert(tg.expert);
      continue;
    }
    // Every other tensor: dims reversed, same element order (this is also the APE
    // "transpose": official [r, c*d] row-major is GGUF [c*d, r] with ne0 contiguous).
    EXPECT_EQ(g->dims, reversed) << name << " -> " << tg.gguf;
    if (t.dtype == "I32" || t.dtype == "I64") {
      ASSERT_EQ(g->type, quant::Type::I32) << tg.gguf;
      ASSERT_EQ(t.dtype, "I32");  // the oracle stores tid2eid as I32
    } else {
      ASSERT_EQ(t.dtype, "F32");
      ASSERT_EQ(g->type, quant::Type::F32) << tg.gguf;
    }
    ASSERT_EQ(g->nbytes, t.bytes.size()) << tg.gguf;
    EXPECT_EQ(std::memcmp(g->data, t.bytes.data(), t.bytes.size()), 0) << name << " -> " << tg.gguf;
  }
  // Every expert slab filled, and nothing in the GGUF that the checkpoint did not provide.
  for (const auto& [name, seen] : experts_seen) {
    const auto& g = f->require_tensor(name);
    EXPECT_EQ(seen.size(), g.ne(2)) << name;
  }
  EXPECT_EQ(covered.size(), f->tensors().size());
}

TEST_P(OracleTest, HashTableIsTokenMajorI32) {
  const std::string cfg = GetParam();
  const auto config = ds4test::read_json(ds4test::oracle_dir(cfg) + "/config.json");
  const auto src = ds4test::read_safetensors(ds4test::oracle_dir(cfg) + "/model.safetensors");
  const auto f = gguf::File::open(convert(cfg, "f32"));
  const uint32_t k = config["n_activated_experts"], vocab = config["vocab_size"];
  const int n_hash = config["n_hash_layers"];
  for (int il = 0; il < n_hash; ++il) {
    const auto& g = f->require_tensor("blk." + std::to_string(il) + ".ffn_gate_tid2eid.weight");
    ASSERT_EQ(g.dims, (std::vector<uint64_t>{k, vocab}));
    const auto& s = src.at("layers." + std::to_string(il) + ".ffn.gate.tid2eid");
    // Row t (ne1 index) holds the experts of token t in slot order.
    for (uint32_t t = 0; t < vocab; t += 37)
      for (uint32_t j = 0; j < k; ++j) {
        int32_t a, b;
        std::memcpy(&a, g.data + 4 * (t * k + j), 4);
        std::memcpy(&b, s.bytes.data() + 4 * (t * k + j), 4);
        EXPECT_EQ(a, b);
      }
  }
  // Non-hash layers carry the router bias instead.
  EXPECT_EQ(f->find_tensor("blk.0.exp_probs_b.bias"), nullptr);
  EXPECT_NE(f->find_tensor("blk." + std::to_string(n_hash) + ".exp_probs_b.bias"), nullptr);
  EXPECT_EQ(f->find_tensor("blk." + std::to_string(n_hash) + ".ffn_gate_tid2eid.weight"), nullptr);
}

TEST_P(OracleTest, MetadataMatchesConfig) {
  const std::string cfg = GetParam();
  const auto c = ds4test::read_json(ds4test::oracle_dir(cfg) + "/config.json");
  const auto f = gguf::File::open(convert(cfg, "f32"));
  EXPECT_EQ(f->require_string("general.architecture"), "deepseek4");
  EXPECT_FALSE(f->require_string("general.name").empty());
  EXPECT_EQ(f->require_uint("general.alignment"), 32u);
  EXPECT_EQ(f->alignment(), 32u);
  const std::vector<std::pair<std::string, std::string>> u32_keys = {
      {"block_count", "n_layers"},
      {"embedding_length", "dim"},
      {"vocab_size", "vocab_size"},
      {"attention.head_count", "n_heads"},
      {"attention.key_length", "head_dim"},
      {"attention.value_length", "head_dim"},
      {"rope.dimension_count", "rope_head_dim"},
      {"attention.q_lora_rank", "q_lora_rank"},
      {"attention.output_lora_rank", "o_lora_rank"},
      {"attention.output_group_count", "o_groups"},
      {"expert_count", "n_routed_experts"},
      {"expert_used_count", "n_activated_experts"},
      {"expert_feed_forward_length", "moe_inter_dim"},
      {"expert_shared_count", "n_shared_experts"},
      {"hash_layer_count", "n_hash_layers"},
      {"attention.sliding_window", "window_size"},
      {"attention.indexer.head_count", "index_n_heads"},
      {"attention.indexer.key_length", "index_head_dim"},
      {"attention.indexer.top_k", "index_topk"},
      {"hyper_connection.count", "hc_mult"},
      {"hyper_connection.sinkhorn_iterations", "hc_sinkhorn_iters"},
      {"rope.scaling.original_context_length", "original_seq_len"},
  };
  for (const auto& [key, field] : u32_keys) {
    const gguf::Value& v = f->require("deepseek4." + key);
    EXPECT_EQ(v.type, gguf::ValueType::UINT32) << key;
    EXPECT_EQ(v.u, c[field].get<uint64_t>()) << key << " vs " << field;
  }
  EXPECT_EQ(f->require_uint("deepseek4.attention.head_count_kv"), 1u);
  const std::vector<std::pair<std::string, std::string>> float_keys = {
      {"hyper_connection.epsilon", "hc_eps"},
      {"attention.layer_norm_rms_epsilon", "norm_eps"},
      {"attention.compress_rope_freq_base", "compress_rope_theta"},
      {"rope.freq_base", "rope_theta"},
      {"rope.scaling.factor", "rope_factor"},
      {"rope.scaling.yarn_beta_fast", "beta_fast"},
      {"rope.scaling.yarn_beta_slow", "beta_slow"},
      {"expert_weights_scale", "route_scale"},
  };
  for (const auto& [key, field] : float_keys) {
    const double want = c[field].get<double>();
    EXPECT_NEAR(f->require_float("deepseek4." + key), want, std::max(1.0, std::fabs(want)) * 1e-6) << key;
  }
  EXPECT_TRUE(f->get_bool_or("deepseek4.expert_weights_norm", false));
  // All n_layers + 1 ratios (the last is the MTP block's), as u32.
  const auto& cr = f->require("deepseek4.attention.compress_ratios");
  EXPECT_EQ(cr.elem_type, gguf::ValueType::UINT32);
  EXPECT_EQ(f->get_int_array("deepseek4.attention.compress_ratios"), c["compress_ratios"].get<std::vector<int64_t>>());
  const auto clamp = f->get_float_array("deepseek4.swiglu_clamp_exp");
  EXPECT_EQ(f->require("deepseek4.swiglu_clamp_exp").elem_type, gguf::ValueType::FLOAT32);
  ASSERT_EQ(clamp.size(), c["compress_ratios"].size());
  for (double x : clamp) EXPECT_NEAR(x, c["swiglu_limit"].get<double>(), 1e-6);
  // Tokenizer metadata: exactly vocab_size tokens.
  EXPECT_EQ(f->get_string_array("tokenizer.ggml.tokens").size(), c["vocab_size"].get<size_t>());
  EXPECT_EQ(f->require_string("tokenizer.ggml.model"), "gpt2");
}

// q8 keeps the published types; every tensor dequantizes close to the source.
struct Tolerance {
  quant::Type type;
  double max_rel_rms;
};

double rel_rms(const std::vector<float>& got, const float* want, size_t n) {
  double e = 0, s = 0;
  for (size_t i = 0; i < n; ++i) {
    e += (got[i] - want[i]) * static_cast<double>(got[i] - want[i]);
    s += static_cast<double>(want[i]) * want[i];
  }
  return s == 0 ? std::sqrt(e) : std::sqrt(e / s);
}

void expect_close_to_source(const std::string& cfg, const std::string& path,
                            const std::map<quant::Type, double>& tol) {
  const auto src = ds4test::read_safetensors(ds4test::oracle_dir(cfg) + "/model.safetensors");
  const auto f = gguf::File::open(path);
  size_t checked = 0;
  std::map<quant::Type, double> worst;
  for (const auto& [name, t] : src) {
    if (t.dtype != "F32") continue;
    const Target tg = gguf_target(name);
    const auto& g = f->require_tensor(tg.gguf);
    const std::vector<float> deq = dequantized(g);
    const size_t n = t.bytes.size() / 4;
    const float* want = reinterpret_cast<const float*>(t.bytes.data());
    const float* got_begin = deq.data() + (tg.expert >= 0 ? n * tg.expert : 0);
    std::vector<float> got(got_begin, got_begin + n);
    ASSERT_TRUE(tol.count(g.type)) << tg.gguf << " has unexpected type " << quant::type_name(g.type);
    const double err = rel_rms(got, want, n);
    EXPECT_LE(err, tol.at(g.type)) << name << " as " << quant::type_name(g.type);
    worst[g.type] = std::max(worst[g.type], err);
    ++checked;
  }
  EXPECT_GT(checked, 100u);
  for (const auto& [type, err] : worst) std::printf("  %s %s: worst relative RMS error %.4g\n", path.c_str(), std::string(quant::type_name(type)).c_str(), err);
}

const std::map<quant::Type, double> kTolerance = {
    // Worst seen on the oracle weights (Gaussian): F16 2.3e-4, Q8_0 0.0057, Q4_K 0.072,
    // Q2_K 0.30, IQ2_XXS 0.35.
    {quant::Type::F32, 0.0},   {quant::Type::F16, 5e-4},  {quant::Type::Q8_0, 0.008},
    {quant::Type::Q4_K, 0.09}, {quant::Type::Q2_K, 0.35}, {quant::Type::IQ2_XXS, 0.40},
};

TEST(OracleQ8, TinyAAndTinyQUsePublishedTypesAndStayClose) {
  for (const std::string cfg : {"tiny-a", "tiny-q"}) {
    DS4_SKIP_WITHOUT_ORACLE(cfg);  // tiny-a (vendored) is checked before tiny-q is looked for
    const std::string path = convert(cfg, "q8");
    const auto f = gguf::File::open(path);
    EXPECT_EQ(f->require_tensor("token_embd.weight").type, quant::Type::F16);
    EXPECT_EQ(f->require_tensor("output.weight").type, quant::Type::Q8_0);
    EXPECT_EQ(f->require_tensor("output_hc_fn.weight").type, quant::Type::F16);
    EXPECT_EQ(f->require_tensor("output_norm.weight").type, quant::Type::F32);
    EXPECT_EQ(f->require_tensor("blk.0.attn_q_a.weight").type, quant::Type::Q8_0);
    EXPECT_EQ(f->require_tensor("blk.0.attn_output_b.weight").type, quant::Type::Q8_0);
    EXPECT_EQ(f->require_tensor("blk.0.hc_attn_fn.weight").type, quant::Type::F16);
    EXPECT_EQ(f->require_tensor("blk.0.ffn_gate_inp.weight").type, quant::Type::F16);
    EXPECT_EQ(f->require_tensor("blk.0.ffn_gate_shexp.weight").type, quant::Type::Q8_0);
    EXPECT_EQ(f->require_tensor("blk.0.ffn_gate_exps.weight").type, quant::Type::Q8_0);
    EXPECT_EQ(f->require_tensor("blk.2.attn_compressor_kv.weight").type, quant::Type::F16);
    EXPECT_EQ(f->require_tensor("blk.2.attn_compressor_ape.weight").type, quant::Type::F16);
    EXPECT_EQ(f->require_tensor("blk.2.indexer.attn_q_b.weight").type, quant::Type::F16);
    EXPECT_EQ(f->require_tensor("blk.2.indexer.proj.weight").type, quant::Type::F16);
    EXPECT_EQ(f->require_tensor("blk.2.exp_probs_b.bias").type, quant::Type::F32);
    EXPECT_EQ(f->require_tensor("blk.2.attn_sinks.weight").type, quant::Type::F32);
    EXPECT_EQ(f->require_tensor("mtp.0.e_proj.weight").type, quant::Type::Q8_0);
    EXPECT_EQ(f->require_tensor("blk.0.ffn_gate_tid2eid.weight").type, quant::Type::I32);
    expect_close_to_source(cfg, path, kTolerance);
  }
}

TEST(OracleQ8, TinyBRowsThatDoNotFitAreAnErrorUnlessFallbackIsAsked) {
  DS4_SKIP_WITHOUT_ORACLE("tiny-b");
  // tiny-b: q_lora_rank 48 and moe_inter_dim 16 are not multiples of the Q8_0 block (32).
  try {
    convert("tiny-b", "q8");
    FAIL() << "expected an error";
  } catch (const convert::ConvertError& e) {
    EXPECT_NE(std::string(e.what()).find("attn_q_b.weight"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("Q8_0"), std::string::npos) << e.what();
  }
  const std::string path = convert("tiny-b", "q8", true);
  const auto f = gguf::File::open(path);
  EXPECT_EQ(f->require_tensor("blk.0.attn_q_b.weight").type, quant::Type::F16);  // 48-wide rows
  EXPECT_EQ(f->require_tensor("blk.0.ffn_down_shexp.weight").type, quant::Type::F16);  // 16-wide rows
  EXPECT_EQ(f->require_tensor("blk.0.attn_q_a.weight").type, quant::Type::Q8_0);  // 128-wide rows fit
  expect_close_to_source("tiny-b", path, kTolerance);
}

TEST(OracleQ2Q4, TinyQExpertsUseTheRecipeTypesAndStayClose) {
  DS4_SKIP_WITHOUT_ORACLE("tiny-q");
  const std::string q2 = convert("tiny-q", "q2");
  {
    const auto f = gguf::File::open(q2);
    for (const std::string p : {"blk.0.", "blk.4.", "mtp.0."}) {
      EXPECT_EQ(f->require_tensor(p + "ffn_gate_exps.weight").type, quant::Type::IQ2_XXS);
      EXPECT_EQ(f->require_tensor(p + "ffn_up_exps.weight").type, quant::Type::IQ2_XXS);
      EXPECT_EQ(f->require_tensor(p + "ffn_down_exps.weight").type, quant::Type::Q2_K);
      EXPECT_EQ(f->require_tensor(p + "ffn_gate_shexp.weight").type, quant::Type::Q8_0);
    }
  }
  expect_close_to_source("tiny-q", q2, kTolerance);
  const std::string q4 = convert("tiny-q", "q4");
  {
    const auto f = gguf::File::open(q4);
    EXPECT_EQ(f->require_tensor("blk.1.ffn_gate_exps.weight").type, quant::Type::Q4_K);
    EXPECT_EQ(f->require_tensor("blk.1.ffn_up_exps.weight").type, quant::Type::Q4_K);
    EXPECT_EQ(f->require_tensor("blk.1.ffn_down_exps.weight").type, quant::Type::Q4_K);
    EXPECT_EQ(f->require_tensor("blk.1.attn_kv.weight").type, quant::Type::Q8_0);
  }
  expect_close_to_source("tiny-q", q4, kTolerance);
}

TEST(OracleQ2Q4, RowsThatDoNotFitTheExpertBlockAreAnError) {
  // tiny-a experts have 64-wide rows; the 256-value K-quant blocks cannot hold them.
  for (const std::string r : {"q2", "q4"}) {
    try {
      convert("tiny-a", r);
      FAIL() << "expected an error for " << r;
    } catch (const convert::ConvertError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("blk.0.ffn_gate_exps.weight"), std::string::npos) << msg;
      EXPECT_NE(msg.find("64"), std::string::npos) << msg;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllConfigs, OracleTest, ::testing::Values("tiny-a", "tiny-b", "tiny-q"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& ch : s)
                             if (ch == '-') ch = '_';
                           return s;
                         });

}  // namespace
