// Checkpoint storage the real release uses (BF16, FP8 + block scales, packed FP4, I64, shards,
// Hugging Face config names) and malformed input.
#include <gtest/gtest.h>

#include <cmath>

#include "convert/convert.h"
#include "convert/safetensors.h"
#include "gguf/gguf.h"
#include "quant/quant.h"
#include "test_util.h"

using namespace ds4;
using ds4test::RawTensor;

namespace {

std::vector<float> as_floats(const RawTensor& t) {
  std::vector<float> v(t.bytes.size() / 4);
  std::memcpy(v.data(), t.bytes.data(), t.bytes.size());
  return v;
}

template <typename T>
RawTensor raw(std::string dtype, std::vector<uint64_t> shape, const std::vector<T>& v) {
  RawTensor t;
  t.dtype = std::move(dtype);
  t.shape = std::move(shape);
  t.bytes.resize(v.size() * sizeof(T));
  std::memcpy(t.bytes.data(), v.data(), t.bytes.size());
  return t;
}

int ceil_log2(double x) { return static_cast<int>(std::ceil(std::log2(x))); }

// FP8 e4m3 with one power-of-two scale per 128x128 block, like the official checkpoint.
// Returns the stored tensors and the values they decode to.
std::vector<float> to_fp8(const std::vector<float>& w, uint64_t rows, uint64_t cols, bool f32_scales,
                          RawTensor& weight, RawTensor& scale) {
  const uint64_t br = (rows + 127) / 128, bc = (cols + 127) / 128;
  std::vector<uint8_t> codes(rows * cols), sc8(br * bc);
  std::vector<float> scf(br * bc), decoded(rows * cols);
  for (uint64_t bi = 0; bi < br; ++bi)
    for (uint64_t bj = 0; bj < bc; ++bj) {
      double amax = 1e-4;
      for (uint64_t r = bi * 128; r < std::min(rows, bi * 128 + 128); ++r)
        for (uint64_t c = bj * 128; c < std::min(cols, bj * 128 + 128); ++c) amax = std::max(amax, std::fabs(double(w[r * cols + c])));
      const int e = ceil_log2(amax / 448.0);
      const float s = std::ldexp(1.0f, e);
      sc8[bi * bc + bj] = static_cast<uint8_t>(127 + e);
      scf[bi * bc + bj] = s;
      for (uint64_t r = bi * 128; r < std::min(rows, bi * 128 + 128); ++r)
        for (uint64_t c = bj * 128; c < std::min(cols, bj * 128 + 128); ++c) {
          const uint8_t q = quant::f32_to_fp8_e4m3(w[r * cols + c] / s);
          codes[r * cols + c] = q;
          decoded[r * cols + c] = quant::fp8_e4m3_to_f32(q) * s;
        }
    }
  weight = raw("F8_E4M3", {rows, cols}, codes);
  scale = f32_scales ? raw("F32", {br, bc}, scf) : raw("F8_E8M0", {br, bc}, sc8);
  return decoded;
}

// Packed FP4 e2m1 (low nibble = even element) with one e8m0 scale per 32 inputs.
std::vector<float> to_fp4(const std::vector<float>& w, uint64_t rows, uint64_t cols, RawTensor& weight,
                          RawTensor& scale) {
  std::vector<uint8_t> packed(rows * cols / 2, 0), sc(rows * cols / 32);
  std::vector<float> decoded(rows * cols);
  for (uint64_t r = 0; r < rows; ++r)
    for (uint64_t b = 0; b < cols / 32; ++b) {
      double amax = 6.0 * std::ldexp(1.0, -126);
      for (uint64_t c = b * 32; c < b * 32 + 32; ++c) amax = std::max(amax, std::fabs(double(w[r * cols + c])));
      const int e = ceil_log2(amax / 6.0);
      const float s = std::ldexp(1.0f, e);
      sc[r * (cols / 32) + b] = static_cast<uint8_t>(127 + e);
      for (uint64_t c = b * 32; c < b * 32 + 32; ++c) {
        const uint8_t q = quant::f32_to_fp4_e2m1(w[r * cols + c] / s);
        packed[(r * cols + c) / 2] |= static_cast<uint8_t>((c % 2 == 0) ? q : q << 4);
        decoded[r * cols + c] = quant::fp4_e2m1_to_f32(q) * s;
      }
    }
  weight = raw("I8", {rows, cols / 2}, packed);
  scale = raw("F8_E8M0", {rows, cols / 32}, sc);
  return decoded;
}

// tiny-q re-stored like the official release, sharded in two files with an index, and a
// Hugging Face style config.json. Returns the expected f32 value of every GGUF tensor.
std::map<std::string, std::vector<float>> make_official_style_checkpoint(const std::string& dir) {
  const auto src = ds4test::read_safetensors(ds4test::oracle_dir("tiny-q") + "/model.safetensors");
  std::map<std::string, RawTensor> shard[2];
  std::map<std::string, std::vector<float>> expect;  // keyed by official name
  std::map<std::string, std::vector<int32_t>> expect_ids;
  int n = 0;
  for (const auto& [name, t] : src) {
    auto& out = shard[(n++) % 2];
    if (t.dtype == "I32") {
      std::vector<int32_t> ids(t.bytes.size() / 4);
      std::memcpy(ids.data(), t.bytes.data(), t.bytes.size());
      out[name] = raw("I64", t.shape, std::vector<int64_t>(ids.begin(), ids.end()));
      continue;
    }
    const std::vector<float> w = as_floats(t);
    const bool is_expert = name.find(".ffn.experts.") != std::string::npos;
    const bool is_linear = name.size() > 7 && name.compare(name.size() - 7, 7, ".weight") == 0 && t.shape.size() == 2 &&
                           (name.find(".attn.w") != std::string::npos || name.find("shared_experts") != std::string::npos ||
                            name.find("_proj.weight") != std::string::npos);
    if (is_expert) {
      RawTensor q, s;
      expect[name] = to_fp4(w, t.shape[0], t.shape[1], q, s);
      out[name] = q;
      out[name.substr(0, name.size() - 7) + ".scale"] = s;
    } else if (is_linear) {
      RawTensor q, s;
      // wo_b keeps F32 block scales (both forms occur in the wild).
      expect[name] = to_fp8(w, t.shape[0], t.shape[1], name.find("wo_b") != std::string::npos, q, s);
      out[name] = q;
      out[name.substr(0, name.size() - 7) + ".scale"] = s;
    } else if (t.shape.size() == 2 && name.find("hc_") == std::string::npos && name.find(".ape") == std::string::npos) {
      // embed, head, router, compressor projections: BF16.
      std::vector<uint16_t> b(w.size());
      std::vector<float> d(w.size());
      for (size_t i = 0; i < w.size(); ++i) {
        b[i] = quant::f32_to_bf16(w[i]);
        d[i] = quant::bf16_to_f32(b[i]);
      }
      out[name] = raw("BF16", t.shape, b);
      expect[name] = d;
    } else {
      out[name] = t;
      expect[name] = w;
    }
  }
  std::filesystem::create_directories(dir);
  nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", nlohmann::json::object()}};
  for (int s = 0; s < 2; ++s) {
    const std::string file = "model-0000" + std::to_string(s + 1) + "-of-00002.safetensors";
    ds4test::write_file(dir + "/" + file, ds4test::make_safetensors(shard[s]));
    for (const auto& [name, t] : shard[s]) index["weight_map"][name] = file;
  }
  std::ofstream(dir + "/model.safetensors.index.json") << index.dump(2);
  // Hugging Face names for every field (the real Flash config.json's form).
  const auto c = ds4test::read_json(ds4test::oracle_dir("tiny-q") + "/config.json");
  nlohmann::json hf = {
      {"architectures", {"DeepseekV4ForCausalLM"}},
      {"model_type", "deepseek_v4"},
      {"vocab_size", c["vocab_size"]},
      {"hidden_size", c["dim"]},
      {"moe_intermediate_size", c["moe_inter_dim"]},
      {"num_hidden_layers", c["n_layers"]},
      {"num_hash_layers", c["n_hash_layers"]},
      {"num_nextn_predict_layers", c["n_mtp_layers"]},
      {"num_attention_heads", c["n_heads"]},
      {"num_key_value_heads", 1},
      {"n_routed_experts", c["n_routed_experts"]},
      {"n_shared_experts", c["n_shared_experts"]},
      {"num_experts_per_tok", c["n_activated_experts"]},
      {"scoring_func", c["score_func"]},
      {"routed_scaling_factor", c["route_scale"]},
      {"norm_topk_prob", true},
      {"swiglu_limit", c["swiglu_limit"]},
      {"q_lora_rank", c["q_lora_rank"]},
      {"head_dim", c["head_dim"]},
      {"qk_rope_head_dim", c["rope_head_dim"]},
      {"rms_norm_eps", c["norm_eps"]},
      {"o_groups", c["o_groups"]},
      {"o_lora_rank", c["o_lora_rank"]},
      {"sliding_window", c["window_size"]},
      {"compress_ratios", c["compress_ratios"]},
      {"compress_rope_theta", c["compress_rope_theta"]},
      {"rope_theta", c["rope_theta"]},
      {"rope_scaling",
       {{"type", "yarn"},
        {"factor", c["rope_factor"]},
        {"original_max_position_embeddings", c["original_seq_len"]},
        {"beta_fast", c["beta_fast"]},
        {"beta_slow", c["beta_slow"]}}},
      {"max_position_embeddings", 1048576},
      {"index_n_heads", c["index_n_heads"]},
      {"index_head_dim", c["index_head_dim"]},
      {"index_topk", c["index_topk"]},
      {"hc_mult", c["hc_mult"]},
      {"hc_sinkhorn_iters", c["hc_sinkhorn_iters"]},
      {"hc_eps", c["hc_eps"]},
      {"bos_token_id", 0},
      {"eos_token_id", 1},
      {"quantization_config", {{"fmt", "e4m3"}, {"weight_block_size", {128, 128}}}},
  };
  std::ofstream(dir + "/config.json") << hf.dump(2);
  return expect;
}

TEST(OfficialStorage, TinyQFp8Fp4Bf16I64ShardsAndHfConfigConvertExactly) {
  DS4_SKIP_WITHOUT_ORACLE("tiny-q");
  const std::string dir = ds4test::tmp_dir("official-style-tiny-q");
  const auto expect = make_official_style_checkpoint(dir);
  convert::ConvertOptions o;
  o.hf_dir = dir;
  o.out_path = ds4test::tmp_dir("out") + "/official-style-f32.gguf";
  o.recipe = convert::Recipe::F32;
  o.threads = 2;
  const auto rep = convert::convert_checkpoint(o);
  EXPECT_TRUE(rep.unused_sources.empty());
  const auto f = gguf::File::open(o.out_path);
  size_t checked = 0;
  for (const auto& [name, want] : expect) {
    const auto tg = ds4test::gguf_target(name);
    const auto& g = f->require_tensor(tg.gguf);
    ASSERT_EQ(g.type, quant::Type::F32);
    const float* got = reinterpret_cast<const float*>(g.data) + (tg.expert >= 0 ? want.size() * tg.expert : 0);
    size_t bad = 0;
    for (size_t i = 0; i < want.size(); ++i) bad += got[i] != want[i];
    EXPECT_EQ(bad, 0u) << name << " -> " << tg.gguf;
    ++checked;
  }
  EXPECT_EQ(checked, expect.size());
  // I64 hash table narrowed to I32; metadata from the HF names.
  EXPECT_EQ(f->require_tensor("blk.0.ffn_gate_tid2eid.weight").type, quant::Type::I32);
  EXPECT_EQ(f->require_uint("deepseek4.block_count"), 5u);
  EXPECT_EQ(f->require_uint("deepseek4.embedding_length"), 256u);
  EXPECT_EQ(f->require_uint("deepseek4.rope.scaling.original_context_length"), 65536u);
  EXPECT_NEAR(f->require_float("deepseek4.rope.scaling.factor"), 16.0, 1e-6);
  EXPECT_EQ(f->require_uint("deepseek4.context_length"), 1048576u);
  EXPECT_EQ(f->get_int_array("deepseek4.attention.compress_ratios"), (std::vector<int64_t>{0, 0, 4, 32, 4, 0}));
}

TEST(OfficialStorage, MtpSidecarAndNoMtp) {
  convert::ConvertOptions o;
  o.hf_dir = ds4test::oracle_dir("tiny-a");
  const std::string d = ds4test::tmp_dir("mtp");
  o.out_path = d + "/main.gguf";
  o.mtp_out_path = d + "/mtp.gguf";
  o.recipe = convert::Recipe::F32;
  convert::convert_checkpoint(o);
  const auto main = gguf::File::open(o.out_path);
  const auto mtp = gguf::File::open(o.mtp_out_path);
  for (const auto& t : main->tensors()) EXPECT_NE(t.name.rfind("mtp.", 0), 0u) << t.name;
  for (const auto& t : mtp->tensors()) EXPECT_EQ(t.name.rfind("mtp.0.", 0), 0u) << t.name;
  EXPECT_NE(mtp->find_tensor("mtp.0.e_proj.weight"), nullptr);
  EXPECT_NE(mtp->find_tensor("mtp.0.hc_head_fn.weight"), nullptr);
  EXPECT_NE(mtp->find_tensor("mtp.0.exp_probs_b.bias"), nullptr);
  EXPECT_EQ(mtp->find_tensor("mtp.0.attn_compressor_kv.weight"), nullptr);  // MTP ratio is 0
  const auto src = ds4test::read_safetensors(ds4test::oracle_dir("tiny-a") + "/model.safetensors");
  size_t n_mtp_src = 0, n_main_src = 0;
  for (const auto& [name, t] : src) (name.rfind("mtp.", 0) == 0 ? n_mtp_src : n_main_src)++;
  EXPECT_GT(n_mtp_src, 0u);
  EXPECT_EQ(main->tensors().size() + mtp->tensors().size(), 210u);
  o.mtp_out_path.clear();
  o.include_mtp = false;
  o.out_path = d + "/no-mtp.gguf";
  convert::convert_checkpoint(o);
  EXPECT_EQ(gguf::File::open(o.out_path)->tensors().size(), main->tensors().size());
}

// ---- malformed files ---------------------------------------------------------------------

std::vector<uint8_t> with_header(const std::string& header, size_t data_bytes) {
  const uint64_t n = header.size();
  uint8_t len[8];
  std::memcpy(len, &n, 8);
  std::vector<uint8_t> f(len, len + 8);
  f.reserve(8 + header.size() + data_bytes);
  for (char ch : header) f.push_back(static_cast<uint8_t>(ch));
  f.resize(f.size() + data_bytes, 0);
  return f;
}

void expect_rejected(const std::vector<uint8_t>& bytes, const std::string& fragment) {
  try {
    convert::SafetensorsFile::from_memory(bytes.data(), bytes.size(), "bad.safetensors");
    FAIL() << "accepted; expected an error containing '" << fragment << "'";
  } catch (const convert::ConvertError& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("bad.safetensors"), std::string::npos) << e.what();
  }
}

