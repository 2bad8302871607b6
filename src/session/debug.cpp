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

std::vector<float> layer_outputs(Engine& e, const std::vector<int32_t>& tokens, int chunk) {
  auto& E = impl(e);
  const ModelConfig& c = E.config();
  const size_t n = tokens.size(), hcD = static_cast<size_t>(c.hc) * c.dim;
  std::vector<float> X = embed(e, tokens);
  std::vector<float> out(static_cast<size_t>(c.n_layers) * n * hcD);
  std::vector<model::LayerState> st(c.n_layers);
  const int cap = EngineImpl::ring_cap(c, static_cast<int>(std::max<size_t>(n, 1)));
  for (int il = 0; il < c.n_layers; ++il) E.forward().init_state(E.weights().layers[il], st[il], cap);
  std::lock_guard<std::mutex> lk(E.eval_mutex());
  for (size_t done = 0; done < n;) {
    const int m = static_cast<int>(std::min<size_t>(chunk, n - done));
    float* x = X.data() + done * hcD;
    for (int il = 0; il < c.n_layers; ++il) {
      E.forward().block(E.weights().layers[il], st[il], x, tokens.data() + done, m, static_cast<int64_t>(done));
      std::copy(x, x + m * hcD, out.begin() + (il * n + done) * hcD);
    }
    done += m;
  }
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

std::vector<float> head(Engine& e, const float* states, int n) {
  auto& E = impl(e);
  const ModelConfig& c = E.config();
  std::vector<float> logits(static_cast<size_t>(n) * c.vocab);
  std::lock_guard<std::mutex> lk(E.eval_mutex());
  E.forward().head(E.weights().head, states, n, logits.data());
  return logits;
}

}  // namespace ds4::debug
