// Quantized GGUFs: the engine on a quantized file against the same engine on its
// dequantized f32 twin (`ds4-quantize --dequantize`), which isolates our quantized kernels
// from what the weight quantization loses; plus top-1 agreement and mean KL against the
// reference (reported, not gated).
#include "oracle_util.h"
#include "session/debug.h"

#include <cstring>
#include <iterator>

#include "gguf/gguf.h"
#include "quant/types.h"

using namespace ds4;
using namespace ds4::test;

namespace {

// Parameter only: the test opens its file and the dequantized twin itself.
class QuantizedTest : public ::testing::TestWithParam<OracleFile> {};

double mean_kl(const std::vector<float>& ref, const std::vector<float>& got, int rows, int vocab) {
  double total = 0;
  for (int r = 0; r < rows; ++r) {
    const float* p = ref.data() + static_cast<size_t>(r) * vocab;
    const float* q = got.data() + static_cast<size_t>(r) * vocab;
    double mp = *std::max_element(p, p + vocab), mq = *std::max_element(q, q + vocab);
    double zp = 0, zq = 0;
    for (int i = 0; i < vocab; ++i) {
      zp += std::exp(p[i] - mp);
      zq += std::exp(q[i] - mq);
    }
    double kl = 0;
    for (int i = 0; i < vocab; ++i) {
      double lp = p[i] - mp - std::log(zp), lq = q[i] - mq - std::log(zq);
      kl += std::exp(lp) * (lp - lq);
    }
    total += kl;
  }
  return total / rows;
}

}  // namespace

TEST_P(QuantizedTest, MatchesDequantizedTwin) {
  const OracleFile& c = GetParam();
  DS4_SKIP_WITHOUT_ORACLE(c.config);
  Oracle o(c.config);
  const std::string q = oracle_gguf(c.config, c.recipe), deq = oracle_gguf(c.config, c.recipe + "-deq");
  ASSERT_TRUE(file_exists(q)) << q << " is missing (convert_oracle_ggufs fixture)";
  ASSERT_TRUE(file_exists(deq)) << deq << " is missing (convert_oracle_ggufs fixture)";
  const int n = o.n();
  const size_t hcD = o.hcD();
  // Without the FP8/FP4 simulation: with it, every activation-rounding change can flip a
  // KV rounding and cascade (the tiny-b oracle is sensitive to them); the quantized path is what is tested here.
  Engine& eq = engine_for(q, false);
  Engine& ed = engine_for(deq, false);

  // 1. Each block of the quantized file fed the twin's own input for it. Q8_0/Q8_K
  //    activation rounding is discontinuous as well, so a near-tied expert or indexer
  //    choice may flip for a few positions; gate 90% of positions, report the worst.
  auto twin_layers = debug::layer_outputs(ed, o.tokens, 64);
  auto emb = debug::embed(ed, o.tokens);
  for (int il = 0; il < o.n_layers; ++il) {
    const float* in = il == 0 ? emb.data() : twin_layers.data() + (il - 1) * n * hcD;
    const float* want = twin_layers.data() + il * n * hcD;
    auto run = debug::run_block(eq, il, in, o.tokens, 64);
    double out_max = 0;
    for (size_t i = 0; i < n * hcD; ++i) out_max = std::max(out_max, static_cast<double>(std::fabs(want[i])));
    std::vector<double> per_pos(n);
    for (int t = 0; t < n; ++t)
      for (size_t i = 0; i < hcD; ++i)
        per_pos[t] = std::max(per_pos[t], static_cast<double>(std::fabs(run.out[t * hcD + i] - want[t * hcD + i])));
    std::vector<double> sorted = per_pos;
    std::sort(sorted.begin(), sorted.end());
    const double p90 = sorted[static_cast<size_t>(0.9 * (n - 1))] / out_max, worst = sorted.back() / out_max;
    std::printf("[%s %s] block %d vs twin (forced input): p90 %.3g, max %.3g of max|out| %.3g\n", c.config.c_str(),
                c.recipe.c_str(), il, p90, worst, out_max);
    EXPECT_LE(p90, 2e-2) << "block " << il;
  }
  // 2. Output head on the twin's final states.
  const float* final_states = twin_layers.data() + (o.n_layers - 1) * n * hcD;
  auto hq = debug::head(eq, final_states, n);
  auto hd = debug::head(ed, final_states, n);
  RowStats hs = compare_rows(hq.data(), hd.data(), n, o.vocab);
  std::printf("[%s %s] head vs twin: %s\n", c.config.c_str(), c.recipe.c_str(), describe(hs).c_str());
  EXPECT_LE(hs.max_rel, 2e-2);

  // 3. End to end, gated: the quantized file with f32 activations against dequantized
  //    weight rows (debug::use_f32_activations) equals its twin up to summation order. The
  //    default path rounds activations to Q8_0/Q8_K before every quantized product; that
  //    rounding is discontinuous like the FP8 simulation, and these random tiny models
  //    amplify single rounding flips into changed expert choices (the oracle configs are sensitive,
  //    "Sensitivity"), so its end-to-end figures are reported in 4, and its arithmetic is
  //    gated per block (1), per head (2) and per kernel against scalar (tests/quant).
  for (bool qat : {false, true}) {
    EngineOptions opts;
    opts.threads = 2;
    opts.qat_simulation = qat;
    opts.prefill_chunk = 64;
    auto exact = Engine::open(q, opts);
    debug::use_f32_activations(*exact);
    auto got = all_logits(*exact, o.tokens, 64);
    auto want = all_logits(engine_for(deq, qat), o.tokens, 64);
    RowStats s = compare_rows(got.data(), want.data(), n, o.vocab);
    std::printf("[%s %s %s] end to end, f32 activations, vs twin: %s\n", c.config.c_str(), c.recipe.c_str(),
                qat ? "qat" : "noqat", describe(s).c_str());
    EXPECT_LE(s.max_rel, 2e-2) << (qat ? "qat" : "noqat");
    EXPECT_EQ(s.argmax_mismatch, 0) << (qat ? "qat" : "noqat");
  }

  // 4. Reported: against the plain twin (f32 activations) with the twin's expert and
  //    indexer choices replayed (the continuous effect of activation rounding) and
  //    free-running (where near-tied choices flip), and top-1 agreement / mean KL against
  //    the reference, with and without the simulation.
  for (bool qat : {false, true}) {
    std::vector<model::BlockTrace> twin_choices;
    auto twin = debug::prefill_logits(engine_for(deq, qat), o.tokens, 64, &twin_choices, false);
    auto replayed = debug::prefill_logits(engine_for(q, qat), o.tokens, 64, &twin_choices, true);
    RowStats sr = compare_rows(replayed.data(), twin.data(), n, o.vocab);
    auto got = all_logits(engine_for(q, qat), o.tokens, 64);
    RowStats s = compare_rows(got.data(), twin.data(), n, o.vocab);
    auto ref = o.f32(qat ? "logits_prefill.bin" : "logits_prefill_noqat.bin");
    RowStats vs_ref = compare_rows(got.data(), ref.data(), n, o.vocab);
    RowStats twin_ref = compare_rows(twin.data(), ref.data(), n, o.vocab);
    std::printf("[%s %s %s] vs f32-activation twin: choices replayed max rel %.3g, free-running max rel %.3g "
                "(%d argmax mismatches) | vs reference: top-1 agreement %.3f (twin %.3f), mean KL %.3g "
                "(twin %.3g)\n",
                c.config.c_str(), c.recipe.c_str(), qat ? "qat" : "noqat", sr.max_rel, s.max_rel,
                s.argmax_mismatch, 1.0 - static_cast<double>(vs_ref.argmax_mismatch) / n,
                1.0 - static_cast<double>(twin_ref.argmax_mismatch) / n, mean_kl(ref, got, n, o.vocab),
                mean_kl(ref, twin, n, o.vocab));
  }
}

