// The GGUF tensor catalogue of a DeepSeek V4 model, derived from its hyperparameters: every
// tensor's GGUF name, dims, role and the name it has in an official checkpoint. The one
// definition of the tensor schema: the loader binds weights by it (weights.cpp) and the
// converter and ds4-quantize write files by it (convert/).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "model/hparams.h"

namespace ds4::model {

// What a tensor is for; the converter's recipes type tensors by role.
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

// Which tensor of the model (or of a block) an entry is. Within the head and within a block
// the order is the order the converter writes them in.
enum class Tensor {
  // the model's own
  TokenEmbd,
  OutputHcFn,
  OutputHcScale,
  OutputHcBase,
  OutputNorm,
  Output,
  // every block (main layers and MTP blocks)
  HcAttnFn,
  HcAttnScale,
  HcAttnBase,
  AttnNorm,
  AttnQA,
  AttnQANorm,
  AttnQB,
  AttnKv,
  AttnKvNorm,
  AttnSinks,
  AttnOutputA,
  AttnOutputB,
  AttnCompressorApe,    // ratio != 0
  AttnCompressorKv,
  AttnCompressorGate,
  AttnCompressorNorm,
  IndexerQB,            // ratio == 4
  IndexerProj,
  IndexerCompressorApe,
  IndexerCompressorKv,
  IndexerCompressorGate,
  IndexerCompressorNorm,
  HcFfnFn,
  HcFfnScale,
  HcFfnBase,
  FfnNorm,
  Router,
  RouterTid2eid,        // hash layers
  RouterBias,           // the other layers
  ExpertsGate,
  ExpertsUp,
  ExpertsDown,
  SharedGate,
  SharedUp,
  SharedDown,
  // MTP blocks only
  MtpEProj,
  MtpHProj,
  MtpENorm,
  MtpHNorm,
  MtpNorm,
  MtpHcHeadFn,
  MtpHcHeadScale,
  MtpHcHeadBase,
};

struct TensorSpec {
  Tensor id = Tensor::TokenEmbd;
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

// The model's own tensors (embedding, output head and its HC), in file order.
std::vector<TensorSpec> head_tensors(const ModelConfig& c);
// The tensors of main layer `block` (mtp false) or of MTP block `block` (mtp true, its extras
// included), in file order. Which are present follows the block's compression ratio and
// whether it is a hash-routed layer.
std::vector<TensorSpec> block_tensors(const ModelConfig& c, int block, bool mtp);
// Every tensor of a file, in the order the converter writes them.
std::vector<TensorSpec> build_catalogue(const ModelConfig& c, bool include_mtp);
// GGUF name of a tensor of the model (block < 0) or of a main layer / MTP block.
std::string tensor_name(Tensor t, int block = -1, bool mtp = false);
// GGUF name prefix of a main layer ("blk.N.") or an MTP block ("mtp.N.").
std::string block_prefix(int block, bool mtp);

}  // namespace ds4::model
