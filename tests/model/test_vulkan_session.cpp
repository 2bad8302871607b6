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
