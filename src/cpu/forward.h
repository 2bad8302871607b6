// The DeepSeek V4 forward pass on CPU (docs/forward-pass.md): blocks over a batch of entries
// (rows of one or several sequences), the output head and the MTP input projection.
// A Forward lives for one evaluation; its scratch is handed in, so nothing is shared
// between evaluations but the weights and the pool.
#pragma once

#include <cstdint>
#include <vector>

#include "cpu/arena.h"
#include "cpu/matmul.h"
#include "cpu/thread_pool.h"
#include "model/numerics.h"
#include "model/state.h"
#include "model/trace.h"
#include "model/weights.h"

namespace ds4::cpu {

using model::BlockTrace;
using model::CompressorState;
using model::CompressorWeights;
using model::HeadWeights;
using model::LayerState;
using model::LayerWeights;
using model::MtpWeights;
using model::Weights;

// Memory of one evaluation, kept between evaluations by its owner (the backend).
struct Scratch {
  Arena arena;
  std::vector<const float*> window_rows;
  std::vector<float> iscore;
  std::vector<int> sel;
  std::vector<float> X;  // the batch's HC states
  size_t bytes() const {
    return arena.capacity_bytes() + window_rows.capacity() * sizeof(const float*) +
           iscore.capacity() * sizeof(float) + sel.capacity() * sizeof(int) + X.capacity() * sizeof(float);
  }
};

// Rotary tables of the model (dense and compressed layers), built once per backend.
struct Ropes {
  model::Rope dense, compressed;
  explicit Ropes(const ModelConfig& c);
};

// The rows a block runs over: entry t is token tokens[t] at position pos[t] of the sequence
// whose state for this block is *states[t]. A sequence's entries are at consecutive
// positions, in order.
struct BlockRows {
  LayerState* const* states = nullptr;
  const int64_t* pos = nullptr;
  const int32_t* tokens = nullptr;
  int n = 0;
};

class Forward {
 public:
  Forward(const Weights& w, ThreadPool& pool, const Ropes& ropes, Scratch& scratch, bool qat_simulation);

  // X (n x hc x dim) <- embedding of tokens copied into every stream.
  void embed(const int32_t* tokens, int n, float* X);

  // Wall time of two stages of the blocks run from now on (seconds, added to; null: not
  // timed): the attention over KV rows (sink softmax and value sums of every head) and the
  // indexer (scoring compressed rows, choosing the top-k). One clock read at each stage's
  // start and end per token.
  struct StageTimes {
    double attention_s = 0;
    double indexer_s = 0;
  };
  void time_stages(StageTimes* t) { times_ = t; }

  // One block over the batch's rows; X (n x hc x dim) updated in place.
  void block(const LayerWeights& L, const BlockRows& rows, float* X, BlockTrace* trace = nullptr);

  // Output head for n states (n x hc x dim) -> logits (n x vocab).
  void head(const HeadWeights& H, const float* X, int n, float* logits);

  // The routed experts alone, for a backend that routes elsewhere (hybrid MoE): for n rows of
  // v (n x dim) and their chosen expert ids and routing weights (n x n_experts_used), pairs
  // (n*n_experts_used x dim, pair t*K+k) <- expert chosen[t*K+k]'s down projection of its
  // SwiGLU scaled by weight[t*K+k]: the terms moe_sublayer sums, bit for bit.
  void routed_experts(const LayerWeights& L, const float* v, int n, const int32_t* chosen, const float* weight,
                      float* pairs);

  // MTP block input (docs/forward-pass.md): X (hc x dim) from the main state hin and token tau.
  void mtp_input(const MtpWeights& M, const float* hin, int32_t token, float* X);

  // One MTP step on the block's state S (backend::Backend::mtp_eval): rows of positions >= pos
  // dropped, input, block, head. logits (vocab) and hidden (hc x dim) may be null.
  void mtp_step(const MtpWeights& M, LayerState& S, const float* hin, int32_t token, int64_t pos, float* logits,
                float* hidden);

 private:
  void hc_pre(const model::MatView& fn, const float* scale, const float* base, const float* X, int n, float* u,
              float* post, float* comb);
  void hc_post(const float* y, float* X, int n, const float* post, const float* comb);
  void compressor_step(const CompressorWeights& W, CompressorState& S, const float* kv, const float* gate,
                       int64_t pos, bool indexer);
  void attention_sublayer(const LayerWeights& L, const BlockRows& rows, const float* a, float* y,
                          BlockTrace* trace);
  // Routed experts' down projections in expert-sorted order (rows; pair t*K+k is row
  // slot_of[t*K+k]) and, when shared is non-null, the shared expert's n x dim output.
  struct ExpertRows {
    const float* rows;
    const int* slot_of;
  };
  ExpertRows expert_products(const LayerWeights& L, const float* v, int n, const int* chosen, const float* weight,
                             float* shared);
  void moe_sublayer(const LayerWeights& L, const float* v, const int32_t* tokens, int n, float* y,
                    BlockTrace* trace);

  const Weights& w_;
  const ModelConfig& cfg_;
  ThreadPool& pool_;
  const model::Rope& rope_dense_;
  const model::Rope& rope_compressed_;
  Scratch& scratch_;
  Arena& arena_;
  bool qat_;
  StageTimes* times_ = nullptr;
};

}  // namespace ds4::cpu
