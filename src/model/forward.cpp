#include "model/forward.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <stdexcept>

#include "quant/quant.h"

namespace ds4::model {

using cpu::matmul;

Forward::Forward(const Weights& w, cpu::ThreadPool& pool, bool qat_simulation)
    : w_(w), cfg_(w.config), pool_(pool), qat_(qat_simulation) {
  const ModelConfig& c = cfg_;
  rope_dense_ = Rope::make(c.rope_dim, c.rope_base, false, 0, 1.f, 0.f, 0.f);
  rope_compressed_ = Rope::make(c.rope_dim, c.compress_rope_base, c.yarn_orig_ctx > 0, c.yarn_orig_ctx,
                                c.yarn_factor, c.yarn_beta_fast, c.yarn_beta_slow);
}

void Forward::init_state(const LayerWeights& L, LayerState& S, int ring_cap) const {
  S.raw.init(ring_cap, cfg_.head_dim);
  S.comp.init(L.ratio, cfg_.head_dim);
  S.icomp.init(L.ratio == 4 ? 4 : 0, cfg_.index_head_dim);
}

void Forward::embed(const int32_t* tokens, int n, float* X) const {
  const int D = cfg_.dim, hc = cfg_.hc;
  for (int t = 0; t < n; ++t) {
    float* x = X + static_cast<size_t>(t) * hc * D;
    quant::dequantize_row(w_.token_embd.type, w_.token_embd.row(tokens[t]), x, D);
    for (int s = 1; s < hc; ++s) std::memcpy(x + s * D, x, sizeof(float) * D);
  }
}

void Forward::hc_pre(const MatView& fn, const float* scale, const float* base, const float* X,
                     int n, float* u, float* post, float* comb) const {
  const int D = cfg_.dim, hc = cfg_.hc, hcD = hc * D, mix = (2 + hc) * hc;
  std::vector<float> m(static_cast<size_t>(n) * mix);
  matmul(pool_, fn, X, n, hcD, m.data(), mix);
  std::vector<float> pre(hc);
  for (int t = 0; t < n; ++t) {
    const float* x = X + static_cast<size_t>(t) * hcD;
    float* mt = m.data() + static_cast<size_t>(t) * mix;
    const float f = rms_factor(x, hcD, cfg_.norm_eps);
    for (int i = 0; i < mix; ++i) mt[i] *= f;
    hc_split_sinkhorn(mt, scale, base, hc, cfg_.sinkhorn_iters, cfg_.hc_eps, pre.data(),
                      post + static_cast<size_t>(t) * hc, comb + static_cast<size_t>(t) * hc * hc);
    float* ut = u + static_cast<size_t>(t) * D;
    for (int d = 0; d < D; ++d) {
      float acc = 0.f;
      for (int s = 0; s < hc; ++s) acc += pre[s] * x[s * D + d];
      ut[d] = acc;
    }
  }
}

void Forward::hc_post(const float* y, float* X, int n, const float* post, const float* comb) const {
  const int D = cfg_.dim, hc = cfg_.hc;
  std::vector<float> out(static_cast<size_t>(hc) * D);
  for (int t = 0; t < n; ++t) {
    float* x = X + static_cast<size_t>(t) * hc * D;
    const float* yt = y + static_cast<size_t>(t) * D;
    const float* pt = post + static_cast<size_t>(t) * hc;
    const float* C = comb + static_cast<size_t>(t) * hc * hc;
    for (int j = 0; j < hc; ++j) {
      for (int d = 0; d < D; ++d) {
        float acc = pt[j] * yt[d];
        for (int i = 0; i < hc; ++i) acc += C[i * hc + j] * x[i * D + d];
        out[j * D + d] = acc;
      }
    }
    std::memcpy(x, out.data(), sizeof(float) * hc * D);
  }
}

void Forward::compressor_step(const CompressorWeights& W, CompressorState& S, const float* kv,
                              const float* gate, int64_t pos, bool indexer) const {
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
  std::vector<float> P(d);
  const int cand = (r == 4) ? 8 : r;
  std::vector<float> e(cand);
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
  std::vector<float> z(d);
  rms_norm(P.data(), W.norm.data(), z.data(), d, cfg_.norm_eps);
  const int R = cfg_.rope_dim;
  rope_compressed_.apply(z.data() + d - R, static_cast<int64_t>(r) * S.n_rows);
  if (indexer) {
    hadamard_scaled(z.data(), d);
    if (qat_) fp4_sim32(z.data(), d);
  } else {
    if (qat_) fp8_sim64(z.data(), d - R);
  }
  S.rows.insert(S.rows.end(), z.begin(), z.end());
  ++S.n_rows;
}

void Forward::attention_sublayer(const LayerWeights& L, LayerState& S, const float* a, int n,
                                 int64_t pos0, float* y, BlockTrace* trace) const {
  const ModelConfig& c = cfg_;
  const int D = c.dim, H = c.n_heads, Dh = c.head_dim, R = c.rope_dim, N = Dh - R;
  const int HD = H * Dh;
  const Rope& rope = L.ratio ? rope_compressed_ : rope_dense_;

  // Q: LoRA, per-head unweighted norm, RoPE on the tail.
  std::vector<float> qa(static_cast<size_t>(n) * c.q_lora_rank), cq(qa.size());
  matmul(pool_, L.q_a, a, n, D, qa.data(), c.q_lora_rank);
  for (int t = 0; t < n; ++t)
    rms_norm(qa.data() + static_cast<size_t>(t) * c.q_lora_rank, L.q_a_norm.data(),
             cq.data() + static_cast<size_t>(t) * c.q_lora_rank, c.q_lora_rank, c.norm_eps);
  std::vector<float> q(static_cast<size_t>(n) * HD);
  matmul(pool_, L.q_b, cq.data(), n, c.q_lora_rank, q.data(), HD);
  for (int t = 0; t < n; ++t) {
    for (int h = 0; h < H; ++h) {
      float* qh = q.data() + static_cast<size_t>(t) * HD + static_cast<size_t>(h) * Dh;
      rms_norm(qh, nullptr, qh, Dh, c.norm_eps);
      rope.apply(qh + N, pos0 + t);
    }
  }
  // KV: one head, norm, RoPE, FP8 simulation on the nope dims.
  std::vector<float> kvraw(static_cast<size_t>(n) * Dh), kv(kvraw.size());
  matmul(pool_, L.kv, a, n, D, kvraw.data(), Dh);
  for (int t = 0; t < n; ++t) {
    float* k = kv.data() + static_cast<size_t>(t) * Dh;
    rms_norm(kvraw.data() + static_cast<size_t>(t) * Dh, L.kv_norm.data(), k, Dh, c.norm_eps);
    rope.apply(k + N, pos0 + t);
    if (qat_) fp8_sim64(k, N);
  }
  // Compressor projections.
  std::vector<float> ckv, cg, ikv, ig, iq, iw;
  const int r = L.ratio;
  const int cw = S.comp.width, iwid = S.icomp.width;
  const int nI = c.index_heads, dI = c.index_head_dim;
  bool need_index = false;
  if (r != 0) {
    ckv.resize(static_cast<size_t>(n) * cw);
    cg.resize(ckv.size());
    matmul(pool_, L.comp.kv, a, n, D, ckv.data(), cw);
    matmul(pool_, L.comp.gate, a, n, D, cg.data(), cw);
    if (r == 4) {
      ikv.resize(static_cast<size_t>(n) * iwid);
      ig.resize(ikv.size());
      matmul(pool_, L.icomp.kv, a, n, D, ikv.data(), iwid);
      matmul(pool_, L.icomp.gate, a, n, D, ig.data(), iwid);
      // Scoring is needed only once some token sees more rows than top-k.
      need_index = (pos0 + n) / 4 > c.index_topk;
      if (need_index) {
        iq.resize(static_cast<size_t>(n) * nI * dI);
        iw.resize(static_cast<size_t>(n) * nI);
        matmul(pool_, L.idx_q_b, cq.data(), n, c.q_lora_rank, iq.data(), nI * dI);
        matmul(pool_, L.idx_proj, a, n, D, iw.data(), nI);
      }
    }
  }

  std::vector<float> o(static_cast<size_t>(n) * HD);
  std::vector<const float*> rows;
  std::vector<int> sel;
  std::vector<float> iscore;
  const float scale = 1.0f / std::sqrt(static_cast<float>(Dh));
  for (int t = 0; t < n; ++t) {
    const int64_t p = pos0 + t;
    S.raw.put(p, kv.data() + static_cast<size_t>(t) * Dh);
    if (r != 0) {
      compressor_step(L.comp, S.comp, ckv.data() + static_cast<size_t>(t) * cw,
                      cg.data() + static_cast<size_t>(t) * cw, p, false);
      if (r == 4)
        compressor_step(L.icomp, S.icomp, ikv.data() + static_cast<size_t>(t) * iwid,
                        ig.data() + static_cast<size_t>(t) * iwid, p, true);
    }
    S.raw.visible(p - c.window + 1, p, rows);
    const int64_t n_comp = S.comp.n_rows;
    if (trace && trace->replay && r == 4) {
      if (trace->next_indexer >= trace->indexer.size())
        throw std::runtime_error("replayed trace has no indexer choice for this position");
      for (int i : trace->indexer[trace->next_indexer++]) {
        if (i < 0 || i >= n_comp) throw std::runtime_error("replayed indexer row out of range");
        rows.push_back(S.comp.rows.data() + static_cast<size_t>(i) * Dh);
      }
    } else if (r == 4 && n_comp > c.index_topk) {
      // Indexer: score every compressed row, keep the top-k (ties: lower index first).
      float* qi = iq.data() + static_cast<size_t>(t) * nI * dI;
      for (int h = 0; h < nI; ++h) {
        float* qh = qi + static_cast<size_t>(h) * dI;
        rope_compressed_.apply(qh + dI - R, p);
        hadamard_scaled(qh, dI);
        if (qat_) fp4_sim32(qh, dI);
      }
      const float wscale = 1.0f / std::sqrt(static_cast<float>(dI * nI));
      const float* wt = iw.data() + static_cast<size_t>(t) * nI;
      iscore.assign(n_comp, 0.f);
      const quant::Kernels& k = quant::kernels();
      pool_.parallel_for(n_comp, [&](int64_t b, int64_t e) {
        for (int64_t row = b; row < e; ++row) {
          const float* kr = S.icomp.rows.data() + static_cast<size_t>(row) * dI;
          float s = 0.f;
          for (int h = 0; h < nI; ++h) {
            float dot = k.dot_f32(qi + static_cast<size_t>(h) * dI, kr, dI);
            s += (wt[h] * wscale) * std::max(0.f, dot);
          }
          iscore[row] = s;
        }
      }, 64);
      sel.resize(n_comp);
      std::iota(sel.begin(), sel.end(), 0);
      std::partial_sort(sel.begin(), sel.begin() + c.index_topk, sel.end(), [&](int x, int y2) {
        return iscore[x] > iscore[y2] || (iscore[x] == iscore[y2] && x < y2);
      });
      sel.resize(c.index_topk);
      std::sort(sel.begin(), sel.end());
      for (int i : sel) rows.push_back(S.comp.rows.data() + static_cast<size_t>(i) * Dh);
      if (trace) trace->indexer.push_back(sel);
    } else {
      if (r == 4 && trace) {
        std::vector<int> all(n_comp);
        std::iota(all.begin(), all.end(), 0);
        trace->indexer.push_back(all);
      }
      for (int64_t i = 0; i < n_comp; ++i) rows.push_back(S.comp.rows.data() + static_cast<size_t>(i) * Dh);
    }
    // Sink softmax attention per head over the shared key/value rows.
    const int nr = static_cast<int>(rows.size());
    float* ot = o.data() + static_cast<size_t>(t) * HD;
    const float* qt = q.data() + static_cast<size_t>(t) * HD;
    pool_.parallel_for(H, [&](int64_t hb, int64_t he) {
      const quant::Kernels& k = quant::kernels();
      std::vector<float> s(nr);
      for (int64_t h = hb; h < he; ++h) {
        const float* qh = qt + h * Dh;
        const float sink = L.sinks[h];
        float mx = sink;
        for (int j = 0; j < nr; ++j) {
          s[j] = k.dot_f32(qh, rows[j], Dh) * scale;
          mx = std::max(mx, s[j]);
        }
        float z = std::exp(sink - mx);
        for (int j = 0; j < nr; ++j) {
          s[j] = std::exp(s[j] - mx);
          z += s[j];
        }
        float* oh = ot + h * Dh;
        std::fill(oh, oh + Dh, 0.f);
        for (int j = 0; j < nr; ++j) {
          const float pj = s[j] / z;
          const float* kr = rows[j];
          for (int d = 0; d < Dh; ++d) oh[d] += pj * kr[d];
        }
        rope.apply(oh + N, p, true);
      }
    }, H >= 8 ? 4 : H);
  }

  // Grouped low-rank output projection.
  const int G = c.o_groups, OL = c.o_lora_rank, group_in = (H / G) * Dh;
  std::vector<float> low(static_cast<size_t>(n) * G * OL);
  for (int g = 0; g < G; ++g)
    matmul(pool_, L.out_a.rows(static_cast<int64_t>(g) * OL, OL), o.data() + static_cast<size_t>(g) * group_in,
           n, HD, low.data() + static_cast<size_t>(g) * OL, static_cast<int64_t>(G) * OL);
  matmul(pool_, L.out_b, low.data(), n, static_cast<int64_t>(G) * OL, y, D);
}

static inline float silu(float x) { return x / (1.f + std::exp(-x)); }

void Forward::moe_sublayer(const LayerWeights& L, const float* v, const int32_t* tokens, int n,
                           float* y, BlockTrace* trace) const {
  const ModelConfig& c = cfg_;
  const int D = c.dim, E = c.n_experts, K = c.n_experts_used, F = c.moe_inter_dim;
  const float lim = L.swiglu_limit;
  std::vector<float> logits(static_cast<size_t>(n) * E);
  matmul(pool_, L.router, v, n, D, logits.data(), E);
  std::vector<int> chosen(static_cast<size_t>(n) * K);
  std::vector<float> weight(static_cast<size_t>(n) * K);
  std::vector<float> pi(E), biased(E);
  std::vector<int> order(E);
  for (int t = 0; t < n; ++t) {
    const float* lg = logits.data() + static_cast<size_t>(t) * E;
    for (int e = 0; e < E; ++e) pi[e] = std::sqrt(softplus(lg[e]));
    int* ch = chosen.data() + static_cast<size_t>(t) * K;
    if (trace && trace->replay) {
      if (trace->next_expert >= trace->experts.size() || trace->experts[trace->next_expert].size() != static_cast<size_t>(K))
        throw std::runtime_error("replayed trace has no expert choice for this position");
      std::copy_n(trace->experts[trace->next_expert++].begin(), K, ch);
    } else if (L.hash) {
      for (int k = 0; k < K; ++k) {
        int32_t id;
        std::memcpy(&id, L.tid2eid + static_cast<size_t>(tokens[t]) * K + k, 4);
        ch[k] = id;
      }
    } else {
      for (int e = 0; e < E; ++e) biased[e] = pi[e] + (L.router_bias.empty() ? 0.f : L.router_bias[e]);
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + K, order.end(), [&](int a, int b) {
        return biased[a] > biased[b] || (biased[a] == biased[b] && a < b);
      });
      for (int k = 0; k < K; ++k) ch[k] = order[k];
    }
    float sum = 0.f;
    for (int k = 0; k < K; ++k) sum += pi[ch[k]];
    float* wt = weight.data() + static_cast<size_t>(t) * K;
    for (int k = 0; k < K; ++k) {
      float wk = c.weights_norm ? pi[ch[k]] / std::max(sum, 6.103515625e-05f) : pi[ch[k]];
      wt[k] = wk * c.route_scale;
    }
    if (trace && !trace->replay) {
      trace->experts.emplace_back(ch, ch + K);
      trace->weights.emplace_back(wt, wt + K);
    }
  }

