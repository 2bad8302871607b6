#include "ds4_check.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "args/args.h"
#include "model/stages.h"
#include "ds4/engine.h"
#include "session/debug.h"

namespace ds4::app {

namespace {

struct CheckArgs {
  std::string model, tokens_file, dump_logits, dump_hidden, mtp_sidecar;
  std::string dump_mtp_logits, mtp_hidden;
  std::vector<int> layer_split;
  int decode_from = -1, chunk = 0, threads = 0, ctx = 0, mtp_decode_from = -1;
  bool qat = true, all_logits = false, verbose = false, warm = false;
};

using args::UsageError;

constexpr const char* kCheckUsage = "ds4 -m MODEL.gguf --tokens-file T.json --dump-logits OUT [options]";
constexpr const char* kCheckAbout =
    "Check mode: evaluates a list of token ids and writes the outputs as raw little-endian f32\n"
    "(for comparison with the reference). T.json is a JSON array of token ids, or an object\n"
    "with a \"tokens\" array.";

void describe(args::Parser& p, CheckArgs& a) {
  p.group("Input");
  p.text("-m,--model", a.model, "FILE", "GGUF model (required)");
  p.text("--tokens-file", a.tokens_file, "T.json", "the token ids (required)");
  p.text("--mtp", a.mtp_sidecar, "SIDECAR", "MTP sidecar GGUF");
  p.group("Outputs (at least one)");
  p.text("--dump-logits", a.dump_logits, "F", "f32 rows of vocab logits: after the prefill, then after each decoded id");
  p.text("--dump-hidden", a.dump_hidden, "F", "f32 [layer][position][hc][dim] after each block of a full prefill");
  p.text("--dump-mtp-logits", a.dump_mtp_logits, "F", "MTP logits, row j from (h_j, token j+1) at position j");
  p.group("Options");
  p.integer("--decode-from", a.decode_from, 0, 1 << 30, "K",
            "prefill the first K ids (default all), decode the rest one at a time");
  p.flag("--all-logits", a.all_logits, "write a row for every prefill position (not just the last)");
  p.integer("--chunk", a.chunk, 0, 1 << 30, "N", "prefill chunk size");
  p.text("--mtp-hidden", a.mtp_hidden, "H", "f32 [position][hc][dim] states for the MTP (default: the engine's own)");
  p.integer("--mtp-decode-from", a.mtp_decode_from, 0, 1 << 30, "K",
            "write only MTP rows K-2.. (like mtp_logits_decode_kK)");
  p.flag("--no-qat-sim", [&a] { a.qat = false; }, "disable the FP8/FP4 simulation (test only)");
  p.integer("-t,--threads", a.threads, 0, 1 << 30, "N", "worker threads (default: all cores)");
  p.integer("-c,--ctx", a.ctx, 0, 1 << 30, "N", "session context (default: the token count + 1)");
  p.flag("-v,--verbose", a.verbose, "print timings");
  p.flag("--warm-weights", a.warm, "make the weights resident first (under MPI each rank its own)");
  p.value(
      "--layer-split",
      [&a](const std::string& v) {
        try {
          a.layer_split = model::parse_layer_split(v);
        } catch (const std::invalid_argument& e) {
          throw UsageError(e.what());
        }
      },
      "A,B,...", "layers per MPI rank (docs/mpi.md)");
}

std::vector<int32_t> read_tokens(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error("cannot open tokens file " + path);
  nlohmann::json j;
  try {
    f >> j;
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": invalid JSON: " + e.what());
  }
  const nlohmann::json* arr = &j;
  if (j.is_object()) {
    if (!j.contains("tokens")) throw std::runtime_error(path + ": object has no \"tokens\" field");
    arr = &j["tokens"];
  }
  if (!arr->is_array()) throw std::runtime_error(path + ": expected an array of token ids");
  std::vector<int32_t> out;
  for (const auto& v : *arr) {
    if (!v.is_number_integer()) throw std::runtime_error(path + ": token ids must be integers");
    int64_t t = v.get<int64_t>();
    if (t < 0 || t > INT32_MAX) throw std::runtime_error(path + ": token id " + std::to_string(t) + " out of range");
    out.push_back(static_cast<int32_t>(t));
  }
  return out;
}

void write_f32(std::FILE* f, const float* p, size_t n, const std::string& path) {
  if (std::fwrite(p, sizeof(float), n, f) != n) throw std::runtime_error("write failed: " + path);
}

struct OutFile {
  std::FILE* f = nullptr;
  std::string path;
  explicit OutFile(const std::string& p) : path(p) {
    f = std::fopen(p.c_str(), "wb");
    if (!f) throw std::runtime_error("cannot create " + p);
  }
  ~OutFile() {
    if (f) std::fclose(f);
  }
  void close() {
    if (std::fclose(f) != 0) {
      f = nullptr;
      throw std::runtime_error("write failed: " + path);
    }
    f = nullptr;
  }
};

std::vector<float> read_f32_file(const std::string& path, size_t expect) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw std::runtime_error("cannot open " + path);
  std::vector<float> v(expect);
  size_t got = std::fread(v.data(), sizeof(float), expect, f);
  int extra = std::fgetc(f);
  std::fclose(f);
  if (got != expect || extra != EOF)
    throw std::runtime_error(path + ": expected exactly " + std::to_string(expect) + " float32 values");
  return v;
}

