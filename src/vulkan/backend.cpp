#include "vulkan/backend.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <mutex>
#include <string>
#include <vector>

#include "cpu/forward.h"  // cpu::Ropes, cpu::ThreadPool
#include "model/numerics.h"
#include "quant/quant.h"
#include "vulkan/context.h"
#include "vulkan/ops.h"
#include "vulkan/recorder.h"

namespace ds4::vulkan {

namespace {

using backend::seconds_now;

size_t round_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

bool is_float(quant::Type t) { return t == quant::Type::F32 || t == quant::Type::F16; }

// A weight matrix resident on the device with its own buffer (m.buffer points at it, so a
// DeviceWeight is filled in place and never moved afterwards).
struct DeviceWeight {
  Buffer buffer;
  DeviceMatrix m;
};

// Fills d with v, as stored when the device has a kernel for its type; float types it lacks
// (BF16) and every type under the f32-activation test hook are widened to F32 rows (exact). A
// quantized type without a device kernel is refused: its products would not be the CPU's.
void upload_matrix(Context& ctx, DeviceWeight& d, const model::MatView& v, const std::string& what, bool widen) {
  if (!v.valid()) {
    d = DeviceWeight{};
    return;
  }
  const bool keep = Ops::supports(v.type) && !widen;
  if (!keep && !widen && v.type != quant::Type::BF16)
    throw Error(Error::Kind::BadModel, "vulkan backend: " + what + " is stored as " +
                                           std::string(quant::type_name(v.type)) + ", which has no device kernel yet");
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
}

DeviceExperts upload_experts(Context& ctx, const model::ExpertsView& x, const std::string& what, bool widen) {
  const bool keep = Ops::supports(x.type) && !widen;
  if (!keep && !widen && x.type != quant::Type::BF16)
    throw Error(Error::Kind::BadModel, "vulkan backend: " + what + " is stored as " +
                                           std::string(quant::type_name(x.type)) + ", which has no device kernel yet");
  if (keep) return DeviceExperts::upload(ctx, x.type, x.count, x.out, x.in, x.data);
  std::vector<float> rows(static_cast<size_t>(x.count * x.out) * x.in);
  for (int64_t r = 0; r < x.count * x.out; ++r)
    quant::dequantize_row(x.type, x.data + static_cast<uint64_t>(r) * x.row_bytes, rows.data() + r * x.in, x.in);
  return DeviceExperts::upload(ctx, quant::Type::F32, x.count, x.out, x.in, rows.data());
}

Buffer upload_floats(Context& ctx, const std::vector<float>& v) {
  Buffer b = ctx.create_buffer(std::max<size_t>(v.size(), 1) * sizeof(float));
  if (!v.empty()) ctx.upload(b, v.data(), v.size() * sizeof(float));
  return b;
}

// A device buffer kept between evaluations, grown to the largest request. Grown only before
// an evaluation is recorded (a recorded dispatch keeps using the buffer it was given).
// Host-visible ones (host = true) are read or written by the host in place, with no staging
// copy on a discrete GPU: the results of a pass, and the hybrid MoE's exchange buffers.
struct Scratchpad {
  Buffer buffer;
  bool host = false;
  Buffer& at_least(Context& ctx, size_t bytes) {
    bytes = std::max<size_t>(bytes, 16);
    if (buffer.size() < bytes) buffer = host ? ctx.create_host_buffer(bytes) : ctx.create_buffer(bytes);
    return buffer;
  }
  Range all() const { return Range{&buffer}; }
};

// Host-visible mapped memory for an evaluation's small inputs (token ids, RoPE tables, row
// lists, spans): the host writes them while recording, the device reads them in the one
// submission; the indexer's top-k picks are written into row lists here by the device.
class HostArena {
 public:
  explicit HostArena(Context& ctx) : ctx_(ctx) {}
  void reset() {
    chunk_ = 0;
    used_ = 0;
  }
  template <class T>
  T* alloc(size_t count, Range* r) {
    const size_t bytes = round_up(std::max<size_t>(count * sizeof(T), 16), 16);
    size_t off = round_up(used_, ctx_.binding_alignment());
    if (chunk_ >= chunks_.size() || off + bytes > chunks_[chunk_].size()) {
      if (chunk_ < chunks_.size()) ++chunk_;
      off = 0;
      if (chunk_ >= chunks_.size()) chunks_.emplace_back();
      // Chunks already used by this evaluation are never replaced; this one is not yet.
      if (chunks_[chunk_].size() < bytes) chunks_[chunk_] = ctx_.create_host_buffer(std::max<size_t>(bytes, 1 << 20));
    }
    used_ = off + bytes;
    *r = Range{&chunks_[chunk_], off, bytes};
    return reinterpret_cast<T*>(static_cast<uint8_t*>(chunks_[chunk_].mapped()) + off);
  }
  size_t bytes() const {
    size_t b = 0;
    for (const Buffer& c : chunks_) b += c.size();
    return b;
  }

 private:
  Context& ctx_;
  std::vector<Buffer> chunks_;
  size_t chunk_ = 0, used_ = 0;
};

// One layer's weights on the device.
struct DeviceLayer {
  DeviceWeight hc_attn_fn, q_a, q_b, kv, out_a, out_b, comp_kv, comp_gate, icomp_kv, icomp_gate, idx_q_b, idx_proj,
      hc_ffn_fn, router, sh_gate, sh_up, sh_down;
  Buffer hc_attn_scale, hc_attn_base, attn_norm, q_a_norm, kv_norm, sinks, comp_ape, comp_norm, icomp_ape,
      icomp_norm, hc_ffn_scale, hc_ffn_base, ffn_norm, router_bias, tid2eid;
  DeviceExperts gate_exps, up_exps, down_exps;
};

// One compressor's state on the device: kv/score rows (state_rows x width) and the undo
// ring (undo_depth entries of [kv row, score row, ratio 4: rows 0..3 of kv, of score]).
struct DeviceCompressor {
  Buffer kv, score, undo;
  size_t undo_stride() const { return static_cast<size_t>(width) * (2 + (ratio == 4 ? 8 : 0)); }
  int ratio = 0, width = 0;
};

// One layer's state of one sequence on the device. `rows` holds every attention row the
// layer's attention reads, head_dim floats each: [comp_cap compressed rows | ring_cap raw
// ring slots | stage_cap staged rows of the running evaluation], so one dispatch attends
// over any mix of them by row index. The indexer's compressed rows are in `irows`.
struct DeviceLayerState {
  Buffer rows;
  int64_t comp_cap = 0, stage_cap = 0;
  Buffer irows;
  int64_t irows_cap = 0;
  DeviceCompressor comp, icomp;
};

// An output head on the device (the main one, or the MTP block's; both share output.weight).
struct DeviceHead {
  DeviceWeight fn;
  Buffer base, norm;
  float scale = 0.f;
};

class VulkanBackend;

// Host bookkeeping in state_ (kept current by every evaluation), row data on the device.
class VulkanSequence final : public backend::Sequence {
 public:
  explicit VulkanSequence(VulkanBackend& owner) : owner_(owner) {}
  model::SequenceState& host() override { return state_; }
  void pull() override;
  void push() override;
  void truncate(int64_t n, int64_t pos) override;

  VulkanBackend& owner_;
  model::SequenceState state_;
  std::vector<DeviceLayerState> dev_;
};

// Entries of one sequence that are consecutive in the batch.
struct Run {
  VulkanSequence* seq = nullptr;
  int t0 = 0, len = 0;
};

class VulkanBackend final : public backend::Backend {
 public:
  VulkanBackend(model::Weights& w, const EngineOptions& opt)
      : w_(w),
        c_(w.config),
        ctx_(open_context(opt.device)),
        ops_(*ctx_),
        arena_(*ctx_),
        pool_(cpu::PoolOptions{opt.threads, opt.pin_threads}),
        ropes_(w.config),
        qat_(opt.qat_simulation),
        cpu_moe_layers_(opt.cpu_moe_layers) {
    for (Scratchpad* s : {&hin_, &logits_, &hy_in_, &hy_ids_, &hy_wts_, &hy_out_}) s->host = true;
    const quant::Type et = w_.token_embd.type;
    if (et != quant::Type::F32 && et != quant::Type::F16 && et != quant::Type::Q8_0)
      throw Error(Error::Kind::BadModel, std::string("vulkan backend: token_embd.weight is stored as ") +
                                             std::string(quant::type_name(et)) +
                                             ", which the device embedding has no kernel for");
    // Per-token slices bound at offsets (queries, attention outputs, indexer queries) must
    // start at the device's binding alignment.
    const size_t align = ctx_->binding_alignment();
    for (size_t bytes : {static_cast<size_t>(c_.n_heads) * c_.head_dim * 4,
                         static_cast<size_t>(c_.index_heads) * c_.index_head_dim * 4})
      if (bytes % align != 0)
        throw Error(Error::Kind::BadModel, "vulkan backend: per-token rows of " + std::to_string(bytes) +
                                               " bytes are not a multiple of the device's binding alignment (" +
                                               std::to_string(align) + ")");
    embd_.buffer = ctx_->create_buffer(w_.token_embd.bytes());
    ctx_->upload(embd_.buffer, w_.token_embd.data, w_.token_embd.bytes());
    embd_.m = DeviceMatrix{et, w_.token_embd.out, w_.token_embd.in, w_.token_embd.row_bytes, &embd_.buffer, 0};
    upload_weights(false);
  }