  auto swiglu = [&](float* g, const float* u, int count, const float* scale_per_row) {
    for (int i = 0; i < count; ++i) {
      for (int f = 0; f < F; ++f) {
        float gv = g[static_cast<size_t>(i) * F + f], uv = u[static_cast<size_t>(i) * F + f];
        if (lim > 0.f) {
          gv = std::min(gv, lim);
          uv = std::clamp(uv, -lim, lim);
        }
        float m = silu(gv) * uv;
        if (scale_per_row) m *= scale_per_row[i];
        g[static_cast<size_t>(i) * F + f] = m;
      }
    }
  };

  // Routed experts, grouped by expert so each expert's rows are read once per chunk.
  std::vector<float> contrib(static_cast<size_t>(n) * K * D);
  std::vector<std::vector<int>> users(E);  // entries t*K+k
  for (int t = 0; t < n; ++t)
    for (int k = 0; k < K; ++k) users[chosen[static_cast<size_t>(t) * K + k]].push_back(t * K + k);
  std::vector<float> vin, gbuf, ubuf, wrow, dbuf;
  for (int e = 0; e < E; ++e) {
    const auto& us = users[e];
    if (us.empty()) continue;
    const int m = static_cast<int>(us.size());
    vin.resize(static_cast<size_t>(m) * D);
    wrow.resize(m);
    for (int i = 0; i < m; ++i) {
      std::memcpy(vin.data() + static_cast<size_t>(i) * D, v + static_cast<size_t>(us[i] / K) * D, sizeof(float) * D);
      wrow[i] = weight[us[i]];
    }
    gbuf.resize(static_cast<size_t>(m) * F);
    ubuf.resize(gbuf.size());
    matmul(pool_, L.gate_exps.expert(e), vin.data(), m, D, gbuf.data(), F);
    matmul(pool_, L.up_exps.expert(e), vin.data(), m, D, ubuf.data(), F);
    swiglu(gbuf.data(), ubuf.data(), m, wrow.data());
    dbuf.resize(static_cast<size_t>(m) * D);
    matmul(pool_, L.down_exps.expert(e), gbuf.data(), m, F, dbuf.data(), D);
    for (int i = 0; i < m; ++i)
      std::memcpy(contrib.data() + static_cast<size_t>(us[i]) * D, dbuf.data() + static_cast<size_t>(i) * D,
                  sizeof(float) * D);
  }
  // Shared expert.
  std::vector<float> shared(static_cast<size_t>(n) * D, 0.f);
  if (L.sh_gate.valid()) {
    std::vector<float> sg(static_cast<size_t>(n) * F), su(sg.size());
    matmul(pool_, L.sh_gate, v, n, D, sg.data(), F);
    matmul(pool_, L.sh_up, v, n, D, su.data(), F);
    swiglu(sg.data(), su.data(), n, nullptr);
    matmul(pool_, L.sh_down, sg.data(), n, F, shared.data(), D);
  }
  // Sum in slot order, then the shared expert, whatever the grouping above.
  for (int t = 0; t < n; ++t) {
    float* yt = y + static_cast<size_t>(t) * D;
    std::fill(yt, yt + D, 0.f);
    for (int k = 0; k < K; ++k) {
      const float* ck = contrib.data() + (static_cast<size_t>(t) * K + k) * D;
      for (int d = 0; d < D; ++d) yt[d] += ck[d];
    }
    const float* st = shared.data() + static_cast<size_t>(t) * D;
    for (int d = 0; d < D; ++d) yt[d] += st[d];
  }
}

