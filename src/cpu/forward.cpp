#include "cpu/forward.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <stdexcept>

#include "backend/backend.h"  // seconds_now
#include "cpu/attention.h"
#include "quant/quant.h"

namespace ds4::cpu {

using namespace ds4::model;
using backend::seconds_now;

Ropes::Ropes(const ModelConfig& c)
    : dense(Rope::make(c.rope_dim, c.rope_base, false, 0, 1.f, 0.f, 0.f)),
      compressed(Rope::make(c.rope_dim, c.compress_rope_base, c.yarn_orig_ctx > 0, c.yarn_orig_ctx, c.yarn_factor,
                            c.yarn_beta_fast, c.yarn_beta_slow)) {}

Forward::Forward(const Weights& w, ThreadPool& pool, const Ropes& ropes, Scratch& scratch, bool qat_simulation)
    : w_(w),
      cfg_(w.config),
      pool_(pool),
      rope_dense_(ropes.dense),
      rope_compressed_(ropes.compressed),
      scratch_(scratch),
      arena_(scratch.arena),
      qat_(qat_simulation) {}

void Forward::embed(const int32_t* tokens, int n, float* X) {
  const int D = cfg_.dim, hc = cfg_.hc;
  for (int t = 0; t < n; ++t) {
    float* x = X + static_cast<size_t>(t) * hc * D;
    quant::dequantize_row(w_.token_embd.type, w_.token_embd.row(tokens[t]), x, D);
    for (int s = 1; s < hc; ++s) std::memcpy(x + s * D, x, sizeof(float) * D);
  }
}

void Forward::hc_pre(const MatView& fn, const float* scale, const float* base, const float* X,
                     int n, float* u, float* post, float* comb) {
  const int D = cfg_.dim, hc = cfg_.hc, hcD = hc * D, mix = (2 + hc) * hc;
  Arena::Frame frame(arena_);
  float* m = arena_.alloc<float>(static_cast<size_t>(n) * mix);
  matmul(pool_, arena_, fn, X, n, hcD, m, mix);
  // Per token: independent, so tokens run in parallel without changing any result.
  pool_.parallel_for(n, [&](int64_t tb, int64_t te) {
    float pre[64];  // hc <= 64 (config check)
    for (int64_t t = tb; t < te; ++t) {
      const float* x = X + static_cast<size_t>(t) * hcD;
      float* mt = m + static_cast<size_t>(t) * mix;
      const float f = rms_factor(x, hcD, cfg_.norm_eps);
      for (int i = 0; i < mix; ++i) mt[i] *= f;
      hc_split_sinkhorn(mt, scale, base, hc, cfg_.sinkhorn_iters, cfg_.hc_eps, pre,
                        post + static_cast<size_t>(t) * hc, comb + static_cast<size_t>(t) * hc * hc);
      float* ut = u + static_cast<size_t>(t) * D;
      for (int d = 0; d < D; ++d) {
        float acc = 0.f;
        for (int s = 0; s < hc; ++s) acc += pre[s] * x[s * D + d];
        ut[d] = acc;
      }
    }
  }, 4);
}

void Forward::hc_post(const float* y, float* X, int n, const float* post, const float* comb) {
  const int D = cfg_.dim, hc = cfg_.hc;
  pool_.parallel_for(n, [&](int64_t tb, int64_t te) {
    float out[64 * 8];  // hc (<= 64, config check) streams x a run of 8 dims
    for (int64_t t = tb; t < te; ++t) {
      float* x = X + static_cast<size_t>(t) * hc * D;
      const float* yt = y + static_cast<size_t>(t) * D;
      const float* pt = post + static_cast<size_t>(t) * hc;
      const float* C = comb + static_cast<size_t>(t) * hc * hc;
      // In runs of 8 dims: each output needs every stream of the same dim, so a run can be
      // written back as soon as it is done.
      for (int d0 = 0; d0 < D; d0 += 8) {
        const int nd = std::min(8, D - d0);
        for (int j = 0; j < hc; ++j) {
          for (int dd = 0; dd < nd; ++dd) {
            const int d = d0 + dd;
            float acc = pt[j] * yt[d];
            for (int i = 0; i < hc; ++i) acc += C[i * hc + j] * x[i * D + d];
            out[j * 8 + dd] = acc;
          }
        }
        for (int j = 0; j < hc; ++j)
          for (int dd = 0; dd < nd; ++dd) x[j * D + d0 + dd] = out[j * 8 + dd];
      }
    }
  }, 4);
}

void Forward::compressor_step(const CompressorWeights& W, CompressorState& S, const float* kv,
                              const float* gate, int64_t pos, bool indexer) {
  S.save_undo(pos);  // what this step overwrites, for a cheap rewind
  const int r = S.ratio, d = S.d, width = S.width;
  const int phase = static_cast<int>(pos % r);
  const int rho = (r == 4) ? 4 + phase : phase;
  float* krow = S.kv.data() + static_cast<size_t>(rho) * width;
  float* srow = S.score.data() + static_cast<size_t>(rho) * width;
  const float* ape = W.ape.data() + static_cast<size_t>(phase) * width;
  for (int j = 0; j < width; ++j) {
    krow[j] = kv[j];
    srow[j] = gate[j] + ape[j];
  }
  if ((pos + 1) % r != 0) return;

  // Gated softmax pooling, independently per output feature.
  Arena::Frame frame(arena_);
  float* P = arena_.alloc<float>(d);
  const int cand = (r == 4) ? 8 : r;
  float* e = arena_.alloc<float>(cand);
  for (int j = 0; j < d; ++j) {
    auto at = [&](int m, const std::vector<float>& buf) {
      if (r == 4) return m < 4 ? buf[static_cast<size_t>(m) * width + j]
                               : buf[static_cast<size_t>(m) * width + d + j];
      return buf[static_cast<size_t>(m) * width + j];
    };
    float mx = kNegInf;
    for (int m = 0; m < cand; ++m) mx = std::max(mx, at(m, S.score));
    if (mx <= -5e29f) {
      P[j] = 0.f;
      continue;
    }
    float z = 0.f;
    for (int m = 0; m < cand; ++m) {
      const float s = at(m, S.score);
      e[m] = s <= -5e29f ? 0.f : std::exp(s - mx);
      z += e[m];
    }
    float acc = 0.f;
    for (int m = 0; m < cand; ++m) acc += (e[m] / z) * at(m, S.kv);
    P[j] = acc;
  }
  if (r == 4) {
    // The current window becomes the previous one (rows 4..7 -> 0..3).
    std::memcpy(S.kv.data(), S.kv.data() + 4 * width, sizeof(float) * 4 * width);
    std::memcpy(S.score.data(), S.score.data() + 4 * width, sizeof(float) * 4 * width);
  }
  float* z = arena_.alloc<float>(d);
  rms_norm(P, W.norm.data(), z, d, cfg_.norm_eps);
  const int R = cfg_.rope_dim;
  rope_compressed_.apply(z + d - R, static_cast<int64_t>(r) * S.n_rows);
  if (indexer) {
    hadamard_scaled(z, d);
    if (qat_) fp4_sim32(z, d);
  } else {
    if (qat_) fp8_sim64(z, d - R);
  }
  S.rows.insert(S.rows.end(), z, z + d);
  ++S.n_rows;
}

void Forward::attention_sublayer(const LayerWeights& L, const BlockRows& br, const float* a, float* y,
                                 BlockTrace* trace) {
  const int n = br.n;
  const ModelConfig& c = cfg_;
  const int D = c.dim, H = c.n_heads, Dh = c.head_dim, R = c.rope_dim, N = Dh - R;
  const int HD = H * Dh, QR = c.q_lora_rank;
  const Rope& rope = L.ratio ? rope_compressed_ : rope_dense_;
  Arena::Frame frame(arena_);
  auto buf = [&](size_t count) { return arena_.alloc<float>(count); };
  const size_t nz = static_cast<size_t>(n);

  // Every projection of the normed input `a` in one dispatch: Q LoRA down, KV, the
  // compressors and the indexer weights (their Q8_0 / f32 operands are prepared once).
  const int r = L.ratio;
  const LayerState& S0 = *br.states[0];
  const int cw = S0.comp.width, iwid = S0.icomp.width;
  const int nI = c.index_heads, dI = c.index_head_dim;
  // Indexer scoring is needed only once some row sees more compressed rows than top-k.
  bool need_index = false;
  for (int t = 0; t < n && r == 4; ++t) need_index |= (br.pos[t] + 1) / 4 > c.index_topk;
  float* qa = buf(nz * QR);
  float* kvraw = buf(nz * Dh);
  float *ckv = nullptr, *cg = nullptr, *ikv = nullptr, *ig = nullptr, *iq = nullptr, *iw = nullptr;
  MatMul jobs[8];
  int nj = 0;
  auto job = [&](const MatView& w, const float* x, int64_t x_stride, float* out, int64_t y_stride) {
    jobs[nj++] = MatMul{w, x, x_stride, n, out, y_stride};
  };
  job(L.q_a, a, D, qa, QR);
  job(L.kv, a, D, kvraw, Dh);
  if (r != 0) {
    ckv = buf(nz * cw);
    cg = buf(nz * cw);
    job(L.comp.kv, a, D, ckv, cw);
    job(L.comp.gate, a, D, cg, cw);
    if (r == 4) {
      ikv = buf(nz * iwid);
      ig = buf(nz * iwid);
      job(L.icomp.kv, a, D, ikv, iwid);
      job(L.icomp.gate, a, D, ig, iwid);
      if (need_index) {
        iw = buf(nz * nI);
        job(L.idx_proj, a, D, iw, nI);
      }
    }
  }
  matmul_batch(pool_, arena_, jobs, nj);

  // Q: LoRA up (and the indexer's queries from the same rank vector), per-head unweighted
  // norm, RoPE on the tail.
  float* cq = buf(nz * QR);
  for (int t = 0; t < n; ++t)
    rms_norm(qa + t * static_cast<size_t>(QR), L.q_a_norm.data(), cq + t * static_cast<size_t>(QR), QR, c.norm_eps);
  float* q = buf(nz * HD);
  nj = 0;
  job(L.q_b, cq, QR, q, HD);
  if (need_index) {
    iq = buf(nz * nI * dI);
    job(L.idx_q_b, cq, QR, iq, static_cast<int64_t>(nI) * dI);
  }
  matmul_batch(pool_, arena_, jobs, nj);
  pool_.parallel_for(static_cast<int64_t>(n) * H, [&](int64_t b, int64_t e) {
    for (int64_t th = b; th < e; ++th) {
      const int64_t t = th / H;
      float* qh = q + th * Dh;
      rms_norm(qh, nullptr, qh, Dh, c.norm_eps);
      rope.apply(qh + N, br.pos[t]);
    }
  }, 64);
  // KV: one head, norm, RoPE, FP8 simulation on the nope dims.
  float* kv = buf(nz * Dh);
  for (int t = 0; t < n; ++t) {
    float* k = kv + static_cast<size_t>(t) * Dh;
    rms_norm(kvraw + static_cast<size_t>(t) * Dh, L.kv_norm.data(), k, Dh, c.norm_eps);
    rope.apply(k + N, br.pos[t]);
    if (qat_) fp8_sim64(k, N);
  }

  float* o = buf(nz * HD);
  // Visible rows: the raw window plus at most every compressed row this batch can reach.
  // Of those a ratio-4 layer attends to the window and at most top-k.
  int max_rows = 0, max_attended = 0;
  for (int t = 0; t < n; ++t) {
    const LayerState& St = *br.states[t];
    const int comp = r ? static_cast<int>(St.comp.n_rows + n / r + 1) : 0;
    max_rows = std::max(max_rows, St.raw.cap + comp);
    max_attended = std::max(max_attended, St.raw.cap + (r == 4 ? std::min(comp, c.index_topk) : comp));
  }
  const float** rows = arena_.alloc<const float*>(max_rows);
  const int threads = pool_.size();
  float* scores = buf(static_cast<size_t>(H) * max_attended);  // each head's row scores
  const cpu::AttendFn attend = cpu::attend_heads();
  std::vector<const float*>& window = scratch_.window_rows;
  const float scale = 1.0f / std::sqrt(static_cast<float>(Dh));
  float* wh = need_index ? buf(nI) : nullptr;  // the indexer's head weights of one token
  for (int t = 0; t < n; ++t) {
    LayerState& S = *br.states[t];
    const int64_t p = br.pos[t];
    S.raw.put(p, kv + static_cast<size_t>(t) * Dh);
    if (r != 0) {
      compressor_step(L.comp, S.comp, ckv + static_cast<size_t>(t) * cw, cg + static_cast<size_t>(t) * cw, p, false);
      if (r == 4)
        compressor_step(L.icomp, S.icomp, ikv + static_cast<size_t>(t) * iwid, ig + static_cast<size_t>(t) * iwid, p,
                        true);
    }
    S.raw.visible(p - c.window + 1, p, window);
    int nr = 0;
    for (const float* w : window) rows[nr++] = w;
    const int64_t n_comp = S.comp.n_rows;
    if (trace && trace->replay && r == 4) {
      if (trace->next_indexer >= trace->indexer.size())
        throw std::runtime_error("replayed trace has no indexer choice for this position");
      for (int i : trace->indexer[trace->next_indexer++]) {
        if (i < 0 || i >= n_comp) throw std::runtime_error("replayed indexer row out of range");
        if (nr >= max_attended) throw std::runtime_error("replayed trace selects too many indexer rows");
        rows[nr++] = S.comp.rows.data() + static_cast<size_t>(i) * Dh;
      }
    } else if (r == 4 && n_comp > c.index_topk) {
      // Indexer: score every compressed row, keep the top-k (ties: lower index first).
      const double t_index = times_ ? seconds_now() : 0.0;
      float* qi = iq + static_cast<size_t>(t) * nI * dI;
      for (int h = 0; h < nI; ++h) {
        float* qh = qi + static_cast<size_t>(h) * dI;
        rope_compressed_.apply(qh + dI - R, p);
        hadamard_scaled(qh, dI);
        if (qat_) fp4_sim32(qh, dI);
      }
      const float wscale = 1.0f / std::sqrt(static_cast<float>(dI * nI));
      const float* wt = iw + static_cast<size_t>(t) * nI;
      for (int h = 0; h < nI; ++h) wh[h] = wt[h] * wscale;
      std::vector<float>& iscore = scratch_.iscore;
      iscore.resize(n_comp);
      const cpu::IndexScoreFn index = cpu::index_scores();
      const float* keys = S.icomp.rows.data();
      pool_.parallel_for(n_comp, [&](int64_t b, int64_t e) {
        index(qi, wh, nI, dI, keys, b, e, iscore.data() + b);
      }, 64);
      std::vector<int>& sel = scratch_.sel;
      sel.resize(n_comp);
      std::iota(sel.begin(), sel.end(), 0);
      const std::vector<float>& isc = iscore;
      std::partial_sort(sel.begin(), sel.begin() + c.index_topk, sel.end(), [&](int x, int y2) {
        return isc[x] > isc[y2] || (isc[x] == isc[y2] && x < y2);
      });
      sel.resize(c.index_topk);
      std::sort(sel.begin(), sel.end());
      for (int i : sel) rows[nr++] = S.comp.rows.data() + static_cast<size_t>(i) * Dh;
      if (times_) times_->indexer_s += seconds_now() - t_index;
      if (trace) trace->indexer.push_back(sel);
    } else {
      if (r == 4 && trace) {
        std::vector<int> all(n_comp);
        std::iota(all.begin(), all.end(), 0);
        trace->indexer.push_back(all);
      }
      for (int64_t i = 0; i < n_comp; ++i) rows[nr++] = S.comp.rows.data() + static_cast<size_t>(i) * Dh;
    }
    // Sink softmax attention per head over the shared key/value rows, heads split over
    // threads (each head's arithmetic is the same whichever thread runs it).
    float* ot = o + static_cast<size_t>(t) * HD;
    const float* qt = q + static_cast<size_t>(t) * HD;
    const int parts = std::min(threads, std::max(1, H / 4));
    const double t_attend = times_ ? seconds_now() : 0.0;
    pool_.parallel_for(parts, [&](int64_t pb, int64_t pe) {
      for (int64_t part = pb; part < pe; ++part) {
        const int h0 = static_cast<int>(H * part / parts), h1 = static_cast<int>(H * (part + 1) / parts);
        attend(qt, h0, h1, Dh, rows, nr, L.sinks.data(), scale, ot, scores + static_cast<size_t>(h0) * max_attended);
        for (int h = h0; h < h1; ++h) rope.apply(ot + static_cast<size_t>(h) * Dh + N, p, true);
      }
    });
    if (times_) times_->attention_s += seconds_now() - t_attend;
  }

  // Grouped low-rank output projection: the 8 group products in one dispatch.
  const int G = c.o_groups, OL = c.o_lora_rank, group_in = (H / G) * Dh;
  float* low = buf(nz * G * OL);
  MatMul* gjobs = arena_.alloc<MatMul>(G);
  for (int g = 0; g < G; ++g)
    new (gjobs + g) MatMul{L.out_a.rows(static_cast<int64_t>(g) * OL, OL), o + static_cast<size_t>(g) * group_in, HD, n,
                           low + static_cast<size_t>(g) * OL, static_cast<int64_t>(G) * OL};
  matmul_batch(pool_, arena_, gjobs, G);
  matmul(pool_, arena_, L.out_b, low, n, static_cast<int64_t>(G) * OL, y, D);
}

static inline float silu(float x) { return x / (1.f + std::exp(-x)); }

// The routed experts' down projections of n rows of v for the chosen (token, slot) pairs,
// each scaled by its routing weight inside the SwiGLU, and (shared non-null) the shared
// expert's output; allocated in the caller's arena frame.
Forward::ExpertRows Forward::expert_products(const LayerWeights& L, const float* v, int n, const int* chosen,
                                             const float* weight, float* shared) {
  const ModelConfig& c = cfg_;
  const int D = c.dim, E = c.n_experts, K = c.n_experts_used, F = c.moe_inter_dim;
  const float lim = L.swiglu_limit;
  const size_t nz = static_cast<size_t>(n);
  // (token, slot) pairs grouped by expert: expert e's pairs are slots first[e]..first[e+1]
  // of the sorted order, so each expert is one matrix product over its tokens and its
  // weight rows are read once per chunk.
  const int P = n * K;
  int* first = arena_.alloc<int>(E + 1);
  int* sorted = arena_.alloc<int>(P);     // sorted slot -> pair t*K+k
  int* slot_of = arena_.alloc<int>(P);    // pair -> sorted slot
  std::fill(first, first + E + 1, 0);
  for (int i = 0; i < P; ++i) ++first[chosen[i] + 1];
  for (int e = 0; e < E; ++e) first[e + 1] += first[e];
  {
    int* fill = arena_.alloc<int>(E);
    std::copy(first, first + E, fill);
    for (int i = 0; i < P; ++i) {  // pairs in (token, slot) order within each expert
      const int s2 = fill[chosen[i]]++;
      sorted[s2] = i;
      slot_of[i] = s2;
    }
  }

  // Gate/up operands gathered per sorted slot. The quantized bytes of a token's vector are
  // the same whichever expert uses them, so each token is quantized once and copied.
  const quant::ActType act = operand_type(L.gate_exps.expert(0));
  const bool shared_act = operand_type(L.up_exps.expert(0)) == act;
  const size_t act_bytes = act == quant::ActType::F32 ? sizeof(float) * D : quant::activation_bytes(act, D);
  uint8_t* vq = nullptr;
  if (act != quant::ActType::F32) {
    vq = arena_.alloc<uint8_t>(nz * act_bytes);
    pool_.parallel_for(n, [&](int64_t tb, int64_t te) {
      for (int64_t t = tb; t < te; ++t)
        quant::quantize_activations(L.gate_exps.type, v + t * D, vq + t * act_bytes, D);
    }, 8);
  }
  uint8_t* xg = arena_.alloc<uint8_t>(static_cast<size_t>(P) * act_bytes);
  const uint8_t* src = act == quant::ActType::F32 ? reinterpret_cast<const uint8_t*>(v) : vq;
  for (int s2 = 0; s2 < P; ++s2)
    std::memcpy(xg + static_cast<size_t>(s2) * act_bytes, src + static_cast<size_t>(sorted[s2] / K) * act_bytes,
                act_bytes);
  // f32 copies for an up projection whose operand differs from gate's (not in published files).
  float* xf = nullptr;
  if (!shared_act) {
    xf = arena_.alloc<float>(static_cast<size_t>(P) * D);
    for (int s2 = 0; s2 < P; ++s2)
      std::memcpy(xf + static_cast<size_t>(s2) * D, v + static_cast<size_t>(sorted[s2] / K) * D, sizeof(float) * D);
  }

  float* gbuf = arena_.alloc<float>(static_cast<size_t>(P) * F);
  float* ubuf = arena_.alloc<float>(static_cast<size_t>(P) * F);
  const bool has_shared = shared != nullptr;
  float* sg = has_shared ? arena_.alloc<float>(nz * F) : nullptr;
  float* su = has_shared ? arena_.alloc<float>(nz * F) : nullptr;
  int n_used = 0;
  for (int e = 0; e < E; ++e) n_used += first[e + 1] > first[e];
  MatMul* jobs = arena_.alloc<MatMul>(2 * n_used + 3);
  int nj = 0;
  auto add = [&](const MatMul& j) { new (jobs + nj++) MatMul(j); };
  for (int e = 0; e < E; ++e) {
    const int m = first[e + 1] - first[e];
    if (m == 0) continue;
    MatMul g{L.gate_exps.expert(e), nullptr, D, m, gbuf + static_cast<size_t>(first[e]) * F, F};
    g.xq = xg + static_cast<size_t>(first[e]) * act_bytes;
    g.xq_stride = act_bytes;
    if (act == quant::ActType::F32) {
      g.x = reinterpret_cast<const float*>(g.xq);
      g.xq = nullptr;
    }
    add(g);
    MatMul u = g;
    u.w = L.up_exps.expert(e);
    u.y = ubuf + static_cast<size_t>(first[e]) * F;
    if (!shared_act) {
      u.xq = nullptr;
      u.x = xf + static_cast<size_t>(first[e]) * D;
    }
    add(u);
  }
  if (has_shared) {
    add(MatMul{L.sh_gate, v, D, n, sg, F});
    add(MatMul{L.sh_up, v, D, n, su, F});
  }
  matmul_batch(pool_, arena_, jobs, nj);

  // SwiGLU (clamped), scaled by the routing weight for routed pairs.
  auto swiglu_rows = [&](float* g, const float* u, int64_t r0, int64_t r1, const int* pair_of_row) {
    for (int64_t i = r0; i < r1; ++i) {
      const float sc = pair_of_row ? weight[pair_of_row[i]] : 1.f;
      float* gi = g + i * F;
      const float* ui = u + i * F;
      for (int f = 0; f < F; ++f) {
        float gv = gi[f], uv = ui[f];
        if (lim > 0.f) {
          gv = std::min(gv, lim);
          uv = std::clamp(uv, -lim, lim);
        }
        float mv = silu(gv) * uv;
        if (pair_of_row) mv *= sc;
        gi[f] = mv;
      }
    }
  };
  pool_.parallel_for(P + (has_shared ? n : 0), [&](int64_t b, int64_t e) {
    const int64_t pb = std::min<int64_t>(b, P), pe = std::min<int64_t>(e, P);
    if (pb < pe) swiglu_rows(gbuf, ubuf, pb, pe, sorted);
    if (has_shared && e > P) swiglu_rows(sg, su, std::max<int64_t>(b, P) - P, e - P, nullptr);
  }, 2);

  // Down projections: every expert's and the shared expert's in one dispatch.
  float* dbuf = arena_.alloc<float>(static_cast<size_t>(P) * D);
  nj = 0;
  for (int e = 0; e < E; ++e) {
    const int m = first[e + 1] - first[e];
    if (m == 0) continue;
    add(MatMul{L.down_exps.expert(e), gbuf + static_cast<size_t>(first[e]) * F, F, m,
                    dbuf + static_cast<size_t>(first[e]) * D, D});
  }
  if (has_shared) add(MatMul{L.sh_down, sg, F, n, shared, D});
  matmul_batch(pool_, arena_, jobs, nj);
  return ExpertRows{dbuf, slot_of};
}

void Forward::routed_experts(const LayerWeights& L, const float* v, int n, const int32_t* chosen,
                             const float* weight, float* pairs) {
  const int D = cfg_.dim, E = cfg_.n_experts, K = cfg_.n_experts_used;
  for (int i = 0; i < n * K; ++i)
    if (chosen[i] < 0 || chosen[i] >= E) throw std::runtime_error("routed expert id out of range");
  Arena::Frame frame(arena_);
  const ExpertRows ex = expert_products(L, v, n, reinterpret_cast<const int*>(chosen), weight, nullptr);
  pool_.parallel_for(static_cast<int64_t>(n) * K, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      std::copy_n(ex.rows + static_cast<size_t>(ex.slot_of[i]) * D, D, pairs + static_cast<size_t>(i) * D);
  }, 8);
}

