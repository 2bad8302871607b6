// The DeepSeek V4 forward pass on CPU (spec §5, §7, §8): blocks over a chunk of tokens,
// the output head and the MTP input projection. Stateless apart from the LayerState passed in.
#pragma once

#include <cstdint>
#include <vector>

#include "cpu/arena.h"
#include "cpu/matmul.h"
#include "cpu/thread_pool.h"
#include "model/numerics.h"
#include "model/state.h"
#include "model/weights.h"

namespace ds4::model {

// Optional record of one block's decisions (tests compare them with the oracle). With
// `replay` set, the block reads its expert and indexer choices from here, in position order,
// instead of computing them: tests use it to compare two weight files without the discrete
// flips that near-tied choices would add (the expert weights are still computed).
struct BlockTrace {
  std::vector<std::vector<int>> experts;    // per token, slot order
  std::vector<std::vector<float>> weights;  // per token, matching experts
  std::vector<std::vector<int>> indexer;    // per token (ratio 4 only), ascending row ids
  bool replay = false;
  size_t next_expert = 0, next_indexer = 0;  // replay cursors
};

class Forward {
 public:
  Forward(const Weights& w, cpu::ThreadPool& pool, bool qat_simulation);

  const ModelConfig& config() const { return cfg_; }
  // Scratch memory held for evaluations (the arena's blocks and the indexer buffers).
  size_t scratch_bytes() const;
  bool qat() const { return qat_; }

  // Fresh state for one layer (or the MTP block) with a raw ring of `ring_cap` rows.
  void init_state(const LayerWeights& L, LayerState& S, int ring_cap) const;

  // X (n x hc x dim) <- embedding of tokens copied into every stream.
  void embed(const int32_t* tokens, int n, float* X) const;

  // One block over n consecutive tokens at positions pos0..pos0+n-1; X updated in place.
  void block(const LayerWeights& L, LayerState& S, float* X, const int32_t* tokens, int n,
             int64_t pos0, BlockTrace* trace = nullptr) const;

  // Output head for n states (n x hc x dim) -> logits (n x vocab).
  void head(const HeadWeights& H, const float* X, int n, float* logits) const;

  // MTP block input (spec §8): X (hc x dim) from the main state hin and token tau.
  void mtp_input(const MtpWeights& M, const float* hin, int32_t token, float* X) const;

 private:
  void hc_pre(const MatView& fn, const float* scale, const float* base, const float* X, int n,
              float* u, float* post, float* comb) const;
  void hc_post(const float* y, float* X, int n, const float* post, const float* comb) const;
  void compressor_step(const CompressorWeights& W, CompressorState& S, const float* kv,
                       const float* gate, int64_t pos, bool indexer) const;
  void attention_sublayer(const LayerWeights& L, LayerState& S, const float* a, int n,
                          int64_t pos0, float* y, BlockTrace* trace) const;
  void moe_sublayer(const LayerWeights& L, const float* v, const int32_t* tokens, int n, float* y,
                    BlockTrace* trace) const;

  const Weights& w_;
  const ModelConfig& cfg_;
  cpu::ThreadPool& pool_;
  // Scratch of the evaluation in progress (evaluations are serialised by the engine).
  mutable cpu::Arena arena_;
  mutable std::vector<const float*> window_rows_;
  mutable std::vector<float> iscore_;
  mutable std::vector<int> sel_;
  bool qat_;
  Rope rope_dense_, rope_compressed_;
};

}  // namespace ds4::model
