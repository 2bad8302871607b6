// Synthetic models, vocabularies and importance matrices.
#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <tuple>

#include "convert/convert.h"
#include "convert/imatrix.h"
#include "convert/safetensors.h"
#include "convert/vocab.h"
#include "gguf/gguf.h"
#include "model/catalogue.h"
#include "model/config.h"
#include "model/weights.h"
#include "quant/quant.h"
#include "test_util.h"

using namespace ds4;

namespace {

std::string configs_dir() { return std::string(DS4_SOURCE_DIR) + "/src/convert/configs"; }

std::string synth(const std::string& config, const std::string& recipe, uint32_t layers, uint64_t seed,
                  const std::string& tag, int threads = 2, const std::string& tokenizer = "") {
  convert::SyntheticOptions o;
  o.config_path = config;
  o.out_path = ds4test::tmp_dir("synth") + "/" + tag + ".gguf";
  o.recipe = *convert::parse_recipe(recipe);
  o.layers = layers;
  o.seed = seed;
  o.threads = threads;
  o.tokenizer_path = tokenizer;
  convert::write_synthetic(o);
  return o.out_path;
}

std::vector<float> dequantized(const gguf::TensorInfo& t) {
  std::vector<float> out(t.n_elements());
  const uint64_t cols = t.ne(0), rows = t.n_elements() / cols;
  for (uint64_t r = 0; r < rows; ++r)
    quant::dequantize_row(t.type, t.data + r * t.row_bytes(), out.data() + r * cols, static_cast<int64_t>(cols));
  return out;
}

void stats(const std::vector<float>& v, double& mean, double& sd) {
  double s = 0, s2 = 0;
  for (float x : v) {
    s += x;
    s2 += double(x) * x;
  }
  mean = s / v.size();
  sd = std::sqrt(std::max(0.0, s2 / v.size() - mean * mean));
}

// The tensor list docs/gguf.md derives for a config, counted independently of the converter.
size_t expected_tensor_count(const nlohmann::json& c, uint32_t layers, bool mtp) {
  const auto ratios = c["compress_ratios"].get<std::vector<int>>();
  const uint32_t n_layers = c["n_layers"];
  size_t n = 6;  // global
  for (uint32_t il = 0; il < layers; ++il) {
    n += 24;  // 23 always + one of tid2eid / exp_probs_b
    if (ratios[il] != 0) n += 4;
    if (ratios[il] == 4) n += 6;
  }
  if (mtp) {
    const int r = ratios.size() > n_layers ? ratios[n_layers] : 0;
    n += 24 + 8 + (r != 0 ? 4 : 0) + (r == 4 ? 6 : 0);
  }
  return n;
}

TEST(Synthetic, TinyModelHasTheSpecCatalogueAndSaneValues) {
  const std::string cfg_path = configs_dir() + "/tiny-synth-1k.json";
  const auto c = ds4test::read_json(cfg_path);
  const std::string path = synth(cfg_path, "q2", 0, 5, "tiny-1k-q2");
  const auto f = gguf::File::open(path);
  EXPECT_EQ(f->tensors().size(), expected_tensor_count(c, c["n_layers"], true));
  EXPECT_EQ(f->require_uint("deepseek4.block_count"), c["n_layers"].get<uint64_t>());
  EXPECT_EQ(f->get_string_array("tokenizer.ggml.tokens").size(), 1024u);
  const uint64_t D = c["dim"], F = c["moe_inter_dim"], E = c["n_routed_experts"], V = c["vocab_size"];
  const auto& gate = f->require_tensor("blk.3.ffn_gate_exps.weight");
  EXPECT_EQ(gate.type, quant::Type::IQ2_XXS);
  EXPECT_EQ(gate.dims, (std::vector<uint64_t>{D, F, E}));
  const auto& down = f->require_tensor("blk.3.ffn_down_exps.weight");
  EXPECT_EQ(down.type, quant::Type::Q2_K);
  EXPECT_EQ(down.dims, (std::vector<uint64_t>{F, D, E}));
  EXPECT_EQ(f->require_tensor("token_embd.weight").dims, (std::vector<uint64_t>{D, V}));
  EXPECT_EQ(f->require_tensor("blk.2.indexer_compressor_ape.weight").dims,
            (std::vector<uint64_t>{2 * c["index_head_dim"].get<uint64_t>(), 4}));
  EXPECT_EQ(f->require_tensor("blk.3.attn_compressor_ape.weight").dims,
            (std::vector<uint64_t>{c["head_dim"].get<uint64_t>(), 16}));
  // Linear weights N(0, 1/fan_in) whatever their storage, norms near 1, HC scales in [0.5, 1.5].
  for (const std::string name : {"blk.3.ffn_gate_exps.weight", "blk.3.ffn_down_exps.weight", "blk.1.attn_q_b.weight",
                                 "output.weight", "blk.0.ffn_up_shexp.weight", "blk.2.attn_compressor_kv.weight"}) {
    const auto& t = f->require_tensor(name);
    double mean, sd;
    stats(dequantized(t), mean, sd);
    const double want = 1.0 / std::sqrt(double(t.ne(0)));
    EXPECT_NEAR(sd / want, 1.0, 0.15) << name << " (" << quant::type_name(t.type) << ")";
    EXPECT_LT(std::fabs(mean), 0.1 * want) << name;
  }
  double mean, sd;
  stats(dequantized(f->require_tensor("token_embd.weight")), mean, sd);
  EXPECT_NEAR(sd, 1.0, 0.05);
  stats(dequantized(f->require_tensor("blk.1.attn_norm.weight")), mean, sd);
  EXPECT_NEAR(mean, 1.0, 0.05);
  EXPECT_LT(sd, 0.2);
  for (float x : dequantized(f->require_tensor("blk.1.hc_ffn_scale.weight"))) {
    EXPECT_GE(x, 0.5f);
    EXPECT_LE(x, 1.5f);
  }
  // Hash table: k distinct valid experts per token.
  const auto& tid = f->require_tensor("blk.0.ffn_gate_tid2eid.weight");
  const uint32_t k = c["n_activated_experts"];
  ASSERT_EQ(tid.type, quant::Type::I32);
  ASSERT_EQ(tid.dims, (std::vector<uint64_t>{k, V}));
  const int32_t* ids = reinterpret_cast<const int32_t*>(tid.data);
  std::set<int32_t> used;
  for (uint64_t t = 0; t < V; ++t) {
    std::set<int32_t> row(ids + t * k, ids + t * k + k);
    EXPECT_EQ(row.size(), k);
    for (int32_t e : row) {
      EXPECT_GE(e, 0);
      EXPECT_LT(e, static_cast<int32_t>(E));
      used.insert(e);
    }
  }
  EXPECT_EQ(used.size(), E);
}

TEST(Synthetic, DeterministicAcrossThreadCountsAndSeedsMatter) {
  const std::string cfg = configs_dir() + "/tiny-synth-1k.json";
  const auto a = ds4test::read_file(synth(cfg, "q4", 2, 9, "det-a", 1));
  const auto b = ds4test::read_file(synth(cfg, "q4", 2, 9, "det-b", 2));
  const auto c = ds4test::read_file(synth(cfg, "q4", 2, 10, "det-c", 2));
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_EQ(a.size(), c.size());
}

TEST(Synthetic, LayersKeepsTheScheduleHeadAndTheMtpEntry) {
  const auto flash = ds4test::read_json(configs_dir() + "/flash.json");
  // Flash with 4 layers and a small vocabulary would still be large; check the schedule on a
  // tiny config and the Flash metadata through the config parser.
  const std::string path = synth(configs_dir() + "/tiny-synth-1k.json", "f32", 3, 1, "layers3");
  const auto f = gguf::File::open(path);
  EXPECT_EQ(f->require_uint("deepseek4.block_count"), 3u);
  EXPECT_EQ(f->get_int_array("deepseek4.attention.compress_ratios"), (std::vector<int64_t>{0, 0, 4, 0}));
  EXPECT_EQ(f->get_float_array("deepseek4.swiglu_clamp_exp").size(), 4u);
  EXPECT_NE(f->find_tensor("mtp.0.e_proj.weight"), nullptr);
  EXPECT_EQ(f->find_tensor("blk.3.attn_norm.weight"), nullptr);
  const auto cfg = convert::truncate_layers(convert::load_model_config(configs_dir() + "/flash.json"), 4);
  EXPECT_EQ(cfg.compress_ratios, (std::vector<int>{0, 0, 4, 128, 0}));
  EXPECT_EQ(cfg.swiglu_limit.size(), 5u);
  EXPECT_EQ(cfg.n_hash_layers, 3);
  const auto full = convert::load_model_config(configs_dir() + "/flash.json");
  EXPECT_EQ(full.compress_ratios.size(), 44u);
  // docs/gguf.md: 6 + 43·24 + 41·4 + 21·6 = 1328 main tensors.
  EXPECT_EQ(convert::build_catalogue(full, false).size(), 1328u);
  EXPECT_EQ(flash["n_layers"], 43);
}

TEST(Synthetic, FlashShapesPlanTheRecipeTypes) {
  const auto full = convert::load_model_config(configs_dir() + "/flash.json");
  const auto plan = convert::plan_tensors(convert::build_catalogue(full, true), convert::Recipe::Q2, false);
  std::map<std::string, const convert::PlannedTensor*> by;
  for (const auto& p : plan) by[p.spec.gguf_name] = &p;
  EXPECT_EQ(by.at("blk.10.ffn_gate_exps.weight")->type, quant::Type::IQ2_XXS);
  EXPECT_EQ(by.at("blk.10.ffn_down_exps.weight")->type, quant::Type::Q2_K);
  EXPECT_EQ(by.at("blk.10.ffn_gate_exps.weight")->spec.dims, (std::vector<uint64_t>{4096, 2048, 256}));
  EXPECT_EQ(by.at("blk.10.attn_q_b.weight")->spec.dims, (std::vector<uint64_t>{1024, 32768}));
  EXPECT_EQ(by.at("blk.10.attn_output_a.weight")->spec.dims, (std::vector<uint64_t>{4096, 8192}));
  EXPECT_EQ(by.at("blk.10.attn_compressor_ape.weight")->spec.dims, (std::vector<uint64_t>{1024, 4}));
  EXPECT_EQ(by.at("blk.11.attn_compressor_ape.weight")->spec.dims, (std::vector<uint64_t>{512, 128}));
  EXPECT_EQ(by.at("blk.10.indexer.attn_q_b.weight")->spec.dims, (std::vector<uint64_t>{1024, 8192}));
  EXPECT_EQ(by.at("blk.10.indexer_compressor_kv.weight")->spec.dims, (std::vector<uint64_t>{4096, 256}));
  EXPECT_EQ(by.at("blk.1.ffn_gate_tid2eid.weight")->spec.dims, (std::vector<uint64_t>{6, 129280}));
  EXPECT_EQ(by.at("output_hc_fn.weight")->spec.dims, (std::vector<uint64_t>{16384, 4}));
  EXPECT_EQ(by.at("blk.0.hc_attn_fn.weight")->spec.dims, (std::vector<uint64_t>{16384, 24}));
  EXPECT_EQ(by.at("mtp.0.e_proj.weight")->type, quant::Type::Q8_0);
  EXPECT_EQ(by.count("blk.2.exp_probs_b.bias"), 0u);
  EXPECT_EQ(by.count("blk.3.exp_probs_b.bias"), 1u);
  // IQ2_XXS blocks: 66 bytes per 256 values.
  EXPECT_EQ(by.at("blk.10.ffn_up_exps.weight")->nbytes, 4096ull / 256 * 66 * 2048 * 256);
}

// ---- vocabularies ------------------------------------------------------------------------

TEST(Vocab, SyntheticByteLevelVocabularyIsCompleteAndConsistent) {
  for (uint32_t n : {264u, 512u, 129280u}) {
    const auto v = convert::make_synthetic_vocab(n);
    ASSERT_EQ(v.tokens.size(), n);
    ASSERT_EQ(v.token_types.size(), n);
    std::set<std::string> texts(v.tokens.begin(), v.tokens.end());
    EXPECT_EQ(texts.size(), n) << "duplicate token texts";
    EXPECT_EQ(v.tokens[0], "<｜begin▁of▁sentence｜>");
    EXPECT_EQ(v.tokens[1], "<｜end▁of▁sentence｜>");
    for (const auto& s : convert::ds4_special_tokens()) EXPECT_TRUE(texts.count(s.text)) << s.text;
    if (n == 129280) {
      EXPECT_EQ(v.tokens[128803], "<｜User｜>");
      EXPECT_EQ(v.tokens[128804], "<｜Assistant｜>");
      EXPECT_EQ(v.tokens[128821], "<think>");
      EXPECT_EQ(v.tokens[128822], "</think>");
      EXPECT_EQ(v.tokens[128825], "｜DSML｜");
      EXPECT_EQ(v.tokens[128828], "<｜latest_reminder｜>");
    }
    for (int b = 0; b < 256; ++b) EXPECT_TRUE(texts.count(convert::byte_token(static_cast<uint8_t>(b)))) << b;
    // Every merge joins two existing tokens into a token of the vocabulary.
    EXPECT_EQ(v.merges.size(), n - 8 - 256);
    std::set<std::string> known;
    for (int b = 0; b < 256; ++b) known.insert(convert::byte_token(static_cast<uint8_t>(b)));
    for (const auto& m : v.merges) {
      const auto sp = m.find(' ');
      ASSERT_NE(sp, std::string::npos);
      ASSERT_EQ(m.find(' ', sp + 1), std::string::npos) << m;
      const std::string l = m.substr(0, sp), r = m.substr(sp + 1);
      EXPECT_TRUE(known.count(l) && known.count(r)) << m;
      EXPECT_TRUE(texts.count(l + r)) << m;
      known.insert(l + r);
    }
  }
  EXPECT_THROW(convert::make_synthetic_vocab(263), convert::ConvertError);
}

TEST(Vocab, GptTwoByteForm) {
  EXPECT_EQ(convert::byte_token('a'), "a");
  EXPECT_EQ(convert::byte_token(' '), "Ġ");
  EXPECT_EQ(convert::byte_token('\n'), "Ċ");
  EXPECT_EQ(convert::byte_token(0), "Ā");
  EXPECT_EQ(convert::byte_token(0xAD), "Ń");
  EXPECT_EQ(convert::byte_token(0xFF), "ÿ");
}

TEST(Vocab, RealTokenizerWithV4SpecialTokens) {
  const std::string path = synth(configs_dir() + "/tiny-synth.json", "q8", 2, 3, "real-vocab", 2, ds4test::real_tokenizer());
  const auto f = gguf::File::open(path);
  const auto tokens = f->get_string_array("tokenizer.ggml.tokens");
  ASSERT_EQ(tokens.size(), 129280u);
  EXPECT_EQ(tokens[0], "<｜begin▁of▁sentence｜>");
  EXPECT_EQ(tokens[1], "<｜end▁of▁sentence｜>");
  EXPECT_EQ(tokens[128803], "<｜User｜>");
  EXPECT_EQ(tokens[128804], "<｜Assistant｜>");
  EXPECT_EQ(tokens[128821], "<think>");
  EXPECT_EQ(tokens[128822], "</think>");
  EXPECT_EQ(tokens[128825], "｜DSML｜");
  EXPECT_EQ(tokens[128828], "<｜latest_reminder｜>");
  const auto tj = ds4test::read_json(ds4test::real_tokenizer());
  EXPECT_EQ(f->get_string_array("tokenizer.ggml.merges").size(), tj["model"]["merges"].size());
  EXPECT_EQ(f->get_string_array("tokenizer.ggml.merges")[0], tj["model"]["merges"][0].get<std::string>());
  EXPECT_EQ(tokens[1000], [&] {
    for (auto it = tj["model"]["vocab"].begin(); it != tj["model"]["vocab"].end(); ++it)
      if (it.value() == 1000) return it.key();
    return std::string();
  }());
  EXPECT_EQ(f->require_string("tokenizer.ggml.pre"), "deepseek-v3");
  EXPECT_EQ(f->get_int_array("tokenizer.ggml.token_type").size(), 129280u);
  EXPECT_EQ(f->require_uint("tokenizer.ggml.bos_token_id"), 0u);
  EXPECT_EQ(f->require_uint("tokenizer.ggml.eos_token_id"), 1u);
  // A model whose vocabulary cannot hold the tokenizer is an error.
  try {
    convert::load_tokenizer_vocab(ds4test::real_tokenizer(), 1024);
    FAIL();
  } catch (const convert::ConvertError& e) {
    EXPECT_NE(std::string(e.what()).find("1024"), std::string::npos) << e.what();
  }
}

// ---- importance matrices -----------------------------------------------------------------

void write_legacy_imatrix(const std::string& path, const std::map<std::string, std::vector<float>>& entries,
                          int32_t ncall) {
  std::ofstream out(path, std::ios::binary);
  auto i32 = [&](int32_t v) { out.write(reinterpret_cast<const char*>(&v), 4); };
  i32(static_cast<int32_t>(entries.size()));
  for (const auto& [name, v] : entries) {
    i32(static_cast<int32_t>(name.size()));
    out.write(name.data(), static_cast<std::streamsize>(name.size()));
    i32(ncall);
    i32(static_cast<int32_t>(v.size()));
    out.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * 4));
  }
  i32(10);
  const std::string ds = "test-data";
  i32(static_cast<int32_t>(ds.size()));
  out.write(ds.data(), static_cast<std::streamsize>(ds.size()));
}