TEST(SafetensorsReader, RejectsMalformedFilesWithClearMessages) {
  expect_rejected({1, 2, 3}, "shorter than");
  expect_rejected({0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, '{', '}'}, "header length");
  expect_rejected(with_header("{not json", 0), "not valid JSON");
  expect_rejected(with_header("[1,2]", 0), "not a JSON object");
  expect_rejected(with_header(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", 8), "dtype");
  expect_rejected(with_header(R"({"a":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}})", 8), "unsupported dtype");
  expect_rejected(with_header(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8), "non-negative");
  expect_rejected(with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4), "outside");
  expect_rejected(with_header(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8), "needs 12");
  expect_rejected(with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12),
                  "overlap");
  expect_rejected(with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8]}})", 8), "data_offsets");
  expect_rejected(with_header(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8),
                  "overflow");
}

TEST(SafetensorsReader, ReadsAWellFormedFileAndChecksShapesAndDtypes) {
  const auto bytes = with_header(R"({"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"ids":{"dtype":"I64","shape":[2],"data_offsets":[16,32]}})", 32);
  std::vector<uint8_t> b = bytes;
  const float w[4] = {1, -2, 3.5f, 0};
  const int64_t ids[2] = {7, (int64_t)1 << 40};
  const size_t data = b.size() - 32;
  std::memcpy(b.data() + data, w, 16);
  std::memcpy(b.data() + data + 16, ids, 16);
  std::vector<std::unique_ptr<convert::SafetensorsFile>> files;
  files.push_back(convert::SafetensorsFile::from_memory(b.data(), b.size(), "ok.safetensors"));
  EXPECT_EQ(files[0]->metadata().at("format"), "pt");
  const auto ck = convert::Checkpoint::from_files(std::move(files));
  EXPECT_EQ(convert::read_float_tensor(ck.require("w"), {2, 2}), (std::vector<float>{1, -2, 3.5f, 0}));
  EXPECT_THROW(convert::read_float_tensor(ck.require("w"), {4}), convert::ConvertError);
  EXPECT_THROW(convert::read_float_tensor(ck.require("ids"), {2}), convert::ConvertError);
  try {
    convert::read_int_tensor(ck.require("ids"), {2});
    FAIL();
  } catch (const convert::ConvertError& e) {
    EXPECT_NE(std::string(e.what()).find("does not fit int32"), std::string::npos) << e.what();
  }
  EXPECT_THROW(ck.require("missing"), convert::ConvertError);
}

