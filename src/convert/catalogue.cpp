#include "convert/catalogue.h"

#include <algorithm>

#include "convert/safetensors.h"

namespace ds4::convert {

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

class Builder {
 public:
  explicit Builder(const ModelConfig& c) : c_(c) {}
  std::vector<TensorSpec> out;

  void add(std::string gguf, std::vector<uint64_t> dims, Role role, std::string hf, bool mtp = false) {
    TensorSpec t;
    t.gguf_name = std::move(gguf);
    t.dims = std::move(dims);
    t.role = role;
    t.hf_name = std::move(hf);
    t.mtp = mtp;
    if (is_expert(role)) t.n_experts = static_cast<uint32_t>(t.dims[2]);
    out.push_back(std::move(t));
  }

  // One transformer block; g/h are the GGUF and official prefixes.
  void block(const std::string& g, const std::string& h, uint32_t ratio, bool hash, bool mtp) {
    const uint64_t D = c_.dim, H = c_.n_heads, Dh = c_.head_dim, mix = c_.hc_mix(), hcD = c_.hc_mult * c_.dim;
    const uint64_t G = c_.o_groups, E = c_.n_routed_experts, F = c_.moe_inter_dim;
    const uint64_t Fs = static_cast<uint64_t>(c_.moe_inter_dim) * c_.n_shared_experts;
    add(g + "hc_attn_fn.weight", {hcD, mix}, Role::HcFn, h + "hc_attn_fn", mtp);
    add(g + "hc_attn_scale.weight", {3}, Role::HcScale, h + "hc_attn_scale", mtp);
    add(g + "hc_attn_base.weight", {mix}, Role::HcBase, h + "hc_attn_base", mtp);
    add(g + "attn_norm.weight", {D}, Role::Norm, h + "attn_norm.weight", mtp);
    add(g + "attn_q_a.weight", {D, c_.q_lora_rank}, Role::AttnProj, h + "attn.wq_a.weight", mtp);
    add(g + "attn_q_a_norm.weight", {c_.q_lora_rank}, Role::Norm, h + "attn.q_norm.weight", mtp);
    add(g + "attn_q_b.weight", {c_.q_lora_rank, H * Dh}, Role::AttnProj, h + "attn.wq_b.weight", mtp);
    add(g + "attn_kv.weight", {D, Dh}, Role::AttnProj, h + "attn.wkv.weight", mtp);
    add(g + "attn_kv_a_norm.weight", {Dh}, Role::Norm, h + "attn.kv_norm.weight", mtp);
    add(g + "attn_sinks.weight", {H}, Role::AttnSink, h + "attn.attn_sink", mtp);
    add(g + "attn_output_a.weight", {H * Dh / G, G * c_.o_lora_rank}, Role::AttnProj, h + "attn.wo_a.weight", mtp);
    add(g + "attn_output_b.weight", {G * c_.o_lora_rank, D}, Role::AttnProj, h + "attn.wo_b.weight", mtp);
    if (ratio != 0) {
      const uint64_t cw = (ratio == 4 ? 2 : 1) * Dh;  // overlap doubles the compressor width
      add(g + "attn_compressor_ape.weight", {cw, ratio}, Role::CompressorApe, h + "attn.compressor.ape", mtp);
      add(g + "attn_compressor_kv.weight", {D, cw}, Role::CompressorProj, h + "attn.compressor.wkv.weight", mtp);
      add(g + "attn_compressor_gate.weight", {D, cw}, Role::CompressorProj, h + "attn.compressor.wgate.weight", mtp);
      add(g + "attn_compressor_norm.weight", {Dh}, Role::Norm, h + "attn.compressor.norm.weight", mtp);
    }
    if (ratio == 4) {
      const uint64_t nI = c_.index_n_heads, dI = c_.index_head_dim, iw = 2 * dI;
      add(g + "indexer.attn_q_b.weight", {c_.q_lora_rank, nI * dI}, Role::IndexerProj, h + "attn.indexer.wq_b.weight", mtp);
      add(g + "indexer.proj.weight", {D, nI}, Role::IndexerProj, h + "attn.indexer.weights_proj.weight", mtp);
      add(g + "indexer_compressor_ape.weight", {iw, ratio}, Role::CompressorApe, h + "attn.indexer.compressor.ape", mtp);
      add(g + "indexer_compressor_kv.weight", {D, iw}, Role::CompressorProj, h + "attn.indexer.compressor.wkv.weight", mtp);
      add(g + "indexer_compressor_gate.weight", {D, iw}, Role::CompressorProj, h + "attn.indexer.compressor.wgate.weight", mtp);
      add(g + "indexer_compressor_norm.weight", {dI}, Role::Norm, h + "attn.indexer.compressor.norm.weight", mtp);
    }
    add(g + "hc_ffn_fn.weight", {hcD, mix}, Role::HcFn, h + "hc_ffn_fn", mtp);
    add(g + "hc_ffn_scale.weight", {3}, Role::HcScale, h + "hc_ffn_scale", mtp);
    add(g + "hc_ffn_base.weight", {mix}, Role::HcBase, h + "hc_ffn_base", mtp);
    add(g + "ffn_norm.weight", {D}, Role::Norm, h + "ffn_norm.weight", mtp);
    add(g + "ffn_gate_inp.weight", {D, E}, Role::Router, h + "ffn.gate.weight", mtp);
    if (hash)
      add(g + "ffn_gate_tid2eid.weight", {c_.n_activated_experts, c_.vocab_size}, Role::Tid2eid, h + "ffn.gate.tid2eid", mtp);
    else
      add(g + "exp_probs_b.bias", {E}, Role::RouterBias, h + "ffn.gate.bias", mtp);
    add(g + "ffn_gate_exps.weight", {D, F, E}, Role::ExpertGate, h + "ffn.experts.{e}.w1.weight", mtp);
    add(g + "ffn_up_exps.weight", {D, F, E}, Role::ExpertUp, h + "ffn.experts.{e}.w3.weight", mtp);
    add(g + "ffn_down_exps.weight", {F, D, E}, Role::ExpertDown, h + "ffn.experts.{e}.w2.weight", mtp);
    add(g + "ffn_gate_shexp.weight", {D, Fs}, Role::SharedExpert, h + "ffn.shared_experts.w1.weight", mtp);
    add(g + "ffn_up_shexp.weight", {D, Fs}, Role::SharedExpert, h + "ffn.shared_experts.w3.weight", mtp);
    add(g + "ffn_down_shexp.weight", {Fs, D}, Role::SharedExpert, h + "ffn.shared_experts.w2.weight", mtp);
  }