void Forward::block(const LayerWeights& L, LayerState& S, float* X, const int32_t* tokens, int n,
                    int64_t pos0, BlockTrace* trace) const {
  const ModelConfig& c = cfg_;
  const int D = c.dim, hc = c.hc;
  std::vector<float> u(static_cast<size_t>(n) * D), a(u.size()), y(u.size());
  std::vector<float> post(static_cast<size_t>(n) * hc), comb(static_cast<size_t>(n) * hc * hc);

  hc_pre(L.hc_attn_fn, L.hc_attn_scale.data(), L.hc_attn_base.data(), X, n, u.data(), post.data(), comb.data());
  for (int t = 0; t < n; ++t)
    rms_norm(u.data() + static_cast<size_t>(t) * D, L.attn_norm.data(), a.data() + static_cast<size_t>(t) * D, D,
             c.norm_eps);
  attention_sublayer(L, S, a.data(), n, pos0, y.data(), trace);
  hc_post(y.data(), X, n, post.data(), comb.data());

  hc_pre(L.hc_ffn_fn, L.hc_ffn_scale.data(), L.hc_ffn_base.data(), X, n, u.data(), post.data(), comb.data());
  for (int t = 0; t < n; ++t)
    rms_norm(u.data() + static_cast<size_t>(t) * D, L.ffn_norm.data(), a.data() + static_cast<size_t>(t) * D, D,
             c.norm_eps);
  moe_sublayer(L, a.data(), tokens, n, y.data(), trace);
  hc_post(y.data(), X, n, post.data(), comb.data());
}