// ---- the binary --------------------------------------------------------------------------

std::string q(const std::string& s) { return "'" + s + "'"; }

TEST(Cli, TruncatedAndCorruptCheckpointsExitOneWithAMessage) {
  const std::string dir = ds4test::tmp_dir("cli-truncated");
  std::filesystem::copy_file(ds4test::oracle_dir("tiny-a") + "/config.json", dir + "/config.json",
                             std::filesystem::copy_options::overwrite_existing);
  auto full = ds4test::read_file(ds4test::oracle_dir("tiny-a") + "/model.safetensors");
  full.resize(full.size() / 2);
  ds4test::write_file(dir + "/model.safetensors", full);
  auto r = ds4test::run(ds4test::quantize_bin() + " --hf " + q(dir) + " --out " + q(dir + "/x.gguf") + " --recipe f32");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("model.safetensors"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("truncated"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir + "/x.gguf"));

  ds4test::write_file(dir + "/model.safetensors", {0x0c, 0, 0, 0, 0, 0, 0, 0, '{', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', '}'});
  r = ds4test::run(ds4test::quantize_bin() + " --hf " + q(dir) + " --out " + q(dir + "/x.gguf") + " --recipe f32");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("not valid JSON"), std::string::npos) << r.output;

  r = ds4test::run(ds4test::quantize_bin() + " --hf " + q(dir + "/nowhere") + " --out " + q(dir + "/x.gguf") + " --recipe f32");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("config.json"), std::string::npos) << r.output;

  // A missing tensor is named.
  auto src = ds4test::read_safetensors(ds4test::oracle_dir("tiny-a") + "/model.safetensors");
  src.erase("layers.3.attn.wkv.weight");
  ds4test::write_file(dir + "/model.safetensors", ds4test::make_safetensors(src));
  r = ds4test::run(ds4test::quantize_bin() + " --hf " + q(dir) + " --out " + q(dir + "/x.gguf") + " --recipe q8");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("layers.3.attn.wkv.weight"), std::string::npos) << r.output;
}

