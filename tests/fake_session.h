// A model-free Session for the CLI and server unit tests. After token t its logits make one
// next token certain even when sampled: script[t] when a script is given (EOS, id 1, past its
// end), else `favourite`. sync() follows the engine's contract: the longest common prefix is
// reused, at least the last token is evaluated unless the prompt equals the live state, and
// the cancel flag is checked before every token.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <thread>
#include <vector>

#include "ds4/engine.h"

namespace ds4 {

class FakeSession : public Session {
 public:
  FakeSession(int ctx, int vocab, std::vector<int32_t> script = {})
      : Session(ctx), vocab_(vocab), script_(std::move(script)) {}
  int n_tokens() const override { return static_cast<int>(tokens_.size()); }
  const std::vector<int32_t>& tokens() const override { return tokens_; }
  int sync(const std::vector<int32_t>& tokens, const SyncOptions& opt) override {
    if (tokens.size() > static_cast<size_t>(ctx_)) throw Error(Error::Kind::ContextOverflow, "ctx");
    size_t common = 0;
    while (common < tokens_.size() && common < tokens.size() && tokens_[common] == tokens[common]) {
      ++common;
    }
    if (common == tokens.size() && common == tokens_.size()) return static_cast<int>(common);
    if (common == tokens.size() && common > 0) --common;  // fresh logits for the last token
    tokens_.resize(common);
    const int todo = static_cast<int>(tokens.size() - common);
    for (int i = 0; i < todo; ++i) {
      if (cancelled()) throw Error(Error::Kind::Cancelled, "cancelled");
      push(tokens[common + static_cast<size_t>(i)]);
      if (opt.progress) opt.progress(i + 1, todo);
    }
    return static_cast<int>(common);
  }
  void eval(int32_t token) override {
    if (n_tokens() >= ctx_) throw Error(Error::Kind::ContextOverflow, "ctx");
    if (eval_delay_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(eval_delay_us.load()));
    ++eval_calls;
    push(token);
  }
  const std::vector<float>& logits() const override { return logits_; }
  const std::vector<float>& hidden() const override { return logits_; }
  void rewind(int pos) override { tokens_.resize(static_cast<size_t>(pos)); }
  bool can_rewind_cheaply(int) const override { return true; }
  void reset() override { tokens_.clear(); }
  std::vector<uint8_t> save_snapshot() const override { return {}; }
  void save_snapshot(std::FILE*) const override {}
  void save_snapshot(std::ostream&) const override {}
  void load_snapshot(const uint8_t*, size_t) override {}
  void load_snapshot(std::FILE*) override {}
  void load_snapshot(std::istream&) override {}
  bool has_mtp() const override { return false; }
  const std::vector<float>& mtp_eval(const float*, int32_t, int) override { return logits_; }
  const std::vector<float>& mtp_hidden() const override { return logits_; }
  void mtp_reset() override {}

  int32_t favourite = 300;          // the next token without a script
  std::atomic<int> evaluated{0};    // tokens evaluated by sync() and eval()
  std::atomic<int> eval_calls{0};   // eval() calls alone
  std::atomic<int> eval_delay_us{0};  // a slow model: each eval() takes this long

 private:
  void push(int32_t t) {
    tokens_.push_back(t);
    ++evaluated;
    int32_t next = favourite;
    if (!script_.empty()) next = t >= 0 && static_cast<size_t>(t) < script_.size() ? script_[static_cast<size_t>(t)] : 1;
    logits_.assign(static_cast<size_t>(vocab_), 0.f);
    logits_[static_cast<size_t>(next)] = 50.f;
  }
  int vocab_;
  std::vector<int32_t> script_;
  std::vector<int32_t> tokens_;
  std::vector<float> logits_;
};

}  // namespace ds4
