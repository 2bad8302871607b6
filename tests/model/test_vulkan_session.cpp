// Session behaviour on the Vulkan backend (whose sequence state lives on the device):
// snapshots moved between the CPU and Vulkan backends, cheap rewinds through the device-side
// undo logs, and sequences batched together. Test names end in _vulkan (label vulkan).
// Lavapipe is slow: few tokens, tiny-a only.
#include <cstring>

#include "oracle_util.h"

using namespace ds4;
using namespace ds4::test;

namespace {

class VulkanSession : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!has_backend(Backend::Vulkan)) GTEST_SKIP() << "built without Vulkan";
    DS4_SKIP_WITHOUT_ORACLE("tiny-a");
    o_ = std::make_unique<Oracle>("tiny-a");
    path_ = oracle_gguf("tiny-a", "f32");
    ASSERT_TRUE(file_exists(path_)) << path_ << " is missing (written by the convert_oracle_ggufs fixture)";
  }
  // Simulation off: the f32 recipe then agrees with the reference to ~1e-6 on both backends.
  Engine& cpu() { return engine_for(path_, false, Backend::Cpu); }
  Engine& vk() { return engine_for(path_, false, Backend::Vulkan); }
  std::vector<int32_t> prefix(int k) const { return {o_->tokens.begin(), o_->tokens.begin() + k}; }

  // Greedy continuation of `steps` tokens; the logits of every step appended to `logits`.
  static std::vector<int> greedy(Session& s, int steps, std::vector<float>* logits = nullptr) {
    std::vector<int> out;
    const int V = static_cast<int>(s.logits().size());
    for (int i = 0; i < steps; ++i) {
      if (logits) logits->insert(logits->end(), s.logits().begin(), s.logits().end());
      out.push_back(argmax(s.logits().data(), V));
      s.eval(out.back());
    }
    return out;
  }

  std::unique_ptr<Oracle> o_;
  std::string path_;
};

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

// A session saved on one backend loads on the other (the canonical payload) and continues
// with the same greedy tokens; on Vulkan, save + load continues bit-identically. The prefix
// (41 tokens) has completed compressor rows of both ratios and engages the indexer.
TEST_F(VulkanSession, SnapshotsMoveBetweenBackends_vulkan) {
  const int k = 41, steps = 6, ctx = k + steps + 2;
  auto c = cpu().new_session(ctx);
  auto v = vk().new_session(ctx);
  c->sync(prefix(k));
  v->sync(prefix(k));
  v->mtp_reset();  // bookkeeping only: the device state must survive it
  const auto from_cpu = c->save_snapshot(), from_vk = v->save_snapshot();
  ASSERT_EQ(from_cpu.size(), from_vk.size()) << "one payload layout";

  auto v2 = vk().new_session(ctx);
  v2->load_snapshot(from_cpu.data(), from_cpu.size());
  auto c2 = cpu().new_session(ctx);
  c2->load_snapshot(from_vk.data(), from_vk.size());
  auto v3 = vk().new_session(ctx);
  v3->load_snapshot(from_vk.data(), from_vk.size());
  EXPECT_TRUE(same_bits(v->logits(), v3->logits()));

  std::vector<float> lv, lv3;
  const auto want = greedy(*c, steps);
  EXPECT_EQ(greedy(*v, steps, &lv), want) << "vulkan alone";
  EXPECT_EQ(greedy(*v2, steps), want) << "saved on cpu, continued on vulkan";
  EXPECT_EQ(greedy(*c2, steps), want) << "saved on vulkan, continued on cpu";
  greedy(*v3, steps, &lv3);
  EXPECT_TRUE(same_bits(lv, lv3)) << "saved and loaded on vulkan";
}

// Rewinds of up to rewind_tokens positions re-evaluate nothing (the compressors' undo
// entries are copied back on the device) and re-decoding reproduces the first run's bits.
TEST_F(VulkanSession, CheapRewindIsExact_vulkan) {
  Engine& e = vk();
  const int V = e.n_vocab(), p = 30, steps = 10;
  auto s = e.new_session(p + steps + 1);
  s->sync(prefix(p));
  std::vector<float> first(s->logits().begin(), s->logits().end());  // after p-1, p, ...
  for (int i = p; i < p + steps; ++i) {
    s->eval(o_->tokens[i]);
    first.insert(first.end(), s->logits().begin(), s->logits().end());
  }
  const int n = p + steps;
  auto row = [&](int pos) { return std::vector<float>(first.begin() + (pos - (p - 1)) * V, first.begin() + (pos - p + 2) * V); };
  s->reset_stats();
  for (int k : {1, 3, steps}) {  // positions 30..39 complete ratio-4 and ratio-16 rows
    ASSERT_TRUE(s->can_rewind_cheaply(n - k)) << "k " << k;
    s->rewind(n - k);
    ASSERT_TRUE(same_bits(s->logits(), row(n - k - 1))) << "k " << k;
    for (int i = n - k; i < n; ++i) {
      s->eval(o_->tokens[i]);
      ASSERT_TRUE(same_bits(s->logits(), row(i))) << "k " << k << " re-decode " << i;
    }
  }
  EXPECT_EQ(s->stats().rewinds_reevaluated, 0);
  EXPECT_EQ(s->stats().prefill.tokens, 0);
}