void Forward::head(const HeadWeights& Hw, const float* X, int n, float* logits) const {
  const ModelConfig& c = cfg_;
  const int D = c.dim, hc = c.hc, hcD = hc * D;
  std::vector<float> m(static_cast<size_t>(n) * hc), h(static_cast<size_t>(n) * D), hn(h.size());
  matmul(pool_, Hw.hc_fn, X, n, hcD, m.data(), hc);
  for (int t = 0; t < n; ++t) {
    const float* x = X + static_cast<size_t>(t) * hcD;
    const float f = rms_factor(x, hcD, c.norm_eps);
    float* ht = h.data() + static_cast<size_t>(t) * D;
    std::fill(ht, ht + D, 0.f);
    for (int s = 0; s < hc; ++s) {
      const float ws = sigmoid(m[static_cast<size_t>(t) * hc + s] * f * Hw.hc_scale[0] + Hw.hc_base[s]) + c.hc_eps;
      for (int d = 0; d < D; ++d) ht[d] += ws * x[s * D + d];
    }
    rms_norm(ht, Hw.norm.data(), hn.data() + static_cast<size_t>(t) * D, D, c.norm_eps);
  }
  matmul(pool_, w_.output, hn.data(), n, D, logits, c.vocab);
}

void Forward::mtp_input(const MtpWeights& M, const float* hin, int32_t token, float* X) const {
  const ModelConfig& c = cfg_;
  const int D = c.dim, hc = c.hc;
  std::vector<float> emb(D), e(D), E(D);
  quant::dequantize_row(w_.token_embd.type, w_.token_embd.row(token), emb.data(), D);
  rms_norm(emb.data(), M.enorm.data(), e.data(), D, c.norm_eps);
  cpu::matvec(pool_, M.e_proj, e.data(), E.data());
  std::vector<float> hn(static_cast<size_t>(hc) * D), hp(hn.size());
  for (int s = 0; s < hc; ++s)
    rms_norm(hin + static_cast<size_t>(s) * D, M.hnorm.data(), hn.data() + static_cast<size_t>(s) * D, D, c.norm_eps);
  matmul(pool_, M.h_proj, hn.data(), hc, D, hp.data(), D);
  for (int s = 0; s < hc; ++s)
    for (int d = 0; d < D; ++d) X[static_cast<size_t>(s) * D + d] = E[d] + hp[static_cast<size_t>(s) * D + d];
}

}  // namespace ds4::model
