#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "cpu/backend.h"
#ifdef DS4_HAVE_VULKAN
#include "vulkan/backend.h"
#include "vulkan/context.h"
#endif
#include "model/stages.h"
#include "session/session_impl.h"
#ifdef DS4_HAVE_MPI
#include "mpi/pipeline.h"
#endif

namespace ds4 {

bool has_backend(Backend b) {
  switch (b) {
    case Backend::Cpu:
      return true;
    case Backend::Vulkan:
#ifdef DS4_HAVE_VULKAN
      return true;
#else
      return false;
#endif
  }
  return false;
}

bool parse_backend(const std::string& name, Backend* out) {
  if (name == "cpu") *out = Backend::Cpu;
  else if (name == "vulkan") *out = Backend::Vulkan;
  else return false;
  return true;
}

std::string describe_devices() {
#ifdef DS4_HAVE_VULKAN
  return vulkan::describe_devices(vulkan::list_devices());
#else
  return "this build has no Vulkan backend (configure with -DDS4_VULKAN=ON)\n";
#endif
}

namespace {
[[noreturn]] void fail(Error::Kind k, const std::string& msg) { throw Error(k, msg); }
}  // namespace

void init_cluster(int* argc, char*** argv) {
#ifdef DS4_HAVE_MPI
  mpi::init(argc, argv);
#else
  (void)argc;
  (void)argv;
  const char* n = std::getenv("OMPI_COMM_WORLD_SIZE");
  if (!n) n = std::getenv("PMI_SIZE");
  if (n && std::atoi(n) > 1) {
    std::fprintf(stderr, "ds4: started by mpirun with %s ranks, but this build has no MPI support "
                         "(install openmpi-bin and libopenmpi-dev and rebuild; docs/mpi.md)\n", n);
    std::exit(1);
  }
#endif
}

void finalize_cluster() {
#ifdef DS4_HAVE_MPI
  mpi::finalize();
#endif
}

int cluster_size() {
#ifdef DS4_HAVE_MPI
  return mpi::size();
#else
  return 1;
#endif
}

std::unique_ptr<Engine> Engine::open(const std::string& gguf_path, const EngineOptions& opt) {
  return std::make_unique<EngineImpl>(gguf_path, opt);
}

EngineImpl::EngineImpl(const std::string& path, const EngineOptions& opt) : opt_(opt) {
  if (opt.prefill_chunk <= 0) fail(Error::Kind::InvalidArgument, "prefill_chunk must be positive");
  if (opt.threads < 0) fail(Error::Kind::InvalidArgument, "threads must be >= 0");
  if (opt.cpu_moe_layers < 0) fail(Error::Kind::InvalidArgument, "cpu_moe_layers must be >= 0");
  if (opt.rewind_tokens < 0 || opt.rewind_tokens > 4096)
    fail(Error::Kind::InvalidArgument, "rewind_tokens must be in 0..4096");
  if (cluster_size() > 1) {
    if (opt.backend != Backend::Cpu)
      fail(Error::Kind::InvalidArgument, "under MPI every stage runs on the CPU backend (-b cpu)");
#ifdef DS4_HAVE_MPI
    mpi::Pipeline p = mpi::open_pipeline(path, opt);
    weights_ = std::move(p.weights);
    backend_ = std::move(p.backend);
#endif
  } else {
    weights_ = model::Weights::load(path, opt.mtp_path);
    if (!opt.layer_split.empty()) {
      try {
        model::split_from_counts(opt.layer_split, weights_->config.n_layers, 1);
      } catch (const std::invalid_argument& e) {
        fail(Error::Kind::InvalidArgument, std::string(e.what()) + " (one process: one rank)");
      }
    }
  }
  const ModelConfig& c = weights_->config;
  if (weights_->has_mtp && c.compress_ratios[c.n_layers] != 0)
    fail(Error::Kind::BadModel, path + ": MTP blocks with a compressor (ratio " +
                                    std::to_string(c.compress_ratios[c.n_layers]) + ") are not supported");
  if (!backend_) switch (opt.backend) {
    case Backend::Cpu:
      backend_ = cpu::make_backend(*weights_, opt);
      break;
    case Backend::Vulkan:
#ifdef DS4_HAVE_VULKAN
      backend_ = vulkan::make_backend(*weights_, opt);
      break;
#else
      fail(Error::Kind::InvalidArgument, "this build has no Vulkan backend (configure with -DDS4_VULKAN=ON)");
#endif
    default:
      fail(Error::Kind::InvalidArgument, "unknown backend");
  }
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
  const uint64_t ring = static_cast<uint64_t>(ring_cap(ctx)) * c.head_dim * f;
  const uint64_t R = static_cast<uint64_t>(opt_.rewind_tokens);
  for (int il = 0; il < c.n_layers; ++il) {
    const int r = c.compress_ratios[il];
    total += ring;
    if (r != 0) {
      const uint64_t cc = r == 4 ? 2 : 1;
      total += static_cast<uint64_t>(ctx / r + 2) * c.head_dim * f;  // compressed rows
      total += 2 * (cc * r) * (cc * c.head_dim) * f;                  // kv + score state
      total += R * 2 * (r == 4 ? 5 : 1) * (cc * c.head_dim) * f;     // undo log
      if (r == 4) {
        total += static_cast<uint64_t>(ctx / 4 + 2) * c.index_head_dim * f;
        total += 2 * 8ull * (2ull * c.index_head_dim) * f;
        total += R * 2 * 5 * (2ull * c.index_head_dim) * f;
      }
    }
  }
  if (weights_->has_mtp) total += ring;
  // Logits + hidden history kept for cheap rewinds.
  total += (R + 1) * (static_cast<uint64_t>(c.vocab) + static_cast<uint64_t>(c.hc) * c.dim) * f;
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

using backend::seconds_now;

void EngineImpl::run(std::span<const Item> items, const std::function<void(int, const float*)>& on_output) {
  const ModelConfig& c = weights_->config;
  const size_t hcD = static_cast<size_t>(c.hc) * c.dim;
  const int n = static_cast<int>(items.size());
  if (n == 0) return;
  std::lock_guard<std::mutex> lk(run_mu_);
  // Per session: how many entries it has in this batch (to find its last R + 1).
  std::unordered_map<SessionImpl*, std::pair<int, int>> count;  // session -> (total, seen)
  for (const Item& it : items) ++count[it.session].first;
  entries_.resize(n);
  out_row_.assign(n, -1);
  int n_out = 0;
  for (int i = 0; i < n; ++i) {
    const Item& it = items[i];
    auto& [total, seen] = count[it.session];
    const bool out = it.want || seen >= total - (opt_.rewind_tokens + 1);
    entries_[i] = backend::Entry{&it.session->sequence(), it.token, it.session->n_tokens() + seen, out};
    ++seen;
    if (out) out_row_[i] = n_out++;
  }
  out_logits_.resize(static_cast<size_t>(n_out) * c.vocab);
  out_hidden_.resize(static_cast<size_t>(n_out) * hcD);
  std::vector<double> layer_s(c.n_layers, 0.0), attention_s(c.n_layers, 0.0), indexer_s(c.n_layers, 0.0);
  double embed_s = 0, head_s = 0;
  backend::Batch b;
  b.entries = entries_.data();
  b.n = n;
  b.logits = out_logits_.data();
  b.hidden = out_hidden_.data();
  b.embed_s = &embed_s;
  b.layer_s = layer_s.data();
  b.head_s = &head_s;
  b.attention_s = attention_s.data();
  b.indexer_s = indexer_s.data();
  const double t0 = seconds_now();
  backend_->eval(b);
  const double total_s = seconds_now() - t0;
  for (int i = 0; i < n; ++i) {
    const int o = out_row_[i];
    const float* lg = o >= 0 ? out_logits_.data() + static_cast<size_t>(o) * c.vocab : nullptr;
    items[i].session->append(items[i].token, lg, o >= 0 ? out_hidden_.data() + o * hcD : nullptr);
    if (lg && on_output) on_output(i, lg);
  }
  for (auto& [s, cnt] : count) {
    EvalStats::Phase& ph = cnt.first == 1 ? s->mutable_stats().decode : s->mutable_stats().prefill;
    ++ph.passes;
    ph.tokens += cnt.first;
    ph.total_s += total_s;
    ph.embed_s += embed_s;
    ph.head_s += head_s;
    for (int il = 0; il < c.n_layers; ++il) {
      ph.layer_s[il] += layer_s[il];
      ph.attention_s[il] += attention_s[il];
      ph.indexer_s[il] += indexer_s[il];
    }
  }
}

void EngineImpl::eval_batch(std::span<const BatchEntry> entries, BatchResult* out) {
  std::vector<Item> items;
  items.reserve(entries.size());
  std::unordered_map<SessionImpl*, int> next;
  for (size_t i = 0; i < entries.size(); ++i) {
    const BatchEntry& e = entries[i];
    auto* s = dynamic_cast<SessionImpl*>(e.session);
    if (!s || &s->engine() != this)
      fail(Error::Kind::InvalidArgument, "batch entry " + std::to_string(i) + ": not a session of this engine");
    s->check_token(e.token);
    auto it = next.try_emplace(s, s->n_tokens()).first;
    if (e.pos != it->second)
      fail(Error::Kind::InvalidArgument, "batch entry " + std::to_string(i) + ": position " + std::to_string(e.pos) +
                                             " is not the session's next position " + std::to_string(it->second));
    if (e.pos >= s->context_size())
      fail(Error::Kind::ContextOverflow, "batch entry " + std::to_string(i) + ": context of " +
                                             std::to_string(s->context_size()) + " tokens is full");
    ++it->second;
    items.push_back(Item{s, e.token, e.logits});
  }
  int rows = 0;
  for (const BatchEntry& e : entries) rows += e.logits;
  if (out) {
    out->rows = rows;
    out->n_vocab = config().vocab;
    out->logits.resize(static_cast<size_t>(rows) * config().vocab);
  }
  std::vector<int> row_of(entries.size(), -1);
  for (size_t i = 0, r = 0; i < entries.size(); ++i)
    if (entries[i].logits) row_of[i] = static_cast<int>(r++);
  run(items, [&](int i, const float* lg) {
    if (out && row_of[i] >= 0) std::copy_n(lg, config().vocab, out->logits.begin() + static_cast<size_t>(row_of[i]) * config().vocab);
  });
}

// ---------------------------------------------------------------------------------------

SessionImpl::SessionImpl(EngineImpl& engine, int ctx) : Session(ctx), engine_(engine) {
  chunk_ = engine.options().prefill_chunk;
  seq_ = engine_.backend().new_sequence(engine_.ring_cap(ctx), engine_.rewind_tokens());
  reset_stats();
}

void SessionImpl::check_token(int32_t t) const {
  const int vocab = engine_.config().vocab;
  if (t < 0 || t >= vocab)
    fail(Error::Kind::InvalidArgument,
         "token id " + std::to_string(t) + " is out of range (vocabulary size " + std::to_string(vocab) + ")");
}

void SessionImpl::reset() {
  model::SequenceState& st = seq_->host();
  for (auto& L : st.layers) L.reset();
  if (st.mtp.raw.cap) st.mtp.raw.reset();
  seq_->push();
  tokens_.clear();
  logits_.clear();
  hidden_.clear();
  history_.clear();
  mtp_logits_.clear();
  mtp_hidden_.clear();
}

std::pair<std::vector<float>, std::vector<float>>& SessionImpl::push_history() {
  // A ring of rewind_tokens + 1 entries whose buffers are reused, so decode allocates nothing.
  if (history_.size() < static_cast<size_t>(engine_.rewind_tokens() + 1)) {
    history_.emplace_back();
  } else {
    std::rotate(history_.begin(), history_.begin() + 1, history_.end());
  }
  return history_.back();
}

void SessionImpl::append(int32_t token, const float* logits, const float* hidden) {
  const ModelConfig& c = engine_.config();
  const size_t hcD = static_cast<size_t>(c.hc) * c.dim;
  tokens_.push_back(token);
  auto& slot = push_history();
  if (logits) {
    slot.first.assign(logits, logits + c.vocab);
    slot.second.assign(hidden, hidden + hcD);
    logits_ = slot.first;
    hidden_ = slot.second;
  } else {
    slot.first.clear();  // not computed: no cheap rewind to this position
    slot.second.clear();
    logits_.clear();
    hidden_.clear();
  }
}

void SessionImpl::reset_stats() {
  const size_t n_layers = engine_.config().n_layers;
  stats_ = EvalStats{};
  for (EvalStats::Phase* ph : {&stats_.decode, &stats_.prefill}) {
    ph->layer_s.assign(n_layers, 0.0);
    ph->attention_s.assign(n_layers, 0.0);
    ph->indexer_s.assign(n_layers, 0.0);
  }
}

void SessionImpl::prefill(const int32_t* toks, int n, const SyncOptions& opt, int chunk) {
  std::vector<EngineImpl::Item> items;
  for (int done = 0; done < n;) {
    if (cancelled()) fail(Error::Kind::Cancelled, "evaluation cancelled");
    const int m = std::min(chunk, n - done);
    const int pos0 = n_tokens();
    items.clear();
    for (int t = 0; t < m; ++t) items.push_back(EngineImpl::Item{this, toks[done + t], bool(opt.on_logits)});
    engine_.run(items, [&](int i, const float* lg) {
      if (opt.on_logits) opt.on_logits(pos0 + i, lg);
    });
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
  const EngineImpl::Item item{this, token, false};
  engine_.run(std::span<const EngineImpl::Item>(&item, 1), {});
}

bool SessionImpl::can_rewind_cheaply(int pos) const {
  const int n = n_tokens();
  if (pos < 0 || pos > n) return false;
  if (pos == n || pos == 0) return true;
  // Logits for position pos-1 must still be in the history.
  const int back = n - pos;  // history_.back() is position n-1
  if (back >= static_cast<int>(history_.size()) || history_[history_.size() - 1 - back].first.empty()) return false;
  const model::SequenceState& st = seq_->host();
  for (const auto& L : st.layers)
    if (!L.can_truncate(n, pos)) return false;
  // The raw rows pos needs (its window) must not have been overwritten.
  const ModelConfig& c = engine_.config();
  const auto& raw = st.layers[0].raw;
  for (int64_t x = std::max<int64_t>(0, pos - c.window); x < pos; ++x)
    if (!raw.find(x)) return false;
  return true;
}

void SessionImpl::truncate(int pos) {
  const int n = n_tokens();
  if (pos == n) return;
  ++stats_.rewinds_cheap;
  if (pos == 0) {
    reset();
    return;
  }
  seq_->truncate(n, pos);
  const int back = n - pos;
  auto& h = history_[history_.size() - 1 - back];
  logits_ = h.first;
  hidden_ = h.second;
  history_.resize(history_.size() - back);
  tokens_.resize(pos);
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
  ++stats_.rewinds_reevaluated;
  stats_.tokens_reevaluated += pos;
  if (!keep.empty()) prefill(keep.data(), static_cast<int>(keep.size()), SyncOptions{}, chunk_);
}

bool SessionImpl::has_mtp() const { return engine_.has_mtp(); }

void SessionImpl::mtp_reset() {
  // Bookkeeping only (every slot empty): rows of empty slots are never read, and a backend
  // holding the state in device memory must not be handed the host's stale rows (no push()).
  seq_->host().mtp.raw.drop_from(0);
  mtp_logits_.clear();
  mtp_hidden_.clear();
}

const std::vector<float>& SessionImpl::mtp_eval(const float* hin, int32_t token, int pos) {
  if (!engine_.has_mtp()) fail(Error::Kind::InvalidArgument, "the model has no MTP block");
  check_token(token);
  if (pos < 0 || pos >= ctx_) fail(Error::Kind::InvalidArgument, "MTP position " + std::to_string(pos) + " out of range");
  if (!hin) fail(Error::Kind::InvalidArgument, "MTP input state is null");
  const ModelConfig& c = engine_.config();
  mtp_hidden_.resize(static_cast<size_t>(c.hc) * c.dim);
  mtp_logits_.resize(c.vocab);
  engine_.backend().mtp_eval(*seq_, hin, token, pos, mtp_logits_.data(), mtp_hidden_.data());
  return mtp_logits_;
}

}  // namespace ds4
