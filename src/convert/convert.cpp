#include "convert/convert.h"

#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <set>

#include "convert/imatrix.h"
#include "convert/parallel.h"
#include "convert/safetensors.h"
#include "convert/vocab.h"
#include "convert/write_model.h"
#include "gguf/gguf.h"
#include "quant/quant.h"

namespace ds4::convert {

void encode_rows(quant::Type t, const float* src, uint64_t rows, uint64_t cols, uint8_t* dst,
                 const float* importance) {
  const auto rb = quant::row_bytes(t, cols);
  if (!rb) throw ConvertError("row length " + std::to_string(cols) + " does not fit " + std::string(quant::type_name(t)));
  if (t == quant::Type::F32) {
    std::memcpy(dst, src, rows * cols * sizeof(float));
    return;
  }
  for (uint64_t r = 0; r < rows; ++r)
    quant::quantize_row(t, src + r * cols, dst + r * *rb, static_cast<int64_t>(cols), importance);
}

namespace {

bool needs_importance(quant::Type t) { return t == quant::Type::IQ2_XXS; }

// Σ over rows of w² per column: ds4's stand-in importance when there is no imatrix.
std::vector<float> column_sum_squares(const float* w, uint64_t rows, uint64_t cols) {
  std::vector<float> imp(cols, 0.0f);
  for (uint64_t r = 0; r < rows; ++r)
    for (uint64_t c = 0; c < cols; ++c) imp[c] += w[r * cols + c] * w[r * cols + c];
  return imp;
}

class CheckpointSource {
 public:
  CheckpointSource(const Checkpoint& ck, const ModelConfig& cfg, const Imatrix* im, int threads)
      : ck_(ck), cfg_(cfg), im_(im), pool_(converter_pool(threads)) {}

  // Checks every source exists with the right shape before anything is written.
  void preflight(const PlannedTensor& p, std::set<std::string>& used) const {
    const TensorSpec& s = p.spec;
    auto note = [&](const WeightSource& w) {
      used.insert(w.weight->name);
      if (w.scale) used.insert(w.scale->name);
    };
    if (s.role == Role::Tid2eid) {
      const StTensor& t = ck_.require(s.hf_name);
      (void)read_int_tensor(t, s.hf_shape());
      used.insert(t.name);
    } else if (is_expert(s.role)) {
      for (uint32_t e = 0; e < s.n_experts; ++e) note(resolve_weight(ck_, s.expert_hf_name(e), s.hf_shape()));
    } else {
      note(resolve_weight(ck_, s.hf_name, s.hf_shape()));
    }
  }

  gguf::Writer::Producer producer(const PlannedTensor& p) const {
    return [this, p](uint8_t* dst, uint64_t nbytes) {
      if (nbytes != p.nbytes) throw ConvertError(p.spec.gguf_name + ": writer asked for an unexpected size");
      produce(p, dst);
    };
  }

 private:
  void produce(const PlannedTensor& p, uint8_t* dst) const {
    const TensorSpec& s = p.spec;
    if (s.role == Role::Tid2eid) {
      const std::vector<int32_t> ids = read_int_tensor(ck_.require(s.hf_name), s.hf_shape());
      for (size_t i = 0; i < ids.size(); ++i)
        if (ids[i] < 0 || ids[i] >= cfg_.n_experts)
          throw ConvertError(s.hf_name + ": expert id " + std::to_string(ids[i]) + " at element " + std::to_string(i) +
                             " is outside 0.." + std::to_string(cfg_.n_experts - 1));
      std::memcpy(dst, ids.data(), ids.size() * sizeof(int32_t));
      return;
    }
    const uint64_t cols = s.row_length();
    const uint64_t rb = *quant::row_bytes(p.type, cols);
    if (is_expert(s.role)) {
      const std::vector<uint64_t> shape = s.hf_shape();
      const uint64_t rows = shape[0];
      parallel_for(pool_, s.n_experts, [&](size_t e) {
        std::vector<float> w(rows * cols);
        read_weight_f32(resolve_weight(ck_, s.expert_hf_name(static_cast<uint32_t>(e)), shape), shape, w.data());
        const float* imp = im_ ? im_->find(s.gguf_name, s.hf_name, cols, static_cast<uint32_t>(e), s.n_experts) : nullptr;
        std::vector<float> own;
        if (!imp && needs_importance(p.type)) {
          own = column_sum_squares(w.data(), rows, cols);
          imp = own.data();
        }
        encode_rows(p.type, w.data(), rows, cols, dst + e * rows * rb, imp);
      });
      return;
    }
    const std::vector<uint64_t> shape = s.hf_shape();
    const uint64_t rows = s.n_rows();
    std::vector<float> w(rows * cols);
    read_weight_f32(resolve_weight(ck_, s.hf_name, shape), shape, w.data());
    const float* imp = im_ ? im_->find(s.gguf_name, s.hf_name, cols, 0, 0) : nullptr;
    std::vector<float> own;
    if (!imp && needs_importance(p.type)) {
      own = column_sum_squares(w.data(), rows, cols);
      imp = own.data();
    }
    constexpr uint64_t kChunk = 256;
    const uint64_t chunks = (rows + kChunk - 1) / kChunk;
    parallel_for(pool_, chunks, [&](size_t c) {
      const uint64_t r0 = c * kChunk, n = std::min(kChunk, rows - r0);
      encode_rows(p.type, w.data() + r0 * cols, n, cols, dst + r0 * rb, imp);
    });
  }

  const Checkpoint& ck_;
  const ModelConfig& cfg_;
  const Imatrix* im_;
  mutable cpu::ThreadPool pool_;
};

}  // namespace

ConvertReport convert_checkpoint(const ConvertOptions& o) {
  namespace fs = std::filesystem;
  const fs::path dir(o.hf_dir);
  const fs::path config_path = dir / "config.json";
  if (!fs::exists(config_path)) throw ConvertError(o.hf_dir + ": no config.json");
  ModelConfig cfg = load_model_config(config_path.string());
  if (!o.name.empty())
    cfg.name = o.name;
  else if (cfg.name == kDefaultModelName)
    cfg.name = fs::absolute(dir).lexically_normal().filename().string();
  if (cfg.name.empty()) cfg.name = kDefaultModelName;
  const Checkpoint ck = Checkpoint::open(o.hf_dir);

  const bool mtp = o.include_mtp && cfg.n_mtp_layers > 0;
  ConvertReport report;
  const auto plan = plan_tensors(build_catalogue(cfg, mtp), o.recipe, o.f16_fallback, &report.fallbacks);
  Imatrix im;
  if (!o.imatrix_path.empty()) im = Imatrix::load(o.imatrix_path);
  CheckpointSource src(ck, cfg, o.imatrix_path.empty() ? nullptr : &im, o.threads);
  std::set<std::string> used;
  for (const auto& p : plan) {
    try {
      src.preflight(p, used);
    } catch (const ConvertError& e) {
      if (p.spec.mtp) throw ConvertError(std::string(e.what()) + " (MTP block; --no-mtp skips it)");
      throw;
    }
  }
  for (const auto& n : ck.names())
    if (!used.count(n)) report.unused_sources.push_back(n);
  const Vocab vocab = o.tokenizer_path.empty() ? make_synthetic_vocab(cfg.vocab)
                                                : load_tokenizer_vocab(o.tokenizer_path, cfg.vocab);
  ModelWriter mw(o, cfg, vocab);
  if (!o.imatrix_path.empty()) mw.note_imatrix(im);
  for (const auto& p : plan) mw.add(p, src.producer(p));
  mw.write(report);
  return report;
}

}  // namespace ds4::convert