int run(const CheckArgs& a) {
  EngineOptions eo;
  eo.threads = a.threads;
  eo.qat_simulation = a.qat;
  eo.mtp_path = a.mtp_sidecar;
  eo.layer_split = a.layer_split;
  if (a.chunk > 0) eo.prefill_chunk = a.chunk;
  auto t0 = std::chrono::steady_clock::now();
  auto engine = Engine::open(a.model, eo);
  if (a.warm) debug::warm_weights(*engine);
  const ModelConfig& c = engine->config();
  std::vector<int32_t> toks = read_tokens(a.tokens_file);
  if (toks.empty()) throw std::runtime_error("tokens file holds no tokens");
  const int n = static_cast<int>(toks.size());
  const int ctx = a.ctx > 0 ? a.ctx : n + 1;
  if (a.ctx > 0 && a.ctx < n) throw Error(Error::Kind::ContextOverflow, "--ctx is smaller than the token count");

  if (!a.dump_logits.empty()) {
    const int k = a.decode_from < 0 ? n : a.decode_from;
    if (k < 1 || k > n) throw std::runtime_error("--decode-from must be in 1.." + std::to_string(n));
    auto s = engine->new_session(ctx);
    OutFile out(a.dump_logits);
    SyncOptions so;
    if (a.all_logits)
      so.on_logits = [&](int, const float* lg) { write_f32(out.f, lg, c.vocab, out.path); };
    auto tp = std::chrono::steady_clock::now();
    s->sync(std::vector<int32_t>(toks.begin(), toks.begin() + k), so);
    auto td = std::chrono::steady_clock::now();
    if (!a.all_logits) write_f32(out.f, s->logits().data(), c.vocab, out.path);
    for (int i = k; i < n; ++i) {
      s->eval(toks[i]);
      write_f32(out.f, s->logits().data(), c.vocab, out.path);
    }
    if (a.verbose) {
      auto te = std::chrono::steady_clock::now();
      double pms = std::chrono::duration<double, std::milli>(td - tp).count();
      double dms = std::chrono::duration<double, std::milli>(te - td).count();
      std::fprintf(stderr, "ds4: prefill %d tokens %.1f ms (%.1f tok/s); decode %d tokens %.1f ms/token\n", k, pms,
                   k * 1000.0 / pms, n - k, n > k ? dms / (n - k) : 0.0);
    }
    out.close();
  }
  std::vector<float> layers;
  if (!a.dump_hidden.empty() || (!a.dump_mtp_logits.empty() && a.mtp_hidden.empty()))
    layers = debug::layer_outputs(*engine, toks, a.chunk > 0 ? a.chunk : eo.prefill_chunk);
  if (!a.dump_hidden.empty()) {
    OutFile out(a.dump_hidden);
    write_f32(out.f, layers.data(), layers.size(), out.path);
    out.close();
  }
  if (!a.dump_mtp_logits.empty()) {
    if (!engine->has_mtp()) throw std::runtime_error("the model has no MTP block (use --mtp SIDECAR)");
    const size_t hcD = static_cast<size_t>(c.hc) * c.dim;
    std::vector<float> h;
    if (!a.mtp_hidden.empty()) h = read_f32_file(a.mtp_hidden, n * hcD);
    else h.assign(layers.end() - n * hcD, layers.end());
    auto s = engine->new_session(ctx);
    OutFile out(a.dump_mtp_logits);
    // Oracle pairing: row j = MTP(h_j, token j+1) at position j. The first rows before
    // --mtp-decode-from are the "prefill" rows; only the rows from K-2 on are written then.
    const int first_row = a.mtp_decode_from < 0 ? 0 : std::max(0, a.mtp_decode_from - 2);
    for (int j = 0; j + 1 < n; ++j) {
      const auto& lg = s->mtp_eval(h.data() + j * hcD, toks[j + 1], j);
      if (j >= first_row) write_f32(out.f, lg.data(), lg.size(), out.path);
    }
    out.close();
  }
  if (a.verbose) {
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "ds4: %d tokens, %.1f ms\n", n, ms);
  }
  return 0;
}

}  // namespace

bool is_check_mode(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (!std::strcmp(argv[i], "--tokens-file") || !std::strcmp(argv[i], "--dump-logits")) return true;
  return false;
}

int run_check(int argc, char** argv) {
  CheckArgs a;
  args::Parser p("ds4", kCheckUsage, kCheckAbout);
  p.help_command("ds4 --tokens-file F --help");
  describe(p, a);
  const args::Outcome parsed = p.parse(argc, argv, [&a] {
    if (a.model.empty()) throw UsageError("-m MODEL is required");
    if (a.tokens_file.empty()) throw UsageError("--tokens-file is required");
    if (a.dump_logits.empty() && a.dump_hidden.empty() && a.dump_mtp_logits.empty())
      throw UsageError("nothing to dump (--dump-logits, --dump-hidden or --dump-mtp-logits)");
  });
  if (parsed.done()) return args::finish(parsed);
  try {
    return run(a);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ds4: error: %s\n", e.what());
    return 1;
  }
}

}  // namespace ds4::app
