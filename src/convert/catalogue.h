// The GGUF tensor catalogue of a DeepSeek V4 model (docs/gguf.md), derived from a config:
// GGUF name, GGUF dims, the tensor's role (which decides its type under a recipe) and where it
// comes from in an official checkpoint.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "convert/model_config.h"
#include "quant/types.h"

namespace ds4::convert {

enum class Role {
  Embedding,       // token_embd
  OutputHead,      // output.weight
  HcFn,            // hc_*_fn, output_hc_fn, mtp hc_head_fn
  HcScale,
  HcBase,
  Norm,            // every RMSNorm weight
  AttnProj,        // attn_q_a, attn_q_b, attn_kv, attn_output_a/b
  AttnSink,
  CompressorApe,   // attn and indexer compressor APE
  CompressorProj,  // attn and indexer compressor kv/gate
  IndexerProj,     // indexer.attn_q_b, indexer.proj
  Router,          // ffn_gate_inp
  RouterBias,      // exp_probs_b.bias
  Tid2eid,         // ffn_gate_tid2eid (I32)
  ExpertGate,
  ExpertUp,
  ExpertDown,
  SharedExpert,
  MtpProj,         // mtp e_proj / h_proj
};
std::string_view role_name(Role r);
bool is_expert(Role r);

struct TensorSpec {
  std::string gguf_name;
  std::vector<uint64_t> dims;  // GGUF order, ne0 first
  Role role = Role::Norm;
  std::string hf_name;         // official name; for experts the name with "{e}" for the expert
  uint32_t n_experts = 0;      // experts: dims[2]
  bool mtp = false;            // belongs to an MTP block (mtp.N.)

  uint64_t n_elements() const;
  // Official shape of the source (one expert's for expert tensors): reversed GGUF dims.
  std::vector<uint64_t> hf_shape() const;
  std::string expert_hf_name(uint32_t e) const;
  // fan_in for a linear weight: ne0.
  uint64_t row_length() const { return dims.empty() ? 1 : dims[0]; }
  uint64_t n_rows() const;  // all rows (experts included)
};

std::vector<TensorSpec> build_catalogue(const ModelConfig& c, bool include_mtp);

// ---- recipes ----------------------------------------------------------------------------
enum class Recipe { F32, Q8, Q2, Q4 };
std::optional<Recipe> parse_recipe(std::string_view s);
std::string_view recipe_name(Recipe r);

// The GGUF type a tensor gets under a recipe (before any row-fit check).
quant::Type recipe_type(Recipe r, const TensorSpec& t);

struct PlannedTensor {
  TensorSpec spec;
  quant::Type type;
  uint64_t nbytes;
};

// Types every tensor; a row length that is not a whole number of blocks of the chosen type is
// an error naming the tensor, unless f16_fallback (then that tensor becomes F16, reported in
// `fallbacks`).
std::vector<PlannedTensor> plan_tensors(const std::vector<TensorSpec>& cat, Recipe r, bool f16_fallback,
                                        std::vector<std::string>* fallbacks = nullptr);

}  // namespace ds4::convert
