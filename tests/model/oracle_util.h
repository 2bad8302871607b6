// Helpers for comparing the engine with the reference oracle files (tests/data/README.md).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <ostream>
#include <tuple>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "ds4/engine.h"
#include "test_data.h"

namespace ds4::test {

using ds4::testdata::oracle_dir;

// GGUFs written by the convert_oracle_ggufs fixture.
inline std::string oracle_gguf(const std::string& config, const std::string& recipe) {
  return std::string(DS4_TEST_TMP) + "/oracle/" + config + "-" + recipe + ".gguf";
}

inline bool file_exists(const std::string& p) {
  std::ifstream f(p);
  return static_cast<bool>(f);
}

inline nlohmann::json read_json(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error("cannot open " + path);
  nlohmann::json j;
  f >> j;
  return j;
}

template <typename T>
std::vector<T> read_bin(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) throw std::runtime_error("cannot open " + path);
  const auto size = static_cast<size_t>(f.tellg());
  f.seekg(0);
  std::vector<T> v(size / sizeof(T));
  f.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(T)));
  return v;
}

struct Oracle {
  std::string name, dir;
  nlohmann::json config, tokens_json, manifest;
  std::vector<int32_t> tokens;
  int vocab = 0, n_layers = 0, dim = 0, hc = 0, k = 0;

  explicit Oracle(const std::string& n) : name(n), dir(oracle_dir(n)) {
    config = read_json(dir + "/config.json");
    tokens_json = read_json(dir + "/tokens.json");
    manifest = read_json(dir + "/manifest.json");
    for (auto& t : tokens_json["tokens"]) tokens.push_back(t.get<int32_t>());
    vocab = config["vocab_size"];
    n_layers = config["n_layers"];
    dim = config["dim"];
    hc = config["hc_mult"];
    k = config["n_activated_experts"];
  }
  std::vector<float> f32(const std::string& file) const { return read_bin<float>(dir + "/" + file); }
  std::vector<int32_t> i32(const std::string& file) const { return read_bin<int32_t>(dir + "/" + file); }
  std::vector<int> decode_lens() const { return tokens_json["decode_prefill_lens"].get<std::vector<int>>(); }
  int n() const { return static_cast<int>(tokens.size()); }
  size_t hcD() const { return static_cast<size_t>(hc) * dim; }
};

struct RowStats {
  double max_abs = 0;   // over all rows
  double max_rel = 0;   // max over rows of maxabs / max(1, max|ref|)
  int argmax_mismatch = 0;
  int rows = 0;
};

inline int argmax(const float* x, int n) { return static_cast<int>(std::max_element(x, x + n) - x); }

// Compares rows of `got` with rows ref[ref_row0 ...] (both [rows][width]).
inline RowStats compare_rows(const float* got, const float* ref, int rows, int width) {
  RowStats s;
  s.rows = rows;
  for (int r = 0; r < rows; ++r) {
    const float* g = got + static_cast<size_t>(r) * width;
    const float* e = ref + static_cast<size_t>(r) * width;
    double m = 0, mref = 0;
    for (int i = 0; i < width; ++i) {
      m = std::max(m, static_cast<double>(std::fabs(g[i] - e[i])));
      mref = std::max(mref, static_cast<double>(std::fabs(e[i])));
    }
    s.max_abs = std::max(s.max_abs, m);
    s.max_rel = std::max(s.max_rel, m / std::max(1.0, mref));
    if (argmax(g, width) != argmax(e, width)) ++s.argmax_mismatch;
  }
  return s;
}

inline std::string describe(const RowStats& s) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "%d rows: max abs %.3g, max rel %.3g, argmax mismatches %d", s.rows, s.max_abs,
                s.max_rel, s.argmax_mismatch);
  return buf;
}

