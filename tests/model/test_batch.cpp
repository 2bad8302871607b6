// Batch evaluation (Engine::eval_batch) and cheap rewinds: a sequence's logits are
// bit-identical whether it runs alone, in a batch with other sessions, or as a verify batch
// of several positions; rewinds of up to EngineOptions::rewind_tokens re-evaluate nothing.
#include <cstring>

#include "oracle_util.h"

using namespace ds4;
using namespace ds4::test;

namespace {

using BatchTest = OracleFileTest;

bool same_bits(const float* a, const float* b, size_t n) { return std::memcmp(a, b, n * sizeof(float)) == 0; }

}  // namespace

// Four sessions with different prompts, prefilled together in one interleaved batch and then
// decoded together (one entry each per step) for 32 steps: every logit equals the same
// session run alone (sync + eval).
TEST_P(BatchTest, FourSessionsTogetherEqualAlone) {
  Engine& e = engine();
  const int V = e.n_vocab(), steps = 32;
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 4; ++i) prompts.push_back(slice(3 * i, 9 + 7 * i));
  const int ctx = 9 + 7 * 3 + steps + 1;

  // Alone: greedy continuation, logits after the prompt and after every step.
  std::vector<std::vector<int32_t>> next(4);
  std::vector<std::vector<float>> alone(4);
  for (int i = 0; i < 4; ++i) {
    auto s = e.new_session(ctx);
    s->sync(prompts[i]);
    for (int step = 0; step < steps; ++step) {
      alone[i].insert(alone[i].end(), s->logits().begin(), s->logits().end());
      const int32_t t = argmax(s->logits().data(), V);
      next[i].push_back(t);
      s->eval(t);
    }
    alone[i].insert(alone[i].end(), s->logits().begin(), s->logits().end());
  }

  std::vector<std::unique_ptr<Session>> ss;
  for (int i = 0; i < 4; ++i) ss.push_back(e.new_session(ctx));
  // Prompts interleaved round-robin in one batch.
  std::vector<BatchEntry> batch;
  for (size_t t = 0; t < prompts[3].size(); ++t)
    for (int i = 0; i < 4; ++i)
      if (t < prompts[i].size()) batch.push_back({ss[i].get(), prompts[i][t], static_cast<int>(t), false});
  e.eval_batch(batch);
  for (int step = 0; step <= steps; ++step) {
    for (int i = 0; i < 4; ++i)
      ASSERT_TRUE(same_bits(ss[i]->logits().data(), alone[i].data() + static_cast<size_t>(step) * V, V))
          << "session " << i << " step " << step;
    if (step == steps) break;
    batch.clear();
    for (int i = 3; i >= 0; --i) batch.push_back({ss[i].get(), next[i][step], ss[i]->n_tokens(), true});
    BatchResult r;
    e.eval_batch(batch, &r);
    ASSERT_EQ(r.rows, 4);
    for (int i = 0; i < 4; ++i) ASSERT_TRUE(same_bits(r.row(3 - i), ss[i]->logits().data(), V));
  }
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(ss[i]->n_tokens(), static_cast<int>(prompts[i].size()) + steps);
    EXPECT_EQ(ss[i]->stats().decode.passes, steps);
  }
}

// The server's step: three sessions' decode rows and a fourth session's prefill chunk in one
// pass (the chunk's rows after the decode rows). Every session's logits equal it alone.
TEST_P(BatchTest, DecodeRowsWithAPrefillChunkEqualAlone) {
  Engine& e = engine();
  const int V = e.n_vocab(), ctx = 40;
  std::vector<std::vector<int32_t>> prompts = {slice(0, 12), slice(5, 10), slice(9, 14)};
  const std::vector<int32_t> chunked = slice(2, 20);  // 8 tokens, then a chunk of 12
  const std::vector<int32_t> head(chunked.begin(), chunked.begin() + 8);

  std::vector<int32_t> next;
  std::vector<std::vector<float>> alone;
  std::vector<std::unique_ptr<Session>> ss;
  for (const auto& p : prompts) {
    auto s = e.new_session(ctx);
    s->sync(p);
    next.push_back(argmax(s->logits().data(), V));
    ss.push_back(e.new_session(ctx));
    ss.back()->sync(p);
    s->eval(next.back());
    alone.push_back(s->logits());
  }
  {
    auto s = e.new_session(ctx);
    s->sync(head);
    s->sync(chunked);
    alone.push_back(s->logits());
    ss.push_back(e.new_session(ctx));
    ss.back()->sync(head);
  }
  std::vector<BatchEntry> batch;
  for (int i = 0; i < 3; ++i) batch.push_back({ss[i].get(), next[i], ss[i]->n_tokens(), false});
  for (int t = 8; t < 20; ++t) batch.push_back({ss[3].get(), chunked[t], t, false});
  e.eval_batch(batch);
  for (int i = 0; i < 4; ++i) {
    ASSERT_EQ(ss[i]->logits().size(), static_cast<size_t>(V));
    EXPECT_TRUE(same_bits(ss[i]->logits().data(), alone[i].data(), V)) << "session " << i;
  }
  EXPECT_EQ(ss[3]->tokens(), chunked);
}