void Forward::moe_sublayer(const LayerWeights& L, const float* v, const int32_t* tokens, int n,
                           float* y, BlockTrace* trace) {
  const ModelConfig& c = cfg_;
  const int D = c.dim, E = c.n_experts, K = c.n_experts_used;
  Arena::Frame frame(arena_);
  const size_t nz = static_cast<size_t>(n);
  float* logits = arena_.alloc<float>(nz * E);
  matmul(pool_, arena_, L.router, v, n, D, logits, E);
  int* chosen = arena_.alloc<int>(nz * K);
  float* weight = arena_.alloc<float>(nz * K);
  float* pi = arena_.alloc<float>(E);
  float* biased = arena_.alloc<float>(E);
  int* order = arena_.alloc<int>(E);
  for (int t = 0; t < n; ++t) {
    const float* lg = logits + static_cast<size_t>(t) * E;
    for (int e = 0; e < E; ++e) pi[e] = std::sqrt(softplus(lg[e]));
    int* ch = chosen + static_cast<size_t>(t) * K;
    if (trace && trace->replay) {
      if (trace->next_expert >= trace->experts.size() || trace->experts[trace->next_expert].size() != static_cast<size_t>(K))
        throw std::runtime_error("replayed trace has no expert choice for this position");
      std::copy_n(trace->experts[trace->next_expert++].begin(), K, ch);
      for (int k = 0; k < K; ++k)
        if (ch[k] < 0 || ch[k] >= E) throw std::runtime_error("replayed expert id out of range");
    } else if (L.hash) {
      for (int k = 0; k < K; ++k) {
        int32_t id;
        std::memcpy(&id, L.tid2eid + static_cast<size_t>(tokens[t]) * K + k, 4);
        ch[k] = id;
      }
    } else {
      for (int e = 0; e < E; ++e) biased[e] = pi[e] + (L.router_bias.empty() ? 0.f : L.router_bias[e]);
      std::iota(order, order + E, 0);
      std::partial_sort(order, order + K, order + E, [&](int a, int b) {
        return biased[a] > biased[b] || (biased[a] == biased[b] && a < b);
      });
      for (int k = 0; k < K; ++k) ch[k] = order[k];
    }
    float sum = 0.f;
    for (int k = 0; k < K; ++k) sum += pi[ch[k]];
    float* wt = weight + static_cast<size_t>(t) * K;
    for (int k = 0; k < K; ++k) {
      float wk = c.weights_norm ? pi[ch[k]] / std::max(sum, 6.103515625e-05f) : pi[ch[k]];
      wt[k] = wk * c.route_scale;
    }
    if (trace && !trace->replay) {
      trace->experts.emplace_back(ch, ch + K);
      trace->weights.emplace_back(wt, wt + K);
    }
  }

  const bool has_shared = L.sh_gate.valid();
  float* shared = has_shared ? arena_.alloc<float>(nz * D) : nullptr;
  const ExpertRows ex = expert_products(L, v, n, chosen, weight, shared);

  // Sum in slot order, then the shared expert, whatever the grouping above.
  pool_.parallel_for(n, [&](int64_t tb, int64_t te) {
    for (int64_t t = tb; t < te; ++t) {
      float* yt = y + t * D;
      std::fill(yt, yt + D, 0.f);
      for (int k = 0; k < K; ++k) {
        const float* ck = ex.rows + static_cast<size_t>(ex.slot_of[t * K + k]) * D;
        for (int d = 0; d < D; ++d) yt[d] += ck[d];
      }
      if (has_shared) {
        const float* st = shared + t * D;
        for (int d = 0; d < D; ++d) yt[d] += st[d];
      }
    }
  }, 4);
}

