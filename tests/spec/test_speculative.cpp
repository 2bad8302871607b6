// Speculative decoding with the MTP block (src/spec) against plain decode on the oracle
// GGUFs (all three tiny configurations carry an MTP block; tiny-q also quantized to q2):
// greedy token sequences and every next-token logit vector are bit-identical for N = 1..4,
// with MTP drafts, perfect drafts and wrong drafts; rejected drafts re-evaluate nothing; the
// sampling rule, alone and through the whole decoder, reproduces the target distribution
// (chi-square at p = 0.001) and a wrong rule is caught by the same tests.
#include <cmath>
#include <cstring>
#include <functional>
#include <map>

#include "oracle_util.h"
#include "sample/sampler.h"
#include "spec/speculative.h"
#include "test_seed.h"

using namespace ds4;
using namespace ds4::test;

namespace {

struct Trace {
  std::vector<int32_t> tokens;
  std::vector<float> logits;  // the next-token logits each token was picked from
};

// Plain decode: sample from session.logits(), eval, `steps` times (the last token is not
// evaluated, as in the CLI).
Trace plain_run(Engine& e, const std::vector<int32_t>& prompt, int steps, const sample::Params& sp) {
  Trace r;
  auto s = e.new_session(static_cast<int>(prompt.size()) + steps + 8);
  s->sync(prompt);
  sample::Sampler sampler(sp);
  for (int i = 0; i < steps; ++i) {
    r.logits.insert(r.logits.end(), s->logits().begin(), s->logits().end());
    const int32_t t = sampler.sample(s->logits());
    r.tokens.push_back(t);
    if (i + 1 < steps) s->eval(t);
  }
  return r;
}

Trace spec_run(Engine& e, const std::vector<int32_t>& prompt, int steps, const sample::Params& sp,
             const spec::Options& so, std::function<int32_t(int)> drafts = {}, spec::Stats* stats = nullptr,
             EvalStats* es = nullptr, const spec::Decoder::Costs* costs = nullptr) {
  Trace r;
  auto s = e.new_session(static_cast<int>(prompt.size()) + steps + 8);
  s->sync(prompt);
  sample::Sampler sampler(sp);
  spec::Decoder d(e, *s, sampler, so);
  if (drafts) d.set_draft_source(drafts);
  if (costs) d.pin_costs(*costs);
  for (int i = 0; i < steps; ++i) {
    const auto lg = d.logits();
    r.logits.insert(r.logits.end(), lg.begin(), lg.end());
    const int32_t t = d.sample(lg);
    r.tokens.push_back(t);
    if (i + 1 < steps) d.advance(t, steps - i - 1);
  }
  d.settle();
  EXPECT_EQ(s->n_tokens(), static_cast<int>(prompt.size()) + steps - 1);
  if (stats) *stats = d.stats();
  if (es) *es = s->stats();
  return r;
}

using SpecTest = OracleFileTest;

void expect_same(const Trace& a, const Trace& b, const std::string& what) {
  ASSERT_EQ(a.tokens, b.tokens) << what;
  ASSERT_EQ(a.logits.size(), b.logits.size()) << what;
  EXPECT_EQ(std::memcmp(a.logits.data(), b.logits.data(), a.logits.size() * sizeof(float)), 0)
      << what << ": logits differ";
}

}  // namespace