TEST(Imatrix, LegacyAndGgufFormatsAreReadAndSteerTheQuantizerOnTinyQ) {
  DS4_SKIP_WITHOUT_ORACLE("tiny-q");
  const std::string d = ds4test::tmp_dir("imatrix");
  // Importance 10x higher on the first 16 columns of every expert of layer 1's gate (IQ2_XXS
  // under q2) and down (Q2_K) projections.
  const uint64_t cols = 256, E = 4;
  std::vector<float> imp(cols * E, 1.0f * 8);  // stored as sums over 8 calls
  for (uint64_t e = 0; e < E; ++e)
    for (uint64_t c = 0; c < 16; ++c) imp[e * cols + c] = 10.0f * 8;
  write_legacy_imatrix(d + "/legacy.dat", {{"blk.1.ffn_gate_exps.weight", imp}, {"blk.1.ffn_down_exps.weight", imp}}, 8);
  const auto im = convert::Imatrix::load(d + "/legacy.dat");
  EXPECT_EQ(im.format(), "legacy-dat");
  ASSERT_NE(im.find("blk.1.ffn_gate_exps.weight", "", cols, 2, E), nullptr);
  EXPECT_FLOAT_EQ(im.find("blk.1.ffn_gate_exps.weight", "", cols, 2, E)[0], 10.0f);  // divided by ncall
  EXPECT_FLOAT_EQ(im.find("blk.1.ffn_gate_exps.weight", "", cols, 2, E)[16], 1.0f);
  EXPECT_EQ(im.find("blk.2.ffn_gate_exps.weight", "", cols, 0, E), nullptr);
  EXPECT_THROW(im.find("blk.1.ffn_gate_exps.weight", "", 128, 0, E), convert::ConvertError);

  // GGUF form: in_sum2 [cols, E] and counts [1, E].
  gguf::Writer w;
  std::vector<uint8_t> sums(cols * E * 4), counts(E * 4);
  std::vector<float> s(imp), n(E, 8.0f);
  std::memcpy(sums.data(), s.data(), sums.size());
  std::memcpy(counts.data(), n.data(), counts.size());
  w.add_tensor("blk.1.ffn_gate_exps.weight.in_sum2", quant::Type::F32, {cols, E}, sums);
  w.add_tensor("blk.1.ffn_gate_exps.weight.counts", quant::Type::F32, {1, E}, counts);
  w.write(d + "/imatrix.gguf");
  const auto ig = convert::Imatrix::load(d + "/imatrix.gguf");
  EXPECT_EQ(ig.format(), "gguf");
  ASSERT_NE(ig.find("blk.1.ffn_gate_exps.weight", "", cols, 3, E), nullptr);
  EXPECT_FLOAT_EQ(ig.find("blk.1.ffn_gate_exps.weight", "", cols, 3, E)[0], 10.0f);

  // Converting with it lowers the error on the important columns of that tensor.
  auto run = [&](const std::string& imatrix, const std::string& out) {
    convert::ConvertOptions o;
    o.hf_dir = ds4test::oracle_dir("tiny-q");
    o.out_path = d + "/" + out;
    o.recipe = convert::Recipe::Q2;
    o.imatrix_path = imatrix;
    o.threads = 2;
    convert::convert_checkpoint(o);
    return gguf::File::open(o.out_path);
  };
  const auto plain = run("", "plain.gguf");
  const auto steered = run(d + "/legacy.dat", "steered.gguf");
  EXPECT_EQ(steered->get_string_or("quantize.imatrix.file", ""), d + "/legacy.dat");
  const auto src = ds4test::read_safetensors(ds4test::oracle_dir("tiny-q") + "/model.safetensors");
  auto err_first_cols = [&](const gguf::File& f, const std::string& gguf_name, const std::string& w) {
    const auto deq = dequantized(f.require_tensor(gguf_name));
    double e = 0;
    for (uint64_t x = 0; x < E; ++x) {
      const auto& t = src.at("layers.1.ffn.experts." + std::to_string(x) + "." + w + ".weight");
      const float* w0 = reinterpret_cast<const float*>(t.bytes.data());
      for (uint64_t r = 0; r < 256; ++r)
        for (uint64_t c = 0; c < 16; ++c) {
          const double diff = deq[x * 256 * cols + r * cols + c] - w0[r * cols + c];
          e += diff * diff;
        }
    }
    return e;
  };
  const double gate_plain = err_first_cols(*plain, "blk.1.ffn_gate_exps.weight", "w1");
  const double gate_steered = err_first_cols(*steered, "blk.1.ffn_gate_exps.weight", "w1");
  const double down_plain = err_first_cols(*plain, "blk.1.ffn_down_exps.weight", "w2");
  const double down_steered = err_first_cols(*steered, "blk.1.ffn_down_exps.weight", "w2");
  std::printf("  important-column error: IQ2_XXS %.4g -> %.4g, Q2_K %.4g -> %.4g\n", gate_plain, gate_steered,
              down_plain, down_steered);
  EXPECT_LT(gate_steered, 0.98 * gate_plain);
  EXPECT_LT(down_steered, 0.9 * down_plain);
  // Other tensors are untouched by an imatrix that does not name them.
  const auto& a = plain->require_tensor("blk.2.ffn_gate_exps.weight");
  const auto& b = steered->require_tensor("blk.2.ffn_gate_exps.weight");
  EXPECT_EQ(std::memcmp(a.data, b.data, a.nbytes), 0);
}

}  // namespace