// Two sessions prefilled in one interleaved batch and decoded together: every logit is the
// same bits as each session alone.
TEST_F(VulkanSession, BatchedSequencesEqualAlone_vulkan) {
  Engine& e = vk();
  const int steps = 3;
  const std::vector<int32_t> pa = prefix(9), pb(o_->tokens.begin() + 5, o_->tokens.begin() + 20);
  std::vector<std::vector<float>> alone(2);
  std::vector<std::vector<int>> next(2);
  for (int i = 0; i < 2; ++i) {
    auto s = e.new_session(32);
    s->sync(i ? pb : pa);
    next[i] = greedy(*s, steps, &alone[i]);
  }
  auto a = e.new_session(32), b = e.new_session(32);
  std::vector<BatchEntry> batch;
  for (size_t j = 0; j < pb.size(); ++j) {  // interleaved prompts
    if (j < pa.size()) batch.push_back({a.get(), pa[j], static_cast<int>(j)});
    batch.push_back({b.get(), pb[j], static_cast<int>(j)});
  }
  e.eval_batch(batch);
  std::vector<std::vector<float>> together(2);
  for (int step = 0; step < steps; ++step) {
    together[0].insert(together[0].end(), a->logits().begin(), a->logits().end());
    together[1].insert(together[1].end(), b->logits().begin(), b->logits().end());
    const std::vector<BatchEntry> decode = {{a.get(), next[0][step], static_cast<int>(pa.size()) + step},
                                            {b.get(), next[1][step], static_cast<int>(pb.size()) + step}};
    e.eval_batch(decode);
  }
  EXPECT_TRUE(same_bits(together[0], alone[0]));
  EXPECT_TRUE(same_bits(together[1], alone[1]));
}

namespace {

// An engine of its own (not the shared cache: the options differ), closed by the test.
std::unique_ptr<Engine> open_engine(const std::string& path, Backend b, int cpu_moe_layers) {
  EngineOptions o;
  o.threads = 2;
  o.qat_simulation = false;
  o.prefill_chunk = 64;
  o.backend = b;
  o.cpu_moe_layers = cpu_moe_layers;
  return Engine::open(path, o);
}

double max_rel(const std::vector<float>& got, const std::vector<float>& want, int vocab) {
  return compare_rows(got.data(), want.data(), static_cast<int>(want.size() / vocab), vocab).max_rel;
}

}  // namespace

// Hybrid MoE (--cpu-moe / --n-cpu-moe): routed experts on the CPU from host memory, the rest
// on the device. Greedy tokens equal to full GPU and full CPU (f32 recipe, prefix with the
// indexer engaged and both hash layers); logits within the oracle gate of full GPU's (the
// expert products differ only by the F32 dot's summation order); the MTP block's experts
// too. A decode token takes one submission and one wait without hybrid layers, and one more
// of each per hybrid layer (the layer's host round trip), nothing else.
TEST_F(VulkanSession, CpuMoeSameGreedy_vulkan) {
  const int k = 41, steps = 6, ctx = k + steps + 2, L = o_->n_layers;
  auto c = cpu().new_session(ctx);
  c->sync(prefix(k));
  std::vector<float> lc;
  const auto want = greedy(*c, steps, &lc);
  auto gpu = vk().new_session(ctx);
  gpu->sync(prefix(k));
  std::vector<float> lg;
  EXPECT_EQ(greedy(*gpu, steps, &lg), want) << "full gpu";
  for (int hybrid : {L + 1, 2}) {  // every layer and the MTP block; layers 0-1 (the hash layers)
    auto e = open_engine(path_, Backend::Vulkan, hybrid);
    auto s = e->new_session(ctx);
    s->sync(prefix(k));
    std::vector<float> lh;
    const DeviceCounters before = e->device_counters();
    EXPECT_EQ(greedy(*s, steps, &lh), want) << "--n-cpu-moe " << hybrid;
    const DeviceCounters after = e->device_counters();
    const double rel = max_rel(lh, lg, o_->vocab);
    std::printf("[tiny-a] --n-cpu-moe %d: greedy logits vs full gpu max rel %.3g, vs cpu %.3g\n", hybrid, rel,
                max_rel(lh, lc, o_->vocab));
    EXPECT_LE(rel, 1e-4);
    // steps - 1 decode passes (the first logits came from the prefill), no row buffer growth
    // at these positions (first at 64 compressed positions).
    const uint64_t passes = after.passes - before.passes, layers = std::min(hybrid, L);
    EXPECT_EQ(passes, static_cast<uint64_t>(steps));
    EXPECT_EQ(after.submits - before.submits, passes * (1 + layers));
    EXPECT_EQ(after.host_waits - before.host_waits, passes * (1 + layers));
    // The MTP block on the main state after the prefix.
    const std::vector<float> h = gpu->hidden();
    auto g2 = vk().new_session(ctx);
    const std::vector<float> mg = g2->mtp_eval(h.data(), want[0], k);
    const std::vector<float> mh = s->mtp_eval(h.data(), want[0], k);
    EXPECT_EQ(argmax(mh.data(), o_->vocab), argmax(mg.data(), o_->vocab));
    EXPECT_LE(max_rel(mh, mg, o_->vocab), 1e-4);
  }
  // Without hybrid layers: one submission and one wait per decode token.
  const DeviceCounters before = vk().device_counters();
  gpu->eval(want.back());
  const DeviceCounters after = vk().device_counters();
  EXPECT_EQ(after.submits - before.submits, 1u);
  EXPECT_EQ(after.host_waits - before.host_waits, 1u);
}
