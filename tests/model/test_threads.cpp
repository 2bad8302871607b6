// Sessions of one engine made, snapshotted, restored and destroyed on another thread while
// batches run: no interference (the batch's numbers do not change) and, in the
// ThreadSanitizer build (docs/backend.md), no data race.
#include <atomic>
#include <cstring>
#include <thread>

#include "oracle_util.h"

using namespace ds4;
using namespace ds4::test;

TEST(EngineThreads, SessionsChangeWhileABatchRuns) {
  const std::string path = oracle_gguf("tiny-a", "f32");
  ASSERT_TRUE(file_exists(path)) << path << " is missing (written by the convert_oracle_ggufs fixture)";
  Oracle o("tiny-a");
  Engine& e = engine_for(path, true);
  const int steps = 12;
  const std::vector<int32_t> pa(o.tokens.begin(), o.tokens.begin() + 10), pb(o.tokens.begin() + 5, o.tokens.begin() + 20);

  // Expected logits: each session alone, no other thread.
  auto decode_alone = [&](const std::vector<int32_t>& prompt) {
    auto s = e.new_session(64);
    s->sync(prompt);
    std::vector<float> out;
    for (int i = 0; i < steps; ++i) {
      s->eval(o.tokens[40 + i]);
      out.insert(out.end(), s->logits().begin(), s->logits().end());
    }
    return out;
  };
  const auto want_a = decode_alone(pa), want_b = decode_alone(pb);
  auto donor = e.new_session(64);
  donor->sync(pb);
  const std::vector<uint8_t> snap = donor->save_snapshot();

  auto a = e.new_session(64), b = e.new_session(64);
  a->sync(pa);
  b->sync(pb);
  std::atomic<bool> done{false};
  std::atomic<int> churned{0};
  std::thread other([&] {
    // Keep making, restoring, saving, rewinding (cheaply) and dropping sessions until the
    // batches are done; one small sync too (it waits for the running batch).
    while (!done.load()) {
      auto s = e.new_session(64);
      s->load_snapshot(snap.data(), snap.size());
      auto again = s->save_snapshot();
      EXPECT_EQ(again, snap);
      s->rewind(s->n_tokens() - 1);
      (void)e.scratch_bytes();
      (void)e.session_memory_bytes(64);
      if (churned.fetch_add(1) % 8 == 0) s->sync(pa);
    }
  });
  std::vector<float> got_a, got_b;
  for (int i = 0; i < steps; ++i) {
    const BatchEntry batch[2] = {{a.get(), o.tokens[40 + i], a->n_tokens(), false},
                                 {b.get(), o.tokens[40 + i], b->n_tokens(), false}};
    e.eval_batch(batch);
    got_a.insert(got_a.end(), a->logits().begin(), a->logits().end());
    got_b.insert(got_b.end(), b->logits().begin(), b->logits().end());
  }
  done = true;
  other.join();
  EXPECT_GT(churned.load(), 0);
  ASSERT_EQ(got_a.size(), want_a.size());
  EXPECT_EQ(0, std::memcmp(got_a.data(), want_a.data(), got_a.size() * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(got_b.data(), want_b.data(), got_b.size() * sizeof(float)));
}