// The converter and the loader share one schema: what ds4-quantize writes, the loader reads
// back as the same hyperparameters, and the file holds exactly the catalogue's tensors.
TEST(Synthetic, LoaderReadsBackWhatTheConverterWrote) {
  const std::string config = configs_dir() + "/tiny-synth.json";
  const std::string path = synth(config, "f32", 0, 5, "schema-roundtrip");
  convert::ModelConfig want = convert::load_model_config(config);
  auto f = gguf::File::open(path);
  want.name = f->get_string_or("general.name", "");
  EXPECT_EQ(want.name, "synthetic-tiny-synth");
  const model::ModelConfig got = model::read_config(*f);
  const auto fields = [](const model::ModelConfig& c) {
    return std::tie(c.name, c.n_layers, c.n_mtp_layers, c.dim, c.vocab, c.n_heads, c.n_kv_heads, c.head_dim,
                    c.rope_dim, c.q_lora_rank, c.o_lora_rank, c.o_groups, c.n_experts, c.n_experts_used,
                    c.moe_inter_dim, c.n_shared_experts, c.n_hash_layers, c.window, c.index_heads, c.index_head_dim,
                    c.index_topk, c.hc, c.sinkhorn_iters, c.hc_eps, c.norm_eps, c.compress_ratios, c.swiglu_limit,
                    c.rope_base, c.compress_rope_base, c.yarn_factor, c.yarn_orig_ctx, c.yarn_beta_fast,
                    c.yarn_beta_slow, c.route_scale, c.weights_norm, c.context_length);
  };
  EXPECT_TRUE(fields(got) == fields(want)) << "loader and converter disagree on the hyperparameters";
  EXPECT_EQ(got.n_mtp_layers, 1);
  EXPECT_EQ(got.compress_ratios, want.compress_ratios);
  EXPECT_EQ(got.swiglu_limit, want.swiglu_limit);

  std::set<std::string> in_file, in_catalogue;
  for (const auto& t : f->tensors()) in_file.insert(t.name);
  for (const auto& t : model::build_catalogue(got, true)) in_catalogue.insert(t.gguf_name);
  EXPECT_EQ(in_file, in_catalogue);
  const auto w = model::Weights::load(path, "");
  EXPECT_TRUE(w->has_mtp);
  EXPECT_EQ(static_cast<int>(w->layers.size()), got.n_layers);
}
