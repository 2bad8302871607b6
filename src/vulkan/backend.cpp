#include "vulkan/backend.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <vector>

#include "cpu/forward.h"
#include "quant/quant.h"
#include "vulkan/context.h"
#include "vulkan/ops.h"
#include "vulkan/recorder.h"

namespace ds4::vulkan {

namespace {

inline double seconds_now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// The blocks still run on the host (cpu::Forward), so the state lives in host memory and
// pull()/push() have nothing to copy yet.
class HostSequence final : public backend::Sequence {
 public:
  model::SequenceState& host() override { return state_; }
  model::SequenceState state_;
};

// A weight matrix resident on the device with its own buffer (m.buffer must point at it).
struct DeviceWeight {
  Buffer buffer;
  DeviceMatrix m;
};

bool is_float(quant::Type t) { return t == quant::Type::F32 || t == quant::Type::F16; }

// Uploads v as stored when the device has a kernel for its type; float types it lacks (BF16)
// and every type under the f32-activation test hook are widened to F32 rows (exact). A
// quantized type without a device kernel is refused: its products would not be the CPU's.
DeviceWeight upload_matrix(Context& ctx, const model::MatView& v, const char* what, bool widen) {
  const bool keep = Ops::supports(v.type) && !widen;
  if (!keep && !widen && v.type != quant::Type::BF16)
    throw Error(Error::Kind::BadModel, std::string("vulkan backend: ") + what + " is stored as " +
                                           std::string(quant::type_name(v.type)) + ", which has no device kernel yet");
  DeviceWeight d;
  if (keep) {
    d.buffer = ctx.create_buffer(v.bytes());
    ctx.upload(d.buffer, v.data, v.bytes());
    d.m = DeviceMatrix{v.type, v.out, v.in, v.row_bytes, &d.buffer, 0};
  } else {
    std::vector<float> rows(static_cast<size_t>(v.out) * v.in);
    for (int64_t r = 0; r < v.out; ++r) quant::dequantize_row(v.type, v.row(r), rows.data() + r * v.in, v.in);
    d.buffer = ctx.create_buffer(rows.size() * sizeof(float));
    ctx.upload(d.buffer, rows.data(), rows.size() * sizeof(float));
    d.m = DeviceMatrix{quant::Type::F32, v.out, v.in, static_cast<size_t>(v.in) * sizeof(float), &d.buffer, 0};
  }
  return d;
}

Buffer upload_floats(Context& ctx, const std::vector<float>& v) {
  Buffer b = ctx.create_buffer(std::max<size_t>(v.size(), 1) * sizeof(float));
  ctx.upload(b, v.data(), v.size() * sizeof(float));
  return b;
}

// A device buffer kept between evaluations, grown to the largest request.
struct Scratchpad {
  Buffer buffer;
  Buffer& at_least(Context& ctx, size_t bytes) {
    if (buffer.size() < bytes) buffer = ctx.create_buffer(bytes);
    return buffer;
  }
};

class VulkanBackend final : public backend::Backend {
 public:
  VulkanBackend(model::Weights& w, const EngineOptions& opt)
      : w_(w),
        ctx_(open_context(opt.device)),
        ops_(*ctx_),
        pool_(cpu::PoolOptions{opt.threads, opt.pin_threads}),
        ropes_(w.config),
        qat_(opt.qat_simulation) {
    const quant::Type et = w_.token_embd.type;
    if (et != quant::Type::F32 && et != quant::Type::F16 && et != quant::Type::Q8_0)
      throw Error(Error::Kind::BadModel, std::string("vulkan backend: token_embd.weight is stored as ") +
                                             std::string(quant::type_name(et)) + ", which the device embedding has no kernel for");
    embd_.buffer = ctx_->create_buffer(w_.token_embd.bytes());
    ctx_->upload(embd_.buffer, w_.token_embd.data, w_.token_embd.bytes());
    embd_.m = DeviceMatrix{et, w_.token_embd.out, w_.token_embd.in, w_.token_embd.row_bytes, &embd_.buffer, 0};
    upload_head(false);
    head_base_ = upload_floats(*ctx_, w_.head.hc_base);
    head_norm_ = upload_floats(*ctx_, w_.head.norm);
  }