// The backends the oracle suite runs on (docs/backend.md: a new backend adds itself here):
// every backend this build has.
inline std::vector<Backend> test_backends() {
  std::vector<Backend> v{Backend::Cpu};
  if (has_backend(Backend::Vulkan)) v.push_back(Backend::Vulkan);
  return v;
}
inline std::string backend_name(Backend b) {
  switch (b) {
    case Backend::Cpu:
      return "cpu";
    case Backend::Vulkan:
      return "vulkan";
  }
  return "unknown";
}

// One engine per (file, qat, backend) for the whole test binary: opening is cheap, but
// sharing keeps the thread pool count bounded.
inline std::map<std::tuple<std::string, bool, Backend>, std::unique_ptr<Engine>>& engine_cache() {
  static std::map<std::tuple<std::string, bool, Backend>, std::unique_ptr<Engine>> cache;
  return cache;
}
// The cached engines are closed when the tests end, before exit: a Vulkan engine must not be
// destroyed by a static destructor, after the Vulkan loader and driver have been torn down.
struct CloseCachedEngines : ::testing::Environment {
  void TearDown() override { engine_cache().clear(); }
};
inline ::testing::Environment* const close_cached_engines =
    ::testing::AddGlobalTestEnvironment(new CloseCachedEngines);

inline Engine& engine_for(const std::string& path, bool qat, Backend backend = Backend::Cpu) {
  auto& cache = engine_cache();
  auto key = std::make_tuple(path, qat, backend);
  auto it = cache.find(key);
  if (it != cache.end()) return *it->second;
  EngineOptions o;
  o.threads = 2;
  o.qat_simulation = qat;
  o.prefill_chunk = 64;
  o.backend = backend;
  auto e = Engine::open(path, o);
  auto& ref = *e;
  cache.emplace(key, std::move(e));
  return ref;
}

// One GGUF of the oracle suite: an oracle configuration converted with a recipe (the file
// oracle_gguf(config, recipe)). The parameter of the suites that run on several of them.
struct OracleFile {
  std::string config, recipe;
};
// gtest prints a test's parameter with PrintTo (otherwise as raw bytes).
inline void PrintTo(const OracleFile& f, std::ostream* os) { *os << f.config << "-" << f.recipe; }
// Test-name suffix: "tiny_q_q2" (gtest names allow only letters, digits and '_').
inline std::string oracle_file_name(const ::testing::TestParamInfo<OracleFile>& info) {
  std::string s = info.param.config + "_" + info.param.recipe;
  std::replace(s.begin(), s.end(), '-', '_');
  return s;
}

// Fixture of a suite parameterised by OracleFile: skips without the oracle data, opens the
// oracle and checks that the fixture wrote the GGUF.
class OracleFileTest : public ::testing::TestWithParam<OracleFile> {
 protected:
  void SetUp() override {
    DS4_SKIP_WITHOUT_ORACLE(GetParam().config);
    o_ = std::make_unique<Oracle>(GetParam().config);
    path_ = oracle_gguf(GetParam().config, GetParam().recipe);
    ASSERT_TRUE(file_exists(path_)) << path_ << " is missing (written by the convert_oracle_ggufs fixture)";
  }
  // The engine on this file (qat simulation on, shared by the test binary).
  Engine& engine() { return engine_for(path_, true); }
  // `count` oracle prompt tokens from index `from`.
  std::vector<int32_t> slice(int from, int count) const {
    return {o_->tokens.begin() + from, o_->tokens.begin() + from + count};
  }
  std::unique_ptr<Oracle> o_;
  std::string path_;
};

// All-position logits of a fresh prefill of `tokens` in chunks of `chunk`.
inline std::vector<float> all_logits(Engine& e, const std::vector<int32_t>& tokens, int chunk) {
  auto s = e.new_session(static_cast<int>(tokens.size()) + 32);
  std::vector<float> out;
  SyncOptions so;
  so.chunk = chunk;
  so.on_logits = [&](int, const float* lg) { out.insert(out.end(), lg, lg + e.n_vocab()); };
  s->sync(tokens, so);
  return out;
}

}  // namespace ds4::test