// A verify batch of k+1 positions of one session gives the logits of k+1 single decodes,
// and rewinding to any accepted prefix continues exactly like the single decodes.
TEST_P(BatchTest, VerifyBatchEqualsSingleDecodes) {
  Engine& e = engine();
  const int V = e.n_vocab(), k = 5, p = 30;
  const int ctx = p + k + 2;
  auto one = e.new_session(ctx);
  one->sync(slice(0, p));
  std::vector<float> singles;
  for (int j = 0; j <= k; ++j) {
    one->eval(o_->tokens[p + j]);
    singles.insert(singles.end(), one->logits().begin(), one->logits().end());
  }
  for (int accept = 0; accept <= k + 1; ++accept) {
    auto s = e.new_session(ctx);
    s->sync(slice(0, p));
    std::vector<BatchEntry> batch;
    for (int j = 0; j <= k; ++j) batch.push_back({s.get(), o_->tokens[p + j], p + j, true});
    BatchResult r;
    e.eval_batch(batch, &r);
    ASSERT_EQ(r.rows, k + 1);
    for (int j = 0; j <= k; ++j)
      ASSERT_TRUE(same_bits(r.row(j), singles.data() + static_cast<size_t>(j) * V, V)) << "row " << j;
    // Keep `accept` of the k+1 verified tokens.
    s->rewind(p + accept);
    EXPECT_EQ(s->stats().tokens_reevaluated, 0);
    if (accept > 0) {
      EXPECT_TRUE(same_bits(s->logits().data(), singles.data() + static_cast<size_t>(accept - 1) * V, V));
    }
    for (int j = accept; j <= k; ++j) {
      s->eval(o_->tokens[p + j]);
      ASSERT_TRUE(same_bits(s->logits().data(), singles.data() + static_cast<size_t>(j) * V, V))
          << "accept " << accept << " re-decode " << j;
    }
  }
}

// After 40 decoded tokens, rewind(n - k) for every k <= rewind_tokens is cheap (no token
// re-evaluated, whatever compressor rows were completed in between) and re-decoding gives
// bit-identical logits; one further back re-evaluates.
TEST_P(BatchTest, CheapRewindUpToR) {
  Engine& e = engine();
  const int V = e.n_vocab(), R = e.options().rewind_tokens, p = 20, steps = 40;
  ASSERT_GE(o_->n(), p + steps);
  auto s = e.new_session(p + steps + 1);
  s->sync(slice(0, p));
  std::vector<float> first;  // logits after positions p-1 .. p+steps-1
  first.insert(first.end(), s->logits().begin(), s->logits().end());
  for (int i = p; i < p + steps; ++i) {
    s->eval(o_->tokens[i]);
    first.insert(first.end(), s->logits().begin(), s->logits().end());
  }
  const int n = p + steps;
  auto row = [&](int pos) { return first.data() + static_cast<size_t>(pos - (p - 1)) * V; };  // after pos
  s->reset_stats();
  for (int k = 1; k <= R; ++k) {
    ASSERT_TRUE(s->can_rewind_cheaply(n - k)) << "k " << k;
    s->rewind(n - k);
    ASSERT_EQ(s->n_tokens(), n - k);
    ASSERT_TRUE(same_bits(s->logits().data(), row(n - k - 1), V)) << "k " << k;
    for (int i = n - k; i < n; ++i) {
      s->eval(o_->tokens[i]);
      ASSERT_TRUE(same_bits(s->logits().data(), row(i), V)) << "k " << k << " re-decode " << i;
    }
  }
  EXPECT_EQ(s->stats().rewinds_cheap, R);
  EXPECT_EQ(s->stats().rewinds_reevaluated, 0);
  EXPECT_EQ(s->stats().tokens_reevaluated, 0);
  EXPECT_EQ(s->stats().prefill.tokens, 0);
  // Beyond R: re-evaluated, still exact.
  EXPECT_FALSE(s->can_rewind_cheaply(n - R - 1));
  s->rewind(n - R - 1);
  EXPECT_EQ(s->stats().rewinds_reevaluated, 1);
  EXPECT_EQ(s->stats().tokens_reevaluated, n - R - 1);
  EXPECT_TRUE(same_bits(s->logits().data(), row(n - R - 2), V));
}

TEST_P(BatchTest, BadBatchesAreRejectedBeforeAnyWork) {
  Engine& e = engine();
  auto a = e.new_session(8);
  auto b = e.new_session(8);
  a->sync(slice(0, 3));
  auto expect_error = [&](std::vector<BatchEntry> batch, Error::Kind kind, const char* what) {
    try {
      e.eval_batch(batch);
      ADD_FAILURE() << what << " accepted";
    } catch (const Error& err) {
      EXPECT_EQ(err.kind(), kind) << what << ": " << err.what();
    }
    EXPECT_EQ(a->n_tokens(), 3) << what;
    EXPECT_EQ(b->n_tokens(), 0) << what;
  };
  expect_error({{b.get(), 1, 0}, {a.get(), 1, 4}}, Error::Kind::InvalidArgument, "a gap in positions");
  expect_error({{a.get(), 1, 3}, {b.get(), e.n_vocab(), 0}}, Error::Kind::InvalidArgument, "token out of range");
  expect_error({{nullptr, 1, 0}}, Error::Kind::InvalidArgument, "null session");
  std::vector<BatchEntry> full;
  for (int i = 0; i < 9; ++i) full.push_back({b.get(), 1, i});
  expect_error(full, Error::Kind::ContextOverflow, "context overflow");
  e.eval_batch({});  // nothing to do
}

INSTANTIATE_TEST_SUITE_P(Batch, BatchTest,
                         ::testing::Values(OracleFile{"tiny-a", "f32"}, OracleFile{"tiny-b", "f32"},
                                           OracleFile{"tiny-q", "f32"}, OracleFile{"tiny-q", "q2"}),
                         oracle_file_name);
