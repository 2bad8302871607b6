// Engine and Session implementation behind include/ds4/engine.h (CPU backend).
#pragma once

#include <memory>
#include <mutex>
#include <unordered_map>

#include "cpu/thread_pool.h"
#include "ds4/engine.h"
#include "model/forward.h"
#include "model/weights.h"

namespace ds4 {

class EngineImpl;

// Positions a cheap rewind can go back (raw ring slack and logits history).
inline constexpr int kRewindSlack = 8;

class SessionImpl final : public Session {
 public:
  SessionImpl(EngineImpl& engine, int ctx);

  int n_tokens() const override { return static_cast<int>(tokens_.size()); }
  const std::vector<int32_t>& tokens() const override { return tokens_; }
  int sync(const std::vector<int32_t>& tokens, const SyncOptions& opt) override;
  void eval(int32_t token) override;
  const std::vector<float>& logits() const override { return logits_; }
  const std::vector<float>& hidden() const override { return hidden_; }
  void rewind(int pos) override;
  bool can_rewind_cheaply(int pos) const override;
  void reset() override;

  std::vector<uint8_t> save_snapshot() const override;
  void save_snapshot(std::FILE* f) const override;
  void save_snapshot(std::ostream& os) const override;
  void load_snapshot(const uint8_t* data, size_t size) override;
  void load_snapshot(std::FILE* f) override;
  void load_snapshot(std::istream& is) override;

  bool has_mtp() const override;
  const std::vector<float>& mtp_eval(const float* hin, int32_t token, int pos) override;
  const std::vector<float>& mtp_hidden() const override { return mtp_hidden_; }
  void mtp_reset() override;

  const EvalStats& stats() const override { return stats_; }
  void reset_stats() override;

  // Test hooks (not part of the public API).
  std::vector<model::LayerState>& layer_states() { return layers_; }
  int prefill_chunk() const { return chunk_; }

 public:
  struct Sink;    // snapshot output
  struct Source;  // snapshot input

 private:
  void write_snapshot(Sink& out) const;
  void read_snapshot(Source& in);
  void check_token(int32_t t) const;
  void prefill(const int32_t* toks, int n, const SyncOptions& opt, int chunk);
  void truncate(int pos);
  std::pair<std::vector<float>, std::vector<float>>& push_history();

  EngineImpl& engine_;
  int chunk_;
  std::vector<model::LayerState> layers_;
  std::vector<int32_t> tokens_;
  std::vector<float> logits_, hidden_;
  // Logits/hidden of the last positions, so a cheap rewind can restore them.
  std::vector<std::pair<std::vector<float>, std::vector<float>>> history_;
  model::LayerState mtp_state_;
  std::vector<float> mtp_logits_, mtp_hidden_;
  EvalStats stats_;
  std::vector<float> X_, chunk_logits_;  // evaluation buffers, kept between calls
};

class EngineImpl final : public Engine {
 public:
  EngineImpl(const std::string& path, const EngineOptions& opt);

  const ModelConfig& config() const override { return weights_->config; }
  int64_t context_limit() const override;
  const EngineOptions& options() const override { return opt_; }
  const std::vector<std::string>& vocab_tokens() const override { return vocab_; }
  int32_t find_token(std::string_view text) const override;
  bool has_mtp() const override { return weights_->has_mtp; }
  uint64_t session_memory_bytes(int ctx) const override;
  std::unique_ptr<Session> new_session(int ctx) override;
  uint64_t decode_read_bytes(int layer, int64_t pos) const override;
  uint64_t scratch_bytes() const override { return forward_->scratch_bytes(); }
  int threads() const override { return pool_->size(); }
  bool threads_pinned() const override { return pool_->pinned(); }

  const model::Weights& weights() const { return *weights_; }
  const model::Forward& forward() const { return *forward_; }
  cpu::ThreadPool& pool() { return *pool_; }
  std::mutex& eval_mutex() { return eval_mu_; }
  static int ring_cap(const ModelConfig& c, int ctx) { return std::min(ctx, c.window) + kRewindSlack; }

 private:
  EngineOptions opt_;
  std::unique_ptr<model::Weights> weights_;
  std::unique_ptr<cpu::ThreadPool> pool_;
  std::unique_ptr<model::Forward> forward_;
  std::vector<std::string> vocab_;
  std::unordered_map<std::string, int32_t> vocab_index_;
  std::mutex eval_mu_;
};

}  // namespace ds4