 private:
  const ModelConfig& c_;
};

}  // namespace

std::vector<TensorSpec> build_catalogue(const ModelConfig& c, bool include_mtp) {
  Builder b(c);
  const uint64_t D = c.dim, hcD = c.hc_mult * c.dim;
  b.add("token_embd.weight", {D, c.vocab_size}, Role::Embedding, "embed.weight");
  b.add("output_hc_fn.weight", {hcD, c.hc_mult}, Role::HcFn, "hc_head_fn");
  b.add("output_hc_scale.weight", {1}, Role::HcScale, "hc_head_scale");
  b.add("output_hc_base.weight", {c.hc_mult}, Role::HcBase, "hc_head_base");
  b.add("output_norm.weight", {D}, Role::Norm, "norm.weight");
  b.add("output.weight", {D, c.vocab_size}, Role::OutputHead, "head.weight");
  for (uint32_t il = 0; il < c.n_layers; ++il) {
    const std::string i = std::to_string(il);
    b.block("blk." + i + ".", "layers." + i + ".", c.ratio(il), il < c.n_hash_layers, false);
  }
  if (include_mtp) {
    for (uint32_t j = 0; j < c.n_mtp_layers; ++j) {
      const std::string p = "mtp." + std::to_string(j) + ".";
      b.block(p, p, c.ratio(c.n_layers + j), false, true);
      b.add(p + "e_proj.weight", {D, D}, Role::MtpProj, p + "e_proj.weight", true);
      b.add(p + "h_proj.weight", {D, D}, Role::MtpProj, p + "h_proj.weight", true);
      b.add(p + "enorm.weight", {D}, Role::Norm, p + "enorm.weight", true);
      b.add(p + "hnorm.weight", {D}, Role::Norm, p + "hnorm.weight", true);
      b.add(p + "norm.weight", {D}, Role::Norm, p + "norm.weight", true);
      b.add(p + "hc_head_fn.weight", {hcD, c.hc_mult}, Role::HcFn, p + "hc_head_fn", true);
      b.add(p + "hc_head_scale.weight", {1}, Role::HcScale, p + "hc_head_scale", true);
      b.add(p + "hc_head_base.weight", {c.hc_mult}, Role::HcBase, p + "hc_head_base", true);
    }
  }
  return std::move(b.out);
}

