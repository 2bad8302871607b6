// The model's operations as recorded dispatches. Each op has a CPU reference in src/quant or
// src/model and a test in tests/vulkan comparing the two (tolerances in docs/vulkan.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "quant/types.h"
#include "vulkan/context.h"
#include "vulkan/recorder.h"

namespace ds4::vulkan {

// A weight matrix resident on the device in its GGUF layout: rows of `cols` values, row r at
// byte offset + r * row_bytes of buffer. Matrices larger than one binding may allow are
// split into row chunks by matmul().
struct DeviceMatrix {
  quant::Type type = quant::Type::F32;
  int64_t rows = 0, cols = 0;
  size_t row_bytes = 0;
  const Buffer* buffer = nullptr;
  size_t offset = 0;
};

// A layer's routed experts: n_experts matrices of rows x cols stored expert after expert,
// spread over as many buffers as the device's binding limit requires (whole experts per
// buffer). Owns its buffers.
struct DeviceExperts {
  quant::Type type = quant::Type::Q2_K;
  int64_t n_experts = 0, rows = 0, cols = 0;
  size_t row_bytes = 0;
  struct Segment {
    int64_t first_expert = 0, n_experts = 0;
    Buffer buffer;
  };
  std::vector<Segment> segments;

  // Uploads `data` (n_experts * rows rows in the GGUF layout of `type`), splitting it into
  // buffers of at most experts_per_buffer experts (0: as many as one binding allows).
  static DeviceExperts upload(Context& ctx, quant::Type type, int64_t n_experts, int64_t rows, int64_t cols,
                              const void* data, int64_t experts_per_buffer = 0);
};

// Rows of floats in a buffer for Ops::copy_rows: word offset of row 0, words between rows.
struct Rows {
  Range buf;
  size_t off = 0, stride = 0;
};

class Ops {
 public:
  explicit Ops(Context& ctx);

  // Weight types matmul() takes: F32, F16, Q8_0, Q2_K, Q4_K, IQ2_XXS.
  static bool supports(quant::Type weight_type);
  // 32-bit words one activation vector of n values takes in the operand format of
  // weight_type (F32 values, block_q8_0_act or block_q8_K, the CPU's layouts).
  static size_t act_words(quant::Type weight_type, int64_t n);

  // Quantizes nvec vectors of n floats (x_stride floats apart) into the operand format of
  // weight_type (y_stride words apart), byte-identical to quant::quantize_activations().
  // For float weight types this records nothing: the f32 vectors are the operand.
  void quantize_act(Recorder& rec, quant::Type weight_type, Range x, int64_t n, int nvec, size_t x_stride,
                    Range y, size_t y_stride);

  // y[v][y_off + r] = dot(row r of w, operand v) for every row; x holds operands as
  // quantize_act() wrote them (x_stride words apart), y has y_stride floats per vector.
  void matmul(Recorder& rec, const DeviceMatrix& w, Range x, size_t x_stride, int nvec, Range y, size_t y_stride,
              size_t y_off = 0);

  // Routed-expert products chosen on the device: for each of n_pairs (token, slot) pairs,
  // y[p] = expert ids[p]'s matrix times the operand of token p / k_per_token (x holds one
  // operand per token, x_stride words apart; y has y_stride floats per pair). Each output is
  // the same fixed-order dot as matmul(), so it is bit-identical to the CPU kernels.
  void matmul_experts(Recorder& rec, const DeviceExperts& w, Range x, size_t x_stride, Range ids, int n_pairs,
                      int k_per_token, Range y, size_t y_stride);

  // y_v = x_v * (mean(x_v^2) + eps)^-1/2 * weight (weight.buffer null: no weight).
  void rms_norm(Recorder& rec, Range x, Range weight, int64_t n, int nvec, size_t x_stride, Range y, size_t y_stride,
                float eps);

  // f[v] = (mean(x_v^2) + eps)^-1/2, one float per vector.
  void rms_factor(Recorder& rec, Range x, int64_t n, int nvec, size_t x_stride, Range f, float eps);

  // out = silu(min(g, lim)) * clamp(u, -lim, lim) [* scale[v]]; lim <= 0: no clamp.
  void swiglu(Recorder& rec, Range g, Range u, Range scale, int64_t n, int nvec, size_t stride, Range out, float lim);

  // In place on nrows rows: pairs (tail + 2k, tail + 2k + 1), k < half, rotated by the
  // angle whose (cos, sin) is cos_sin[row * cs_stride + k] (two floats). With
  // rows_per_group > 1 (a token's heads), rows come in groups sharing one table entry: row r
  // is row r % rows_per_group of group r / rows_per_group, which starts group_stride floats
  // after the previous one and reads entry (r / rows_per_group) * cs_stride.
  void rope(Recorder& rec, Range x, Range cos_sin, int half, int nrows, size_t row_stride, size_t tail,
            size_t cs_stride, bool inverse, int rows_per_group = 1, size_t group_stride = 0);

  // Sink attention of n_tokens tokens, every head: q [tokens][heads][dim], rows [*][dim]
  // (each row key and value); token t attends to rows row_index[spans[2t] ..][0, spans[2t+1])
  // (at most max_rows); sinks [heads]; scores is scratch of tokens*heads*max_rows floats;
  // out [tokens][heads][dim].
  void attention(Recorder& rec, Range q, Range rows, Range row_index, Range spans, int n_tokens, int max_rows,
                 Range sinks, int heads, int dim, float scale, Range scores, Range out);