INSTANTIATE_TEST_SUITE_P(Quantized, QuantizedTest,
                         ::testing::Values(OracleFile{"tiny-a", "q8"}, OracleFile{"tiny-b", "q8"},
                                           OracleFile{"tiny-q", "q8"}, OracleFile{"tiny-q", "q2"},
                                           OracleFile{"tiny-q", "q4"}),
                         oracle_file_name);

// The IQ2_XXS load-time repack (EngineOptions::repack_iq2_xxs): the same logits bit for bit
// as the plain kernels, in prefill chunks (the row-tile kernels) and one token at a time (the
// single-vector kernel), and the file on disk untouched.
TEST(QuantizedRepack, IQ2RepackGivesIdenticalLogitsAndLeavesTheFile) {
  DS4_SKIP_WITHOUT_ORACLE("tiny-q");
  Oracle o("tiny-q");
  const std::string q = oracle_gguf("tiny-q", "q2");
  ASSERT_TRUE(file_exists(q)) << q << " is missing (convert_oracle_ggufs fixture)";
  auto slurp = [](const std::string& p) {
    std::ifstream f(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
  };
  const std::string before = slurp(q);
  {
    auto f = gguf::File::open(q);
    bool any = false;
    for (const auto& t : f->tensors()) any = any || t.type == quant::Type::IQ2_XXS;
    ASSERT_TRUE(any) << q << " has no IQ2_XXS tensor: the test would not exercise the repack";
  }
  EngineOptions opts;
  opts.threads = 2;
  opts.qat_simulation = false;
  opts.prefill_chunk = 64;
  opts.repack_iq2_xxs = true;
  auto repacked = Engine::open(q, opts);
  Engine& plain = engine_for(q, false);
  const std::vector<int32_t> some(o.tokens.begin(), o.tokens.begin() + std::min<size_t>(o.tokens.size(), 24));
  for (int chunk : {64, 1}) {
    const auto& toks = chunk == 1 ? some : o.tokens;
    auto want = all_logits(plain, toks, chunk);
    auto got = all_logits(*repacked, toks, chunk);
    ASSERT_EQ(want.size(), got.size());
    EXPECT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * sizeof(float))) << "chunk " << chunk;
  }
  // The f32-activation test hook dequantizes repacked rows through the unpack.
  debug::use_f32_activations(*repacked);
  auto exact = Engine::open(q, [&] { auto p = opts; p.repack_iq2_xxs = false; return p; }());
  debug::use_f32_activations(*exact);
  auto a = all_logits(*exact, some, 8), b = all_logits(*repacked, some, 8);
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
  repacked.reset();
  EXPECT_TRUE(slurp(q) == before) << "the GGUF on disk changed";
}