TEST(Cli, BadArgumentsExitTwoAndHelpExitsZero) {
  const auto bin = ds4test::quantize_bin();
  auto r = ds4test::run(bin + " --help");
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.output.find("--recipe"), std::string::npos);
  EXPECT_NE(r.output.find("--synthetic"), std::string::npos);
  for (const std::string args : {"", "--bogus", "--hf x --out y.gguf --recipe q3", "--hf x --recipe f32",
                                 "--synthetic c.json --out y --recipe f32 --layers abc", "--hf a --synthetic b --out c --recipe f32",
                                 "--inspect", "--hf x --out y --recipe f32 --layers 2"}) {
    r = ds4test::run(bin + " " + args);
    EXPECT_EQ(r.status, 2) << "args: " << args << "\n" << r.output;
    EXPECT_FALSE(r.output.empty());
  }
  r = ds4test::run(bin + " --hf " + ds4test::oracle_dir("tiny-a") + " --out " + ds4test::tmp_dir("cli") + "/a.gguf --recipe q2");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("blk.0.ffn_gate_exps.weight"), std::string::npos) << r.output;
  r = ds4test::run(bin + " --inspect " + ds4test::oracle_dir("tiny-a") + "/config.json");
  EXPECT_EQ(r.status, 1) << r.output;
}

