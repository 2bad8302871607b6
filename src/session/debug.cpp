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
  E.backend().embed(tokens.data(), static_cast<int>(tokens.size()), X.data());
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
  auto seq = E.backend().new_sequence(E.ring_cap(static_cast<int>(std::max<size_t>(n, 1))), 0);
  for (size_t done = 0; done < n;) {
    const int m = static_cast<int>(std::min<size_t>(chunk, n - done));
    float* x = X.data() + done * hcD;
    for (int il = 0; il < c.n_layers; ++il) {
      E.backend().block(il, *seq, x, tokens.data() + done, m, static_cast<int64_t>(done),
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
  auto seq = E.backend().new_sequence(E.ring_cap(static_cast<int>(std::max<size_t>(n, 1))), 0);
  for (size_t done = 0; done < n;) {
    const int m = static_cast<int>(std::min<size_t>(chunk, n - done));
    E.backend().block(layer, *seq, r.out.data() + done * hcD, tokens.data() + done, m,
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
  E.backend().head(X.data(), static_cast<int>(n), logits.data());
  return logits;
}

void use_f32_activations(Engine& e) { impl(e).backend().use_f32_activations(); }

void warm_weights(Engine& e) { impl(e).backend().warm_weights(); }

std::vector<float> head(Engine& e, const float* states, int n) {
  auto& E = impl(e);
  const ModelConfig& c = E.config();
  std::vector<float> logits(static_cast<size_t>(n) * c.vocab);
  E.backend().head(states, n, logits.data());
  return logits;
}

}  // namespace ds4::debug