  ~VulkanBackend() override = default;

  const char* name() const override { return "vulkan"; }

  std::unique_ptr<backend::Sequence> new_sequence(int ring_cap, int rewind_depth) override {
    auto s = std::make_unique<VulkanSequence>(*this);
    s->state_ = backend::make_state(w_, ring_cap, rewind_depth);
    std::lock_guard<std::mutex> lk(mu_);
    s->dev_.resize(w_.layers.size() + (w_.has_mtp ? 1 : 0));
    upload_state(*s);
    return s;
  }

  void eval(const backend::Batch& b) override {
    const size_t hcD = static_cast<size_t>(c_.hc) * c_.dim;
    const int n = b.n;
    if (n <= 0) return;
    std::lock_guard<std::mutex> lk(mu_);
    const double t_start = seconds_now();
    tokens_.resize(n);
    pos_.resize(n);
    runs_.clear();
    for (int t = 0; t < n; ++t) {
      tokens_[t] = b.entries[t].token;
      pos_[t] = b.entries[t].pos;
      auto* s = static_cast<VulkanSequence*>(b.entries[t].seq);
      if (runs_.empty() || runs_.back().seq != s)
        runs_.push_back(Run{s, t, 1});
      else
        ++runs_.back().len;
    }
    std::vector<int> out_rows;
    for (int t = 0; t < n; ++t)
      if (b.entries[t].output) out_rows.push_back(t);
    const int n_out = static_cast<int>(out_rows.size());
    const bool want = n_out > 0 && (b.logits || b.hidden);
    prepare(n, std::max(n_out, 1), 0, static_cast<int>(w_.layers.size()));
    ++passes_;
    Recorder rec(*ctx_);
    Range x = record_embed(rec, tokens_.data(), n);
    for (size_t il = 0; il < w_.layers.size(); ++il) x = record_block(rec, static_cast<int>(il), x, nullptr);
    if (want) {
      for (int o = 0; o < n_out; ++o)
        ops_.copy_rows(rec, Rows{x, static_cast<size_t>(out_rows[o]) * hcD, 0}, Rows{hin_.all(), o * hcD, 0}, hcD, 1);
      if (b.logits) record_head(rec, head_, hin_.all(), n_out);
    }
    rec.submit_and_wait();
    if (want) {
      if (b.hidden) ctx_->download(hin_.buffer, b.hidden, static_cast<size_t>(n_out) * hcD * 4);
      if (b.logits) ctx_->download(logits_.buffer, b.logits, static_cast<size_t>(n_out) * c_.vocab * 4);
    }
    // One submission: the pass is not split into embedding / layers / head.
    if (b.head_s) *b.head_s += seconds_now() - t_start;
    publish_scratch();
  }

  // The MTP block on the device (cpu::Forward::mtp_step's math): input from the embedding
  // and the main state hin, the block on the sequence's MTP ring, its own head.
  void mtp_eval(backend::Sequence& seq, const float* hin, int32_t token, int64_t pos, float* logits,
                float* hidden) override {
    const int il = static_cast<int>(w_.layers.size()), D = c_.dim, hc = c_.hc;
    const size_t hcD = static_cast<size_t>(hc) * D;
    std::lock_guard<std::mutex> lk(mu_);
    auto& s = static_cast<VulkanSequence&>(seq);
    s.state_.mtp.raw.drop_from(pos);
    tokens_.assign(1, token);
    pos_.assign(1, pos);
    runs_.assign(1, Run{&s, 0, 1});
    prepare(1, 1, il, il + 1);
    ++passes_;
    mtp_hn_.at_least(*ctx_, hcD * 4);
    mtp_hp_.at_least(*ctx_, hcD * 4);
    Recorder rec(*ctx_);
    Range hin_range;  // the main state, read by this submission from mapped memory
    std::copy_n(hin, hcD, arena_.alloc<float>(hcD, &hin_range));
    int32_t* tp = arena_.alloc<int32_t>(1, &tokens_range_);
    *tp = token;
    ops_.embed(rec, embd_.m, tokens_range_, 1, 1, u_.all());
    ops_.rms_norm(rec, u_.all(), Range{&mtp_enorm_}, D, 1, D, a_.all(), D, c_.norm_eps);
    project(rec, mtp_e_proj_.m, a_.all(), D, 1, y_.all(), D);
    ops_.rms_norm(rec, hin_range, Range{&mtp_hnorm_}, D, hc, D, mtp_hn_.all(), D, c_.norm_eps);
    project(rec, mtp_h_proj_.m, mtp_hn_.all(), D, hc, mtp_hp_.all(), D);
    ops_.copy_rows(rec, Rows{mtp_hp_.all(), 0, static_cast<size_t>(D)}, Rows{x_[0].all(), 0, static_cast<size_t>(D)},
                   D, hc, Rows{y_.all(), 0, 0});
    const Range x = record_block(rec, il, x_[0].all(), nullptr);
    if (logits) record_head(rec, mtp_head_, x, 1);
    rec.submit_and_wait();
    if (hidden) ctx_->download(*x.buffer, hidden, hcD * 4);
    if (logits) ctx_->download(logits_.buffer, logits, static_cast<size_t>(c_.vocab) * 4);
    publish_scratch();
  }

  uint64_t scratch_bytes() const override { return scratch_bytes_.load(std::memory_order_relaxed); }
  int threads() const override { return pool_.size(); }
  DeviceCounters device_counters() const override {
    return DeviceCounters{ctx_->submits(), ctx_->host_waits(), passes_.load(std::memory_order_relaxed)};
  }
  double measure_device_bandwidth(size_t bytes) override {
    std::lock_guard<std::mutex> lk(mu_);
    return ops_.measure_bandwidth(bytes, 8);
  }
  bool threads_pinned() const override { return pool_.pinned(); }

  void embed(const int32_t* tokens, int n, float* X) override {
    std::lock_guard<std::mutex> lk(mu_);
    runs_.clear();
    pos_.clear();
    prepare(n, 1, 0, 0);
    Recorder rec(*ctx_);
    Range x = record_embed(rec, tokens, n);
    rec.submit_and_wait();
    ctx_->download(*x.buffer, X, static_cast<size_t>(n) * c_.hc * c_.dim * 4);
  }

  void block(int layer, backend::Sequence& seq, float* X, const int32_t* tokens, int n, int64_t pos0,
             model::BlockTrace* trace) override {
    if (trace && trace->replay)
      throw Error(Error::Kind::InvalidArgument, "vulkan backend: replaying recorded choices runs on the CPU backend");
    if (layer < 0 || layer >= static_cast<int>(w_.layers.size())) throw Error(Error::Kind::InvalidArgument, "layer out of range");
    if (n <= 0) return;
    std::lock_guard<std::mutex> lk(mu_);
    const size_t hcD = static_cast<size_t>(c_.hc) * c_.dim;
    tokens_.assign(tokens, tokens + n);
    pos_.resize(n);
    for (int t = 0; t < n; ++t) pos_[t] = pos0 + t;
    runs_.assign(1, Run{&static_cast<VulkanSequence&>(seq), 0, n});
    prepare(n, 1, layer, layer + 1);
    ctx_->upload(x_[0].buffer, X, static_cast<size_t>(n) * hcD * 4);
    Recorder rec(*ctx_);
    Range tb;
    int32_t* tp = arena_.alloc<int32_t>(n, &tb);
    std::copy(tokens, tokens + n, tp);
    tokens_range_ = tb;
    std::vector<IndexerPick> picks;
    Range x = record_block(rec, layer, x_[0].all(), trace ? &picks : nullptr);
    rec.submit_and_wait();
    ctx_->download(*x.buffer, X, static_cast<size_t>(n) * hcD * 4);
    if (trace) {
      const int K = c_.n_experts_used;
      std::vector<int32_t> ids(static_cast<size_t>(n) * K);
      std::vector<float> wts(ids.size());
      ctx_->download(cpu_moe(layer) ? hy_ids_.buffer : ids_.buffer, ids.data(), ids.size() * 4);
      ctx_->download(cpu_moe(layer) ? hy_wts_.buffer : wts_.buffer, wts.data(), wts.size() * 4);
      for (int t = 0; t < n; ++t) {
        trace->experts.emplace_back(ids.begin() + t * K, ids.begin() + (t + 1) * K);
        trace->weights.emplace_back(wts.begin() + t * K, wts.begin() + (t + 1) * K);
      }
      for (const IndexerPick& p : picks) {
        if (p.list)
          trace->indexer.emplace_back(p.list, p.list + p.count);
        else {
          trace->indexer.emplace_back(p.count);
          for (int i = 0; i < p.count; ++i) trace->indexer.back()[i] = i;
        }
      }
    }
    publish_scratch();
  }