TEST_P(SpecTest, GreedyIdenticalToPlainDecode) {
  Engine& e = engine();
  ASSERT_TRUE(e.has_mtp());
  sample::Params greedy;
  greedy.temperature = 0;
  const int steps = 20;
  for (int p = 0; p < 2; ++p) {
    const std::vector<int32_t> prompt = slice(5 * p, 6 + 9 * p);
    const Trace plain = plain_run(e, prompt, steps, greedy);
    // Perfect drafts (the plain run's own tokens) and always-wrong ones.
    const int n0 = static_cast<int>(prompt.size());
    auto perfect = [&](int pos) { return plain.tokens[std::min<int>(pos - n0, steps - 1)]; };
    auto wrong = [&](int pos) { return (plain.tokens[std::min<int>(pos - n0, steps - 1)] + 1) % e.n_vocab(); };
    for (int n = 1; n <= spec::kMaxDraft; ++n) {
      const std::string tag = "prompt " + std::to_string(p) + " N=" + std::to_string(n);
      spec::Stats st;
      EvalStats es;
      expect_same(plain, spec_run(e, prompt, steps, greedy, {n, false}, {}, &st, &es), tag + " mtp");
      EXPECT_GT(st.drafted, 0) << tag;
      EXPECT_EQ(es.rewinds_reevaluated, 0) << tag;
      EXPECT_EQ(es.tokens_reevaluated, 0) << tag;
      expect_same(plain, spec_run(e, prompt, steps, greedy, {n, false}, perfect, &st), tag + " perfect");
      EXPECT_EQ(st.accepted, st.drafted) << tag;
      // Perfect drafts: n + 1 tokens per pass (the last pass may be shorter).
      EXPECT_LE(st.verifies + st.singles, (steps + n) / (n + 1) + 1) << tag;
      expect_same(plain, spec_run(e, prompt, steps, greedy, {n, false}, wrong, &st, &es), tag + " wrong");
      EXPECT_EQ(st.accepted, 0) << tag;
      EXPECT_GT(es.rewinds_cheap, 0) << tag;
      EXPECT_EQ(es.rewinds_reevaluated, 0) << tag;
      expect_same(plain, spec_run(e, prompt, steps, greedy, {n, true}), tag + " adaptive");
    }
  }
}