  // Hyper-connection mixes per token (model::hc_split_sinkhorn): m [tokens][(2+hc)*hc],
  // scale3 [3], base [(2+hc)*hc] -> out [tokens][(2+hc)*hc] = pre[hc], post[hc], comb[hc*hc].
  // With factor (one float per token, from rms_factor()) m is scaled by it first (hc_pre).
  void hc_sinkhorn(Recorder& rec, Range m, Range scale3, Range base, int hc, int iters, float eps, int n_tokens,
                   Range out, Range factor = {});

  // Hyper-connection mixing: pre (post=false): u[t] = sum_s pre[t][s] * x[t][s];
  // post (post=true): out[t][j] = post[t][j] * y[t] + sum_i comb[t][i][j] * x[t][i].
  // gates [tokens][(2+hc)*hc] as hc_sinkhorn() writes them; y is ignored for pre.
  void hc_mix(Recorder& rec, bool post, Range x, Range gates, Range y, int hc, int dim, int n_tokens, Range out);

  // Output-head stream weights sigmoid(m[t][s] * factor[t] * scale + base[s]) + eps (m
  // [tokens][hc], factor from rms_factor()), written as the pre gates of hc_sinkhorn's layout
  // (out [tokens][(2+hc)*hc]) for hc_mix(pre).
  void hc_head_gates(Recorder& rec, Range m, Range factor, Range base, int hc, float scale, float eps, int n_tokens,
                     Range out);

  // A compressor's gated softmax pooling over its candidate rows (kv and score [rows][width],
  // ratio 4: 8 rows, else `ratio`) -> out [d].
  void compressor_pool(Recorder& rec, Range kv, Range score, int ratio, int d, int width, Range out);

  // Indexer scores of n_rows compressed rows for one token: q [heads][dim], rows [n][dim],
  // w [heads] -> score [n] = sum_h (w[h] * wscale) * max(0, q_h . row).
  void indexer_score(Recorder& rec, Range q, Range rows, Range w, int n_rows, int heads, int dim, float wscale,
                     Range score);

  // Indices of the k highest of n scores (ties: lower index), ascending, written from
  // selected[out_off].
  void topk_rows(Recorder& rec, Range score, int n, int k, Range selected, size_t out_off = 0);

  // In-place scaled Hadamard transform of nrows rows of n values (n a power of two <= 4096).
  void hadamard(Recorder& rec, Range x, int n, int nrows, size_t row_stride);

  // FP8 (e4m3, blocks of 64; fp8=true) or FP4 (e2m1, blocks of 32) simulation in place on
  // the first n values of each of nrows rows (model::fp8_sim64 / fp4_sim32).
  void fp_sim(Recorder& rec, bool fp8, Range x, int n, int nrows, size_t row_stride);

  // X[t][s] = embedding row tokens[t] for every stream s < hc (F32, F16 or Q8_0 table of
  // table.rows rows, bound in row chunks when larger than one binding). Ids outside the
  // table are not written: the engine validates ids first.
  void embed(Recorder& rec, const DeviceMatrix& table, Range tokens, int n_tokens, int hc, Range x);

  // y[t] = sum over slots s < k of pairs[t*k + s], plus shared[t] when shared is given.
  void moe_combine(Recorder& rec, Range pairs, Range shared, int dim, int k, int n_tokens, Range y);

  // dst row slot[slot_index] (rows of n floats, max_slots of them) = src, the slot read on
  // the device (a recorded step writes its ring row wherever its token lands).
  void scatter_row(Recorder& rec, Range src, Range slot, int slot_index, int n, int max_slots, Range dst);

  // Strided rows with word offsets (no alignment needed): for r < nrows, i < len,
  // dst[d_off + r*d_stride + i] = src[s_off + r*s_stride + i] (+ b[b_off + r*b_stride + i]
  // when b is given). src and dst may be one buffer when the ranges do not overlap.
  void copy_rows(Recorder& rec, Rows src, Rows dst, size_t len, int nrows, Rows b = {});

  // out = a + b over n floats.
  void add(Recorder& rec, Range a, Range b, Range out, int64_t n);

  // dst = src over `bytes` (a multiple of 16).
  void copy(Recorder& rec, Range src, Range dst, size_t bytes);

  // Device memory bandwidth in GB/s (bytes read + written per second) from `reps` copy
  // dispatches of `bytes` in one submission, best of three submissions. Information for
  // ds4-bench; not a test.
  double measure_bandwidth(size_t bytes, int reps);

  // The (cos, sin) table rope() reads, for rows at positions pos[0..n): entry [i][k] =
  // (cos(pos_i * freq[k]), sin(...)) with the CPU's float expressions (model::Rope::apply),
  // computed on the host since Vulkan's sin/cos are far less accurate than libm.
  static void rope_cos_sin(const float* freq, int half, const int64_t* pos, int n, float* out);

  // MoE routing per token: chosen[t][k] experts, weight[t][k] routing weights
  // (bias.buffer null: no bias). Hash-routed layers pass tokens [n_tokens] and tid2eid
  // [vocab][k] (ids validated by the engine, experts by the loader): the experts come from
  // the table, the weights from the same formula.
  void route_topk(Recorder& rec, Range logits, Range bias, int n_experts, int k, int n_tokens, bool normalise,
                  float route_scale, Range chosen, Range weight, Range tokens = {}, Range tid2eid = {});

 private:
  Context& ctx_;
  Buffer iq2_tables_;  // IQ2_XXS grid + sign bytes, from src/quant's tables
  Buffer dummy_;       // bound where an optional input is absent
};

}  // namespace ds4::vulkan
