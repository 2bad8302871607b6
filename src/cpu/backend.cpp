#include "cpu/backend.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <vector>

#include "cpu/forward.h"

namespace ds4::cpu {

namespace {

using backend::seconds_now;

// The CPU evaluates directly on the host layout.
class CpuSequence final : public backend::Sequence {
 public:
  model::SequenceState& host() override { return state_; }
  model::SequenceState state_;
};

class CpuBackend final : public backend::Backend {
 public:
  CpuBackend(model::Weights& w, const EngineOptions& opt)
      : w_(w),
        pool_(PoolOptions{opt.threads, opt.pin_threads}),
        ropes_(w.config),
        qat_(opt.qat_simulation) {
    if (opt.repack_iq2_xxs) w.repack_iq2_xxs();
  }

  const char* name() const override { return "cpu"; }

  std::unique_ptr<backend::Sequence> new_sequence(int ring_cap, int rewind_depth) override {
    auto s = std::make_unique<CpuSequence>();
    s->state_ = backend::make_state(w_, ring_cap, rewind_depth);
    return s;
  }

  void eval(const backend::Batch& b) override {
    const ModelConfig& c = w_.config;
    const size_t hcD = static_cast<size_t>(c.hc) * c.dim;
    const int n = b.n;
    if (n <= 0) return;
    const int first = b.first_layer;
    const int end = b.end_layer < 0 ? c.n_layers : b.end_layer;
    if (first < w_.first_layer || end > w_.end_layer || first >= end || (first > 0 && !b.in))
      throw Error(Error::Kind::InvalidArgument,
                  "cpu backend: layers [" + std::to_string(first) + ", " + std::to_string(end) +
                      ") are not all loaded in this process (it holds [" + std::to_string(w_.first_layer) + ", " +
                      std::to_string(w_.end_layer) + "))");
    std::lock_guard<std::mutex> lk(mu_);
    Forward fw(w_, pool_, ropes_, scratch_, qat_);
    const double t_start = seconds_now();
    tokens_.resize(n);
    pos_.resize(n);
    states_.resize(n);
    for (int t = 0; t < n; ++t) {
      tokens_[t] = b.entries[t].token;
      pos_[t] = b.entries[t].pos;
    }
    std::vector<float>& X = scratch_.X;
    X.resize(n * hcD);
    if (b.in) std::copy_n(b.in, n * hcD, X.data());
    else fw.embed(tokens_.data(), n, X.data());
    double t_prev = seconds_now();
    if (b.embed_s) *b.embed_s += t_prev - t_start;
    for (int il = first; il < end; ++il) {
      for (int t = 0; t < n; ++t) states_[t] = &b.entries[t].seq->host().layers[il];
      Forward::StageTimes stages;
      fw.time_stages(b.attention_s || b.indexer_s ? &stages : nullptr);
      fw.block(w_.layers[il], BlockRows{states_.data(), pos_.data(), tokens_.data(), n}, X.data());
      const double now = seconds_now();
      if (b.layer_s) b.layer_s[il] += now - t_prev;
      if (b.attention_s) b.attention_s[il] += stages.attention_s;
      if (b.indexer_s) b.indexer_s[il] += stages.indexer_s;
      t_prev = now;
    }
    fw.time_stages(nullptr);
    if (end < c.n_layers) {
      if (b.out) std::copy_n(X.data(), n * hcD, b.out);
      publish_scratch();
      return;
    }
    // The head over the entries that want outputs, gathered into consecutive rows.
    int n_out = 0;
    for (int t = 0; t < n; ++t) n_out += b.entries[t].output;
    if (n_out > 0 && (b.logits || b.hidden)) {
      Arena::Frame frame(scratch_.arena);
      float* H = scratch_.arena.alloc<float>(static_cast<size_t>(n_out) * hcD);
      for (int t = 0, o = 0; t < n; ++t)
        if (b.entries[t].output) std::copy_n(X.data() + t * hcD, hcD, H + static_cast<size_t>(o++) * hcD);
      if (b.hidden) std::copy_n(H, static_cast<size_t>(n_out) * hcD, b.hidden);
      if (b.logits) fw.head(w_.head, H, n_out, b.logits);
    }
    if (b.head_s) *b.head_s += seconds_now() - t_prev;
    publish_scratch();
  }

  void mtp_eval(backend::Sequence& seq, const float* hin, int32_t token, int64_t pos, float* logits,
                float* hidden) override {
    std::lock_guard<std::mutex> lk(mu_);
    Forward(w_, pool_, ropes_, scratch_, qat_).mtp_step(w_.mtp, seq.host().mtp, hin, token, pos, logits, hidden);
    publish_scratch();
  }

  uint64_t scratch_bytes() const override { return scratch_bytes_.load(std::memory_order_relaxed); }
  int threads() const override { return pool_.size(); }
  bool threads_pinned() const override { return pool_.pinned(); }

  void embed(const int32_t* tokens, int n, float* X) override {
    std::lock_guard<std::mutex> lk(mu_);
    Forward(w_, pool_, ropes_, scratch_, qat_).embed(tokens, n, X);
  }

  void block(int layer, backend::Sequence& seq, float* X, const int32_t* tokens, int n, int64_t pos0,
             model::BlockTrace* trace) override {
    std::lock_guard<std::mutex> lk(mu_);
    Forward fw(w_, pool_, ropes_, scratch_, qat_);
    std::vector<model::LayerState*> st(n, &seq.host().layers.at(layer));
    std::vector<int64_t> pos(n);
    for (int t = 0; t < n; ++t) pos[t] = pos0 + t;
    fw.block(w_.layers[layer], BlockRows{st.data(), pos.data(), tokens, n}, X, trace);
    publish_scratch();
  }

  void head(const float* X, int n, float* logits) override {
    std::lock_guard<std::mutex> lk(mu_);
    Forward(w_, pool_, ropes_, scratch_, qat_).head(w_.head, X, n, logits);
    publish_scratch();
  }

  void warm_weights() override { w_.warm(); }

  void use_f32_activations() override {
    std::lock_guard<std::mutex> lk(mu_);
    w_.use_f32_activations();
  }

 private:
  void publish_scratch() { scratch_bytes_.store(scratch_.bytes(), std::memory_order_relaxed); }

  model::Weights& w_;
  ThreadPool pool_;
  Ropes ropes_;
  bool qat_;
  std::mutex mu_;  // one evaluation at a time; guards everything below
  Scratch scratch_;
  std::vector<int32_t> tokens_;
  std::vector<int64_t> pos_;
  std::vector<model::LayerState*> states_;
  std::atomic<uint64_t> scratch_bytes_{0};
};

}  // namespace

std::unique_ptr<backend::Backend> make_backend(model::Weights& weights, const EngineOptions& opt) {
  return std::make_unique<CpuBackend>(weights, opt);
}

}  // namespace ds4::cpu
