#include "model/catalogue.h"

#include <array>
#include <stdexcept>

namespace ds4::model {

std::string_view role_name(Role r) {
  switch (r) {
    case Role::Embedding: return "embedding";
    case Role::OutputHead: return "output head";
    case Role::HcFn: return "hc fn";
    case Role::HcScale: return "hc scale";
    case Role::HcBase: return "hc base";
    case Role::Norm: return "norm";
    case Role::AttnProj: return "attention projection";
    case Role::AttnSink: return "attention sink";
    case Role::CompressorApe: return "compressor ape";
    case Role::CompressorProj: return "compressor projection";
    case Role::IndexerProj: return "indexer projection";
    case Role::Router: return "router";
    case Role::RouterBias: return "router bias";
    case Role::Tid2eid: return "hash table";
    case Role::ExpertGate: return "expert gate";
    case Role::ExpertUp: return "expert up";
    case Role::ExpertDown: return "expert down";
    case Role::SharedExpert: return "shared expert";
    case Role::MtpProj: return "mtp projection";
  }
  return "?";
}

bool is_expert(Role r) { return r == Role::ExpertGate || r == Role::ExpertUp || r == Role::ExpertDown; }

uint64_t TensorSpec::n_elements() const {
  uint64_t n = 1;
  for (uint64_t d : dims) n *= d;
  return n;
}

uint64_t TensorSpec::n_rows() const { return dims.empty() ? 1 : n_elements() / dims[0]; }

std::vector<uint64_t> TensorSpec::hf_shape() const {
  std::vector<uint64_t> s(dims.rbegin(), dims.rend());
  if (is_expert(role)) s.erase(s.begin());  // one expert's [out, in]
  return s;
}

std::string TensorSpec::expert_hf_name(uint32_t e) const {
  std::string s = hf_name;
  auto pos = s.find("{e}");
  if (pos != std::string::npos) s.replace(pos, 3, std::to_string(e));
  return s;
}

namespace {

// GGUF name and official name: whole names for the model's own tensors, suffixes after the
// block prefix ("blk.N." / "layers.N.", or "mtp.N." in both) for the others.
struct Names {
  Tensor id;
  std::string_view gguf;
  std::string_view hf;
  Role role;
};

constexpr std::array kNames{
    Names{Tensor::TokenEmbd, "token_embd.weight", "embed.weight", Role::Embedding},
    Names{Tensor::OutputHcFn, "output_hc_fn.weight", "hc_head_fn", Role::HcFn},
    Names{Tensor::OutputHcScale, "output_hc_scale.weight", "hc_head_scale", Role::HcScale},
    Names{Tensor::OutputHcBase, "output_hc_base.weight", "hc_head_base", Role::HcBase},
    Names{Tensor::OutputNorm, "output_norm.weight", "norm.weight", Role::Norm},
    Names{Tensor::Output, "output.weight", "head.weight", Role::OutputHead},
    Names{Tensor::HcAttnFn, "hc_attn_fn.weight", "hc_attn_fn", Role::HcFn},
    Names{Tensor::HcAttnScale, "hc_attn_scale.weight", "hc_attn_scale", Role::HcScale},
    Names{Tensor::HcAttnBase, "hc_attn_base.weight", "hc_attn_base", Role::HcBase},
    Names{Tensor::AttnNorm, "attn_norm.weight", "attn_norm.weight", Role::Norm},
    Names{Tensor::AttnQA, "attn_q_a.weight", "attn.wq_a.weight", Role::AttnProj},
    Names{Tensor::AttnQANorm, "attn_q_a_norm.weight", "attn.q_norm.weight", Role::Norm},
    Names{Tensor::AttnQB, "attn_q_b.weight", "attn.wq_b.weight", Role::AttnProj},
    Names{Tensor::AttnKv, "attn_kv.weight", "attn.wkv.weight", Role::AttnProj},
    Names{Tensor::AttnKvNorm, "attn_kv_a_norm.weight", "attn.kv_norm.weight", Role::Norm},
    Names{Tensor::AttnSinks, "attn_sinks.weight", "attn.attn_sink", Role::AttnSink},
    Names{Tensor::AttnOutputA, "attn_output_a.weight", "attn.wo_a.weight", Role::AttnProj},
    Names{Tensor::AttnOutputB, "attn_output_b.weight", "attn.wo_b.weight", Role::AttnProj},
    Names{Tensor::AttnCompressorApe, "attn_compressor_ape.weight", "attn.compressor.ape", Role::CompressorApe},
    Names{Tensor::AttnCompressorKv, "attn_compressor_kv.weight", "attn.compressor.wkv.weight", Role::CompressorProj},
    Names{Tensor::AttnCompressorGate, "attn_compressor_gate.weight", "attn.compressor.wgate.weight",
          Role::CompressorProj},
    Names{Tensor::AttnCompressorNorm, "attn_compressor_norm.weight", "attn.compressor.norm.weight", Role::Norm},
    Names{Tensor::IndexerQB, "indexer.attn_q_b.weight", "attn.indexer.wq_b.weight", Role::IndexerProj},
    Names{Tensor::IndexerProj, "indexer.proj.weight", "attn.indexer.weights_proj.weight", Role::IndexerProj},
    Names{Tensor::IndexerCompressorApe, "indexer_compressor_ape.weight", "attn.indexer.compressor.ape",
          Role::CompressorApe},
    Names{Tensor::IndexerCompressorKv, "indexer_compressor_kv.weight", "attn.indexer.compressor.wkv.weight",
          Role::CompressorProj},
    Names{Tensor::IndexerCompressorGate, "indexer_compressor_gate.weight", "attn.indexer.compressor.wgate.weight",
          Role::CompressorProj},
    Names{Tensor::IndexerCompressorNorm, "indexer_compressor_norm.weight", "attn.indexer.compressor.norm.weight",
          Role::Norm},
    Names{Tensor::HcFfnFn, "hc_ffn_fn.weight", "hc_ffn_fn", Role::HcFn},
    Names{Tensor::HcFfnScale, "hc_ffn_scale.weight", "hc_ffn_scale", Role::HcScale},
    Names{Tensor::HcFfnBase, "hc_ffn_base.weight", "hc_ffn_base", Role::HcBase},
    Names{Tensor::FfnNorm, "ffn_norm.weight", "ffn_norm.weight", Role::Norm},
    Names{Tensor::Router, "ffn_gate_inp.weight", "ffn.gate.weight", Role::Router},
    Names{Tensor::RouterTid2eid, "ffn_gate_tid2eid.weight", "ffn.gate.tid2eid", Role::Tid2eid},
    Names{Tensor::RouterBias, "exp_probs_b.bias", "ffn.gate.bias", Role::RouterBias},
    Names{Tensor::ExpertsGate, "ffn_gate_exps.weight", "ffn.experts.{e}.w1.weight", Role::ExpertGate},
    Names{Tensor::ExpertsUp, "ffn_up_exps.weight", "ffn.experts.{e}.w3.weight", Role::ExpertUp},
    Names{Tensor::ExpertsDown, "ffn_down_exps.weight", "ffn.experts.{e}.w2.weight", Role::ExpertDown},
    Names{Tensor::SharedGate, "ffn_gate_shexp.weight", "ffn.shared_experts.w1.weight", Role::SharedExpert},
    Names{Tensor::SharedUp, "ffn_up_shexp.weight", "ffn.shared_experts.w3.weight", Role::SharedExpert},
    Names{Tensor::SharedDown, "ffn_down_shexp.weight", "ffn.shared_experts.w2.weight", Role::SharedExpert},
    Names{Tensor::MtpEProj, "e_proj.weight", "e_proj.weight", Role::MtpProj},
    Names{Tensor::MtpHProj, "h_proj.weight", "h_proj.weight", Role::MtpProj},
    Names{Tensor::MtpENorm, "enorm.weight", "enorm.weight", Role::Norm},
    Names{Tensor::MtpHNorm, "hnorm.weight", "hnorm.weight", Role::Norm},
    Names{Tensor::MtpNorm, "norm.weight", "norm.weight", Role::Norm},
    Names{Tensor::MtpHcHeadFn, "hc_head_fn.weight", "hc_head_fn", Role::HcFn},
    Names{Tensor::MtpHcHeadScale, "hc_head_scale.weight", "hc_head_scale", Role::HcScale},
    Names{Tensor::MtpHcHeadBase, "hc_head_base.weight", "hc_head_base", Role::HcBase},
};

constexpr bool table_in_enum_order() {
  for (size_t i = 0; i < kNames.size(); ++i)
    if (static_cast<size_t>(kNames[i].id) != i) return false;
  return static_cast<size_t>(Tensor::MtpHcHeadBase) + 1 == kNames.size();
}
static_assert(table_in_enum_order(), "kNames must list every Tensor in enum order");

const Names& names_of(Tensor t) { return kNames[static_cast<size_t>(t)]; }

bool model_tensor(Tensor t) { return t <= Tensor::Output; }
bool mtp_only(Tensor t) { return t >= Tensor::MtpEProj; }

std::string prefix_of(int block, bool mtp, bool official) {
  return (mtp ? "mtp." : official ? "layers." : "blk.") + std::to_string(block) + ".";
}

// Dims of tensor t in GGUF order, for a block of compression ratio `ratio` (0 elsewhere).
std::vector<uint64_t> dims_of(const ModelConfig& c, Tensor t, int ratio) {
  const auto u = [](int64_t v) { return static_cast<uint64_t>(v); };
  const uint64_t D = u(c.dim), H = u(c.n_heads), Dh = u(c.head_dim), hc = u(c.hc), mix = u(c.hc_mix());
  const uint64_t hcD = hc * D, G = u(c.o_groups), E = u(c.n_experts), F = u(c.moe_inter_dim);
  const uint64_t Fs = F * u(c.n_shared_experts), q = u(c.q_lora_rank), o = u(c.o_lora_rank);
  const uint64_t nI = u(c.index_heads), dI = u(c.index_head_dim), r = u(ratio);
  const uint64_t cw = (ratio == 4 ? 2 : 1) * Dh;  // overlap doubles the compressor width
  const uint64_t iw = 2 * dI;
  switch (t) {
    case Tensor::TokenEmbd: return {D, u(c.vocab)};
    case Tensor::OutputHcFn: return {hcD, hc};
    case Tensor::OutputHcScale: return {1};
    case Tensor::OutputHcBase: return {hc};
    case Tensor::OutputNorm: return {D};
    case Tensor::Output: return {D, u(c.vocab)};
    case Tensor::HcAttnFn: return {hcD, mix};
    case Tensor::HcAttnScale: return {3};
    case Tensor::HcAttnBase: return {mix};
    case Tensor::AttnNorm: return {D};
    case Tensor::AttnQA: return {D, q};
    case Tensor::AttnQANorm: return {q};
    case Tensor::AttnQB: return {q, H * Dh};
    case Tensor::AttnKv: return {D, Dh};
    case Tensor::AttnKvNorm: return {Dh};
    case Tensor::AttnSinks: return {H};
    case Tensor::AttnOutputA: return {H * Dh / G, G * o};
    case Tensor::AttnOutputB: return {G * o, D};
    case Tensor::AttnCompressorApe: return {cw, r};
    case Tensor::AttnCompressorKv: return {D, cw};
    case Tensor::AttnCompressorGate: return {D, cw};
    case Tensor::AttnCompressorNorm: return {Dh};
    case Tensor::IndexerQB: return {q, nI * dI};
    case Tensor::IndexerProj: return {D, nI};
    case Tensor::IndexerCompressorApe: return {iw, r};
    case Tensor::IndexerCompressorKv: return {D, iw};
    case Tensor::IndexerCompressorGate: return {D, iw};
    case Tensor::IndexerCompressorNorm: return {dI};
    case Tensor::HcFfnFn: return {hcD, mix};
    case Tensor::HcFfnScale: return {3};
    case Tensor::HcFfnBase: return {mix};
    case Tensor::FfnNorm: return {D};
    case Tensor::Router: return {D, E};
    case Tensor::RouterTid2eid: return {u(c.n_experts_used), u(c.vocab)};
    case Tensor::RouterBias: return {E};
    case Tensor::ExpertsGate: return {D, F, E};
    case Tensor::ExpertsUp: return {D, F, E};
    case Tensor::ExpertsDown: return {F, D, E};
    case Tensor::SharedGate: return {D, Fs};
    case Tensor::SharedUp: return {D, Fs};
    case Tensor::SharedDown: return {Fs, D};
    case Tensor::MtpEProj: return {D, D};
    case Tensor::MtpHProj: return {D, D};
    case Tensor::MtpENorm: return {D};
    case Tensor::MtpHNorm: return {D};
    case Tensor::MtpNorm: return {D};
    case Tensor::MtpHcHeadFn: return {hcD, hc};
    case Tensor::MtpHcHeadScale: return {1};
    case Tensor::MtpHcHeadBase: return {hc};
  }
  throw std::logic_error("dims_of: unknown tensor");
}

// Whether a block of this kind holds tensor t.
bool in_block(Tensor t, int ratio, bool hash, bool mtp) {
  if (model_tensor(t)) return false;
  if (mtp_only(t)) return mtp;
  if (t >= Tensor::AttnCompressorApe && t <= Tensor::AttnCompressorNorm) return ratio != 0;
  if (t >= Tensor::IndexerQB && t <= Tensor::IndexerCompressorNorm) return ratio == 4;
  if (t == Tensor::RouterTid2eid) return hash;
  if (t == Tensor::RouterBias) return !hash;
  return true;
}

TensorSpec make_spec(const ModelConfig& c, Tensor t, int ratio, const std::string& gguf_prefix,
                     const std::string& hf_prefix, bool mtp) {
  const Names& n = names_of(t);
  TensorSpec s;
  s.id = t;
  s.gguf_name = gguf_prefix + std::string(n.gguf);
  s.dims = dims_of(c, t, ratio);
  s.role = n.role;
  s.hf_name = hf_prefix + std::string(n.hf);
  s.mtp = mtp;
  if (is_expert(s.role)) s.n_experts = static_cast<uint32_t>(s.dims[2]);
  return s;
}

}  // namespace

std::vector<TensorSpec> head_tensors(const ModelConfig& c) {
  std::vector<TensorSpec> out;
  for (const Names& n : kNames)
    if (model_tensor(n.id)) out.push_back(make_spec(c, n.id, 0, "", "", false));
  return out;
}

std::vector<TensorSpec> block_tensors(const ModelConfig& c, int block, bool mtp) {
  const int ratio = c.ratio(mtp ? c.n_layers + block : block);
  const bool hash = !mtp && block < c.n_hash_layers;
  const std::string g = prefix_of(block, mtp, false), h = prefix_of(block, mtp, true);
  std::vector<TensorSpec> out;
  for (const Names& n : kNames)
    if (in_block(n.id, ratio, hash, mtp)) out.push_back(make_spec(c, n.id, ratio, g, h, mtp));
  return out;
}

std::vector<TensorSpec> build_catalogue(const ModelConfig& c, bool include_mtp) {
  std::vector<TensorSpec> out = head_tensors(c);
  auto append = [&](std::vector<TensorSpec> v) {
    for (auto& t : v) out.push_back(std::move(t));
  };
  for (int il = 0; il < c.n_layers; ++il) append(block_tensors(c, il, false));
  if (include_mtp)
    for (int j = 0; j < c.n_mtp_layers; ++j) append(block_tensors(c, j, true));
  return out;
}

std::string tensor_name(Tensor t, int block, bool mtp) {
  const std::string_view n = names_of(t).gguf;
  if (model_tensor(t) || block < 0) return std::string(n);
  return prefix_of(block, mtp, false) + std::string(n);
}

std::string block_prefix(int block, bool mtp) { return prefix_of(block, mtp, false); }

}  // namespace ds4::model
