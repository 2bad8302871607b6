// A model-free Session for the server's unit tests.
#pragma once

#include <atomic>
#include <vector>

#include "ds4/engine.h"

namespace ds4::server {

// A session whose logits always favour token `favourite`; counts evaluated tokens.
class FakeSession : public Session {
 public:
  explicit FakeSession(int ctx, int vocab) : Session(ctx), vocab_(vocab) {}
  int n_tokens() const override { return static_cast<int>(tokens_.size()); }
  const std::vector<int32_t>& tokens() const override { return tokens_; }
  int sync(const std::vector<int32_t>& tokens, const SyncOptions& opt) override {
    if (tokens.size() > static_cast<size_t>(ctx_)) throw Error(Error::Kind::ContextOverflow, "ctx");
    size_t common = 0;
    while (common < tokens_.size() && common < tokens.size() && tokens_[common] == tokens[common]) {
      ++common;
    }
    tokens_.resize(common);
    for (size_t i = common; i < tokens.size(); ++i) {
      if (cancelled()) throw Error(Error::Kind::Cancelled, "cancelled");
      eval(tokens[i]);
    }
    if (opt.progress) opt.progress(static_cast<int>(tokens.size() - common),
                                   static_cast<int>(tokens.size() - common));
    return static_cast<int>(common);
  }
  void eval(int32_t token) override {
    tokens_.push_back(token);
    ++evaluated;
    logits_.assign(vocab_, 0.f);
    logits_[favourite] = 10.f;
  }
  const std::vector<float>& logits() const override { return logits_; }
  const std::vector<float>& hidden() const override { return logits_; }
  void rewind(int pos) override { tokens_.resize(pos); }
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

  int32_t favourite = 300;
  std::atomic<int> evaluated{0};

 private:
  int vocab_;
  std::vector<int32_t> tokens_;
  std::vector<float> logits_;
};

}  // namespace ds4::server
