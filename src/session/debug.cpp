#include "session/debug.h"

#include <algorithm>

#include "session/session_impl.h"

namespace ds4::debug {

namespace {
EngineImpl& impl(Engine& e) { return dynamic_cast<EngineImpl&>(e); }
}  // namespace

std::vector<float> embed(Engine& e, const std::vector<int32_t>& tokens) {
  auto& E = impl(e);
  const ModelConfig& c = E.config();
  for (int32_t t : tokens)
    if (t < 0 || t >= c.vocab) throw Error(Error::Kind::InvalidArgument, "token id out of range");
  std::vector<float> X(tokens.size() * c.hc * c.dim);
  E.forward().embed(tokens.data(), static_cast<int>(tokens.size()), X.data());
  return X;
}

namespace {
// Full prefill of `tokens` from fresh state in chunks; returns the final HC states. After each
// block of each chunk, on_block(layer, first position, count, states of that chunk) runs;
// traces (one per layer) are passed to the blocks.
template <class OnBlock>
std::vector<float> run_prefill(Engine& e, const std::vector<int32_t>& tokens, int chunk,
                               std::vector<model::BlockTrace>* traces, OnBlock on_block) {
  auto& E = impl(e);
  const ModelConfig& c = E.config();
  const size_t n = tokens.size(), hcD = static_cast<size_t>(c.hc) * c.dim;
  std::vector<float> X = embed(e, tokens);
  std::vector<model::LayerState> st(c.n_layers);
  const int cap = EngineImpl::ring_cap(c, static_cast<int>(std::max<size_t>(n, 1)));
  for (int il = 0; il < c.n_layers; ++il) E.forward().init_state(E.weights().layers[il], st[il], cap);
  std::lock_guard<std::mutex> lk(E.eval_mutex());
  for (size_t done = 0; done < n;) {
    const int m = static_cast<int>(std::min<size_t>(chunk, n - done));
    float* x = X.data() + done * hcD;
    for (int il = 0; il < c.n_layers; ++il) {
      E.forward().block(E.weights().layers[il], st[il], x, tokens.data() + done, m, static_cast<int64_t>(done),
                        traces ? &(*traces)[il] : nullptr);
      on_block(il, done, m, x);
    }
    done += m;
  }
  return X;
}
}  // namespace

std::vector<float> layer_outputs(Engine& e, const std::vector<int32_t>& tokens, int chunk) {
  const ModelConfig& c = impl(e).config();
  const size_t n = tokens.size(), hcD = static_cast<size_t>(c.hc) * c.dim;
  std::vector<float> out(static_cast<size_t>(c.n_layers) * n * hcD);
  run_prefill(e, tokens, chunk, nullptr, [&](int il, size_t first, int m, const float* x) {
    std::copy(x, x + m * hcD, out.begin() + (il * n + first) * hcD);
  });
  return out;
}

BlockRun run_block(Engine& e, int layer, const float* input, const std::vector<int32_t>& tokens, int chunk) {
  auto& E = impl(e);
  const ModelConfig& c = E.config();
  if (layer < 0 || layer >= c.n_layers) throw Error(Error::Kind::InvalidArgument, "layer out of range");
  const size_t n = tokens.size(), hcD = static_cast<size_t>(c.hc) * c.dim;
  BlockRun r;
  r.out.assign(input, input + n * hcD);
  model::LayerState st;
  E.forward().init_state(E.weights().layers[layer], st, EngineImpl::ring_cap(c, static_cast<int>(std::max<size_t>(n, 1))));
  std::lock_guard<std::mutex> lk(E.eval_mutex());
  for (size_t done = 0; done < n;) {
    const int m = static_cast<int>(std::min<size_t>(chunk, n - done));
    E.forward().block(E.weights().layers[layer], st, r.out.data() + done * hcD, tokens.data() + done, m,
                      static_cast<int64_t>(done), &r.trace);
    done += m;
  }
  return r;
}

std::vector<float> prefill_logits(Engine& e, const std::vector<int32_t>& tokens, int chunk,
                                  std::vector<model::BlockTrace>* traces, bool replay) {
  auto& E = impl(e);
  const ModelConfig& c = E.config();
  const size_t n = tokens.size();
  if (traces) {
    if (replay && traces->size() != static_cast<size_t>(c.n_layers))
      throw Error(Error::Kind::InvalidArgument, "one trace per layer is needed to replay");
    if (!replay) traces->assign(c.n_layers, model::BlockTrace{});
    for (auto& t : *traces) {
      t.replay = replay;
      t.next_expert = t.next_indexer = 0;
    }
  }
  std::vector<float> X = run_prefill(e, tokens, chunk, traces, [](int, size_t, int, const float*) {});
  std::vector<float> logits(n * c.vocab);
  std::lock_guard<std::mutex> lk(E.eval_mutex());
  E.forward().head(E.weights().head, X.data(), static_cast<int>(n), logits.data());
  return logits;
}

namespace {
struct MatrixRefs {
  std::vector<cpu::MatView*> mats;
  std::vector<model::ExpertsView*> experts;
};
void collect(model::LayerWeights& L, MatrixRefs& r) {
  for (cpu::MatView* m : {&L.hc_attn_fn, &L.q_a, &L.q_b, &L.kv, &L.out_a, &L.out_b, &L.comp.kv, &L.comp.gate,
                          &L.icomp.kv, &L.icomp.gate, &L.idx_q_b, &L.idx_proj, &L.hc_ffn_fn, &L.router,
                          &L.sh_gate, &L.sh_up, &L.sh_down})
    r.mats.push_back(m);
  for (model::ExpertsView* x : {&L.gate_exps, &L.up_exps, &L.down_exps}) r.experts.push_back(x);
}
MatrixRefs collect(model::Weights& w) {
  MatrixRefs r;
  r.mats = {&w.head.hc_fn, &w.output};
  for (auto& L : w.layers) collect(L, r);
  if (w.has_mtp) {
    collect(w.mtp.block, r);
    for (cpu::MatView* m : {&w.mtp.e_proj, &w.mtp.h_proj, &w.mtp.head.hc_fn}) r.mats.push_back(m);
  }
  return r;
}
}  // namespace

void use_f32_activations(Engine& e) {
  // The Weights object is heap-allocated and mutable; engines only hand out const views.
  MatrixRefs r = collect(const_cast<model::Weights&>(impl(e).weights()));
  for (cpu::MatView* m : r.mats) m->f32_activations = true;
  for (model::ExpertsView* x : r.experts) x->f32_activations = true;
}

std::vector<float> head(Engine& e, const float* states, int n) {
  auto& E = impl(e);
  const ModelConfig& c = E.config();
  std::vector<float> logits(static_cast<size_t>(n) * c.vocab);
  std::lock_guard<std::mutex> lk(E.eval_mutex());
  E.forward().head(E.weights().head, states, n, logits.data());
  return logits;
}

}  // namespace ds4::debug