// Sampling through the decoder: same seed, same filters; tokens may differ from plain (the
// generator is consumed differently), but every token must come from the target logits'
// filtered support, and the logits handed out are the target's, bit for bit, for the
// prefix where both runs chose the same tokens.
TEST_P(SpecTest, SamplingHandsOutTargetLogits) {
  Engine& e = engine();
  sample::Params sp;
  sp.temperature = 0.9f;
  sp.top_k = 40;
  sp.min_p = 0.02f;
  sp.seed = 7;
  const std::vector<int32_t> prompt = slice(0, 12);
  const int steps = 20;
  for (int n = 1; n <= spec::kMaxDraft; ++n) {
    const Trace r = spec_run(e, prompt, steps, sp, {n, false});
    // Replay the chosen tokens with plain evaluation: the logits must match bit for bit.
    auto s = e.new_session(static_cast<int>(prompt.size()) + steps + 8);
    s->sync(prompt);
    for (int i = 0; i < steps; ++i) {
      ASSERT_EQ(std::memcmp(s->logits().data(), r.logits.data() + static_cast<size_t>(i) * e.n_vocab(),
                            e.n_vocab() * sizeof(float)),
                0)
          << "N=" << n << " step " << i;
      const auto dist = sample::filtered_distribution(s->logits(), sp);
      bool in = false;
      for (const auto& t : dist) in |= t.id == r.tokens[i];
      EXPECT_TRUE(in) << "N=" << n << " step " << i << ": token outside the filtered support";
      s->eval(r.tokens[i]);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Spec, SpecTest,
                         ::testing::Values(OracleFile{"tiny-a", "f32"}, OracleFile{"tiny-b", "f32"},
                                           OracleFile{"tiny-q", "f32"}, OracleFile{"tiny-q", "q2"}),
                         oracle_file_name);

namespace {

// Chi-square goodness of fit of `counts` against probabilities `p` (bins with expected < 5
// pooled); true when the fit is rejected at p = 0.001 (Wilson-Hilferty critical value).
bool chi_square_rejects(const std::map<int32_t, int>& counts, const std::vector<sample::TokenProb>& p, int n,
                        double* stat_out) {
  double stat = 0, pooled_e = 0, pooled_o = 0;
  int bins = 0;
  int seen = 0;
  for (const auto& t : p) {
    const double ex = n * std::exp(static_cast<double>(t.logprob));
    const auto it = counts.find(t.id);
    const double ob = it == counts.end() ? 0 : it->second;
    seen += static_cast<int>(ob);
    if (ex < 5) {
      pooled_e += ex;
      pooled_o += ob;
      continue;
    }
    stat += (ob - ex) * (ob - ex) / ex;
    ++bins;
  }
  pooled_o += n - seen;  // tokens outside p's support: expected 0, pooled
  if (pooled_e > 0 || pooled_o > 0) {
    const double ex = std::max(pooled_e, 1e-9);
    stat += (pooled_o - ex) * (pooled_o - ex) / ex;
    ++bins;
  }
  const double df = bins - 1, z = 3.0902;
  const double crit = df * std::pow(1 - 2 / (9 * df) + z * std::sqrt(2 / (9 * df)), 3);
  *stat_out = stat;
  return stat > crit;
}

}  // namespace

// The acceptance rule on real target/draft distributions of tiny-b (target head vs MTP head
// after a prompt, the same filters): 40k draws each. The exact rule's output fits p; the
// wrong rule (always accept) follows q and must be rejected.
TEST(SpecSampling, RuleReproducesTargetDistributionOnTinyB) {
  DS4_SKIP_WITHOUT_ORACLE("tiny-b");
  const std::string path = oracle_gguf("tiny-b", "f32");
  ASSERT_TRUE(file_exists(path));
  Engine& e = engine_for(path, true);
  Oracle o("tiny-b");
  sample::Params sp;
  sp.temperature = 1.5f;  // broad distributions: many bins
  sp.min_p = 0.0f;
  sp.top_k = 24;
  for (int at : {8, 17, 30}) {
    std::vector<int32_t> prompt(o.tokens.begin(), o.tokens.begin() + at);
    auto s = e.new_session(at + 4);
    s->sync(prompt);
    const auto p = sample::filtered_distribution(s->logits(), sp);
    const auto& ml = s->mtp_eval(s->hidden().data(), o.tokens[at], at - 1);
    const auto q = sample::filtered_distribution(ml, sp);
    ASSERT_GT(p.size(), 5u);
    const int n = 40000;
    for (spec::Rule rule : {spec::Rule::Exact, spec::Rule::Wrong}) {
      sample::Rng rng(ds4::testdata::test_seed(1234 + at));
      std::map<int32_t, int> counts;
      int acc_count = 0;
      for (int i = 0; i < n; ++i) {
        // Draft drawn from q with the same generator, as the decoder does.
        double r = rng.uniform();
        int32_t d = q.back().id;
        for (const auto& t : q) {
          r -= std::exp(static_cast<double>(t.logprob));
          if (r < 0) {
            d = t.id;
            break;
          }
        }
        bool acc = false;
        ++counts[spec::accept_or_resample(p, q, d, rng, &acc, rule)];
        acc_count += acc;
      }
      double stat = 0;
      const bool rejects = chi_square_rejects(counts, p, n, &stat);
      if (rule == spec::Rule::Exact) {
        EXPECT_FALSE(rejects) << "position " << at << ": chi-square " << stat << " (acceptance "
                              << double(acc_count) / n << ")";
        EXPECT_LT(acc_count, n) << "drafts must be often wrong for the test to mean anything";
      } else {
        EXPECT_TRUE(rejects) << "position " << at << ": the wrong rule passed (chi-square " << stat << ")";
      }
    }
  }
}

// The whole decoder, sampling (temperature 1.5, top-k 8) on tiny-a: 20k answers of four
// tokens each, every answer from the same prompt with its own draws of one generator. The
// tokens at answer positions 1, 2 and 3 (the speculated ones; position 0 is always sampled
// plainly) are compared with their exact marginal distributions under plain sampling,
// computed by evaluating every prefix of the filtered supports (8 + 64 + 512 evaluations):
// chi-square at p = 0.001. Drafts: the MTP block's (sampled from q), and forced ones that
// are often wrong (a token of the support chosen by the answer's number, a point mass q: the
// residual draw runs most of the time). The always-accept rule must fail the same test.
TEST(SpecSampling, DecoderSamplesTheTargetDistribution) {
  const std::string path = oracle_gguf("tiny-a", "f32");
  ASSERT_TRUE(file_exists(path)) << path << " is missing (written by the convert_oracle_ggufs fixture)";
  // One thread: the passes are tiny, and 60k answers pay the workers' wake-ups otherwise.
  EngineOptions eo;
  eo.threads = 1;
  eo.qat_simulation = true;
  auto engine = Engine::open(path, eo);
  Engine& e = *engine;
  ASSERT_TRUE(e.has_mtp());
  Oracle o("tiny-a");
  sample::Params sp;
  sp.temperature = 1.5f;
  sp.top_k = 8;
  sp.min_p = 0.0f;
  const std::vector<int32_t> prompt(o.tokens.begin(), o.tokens.begin() + 10);
  const int n0 = static_cast<int>(prompt.size());
  auto s = e.new_session(n0 + 16);
  s->sync(prompt);

  // Exact marginals of positions 1..3 under plain sampling: walk the tree of supports.
  constexpr int kDepth = 3;
  std::vector<std::map<int32_t, double>> marginal(kDepth + 1);
  std::vector<int32_t> support0;
  std::function<void(int, double)> walk = [&](int depth, double mass) {
    const auto dist = sample::filtered_distribution(s->logits(), sp);
    for (const auto& t : dist) {
      const double m = mass * std::exp(static_cast<double>(t.logprob));
      marginal[depth][t.id] += m;
      if (depth == 0) support0.push_back(t.id);
      if (depth == kDepth) continue;
      s->eval(t.id);
      walk(depth + 1, m);
      s->rewind(n0 + depth);
    }
  };
  walk(0, 1.0);
  ASSERT_EQ(s->n_tokens(), n0);
  ASSERT_EQ(static_cast<int>(support0.size()), 8);

  struct Case {
    const char* name;
    int n;
    bool forced;
    spec::Rule rule;
    int runs;  // the wrong rule fails with far fewer
  };
  constexpr int kAnswer = kDepth + 1;
  for (const Case c : {Case{"MTP drafts, N=2", 2, false, spec::Rule::Exact, 20000},
                       Case{"often-wrong drafts, N=2", 2, true, spec::Rule::Exact, 20000},
                       Case{"always-accept rule", 2, true, spec::Rule::Wrong, 2000}}) {
    const int runs = c.runs;
    sp.seed = 4242;
    sample::Sampler sampler(sp);
    std::vector<std::map<int32_t, int>> counts(kDepth + 1);
    int64_t drafted = 0, accepted = 0;
    for (int run = 0; run < runs; ++run) {
      spec::Decoder d(e, *s, sampler, {c.n, false, c.rule});
      if (c.forced) d.set_draft_source([&](int pos) { return support0[(run * 5 + pos * 3) % support0.size()]; });
      for (int i = 0; i < kAnswer; ++i) {
        const int32_t t = d.sample(d.logits());
        if (i <= kDepth) ++counts[i][t];
        if (i + 1 < kAnswer) d.advance(t, kAnswer - 1 - i);
      }
      d.settle();
      drafted += d.stats().drafted;
      accepted += d.stats().accepted;
      s->rewind(n0);
    }
    ASSERT_GT(drafted, runs) << c.name;
    bool any_rejects = false;
    for (int i = 1; i <= kDepth; ++i) {
      std::vector<sample::TokenProb> p;
      for (const auto& [id, m] : marginal[i]) p.push_back({id, static_cast<float>(std::log(m))});
      double stat = 0;
      const bool rejects = chi_square_rejects(counts[i], p, runs, &stat);
      any_rejects |= rejects;
      if (c.rule == spec::Rule::Exact) {
        EXPECT_FALSE(rejects) << c.name << ", position " << i << ": chi-square " << stat << " over "
                              << marginal[i].size() << " tokens (acceptance " << double(accepted) / drafted << ")";
      }
    }
    if (c.rule == spec::Rule::Exact) {
      EXPECT_LT(accepted, drafted * 3 / 4) << c.name << ": drafts must be often wrong for the test to mean anything";
      EXPECT_GT(accepted, 0) << c.name;
    } else {
      EXPECT_TRUE(any_rejects) << c.name << ": the wrong rule passed";
    }
  }
}

// ---- The adaptive controller, with pinned costs (its decisions then depend only on the
// drafts' outcomes, not on this machine's timing). Costs in decode steps.

namespace {

// Verify of k drafts: 1 + beta k steps; one draft: `draft` steps.
spec::Decoder::Costs linear_costs(double beta, double draft) {
  spec::Decoder::Costs c;
  for (int k = 0; k <= spec::kMaxDraft; ++k) c.verify[k] = 1.0 + beta * k;
  c.draft = draft;
  return c;
}

// What a run cost under those costs, in decode steps (every pass, every draft computed).
double modeled_cost(const spec::Stats& st, double beta, double draft) {
  return static_cast<double>(st.singles + st.verifies) + beta * static_cast<double>(st.drafted) +
         draft * static_cast<double>(st.drafted + st.probes);
}

class ControllerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    DS4_SKIP_WITHOUT_ORACLE("tiny-q");  // context 256: room for 200 steps
    path_ = oracle_gguf("tiny-q", "f32");
    ASSERT_TRUE(file_exists(path_)) << path_ << " is missing (written by the convert_oracle_ggufs fixture)";
    Oracle o("tiny-q");
    prompt_.assign(o.tokens.begin(), o.tokens.begin() + 8);
    greedy_.temperature = 0;
    static const Trace plain = plain_run(engine(), prompt_, kSteps, greedy_);  // same for every test
    plain_ = plain;
  }
  Engine& engine() { return engine_for(path_, true); }
  int32_t plain_token(int pos) const {
    return plain_.tokens[std::min<int>(pos - static_cast<int>(prompt_.size()), kSteps - 1)];
  }
  int32_t wrong_token(int pos) const { return (plain_token(pos) + 1) % 1024; }
  static constexpr int kSteps = 200;
  std::string path_;
  std::vector<int32_t> prompt_;
  sample::Params greedy_;
  Trace plain_;
};

}  // namespace

