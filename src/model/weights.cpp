#include "model/weights.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>

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
};

void bind_compressor(const Binder& b, const std::string& p, int ratio, int d, int dim,
                     CompressorWeights& c) {
  const int w = (ratio == 4 ? 2 : 1) * d;
  c.kv = b.mat(p + "_kv.weight", dim, w);
  c.gate = b.mat(p + "_gate.weight", dim, w);
  c.ape = b.vec(p + "_ape.weight", {static_cast<uint64_t>(w), static_cast<uint64_t>(ratio)});
  c.norm = b.vec(p + "_norm.weight", {static_cast<uint64_t>(d)});
}

void bind_layer(const Binder& b, const ModelConfig& c, const std::string& prefix, int ratio,
                bool hash, float limit, bool mtp, LayerWeights& L) {
  const int64_t D = c.dim, hcD = static_cast<int64_t>(c.hc) * c.dim;
  const int64_t mix = static_cast<int64_t>(2 + c.hc) * c.hc;
  const auto u = [](int64_t v) { return static_cast<uint64_t>(v); };
  const std::string& p = prefix;
  L.prefix = prefix;
  L.ratio = ratio;
  L.hash = hash;
  L.swiglu_limit = limit;
  L.hc_attn_fn = b.mat(p + "hc_attn_fn.weight", hcD, mix);
  L.hc_attn_scale = b.vec(p + "hc_attn_scale.weight", {3});
  L.hc_attn_base = b.vec(p + "hc_attn_base.weight", {u(mix)});
  L.attn_norm = b.vec(p + "attn_norm.weight", {u(D)});
  L.q_a = b.mat(p + "attn_q_a.weight", D, c.q_lora_rank);
  L.q_a_norm = b.vec(p + "attn_q_a_norm.weight", {u(c.q_lora_rank)});
  L.q_b = b.mat(p + "attn_q_b.weight", c.q_lora_rank, static_cast<int64_t>(c.n_heads) * c.head_dim);
  L.kv = b.mat(p + "attn_kv.weight", D, c.head_dim);
  L.kv_norm = b.vec(p + "attn_kv_a_norm.weight", {u(c.head_dim)});
  L.sinks = b.vec(p + "attn_sinks.weight", {u(c.n_heads)});
  const int64_t group_in = static_cast<int64_t>(c.n_heads / c.o_groups) * c.head_dim;
  L.out_a = b.mat(p + "attn_output_a.weight", group_in, static_cast<int64_t>(c.o_groups) * c.o_lora_rank);
  L.out_b = b.mat(p + "attn_output_b.weight", static_cast<int64_t>(c.o_groups) * c.o_lora_rank, D);
  if (ratio != 0) {
    bind_compressor(b, p + "attn_compressor", ratio, c.head_dim, c.dim, L.comp);
    if (ratio == 4) {
      bind_compressor(b, p + "indexer_compressor", ratio, c.index_head_dim, c.dim, L.icomp);
      L.idx_q_b = b.mat(p + "indexer.attn_q_b.weight", c.q_lora_rank,
                        static_cast<int64_t>(c.index_heads) * c.index_head_dim);
      L.idx_proj = b.mat(p + "indexer.proj.weight", D, c.index_heads);
    }
  }
  L.hc_ffn_fn = b.mat(p + "hc_ffn_fn.weight", hcD, mix);
  L.hc_ffn_scale = b.vec(p + "hc_ffn_scale.weight", {3});
  L.hc_ffn_base = b.vec(p + "hc_ffn_base.weight", {u(mix)});
  L.ffn_norm = b.vec(p + "ffn_norm.weight", {u(D)});
  L.router = b.mat(p + "ffn_gate_inp.weight", D, c.n_experts);
  if (hash) {
    const auto& t = b.need(p + "ffn_gate_tid2eid.weight");
    b.shape(t, {u(c.n_experts_used), u(c.vocab)});
    if (t.type != quant::Type::I32) bad(b.f, "tensor " + t.name + " must be I32");
    L.tid2eid = reinterpret_cast<const int32_t*>(t.data);
    // Validate the table once so routing never indexes out of range.
    for (int64_t i = 0; b.touch && i < static_cast<int64_t>(c.vocab) * c.n_experts_used; ++i) {
      int32_t e;
      std::memcpy(&e, t.data + 4 * i, 4);
      if (e < 0 || e >= c.n_experts) bad(b.f, "tensor " + t.name + " holds an invalid expert id");
    }
  } else {
    std::string bias = p + "exp_probs_b.bias";
    if (mtp || b.f.find_tensor(bias)) L.router_bias = b.vec(bias, {u(c.n_experts)});
  }
  L.gate_exps = b.experts(p + "ffn_gate_exps.weight", D, c.moe_inter_dim, c.n_experts);
  L.up_exps = b.experts(p + "ffn_up_exps.weight", D, c.moe_inter_dim, c.n_experts);
  L.down_exps = b.experts(p + "ffn_down_exps.weight", c.moe_inter_dim, D, c.n_experts);
  if (L.gate_exps.type != L.up_exps.type)
    bad(b.f, p + "ffn_gate_exps and ffn_up_exps must share a type");
  if (c.n_shared_experts > 0) {
    L.sh_gate = b.mat(p + "ffn_gate_shexp.weight", D, c.moe_inter_dim);
    L.sh_up = b.mat(p + "ffn_up_shexp.weight", D, c.moe_inter_dim);
    L.sh_down = b.mat(p + "ffn_down_shexp.weight", c.moe_inter_dim, D);
  }
}