  const char* name() const override { return "vulkan"; }

  std::unique_ptr<backend::Sequence> new_sequence(int ring_cap, int rewind_depth) override {
    const ModelConfig& c = w_.config;
    auto s = std::make_unique<HostSequence>();
    s->state_.layers.resize(w_.layers.size());
    for (size_t il = 0; il < w_.layers.size(); ++il)
      s->state_.layers[il].init(w_.layers[il].ratio, c.head_dim, c.index_head_dim, ring_cap, rewind_depth);
    if (w_.has_mtp) s->state_.mtp.init(w_.mtp.block.ratio, c.head_dim, c.index_head_dim, ring_cap, rewind_depth);
    return s;
  }

  void eval(const backend::Batch& b) override {
    const ModelConfig& c = w_.config;
    const size_t hcD = static_cast<size_t>(c.hc) * c.dim;
    const int n = b.n;
    if (n <= 0) return;
    std::lock_guard<std::mutex> lk(mu_);
    cpu::Forward fw(w_, pool_, ropes_, scratch_, qat_);
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
    device_embed(tokens_.data(), n, X.data());
    double t_prev = seconds_now();
    if (b.embed_s) *b.embed_s += t_prev - t_start;
    for (size_t il = 0; il < w_.layers.size(); ++il) {
      for (int t = 0; t < n; ++t) states_[t] = &b.entries[t].seq->host().layers[il];
      fw.block(w_.layers[il], cpu::BlockRows{states_.data(), pos_.data(), tokens_.data(), n}, X.data());
      const double now = seconds_now();
      if (b.layer_s) b.layer_s[il] += now - t_prev;
      t_prev = now;
    }
    int n_out = 0;
    for (int t = 0; t < n; ++t) n_out += b.entries[t].output;
    if (n_out > 0 && (b.logits || b.hidden)) {
      std::vector<float>& H = head_in_;
      H.resize(static_cast<size_t>(n_out) * hcD);
      for (int t = 0, o = 0; t < n; ++t)
        if (b.entries[t].output) std::copy_n(X.data() + t * hcD, hcD, H.data() + static_cast<size_t>(o++) * hcD);
      if (b.hidden) std::copy(H.begin(), H.end(), b.hidden);
      if (b.logits) device_head(H.data(), n_out, b.logits);
    }
    if (b.head_s) *b.head_s += seconds_now() - t_prev;
    publish_scratch();
  }

  // The MTP block, its head included, runs on the CPU forward pass (not yet on the device).
  void mtp_eval(backend::Sequence& seq, const float* hin, int32_t token, int64_t pos, float* logits,
                float* hidden) override {
    const ModelConfig& c = w_.config;
    std::lock_guard<std::mutex> lk(mu_);
    cpu::Forward fw(w_, pool_, ropes_, scratch_, qat_);
    model::LayerState& S = seq.host().mtp;
    S.raw.drop_from(pos);
    std::vector<float> X(static_cast<size_t>(c.hc) * c.dim);
    fw.mtp_input(w_.mtp, hin, token, X.data());
    model::LayerState* st = &S;
    fw.block(w_.mtp.block, cpu::BlockRows{&st, &pos, &token, 1}, X.data());
    if (hidden) std::copy(X.begin(), X.end(), hidden);
    if (logits) fw.head(w_.mtp.head, X.data(), 1, logits);
    publish_scratch();
  }

  uint64_t scratch_bytes() const override { return scratch_bytes_.load(std::memory_order_relaxed); }
  int threads() const override { return pool_.size(); }
  bool threads_pinned() const override { return pool_.pinned(); }

