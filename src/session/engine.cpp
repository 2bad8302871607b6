#include <algorithm>
#include <chrono>
#include <cstring>

#include "session/session_impl.h"

namespace ds4 {

namespace {
[[noreturn]] void fail(Error::Kind k, const std::string& msg) { throw Error(k, msg); }
}  // namespace

std::unique_ptr<Engine> Engine::open(const std::string& gguf_path, const EngineOptions& opt) {
  return std::make_unique<EngineImpl>(gguf_path, opt);
}

EngineImpl::EngineImpl(const std::string& path, const EngineOptions& opt) : opt_(opt) {
  if (opt.prefill_chunk <= 0) fail(Error::Kind::InvalidArgument, "prefill_chunk must be positive");
  if (opt.threads < 0) fail(Error::Kind::InvalidArgument, "threads must be >= 0");
  weights_ = model::Weights::load(path, opt.mtp_path);
  const ModelConfig& c = weights_->config;
  if (weights_->has_mtp && c.compress_ratios[c.n_layers] != 0)
    fail(Error::Kind::BadModel, path + ": MTP blocks with a compressor (ratio " +
                                    std::to_string(c.compress_ratios[c.n_layers]) + ") are not supported");
  pool_ = std::make_unique<cpu::ThreadPool>(cpu::PoolOptions{opt.threads, opt.pin_threads});
  forward_ = std::make_unique<model::Forward>(*weights_, *pool_, opt.qat_simulation);
  const gguf::File& f = *weights_->file;
  if (f.has("tokenizer.ggml.tokens")) {
    try {
      vocab_ = f.get_string_array("tokenizer.ggml.tokens");
    } catch (const std::exception& e) {
      fail(Error::Kind::BadModel, path + ": tokenizer.ggml.tokens: " + e.what());
    }
    for (size_t i = 0; i < vocab_.size(); ++i) vocab_index_.emplace(vocab_[i], static_cast<int32_t>(i));
  }
}

int64_t EngineImpl::context_limit() const {
  const ModelConfig& c = weights_->config;
  // The declared limit when present; the attention math itself has no hard limit.
  return c.context_length > 0 ? c.context_length : (int64_t{1} << 20);
}

int32_t EngineImpl::find_token(std::string_view text) const {
  auto it = vocab_index_.find(std::string(text));
  return it == vocab_index_.end() ? -1 : it->second;
}

uint64_t EngineImpl::session_memory_bytes(int ctx) const {
  const ModelConfig& c = weights_->config;
  const uint64_t f = sizeof(float);
  uint64_t total = 0;
  const uint64_t ring = static_cast<uint64_t>(ring_cap(c, ctx)) * c.head_dim * f;
  for (int il = 0; il < c.n_layers; ++il) {
    const int r = c.compress_ratios[il];
    total += ring;
    if (r != 0) {
      const uint64_t cc = r == 4 ? 2 : 1;
      total += static_cast<uint64_t>(ctx / r + 2) * c.head_dim * f;  // compressed rows
      total += 2 * (cc * r) * (cc * c.head_dim) * f;                  // kv + score state
      if (r == 4) {
        total += static_cast<uint64_t>(ctx / 4 + 2) * c.index_head_dim * f;
        total += 2 * 8ull * (2ull * c.index_head_dim) * f;
      }
    }
  }
  if (weights_->has_mtp) total += ring;
  // Logits + hidden history kept for cheap rewinds.
  total += (kRewindSlack + 1) * (static_cast<uint64_t>(c.vocab) + static_cast<uint64_t>(c.hc) * c.dim) * f;
  return total;
}

uint64_t EngineImpl::decode_read_bytes(int layer, int64_t pos) const {
  const ModelConfig& c = weights_->config;
  if (layer < 0 || layer > c.n_layers || pos < 0) return 0;
  const model::Weights& w = *weights_;
  if (layer == c.n_layers)
    return w.output.bytes() + w.head.hc_fn.bytes() + w.token_embd.row_bytes;
  const model::LayerWeights& L = w.layers[layer];
  uint64_t b = L.hc_attn_fn.bytes() + L.q_a.bytes() + L.q_b.bytes() + L.kv.bytes() + L.out_a.bytes() +
               L.out_b.bytes() + L.hc_ffn_fn.bytes() + L.router.bytes() + L.sh_gate.bytes() + L.sh_up.bytes() +
               L.sh_down.bytes();
  // Routed experts: n_experts_used of them (all experts of a tensor have the same size).
  for (const model::ExpertsView* e : {&L.gate_exps, &L.up_exps, &L.down_exps})
    b += static_cast<uint64_t>(c.n_experts_used) * e->out * e->row_bytes;
  if (L.hash) b += static_cast<uint64_t>(c.n_experts_used) * sizeof(int32_t);
  const uint64_t row = static_cast<uint64_t>(c.head_dim) * sizeof(float);
  b += static_cast<uint64_t>(std::min<int64_t>(pos + 1, c.window)) * row;  // raw window
  if (L.ratio != 0) {
    b += L.comp.kv.bytes() + L.comp.gate.bytes();
    const int64_t n_comp = (pos + 1) / L.ratio;
    if (L.ratio == 4) {
      b += L.icomp.kv.bytes() + L.icomp.gate.bytes();
      if (n_comp > c.index_topk) {  // the indexer runs: its weights and every indexer row
        b += L.idx_q_b.bytes() + L.idx_proj.bytes();
        b += static_cast<uint64_t>(n_comp) * c.index_head_dim * sizeof(float);
      }
      b += static_cast<uint64_t>(std::min<int64_t>(n_comp, c.index_topk)) * row;
    } else {
      b += static_cast<uint64_t>(n_comp) * row;
    }
  }
  return b;
}

std::unique_ptr<Session> EngineImpl::new_session(int ctx) {
  if (ctx <= 0) fail(Error::Kind::InvalidArgument, "context size must be positive");
  if (ctx > context_limit())
    fail(Error::Kind::ContextOverflow, "context size " + std::to_string(ctx) + " exceeds the model limit " +
                                           std::to_string(context_limit()));
  return std::make_unique<SessionImpl>(*this, ctx);
}

// ---------------------------------------------------------------------------------------

SessionImpl::SessionImpl(EngineImpl& engine, int ctx) : Session(ctx), engine_(engine) {
  chunk_ = engine.options().prefill_chunk;
  const auto& w = engine_.weights();
  layers_.resize(w.layers.size());
  const int cap = EngineImpl::ring_cap(w.config, ctx);
  for (size_t il = 0; il < layers_.size(); ++il) engine_.forward().init_state(w.layers[il], layers_[il], cap);
  if (w.has_mtp) engine_.forward().init_state(w.mtp.block, mtp_state_, cap);
  reset_stats();
}

void SessionImpl::check_token(int32_t t) const {
  const int vocab = engine_.config().vocab;
  if (t < 0 || t >= vocab)
    fail(Error::Kind::InvalidArgument,
         "token id " + std::to_string(t) + " is out of range (vocabulary size " + std::to_string(vocab) + ")");
}

void SessionImpl::reset() {
  for (auto& L : layers_) {
    L.raw.reset();
    L.comp.reset();
    L.icomp.reset();
  }
  tokens_.clear();
  logits_.clear();
  hidden_.clear();
  history_.clear();
  mtp_reset();
}

std::pair<std::vector<float>, std::vector<float>>& SessionImpl::push_history() {
  // A ring of kRewindSlack + 1 entries whose buffers are reused, so decode allocates nothing.
  if (history_.size() < static_cast<size_t>(kRewindSlack + 1)) {
    history_.emplace_back();
  } else {
    std::rotate(history_.begin(), history_.begin() + 1, history_.end());
  }
  return history_.back();
}

void SessionImpl::reset_stats() {
  const size_t n_layers = layers_.size();
  stats_ = EvalStats{};
  stats_.decode.layer_s.assign(n_layers, 0.0);
  stats_.prefill.layer_s.assign(n_layers, 0.0);
}

namespace {
inline double seconds_now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

void SessionImpl::prefill(const int32_t* toks, int n, const SyncOptions& opt, int chunk) {
  const auto& w = engine_.weights();
  const auto& fw = engine_.forward();
  const ModelConfig& c = w.config;
  const size_t hcD = static_cast<size_t>(c.hc) * c.dim;
  std::lock_guard<std::mutex> lk(engine_.eval_mutex());
  std::vector<float>& X = X_;
  std::vector<float>& all_logits = chunk_logits_;
  for (int done = 0; done < n;) {
    if (cancelled()) fail(Error::Kind::Cancelled, "evaluation cancelled");
    const int m = std::min(chunk, n - done);
    const int64_t pos0 = static_cast<int64_t>(tokens_.size());
    EvalStats::Phase& ph = m == 1 ? stats_.decode : stats_.prefill;
    const double t_start = seconds_now();
    X.resize(static_cast<size_t>(m) * hcD);
    fw.embed(toks + done, m, X.data());
    double t_prev = seconds_now();
    ph.embed_s += t_prev - t_start;
    for (size_t il = 0; il < layers_.size(); ++il) {
      fw.block(w.layers[il], layers_[il], X.data(), toks + done, m, pos0);
      const double t = seconds_now();
      ph.layer_s[il] += t - t_prev;
      t_prev = t;
    }
    // The last token's logits are the result; a few before it are kept so that a short
    // rewind (kRewindSlack) needs no re-evaluation. on_logits wants every position.
    const int first = opt.on_logits ? 0 : std::max(0, m - (kRewindSlack + 1));
    const int rows = m - first;
    all_logits.resize(static_cast<size_t>(rows) * c.vocab);
    fw.head(w.head, X.data() + first * hcD, rows, all_logits.data());
    {
      const double t = seconds_now();
      ph.head_s += t - t_prev;
      ph.total_s += t - t_start;
      ++ph.passes;
      ph.tokens += m;
    }
    const int keep_from = std::max(0, m - (kRewindSlack + 1));
    for (int t = 0; t < m; ++t) {
      tokens_.push_back(toks[done + t]);
      if (opt.on_logits) opt.on_logits(static_cast<int>(pos0 + t), all_logits.data() + static_cast<size_t>(t - first) * c.vocab);
      if (t >= keep_from) {
        auto& slot = push_history();
        if (t >= first) {
          slot.first.assign(all_logits.begin() + static_cast<size_t>(t - first) * c.vocab,
                            all_logits.begin() + static_cast<size_t>(t - first + 1) * c.vocab);
          slot.second.assign(X.begin() + t * hcD, X.begin() + (t + 1) * hcD);
        } else {
          slot.first.clear();  // logits not computed for this position: no cheap rewind to it
          slot.second.clear();
        }
      }
    }
    logits_.assign(all_logits.end() - c.vocab, all_logits.end());
    hidden_.assign(X.end() - hcD, X.end());
    done += m;
    if (opt.progress) opt.progress(done, n);
  }
}

int SessionImpl::sync(const std::vector<int32_t>& toks, const SyncOptions& opt) {
  for (int32_t t : toks) check_token(t);
  if (static_cast<int64_t>(toks.size()) > ctx_)
    fail(Error::Kind::ContextOverflow, std::to_string(toks.size()) + " tokens exceed the session context of " +
                                           std::to_string(ctx_));
  const int chunk = opt.chunk > 0 ? opt.chunk : chunk_;
  if (toks.empty()) {
    reset();
    return 0;
  }
  size_t common = 0;
  while (common < toks.size() && common < tokens_.size() && toks[common] == tokens_[common]) ++common;
  if (common == toks.size() && common == tokens_.size() && !opt.on_logits) return static_cast<int>(common);
  // At least the last token is evaluated so its logits are fresh.
  common = std::min(common, toks.size() - 1);
  if (common < tokens_.size()) {
    if (can_rewind_cheaply(static_cast<int>(common))) {
      truncate(static_cast<int>(common));
    } else {
      reset();
      common = 0;
    }
  }
  prefill(toks.data() + common, static_cast<int>(toks.size() - common), opt, chunk);
  return static_cast<int>(common);
}

void SessionImpl::eval(int32_t token) {
  check_token(token);
  if (n_tokens() >= ctx_)
    fail(Error::Kind::ContextOverflow, "context of " + std::to_string(ctx_) + " tokens is full");
  prefill(&token, 1, SyncOptions{}, 1);
}

bool SessionImpl::can_rewind_cheaply(int pos) const {
  const int n = n_tokens();
  if (pos < 0 || pos > n) return false;
  if (pos == n || pos == 0) return true;
  // Logits for position pos-1 must still be in the history.
  const int back = n - pos;  // history_.back() is position n-1
  if (back >= static_cast<int>(history_.size()) || history_[history_.size() - 1 - back].first.empty()) return false;
  const ModelConfig& c = engine_.config();
  for (const auto& L : layers_) {
    const int r = L.comp.ratio;
    if (r != 0 && n / r != pos / r) return false;  // a compressed row was completed since pos
  }
  // The raw rows pos needs (its window) must not have been overwritten.
  const auto& raw = layers_[0].raw;
  for (int64_t x = std::max<int64_t>(0, pos - c.window); x < pos; ++x)
    if (!raw.find(x)) return false;
  return true;
}

void SessionImpl::truncate(int pos) {
  const int n = n_tokens();
  if (pos == n) return;
  if (pos == 0) {
    reset();
    return;
  }
  for (auto& L : layers_) {
    L.raw.drop_from(pos);
    for (auto* cs : {&L.comp, &L.icomp}) {
      if (cs->ratio == 0) continue;
      cs->n_rows = pos / cs->ratio;
      cs->rows.resize(static_cast<size_t>(cs->n_rows) * cs->d);
    }
  }
  const int back = n - pos;
  auto& h = history_[history_.size() - 1 - back];
  logits_ = h.first;
  hidden_ = h.second;
  history_.resize(history_.size() - back);
  tokens_.resize(pos);
  mtp_state_.raw.drop_from(pos);
}

void SessionImpl::rewind(int pos) {
  if (pos < 0 || pos > n_tokens())
    fail(Error::Kind::InvalidArgument, "cannot rewind to position " + std::to_string(pos) + " of a " +
                                           std::to_string(n_tokens()) + "-token session");
  if (pos == n_tokens()) return;
  if (can_rewind_cheaply(pos)) {
    truncate(pos);
    return;
  }
  // Re-evaluate the kept prefix from a fresh state.
  std::vector<int32_t> keep(tokens_.begin(), tokens_.begin() + pos);
  reset();
  if (!keep.empty()) prefill(keep.data(), static_cast<int>(keep.size()), SyncOptions{}, chunk_);
}

bool SessionImpl::has_mtp() const { return engine_.has_mtp(); }

void SessionImpl::mtp_reset() {
  if (mtp_state_.raw.cap) mtp_state_.raw.reset();
  mtp_logits_.clear();
  mtp_hidden_.clear();
}

const std::vector<float>& SessionImpl::mtp_eval(const float* hin, int32_t token, int pos) {
  if (!engine_.has_mtp()) fail(Error::Kind::InvalidArgument, "the model has no MTP block");
  check_token(token);
  if (pos < 0 || pos >= ctx_) fail(Error::Kind::InvalidArgument, "MTP position " + std::to_string(pos) + " out of range");
  if (!hin) fail(Error::Kind::InvalidArgument, "MTP input state is null");
  const auto& w = engine_.weights();
  const auto& fw = engine_.forward();
  const ModelConfig& c = w.config;
  std::lock_guard<std::mutex> lk(engine_.eval_mutex());
  mtp_state_.raw.drop_from(pos);
  std::vector<float> X(static_cast<size_t>(c.hc) * c.dim);
  fw.mtp_input(w.mtp, hin, token, X.data());
  fw.block(w.mtp.block, mtp_state_, X.data(), &token, 1, pos);
  mtp_hidden_ = X;
  mtp_logits_.resize(c.vocab);
  fw.head(w.mtp.head, X.data(), 1, mtp_logits_.data());
  return mtp_logits_;
}

}  // namespace ds4