// Costs like a large model's (a verify of k drafts 1 + 0.1 k steps, a draft 0.05 steps), so
// drafting pays from ~15% acceptance on. Always-wrong drafts: the controller falls back to
// k = 0 after a few verifies and then only probes now and then: the run costs at most 3% more
// than plain decode (the "never a loss" bound), and gives the same tokens.
TEST_F(ControllerTest, WrongDraftsCostAtMostThreePercent) {
  const auto costs = linear_costs(0.1, 0.05);
  spec::Stats st;
  const Trace r = spec_run(engine(), prompt_, kSteps, greedy_, {spec::kMaxDraft, true},
                           [&](int pos) { return wrong_token(pos); }, &st, nullptr, &costs);
  expect_same(plain_, r, "wrong drafts");
  EXPECT_EQ(st.accepted, 0);
  EXPECT_LE(st.verifies, 3) << "the controller must stop verifying drafts that are always rejected";
  const double overhead = modeled_cost(st, 0.1, 0.05) / (kSteps - 1) - 1.0;
  EXPECT_LE(overhead, 0.03) << st.verifies << " verifies, " << st.probes << " probes, " << st.drafted << " drafted";
}

// Drafts as costly as half a step (the MTP block's head is a large part of a step, as on a
// few-layer slice of Flash) and always wrong: probes stay within their budget (1% of the
// decode time, the first probe excepted), so even a short answer of 60 tokens loses at most
// 2%; without the budget the back-off alone spent 3.4% here (4 probes).
TEST_F(ControllerTest, CostlyProbesStayWithinBudget) {
  const auto costs = linear_costs(0.05, 0.5);
  const int steps = 60;
  Trace want;
  want.tokens.assign(plain_.tokens.begin(), plain_.tokens.begin() + steps);
  want.logits.assign(plain_.logits.begin(), plain_.logits.begin() + static_cast<size_t>(steps) * 1024);
  spec::Stats st;
  const Trace r = spec_run(engine(), prompt_, steps, greedy_, {spec::kMaxDraft, true},
                           [&](int pos) { return wrong_token(pos); }, &st, nullptr, &costs);
  expect_same(want, r, "costly wrong drafts");
  EXPECT_EQ(st.verifies, 0);
  const double overhead = modeled_cost(st, 0.05, 0.5) / (steps - 1) - 1.0;
  EXPECT_LE(overhead, 0.02) << st.probes << " probes";
  EXPECT_GE(st.probes, 1);
}