void bind_head(const Binder& b, const ModelConfig& c, const std::string& fn, const std::string& scale,
               const std::string& base, const std::string& norm, HeadWeights& h) {
  h.hc_fn = b.mat(fn, static_cast<int64_t>(c.hc) * c.dim, c.hc);
  h.hc_scale = b.vec(scale, {1});
  h.hc_base = b.vec(base, {static_cast<uint64_t>(c.hc)});
  h.norm = b.vec(norm, {static_cast<uint64_t>(c.dim)});
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
    w->token_embd = b.mat("token_embd.weight", c.dim, c.vocab);
    w->output = b.mat("output.weight", c.dim, c.vocab);
    bind_head(b, c, "output_hc_fn.weight", "output_hc_scale.weight", "output_hc_base.weight",
              "output_norm.weight", w->head);
    w->layers.resize(c.n_layers);
    for (int il = 0; il < c.n_layers; ++il)
      bind_layer(Binder{f, il >= first_layer && il < end_layer}, c, "blk." + std::to_string(il) + ".", c.compress_ratios[il], il < c.n_hash_layers,
                 c.swiglu_limit[il], false, w->layers[il]);

    const gguf::File* mf = nullptr;
    if (!mtp_path.empty()) {
      w->mtp_file = open_file(mtp_path);
      mf = w->mtp_file.get();
    } else if (f.find_tensor("mtp.0.e_proj.weight")) {
      mf = &f;
    }
    if (mf) {
      Binder mb{*mf};
      MtpWeights& m = w->mtp;
      bind_layer(mb, c, "mtp.0.", c.compress_ratios[c.n_layers], false, c.swiglu_limit[c.n_layers],
                 true, m.block);
      m.e_proj = mb.mat("mtp.0.e_proj.weight", c.dim, c.dim);
      m.h_proj = mb.mat("mtp.0.h_proj.weight", c.dim, c.dim);
      m.enorm = mb.vec("mtp.0.enorm.weight", {static_cast<uint64_t>(c.dim)});
      m.hnorm = mb.vec("mtp.0.hnorm.weight", {static_cast<uint64_t>(c.dim)});
      bind_head(mb, c, "mtp.0.hc_head_fn.weight", "mtp.0.hc_head_scale.weight",
                "mtp.0.hc_head_base.weight", "mtp.0.norm.weight", m.head);
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
