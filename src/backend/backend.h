// The seam between the backend-neutral engine (src/session) and the code that runs the
// model's math. A backend owns the weights in its own memory (the CPU backend uses the GGUF
// mmap in place), each sequence's working state, and runs the forward pass over a batch.
// What a new backend must implement, and how to run the oracle suite on it: docs/backend.md.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "ds4/engine.h"
#include "model/state.h"
#include "model/trace.h"
#include "model/weights.h"

namespace ds4::backend {

// One sequence's state on the backend. The engine works on its host() form (the model's
// layout, model::SequenceState): snapshots read and write it, rewinds truncate it. The CPU
// backend evaluates on host() directly. A backend that keeps the working copy in its own
// memory keeps host()'s bookkeeping current at all times (ring slot positions, compressed
// row counts, undo log positions: what can_truncate() and RawRing::find() read), while the
// row data in host() is brought up to date only by pull() and taken over by push().
class Sequence {
 public:
  virtual ~Sequence() = default;
  virtual model::SequenceState& host() = 0;
  virtual void pull() {}  // before host()'s row data is read (snapshot save)
  virtual void push() {}  // after host() was rewritten as a whole (snapshot load, reset)
  // Back from n tokens to pos (requires every layer's can_truncate(n, pos)): raw rows of
  // positions >= pos forgotten, compressors rewound through their undo logs, MTP rows dropped.
  virtual void truncate(int64_t n, int64_t pos) {
    model::SequenceState& st = host();
    for (auto& L : st.layers) L.truncate(n, pos);
    st.mtp.raw.drop_from(pos);
    push();
  }
};

// Monotonic wall clock in seconds (the Batch timings).
inline double seconds_now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// A fresh host state for `w`: rings of ring_cap rows, compressor undo logs of rewind_depth
// steps (model::CompressorState::save_undo), the MTP block's ring when the model has one.
inline model::SequenceState make_state(const model::Weights& w, int ring_cap, int rewind_depth) {
  const ModelConfig& c = w.config;
  model::SequenceState s;
  s.layers.resize(w.layers.size());
  for (size_t il = 0; il < w.layers.size(); ++il)
    s.layers[il].init(w.layers[il].ratio, c.head_dim, c.index_head_dim, ring_cap, rewind_depth);
  if (w.has_mtp) s.mtp.init(w.mtp.block.ratio, c.head_dim, c.index_head_dim, ring_cap, rewind_depth);
  return s;
}

// One evaluation: entry i runs `token` at `pos` of `seq`. A sequence's entries are at
// consecutive positions starting at its next one, in order; entries of different sequences
// may interleave. The engine validates this before calling eval().
struct Entry {
  Sequence* seq = nullptr;
  int32_t token = 0;
  int64_t pos = 0;
  bool output = false;  // write this entry's logits and final HC state
};

struct Batch {
  const Entry* entries = nullptr;
  int n = 0;
  // A pipeline stage (docs/mpi.md) runs layers [first_layer, end_layer) (end_layer < 0: to
  // the last). `in` (n x hc x dim) are the states entering first_layer, required when it is
  // not 0 (else the tokens are embedded). With end_layer before the last layer, the states
  // after it go to `out` (n x hc x dim, every entry) and the head does not run.
  int first_layer = 0;
  int end_layer = -1;
  const float* in = nullptr;
  float* out = nullptr;
  // Outputs of the entries with `output` set, in entry order: vocab logits and hc*dim
  // final HC states (the MTP input). Either may be null.
  float* logits = nullptr;
  float* hidden = nullptr;
  // Optional wall-clock split of the pass (seconds, added to): embedding, per layer, head.
  double* embed_s = nullptr;
  double* layer_s = nullptr;  // n_layers entries
  double* head_s = nullptr;
  // Optional, per layer (n_layers entries, part of layer_s; a backend that does not time
  // them leaves them alone): the attention over KV rows and the indexer (EvalStats::Phase).
  double* attention_s = nullptr;
  double* indexer_s = nullptr;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;

  // Fresh state for one sequence: raw rings of ring_cap rows, compressor undo logs of
  // rewind_depth steps (model::CompressorState::save_undo).
  virtual std::unique_ptr<Sequence> new_sequence(int ring_cap, int rewind_depth) = 0;

  // The forward pass over a batch (docs/forward-pass.md). Batch invariance: an entry's
  // outputs are bit-identical whatever else is in the batch and however a sequence is chunked.
  // Evaluations are serialised by the backend; sequences not in the running batch may be
  // created, read and destroyed from other threads meanwhile.
  virtual void eval(const Batch& batch) = 0;

  // The MTP block (docs/forward-pass.md) on `seq`'s MTP ring: input state hin (hc x dim),
  // token, position; rows of positions >= pos are dropped first. Writes vocab logits and
  // hc*dim output state.
  virtual void mtp_eval(Sequence& seq, const float* hin, int32_t token, int64_t pos, float* logits,
                        float* hidden) = 0;

  // Scratch memory held for evaluations (grows to the largest batch, then stays).
  virtual uint64_t scratch_bytes() const = 0;
  virtual int threads() const { return 1; }
  virtual bool threads_pinned() const { return false; }
  // Device backends: see ds4::DeviceCounters and Engine::measure_device_bandwidth.
  virtual DeviceCounters device_counters() const { return {}; }
  virtual double measure_device_bandwidth(size_t bytes) { (void)bytes; return 0; }

  // ---- Test hooks (the oracle suite, ds4 check). Same numerics as eval(). ----
  // X (n x hc x dim) <- embedding of tokens copied into every stream.
  virtual void embed(const int32_t* tokens, int n, float* X) = 0;
  // Block `layer` alone over n consecutive tokens of `seq` at pos0..; X updated in place;
  // decisions recorded in (or, with trace->replay, read from) `trace`.
  virtual void block(int layer, Sequence& seq, float* X, const int32_t* tokens, int n, int64_t pos0,
                     model::BlockTrace* trace) = 0;
  // Output head on n states (n x hc x dim) -> n x vocab.
  virtual void head(const float* X, int n, float* logits) = 0;
  // Every quantized product in f32 against dequantized weight rows (model::MatView).
  virtual void use_f32_activations() = 0;
  // Makes every weight page this backend evaluates with resident now (under MPI, each
  // rank its own stage's): memory measurements, no first-token page faults.
  virtual void warm_weights() {}
};

}  // namespace ds4::backend
