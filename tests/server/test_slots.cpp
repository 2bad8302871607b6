// Slots and the scheduler without a model: routing rules, the memory refusal, and several
// fake sessions served together (interleaving, queue bound, cancellation, prefix stickiness).
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <map>
#include <set>
#include <mutex>
#include <thread>

#include "fake_session.h"
#include "real_tokenizer.h"
#include "server/openai.h"
#include "server/worker.h"

namespace ds4::server {
namespace {

using OJ = nlohmann::ordered_json;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

SlotCandidate cand(bool idle, size_t live, size_t reusable, int age_s) {
  SlotCandidate c;
  c.idle = idle;
  c.live_tokens = live;
  c.reusable = reusable;
  c.last_used = Clock::time_point{} + std::chrono::hours(1) - std::chrono::seconds(age_s);
  return c;
}

TEST(Routing, AllBusyWaits) {
  EXPECT_EQ(route_request({cand(false, 0, 0, 0), cand(false, 10, 10, 0)}), -1);
}

TEST(Routing, ContinuationBeatsEmptySlot) {
  // The prompt extends slot 1's whole live state.
  EXPECT_EQ(route_request({cand(true, 0, 0, 0), cand(true, 900, 900, 5)}), 1);
}

TEST(Routing, SharedSystemPromptDoesNotStealAWarmSlot) {
  // Only 200 of slot 1's 1000 tokens match: an empty slot is taken instead.
  EXPECT_EQ(route_request({cand(true, 1000, 200, 9), cand(true, 0, 0, 1)}), 1);
  // Half or more kept counts as a long match (a regenerated last answer).
  EXPECT_EQ(route_request({cand(true, 1000, 500, 9), cand(true, 0, 0, 1)}), 0);
}

TEST(Routing, WithoutEmptySlotLongestPrefixThenLeastRecentlyUsed) {
  EXPECT_EQ(route_request({cand(true, 1000, 100, 1), cand(true, 1000, 200, 1)}), 1);
  EXPECT_EQ(route_request({cand(true, 1000, 0, 1), cand(true, 1000, 0, 50), cand(false, 0, 0, 99)}), 1);
  // The oldest of several empty slots.
  EXPECT_EQ(route_request({cand(true, 0, 0, 3), cand(true, 0, 0, 7), cand(true, 50, 0, 9)}), 1);
}

TEST(SlotMemory, RefusalNamesTheNumbers) {
  EXPECT_EQ(check_slot_memory(4, 4096, 100u << 20, 1000u << 20), "");
  EXPECT_EQ(check_slot_memory(4, 4096, 100u << 20, 0), "");  // unknown: no check
  const std::string why = check_slot_memory(8, 65536, 300u << 20, 1000u << 20);
  EXPECT_NE(why.find("--parallel 8"), std::string::npos) << why;
  EXPECT_NE(why.find("--ctx 65536"), std::string::npos) << why;
  EXPECT_NE(why.find("2400 MiB"), std::string::npos) << why;
  EXPECT_NE(why.find("300 MiB per slot"), std::string::npos) << why;
  EXPECT_NE(why.find("1000 MiB"), std::string::npos) << why;
  EXPECT_NE(why.find("at most 3 slot(s)"), std::string::npos) << why;
}

TEST(PrefixHash, StableAndDistinct) {
  EXPECT_EQ(prefix_hash({1, 2, 3}), prefix_hash({1, 2, 3}));
  EXPECT_NE(prefix_hash({1, 2, 3}), prefix_hash({1, 2, 4}));
  EXPECT_EQ(prefix_hash({1}).size(), 16u);
}

struct Slots : ::testing::Test {
  ServerOptions options;
  Metrics metrics;
  std::vector<FakeSession*> sessions;
  std::unique_ptr<Worker> worker;

