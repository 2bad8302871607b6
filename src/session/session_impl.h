// Engine and Session implementation behind include/ds4/engine.h: backend-neutral; the math
// runs on a backend::Backend (src/backend/backend.h).
#pragma once

#include <memory>
#include <mutex>
#include <span>
#include <unordered_map>

#include "backend/backend.h"
#include "ds4/engine.h"
#include "model/weights.h"

namespace ds4 {

class EngineImpl;

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

  // For the engine's batch runner and test hooks (not part of the public API).
  EngineImpl& engine() const { return engine_; }
  backend::Sequence& sequence() { return *seq_; }
  std::vector<model::LayerState>& layer_states() { return seq_->host().layers; }
  int prefill_chunk() const { return chunk_; }
  void check_token(int32_t t) const;
  // Appends an evaluated entry: token, and its logits/hidden (null: not computed).
  void append(int32_t token, const float* logits, const float* hidden);
  EvalStats& mutable_stats() { return stats_; }

 public:
  struct Sink;    // snapshot output
  struct Source;  // snapshot input

 private:
  void write_snapshot(Sink& out) const;
  void read_snapshot(Source& in);
  void prefill(const int32_t* toks, int n, const SyncOptions& opt, int chunk);
  void truncate(int pos);
  std::pair<std::vector<float>, std::vector<float>>& push_history();

  EngineImpl& engine_;
  int chunk_;
  std::unique_ptr<backend::Sequence> seq_;
  std::vector<int32_t> tokens_;
  std::vector<float> logits_, hidden_;
  // Logits/hidden of the last rewind_tokens + 1 positions, so a cheap rewind can restore
  // them (empty where they were not computed).
  std::vector<std::pair<std::vector<float>, std::vector<float>>> history_;
  std::vector<float> mtp_logits_, mtp_hidden_;
  EvalStats stats_;
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
  uint64_t scratch_bytes() const override { return backend_->scratch_bytes(); }
  int threads() const override { return backend_->threads(); }
  DeviceCounters device_counters() const override { return backend_->device_counters(); }
  double measure_device_bandwidth(size_t bytes) override { return backend_->measure_device_bandwidth(bytes); }
  bool threads_pinned() const override { return backend_->threads_pinned(); }
  void eval_batch(std::span<const BatchEntry> entries, BatchResult* out) override;

  const model::Weights& weights() const { return *weights_; }
  backend::Backend& backend() { return *backend_; }
  int rewind_tokens() const { return opt_.rewind_tokens; }
  int ring_cap(int ctx) const { return std::min(ctx, weights_->config.window) + opt_.rewind_tokens; }

  // One backend pass over entries of validated sessions (positions follow each session's
  // prefix); outputs (logits + hidden) for entries where want[i] or among the last
  // rewind_tokens + 1 of their session; on_output(i, logits) for each computed entry.
  struct Item {
    SessionImpl* session;
    int32_t token;
    bool want;
  };
  void run(std::span<const Item> items, const std::function<void(int, const float*)>& on_output);

 private:
  EngineOptions opt_;
  std::unique_ptr<model::Weights> weights_;
  std::unique_ptr<backend::Backend> backend_;
  std::vector<std::string> vocab_;
  std::unordered_map<std::string, int32_t> vocab_index_;
  // Held for a whole pass: the backend runs one batch at a time, and the pass's entry and
  // output buffers are reused. Sessions are made, saved and destroyed without it.
  std::mutex run_mu_;
  std::vector<backend::Entry> entries_;
  std::vector<float> out_logits_, out_hidden_;
  std::vector<int> out_row_;
};

}  // namespace ds4