TEST(Cli, InspectTinyQShowsSpecNamesTypesAndDims) {
  DS4_SKIP_WITHOUT_ORACLE("tiny-q");
  const std::string out = ds4test::tmp_dir("cli") + "/tiny-q-q4.gguf";
  auto r = ds4test::run(ds4test::quantize_bin() + " --hf " + ds4test::oracle_dir("tiny-q") + " --out " + q(out) + " --recipe q4");
  ASSERT_EQ(r.status, 0) << r.output;
  r = ds4test::run(ds4test::quantize_bin() + " --inspect " + q(out));
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string& s = r.output;
  EXPECT_NE(s.find("general.architecture = string \"deepseek4\""), std::string::npos) << s;
  EXPECT_NE(s.find("deepseek4.attention.compress_ratios = [u32 x 6] 0, 0, 4, 32, 4, 0"), std::string::npos) << s;
  EXPECT_NE(s.find("tokenizer.ggml.tokens = [string x 1024]"), std::string::npos) << s;
  EXPECT_NE(s.find("more)"), std::string::npos) << s;  // long arrays abbreviated
  const std::regex row_q4(R"(blk\.2\.ffn_down_exps\.weight\s+Q4_K\s+\[256, 256, 4\]\s+147456)");
  EXPECT_TRUE(std::regex_search(s, row_q4)) << s;
  const std::regex row_emb(R"(token_embd\.weight\s+F16\s+\[256, 1024\]\s+524288)");
  EXPECT_TRUE(std::regex_search(s, row_emb)) << s;
  const std::regex row_ape(R"(blk\.2\.attn_compressor_ape\.weight\s+F16\s+\[256, 4\])");
  EXPECT_TRUE(std::regex_search(s, row_ape)) << s;
  EXPECT_NE(s.find("total: "), std::string::npos);
}