  void start(int parallel, int max_queue = 64, std::function<void(std::span<const BatchEntry>)> batch = {}) {
    options.test_hooks = true;
    std::vector<std::unique_ptr<Session>> v;
    for (int i = 0; i < parallel; ++i) {
      auto s = std::make_unique<FakeSession>(512, static_cast<int>(test::real_tokenizer().vocab_size()));
      sessions.push_back(s.get());
      v.push_back(std::move(s));
    }
    WorkerOptions wo;
    wo.max_queue = max_queue;
    wo.prefill_chunk = 8;
    wo.eval_batch = std::move(batch);
    worker = std::make_unique<Worker>(std::move(v), test::real_tokenizer(), metrics, wo);
  }
  GenerationSpec chat(const OJ& body) {
    RequestInfo info;
    return build_chat_spec(body, ServerContext{options, test::real_tokenizer(), 512}, info);
  }
  static OJ scripted(const std::string& user, const std::string& out, int delay_ms = 0) {
    OJ b = {{"model", "deepseek-chat"},
            {"messages", OJ::array({OJ{{"role", "user"}, {"content", user}}})},
            {"ds4_test_output", out}};
    if (delay_ms) b["ds4_test_delay_ms"] = delay_ms;
    return b;
  }
  static std::vector<GenEvent> drain(Job& job) {
    std::vector<GenEvent> all;
    while (all.empty() || (all.back().kind != GenEvent::Kind::Done &&
                           all.back().kind != GenEvent::Kind::Failed)) {
      job.wait_events(all, 1000ms);
    }
    return all;
  }
  static std::string content(const std::vector<GenEvent>& evs) {
    std::string s;
    for (const auto& e : evs) if (e.kind == GenEvent::Kind::Content) s += e.text;
    return s;
  }
};

TEST_F(Slots, TwoStreamsDecodeTogether) {
  start(2);
  const std::string long_text = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi "
                                "omicron pi rho sigma tau upsilon phi chi psi omega";
  auto a = worker->submit(chat(scripted("first", long_text, 30)));
  std::this_thread::sleep_for(50ms);
  auto b = worker->submit(chat(scripted("second", "one two", 1)));
  auto eb = drain(*b);
  // The second stream finished while the first was still generating: no waiting in line.
  std::vector<GenEvent> so_far;
  a->wait_events(so_far, 0ms);
  bool a_done = false;
  for (const auto& e : so_far) a_done = a_done || e.kind == GenEvent::Kind::Done;
  EXPECT_FALSE(a_done);
  auto ea = drain(*a);
  ea.insert(ea.begin(), so_far.begin(), so_far.end());
  EXPECT_EQ(content(ea), long_text);
  EXPECT_EQ(content(eb), "one two");
  EXPECT_EQ(ea.back().finish_reason, "stop");
  EXPECT_EQ(eb.back().finish_reason, "stop");
  // Each conversation went to its own slot.
  EXPECT_GT(sessions[0]->n_tokens(), 0);
  EXPECT_GT(sessions[1]->n_tokens(), 0);
  const auto infos = worker->slot_infos();
  ASSERT_EQ(infos.size(), 2u);
  EXPECT_NE(infos[0].prefix_hash, infos[1].prefix_hash);
}

TEST_F(Slots, GeneratingSlotsShareOneBatch) {
  std::mutex mu;
  size_t widest = 0, calls = 0;
  start(3, 64, [&](std::span<const BatchEntry> entries) {
    std::set<Session*> sessions;
    for (const BatchEntry& e : entries) {
      ASSERT_EQ(e.pos, e.session->n_tokens());  // each session's next position, in order
      e.session->eval(e.token);
      sessions.insert(e.session);
    }
    std::lock_guard<std::mutex> lock(mu);
    widest = std::max(widest, sessions.size());
    ++calls;
  });
  std::vector<std::shared_ptr<Job>> jobs;
  std::vector<std::string> texts;
  for (int k = 0; k < 3; ++k) {
    texts.push_back("stream " + std::to_string(k) + std::string(150, static_cast<char>('a' + k)));
    // The pause keeps all three generating at once however the threads are scheduled.
    jobs.push_back(worker->submit(chat(scripted("user " + std::to_string(k), texts.back(), 2))));
  }
  for (int k = 0; k < 3; ++k) EXPECT_EQ(content(drain(*jobs[k])), texts[k]);
  EXPECT_EQ(widest, 3u);
  EXPECT_GT(calls, 10u);
  // Rows per step: every step with a batch evaluated several slots' tokens at once.
  EXPECT_GT(metrics.decode_step_rows.load(), metrics.decode_steps.load());
}

TEST_F(Slots, PrefillChunksRideWithDecodeRows) {
  // Every pass the scheduler makes: rows per session.
  std::mutex mu;
  std::vector<std::map<Session*, int>> passes;
  start(2, 64, [&](std::span<const BatchEntry> entries) {
    std::map<Session*, int> rows;
    for (const BatchEntry& e : entries) {
      ASSERT_EQ(e.pos, e.session->n_tokens());
      e.session->eval(e.token);
      ++rows[e.session];
    }
    std::lock_guard<std::mutex> lock(mu);
    passes.push_back(rows);
  });
  // A slow model (1 ms a token): the first stream is still generating while the second
  // one prefills.
  for (FakeSession* s : sessions) s->eval_delay_us = 1000;
  std::string a_text;
  for (int i = 0; i < 150; ++i) {
    a_text += ' ';
    a_text += std::to_string(i);
  }
  auto a = worker->submit(chat(scripted("first", a_text)));
  std::vector<GenEvent> a_events;
  auto seen = [&](GenEvent::Kind kind) {
    for (const auto& e : a_events) if (e.kind == kind) return true;
    return false;
  };
  while (!seen(GenEvent::Kind::Started)) a->wait_events(a_events, 1000ms);
  // A prompt of many 8-token chunks (wo.prefill_chunk = 8).
  std::string long_prompt;
  for (int i = 0; i < 40; ++i) long_prompt += "word" + std::to_string(i) + " ";
  auto b = worker->submit(chat(scripted(long_prompt, "second answer")));
  auto eb = drain(*b);
  if (!seen(GenEvent::Kind::Done) && !seen(GenEvent::Kind::Failed)) {
    auto rest = drain(*a);
    a_events.insert(a_events.end(), rest.begin(), rest.end());
  }
  EXPECT_EQ(content(a_events), a_text);
  EXPECT_EQ(content(eb), "second answer");
  ASSERT_EQ(eb.back().kind, GenEvent::Kind::Done);
  const int64_t prompt_tokens = eb.back().usage.prompt_tokens;
  ASSERT_GT(prompt_tokens, 40);
  // Passes that carried a prefill chunk (several rows of one session) next to a decode row;
  // no pass carried more than one chunk, so a stream waited at most one chunk.
  int mixed = 0;
  int64_t chunk_rows = 0;
  std::lock_guard<std::mutex> lock(mu);
  for (const auto& rows : passes) {
    int chunks = 0, singles = 0;
    for (const auto& [session, n] : rows) {
      EXPECT_LE(n, 8);
      if (n > 1) {
        ++chunks;
        chunk_rows += n;
      } else {
        ++singles;
      }
    }
    EXPECT_LE(chunks, 1);
    if (chunks == 1 && singles == 1) ++mixed;
  }
  EXPECT_GE(mixed, 3);
  EXPECT_GT(metrics.batched_prefill_rows.load(), 0u);
  EXPECT_LE(metrics.batched_prefill_rows.load(), static_cast<uint64_t>(prompt_tokens));
  EXPECT_GE(static_cast<int64_t>(metrics.batched_prefill_rows.load()), chunk_rows);
}

TEST_F(Slots, FullQueueAnswers429WithRetryAfter) {
  start(1, /*max_queue=*/1);
  auto a = worker->submit(chat(scripted("a", "slow slow slow slow", 50)));
  // Wait until a holds the slot, so b is the one waiting.
  std::vector<GenEvent> first;
  while (first.empty()) a->wait_events(first, 1000ms);
  auto b = worker->submit(chat(scripted("b", "queued")));
  try {
    worker->submit(chat(scripted("c", "rejected")));
    FAIL() << "expected 429";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status, 429);
    EXPECT_GT(e.retry_after_s, 0);
  }
  EXPECT_EQ(metrics.queue_rejected.load(), 1u);
  EXPECT_EQ(content(drain(*b)), "queued");
  drain(*a);
  // The slot is released right after the final event (the closing token is evaluated first).
  for (int i = 0; i < 200 && metrics.queue_depth.load() != 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(metrics.queue_depth.load(), 0);
}

TEST_F(Slots, CancelledStreamFreesItsSlotAtOnce) {
  start(1);
  auto a = worker->submit(chat(scripted("a", std::string(200, 'x'), 20)));
  auto b = worker->submit(chat(scripted("b", "next")));
  std::this_thread::sleep_for(100ms);
  a->cancelled = true;
  const auto t0 = Clock::now();
  EXPECT_EQ(content(drain(*b)), "next");
  EXPECT_LT(Clock::now() - t0, 2s);
  auto ea = drain(*a);
  EXPECT_EQ(ea.back().finish_reason, "cancelled");
  EXPECT_EQ(metrics.cancelled_jobs.load(), 1u);
}

TEST_F(Slots, AlternatingConversationsKeepTheirSlots) {
  start(2);
  OJ conv[2] = {scripted("conversation A", "answer A0"), scripted("conversation B", "answer B0")};
  int64_t last_prompt[2] = {0, 0}, last_completion[2] = {0, 0};
  for (int turn = 0; turn < 3; ++turn) {
    for (int c = 0; c < 2; ++c) {
      auto evs = drain(*worker->submit(chat(conv[c])));
      const Usage& u = evs.back().usage;
      if (turn > 0) {
        // The whole previous prompt and answer (closing token included) was live.
        EXPECT_EQ(u.cached_tokens, last_prompt[c] + last_completion[c]) << "turn " << turn << " conv " << c;
      }
      last_prompt[c] = u.prompt_tokens;
      last_completion[c] = u.completion_tokens;
      const std::string answer = content(evs);
      conv[c]["messages"].push_back({{"role", "assistant"}, {"content", answer}});
      conv[c]["messages"].push_back({{"role", "user"}, {"content", "more " + std::to_string(turn)}});
      conv[c]["ds4_test_output"] = "answer " + std::string(c ? "B" : "A") + std::to_string(turn + 1);
    }
  }
}

TEST_F(Slots, ShutdownAnswersQueuedJobs503) {
  start(1);
  auto a = worker->submit(chat(scripted("a", std::string(100, 'y'), 20)));
  // a generates (a cancellation during prefill would be a 499 instead).
  std::vector<GenEvent> first;
  auto started = [&] {
    for (const auto& e : first) if (e.kind == GenEvent::Kind::Started) return true;
    return false;
  };
  while (!started()) a->wait_events(first, 1000ms);
  auto b = worker->submit(chat(scripted("b", "never")));
  worker->stop();
  auto eb = drain(*b);
  ASSERT_EQ(eb.back().kind, GenEvent::Kind::Failed);
  EXPECT_EQ(eb.back().error->status, 503);
  EXPECT_GT(eb.back().error->retry_after_s, 0);
  auto ea = drain(*a);
  ASSERT_EQ(ea.back().kind, GenEvent::Kind::Done);
  EXPECT_EQ(ea.back().finish_reason, "error");
}

}  // namespace
}  // namespace ds4::server