// Same costs, perfect drafts: the controller drafts the most it may (N = 4) nearly all along.
TEST_F(ControllerTest, PerfectDraftsGoToTheWidestVerify) {
  const auto costs = linear_costs(0.1, 0.05);
  spec::Stats st;
  const Trace r = spec_run(engine(), prompt_, kSteps, greedy_, {spec::kMaxDraft, true},
                           [&](int pos) { return plain_token(pos); }, &st, nullptr, &costs);
  expect_same(plain_, r, "perfect drafts");
  EXPECT_EQ(st.accepted, st.drafted);
  EXPECT_GE(st.drafted, 3 * st.verifies) << "mostly verifies of 4 drafts";
  EXPECT_LE(st.verifies + st.singles, (kSteps - 1) / 4) << "about 5 tokens per pass";
  EXPECT_LT(modeled_cost(st, 0.1, 0.05), 0.5 * (kSteps - 1));
}

// Verifies that cost as much as the steps they replace (a compute-bound model) and costly
// drafts: drafting never pays, even at full acceptance, so nothing is drafted at all.
TEST_F(ControllerTest, NothingDraftedWhenDraftingCannotPay) {
  const auto costs = linear_costs(1.0, 0.3);
  spec::Stats st;
  const Trace r = spec_run(engine(), prompt_, kSteps, greedy_, {spec::kMaxDraft, true},
                           [&](int pos) { return plain_token(pos); }, &st, nullptr, &costs);
  expect_same(plain_, r, "expensive verifies");
  EXPECT_EQ(st.verifies, 0);
  EXPECT_EQ(st.probes, 0);
  EXPECT_EQ(st.singles, kSteps - 1);
}

// Drafts wrong for the first half, perfect afterwards: the controller backs off (probe bursts
// ever further apart: 16, 32, 64 tokens), then a probe finds the good drafts and it drafts
// again until the end (here from ~50 tokens after the switch: ~40 drafts accepted).
TEST_F(ControllerTest, RecoversWhenDraftsBecomeGood) {
  const auto costs = linear_costs(0.1, 0.05);
  const int half = static_cast<int>(prompt_.size()) + kSteps / 2;
  spec::Stats st;
  const Trace r = spec_run(engine(), prompt_, kSteps, greedy_, {spec::kMaxDraft, true},
                           [&](int pos) { return pos < half ? wrong_token(pos) : plain_token(pos); }, &st, nullptr,
                           &costs);
  expect_same(plain_, r, "wrong, then perfect drafts");
  EXPECT_GE(st.accepted, 25) << st.verifies << " verifies, " << st.probes << " probes";
}
