// Test/debug hooks on an Engine (used by tests/model and the ds4 check mode; not a product
// API). They run the forward pass from fresh state and expose intermediate results, through
// the backend interface's test hooks, so they work on every backend.
#pragma once

#include <vector>

#include "ds4/engine.h"
#include "model/trace.h"

namespace ds4::debug {

// Full prefill from fresh state in chunks; returns the HC state after each block,
// [layer][position][hc][dim], like the oracle's layer_outputs_prefill.bin.
std::vector<float> layer_outputs(Engine& e, const std::vector<int32_t>& tokens, int chunk);

struct BlockRun {
  std::vector<float> out;   // [position][hc][dim]
  model::BlockTrace trace;  // routing and indexer choices per position
};
// Block `layer` alone from fresh state over positions 0..n-1, fed `input` ([n][hc][dim]),
// in chunks of `chunk` tokens (chunk 1 = token-by-token decode).
BlockRun run_block(Engine& e, int layer, const float* input, const std::vector<int32_t>& tokens, int chunk);

// Full prefill from fresh state in chunks -> logits [n][vocab]. With `traces` and
// replay=false, every block's choices are recorded (one trace per layer); with replay=true
// they are read from `traces` instead of computed (see model::BlockTrace).
std::vector<float> prefill_logits(Engine& e, const std::vector<int32_t>& tokens, int chunk,
                                  std::vector<model::BlockTrace>* traces, bool replay);

// Switches every quantized matrix of `e` to f32 activations against dequantized weight rows
// (backend::Backend::use_f32_activations): the engine then computes what it computes on the file's
// dequantized f32 twin, up to summation order. For comparisons only; slow.
void use_f32_activations(Engine& e);

// Makes the weights the engine evaluates with resident (under MPI each rank its own part).
void warm_weights(Engine& e);

// Output head on n states ([n][hc][dim]) -> [n][vocab].
std::vector<float> head(Engine& e, const float* states, int n);

// Embedding of tokens copied into every stream ([n][hc][dim]).
std::vector<float> embed(Engine& e, const std::vector<int32_t>& tokens);

}  // namespace ds4::debug