  void head(const float* X, int n, float* logits) override {
    std::lock_guard<std::mutex> lk(mu_);
    runs_.clear();
    pos_.clear();
    prepare(n, n, 0, 0);
    ctx_->upload(hin_.buffer, X, static_cast<size_t>(n) * c_.hc * c_.dim * 4);
    Recorder rec(*ctx_);
    record_head(rec, head_, hin_.all(), n);
    rec.submit_and_wait();
    ctx_->download(logits_.buffer, logits, static_cast<size_t>(n) * c_.vocab * 4);
    publish_scratch();
  }

  void use_f32_activations() override {
    std::lock_guard<std::mutex> lk(mu_);
    w_.use_f32_activations();
    upload_weights(true);  // dequantized rows against f32 operands on the device too
  }

  // ---- sequence state (VulkanSequence calls these) ----
  void pull(VulkanSequence& s) {
    std::lock_guard<std::mutex> lk(mu_);
    download_state(s);
  }
  void push(VulkanSequence& s) {
    std::lock_guard<std::mutex> lk(mu_);
    upload_state(s);
  }
  void truncate(VulkanSequence& s, int64_t n, int64_t pos);

 private:
  // Where an indexer's picks for one token of the traced block are (list null: every row).
  struct IndexerPick {
    const int32_t* list = nullptr;
    int count = 0;
  };

  static std::unique_ptr<Context> open_context(int device) {
    try {
      return std::make_unique<Context>(ContextOptions{device, false});
    } catch (const std::exception& e) {
      throw Error(Error::Kind::InvalidArgument, std::string("vulkan backend: ") + e.what());
    }
  }

  void upload_weights(bool widen);
  std::unique_ptr<DeviceLayer> upload_layer(const model::LayerWeights& L, bool widen, bool experts);
  // Layer il's routed experts stay in host memory and run on the CPU (hybrid MoE;
  // il == n_layers is the MTP block).
  bool cpu_moe(int il) const { return il < cpu_moe_layers_; }
  // Layer il's weights and a sequence's state for it; il == n_layers is the MTP block.
  const model::LayerWeights& lw(int il) const {
    return il < static_cast<int>(w_.layers.size()) ? w_.layers[il] : w_.mtp.block;
  }
  static model::LayerState& st(VulkanSequence& s, int il) {
    return il < static_cast<int>(s.state_.layers.size()) ? s.state_.layers[il] : s.state_.mtp;
  }
  void upload_state(VulkanSequence& s);
  void download_state(VulkanSequence& s);
  void ensure_rows(DeviceLayerState& d, const model::LayerState& S, int64_t comp_need, int64_t stage_need,
                   int64_t irows_need);
  void prepare(int n, int n_out, int layer_lo, int layer_hi);
  Range record_embed(Recorder& rec, const int32_t* tokens, int n);
  Range record_block(Recorder& rec, int il, Range x, std::vector<IndexerPick>* picks);
  void record_hc_pre(Recorder& rec, const DeviceWeight& fn, const Buffer& scale, const Buffer& base, Range x, int n);
  void record_attention(Recorder& rec, int il, int n, std::vector<IndexerPick>* picks);
  void record_compressor_segment(Recorder& rec, const Buffer& ape, const Buffer& norm, model::CompressorState& S,
                                 DeviceCompressor& D, const Buffer& rows, Range kv_in, Range gate_in, int t0, int64_t p0,
                                 int count, bool indexer);
  void record_compressor_run(Recorder& rec, int il, VulkanSequence& seq, int t0, int64_t p0, int len,
                             std::vector<int64_t>& n_comp);
  void record_moe(Recorder& rec, int il, int n);
  void record_cpu_moe(Recorder& rec, int il, int n);
  void record_head(Recorder& rec, const DeviceHead& h, Range x, int n);
  void project(Recorder& rec, const DeviceMatrix& w, Range x, size_t x_stride, int n, Range y, size_t y_stride,
               size_t y_off = 0);
  Range rope_table(const model::Rope& rope, const int64_t* pos, int n);
  void publish_scratch();