void Forward::block(const LayerWeights& L, const BlockRows& rows, float* X, BlockTrace* trace) {
  const ModelConfig& c = cfg_;
  const int n = rows.n;
  const int D = c.dim, hc = c.hc;
  Arena::Frame frame(arena_);
  const size_t nD = static_cast<size_t>(n) * D;
  float* u = arena_.alloc<float>(nD);
  float* a = arena_.alloc<float>(nD);
  float* y = arena_.alloc<float>(nD);
  float* post = arena_.alloc<float>(static_cast<size_t>(n) * hc);
  float* comb = arena_.alloc<float>(static_cast<size_t>(n) * hc * hc);
  auto norm_all = [&](const std::vector<float>& w) {
    pool_.parallel_for(n, [&](int64_t tb, int64_t te) {
      for (int64_t t = tb; t < te; ++t) rms_norm(u + t * D, w.data(), a + t * D, D, c.norm_eps);
    }, 16);
  };

  hc_pre(L.hc_attn_fn, L.hc_attn_scale.data(), L.hc_attn_base.data(), X, n, u, post, comb);
  norm_all(L.attn_norm);
  attention_sublayer(L, rows, a, y, trace);
  hc_post(y, X, n, post, comb);

  hc_pre(L.hc_ffn_fn, L.hc_ffn_scale.data(), L.hc_ffn_base.data(), X, n, u, post, comb);
  norm_all(L.ffn_norm);
  moe_sublayer(L, a, rows.tokens, n, y, trace);
  hc_post(y, X, n, post, comb);
}