  void embed(const int32_t* tokens, int n, float* X) override {
    std::lock_guard<std::mutex> lk(mu_);
    device_embed(tokens, n, X);
  }

  void block(int layer, backend::Sequence& seq, float* X, const int32_t* tokens, int n, int64_t pos0,
             model::BlockTrace* trace) override {
    std::lock_guard<std::mutex> lk(mu_);
    cpu::Forward fw(w_, pool_, ropes_, scratch_, qat_);
    std::vector<model::LayerState*> st(n, &seq.host().layers.at(layer));
    std::vector<int64_t> pos(n);
    for (int t = 0; t < n; ++t) pos[t] = pos0 + t;
    fw.block(w_.layers[layer], cpu::BlockRows{st.data(), pos.data(), tokens, n}, X, trace);
    publish_scratch();
  }

  void head(const float* X, int n, float* logits) override {
    std::lock_guard<std::mutex> lk(mu_);
    device_head(X, n, logits);
    publish_scratch();
  }

  void use_f32_activations() override {
    std::lock_guard<std::mutex> lk(mu_);
    auto layer = [](model::LayerWeights& L) {
      for (model::MatView* m : {&L.hc_attn_fn, &L.q_a, &L.q_b, &L.kv, &L.out_a, &L.out_b, &L.comp.kv, &L.comp.gate,
                                &L.icomp.kv, &L.icomp.gate, &L.idx_q_b, &L.idx_proj, &L.hc_ffn_fn, &L.router,
                                &L.sh_gate, &L.sh_up, &L.sh_down})
        m->f32_activations = true;
      for (model::ExpertsView* x : {&L.gate_exps, &L.up_exps, &L.down_exps}) x->f32_activations = true;
    };
    w_.head.hc_fn.f32_activations = w_.output.f32_activations = true;
    for (auto& L : w_.layers) layer(L);
    if (w_.has_mtp) {
      layer(w_.mtp.block);
      for (model::MatView* m : {&w_.mtp.e_proj, &w_.mtp.h_proj, &w_.mtp.head.hc_fn}) m->f32_activations = true;
    }
    upload_head(true);  // dequantized rows against f32 operands on the device too
  }

 private:
  static std::unique_ptr<Context> open_context(int device) {
    try {
      return std::make_unique<Context>(ContextOptions{device, false});
    } catch (const std::exception& e) {
      throw Error(Error::Kind::InvalidArgument, std::string("vulkan backend: ") + e.what());
    }
  }

  void upload_head(bool widen) {
    // DeviceMatrix points at its buffer: re-aim it once the weight sits in its member.
    head_fn_ = upload_matrix(*ctx_, w_.head.hc_fn, "output_hc_fn.weight", widen);
    head_fn_.m.buffer = &head_fn_.buffer;
    output_ = upload_matrix(*ctx_, w_.output, "output.weight", widen);
    output_.m.buffer = &output_.buffer;
  }

  // y (n vectors of w.rows floats, y_stride apart) = w times x (n vectors of w.cols floats,
  // x_stride apart), quantizing the operands first for a quantized w.
  void project(Recorder& rec, const DeviceMatrix& w, Range x, size_t x_stride, int n, Range y, size_t y_stride,
               Scratchpad& operand) {
    if (is_float(w.type)) {
      ops_.matmul(rec, w, x, x_stride, n, y, y_stride);
      return;
    }
    const size_t words = Ops::act_words(w.type, w.cols);
    Buffer& q = operand.at_least(*ctx_, static_cast<size_t>(n) * words * 4);
    ops_.quantize_act(rec, w.type, x, w.cols, n, x_stride, {&q}, words);
    ops_.matmul(rec, w, {&q}, words, n, y, y_stride);
  }

