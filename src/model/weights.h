// Binding of GGUF tensors to the model's weights, by the tensor catalogue (catalogue.h,
// docs/gguf.md). Matrices stay in the mmap in their stored format; only small vectors
// (norms, biases, HC scale/base, APE) are widened.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "ds4/engine.h"
#include "gguf/gguf.h"
#include "model/tensor.h"

namespace ds4::model {

struct CompressorWeights {
  MatView kv, gate;            // in = dim, out = c*d
  std::vector<float> ape;      // ratio rows of c*d
  std::vector<float> norm;     // d
};

struct LayerWeights {
  std::string prefix;
  int ratio = 0;
  bool hash = false;
  float swiglu_limit = 0.f;

  MatView hc_attn_fn;
  std::vector<float> hc_attn_scale, hc_attn_base;
  std::vector<float> attn_norm;
  MatView q_a;
  std::vector<float> q_a_norm;
  MatView q_b;
  MatView kv;
  std::vector<float> kv_norm;
  std::vector<float> sinks;
  MatView out_a, out_b;

  CompressorWeights comp;      // ratio != 0
  CompressorWeights icomp;     // ratio == 4
  MatView idx_q_b, idx_proj;   // ratio == 4

  MatView hc_ffn_fn;
  std::vector<float> hc_ffn_scale, hc_ffn_base;
  std::vector<float> ffn_norm;
  MatView router;
  std::vector<float> router_bias;  // empty on hash layers
  const int32_t* tid2eid = nullptr; // [vocab][k] on hash layers
  ExpertsView gate_exps, up_exps, down_exps;
  MatView sh_gate, sh_up, sh_down;  // absent when n_shared_experts == 0
};

struct HeadWeights {
  MatView hc_fn;                 // in = hc*dim, out = hc
  std::vector<float> hc_scale;   // 1
  std::vector<float> hc_base;    // hc
  std::vector<float> norm;       // dim
};

struct MtpWeights {
  LayerWeights block;
  MatView e_proj, h_proj;
  std::vector<float> enorm, hnorm;
  HeadWeights head;
};

struct Weights {
  std::unique_ptr<gguf::File> file;
  std::unique_ptr<gguf::File> mtp_file;  // sidecar, if any
  ModelConfig config;
  MatView token_embd;   // in = dim, out = vocab
  HeadWeights head;
  MatView output;       // in = dim, out = vocab
  std::vector<LayerWeights> layers;
  bool has_mtp = false;
  MtpWeights mtp;
  // The layers this process evaluates (a pipeline stage, docs/mpi.md); the others are bound
  // as views only (their small vectors empty, their data never read).
  int first_layer = 0;
  int end_layer = 0;
  bool holds_layer(int il) const { return il >= first_layer && il < end_layer; }
  // Reads one byte of every page of the tensors this process evaluates with (its layers,
  // the embedding when it holds layer 0, the output head when it holds the last), so they
  // are resident before the first token. Returns the bytes covered.
  uint64_t warm() const;

  // Test hook (backend::Backend::use_f32_activations): sets f32_activations on every matrix
  // and expert stack, the MTP block's included.
  void use_f32_activations();

  // Re-encodes every IQ2_XXS matrix and expert stack in place in the mapping
  // (quant::iq2_xxs_repack; the file on disk is unchanged) and flags the views, for the CPU
  // kernels that read that layout. Only for backends whose every reader of these views
  // honours the flag (the CPU matmul). Idempotent.
  void repack_iq2_xxs();

  // Opens and binds everything; throws ds4::Error(BadModel) naming the offending tensor.
  // Only layers [first_layer, end_layer) are read (end_layer < 0: to the last).
  static std::unique_ptr<Weights> load(const std::string& path, const std::string& mtp_path, int first_layer = 0,
                                       int end_layer = -1);
};

}  // namespace ds4::model