void Forward::head(const HeadWeights& Hw, const float* X, int n, float* logits) {
  const ModelConfig& c = cfg_;
  const int D = c.dim, hc = c.hc, hcD = hc * D;
  Arena::Frame frame(arena_);
  float* m = arena_.alloc<float>(static_cast<size_t>(n) * hc);
  float* h = arena_.alloc<float>(static_cast<size_t>(n) * D);
  float* hn = arena_.alloc<float>(static_cast<size_t>(n) * D);
  matmul(pool_, arena_, Hw.hc_fn, X, n, hcD, m, hc);
  for (int t = 0; t < n; ++t) {
    const float* x = X + static_cast<size_t>(t) * hcD;
    const float f = rms_factor(x, hcD, c.norm_eps);
    float* ht = h + static_cast<size_t>(t) * D;
    std::fill(ht, ht + D, 0.f);
    for (int s = 0; s < hc; ++s) {
      const float ws = sigmoid(m[static_cast<size_t>(t) * hc + s] * f * Hw.hc_scale[0] + Hw.hc_base[s]) + c.hc_eps;
      for (int d = 0; d < D; ++d) ht[d] += ws * x[s * D + d];
    }
    rms_norm(ht, Hw.norm.data(), hn + static_cast<size_t>(t) * D, D, c.norm_eps);
  }
  matmul(pool_, arena_, w_.output, hn, n, D, logits, c.vocab);
}