std::optional<Recipe> parse_recipe(std::string_view s) {
  if (s == "f32") return Recipe::F32;
  if (s == "q8") return Recipe::Q8;
  if (s == "q2") return Recipe::Q2;
  if (s == "q4") return Recipe::Q4;
  return std::nullopt;
}

std::string_view recipe_name(Recipe r) {
  switch (r) {
    case Recipe::F32: return "f32";
    case Recipe::Q8: return "q8";
    case Recipe::Q2: return "q2";
    case Recipe::Q4: return "q4";
  }
  return "?";
}

quant::Type recipe_type(Recipe r, const TensorSpec& t) {
  using quant::Type;
  if (t.role == Role::Tid2eid) return Type::I32;
  if (r == Recipe::F32) return Type::F32;
  switch (t.role) {
    case Role::Embedding:
    case Role::HcFn:
    case Role::CompressorApe:
    case Role::CompressorProj:
    case Role::IndexerProj:
    case Role::Router:
      return Type::F16;
    case Role::HcScale:
    case Role::HcBase:
    case Role::Norm:
    case Role::AttnSink:
    case Role::RouterBias:
      return Type::F32;
    case Role::OutputHead:
    case Role::AttnProj:
    case Role::SharedExpert:
    case Role::MtpProj:
      return Type::Q8_0;
    case Role::ExpertGate:
    case Role::ExpertUp:
      return r == Recipe::Q8 ? Type::Q8_0 : r == Recipe::Q2 ? Type::IQ2_XXS : Type::Q4_K;
    case Role::ExpertDown:
      return r == Recipe::Q8 ? Type::Q8_0 : r == Recipe::Q2 ? Type::Q2_K : Type::Q4_K;
    case Role::Tid2eid:
      return Type::I32;
  }
  return Type::F32;
}

std::vector<PlannedTensor> plan_tensors(const std::vector<TensorSpec>& cat, Recipe r, bool f16_fallback,
                                        std::vector<std::string>* fallbacks) {
  std::vector<PlannedTensor> out;
  out.reserve(cat.size());
  for (const auto& t : cat) {
    quant::Type type = recipe_type(r, t);
    auto rb = quant::row_bytes(type, t.row_length());
    if (!rb) {
      const auto info = quant::type_info(static_cast<uint32_t>(type));
      const std::string why = "tensor " + t.gguf_name + ": row length " + std::to_string(t.row_length()) +
                              " is not a multiple of the " + std::string(quant::type_name(type)) + " block (" +
                              std::to_string(info ? info->block_elems : 0) + " values) required by recipe " +
                              std::string(recipe_name(r));
      if (!f16_fallback) throw ConvertError(why + " (use --f16-fallback to store such tensors as F16)");
      if (fallbacks) fallbacks->push_back(t.gguf_name + " (" + std::string(quant::type_name(type)) + " -> F16)");
      type = quant::Type::F16;
      rb = quant::row_bytes(type, t.row_length());
    }
    out.push_back({t, type, *rb * t.n_rows()});
  }
  return out;
}

}  // namespace ds4::convert