TEST(Cli, DequantizeTinyQTurnsEveryTensorIntoF32WithTheSameValues) {
  DS4_SKIP_WITHOUT_ORACLE("tiny-q");
  const std::string d = ds4test::tmp_dir("cli");
  auto r = ds4test::run(ds4test::quantize_bin() + " --hf " + ds4test::oracle_dir("tiny-q") + " --out " + q(d + "/q2.gguf") + " --recipe q2");
  ASSERT_EQ(r.status, 0) << r.output;
  r = ds4test::run(ds4test::quantize_bin() + " --dequantize " + q(d + "/q2.gguf") + " " + q(d + "/q2-deq.gguf"));
  ASSERT_EQ(r.status, 0) << r.output;
  const auto a = gguf::File::open(d + "/q2.gguf");
  const auto b = gguf::File::open(d + "/q2-deq.gguf");
  ASSERT_EQ(a->tensors().size(), b->tensors().size());
  EXPECT_EQ(b->require_string("general.architecture"), "deepseek4");
  EXPECT_EQ(b->get_string_array("tokenizer.ggml.tokens"), a->get_string_array("tokenizer.ggml.tokens"));
  for (const auto& t : a->tensors()) {
    const auto& u = b->require_tensor(t.name);
    EXPECT_EQ(u.dims, t.dims);
    if (t.type == quant::Type::I32) {
      EXPECT_EQ(u.type, quant::Type::I32);
      EXPECT_EQ(std::memcmp(u.data, t.data, t.nbytes), 0);
      continue;
    }
    ASSERT_EQ(u.type, quant::Type::F32) << t.name;
    const uint64_t cols = t.ne(0);
    std::vector<float> row(cols);
    for (uint64_t rr = 0; rr < t.n_elements() / cols; rr += 7) {
      quant::dequantize_row(t.type, t.data + rr * t.row_bytes(), row.data(), static_cast<int64_t>(cols));
      ASSERT_EQ(std::memcmp(row.data(), u.data + rr * cols * 4, cols * 4), 0) << t.name << " row " << rr;
    }
  }
}

}  // namespace
