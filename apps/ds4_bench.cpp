// ds4-bench main: runs the frontier sweep of ds4_bench.h through the public engine API and
// reports, on stderr, how generation compares with the memory-bandwidth bound.
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "ds4/engine.h"
#include "ds4_bench.h"
#include "gguf/gguf.h"
#include "text/chat.h"
#include "text/chat_tokenize.h"
#include "text/tokenizer.h"

namespace ds4::bench {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// CPU seconds of all this process's threads: against threads x wall time it tells how much
// of a measured interval the machine actually gave us (other load, idle workers).
double process_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string one;
  in >> one;
  return one.empty() ? "?" : one;
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
  // A directory opens but reads as nothing: not an empty prompt.
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    throw std::runtime_error("cannot read " + path + ": is a directory");
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw std::runtime_error("cannot read " + path);
  return ss.str();
}

std::vector<int32_t> tokenize_input(const BenchOptions& o, const text::Tokenizer& tok) {
  if (!o.prompt_path.empty()) {
    const std::vector<int> ids = tok.encode(read_text_file(o.prompt_path), false);
    return {ids.begin(), ids.end()};
  }
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  if (!o.system.empty()) messages.push_back({{"role", "system"}, {"content", o.system}});
  messages.push_back({{"role", "user"}, {"content", read_text_file(o.chat_prompt_path)}});
  text::RenderOptions ro;
  ro.thinking_mode = text::ThinkingMode::Chat;
  const std::vector<int> ids = text::tokenize_prompt(tok, text::render_chat_segments(messages, ro));
  return {ids.begin(), ids.end()};
}

// Weight bytes one decode token reads, from the file's tensor table (bench/README.md):
// everything of a layer except that routed-expert tensors count only the experts a token
// uses, the hash-routing table one row, the embedding one row; the output head in full.
struct DecodeBytes {
  std::vector<uint64_t> layer;  // per layer
  uint64_t head = 0;            // output head, final norm/HC, embedding row
  uint64_t total() const {
    uint64_t t = head;
    for (uint64_t b : layer) t += b;
    return t;
  }
};

DecodeBytes decode_bytes(const gguf::File& f, const ModelConfig& c) {
  DecodeBytes d;
  d.layer.assign(static_cast<size_t>(c.n_layers), 0);
  for (const gguf::TensorInfo& t : f.tensors()) {
    const std::string& n = t.name;
    uint64_t bytes = t.nbytes;
    if (n.find("_exps.") != std::string::npos && c.n_experts > 0) {
      bytes = t.nbytes / static_cast<uint64_t>(c.n_experts) * static_cast<uint64_t>(c.n_experts_used);
    } else if (n.find("tid2eid") != std::string::npos || n == "token_embd.weight") {
      bytes = t.row_bytes();
    }
    if (n.rfind("blk.", 0) == 0) {
      const long layer = std::strtol(n.c_str() + 4, nullptr, 10);
      if (layer >= 0 && layer < c.n_layers) d.layer[static_cast<size_t>(layer)] += bytes;
      // other blk.* indices are the MTP block: not read by a plain decode step
    } else if (n.rfind("mtp.", 0) != 0) {
      d.head += bytes;
    }
  }
  return d;
}

// Read bandwidth with `threads` threads streaming one 256 MiB buffer (far above any LLC):
// the best of a few passes, in GB/s. Measured in the same process as the sweep, so the
// bound and the measurement see the same machine state.
double measure_read_bandwidth(int threads) {
  const size_t bytes = 256ull << 20;
  const size_t words = bytes / sizeof(uint64_t);
  std::vector<uint64_t> buf(words);
  for (size_t i = 0; i < words; ++i) buf[i] = i * 0x9E3779B97F4A7C15ull;
  std::vector<uint64_t> sinks(static_cast<size_t>(threads) * 8);
  double best = 0;
  for (int pass = 0; pass < 5; ++pass) {
    const auto t0 = Clock::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        const size_t lo = words * static_cast<size_t>(t) / static_cast<size_t>(threads);
        const size_t hi = words * static_cast<size_t>(t + 1) / static_cast<size_t>(threads);
        uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        size_t i = lo;
        for (; i + 4 <= hi; i += 4) {
          a0 += buf[i];
          a1 += buf[i + 1];
          a2 += buf[i + 2];
          a3 += buf[i + 3];
        }
        for (; i < hi; ++i) a0 += buf[i];
        sinks[static_cast<size_t>(t) * 8] = a0 + a1 + a2 + a3;
      });
    }
    for (auto& th : pool) th.join();
    const double s = seconds_since(t0);
    if (s > 0) best = std::max(best, static_cast<double>(bytes) / s / 1e9);
  }
  uint64_t sink = 0;
  for (uint64_t v : sinks) sink ^= v;
  if (sink == 0x5EEDull) std::fputc('\n', stderr);  // keeps the sums observable
  return best;
}