void Forward::mtp_input(const MtpWeights& M, const float* hin, int32_t token, float* X) {
  const ModelConfig& c = cfg_;
  const int D = c.dim, hc = c.hc;
  std::vector<float> emb(D), e(D), E(D);
  quant::dequantize_row(w_.token_embd.type, w_.token_embd.row(token), emb.data(), D);
  rms_norm(emb.data(), M.enorm.data(), e.data(), D, c.norm_eps);
  matvec(pool_, M.e_proj, e.data(), E.data());
  std::vector<float> hn(static_cast<size_t>(hc) * D), hp(hn.size());
  for (int s = 0; s < hc; ++s)
    rms_norm(hin + static_cast<size_t>(s) * D, M.hnorm.data(), hn.data() + static_cast<size_t>(s) * D, D, c.norm_eps);
  matmul(pool_, M.h_proj, hn.data(), hc, D, hp.data(), D);
  for (int s = 0; s < hc; ++s)
    for (int d = 0; d < D; ++d) X[static_cast<size_t>(s) * D + d] = E[d] + hp[static_cast<size_t>(s) * D + d];
}

void Forward::mtp_step(const MtpWeights& M, LayerState& S, const float* hin, int32_t token, int64_t pos,
                       float* logits, float* hidden) {
  S.raw.drop_from(pos);
  std::vector<float> X(static_cast<size_t>(cfg_.hc) * cfg_.dim);
  mtp_input(M, hin, token, X.data());
  LayerState* st = &S;
  block(M.block, BlockRows{&st, &pos, &token, 1}, X.data());
  if (hidden) std::copy(X.begin(), X.end(), hidden);
  if (logits) head(M.head, X.data(), 1, logits);
}

}  // namespace ds4::cpu