  model::Weights& w_;
  const ModelConfig& c_;
  std::unique_ptr<Context> ctx_;
  Ops ops_;
  HostArena arena_;
  DeviceWeight embd_, output_;
  DeviceHead head_, mtp_head_;
  DeviceWeight mtp_e_proj_, mtp_h_proj_;
  Buffer mtp_enorm_, mtp_hnorm_;
  std::vector<std::unique_ptr<DeviceLayer>> layers_;
  cpu::ThreadPool pool_;
  cpu::Ropes ropes_;
  bool qat_;
  int cpu_moe_layers_;
  cpu::Scratch cpu_scratch_;  // the CPU's share of hybrid MoE layers
  std::mutex mu_;  // one evaluation (or state transfer) at a time; guards everything below
  // Per-evaluation device scratch, sized by prepare().
  Scratchpad x_[2], mix_, factor_, gates_, u_, a_, y_, operand_, qa_, cq_, kvraw_, k_, q_, qn_, o_, oq_, low_, ckv_,
      cg_, ikv_, ig_, iq_, iw_, pool_out_, z_, iscore_, att_scores_, rlogits_, ids_, wts_, eg_, eu_, eh_, pd_,
      sg_, su_, sh_, sdo_, hin_, hmix_, hfac_, hgates_, hh_, hn_, logits_, mtp_hn_, mtp_hp_, hy_in_, hy_ids_,
      hy_wts_, hy_out_;
  std::vector<int32_t> tokens_;
  std::vector<int64_t> pos_;
  std::vector<Run> runs_;
  Range tokens_range_;
  std::atomic<uint64_t> scratch_bytes_{0};
  std::atomic<uint64_t> passes_{0};
};

void VulkanSequence::pull() { owner_.pull(*this); }
void VulkanSequence::push() { owner_.push(*this); }
void VulkanSequence::truncate(int64_t n, int64_t pos) { owner_.truncate(*this, n, pos); }

void VulkanBackend::upload_weights(bool widen) {
  Context& ctx = *ctx_;
  auto head = [&](DeviceHead& h, const model::HeadWeights& H, const std::string& name) {
    upload_matrix(ctx, h.fn, H.hc_fn, name, widen);
    h.base = upload_floats(ctx, H.hc_base);
    h.norm = upload_floats(ctx, H.norm);
    h.scale = H.hc_scale.at(0);
  };
  head(head_, w_.head, "output_hc_fn.weight");
  upload_matrix(ctx, output_, w_.output, "output.weight", widen);
  layers_.clear();
  const int nl = static_cast<int>(w_.layers.size());
  for (int il = 0; il < nl; ++il) layers_.push_back(upload_layer(w_.layers[il], widen, !cpu_moe(il)));
  if (w_.has_mtp) {
    layers_.push_back(upload_layer(w_.mtp.block, widen, !cpu_moe(nl)));
    upload_matrix(ctx, mtp_e_proj_, w_.mtp.e_proj, "mtp e_proj", widen);
    upload_matrix(ctx, mtp_h_proj_, w_.mtp.h_proj, "mtp h_proj", widen);
    mtp_enorm_ = upload_floats(ctx, w_.mtp.enorm);
    mtp_hnorm_ = upload_floats(ctx, w_.mtp.hnorm);
    head(mtp_head_, w_.mtp.head, "mtp hc_head_fn");
  }
}

std::unique_ptr<DeviceLayer> VulkanBackend::upload_layer(const model::LayerWeights& L, bool widen, bool experts) {
  Context& ctx = *ctx_;
  {
    auto d = std::make_unique<DeviceLayer>();
    const std::string p = L.prefix;
    upload_matrix(ctx, d->hc_attn_fn, L.hc_attn_fn, p + "hc_attn_fn", widen);
    upload_matrix(ctx, d->q_a, L.q_a, p + "attn_q_a", widen);
    upload_matrix(ctx, d->q_b, L.q_b, p + "attn_q_b", widen);
    upload_matrix(ctx, d->kv, L.kv, p + "attn_kv", widen);
    upload_matrix(ctx, d->out_a, L.out_a, p + "attn_output_a", widen);
    upload_matrix(ctx, d->out_b, L.out_b, p + "attn_output_b", widen);
    upload_matrix(ctx, d->comp_kv, L.comp.kv, p + "attn_compressor_kv", widen);
    upload_matrix(ctx, d->comp_gate, L.comp.gate, p + "attn_compressor_gate", widen);
    upload_matrix(ctx, d->icomp_kv, L.icomp.kv, p + "indexer_compressor_kv", widen);
    upload_matrix(ctx, d->icomp_gate, L.icomp.gate, p + "indexer_compressor_gate", widen);
    upload_matrix(ctx, d->idx_q_b, L.idx_q_b, p + "indexer.attn_q_b", widen);
    upload_matrix(ctx, d->idx_proj, L.idx_proj, p + "indexer.proj", widen);
    upload_matrix(ctx, d->hc_ffn_fn, L.hc_ffn_fn, p + "hc_ffn_fn", widen);
    upload_matrix(ctx, d->router, L.router, p + "ffn_gate_inp", widen);
    upload_matrix(ctx, d->sh_gate, L.sh_gate, p + "ffn_gate_shexp", widen);
    upload_matrix(ctx, d->sh_up, L.sh_up, p + "ffn_up_shexp", widen);
    upload_matrix(ctx, d->sh_down, L.sh_down, p + "ffn_down_shexp", widen);
    d->hc_attn_scale = upload_floats(ctx, L.hc_attn_scale);
    d->hc_attn_base = upload_floats(ctx, L.hc_attn_base);
    d->attn_norm = upload_floats(ctx, L.attn_norm);
    d->q_a_norm = upload_floats(ctx, L.q_a_norm);
    d->kv_norm = upload_floats(ctx, L.kv_norm);
    d->sinks = upload_floats(ctx, L.sinks);
    d->comp_ape = upload_floats(ctx, L.comp.ape);
    d->comp_norm = upload_floats(ctx, L.comp.norm);
    d->icomp_ape = upload_floats(ctx, L.icomp.ape);
    d->icomp_norm = upload_floats(ctx, L.icomp.norm);
    d->hc_ffn_scale = upload_floats(ctx, L.hc_ffn_scale);
    d->hc_ffn_base = upload_floats(ctx, L.hc_ffn_base);
    d->ffn_norm = upload_floats(ctx, L.ffn_norm);
    d->router_bias = upload_floats(ctx, L.router_bias);
    if (L.hash) {
      const size_t bytes = static_cast<size_t>(c_.vocab) * c_.n_experts_used * 4;
      d->tid2eid = ctx.create_buffer(bytes);
      ctx.upload(d->tid2eid, L.tid2eid, bytes);
    }
    if (experts) {
      d->gate_exps = upload_experts(ctx, L.gate_exps, p + "ffn_gate_exps", widen);
      d->up_exps = upload_experts(ctx, L.up_exps, p + "ffn_up_exps", widen);
      d->down_exps = upload_experts(ctx, L.down_exps, p + "ffn_down_exps", widen);
    }
    return d;
  }
}

// ---- sequence state ----

void VulkanBackend::ensure_rows(DeviceLayerState& d, const model::LayerState& S, int64_t comp_need,
                                int64_t stage_need, int64_t irows_need) {
  const int Dh = c_.head_dim, cap = S.raw.cap;
  if (!d.rows || d.comp_cap < comp_need || d.stage_cap < stage_need) {
    const int64_t comp_cap = d.comp_cap >= comp_need ? d.comp_cap : std::max(comp_need, d.comp_cap * 2);
    const int64_t stage_cap = std::max(stage_need, d.stage_cap);
    Buffer nb = ctx_->create_buffer(static_cast<size_t>(comp_cap + cap + stage_cap) * Dh * 4);
    if (d.rows) {
      // Carry the compressed rows and the ring over to the new layout.
      Recorder rec(*ctx_);
      ops_.copy_rows(rec, Rows{Range{&d.rows}, 0, 0}, Rows{Range{&nb}, 0, 0},
                     static_cast<size_t>(S.comp.n_rows) * Dh, S.comp.n_rows ? 1 : 0);
      ops_.copy_rows(rec, Rows{Range{&d.rows}, static_cast<size_t>(d.comp_cap) * Dh, 0},
                     Rows{Range{&nb}, static_cast<size_t>(comp_cap) * Dh, 0}, static_cast<size_t>(cap) * Dh, 1);
      rec.submit_and_wait();
    }
    d.rows = std::move(nb);
    d.comp_cap = comp_cap;
    d.stage_cap = stage_cap;
  }
  if (S.icomp.ratio && (!d.irows || d.irows_cap < irows_need)) {
    const int dI = c_.index_head_dim;
    const int64_t cap2 = std::max(irows_need, d.irows ? d.irows_cap * 2 : irows_need);
    Buffer nb = ctx_->create_buffer(static_cast<size_t>(std::max<int64_t>(cap2, 1)) * dI * 4);
    if (d.irows && S.icomp.n_rows) {
      Recorder rec(*ctx_);
      ops_.copy_rows(rec, Rows{Range{&d.irows}, 0, 0}, Rows{Range{&nb}, 0, 0}, static_cast<size_t>(S.icomp.n_rows) * dI, 1);
      rec.submit_and_wait();
    }
    d.irows = std::move(nb);
    d.irows_cap = cap2;
  }
}

// host() -> device: every row, state row and undo payload (snapshot load, reset, a new
// sequence). Buffers are (re)made to fit.
void VulkanBackend::upload_state(VulkanSequence& s) {
  const int Dh = c_.head_dim, dI = c_.index_head_dim;
  for (size_t il = 0; il < s.dev_.size(); ++il) {
    model::LayerState& S = st(s, static_cast<int>(il));
    DeviceLayerState& d = s.dev_[il];
    ensure_rows(d, S, std::max<int64_t>(S.comp.n_rows, 16), std::max<int64_t>(d.stage_cap, 1),
                std::max<int64_t>(S.icomp.n_rows, 16));
    if (S.comp.n_rows) ctx_->upload(d.rows, S.comp.rows.data(), static_cast<size_t>(S.comp.n_rows) * Dh * 4);
    ctx_->upload(d.rows, S.raw.rows.data(), S.raw.rows.size() * 4, static_cast<size_t>(d.comp_cap) * Dh * 4);
    if (S.icomp.ratio && S.icomp.n_rows)
      ctx_->upload(d.irows, S.icomp.rows.data(), static_cast<size_t>(S.icomp.n_rows) * dI * 4);
    for (auto [cs, dc] : {std::pair{&S.comp, &d.comp}, std::pair{&S.icomp, &d.icomp}}) {
      if (!cs->ratio) continue;
      dc->ratio = cs->ratio;
      dc->width = cs->width;
      if (!dc->kv) {
        dc->kv = ctx_->create_buffer(cs->kv.size() * 4);
        dc->score = ctx_->create_buffer(cs->score.size() * 4);
        dc->undo = ctx_->create_buffer(std::max<size_t>(cs->undo_depth, 1) * dc->undo_stride() * 4);
      }
      ctx_->upload(dc->kv, cs->kv.data(), cs->kv.size() * 4);
      ctx_->upload(dc->score, cs->score.data(), cs->score.size() * 4);
      const auto& log = cs->undo_log();
      for (size_t i = 0; i < log.size(); ++i) {
        const model::CompressorState::Undo& u = log[i];
        if (u.pos < 0 || u.kv.empty()) continue;
        const size_t base = i * dc->undo_stride() * 4, w4 = static_cast<size_t>(cs->width) * 4;
        ctx_->upload(dc->undo, u.kv.data(), w4, base);
        ctx_->upload(dc->undo, u.score.data(), w4, base + w4);
        if (u.shifted) {
          ctx_->upload(dc->undo, u.prev_kv.data(), 4 * w4, base + 2 * w4);
          ctx_->upload(dc->undo, u.prev_score.data(), 4 * w4, base + 6 * w4);
        }
      }
    }
  }
}

// device -> host(): the row data behind the bookkeeping host() already has.
void VulkanBackend::download_state(VulkanSequence& s) {
  const int Dh = c_.head_dim, dI = c_.index_head_dim;
  for (size_t il = 0; il < s.dev_.size(); ++il) {
    model::LayerState& S = st(s, static_cast<int>(il));
    DeviceLayerState& d = s.dev_[il];
    ctx_->download(d.rows, S.raw.rows.data(), S.raw.rows.size() * 4, static_cast<size_t>(d.comp_cap) * Dh * 4);
    S.comp.rows.resize(static_cast<size_t>(S.comp.n_rows) * Dh);
    if (S.comp.n_rows) ctx_->download(d.rows, S.comp.rows.data(), S.comp.rows.size() * 4);
    if (S.icomp.ratio) {
      S.icomp.rows.resize(static_cast<size_t>(S.icomp.n_rows) * dI);
      if (S.icomp.n_rows) ctx_->download(d.irows, S.icomp.rows.data(), S.icomp.rows.size() * 4);
    }
    for (auto [cs, dc] : {std::pair{&S.comp, &d.comp}, std::pair{&S.icomp, &d.icomp}}) {
      if (!cs->ratio) continue;
      ctx_->download(dc->kv, cs->kv.data(), cs->kv.size() * 4);
      ctx_->download(dc->score, cs->score.data(), cs->score.size() * 4);
      auto& log = cs->undo_log();
      const size_t w = static_cast<size_t>(cs->width), w4 = w * 4;
      for (size_t i = 0; i < log.size(); ++i) {
        model::CompressorState::Undo& u = log[i];
        if (u.pos < 0) continue;
        const size_t base = i * dc->undo_stride() * 4;
        u.kv.resize(w);
        u.score.resize(w);
        ctx_->download(dc->undo, u.kv.data(), w4, base);
        ctx_->download(dc->undo, u.score.data(), w4, base + w4);
        if (u.shifted) {
          u.prev_kv.resize(4 * w);
          u.prev_score.resize(4 * w);
          ctx_->download(dc->undo, u.prev_kv.data(), 4 * w4, base + 2 * w4);
          ctx_->download(dc->undo, u.prev_score.data(), 4 * w4, base + 6 * w4);
        }
      }
    }
  }
}

// A cheap rewind on the device: the compressors' undo entries copied back newest first, as
// model::CompressorState::undo does on the host; the bookkeeping updated here.
void VulkanBackend::truncate(VulkanSequence& s, int64_t n, int64_t pos) {
  std::lock_guard<std::mutex> lk(mu_);
  Recorder rec(*ctx_);
  bool any = false;
  for (size_t il = 0; il < s.dev_.size(); ++il) {
    model::LayerState& S = st(s, static_cast<int>(il));
    DeviceLayerState& d = s.dev_[il];
    S.raw.drop_from(pos);
    for (auto [cs, dc] : {std::pair{&S.comp, &d.comp}, std::pair{&S.icomp, &d.icomp}}) {
      if (!cs->ratio) continue;
      auto& log = cs->undo_log();
      const size_t w = static_cast<size_t>(cs->width);
      for (int64_t p = n - 1; p >= pos; --p) {
        model::CompressorState::Undo& u = log[static_cast<size_t>(p % cs->undo_depth)];
        const size_t base = static_cast<size_t>(p % cs->undo_depth) * dc->undo_stride();
        if (u.shifted) {
          ops_.copy_rows(rec, Rows{Range{&dc->undo}, base + 2 * w, 0}, Rows{Range{&dc->kv}, 0, 0}, 4 * w, 1);
          ops_.copy_rows(rec, Rows{Range{&dc->undo}, base + 6 * w, 0}, Rows{Range{&dc->score}, 0, 0}, 4 * w, 1);
        }
        const int phase = static_cast<int>(p % cs->ratio);
        const size_t row = static_cast<size_t>(cs->ratio == 4 ? 4 + phase : phase) * w;
        ops_.copy_rows(rec, Rows{Range{&dc->undo}, base, 0}, Rows{Range{&dc->kv}, row, 0}, w, 1);
        ops_.copy_rows(rec, Rows{Range{&dc->undo}, base + w, 0}, Rows{Range{&dc->score}, row, 0}, w, 1);
        u.pos = -1;
        any = true;
      }
      cs->n_rows = pos / cs->ratio;
      cs->rows.resize(std::min(cs->rows.size(), static_cast<size_t>(cs->n_rows) * cs->d));
    }
  }
  s.state_.mtp.raw.drop_from(pos);
  if (any) rec.submit_and_wait();
}

// ---- evaluation ----

// Sizes every per-evaluation buffer for n entries (n_out head rows) over layers
// [layer_lo, layer_hi), and the sequences' row buffers for what this batch appends and stages.
void VulkanBackend::prepare(int n, int n_out, int layer_lo, int layer_hi) {
  Context& ctx = *ctx_;
  const size_t N = static_cast<size_t>(n), D = c_.dim, hc = c_.hc, hcD = hc * D, mixn = (2 + hc) * hc;
  const size_t Dh = c_.head_dim, H = c_.n_heads, HD = H * Dh, QR = c_.q_lora_rank, G = c_.o_groups,
               OL = c_.o_lora_rank, K = c_.n_experts_used, F = c_.moe_inter_dim, E = c_.n_experts,
               nI = c_.index_heads, dI = c_.index_head_dim;
  const size_t align4 = ctx.binding_alignment() / 4 > 0 ? ctx.binding_alignment() / 4 : 1;
  arena_.reset();
  for (auto& x : x_) x.at_least(ctx, N * hcD * 4);
  mix_.at_least(ctx, N * mixn * 4);
  factor_.at_least(ctx, N * 4);
  gates_.at_least(ctx, N * mixn * 4);
  for (Scratchpad* s : {&u_, &a_, &y_}) s->at_least(ctx, N * D * 4);
  const size_t max_cols = std::max({hcD, D, QR, HD, G * OL, F});
  const size_t og = round_up(std::max(Ops::act_words(quant::Type::Q2_K, HD / G), HD / G), align4);
  operand_.at_least(ctx, std::max({N * (max_cols + 64), N * K * (F + 64), N * G * og}) * 4);
  qa_.at_least(ctx, N * QR * 4);
  cq_.at_least(ctx, N * QR * 4);
  kvraw_.at_least(ctx, N * Dh * 4);
  k_.at_least(ctx, N * Dh * 4);
  for (Scratchpad* s : {&q_, &qn_, &o_}) s->at_least(ctx, N * HD * 4);
  oq_.at_least(ctx, N * G * og * 4);
  low_.at_least(ctx, N * G * OL * 4);
  ckv_.at_least(ctx, N * 2 * Dh * 4);
  cg_.at_least(ctx, N * 2 * Dh * 4);
  ikv_.at_least(ctx, N * 2 * dI * 4);
  ig_.at_least(ctx, N * 2 * dI * 4);
  iq_.at_least(ctx, N * nI * dI * 4);
  iw_.at_least(ctx, N * round_up(nI, align4) * 4);
  pool_out_.at_least(ctx, std::max(Dh, dI) * 4);
  z_.at_least(ctx, std::max(Dh, dI) * 4);
  rlogits_.at_least(ctx, N * E * 4);
  ids_.at_least(ctx, N * K * 4);
  wts_.at_least(ctx, N * K * 4);
  for (Scratchpad* s : {&eg_, &eu_, &eh_}) s->at_least(ctx, N * K * F * 4);
  pd_.at_least(ctx, N * K * D * 4);
  for (Scratchpad* s : {&sg_, &su_, &sh_}) s->at_least(ctx, N * F * 4);
  sdo_.at_least(ctx, N * D * 4);
  const size_t O = static_cast<size_t>(n_out);
  hin_.at_least(ctx, O * hcD * 4);
  hmix_.at_least(ctx, O * hc * 4);
  hfac_.at_least(ctx, O * 4);
  hgates_.at_least(ctx, O * mixn * 4);
  hh_.at_least(ctx, O * D * 4);
  hn_.at_least(ctx, O * D * 4);
  logits_.at_least(ctx, O * c_.vocab * 4);
  if (cpu_moe_layers_ > 0) {
    hy_in_.at_least(ctx, N * D * 4);
    hy_ids_.at_least(ctx, N * K * 4);
    hy_wts_.at_least(ctx, N * K * 4);
    hy_out_.at_least(ctx, N * K * D * 4);
  }

  // Rows: staging for each run, compressed rows this batch may append, attention scores.
  int max_run = 1;
  for (const Run& r : runs_) max_run = std::max(max_run, r.len);
  int64_t max_comp = 0;
  for (const Run& r : runs_) {
    for (int il = layer_lo; il < layer_hi; ++il) {
      const model::LayerState& S = st(*r.seq, il);
      const int64_t last = pos_[r.t0 + r.len - 1];
      const int64_t comp_need = S.comp.ratio ? (last + 1) / S.comp.ratio + 1 : 0;
      const int64_t icomp_need = S.icomp.ratio ? (last + 1) / S.icomp.ratio + 1 : 0;
      max_comp = std::max(max_comp, comp_need);
      ensure_rows(r.seq->dev_[il], S, std::max<int64_t>(comp_need, 16), r.len, std::max<int64_t>(icomp_need, 16));
    }
  }
  const size_t max_rows = static_cast<size_t>(c_.window + max_comp + 1);
  iscore_.at_least(ctx, static_cast<size_t>(max_comp + 1) * 4);
  att_scores_.at_least(ctx, static_cast<size_t>(max_run) * H * max_rows * 4);
}

Range VulkanBackend::rope_table(const model::Rope& rope, const int64_t* pos, int n) {
  Range r;
  const int half = static_cast<int>(rope.freq.size());
  float* p = arena_.alloc<float>(static_cast<size_t>(n) * half * 2, &r);
  Ops::rope_cos_sin(rope.freq.data(), half, pos, n, p);
  return r;
}

Range VulkanBackend::record_embed(Recorder& rec, const int32_t* tokens, int n) {
  int32_t* tp = arena_.alloc<int32_t>(n, &tokens_range_);
  std::copy(tokens, tokens + n, tp);
  ops_.embed(rec, embd_.m, tokens_range_, n, c_.hc, x_[0].all());
  return x_[0].all();
}

void VulkanBackend::project(Recorder& rec, const DeviceMatrix& w, Range x, size_t x_stride, int n, Range y,
                            size_t y_stride, size_t y_off) {
  if (is_float(w.type)) {
    ops_.matmul(rec, w, x, x_stride, n, y, y_stride, y_off);
    return;
  }
  const size_t words = Ops::act_words(w.type, w.cols);
  ops_.quantize_act(rec, w.type, x, w.cols, n, x_stride, operand_.all(), words);
  ops_.matmul(rec, w, operand_.all(), words, n, y, y_stride, y_off);
}

// hc_pre: u (n x dim) = streams of x weighted by the Sinkhorn pre gates; gates_ keeps
// pre/post/comb for hc_post.
void VulkanBackend::record_hc_pre(Recorder& rec, const DeviceWeight& fn, const Buffer& scale, const Buffer& base,
                                  Range x, int n) {
  const int D = c_.dim, hc = c_.hc, hcD = hc * D, mixn = (2 + hc) * hc;
  project(rec, fn.m, x, hcD, n, mix_.all(), mixn);
  ops_.rms_factor(rec, x, hcD, n, hcD, factor_.all(), c_.norm_eps);
  ops_.hc_sinkhorn(rec, mix_.all(), Range{&scale}, Range{&base}, hc, c_.sinkhorn_iters, c_.hc_eps, n, gates_.all(),
                   factor_.all());
  ops_.hc_mix(rec, false, x, gates_.all(), {}, hc, D, n, u_.all());
}

Range VulkanBackend::record_block(Recorder& rec, int il, Range x, std::vector<IndexerPick>* picks) {
  const int n = static_cast<int>(tokens_.size());
  const DeviceLayer& L = *layers_[il];
  const int D = c_.dim, hc = c_.hc;
  Range other = x.buffer == &x_[0].buffer ? x_[1].all() : x_[0].all();
  record_hc_pre(rec, L.hc_attn_fn, L.hc_attn_scale, L.hc_attn_base, x, n);
  ops_.rms_norm(rec, u_.all(), Range{&L.attn_norm}, D, n, D, a_.all(), D, c_.norm_eps);
  record_attention(rec, il, n, picks);
  ops_.hc_mix(rec, true, x, gates_.all(), y_.all(), hc, D, n, other);
  std::swap(x, other);
  record_hc_pre(rec, L.hc_ffn_fn, L.hc_ffn_scale, L.hc_ffn_base, x, n);
  ops_.rms_norm(rec, u_.all(), Range{&L.ffn_norm}, D, n, D, a_.all(), D, c_.norm_eps);
  record_moe(rec, il, n);
  ops_.hc_mix(rec, true, x, gates_.all(), y_.all(), hc, D, n, other);
  return other;
}

// The compressor steps of `count` consecutive tokens t0.. at positions p0.. of which only the
// last may complete a row (cpu::Forward::compressor_step on the device, a segment at a time):
// their undo entries saved, their state rows written (distinct rows, so all at once), and
// when the last completes a row: pooling, the ratio-4 window shift, norm, RoPE at the row's
// position, Hadamard (+FP4) or FP8, appended to `rows` at row n_rows.
void VulkanBackend::record_compressor_segment(Recorder& rec, const Buffer& ape, const Buffer& norm,
                                              model::CompressorState& S, DeviceCompressor& Dc, const Buffer& rows,
                                              Range kv_in, Range gate_in, int t0, int64_t p0, int count,
                                              bool indexer) {
  const int r = S.ratio, d = S.d, width = S.width, R = c_.rope_dim;
  const size_t w = static_cast<size_t>(width);
  const int64_t p_last = p0 + count - 1;
  const int phase0 = static_cast<int>(p0 % r);
  const size_t row0 = static_cast<size_t>(r == 4 ? 4 + phase0 : phase0);
  const bool completes = (p_last + 1) % r == 0;
  if (S.undo_depth) {
    // Only the newest undo_depth steps keep their entries (older slots are reused).
    const int64_t first = std::max<int64_t>(p0, p_last - S.undo_depth + 1);
    for (int64_t p = first; p <= p_last; ++p) {
      model::CompressorState::Undo& u = S.undo_log()[static_cast<size_t>(p % S.undo_depth)];
      u.pos = p;
      u.shifted = r == 4 && (p + 1) % r == 0;
    }
    const size_t U = Dc.undo_stride();
    for (int64_t p = first; p <= p_last;) {  // slots p % depth, contiguous until they wrap
      const int64_t slot = p % S.undo_depth;
      const int64_t n = std::min<int64_t>(p_last - p + 1, S.undo_depth - slot);
      const size_t src = (row0 + static_cast<size_t>(p - p0)) * w;
      ops_.copy_rows(rec, Rows{Range{&Dc.kv}, src, w}, Rows{Range{&Dc.undo}, slot * U, U}, w, static_cast<int>(n));
      ops_.copy_rows(rec, Rows{Range{&Dc.score}, src, w}, Rows{Range{&Dc.undo}, slot * U + w, U}, w,
                     static_cast<int>(n));
      p += n;
    }
    if (r == 4 && completes) {
      const size_t base = static_cast<size_t>(p_last % S.undo_depth) * U;
      ops_.copy_rows(rec, Rows{Range{&Dc.kv}, 0, 0}, Rows{Range{&Dc.undo}, base + 2 * w, 0}, 4 * w, 1);
      ops_.copy_rows(rec, Rows{Range{&Dc.score}, 0, 0}, Rows{Range{&Dc.undo}, base + 6 * w, 0}, 4 * w, 1);
    }
  }
  ops_.copy_rows(rec, Rows{kv_in, static_cast<size_t>(t0) * w, w}, Rows{Range{&Dc.kv}, row0 * w, w}, w, count);
  ops_.copy_rows(rec, Rows{gate_in, static_cast<size_t>(t0) * w, w}, Rows{Range{&Dc.score}, row0 * w, w}, w, count,
                 Rows{Range{&ape}, static_cast<size_t>(phase0) * w, w});
  if (!completes) return;
  ops_.compressor_pool(rec, Range{&Dc.kv}, Range{&Dc.score}, r, d, width, pool_out_.all());
  if (r == 4) {
    ops_.copy_rows(rec, Rows{Range{&Dc.kv}, 4 * w, 0}, Rows{Range{&Dc.kv}, 0, 0}, 4 * w, 1);
    ops_.copy_rows(rec, Rows{Range{&Dc.score}, 4 * w, 0}, Rows{Range{&Dc.score}, 0, 0}, 4 * w, 1);
  }
  ops_.rms_norm(rec, pool_out_.all(), Range{&norm}, d, 1, d, z_.all(), d, c_.norm_eps);
  const int64_t rpos = static_cast<int64_t>(r) * S.n_rows;
  ops_.rope(rec, z_.all(), rope_table(ropes_.compressed, &rpos, 1), R / 2, 1, d, d - R, 0, false);
  if (indexer) {
    ops_.hadamard(rec, z_.all(), d, 1, d);
    if (qat_) ops_.fp_sim(rec, false, z_.all(), d, 1, d);
  } else if (qat_) {
    ops_.fp_sim(rec, true, z_.all(), d - R, 1, d);
  }
  ops_.copy_rows(rec, Rows{z_.all(), 0, 0}, Rows{Range{&rows}, static_cast<size_t>(S.n_rows) * d, 0},
                 static_cast<size_t>(d), 1);
  ++S.n_rows;
}

// Every compressor step of a run of `len` tokens t0.. at positions p0.., a segment at a time;
// n_comp[i] <- the attention compressor's row count after token i.
void VulkanBackend::record_compressor_run(Recorder& rec, int il, VulkanSequence& seq, int t0, int64_t p0, int len,
                                          std::vector<int64_t>& n_comp) {
  const DeviceLayer& L = *layers_[il];
  model::LayerState& S = st(seq, il);
  DeviceLayerState& d = seq.dev_[il];
  const int r = S.comp.ratio;
  n_comp.assign(len, S.comp.n_rows);
  if (!r) return;
  for (int i = 0; i < len;) {
    const int64_t p = p0 + i;
    const int count = static_cast<int>(std::min<int64_t>(len - i, r - p % r));  // up to the next completion
    record_compressor_segment(rec, L.comp_ape, L.comp_norm, S.comp, d.comp, d.rows, ckv_.all(), cg_.all(), t0 + i, p,
                              count, false);
    if (r == 4)
      record_compressor_segment(rec, L.icomp_ape, L.icomp_norm, S.icomp, d.icomp, d.irows, ikv_.all(), ig_.all(),
                                t0 + i, p, count, true);
    i += count;
    for (int j = i - 1; j < len; ++j) n_comp[j] = S.comp.n_rows;
  }
}

// The attention sublayer of layer il for the batch: a_ -> y_ (cpu::Forward::attention_sublayer).
void VulkanBackend::record_attention(Recorder& rec, int il, int n, std::vector<IndexerPick>* picks) {
  const DeviceLayer& L = *layers_[il];
  const model::LayerWeights& Lw = lw(il);
  const int D = c_.dim, H = c_.n_heads, Dh = c_.head_dim, R = c_.rope_dim, N = Dh - R, HD = H * Dh,
            QR = c_.q_lora_rank, r = Lw.ratio, nI = c_.index_heads, dI = c_.index_head_dim, topk = c_.index_topk;
  const size_t align4 = std::max<size_t>(ctx_->binding_alignment() / 4, 1);
  const model::Rope& rope = r ? ropes_.compressed : ropes_.dense;
  const Range cs = rope_table(rope, pos_.data(), n);
  bool need_index = false;
  for (int t = 0; t < n && r == 4; ++t) need_index |= (pos_[t] + 1) / 4 > topk;
  const int cw = r ? (r == 4 ? 2 : 1) * Dh : 0, iwid = r == 4 ? 2 * dI : 0;
  const size_t iw_stride = round_up(static_cast<size_t>(nI), align4);

  project(rec, L.q_a.m, a_.all(), D, n, qa_.all(), QR);
  project(rec, L.kv.m, a_.all(), D, n, kvraw_.all(), Dh);
  if (r) {
    project(rec, L.comp_kv.m, a_.all(), D, n, ckv_.all(), cw);
    project(rec, L.comp_gate.m, a_.all(), D, n, cg_.all(), cw);
    if (r == 4) {
      project(rec, L.icomp_kv.m, a_.all(), D, n, ikv_.all(), iwid);
      project(rec, L.icomp_gate.m, a_.all(), D, n, ig_.all(), iwid);
      if (need_index) project(rec, L.idx_proj.m, a_.all(), D, n, iw_.all(), iw_stride);
    }
  }
  ops_.rms_norm(rec, qa_.all(), Range{&L.q_a_norm}, QR, n, QR, cq_.all(), QR, c_.norm_eps);
  project(rec, L.q_b.m, cq_.all(), QR, n, q_.all(), HD);
  ops_.rms_norm(rec, q_.all(), {}, Dh, n * H, Dh, qn_.all(), Dh, c_.norm_eps);
  ops_.rope(rec, qn_.all(), cs, R / 2, n * H, Dh, N, R / 2, false, H, HD);
  ops_.rms_norm(rec, kvraw_.all(), Range{&L.kv_norm}, Dh, n, Dh, k_.all(), Dh, c_.norm_eps);
  ops_.rope(rec, k_.all(), cs, R / 2, n, Dh, N, R / 2, false);
  if (qat_) ops_.fp_sim(rec, true, k_.all(), N, n, Dh);
  if (need_index) {
    // The indexer's queries for every token (only those that score use them).
    project(rec, L.idx_q_b.m, cq_.all(), QR, n, iq_.all(), static_cast<size_t>(nI) * dI);
    const Range ccs = rope_table(ropes_.compressed, pos_.data(), n);
    ops_.rope(rec, iq_.all(), ccs, R / 2, n * nI, dI, dI - R, R / 2, false, nI, static_cast<size_t>(nI) * dI);
    ops_.hadamard(rec, iq_.all(), dI, n * nI, dI);
    if (qat_) ops_.fp_sim(rec, false, iq_.all(), dI, n * nI, dI);
  }

  const float scale = 1.0f / std::sqrt(static_cast<float>(Dh));
  const float wscale = 1.0f / std::sqrt(static_cast<float>(dI * nI));
  for (const Run& run : runs_) {
    model::LayerState& S = st(*run.seq, il);
    DeviceLayerState& d = run.seq->dev_[il];
    const int cap = S.raw.cap;
    const int64_t p0 = pos_[run.t0];
    const size_t ring0 = static_cast<size_t>(d.comp_cap), stage0 = ring0 + cap;
    // This run's KV rows, staged so that every token sees its window whatever the ring keeps.
    ops_.copy_rows(rec, Rows{k_.all(), static_cast<size_t>(run.t0) * Dh, 0},
                   Rows{Range{&d.rows}, stage0 * Dh, 0}, Dh, 1);
    if (run.len > 1)
      ops_.copy_rows(rec, Rows{k_.all(), static_cast<size_t>(run.t0 + 1) * Dh, static_cast<size_t>(Dh)},
                     Rows{Range{&d.rows}, (stage0 + 1) * Dh, static_cast<size_t>(Dh)}, Dh, run.len - 1);
    // Row lists: [window rows..., compressed or indexer-picked rows...] per token.
    std::vector<int32_t> lists;
    std::vector<int32_t> spans(2 * static_cast<size_t>(run.len));
    struct Pick {
      int token, first;
      int64_t n_comp;
    };
    std::vector<Pick> topk_tokens;
    std::vector<int> trace_pick;  // per ratio-4 token: index into topk_tokens, or -1 - n_comp (every row)
    std::vector<int64_t> n_comp_after;
    record_compressor_run(rec, il, *run.seq, run.t0, p0, run.len, n_comp_after);
    for (int i = 0; i < run.len; ++i) {
      const int t = run.t0 + i;
      const int64_t p = pos_[t];
      const int first = static_cast<int>(lists.size());
      const int64_t lo = std::max<int64_t>({0, p - c_.window + 1, p - cap + 1});
      for (int64_t xpos = lo; xpos <= p; ++xpos) {
        if (xpos >= p0)
          lists.push_back(static_cast<int32_t>(stage0 + (xpos - p0)));
        else if (S.raw.slot_pos[static_cast<size_t>(xpos % cap)] == xpos)
          lists.push_back(static_cast<int32_t>(ring0 + xpos % cap));
      }
      const int64_t n_comp = n_comp_after[i];
      if (r == 4 && n_comp > topk) {
        trace_pick.push_back(static_cast<int>(topk_tokens.size()));
        topk_tokens.push_back(Pick{t, static_cast<int>(lists.size()), n_comp});
        lists.insert(lists.end(), topk, 0);  // written by topk_rows
      } else {
        if (r == 4) trace_pick.push_back(-1 - static_cast<int>(n_comp));
        for (int64_t j = 0; j < n_comp; ++j) lists.push_back(static_cast<int32_t>(j));
      }
      spans[2 * i] = first;
      spans[2 * i + 1] = static_cast<int32_t>(lists.size()) - first;
    }
    Range lr, sr;
    int32_t* lp = arena_.alloc<int32_t>(lists.size(), &lr);
    std::copy(lists.begin(), lists.end(), lp);
    int32_t* spp = arena_.alloc<int32_t>(spans.size(), &sr);
    std::copy(spans.begin(), spans.end(), spp);
    if (picks)
      for (int tp : trace_pick)
        picks->push_back(tp >= 0 ? IndexerPick{lp + topk_tokens[tp].first, topk} : IndexerPick{nullptr, -1 - tp});
    for (const Pick& pk : topk_tokens) {
      ops_.indexer_score(rec, Range{&iq_.buffer, static_cast<size_t>(pk.token) * nI * dI * 4, static_cast<size_t>(nI) * dI * 4},
                         Range{&d.irows}, Range{&iw_.buffer, pk.token * iw_stride * 4, static_cast<size_t>(nI) * 4},
                         static_cast<int>(pk.n_comp), nI, dI, wscale, iscore_.all());
      ops_.topk_rows(rec, iscore_.all(), static_cast<int>(pk.n_comp), topk, lr, static_cast<size_t>(pk.first));
    }
    int max_rows = 1;
    for (int i = 0; i < run.len; ++i) max_rows = std::max(max_rows, spans[2 * i + 1]);
    ops_.attention(rec, Range{&qn_.buffer, static_cast<size_t>(run.t0) * HD * 4, static_cast<size_t>(run.len) * HD * 4},
                   Range{&d.rows}, lr, sr, run.len, max_rows, Range{&L.sinks}, H, Dh, scale, att_scores_.all(),
                   Range{&o_.buffer, static_cast<size_t>(run.t0) * HD * 4, static_cast<size_t>(run.len) * HD * 4});
    // The ring keeps the newest rows (those the CPU's ring would hold after this run).
    for (int i = std::max(0, run.len - cap); i < run.len; ++i) {
      const int64_t p = pos_[run.t0 + i];
      const int slot = static_cast<int>(p % cap);
      ops_.copy_rows(rec, Rows{k_.all(), static_cast<size_t>(run.t0 + i) * Dh, 0},
                     Rows{Range{&d.rows}, (ring0 + slot) * Dh, 0}, Dh, 1);
      S.raw.slot_pos[slot] = p;
    }
  }

  // Inverse RoPE on the outputs' tails, then the grouped low-rank output projection.
  ops_.rope(rec, o_.all(), cs, R / 2, n * H, Dh, N, R / 2, true, H, HD);
  const int G = c_.o_groups, OL = c_.o_lora_rank, group_in = HD / G;
  const quant::Type ta = L.out_a.m.type;
  const size_t words = Ops::act_words(ta, group_in);
  const size_t og = round_up(words, align4);
  if (is_float(ta))
    ops_.copy_rows(rec, Rows{o_.all(), 0, static_cast<size_t>(group_in)}, Rows{oq_.all(), 0, og},
                   static_cast<size_t>(group_in), n * G);
  else
    ops_.quantize_act(rec, ta, o_.all(), group_in, n * G, group_in, oq_.all(), og);
  for (int g = 0; g < G; ++g) {
    DeviceMatrix m = L.out_a.m;
    m.rows = OL;
    m.offset = static_cast<size_t>(g) * OL * m.row_bytes;
    ops_.matmul(rec, m, Range{&oq_.buffer, g * og * 4, 0}, G * og, n, low_.all(), static_cast<size_t>(G) * OL,
                static_cast<size_t>(g) * OL);
  }
  project(rec, L.out_b.m, low_.all(), static_cast<size_t>(G) * OL, n, y_.all(), D);
}

// The MoE sublayer of layer il: a_ -> y_ (cpu::Forward::moe_sublayer), expert ids and weights
// staying on the device from the router to the combine.
void VulkanBackend::record_moe(Recorder& rec, int il, int n) {
  if (cpu_moe(il)) {
    record_cpu_moe(rec, il, n);
    return;
  }
  const DeviceLayer& L = *layers_[il];
  const model::LayerWeights& Lw = lw(il);
  const int D = c_.dim, E = c_.n_experts, K = c_.n_experts_used, F = c_.moe_inter_dim;
  project(rec, L.router.m, a_.all(), D, n, rlogits_.all(), E);
  ops_.route_topk(rec, rlogits_.all(), Lw.router_bias.empty() ? Range{} : Range{&L.router_bias}, E, K, n,
                  c_.weights_norm, c_.route_scale, ids_.all(), wts_.all(), Lw.hash ? tokens_range_ : Range{},
                  Lw.hash ? Range{&L.tid2eid} : Range{});
  auto experts = [&](const DeviceExperts& x, Range in, int rows_in, int n_vec, int k_per, Range out, int out_stride) {
    if (is_float(x.type)) {
      ops_.matmul_experts(rec, x, in, rows_in, ids_.all(), n * K, k_per, out, out_stride);
      return;
    }
    const size_t words = Ops::act_words(x.type, x.cols);
    ops_.quantize_act(rec, x.type, in, x.cols, n_vec, rows_in, operand_.all(), words);
    ops_.matmul_experts(rec, x, operand_.all(), words, ids_.all(), n * K, k_per, out, out_stride);
  };
  experts(L.gate_exps, a_.all(), D, n, K, eg_.all(), F);
  experts(L.up_exps, a_.all(), D, n, K, eu_.all(), F);
  ops_.swiglu(rec, eg_.all(), eu_.all(), wts_.all(), F, n * K, F, eh_.all(), Lw.swiglu_limit);
  experts(L.down_exps, eh_.all(), F, n * K, 1, pd_.all(), D);
  const bool shared = L.sh_gate.buffer.size() > 0;
  if (shared) {
    project(rec, L.sh_gate.m, a_.all(), D, n, sg_.all(), F);
    project(rec, L.sh_up.m, a_.all(), D, n, su_.all(), F);
    ops_.swiglu(rec, sg_.all(), su_.all(), {}, F, n, F, sh_.all(), Lw.swiglu_limit);
    project(rec, L.sh_down.m, sh_.all(), F, n, sdo_.all(), D);
  }
  ops_.moe_combine(rec, pd_.all(), shared ? sdo_.all() : Range{}, D, K, n, y_.all());
}

// The MoE sublayer of a hybrid layer: routing and the shared expert on the device, the routed
// experts on the CPU (cpu::Forward::routed_experts, from the weights in host memory). The
// one host round trip of the layer: the recording is flushed once the normed input, expert
// ids and weights are in host-visible memory, the CPU writes its per-pair outputs into
// host-visible memory, and the combine (in moe_sublayer's order) goes on in the same pass.
void VulkanBackend::record_cpu_moe(Recorder& rec, int il, int n) {
  const DeviceLayer& L = *layers_[il];
  const model::LayerWeights& Lw = lw(il);
  const int D = c_.dim, E = c_.n_experts, K = c_.n_experts_used, F = c_.moe_inter_dim;
  project(rec, L.router.m, a_.all(), D, n, rlogits_.all(), E);
  ops_.route_topk(rec, rlogits_.all(), Lw.router_bias.empty() ? Range{} : Range{&L.router_bias}, E, K, n,
                  c_.weights_norm, c_.route_scale, hy_ids_.all(), hy_wts_.all(), Lw.hash ? tokens_range_ : Range{},
                  Lw.hash ? Range{&L.tid2eid} : Range{});
  ops_.copy_rows(rec, Rows{a_.all(), 0, 0}, Rows{hy_in_.all(), 0, 0}, static_cast<size_t>(n) * D, 1);
  const bool shared = L.sh_gate.buffer.size() > 0;
  if (shared) {
    project(rec, L.sh_gate.m, a_.all(), D, n, sg_.all(), F);
    project(rec, L.sh_up.m, a_.all(), D, n, su_.all(), F);
    ops_.swiglu(rec, sg_.all(), su_.all(), {}, F, n, F, sh_.all(), Lw.swiglu_limit);
    project(rec, L.sh_down.m, sh_.all(), F, n, sdo_.all(), D);
  }
  rec.flush();
  cpu::Forward(w_, pool_, ropes_, cpu_scratch_, qat_)
      .routed_experts(Lw, static_cast<const float*>(hy_in_.buffer.mapped()), n,
                      static_cast<const int32_t*>(hy_ids_.buffer.mapped()),
                      static_cast<const float*>(hy_wts_.buffer.mapped()), static_cast<float*>(hy_out_.buffer.mapped()));
  ops_.moe_combine(rec, hy_out_.all(), shared ? sdo_.all() : Range{}, D, K, n, y_.all());
}

// The output head (cpu::Forward::head's math) on n states in x -> logits_.
void VulkanBackend::record_head(Recorder& rec, const DeviceHead& h, Range x, int n) {
  const int D = c_.dim, hc = c_.hc;
  const size_t hcD = static_cast<size_t>(hc) * D;
  project(rec, h.fn.m, x, hcD, n, hmix_.all(), hc);
  ops_.rms_factor(rec, x, static_cast<int64_t>(hcD), n, hcD, hfac_.all(), c_.norm_eps);
  ops_.hc_head_gates(rec, hmix_.all(), hfac_.all(), Range{&h.base}, hc, h.scale, c_.hc_eps, n, hgates_.all());
  ops_.hc_mix(rec, false, x, hgates_.all(), {}, hc, D, n, hh_.all());
  ops_.rms_norm(rec, hh_.all(), Range{&h.norm}, D, n, D, hn_.all(), D, c_.norm_eps);
  project(rec, output_.m, hn_.all(), D, n, logits_.all(), c_.vocab);
}

void VulkanBackend::publish_scratch() {
  uint64_t dev = arena_.bytes() + cpu_scratch_.bytes();
  for (const Scratchpad* s :
       {&x_[0], &x_[1], &mix_, &factor_, &gates_, &u_, &a_, &y_, &operand_, &qa_, &cq_, &kvraw_, &k_, &q_, &qn_, &o_,
        &oq_, &low_, &ckv_, &cg_, &ikv_, &ig_, &iq_, &iw_, &pool_out_, &z_, &iscore_, &att_scores_, &rlogits_, &ids_,
        &wts_, &eg_, &eu_, &eh_, &pd_, &sg_, &su_, &sh_, &sdo_, &hin_, &hmix_, &hfac_, &hgates_, &hh_, &hn_,
        &logits_, &mtp_hn_, &mtp_hp_, &hy_in_, &hy_ids_, &hy_wts_, &hy_out_})
    dev += s->buffer.size();
  scratch_bytes_.store(dev, std::memory_order_relaxed);
}

}  // namespace

std::unique_ptr<backend::Backend> make_backend(model::Weights& weights, const EngineOptions& opt) {
  return std::make_unique<VulkanBackend>(weights, opt);
}

}  // namespace ds4::vulkan