// Touches every page of every tensor through the reader's mapping (page cache shared with
// the engine's): the first measured frontier then does not pay for disk reads.
void warm_weights(const gguf::File& f) {
  uint64_t sum = 0;
  for (const gguf::TensorInfo& t : f.tensors()) {
    for (uint64_t off = 0; off < t.nbytes; off += 4096) sum += t.data[off];
  }
  if (sum == 1) std::fputc('\n', stderr);
}

// A kB field of a /proc/self file (0 when absent, e.g. off Linux).
uint64_t proc_kb(const char* file, const char* field) {
  std::ifstream in(file);
  std::string line;
  const size_t len = std::strlen(field);
  while (std::getline(in, line)) {
    if (line.compare(0, len, field) == 0 && line.size() > len && line[len] == ':') {
      return std::strtoull(line.c_str() + len + 1, nullptr, 10);
    }
  }
  return 0;
}

// Per-pass engine time of one N's decode loop, per layer and for the head (ms).
std::string pass_profile(const EvalStats& st, int n_layers) {
  if (st.decode.passes + st.prefill.passes == 0) return "";
  // A batched step is a one-token pass for each of its sessions (decode phase).
  const EvalStats::Phase& ph = st.decode.passes > 0 ? st.decode : st.prefill;
  const double passes = static_cast<double>(ph.passes);
  std::string s;
  char buf[64];
  for (int l = 0; l < n_layers; ++l) {
    std::snprintf(buf, sizeof buf, " L%d %.1f", l, ph.layer_s[static_cast<size_t>(l)] / passes * 1e3);
    s += buf;
  }
  std::snprintf(buf, sizeof buf, " head %.1f, pass %.1f", ph.head_s / passes * 1e3, ph.total_s / passes * 1e3);
  s += buf;
  return s;
}

// The split of one phase's layer time, ms per token: weights (projections, experts, norms,
// compressors), attention over KV rows, indexer; a layer without an indexer shows no third part.
std::string layer_split(const EvalStats::Phase& ph, const ModelConfig& c) {
  if (ph.tokens == 0 || ph.attention_s.size() != ph.layer_s.size()) return "";
  const double per = 1e3 / static_cast<double>(ph.tokens);
  std::string s;
  char buf[96];
  for (size_t l = 0; l < ph.layer_s.size(); ++l) {
    const double att = ph.attention_s[l], idx = ph.indexer_s[l];
    const double weights = ph.layer_s[l] - att - idx;
    const int r = c.ratio(static_cast<int>(l));
    if (r == 4)
      std::snprintf(buf, sizeof buf, "%s L%zu (ratio 4) %.2f/%.2f/%.2f", l ? "," : "", l, weights * per, att * per,
                    idx * per);
    else if (r)
      std::snprintf(buf, sizeof buf, "%s L%zu (ratio %d) %.2f/%.2f", l ? "," : "", l, r, weights * per, att * per);
    else
      std::snprintf(buf, sizeof buf, "%s L%zu (window) %.2f/%.2f", l ? "," : "", l, weights * per, att * per);
    s += buf;
  }
  return s;
}

