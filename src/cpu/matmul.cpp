#include "cpu/matmul.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/float_dots.h"
#include "quant/quant.h"

namespace ds4::cpu {

namespace {

// Vectors handled per pass over a weight row: their activations stay in L2 while the row
// tile is reused against them (the weight block is decoded once per pass).
constexpr int64_t kVecTile = 32;
// Q8_0 rows per call of the tile kernel (Kernels::dot_q8_0_rows).
constexpr int kQ8RowGroup = 32;
// Weight bytes per task: large enough to amortise claiming it, small enough that a tile of
// rows stays in L2 while the vector tiles sweep over it, and that both cores get work.
constexpr uint64_t kDecodeTileBytes = 32 * 1024;
constexpr uint64_t kPrefillTileBytes = 128 * 1024;

struct Input {
  const float* x;
  int64_t x_stride, n_vec, in;
  quant::ActType act;
  uint8_t* q;        // quantized vectors, act_bytes apart (null for F32)
  size_t act_bytes;
};

struct Prepared {
  const MatMul* job;
  const uint8_t* xq;  // first vector's operand
  size_t xq_stride;   // bytes between vectors
  int64_t x_stride_blocks;
};

struct Tile {
  int job;
  int64_t r0, r1;
};

inline int64_t act_block_values(quant::ActType a) {
  return a == quant::ActType::Q8_0 ? quant::QK8_0 : quant::QK_K;
}

// Y rows [r0, r1) of one product, every vector.
void run_tile(const quant::Kernels& k, const Prepared& p, int64_t r0, int64_t r1) {
  const MatMul& j = *p.job;
  const MatView& w = j.w;
  const int64_t n = w.in;
  const quant::Type t = w.type;
  float out[kVecTile];
  if (w.f32_activations && quant::activation_type(t) != quant::ActType::F32) {
    // Test hook: dequantized rows against unrounded f32 inputs.
    thread_local std::vector<float> wrow;
    wrow.resize(static_cast<size_t>(n));
    for (int64_t r = r0; r < r1; ++r) {
      if (w.iq2_repacked) {
        thread_local std::vector<quant::block_iq2_xxs> plain;
        plain.resize(static_cast<size_t>(n / quant::QK_K));
        std::memcpy(plain.data(), w.row(r), w.row_bytes);
        quant::iq2_xxs_unpack(plain.data(), static_cast<int64_t>(plain.size()));
        quant::dequantize_row(t, plain.data(), wrow.data(), n);
      } else {
        quant::dequantize_row(t, w.row(r), wrow.data(), n);
      }
      for (int64_t v = 0; v < j.n_vec; ++v)
        j.y[v * j.y_stride + r] = k.dot_f32(wrow.data(), reinterpret_cast<const float*>(p.xq + v * p.xq_stride), n);
    }
    return;
  }
  // Passes of near-equal size (40 vectors: 20 + 20, not 32 + 8): a short pass shares each
  // decoded weight block among few vectors.
  const int64_t passes = (j.n_vec + kVecTile - 1) / kVecTile;
  for (int64_t pass = 0; pass < passes; ++pass) {
    const int64_t v0 = j.n_vec * pass / passes;
    const int nx = static_cast<int>(j.n_vec * (pass + 1) / passes - v0);
    const uint8_t* xv = p.xq + static_cast<size_t>(v0) * p.xq_stride;
    if (nx > 1 && t == quant::Type::Q8_0) {
      // The tile's rows in groups through the Q8_0 tile kernel, which runs groups of four
      // vectors outside the rows: the more rows per call, the more rows meet a group's
      // activations in L1 (in an L2-resident harness, 4 rows per call ran 1.04x the one-row
      // kernel, 8 rows 1.1x, 16-32 rows 1.2x).
      float group_out[kQ8RowGroup * kVecTile];
      const auto* xr = reinterpret_cast<const quant::block_q8_0_act*>(xv);
      for (int64_t r = r0; r < r1; r += kQ8RowGroup) {
        const int nr = static_cast<int>(std::min<int64_t>(kQ8RowGroup, r1 - r));
        k.dot_q8_0_rows(reinterpret_cast<const quant::block_q8_0*>(w.row(r)),
                        static_cast<int64_t>(w.row_bytes / sizeof(quant::block_q8_0)), nr, xr, p.x_stride_blocks, nx, n,
                        group_out);
        for (int i = 0; i < nr; ++i) {
          for (int v = 0; v < nx; ++v) j.y[(v0 + v) * j.y_stride + r + i] = group_out[i * nx + v];
        }
      }
      continue;
    }
    if (nx > 1 && (t == quant::Type::IQ2_XXS || t == quant::Type::Q2_K || t == quant::Type::Q4_K)) {
      // Groups of rows through the tile kernels: each activation block is read once per group.
      constexpr int kRowGroup = 4;
      float group_out[kRowGroup * kVecTile];
      const auto* xr = reinterpret_cast<const quant::block_q8_K*>(xv);
      for (int64_t r = r0; r < r1; r += kRowGroup) {
        const int nr = static_cast<int>(std::min<int64_t>(kRowGroup, r1 - r));
        const uint8_t* row = w.row(r);
        if (t == quant::Type::IQ2_XXS) {
          (w.iq2_repacked ? k.dot_iq2_xxs_r_rows : k.dot_iq2_xxs_rows)(reinterpret_cast<const quant::block_iq2_xxs*>(row),
                             static_cast<int64_t>(w.row_bytes / sizeof(quant::block_iq2_xxs)), nr, xr,
                             p.x_stride_blocks, nx, n, group_out);
        } else if (t == quant::Type::Q2_K) {
          k.dot_q2_K_rows(reinterpret_cast<const quant::block_q2_K*>(row),
                          static_cast<int64_t>(w.row_bytes / sizeof(quant::block_q2_K)), nr, xr, p.x_stride_blocks, nx,
                          n, group_out);
        } else {
          k.dot_q4_K_rows(reinterpret_cast<const quant::block_q4_K*>(row),
                          static_cast<int64_t>(w.row_bytes / sizeof(quant::block_q4_K)), nr, xr, p.x_stride_blocks, nx,
                          n, group_out);
        }
        for (int i = 0; i < nr; ++i) {
          for (int v = 0; v < nx; ++v) j.y[(v0 + v) * j.y_stride + r + i] = group_out[i * nx + v];
        }
      }
      continue;
    }
    if (t == quant::Type::F32 || t == quant::Type::F16 || t == quant::Type::BF16) {
      // Nothing to decode: each vector against every row of the tile, so the vector stays in
      // L1 and the tile in L2 (row by row, a pass over 32 vectors of the 16384-wide HC input
      // is 2 MiB, re-read from L3 for every row).
      int v = 0;
      const FloatDots* fd = float_dots();
      if (fd && n % 8 == 0 && t != quant::Type::BF16) {
        // Two vectors at a time: eight FMA chains instead of four, each row loaded once.
        for (; v + 2 <= nx; v += 2) {
          const float* x0 = reinterpret_cast<const float*>(xv + v * p.xq_stride);
          const float* x1 = reinterpret_cast<const float*>(xv + (v + 1) * p.xq_stride);
          float* y0 = j.y + (v0 + v) * j.y_stride;
          float* y1 = y0 + j.y_stride;
          for (int64_t r = r0; r < r1; ++r) {
            const uint8_t* row = w.row(r);
            float o[2];
            if (t == quant::Type::F32) fd->dot2_f32(reinterpret_cast<const float*>(row), x0, x1, n, o);
            else fd->dot2_f16(reinterpret_cast<const uint16_t*>(row), x0, x1, n, o);
            y0[r] = o[0];
            y1[r] = o[1];
          }
        }
      }
      for (; v < nx; ++v) {
        const float* x = reinterpret_cast<const float*>(xv + v * p.xq_stride);
        float* y = j.y + (v0 + v) * j.y_stride;
        for (int64_t r = r0; r < r1; ++r) {
          const uint8_t* row = w.row(r);
          if (t == quant::Type::F32) y[r] = k.dot_f32(reinterpret_cast<const float*>(row), x, n);
          else if (t == quant::Type::F16) y[r] = k.dot_f16(reinterpret_cast<const uint16_t*>(row), x, n);
          else y[r] = k.dot_bf16(reinterpret_cast<const uint16_t*>(row), x, n);
        }
      }
      continue;
    }
    for (int64_t r = r0; r < r1; ++r) {
      const uint8_t* row = w.row(r);
      switch (t) {
        case quant::Type::Q8_0: {
          auto* wr = reinterpret_cast<const quant::block_q8_0*>(row);
          auto* xr = reinterpret_cast<const quant::block_q8_0_act*>(xv);
          if (nx == 1) out[0] = k.dot_q8_0(wr, xr, n);
          else k.dot_q8_0_multi(wr, xr, p.x_stride_blocks, nx, n, out);
          break;
        }
        case quant::Type::Q2_K: {
          auto* wr = reinterpret_cast<const quant::block_q2_K*>(row);
          auto* xr = reinterpret_cast<const quant::block_q8_K*>(xv);
          if (nx == 1) out[0] = k.dot_q2_K(wr, xr, n);
          else k.dot_q2_K_multi(wr, xr, p.x_stride_blocks, nx, n, out);
          break;
        }
        case quant::Type::Q4_K: {
          auto* wr = reinterpret_cast<const quant::block_q4_K*>(row);
          auto* xr = reinterpret_cast<const quant::block_q8_K*>(xv);
          if (nx == 1) out[0] = k.dot_q4_K(wr, xr, n);
          else k.dot_q4_K_multi(wr, xr, p.x_stride_blocks, nx, n, out);
          break;
        }
        case quant::Type::IQ2_XXS: {
          auto* wr = reinterpret_cast<const quant::block_iq2_xxs*>(row);
          auto* xr = reinterpret_cast<const quant::block_q8_K*>(xv);
          if (w.iq2_repacked) {
            if (nx == 1) out[0] = k.dot_iq2_xxs_r(wr, xr, n);
            else k.dot_iq2_xxs_r_multi(wr, xr, p.x_stride_blocks, nx, n, out);
          } else if (nx == 1) {
            out[0] = k.dot_iq2_xxs(wr, xr, n);
          } else {
            k.dot_iq2_xxs_multi(wr, xr, p.x_stride_blocks, nx, n, out);
          }
          break;
        }
        default:
          for (int v = 0; v < nx; ++v) out[v] = quant::vec_dot(t, row, xv + v * p.xq_stride, n);
          break;
      }
      float* y = j.y + r;
      for (int v = 0; v < nx; ++v) y[(v0 + v) * j.y_stride] = out[v];
    }
  }
}

}  // namespace

void matmul_batch(ThreadPool& pool, Arena& arena, const MatMul* jobs, int n_jobs) {
  Arena::Frame frame(arena);
  const int threads = pool.size();
  Input* inputs = arena.alloc<Input>(std::max(n_jobs, 1));
  int n_inputs = 0;
  Prepared* prep = arena.alloc<Prepared>(std::max(n_jobs, 1));
  int n_prep = 0;
  int64_t quant_values = 0, work = 0;

  // Bind each product to its (possibly shared) quantized input.
  for (int i = 0; i < n_jobs; ++i) {
    const MatMul& j = jobs[i];
    if (j.n_vec <= 0 || j.w.out <= 0) continue;
    const quant::ActType act = operand_type(j.w);
    Prepared& p = prep[n_prep++];
    p.job = &j;
    work += j.n_vec * j.w.out * j.w.in;
    if (act == quant::ActType::F32) {
      p.xq = reinterpret_cast<const uint8_t*>(j.x);
      p.xq_stride = static_cast<size_t>(j.x_stride) * sizeof(float);
      p.x_stride_blocks = j.x_stride;
      continue;
    }
    if (j.xq) {
      p.xq = static_cast<const uint8_t*>(j.xq);
      p.xq_stride = j.xq_stride;
      p.x_stride_blocks = static_cast<int64_t>(j.xq_stride / quant::activation_bytes(act, act_block_values(act)));
      continue;
    }
    Input* in = nullptr;
    for (int k = 0; k < n_inputs && !in; ++k) {
      Input& c = inputs[k];
      if (c.x == j.x && c.x_stride == j.x_stride && c.n_vec == j.n_vec && c.in == j.w.in && c.act == act) in = &c;
    }
    if (!in) {
      in = &inputs[n_inputs++];
      in->x = j.x;
      in->x_stride = j.x_stride;
      in->n_vec = j.n_vec;
      in->in = j.w.in;
      in->act = act;
      in->act_bytes = quant::activation_bytes(act, j.w.in);
      in->q = arena.alloc<uint8_t>(in->act_bytes * j.n_vec);
      quant_values += j.n_vec * j.w.in;
    }
    p.xq = in->q;
    p.xq_stride = in->act_bytes;
    p.x_stride_blocks = j.w.in / act_block_values(act);
  }
  if (n_prep == 0) return;

  // Quantize the inputs, a vector per task (each weight type's quantizer: same bytes on
  // every thread).
  if (n_inputs > 0) {
    auto quantize = [&](const Input& in, int64_t v) {
      const float* x = in.x + v * in.x_stride;
      uint8_t* q = in.q + static_cast<size_t>(v) * in.act_bytes;
      if (in.act == quant::ActType::Q8_0)
        quant::quantize_act_q8_0(x, reinterpret_cast<quant::block_q8_0_act*>(q), in.in);
      else
        quant::quantize_act_q8_K(x, reinterpret_cast<quant::block_q8_K*>(q), in.in);
    };
    if (quant_values < (int64_t{1} << 16) || threads == 1) {
      for (int k = 0; k < n_inputs; ++k)
        for (int64_t v = 0; v < inputs[k].n_vec; ++v) quantize(inputs[k], v);
    } else {
      int64_t* first = arena.alloc<int64_t>(n_inputs + 1);
      first[0] = 0;
      for (int k = 0; k < n_inputs; ++k) first[k + 1] = first[k] + inputs[k].n_vec;
      pool.run_tasks(first[n_inputs], [&](int64_t t, int) {
        const int k = static_cast<int>(std::upper_bound(first, first + n_inputs + 1, t) - first) - 1;
        quantize(inputs[k], t - first[k]);
      });
    }
  }

  // Row tiles of every product, claimed in order by the threads.
  int64_t n_tiles = 0;
  int64_t* tile_rows = arena.alloc<int64_t>(n_prep);
  for (int i = 0; i < n_prep; ++i) {
    const MatMul& j = *prep[i].job;
    const uint64_t rb = std::max<uint64_t>(j.w.row_bytes, 1);
    int64_t rows;
    if (j.n_vec == 1) {
      rows = std::max<int64_t>((j.w.out + threads * 8 - 1) / (threads * 8),
                               static_cast<int64_t>((kDecodeTileBytes + rb - 1) / rb));
    } else {
      rows = std::min<int64_t>((j.w.out + threads * 4 - 1) / (threads * 4),
                               static_cast<int64_t>(kPrefillTileBytes / rb));
    }
    rows = std::clamp<int64_t>(rows, 1, j.w.out);
    tile_rows[i] = rows;
    n_tiles += (j.w.out + rows - 1) / rows;
  }
  Tile* tiles = arena.alloc<Tile>(n_tiles);
  int64_t nt = 0;
  for (int i = 0; i < n_prep; ++i) {
    const int64_t out = prep[i].job->w.out;
    for (int64_t r = 0; r < out; r += tile_rows[i]) tiles[nt++] = Tile{i, r, std::min(out, r + tile_rows[i])};
  }

  const quant::Kernels& k = quant::kernels();
  auto body = [&](int64_t t, int) {
    const Tile& tl = tiles[t];
    run_tile(k, prep[tl.job], tl.r0, tl.r1);
  };
  // Tiny batches: waking the other threads costs more than the work.
  if (work < (int64_t{1} << 15)) {
    for (int64_t t = 0; t < n_tiles; ++t) body(t, 0);
  } else {
    pool.run_tasks(n_tiles, body);
  }
}

void matmul(ThreadPool& pool, Arena& arena, const MatView& w, const float* x, int64_t n_vec,
            int64_t x_stride, float* y, int64_t y_stride) {
  MatMul j;
  j.w = w;
  j.x = x;
  j.x_stride = x_stride;
  j.n_vec = n_vec;
  j.y = y;
  j.y_stride = y_stride;
  matmul_batch(pool, arena, &j, 1);
}

void matmul(ThreadPool& pool, const MatView& w, const float* x, int64_t n_vec, int64_t x_stride,
            float* y, int64_t y_stride) {
  thread_local Arena arena;
  matmul(pool, arena, w, x, n_vec, x_stride, y, y_stride);
}

}  // namespace ds4::cpu
