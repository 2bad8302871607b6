#include "model/weights.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <stdexcept>

#include "model/catalogue.h"
#include "model/config.h"
#include "quant/quant.h"

namespace ds4::model {

namespace {

[[noreturn]] void bad(const gguf::File& f, const std::string& msg) {
  throw Error(Error::Kind::BadModel, f.path() + ": " + msg);
}

bool compute_type(quant::Type t) {
  switch (t) {
    case quant::Type::F32:
    case quant::Type::F16:
    case quant::Type::BF16:
    case quant::Type::Q8_0:
    case quant::Type::Q2_K:
    case quant::Type::Q4_K:
    case quant::Type::IQ2_XXS:
      return true;
    default:
      return false;
  }
}

std::string dims_str(const std::vector<uint64_t>& d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

struct Binder {
  const gguf::File& f;
  // False for the layers of other pipeline stages: tensors are checked against the header
  // and their views bound (sizes stay known) but no tensor data is read, so none of their
  // pages become resident in this process.
  bool touch = true;

  const gguf::TensorInfo& need(const std::string& name) const {
    const gguf::TensorInfo* t = f.find_tensor(name);
    if (!t) bad(f, "missing tensor " + name);
    if (!t->data) bad(f, "tensor " + name + " has no data");
    return *t;
  }
  void shape(const gguf::TensorInfo& t, const std::vector<uint64_t>& want) const {
    // Trailing 1-dims are equivalent (a [n] vector may be stored as [n, 1]).
    auto a = t.dims, b = want;
    while (a.size() > 1 && a.back() == 1) a.pop_back();
    while (b.size() > 1 && b.back() == 1) b.pop_back();
    if (a != b)
      bad(f, "tensor " + t.name + " has dims " + dims_str(t.dims) + ", expected " + dims_str(want));
  }
  MatView mat(const std::string& name, int64_t in, int64_t out) const {
    const auto& t = need(name);
    shape(t, {static_cast<uint64_t>(in), static_cast<uint64_t>(out)});
    if (!compute_type(t.type))
      bad(f, "tensor " + name + " has unsupported type " + std::string(quant::type_name(t.type)));
    MatView m;
    m.data = t.data;
    m.type = t.type;
    m.in = in;
    m.out = out;
    m.row_bytes = t.row_bytes();
    return m;
  }
  std::optional<MatView> mat_opt(const std::string& name, int64_t in, int64_t out) const {
    if (!f.find_tensor(name)) return std::nullopt;
    return mat(name, in, out);
  }
  // Small tensor widened to f32 (norms, biases, APE, HC scale/base, sinks).
  std::vector<float> vec(const std::string& name, const std::vector<uint64_t>& dims) const {
    const auto& t = need(name);
    shape(t, dims);
    if (!compute_type(t.type))
      bad(f, "tensor " + name + " has unsupported type " + std::string(quant::type_name(t.type)));
    if (!touch) return {};
    const int64_t row = static_cast<int64_t>(t.ne(0));
    const int64_t rows = static_cast<int64_t>(t.n_elements() / t.ne(0));
    std::vector<float> out(static_cast<size_t>(row * rows));
    const uint64_t rb = t.row_bytes();
    for (int64_t r = 0; r < rows; ++r)
      quant::dequantize_row(t.type, t.data + r * rb, out.data() + r * row, row);
    return out;
  }
  ExpertsView experts(const std::string& name, int64_t in, int64_t out, int64_t count) const {
    const auto& t = need(name);
    shape(t, {static_cast<uint64_t>(in), static_cast<uint64_t>(out), static_cast<uint64_t>(count)});
    if (!compute_type(t.type))
      bad(f, "tensor " + name + " has unsupported type " + std::string(quant::type_name(t.type)));
    ExpertsView e;
    e.data = t.data;
    e.type = t.type;
    e.in = in;
    e.out = out;
    e.count = count;
    e.row_bytes = t.row_bytes();
    return e;
  }
  // The same, with the name and shape of a catalogue entry.
  MatView mat(const TensorSpec& s) const {
    return mat(s.gguf_name, static_cast<int64_t>(s.dims.at(0)), static_cast<int64_t>(s.dims.at(1)));
  }
  std::vector<float> vec(const TensorSpec& s) const { return vec(s.gguf_name, s.dims); }
  ExpertsView experts(const TensorSpec& s) const {
    return experts(s.gguf_name, static_cast<int64_t>(s.dims.at(0)), static_cast<int64_t>(s.dims.at(1)),
                   static_cast<int64_t>(s.dims.at(2)));
  }
};

// One block's catalogue entries, looked up by tensor.
struct BlockSpecs {
  std::vector<TensorSpec> specs;
  const TensorSpec& operator[](Tensor t) const {
    for (const auto& s : specs)
      if (s.id == t) return s;
    throw std::logic_error("tensor catalogue has no entry for a tensor the block needs");
  }
};

void bind_compressor(const Binder& b, const BlockSpecs& s, Tensor kv, Tensor gate, Tensor ape, Tensor norm,
                     CompressorWeights& c) {
  c.kv = b.mat(s[kv]);
  c.gate = b.mat(s[gate]);
  c.ape = b.vec(s[ape]);
  c.norm = b.vec(s[norm]);
}

// Main layer `block` or MTP block `block` (mtp).
void bind_layer(const Binder& b, const ModelConfig& c, int block, bool mtp, LayerWeights& L) {
  const BlockSpecs s{block_tensors(c, block, mtp)};
  const int ratio = c.ratio(mtp ? c.n_layers + block : block);
  const bool hash = !mtp && block < c.n_hash_layers;
  L.prefix = block_prefix(block, mtp);
  L.ratio = ratio;
  L.hash = hash;
  L.swiglu_limit = c.swiglu_limit[mtp ? c.n_layers + block : block];
  L.hc_attn_fn = b.mat(s[Tensor::HcAttnFn]);
  L.hc_attn_scale = b.vec(s[Tensor::HcAttnScale]);
  L.hc_attn_base = b.vec(s[Tensor::HcAttnBase]);
  L.attn_norm = b.vec(s[Tensor::AttnNorm]);
  L.q_a = b.mat(s[Tensor::AttnQA]);
  L.q_a_norm = b.vec(s[Tensor::AttnQANorm]);
  L.q_b = b.mat(s[Tensor::AttnQB]);
  L.kv = b.mat(s[Tensor::AttnKv]);
  L.kv_norm = b.vec(s[Tensor::AttnKvNorm]);
  L.sinks = b.vec(s[Tensor::AttnSinks]);
  L.out_a = b.mat(s[Tensor::AttnOutputA]);
  L.out_b = b.mat(s[Tensor::AttnOutputB]);
  if (ratio != 0) {
    bind_compressor(b, s, Tensor::AttnCompressorKv, Tensor::AttnCompressorGate, Tensor::AttnCompressorApe,
                    Tensor::AttnCompressorNorm, L.comp);
    if (ratio == 4) {
      bind_compressor(b, s, Tensor::IndexerCompressorKv, Tensor::IndexerCompressorGate,
                      Tensor::IndexerCompressorApe, Tensor::IndexerCompressorNorm, L.icomp);
      L.idx_q_b = b.mat(s[Tensor::IndexerQB]);
      L.idx_proj = b.mat(s[Tensor::IndexerProj]);
    }
  }
  L.hc_ffn_fn = b.mat(s[Tensor::HcFfnFn]);
  L.hc_ffn_scale = b.vec(s[Tensor::HcFfnScale]);
  L.hc_ffn_base = b.vec(s[Tensor::HcFfnBase]);
  L.ffn_norm = b.vec(s[Tensor::FfnNorm]);
  L.router = b.mat(s[Tensor::Router]);
  if (hash) {
    const TensorSpec& spec = s[Tensor::RouterTid2eid];
    const auto& t = b.need(spec.gguf_name);
    b.shape(t, spec.dims);
    if (t.type != quant::Type::I32) bad(b.f, "tensor " + t.name + " must be I32");
    L.tid2eid = reinterpret_cast<const int32_t*>(t.data);
    // Validate the table once so routing never indexes out of range.
    for (int64_t i = 0; b.touch && i < static_cast<int64_t>(c.vocab) * c.n_experts_used; ++i) {
      int32_t e;
      std::memcpy(&e, t.data + 4 * i, 4);
      if (e < 0 || e >= c.n_experts) bad(b.f, "tensor " + t.name + " holds an invalid expert id");
    }
  } else {
    // The MTP block needs its bias; main layers may come without one.
    const TensorSpec& bias = s[Tensor::RouterBias];
    if (mtp || b.f.find_tensor(bias.gguf_name)) L.router_bias = b.vec(bias);
  }
  L.gate_exps = b.experts(s[Tensor::ExpertsGate]);
  L.up_exps = b.experts(s[Tensor::ExpertsUp]);
  L.down_exps = b.experts(s[Tensor::ExpertsDown]);
  if (L.gate_exps.type != L.up_exps.type)
    bad(b.f, L.prefix + "ffn_gate_exps and ffn_up_exps must share a type");
  if (c.n_shared_experts > 0) {
    L.sh_gate = b.mat(s[Tensor::SharedGate]);
    L.sh_up = b.mat(s[Tensor::SharedUp]);
    L.sh_down = b.mat(s[Tensor::SharedDown]);
  }
}

void bind_head(const Binder& b, const TensorSpec& fn, const TensorSpec& scale, const TensorSpec& base,
               const TensorSpec& norm, HeadWeights& h) {
  h.hc_fn = b.mat(fn);
  h.hc_scale = b.vec(scale);
  h.hc_base = b.vec(base);
  h.norm = b.vec(norm);
}

std::unique_ptr<gguf::File> open_file(const std::string& path) {
  try {
    return gguf::File::open(path);
  } catch (const gguf::Error& e) {
    throw Error(Error::Kind::BadModel, e.what());
  } catch (const std::exception& e) {
    throw Error(Error::Kind::BadModel, path + ": " + e.what());
  }
}

}  // namespace

std::unique_ptr<Weights> Weights::load(const std::string& path, const std::string& mtp_path, int first_layer,
                                       int end_layer) {
  auto w = std::make_unique<Weights>();
  w->file = open_file(path);
  try {
    const gguf::File& f = *w->file;
    w->config = read_config(f);
    const ModelConfig& c = w->config;
    if (end_layer < 0) end_layer = c.n_layers;
    if (first_layer < 0 || first_layer >= end_layer || end_layer > c.n_layers)
      bad(f, "layer range [" + std::to_string(first_layer) + ", " + std::to_string(end_layer) +
                 ") is not within the model's " + std::to_string(c.n_layers) + " layers");
    w->first_layer = first_layer;
    w->end_layer = end_layer;
    Binder b{f};
    const BlockSpecs head{head_tensors(c)};
    w->token_embd = b.mat(head[Tensor::TokenEmbd]);
    w->output = b.mat(head[Tensor::Output]);
    bind_head(b, head[Tensor::OutputHcFn], head[Tensor::OutputHcScale], head[Tensor::OutputHcBase],
              head[Tensor::OutputNorm], w->head);
    w->layers.resize(c.n_layers);
    for (int il = 0; il < c.n_layers; ++il)
      bind_layer(Binder{f, il >= first_layer && il < end_layer}, c, il, false, w->layers[il]);

    const gguf::File* mf = nullptr;
    if (!mtp_path.empty()) {
      w->mtp_file = open_file(mtp_path);
      mf = w->mtp_file.get();
    } else if (f.find_tensor(tensor_name(Tensor::MtpEProj, 0, true))) {
      mf = &f;
    }
    if (mf) {
      Binder mb{*mf};
      MtpWeights& m = w->mtp;
      bind_layer(mb, c, 0, true, m.block);
      const BlockSpecs s{block_tensors(c, 0, true)};
      m.e_proj = mb.mat(s[Tensor::MtpEProj]);
      m.h_proj = mb.mat(s[Tensor::MtpHProj]);
      m.enorm = mb.vec(s[Tensor::MtpENorm]);
      m.hnorm = mb.vec(s[Tensor::MtpHNorm]);
      bind_head(mb, s[Tensor::MtpHcHeadFn], s[Tensor::MtpHcHeadScale], s[Tensor::MtpHcHeadBase], s[Tensor::MtpNorm],
                m.head);
      w->has_mtp = true;
    }
  } catch (const gguf::Error& e) {
    throw Error(Error::Kind::BadModel, e.what());
  } catch (const std::invalid_argument& e) {
    throw Error(Error::Kind::BadModel, path + ": " + e.what());
  }
  return w;
}

void Weights::repack_iq2_xxs() {
  // Views that share bytes (none in today's files) must not be re-encoded twice.
  std::set<const uint8_t*> done;
  auto repack = [&](const uint8_t* data, uint64_t bytes) {
    if (!done.insert(data).second) return;
    const gguf::File* f = file.get();
    if (mtp_file && data >= mtp_file->base() && data < mtp_file->base() + mtp_file->file_size()) f = mtp_file.get();
    const_cast<gguf::File*>(f)->rewrite_in_memory(data, bytes, [](uint8_t* p, uint64_t n) {
      quant::iq2_xxs_repack(reinterpret_cast<quant::block_iq2_xxs*>(p),
                            static_cast<int64_t>(n / sizeof(quant::block_iq2_xxs)));
    });
  };
  auto layer = [&](LayerWeights& L) {
    for (MatView* m : {&L.hc_attn_fn, &L.q_a, &L.q_b, &L.kv, &L.out_a, &L.out_b, &L.comp.kv, &L.comp.gate, &L.icomp.kv,
                       &L.icomp.gate, &L.idx_q_b, &L.idx_proj, &L.hc_ffn_fn, &L.router, &L.sh_gate, &L.sh_up,
                       &L.sh_down}) {
      if (m->type != quant::Type::IQ2_XXS || m->iq2_repacked || !m->valid()) continue;
      repack(m->data, m->bytes());
      m->iq2_repacked = true;
    }
    for (ExpertsView* x : {&L.gate_exps, &L.up_exps, &L.down_exps}) {
      if (x->type != quant::Type::IQ2_XXS || x->iq2_repacked || !x->data) continue;
      repack(x->data, static_cast<uint64_t>(x->count * x->out) * x->row_bytes);
      x->iq2_repacked = true;
    }
  };
  for (size_t il = 0; il < layers.size(); ++il)
    if (holds_layer(static_cast<int>(il))) layer(layers[il]);  // another MPI rank's layers stay untouched
  if (has_mtp) layer(mtp.block);
}

uint64_t Weights::warm() const {
  uint64_t covered = 0, sum = 0;
  for (const gguf::TensorInfo& t : file->tensors()) {
    const std::string& n = t.name;
    bool mine = false;
    if (n.rfind("blk.", 0) == 0) mine = holds_layer(std::atoi(n.c_str() + 4));
    else if (n.rfind("token_embd.", 0) == 0) mine = first_layer == 0;
    else if (n.rfind("output", 0) == 0) mine = end_layer == config.n_layers;
    if (!mine || !t.data) continue;
    for (uint64_t off = 0; off < t.nbytes; off += 4096) sum += t.data[off];
    covered += t.nbytes;
  }
  if (sum == 1) std::fputc('\n', stderr);  // keeps the reads observable
  return covered;
}

void Weights::use_f32_activations() {
  auto layer = [](LayerWeights& L) {
    for (MatView* m : {&L.hc_attn_fn, &L.q_a, &L.q_b, &L.kv, &L.out_a, &L.out_b, &L.comp.kv, &L.comp.gate, &L.icomp.kv,
                       &L.icomp.gate, &L.idx_q_b, &L.idx_proj, &L.hc_ffn_fn, &L.router, &L.sh_gate, &L.sh_up,
                       &L.sh_down})
      m->f32_activations = true;
    for (ExpertsView* x : {&L.gate_exps, &L.up_exps, &L.down_exps}) x->f32_activations = true;
  };
  head.hc_fn.f32_activations = output.f32_activations = true;
  for (auto& L : layers) layer(L);
  if (has_mtp) {
    layer(mtp.block);
    for (MatView* m : {&mtp.e_proj, &mtp.h_proj, &mtp.head.hc_fn}) m->f32_activations = true;
  }
}

}  // namespace ds4::model