// --parallel: N sequences decoded together, one Engine::eval_batch row each per step, for
// every N of the list, in interleaved rounds; each round's aggregate rate over that round's
// N = 1 rate. The sequences differ (shared start, then each its own slice of the text), so
// their routed experts differ as they would for different conversations.
int run_parallel(const BenchOptions& o, Engine& engine, const std::vector<int32_t>& prompt, int eos, int threads,
                 std::FILE* out) {
  const ModelConfig& cfg = engine.config();
  const int ctx = o.ctx_start;
  const int tail = parallel_tail_tokens(ctx);
  const int largest = o.parallel.back();
  const int head_len = ctx - tail;
  // Sequence i: prompt[0, head_len) + prompt[head_len + i*tail, head_len + (i+1)*tail).
  std::vector<std::unique_ptr<Session>> sessions;
  std::vector<std::vector<uint8_t>> start;  // each sequence's state at ctx tokens
  const auto p0 = Clock::now();
  {
    const std::unique_ptr<Session> base = engine.new_session(o.ctx_alloc);
    if (head_len > 0) base->sync(std::vector<int32_t>(prompt.begin(), prompt.begin() + head_len));
    const std::vector<uint8_t> shared = base->save_snapshot();
    for (int i = 0; i < largest; ++i) {
      sessions.push_back(engine.new_session(o.ctx_alloc));
      Session& s = *sessions.back();
      s.load_snapshot(shared.data(), shared.size());
      std::vector<int32_t> toks(prompt.begin(), prompt.begin() + head_len);
      const auto from = prompt.begin() + head_len + static_cast<ptrdiff_t>(i) * tail;
      toks.insert(toks.end(), from, from + tail);
      s.sync(toks);
      start.push_back(s.save_snapshot());
    }
  }
  std::fprintf(stderr, "ds4-bench: --parallel: %d sequences of %d tokens (%d shared, %d each their own) prefilled in %.1f s\n",
               largest, ctx, head_len, tail, seconds_since(p0));

  // One measurement: N sequences from their start states, gen_tokens batched steps.
  std::vector<std::string> profile(o.parallel.size());
  // Returns {aggregate tokens per wall second, per CPU second x threads}: on a shared machine
  // the CPU-time rate is what the work costs when the process has its threads to itself
  // (memory stalls count as CPU time).
  auto measure = [&](int n, int gen, std::string* prof) -> std::pair<double, double> {
    for (int i = 0; i < n; ++i) {
      sessions[static_cast<size_t>(i)]->load_snapshot(start[static_cast<size_t>(i)].data(), start[static_cast<size_t>(i)].size());
      sessions[static_cast<size_t>(i)]->reset_stats();
    }
    std::vector<BatchEntry> entries(static_cast<size_t>(n));
    const double c0 = process_cpu_seconds();
    const auto g0 = Clock::now();
    for (int step = 0; step < gen; ++step) {
      for (int i = 0; i < n; ++i) {
        Session& s = *sessions[static_cast<size_t>(i)];
        const int token = argmax_excluding(s.logits(), eos);
        if (token < 0) throw std::runtime_error("no token to choose (logits empty or NaN)");
        entries[static_cast<size_t>(i)] = BatchEntry{&s, token, s.n_tokens(), false};
      }
      if (n == 1) {
        sessions[0]->eval(entries[0].token);  // the plain single-stream decode step
      } else {
        engine.eval_batch(entries);
      }
    }
    const double secs = seconds_since(g0);
    const double cpu = process_cpu_seconds() - c0;
    if (prof) *prof = pass_profile(sessions[0]->stats(), cfg.n_layers);
    const double tokens = static_cast<double>(n) * gen;
    return {secs > 0 ? tokens / secs : 0.0, cpu > 0 ? tokens * threads / cpu : 0.0};
  };
  // Untimed: every weight page and the largest batch's scratch are in place before round 1.
  measure(largest, std::min(2, o.gen_tokens), nullptr);

  const size_t kinds = o.parallel.size();
  std::vector<std::vector<double>> rate(kinds), ratio(kinds), cpu_rate(kinds), cpu_ratio(kinds);
  const double cpu0 = process_cpu_seconds();
  const auto w0 = Clock::now();
  for (int r = 0; r < o.rounds; ++r) {
    std::vector<double> this_round(kinds, 0.0), this_cpu(kinds, 0.0);
    for (int n : round_order(o.parallel, r)) {
      const size_t k = static_cast<size_t>(std::find(o.parallel.begin(), o.parallel.end(), n) - o.parallel.begin());
      std::tie(this_round[k], this_cpu[k]) = measure(n, o.gen_tokens, &profile[k]);
      rate[k].push_back(this_round[k]);
      cpu_rate[k].push_back(this_cpu[k]);
    }
    for (size_t k = 0; k < kinds; ++k) {
      ratio[k].push_back(this_round[0] > 0 ? this_round[k] / this_round[0] : 0.0);
      cpu_ratio[k].push_back(this_cpu[0] > 0 ? this_cpu[k] / this_cpu[0] : 0.0);
    }
    std::fprintf(stderr, "ds4-bench: --parallel round %d:", r + 1);
    for (size_t k = 0; k < kinds; ++k)
      std::fprintf(stderr, " N=%d %.2f t/s (x%.2f; CPU time x%.2f)", o.parallel[k], this_round[k], ratio[k].back(),
                   cpu_ratio[k].back());
    std::fprintf(stderr, ", load average %s\n", load_average().c_str());
  }
  const double wall = seconds_since(w0);
  std::fprintf(stderr, "ds4-bench: --parallel: CPU use %.0f%% of %d threads over the rounds\n",
               wall > 0 ? 100.0 * (process_cpu_seconds() - cpu0) / (wall * threads) : 0.0, threads);
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const size_t m = v.size() / 2;
    return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
  };
  std::fprintf(out, "%s\n", parallel_csv_header().c_str());
  for (size_t k = 0; k < kinds; ++k) {
    const auto [lo, hi] = std::minmax_element(ratio[k].begin(), ratio[k].end());
    std::fprintf(out, "%s\n",
                 parallel_csv_row(o.parallel[k], ctx, o.gen_tokens, median(rate[k]), median(ratio[k]), *lo, *hi,
                                  median(cpu_rate[k]), median(cpu_ratio[k])).c_str());
    // The last round's engine time per batched pass (what one step of N rows costs where).
    std::fprintf(stderr, "ds4-bench: --parallel N=%d: ms per pass:%s\n", o.parallel[k], profile[k].c_str());
  }
  std::fflush(out);
  return 0;
}