  void device_embed(const int32_t* tokens, int n, float* X) {
    const ModelConfig& c = w_.config;
    const size_t hcD = static_cast<size_t>(c.hc) * c.dim;
    Buffer& tb = tok_.at_least(*ctx_, static_cast<size_t>(n) * sizeof(int32_t));
    Buffer& xb = x_.at_least(*ctx_, static_cast<size_t>(n) * hcD * sizeof(float));
    ctx_->upload(tb, tokens, static_cast<size_t>(n) * sizeof(int32_t));
    Recorder rec(*ctx_);
    ops_.embed(rec, embd_.m, {&tb}, n, c.hc, {&xb});
    rec.submit_and_wait();
    ctx_->download(xb, X, static_cast<size_t>(n) * hcD * sizeof(float));
  }

  // The output head (cpu::Forward::head's math): stream weights from the hc projection scaled
  // by the RMS factor, the weighted stream sum, the final norm, the vocabulary projection.
  void device_head(const float* X, int n, float* logits) {
    const ModelConfig& c = w_.config;
    const int D = c.dim, hc = c.hc;
    const size_t hcD = static_cast<size_t>(hc) * D, un = static_cast<size_t>(n);
    Buffer& xb = x_.at_least(*ctx_, un * hcD * 4);
    Buffer& m = mix_.at_least(*ctx_, un * hc * 4);
    Buffer& f = factor_.at_least(*ctx_, un * 4);
    Buffer& gates = gates_.at_least(*ctx_, un * (2 + hc) * hc * 4);
    Buffer& h = h_.at_least(*ctx_, un * D * 4);
    Buffer& hn = hn_.at_least(*ctx_, un * D * 4);
    Buffer& lb = logits_.at_least(*ctx_, un * c.vocab * 4);
    ctx_->upload(xb, X, un * hcD * 4);
    Recorder rec(*ctx_);
    project(rec, head_fn_.m, {&xb}, hcD, n, {&m}, hc, operand_);
    ops_.rms_factor(rec, {&xb}, static_cast<int64_t>(hcD), n, hcD, {&f}, c.norm_eps);
    ops_.hc_head_gates(rec, {&m}, {&f}, {&head_base_}, hc, w_.head.hc_scale.at(0), c.hc_eps, n, {&gates});
    ops_.hc_mix(rec, false, {&xb}, {&gates}, {}, hc, D, n, {&h});
    ops_.rms_norm(rec, {&h}, {&head_norm_}, D, n, D, {&hn}, D, c.norm_eps);
    project(rec, output_.m, {&hn}, D, n, {&lb}, c.vocab, operand_);
    rec.submit_and_wait();
    ctx_->download(lb, logits, un * c.vocab * 4);
  }

  void publish_scratch() {
    uint64_t dev = 0;
    for (const Scratchpad* s : {&tok_, &x_, &mix_, &factor_, &gates_, &h_, &hn_, &logits_, &operand_})
      dev += s->buffer.size();
    scratch_bytes_.store(scratch_.bytes() + dev + head_in_.capacity() * sizeof(float), std::memory_order_relaxed);
  }

  model::Weights& w_;
  std::unique_ptr<Context> ctx_;
  Ops ops_;
  DeviceWeight embd_, head_fn_, output_;
  Buffer head_base_, head_norm_;
  cpu::ThreadPool pool_;
  cpu::Ropes ropes_;
  bool qat_;
  std::mutex mu_;  // one evaluation at a time; guards everything below
  cpu::Scratch scratch_;
  Scratchpad tok_, x_, mix_, factor_, gates_, h_, hn_, logits_, operand_;
  std::vector<float> head_in_;
  std::vector<int32_t> tokens_;
  std::vector<int64_t> pos_;
  std::vector<model::LayerState*> states_;
  std::atomic<uint64_t> scratch_bytes_{0};
};

}  // namespace

std::unique_ptr<backend::Backend> make_backend(model::Weights& weights, const EngineOptions& opt) {
  return std::make_unique<VulkanBackend>(weights, opt);
}

}  // namespace ds4::vulkan