int run(const BenchOptions& o) {
  std::unique_ptr<gguf::File> file = gguf::File::open(o.model_path);
  if (!file->has("tokenizer.ggml.tokens") || !file->has("tokenizer.ggml.merges")) {
    throw std::runtime_error(o.model_path + " has no tokenizer (tokenizer.ggml.tokens/merges missing)");
  }
  const text::Tokenizer tok(*file);
  const std::vector<int32_t> prompt = tokenize_input(o, tok);
  if (!o.parallel.empty() && static_cast<int64_t>(prompt.size()) < parallel_prompt_tokens(o)) {
    std::fprintf(stderr, "ds4-bench: the prompt has %zu tokens, --parallel %d at --ctx-start %d needs at least %lld\n",
                 prompt.size(), o.parallel.back(), o.ctx_start, static_cast<long long>(parallel_prompt_tokens(o)));
    return 1;
  }
  if (static_cast<int64_t>(prompt.size()) < o.ctx_max) {
    std::fprintf(stderr, "ds4-bench: the prompt has %zu tokens, --ctx-max %d needs at least that many\n",
                 prompt.size(), o.ctx_max);
    return 1;
  }

  EngineOptions eo = o.engine_options();
  eo.repack_iq2_xxs = o.repack_iq2_xxs;
  if (o.prefill_chunk > 0) eo.prefill_chunk = o.prefill_chunk;
  const std::unique_ptr<Engine> engine = Engine::open(o.model_path, eo);
  const ModelConfig& cfg = engine->config();
  if (o.ctx_alloc > engine->context_limit()) {
    std::fprintf(stderr, "ds4-bench: --ctx-alloc %d exceeds the model's context limit %lld\n", o.ctx_alloc,
                 static_cast<long long>(engine->context_limit()));
    return 1;
  }
  if (o.warm_weights) warm_weights(*file);

  const int threads = o.threads > 0 ? o.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const DecodeBytes bytes = decode_bytes(*file, cfg);
  const uint64_t file_size = file->file_size();
  file.reset();  // from here on the only mapping of the weights is the engine's
  const double read_gbs = measure_read_bandwidth(threads);
  const double bound_tps = read_gbs * 1e9 / static_cast<double>(bytes.total());
  std::fprintf(stderr, "ds4-bench: %s, %d layers, %d threads, context %d, prefill chunk %d, load average %s\n",
               cfg.name.c_str(), cfg.n_layers, threads, o.ctx_alloc, engine->options().prefill_chunk,
               load_average().c_str());
  std::fprintf(stderr, "ds4-bench: decode reads %.1f MB of weights per token (", bytes.total() / 1e6);
  for (size_t l = 0; l < bytes.layer.size(); ++l) {
    std::fprintf(stderr, "%slayer %zu %.1f", l ? ", " : "", l, bytes.layer[l] / 1e6);
  }
  std::fprintf(stderr, ", head+embedding row %.1f)\n", bytes.head / 1e6);
  std::fprintf(stderr, "ds4-bench: measured read bandwidth %.2f GB/s (%d threads): bound %.2f tokens/s\n", read_gbs,
               threads, bound_tps);
  // A device backend: its memory bandwidth from a copy shader (512 MiB, or the most one
  // binding may cover), the bound a decode token has on it.
  const bool device = o.backend != Backend::Cpu;
  const double device_gbs = device ? engine->measure_device_bandwidth(512ull << 20) : 0.0;
  const double device_bound = device_gbs * 1e9 / static_cast<double>(bytes.total());
  if (device)
    std::fprintf(stderr, "ds4-bench: device copy bandwidth %.2f GB/s (bytes read + written): bound %.2f tokens/s%s\n",
                 device_gbs, device_bound,
                 o.cpu_moe_layers > 0 ? " (hybrid MoE: the routed experts of --cpu-moe layers are read by the CPU)"
                                      : "");

  std::FILE* out = stdout;
  if (!o.csv_path.empty()) {
    out = std::fopen(o.csv_path.c_str(), "wb");
    if (!out) {
      std::fprintf(stderr, "ds4-bench: cannot open %s: %s\n", o.csv_path.c_str(), std::strerror(errno));
      return 1;
    }
  }
  int rc = 0;
  if (!o.parallel.empty()) {
    rc = run_parallel(o, *engine, prompt, tok.eos_id(), threads, out);
    if (out != stdout && std::fclose(out) != 0) {
      std::fprintf(stderr, "ds4-bench: error writing %s\n", o.csv_path.c_str());
      rc = 1;
    }
    return rc;
  }
  std::fprintf(out, "%s\n", csv_header().c_str());
  std::fflush(out);

  const std::unique_ptr<Session> session = engine->new_session(o.ctx_alloc);
  const int eos = tok.eos_id();
  int previous = 0;
  for (int frontier : frontiers(o)) {
    const std::vector<int32_t> prefix(prompt.begin(), prompt.begin() + frontier);
    const auto p0 = Clock::now();
    const double prefill_cpu0 = process_cpu_seconds();
    session->sync(prefix);
    const double prefill_s = seconds_since(p0);
    const double prefill_cpu = process_cpu_seconds() - prefill_cpu0;
    const std::string prefill_split = layer_split(session->stats().prefill, cfg);

    const std::vector<uint8_t> snapshot = session->save_snapshot();  // untimed, as in ds4
    session->reset_stats();  // the engine's per-layer timing of this decode loop
    const DeviceCounters dev0 = engine->device_counters();
    const auto g0 = Clock::now();
    const double cpu0 = process_cpu_seconds();
    for (int i = 0; i < o.gen_tokens; ++i) {
      const int token = argmax_excluding(session->logits(), eos);
      if (token < 0) {
        std::fprintf(stderr, "ds4-bench: no token to choose at frontier %d (logits empty or NaN)\n", frontier);
        rc = 1;
        break;
      }
      session->eval(token);
    }
    const double gen_s = seconds_since(g0);
    const double gen_cpu = process_cpu_seconds() - cpu0;
    const DeviceCounters dev1 = engine->device_counters();
    if (rc != 0) break;
    session->load_snapshot(snapshot.data(), snapshot.size());

    std::fprintf(out, "%s\n",
                 csv_row(frontier, frontier - previous, prefill_s, o.gen_tokens, gen_s, snapshot.size()).c_str());
    std::fflush(out);
    if (o.gen_tokens > 0 && gen_s > 0) {
      // The bound from a read-bandwidth measurement taken right after this decode loop: on a
      // shared machine the bandwidth available moves with the other load.
      const double bound_now = measure_read_bandwidth(threads) * 1e9 / static_cast<double>(bytes.total());
      const double tps = o.gen_tokens / gen_s;
      std::fprintf(stderr,
                   "ds4-bench: ctx %d: decode %.2f tokens/s = %.1f%% of the bandwidth bound (%.2f tokens/s now; "
                   "CPU use %.0f%% of %d threads), prefill %.2f tokens/s = %.1fx decode (CPU use %.0f%%)\n",
                   frontier, tps, 100.0 * tps / bound_now, bound_now, 100.0 * gen_cpu / (gen_s * threads), threads,
                   prefill_s > 0 ? (frontier - previous) / prefill_s : 0.0,
                   prefill_s > 0 ? (frontier - previous) / prefill_s / tps : 0.0,
                   prefill_s > 0 ? 100.0 * prefill_cpu / (prefill_s * threads) : 0.0);
      if (device) {
        // Each decode step's host round trips: target one submission and no wait but the
        // one that returns the logits (hybrid MoE adds one of each per --cpu-moe layer).
        const double n = static_cast<double>(o.gen_tokens);
        const double submits = static_cast<double>(dev1.submits - dev0.submits) / n;
        const double waits = static_cast<double>(dev1.host_waits - dev0.host_waits) / n;
        const double passes = static_cast<double>(dev1.passes - dev0.passes) / n;
        std::fprintf(stderr,
                     "ds4-bench: ctx %d: device: %.2f submits, %.2f host waits per decode token (%.2f inside the "
                     "token, besides the wait for its logits); decode = %.1f%% of the device bandwidth bound "
                     "(%.2f tokens/s)\n",
                     frontier, submits, waits, waits - passes, 100.0 * tps / device_bound, device_bound);
      }
      // Per layer (the decode target): engine time per token vs the bytes the engine
      // says the layer reads at this position (weights + KV rows) over the same bandwidth.
      const EvalStats& st = session->stats();
      const double read_now = bound_now * static_cast<double>(bytes.total()) / 1e9;
      if (st.decode.passes > 0 && read_now > 0) {
        std::fprintf(stderr, "ds4-bench: ctx %d: per layer, ms/token (bound ms, bound/time):", frontier);
        for (int l = 0; l <= cfg.n_layers; ++l) {
          const double t = (l < cfg.n_layers ? st.decode.layer_s[static_cast<size_t>(l)] : st.decode.head_s) /
                           static_cast<double>(st.decode.passes);
          const double b = static_cast<double>(engine->decode_read_bytes(l, frontier)) / (read_now * 1e9);
          char name[16];
          if (l < cfg.n_layers) std::snprintf(name, sizeof name, "L%d", l);
          else std::snprintf(name, sizeof name, "head");
          std::fprintf(stderr, " %s %.1f (%.1f, %.2f)", name, t * 1e3, b * 1e3, t > 0 ? b / t : 0.0);
        }
        std::fprintf(stderr, "\n");
      }
      // Where the layer time goes as the context grows: the attention and the indexer scale
      // with the rows a token sees, the weights do not.
      const std::string decode_split = layer_split(st.decode, cfg);
      if (!decode_split.empty())
        std::fprintf(stderr, "ds4-bench: ctx %d: decode split, ms/token weights/attention/indexer:%s\n", frontier,
                     decode_split.c_str());
    }
    if (!prefill_split.empty())
      std::fprintf(stderr, "ds4-bench: ctx %d: prefill of %d tokens split, ms/token weights/attention/indexer:%s\n",
                   frontier, frontier - previous, prefill_split.c_str());
    previous = frontier;
  }
  if (out != stdout && std::fclose(out) != 0) {
    std::fprintf(stderr, "ds4-bench: error writing %s\n", o.csv_path.c_str());
    rc = 1;
  }

  // The weights are read in place from the engine's file mapping (file-backed pages, at most
  // the file's size); everything anonymous is scratch, caches, logits, the tokenizer and this
  // tool's prompt and snapshot.
  std::fprintf(stderr,
               "ds4-bench: memory: model file %.2f GiB, resident from the file mapping %.2f GiB; "
               "anonymous (scratch, caches, tokenizer, snapshot) %.1f MiB; session caches %.1f MiB; "
               "engine scratch %.1f MiB\n",
               file_size / 1073741824.0, proc_kb("/proc/self/status", "RssFile") / 1048576.0,
               proc_kb("/proc/self/status", "RssAnon") / 1024.0,
               engine->session_memory_bytes(o.ctx_alloc) / 1048576.0, engine->scratch_bytes() / 1048576.0);
  return rc;
}

}  // namespace
}  // namespace ds4::bench

int main(int argc, char** argv) {
  using namespace ds4::bench;
  ds4::init_cluster(&argc, &argv);  // under mpirun: ranks other than 0 serve their stage
  BenchOptions o;
  const ds4::args::Outcome parsed = parse_options(argc, argv, o);
  if (parsed.done()) return ds4::args::finish(parsed);
  if (o.list_devices) {
    std::fputs(ds4::describe_devices().c_str(), stdout);
    return 0;
  }
  try {
    return run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ds4-bench: %s\n", e.what());
    return 1;
  }
}
