#include "server/slot.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include "kvcache/hash.h"
#include "text/chat.h"
#include "text/chat_tokenize.h"

namespace ds4::server {

using Clock = std::chrono::steady_clock;

std::vector<int32_t> tokenize_segments(const text::Tokenizer& tok,
                                       const text::PromptSegments& segments) {
  try {
    std::vector<int> ids = text::tokenize_prompt(tok, segments);
    return std::vector<int32_t>(ids.begin(), ids.end());
  } catch (const text::ChatError& e) {
    throw ApiError(500, std::string("prompt tokenization failed: ") + e.what(), "server_error");
  }
}

std::optional<text::PromptSegments> segments_after(const text::PromptSegments& segments,
                                                   size_t offset) {
  text::PromptSegments rest;
  size_t pos = 0;
  for (const auto& seg : segments) {
    size_t end = pos + seg.text.size();
    if (end <= offset) {
      pos = end;
      continue;
    }
    if (pos >= offset) {
      rest.push_back(seg);
    } else {
      if (seg.special) return std::nullopt;
      rest.push_back({seg.text.substr(offset - pos), false});
    }
    pos = end;
  }
  return rest;
}

int route_request(const std::vector<SlotCandidate>& slots) {
  int best = -1, empty = -1;
  for (int i = 0; i < static_cast<int>(slots.size()); ++i) {
    const SlotCandidate& c = slots[i];
    if (!c.idle) continue;
    if (c.live_tokens == 0 && (empty < 0 || c.last_used < slots[empty].last_used)) empty = i;
    if (best < 0 || c.reusable > slots[best].reusable ||
        (c.reusable == slots[best].reusable && c.last_used < slots[best].last_used)) {
      best = i;
    }
  }
  if (best < 0) return -1;
  const SlotCandidate& b = slots[best];
  const bool long_match = b.reusable > 0 && b.reusable * 2 >= b.live_tokens;
  if (!long_match && empty >= 0) return empty;
  return best;
}

uint64_t available_memory_bytes() {
  std::ifstream in("/proc/meminfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("MemAvailable:", 0) == 0) {
      std::istringstream ls(line.substr(13));
      uint64_t kib = 0;
      ls >> kib;
      return kib * 1024;
    }
  }
  return 0;
}

std::string check_slot_memory(int parallel, int ctx, uint64_t per_slot, uint64_t available) {
  const uint64_t need = per_slot * static_cast<uint64_t>(parallel);
  if (available == 0 || need <= available) return {};
  auto mib = [](uint64_t b) { return std::to_string((b + (1u << 20) - 1) >> 20); };
  const uint64_t fit = per_slot ? available / per_slot : 0;
  return "--parallel " + std::to_string(parallel) + " at --ctx " + std::to_string(ctx) + " needs " +
         mib(need) + " MiB of session state (" + mib(per_slot) + " MiB per slot), but only " +
         mib(available) + " MiB of memory is available; at this context at most " +
         std::to_string(fit) + " slot(s) fit — lower --parallel or --ctx";
}

std::string prefix_hash(const std::vector<int32_t>& tokens) {
  std::string bytes;
  bytes.reserve(tokens.size() * 4);
  for (int32_t t : tokens) {
    const uint32_t u = static_cast<uint32_t>(t);
    for (int k = 0; k < 4; ++k) bytes.push_back(static_cast<char>((u >> (8 * k)) & 0xff));
  }
  return kvcache::sha1_hex(bytes).substr(0, 16);
}

namespace {

size_t common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  size_t c = 0;
  while (c < a.size() && c < b.size() && a[c] == b[c]) ++c;
  return c;
}

}  // namespace

Slot::Slot(int id, std::unique_ptr<Session> session, const SlotShared& shared)
    : id_(id), session_(std::move(session)), shared_(shared), ctx_(session_->context_size()) {}

std::vector<kvcache::ToolReplayEntry> Slot::tool_entries() const {
  std::vector<kvcache::ToolReplayEntry> out;
  if (!shared_.tool_replay) return out;
  for (auto& [id, dsml] : shared_.tool_replay->entries()) out.push_back({std::move(id), std::move(dsml)});
  return out;
}

void Slot::log_kv(const std::string& line) const {
  if (shared_.log) std::fprintf(stderr, "ds4-server: slot %d %s\n", id_, line.c_str());
}

std::string Slot::live_text(size_t n) const {
  const auto& t = session_->tokens();
  std::string out;
  for (size_t i = 0; i < n && i < t.size(); ++i) out += shared_.tok.token_bytes(t[i]);
  return out;
}

void Slot::save_live(kvcache::Reason reason) {
  kvcache::DiskCache* disk = shared_.disk;
  if (!disk) return;
  const int n = session_->n_tokens();
  if (n < disk->options().min_tokens) return;
  // After a tool-less thinking answer the client's next prompt drops the reasoning: key the
  // checkpoint by that visible text (ext flag bit 2, docs/kvcache.md); its tokens stay authoritative.
  // (The Responses form, bit 1, is not used: which endpoint a binding came from is unknown.)
  for (const auto& v : visible_) {
    if (v.kv_flag == kvcache::kExtThinkingVisible && v.live_tokens == static_cast<size_t>(n)) {
      disk->save(*session_, v.text, reason, tool_entries(), v.kv_flag);
      return;
    }
  }
  disk->save(*session_, live_text(static_cast<size_t>(n)), reason, tool_entries());
}

size_t Slot::reusable_for(const GenerationSpec& spec) const {
  std::vector<int32_t> tokens;
  const char* source = choose_tokens(spec, tokens);
  const std::string_view src = source;
  const size_t live = session_->tokens().size();
  if (src == "token-prefix" || src == "text-prefix" || src == "visible-prefix") return live;
  // A shorter common prefix is kept only where the state can be cut back to it cheaply;
  // otherwise the session rebuilds from zero and keeps nothing.
  const size_t c = common_prefix(session_->tokens(), tokens);
  return c > 0 && session_->can_rewind_cheaply(static_cast<int>(c)) ? c : 0;
}

const char* Slot::choose_tokens(const GenerationSpec& spec, std::vector<int32_t>& tokens) const {
  const text::Tokenizer& tok = shared_.tok;
  tokens = spec.tokens;
  const auto& live = session_->tokens();
  if (live.empty()) return "cold";
  if (live.size() <= tokens.size() && std::equal(live.begin(), live.end(), tokens.begin())) {
    return "token-prefix";
  }
  // The live text may match byte for byte while its tokens differ (the model sampled a
  // different BPE split than a fresh tokenization of the same bytes): keep the live tokens
  // and tokenize only the new suffix.
  std::string live_text = tok.decode(std::vector<int>(live.begin(), live.end()));
  if (spec.rendered.size() > live_text.size() &&
      spec.rendered.compare(0, live_text.size(), live_text) == 0) {
    if (auto rest = segments_after(spec.segments, live_text.size())) {
      std::vector<int32_t> joined(live.begin(), live.end());
      auto suffix = tokenize_segments(tok, *rest);
      joined.insert(joined.end(), suffix.begin(), suffix.end());
      tokens = std::move(joined);
      return "text-prefix";
    }
  }
  for (const auto& v : visible_) {
    if (v.live_tokens != live.size() || spec.rendered.size() <= v.text.size() ||
        spec.rendered.compare(0, v.text.size(), v.text) != 0) {
      continue;
    }
    if (auto rest = segments_after(spec.segments, v.text.size())) {
      std::vector<int32_t> joined(live.begin(), live.end());
      auto suffix = tokenize_segments(tok, *rest);
      joined.insert(joined.end(), suffix.begin(), suffix.end());
      tokens = std::move(joined);
      return "visible-prefix";
    }
  }
  return "common-prefix";
}

const char* Slot::consult_disk(const GenerationSpec& spec, std::vector<int32_t>& tokens,
                               const char* source, bool& cold) {
  Session& s = *session_;
  kvcache::DiskCache* disk = shared_.disk;
  auto reusable = [&] {
    const int c = static_cast<int>(common_prefix(s.tokens(), tokens));
    return c > 0 && s.can_rewind_cheaply(c) ? c : 0;
  };
  const std::string_view src = source;
  if (!disk || src == "token-prefix" || src == "text-prefix" || src == "visible-prefix") {
    cold = false;
    return source;
  }
  if (s.n_tokens() > 0) {
    const char* why = static_cast<size_t>(s.n_tokens()) > tokens.size()
                          ? "incoming-prompt-shorter-than-live-checkpoint"
                          : "token-mismatch";
    log_kv("kv cache: live miss reason=" + std::string(why) + " live=" +
           std::to_string(s.n_tokens()) + " common=" +
           std::to_string(common_prefix(s.tokens(), tokens)) + " prompt=" +
           std::to_string(tokens.size()));
    save_live(kvcache::Reason::Evict);
  }
  last_frontier_ = 0;
  const int keep = reusable();
  auto accept = [&](size_t key_bytes, int n) {
    return n > keep && n < ctx_ && segments_after(spec.segments, key_bytes).has_value();
  };
  if (auto hit = disk->load_longest_prefix(spec.rendered, s, accept)) {
    auto rest = segments_after(spec.segments, hit->key_bytes);
    std::vector<int32_t> joined(s.tokens().begin(), s.tokens().end());
    auto suffix = tokenize_segments(shared_.tok, *rest);
    joined.insert(joined.end(), suffix.begin(), suffix.end());
    tokens = std::move(joined);
    last_frontier_ = hit->tokens;
    if (shared_.tool_replay) {
      for (const auto& t : hit->tools) shared_.tool_replay->insert(t.id, t.dsml);
    }
    cold = false;
    return "disk";
  }
  cold = reusable() == 0;
  return source;
}

void Slot::plan_checkpoints(bool cold) {
  stops_.clear();
  next_stop_ = 0;
  kvcache::DiskCache* disk = shared_.disk;
  if (!disk) return;
  const kvcache::CacheOptions& o = disk->options();
  const int n = static_cast<int>(tokens_.size());
  int cold_len = -1;
  if (cold && o.cold_max_tokens > 0 && n >= o.min_tokens && n <= o.cold_max_tokens) {
    cold_len = kvcache::chat_anchor(o, tokens_, shared_.user_id, shared_.assistant_id);
    if (cold_len < 0) cold_len = kvcache::cold_store_len(o, n);
    stops_.emplace_back(cold_len, kvcache::Reason::Cold);
  }
  for (int f = kvcache::continued_target(o, last_frontier_); f > 0 && f <= n;
       f = kvcache::continued_target(o, f)) {
    // Frontiers under the minimum would be refused anyway: no pause for them.
    if (f != cold_len && f >= o.min_tokens) stops_.emplace_back(f, kvcache::Reason::Continued);
  }
  std::sort(stops_.begin(), stops_.end());
  // Pauses at or before the reuse point have nothing to wait for.
  std::erase_if(stops_, [&](const auto& st) { return st.first <= prefill_start_; });
}

void Slot::fail_job(const ApiError& e) {
  GenEvent ev{GenEvent::Kind::Failed};
  ev.error = e;
  job_->push(std::move(ev));
  reset_request();
}

void Slot::reset_request() {
  session_->set_cancel_flag(nullptr);
  spec_.reset();
  job_.reset();
  out_.reset();
  tokens_.clear();
  stops_.clear();
  state_ = State::Idle;
  last_used_ = Clock::now();
}

void Slot::begin(std::shared_ptr<Job> job) {
  job_ = std::move(job);
  const GenerationSpec& spec = job_->spec;
  Session& s = *session_;
  ++requests_;
  ++totals_.requests;
  last_serial_ = job_->serial;
  t0_ = Clock::now();
  source_ = "cold";
  reused_ = 0;
  try {
    source_ = choose_tokens(spec, tokens_);
    bool cold = false;
    source_ = consult_disk(spec, tokens_, source_, cold);  // an evict save may key by visible_
    visible_.clear();  // they described the live state this request replaces
    if (tokens_.size() >= static_cast<size_t>(ctx_)) throw context_length_error(tokens_.size(), ctx_);
    {
      // Tells the request thread its job is running (it then commits the response headers).
      GenEvent ev{GenEvent::Kind::Progress};
      ev.a = 0;
      ev.b = static_cast<int64_t>(tokens_.size());
      job_->push(std::move(ev));
    }
    // Nothing cheaply reusable: start from zero, so the cold checkpoint is taken on the way.
    if (cold && shared_.disk) s.reset();
    // The reuse point, decided as Session::sync decides it: the longest common prefix when
    // the state can be cut back to it cheaply, else a rebuild from zero; the last prompt
    // token is always evaluated unless the live state is exactly the prompt.
    const auto& live = s.tokens();
    const size_t n = tokens_.size();
    size_t common = common_prefix(live, tokens_);
    if (!(common == n && live.size() == n) && n > 0) {
      common = std::min(common, n - 1);
      if (common < live.size()) {
        if (s.can_rewind_cheaply(static_cast<int>(common))) {
          s.rewind(static_cast<int>(common));
        } else {
          s.reset();
          common = 0;
        }
      }
    }
    reused_ = static_cast<int>(common);
    prefill_start_ = piece_start_ = s.n_tokens();
    plan_checkpoints(cold);
    state_ = State::Prefill;
  } catch (const ApiError& e) {
    metrics().request_errors++;
    fail_job(e);
  } catch (const Error& e) {
    if (e.kind() == Error::Kind::ContextOverflow) {
      fail_job(context_length_error(tokens_.size(), ctx_));
    } else {
      fail_job(ApiError(500, std::string("prefill failed: ") + e.what(), "server_error"));
    }
  } catch (const std::exception& e) {
    fail_job(ApiError(500, std::string("prefill failed: ") + e.what(), "server_error"));
  }
}

std::optional<Slot::Piece> Slot::next_piece() {
  if (job_->cancelled) {
    prefill_failed(Error(Error::Kind::Cancelled, "cancelled"));
    return std::nullopt;
  }
  const int n = static_cast<int>(tokens_.size());
  const int pos = session_->n_tokens();
  Piece p{pos, pos, false};
  if (pos < n) {
    const int chunk = std::max(1, shared_.prefill_chunk);
    p.to = std::min(n, piece_start_ + ((pos - piece_start_) / chunk + 1) * chunk);
    p.at_stop = next_stop_ < stops_.size() && stops_[next_stop_].first <= p.to;
    if (p.at_stop) p.to = stops_[next_stop_].first;
  }
  return p;
}

void Slot::prefill_failed(const std::exception& ex) {
  session_->set_cancel_flag(nullptr);
  const auto* e = dynamic_cast<const Error*>(&ex);
  if ((e && e->kind() == Error::Kind::Cancelled) || job_->cancelled) {
    metrics().cancelled_jobs++;
    ++totals_.cancelled;
    fail_job(ApiError(499, "request cancelled", "cancelled"));
  } else if (e && e->kind() == Error::Kind::ContextOverflow) {
    fail_job(context_length_error(tokens_.size(), ctx_));
  } else {
    fail_job(ApiError(500, std::string("prefill failed: ") + ex.what(), "server_error"));
  }
}

void Slot::prefill_chunk() {
  const std::optional<Piece> p = next_piece();
  if (!p) return;
  if (p->to > p->from) {
    Session& s = *session_;
    try {
      SyncOptions so;
      so.chunk = std::max(1, shared_.prefill_chunk);
      s.set_cancel_flag(&job_->cancelled);
      s.sync(std::vector<int32_t>(tokens_.begin(), tokens_.begin() + p->to), so);
      s.set_cancel_flag(nullptr);
    } catch (const std::exception& e) {
      prefill_failed(e);
      return;
    }
  }
  piece_done(*p);
}

void Slot::piece_done(const Piece& p) {
  Session& s = *session_;
  const int n = static_cast<int>(tokens_.size());
  if (p.from < n) {
    try {
      if (p.at_stop) {
        if (s.n_tokens() == p.to) {
          shared_.disk->save(s, live_text(static_cast<size_t>(p.to)), stops_[next_stop_].second,
                             tool_entries());
          last_frontier_ = std::max(last_frontier_, p.to);
        }
        ++next_stop_;
        piece_start_ = p.to;
      }
    } catch (const std::exception& e) {
      prefill_failed(e);
      return;
    }
    GenEvent ev{GenEvent::Kind::Progress};
    ev.a = p.to - prefill_start_;
    ev.b = n - prefill_start_;
    job_->push(std::move(ev));
  }
  if (s.n_tokens() < n) return;

  // Prefill done: the answer starts.
  t1_ = Clock::now();
  const double prefill_s = std::chrono::duration<double>(t1_ - t0_).count();
  const size_t evaluated = tokens_.size() - static_cast<size_t>(reused_);
  Metrics& m = metrics();
  m.add_prefill(evaluated, prefill_s);
  m.prompt_tokens += tokens_.size();
  m.cached_prompt_tokens += reused_;
  if (reused_ > 0) m.cache_hits++;
  totals_.reused += static_cast<uint64_t>(reused_);
  totals_.evaluated += evaluated;
  GenEvent ev{GenEvent::Kind::Started};
  ev.usage.prompt_tokens = static_cast<int64_t>(tokens_.size());
  ev.usage.cached_tokens = reused_;
  job_->push(std::move(ev));

  const int64_t room = ctx_ - static_cast<int64_t>(tokens_.size());
  const int64_t max_new = std::max<int64_t>(0, std::min(job_->spec.max_tokens, room));
  out_ = std::make_unique<OutputPipeline>(*job_, shared_.tok, shared_.tool_replay, shared_.log,
                                          max_new);
  max_new_ = max_new;
  // (Drafts are not masked: a grammar-constrained answer decodes plainly. Forced test
  // outputs are committed like any other token: rejected drafts are rewound.)
  if (shared_.mtp_draft > 0 && shared_.engine && !job_->spec.grammar) {
    spec_ = std::make_unique<spec::Decoder>(*shared_.engine, s, out_->sampler(),
                                            spec::Options{shared_.mtp_draft, shared_.mtp_adaptive});
    if (job_->spec.drafts) {
      // Test hook: the draft of the i-th answer token (absolute position prompt + i).
      spec_->set_draft_source([drafts = *job_->spec.drafts, first = s.n_tokens()](int pos) {
        const int i = pos - first;
        return i >= 0 && i < static_cast<int>(drafts.size()) ? drafts[static_cast<size_t>(i)] : -1;
      });
    }
  }
  continued_at_ =
      shared_.disk ? kvcache::continued_target(shared_.disk->options(), last_frontier_) : 0;
  // The test hook's pause comes before every sampled token, the first and the last included.
  ready_at_ = t1_ + std::chrono::milliseconds(job_->spec.test_delay_ms);
  state_ = State::Decode;
}

std::optional<int32_t> Slot::next_token() {
  if (job_->cancelled) out_->cancel();
  std::optional<int32_t> tok;
  if (spec_) {
    tok = out_->step(spec_->logits(), [this](std::span<const float> lg, bool greedy) {
      return spec_->sample(lg, greedy);
    });
  } else {
    tok = out_->step(session_->logits());
  }
  if (tok && job_->spec.test_delay_ms > 0) {
    ready_at_ = Clock::now() + std::chrono::milliseconds(job_->spec.test_delay_ms);
  }
  return tok;
}

void Slot::eval_next(int32_t token) {
  if (!spec_) {
    session_->eval(token);
    return;
  }
  // Tokens this request may still sample after this one: drafts beyond them are waste.
  const int64_t more = max_new_ - out_->generated();
  spec_->advance(token, static_cast<int>(std::clamp<int64_t>(more, 0, 1 << 30)));
}

void Slot::end_speculation() {
  if (!spec_) return;
  Metrics& m = metrics();
  m.mtp_drafted += static_cast<uint64_t>(spec_->stats().drafted);
  m.mtp_accepted += static_cast<uint64_t>(spec_->stats().accepted);
  try {
    spec_->settle();  // the session holds exactly the evaluated answer tokens
  } catch (const std::exception&) {
    session_->reset();
  }
  spec_.reset();
}

void Slot::after_eval() {
  Session& s = *session_;
  if (continued_at_ > 0 && s.n_tokens() >= continued_at_ && !out_->in_dsml_syntax()) {
    save_live(kvcache::Reason::Continued);
    last_frontier_ = s.n_tokens();
    continued_at_ = kvcache::continued_target(shared_.disk->options(), last_frontier_);
  }
}

void Slot::finish(bool shutting_down) {
  Session& s = *session_;
  const GenerationSpec& spec = job_->spec;
  const auto t2 = Clock::now();
  const double prefill_s = std::chrono::duration<double>(t1_ - t0_).count();
  const double decode_s = std::chrono::duration<double>(t2 - t1_).count();
  const int64_t generated = out_->generated();
  const spec::Stats spec_stats = spec_ ? spec_->stats() : spec::Stats{};
  end_speculation();
  const size_t evaluated = tokens_.size() - static_cast<size_t>(reused_);
  Metrics& m = metrics();
  m.add_decode(generated, decode_s);
  m.completion_tokens += generated;
  totals_.generated += static_cast<uint64_t>(generated);
  if (out_->cancelled()) {
    m.cancelled_jobs++;
    ++totals_.cancelled;
  }
  Usage usage;
  usage.prompt_tokens = static_cast<int64_t>(tokens_.size());
  usage.cached_tokens = reused_;
  out_->finish(usage, shutting_down);

  if (shared_.log) {
    std::fprintf(stderr,
                 "ds4-server: %s #%llu slot=%d ctx=%d..%zu (%s) reused=%d evaluated=%zu gen=%lld "
                 "finish=%s prefill %.1f t/s decode %.1f t/s mtp drafted=%lld accepted=%lld\n",
                 spec.log_tag.c_str(), static_cast<unsigned long long>(job_->serial), id_, reused_,
                 tokens_.size(), source_, reused_, evaluated, static_cast<long long>(generated),
                 out_->log_finish().c_str(), prefill_s > 0 ? evaluated / prefill_s : 0.0,
                 decode_s > 0 ? generated / decode_s : 0.0, static_cast<long long>(spec_stats.drafted),
                 static_cast<long long>(spec_stats.accepted));
  }
  // The closing token (EOS or the end of a tool-call block) joins the live state after the
  // client has its answer, so the next turn's prompt extends the live tokens. One token, even
  // when a shutdown cancelled the job meanwhile: the state it completes is what the shutdown
  // checkpoint saves.
  const int32_t closing = out_->closing_token();
  if (closing >= 0 && s.n_tokens() < ctx_) {
    s.set_cancel_flag(nullptr);
    try {
      s.eval(closing);
    } catch (const std::exception&) {
      s.reset();
    }
  }
  if (out_->complete() && !spec.raw_output && s.n_tokens() > 0) {
    remember_visible(spec, out_->visible_content(), out_->first_call_block(),
                     out_->ended_with_eos());
  }
  reset_request();
}

void Slot::fail(const std::exception& e) {
  spec_.reset();
  fail_job(ApiError(500, std::string("generation failed: ") + e.what(), "server_error"));
  session_->reset();
}

void Slot::remember_visible(const GenerationSpec& spec, const std::string& content,
                            const std::string& block, bool ended_with_eos) {
  visible_.clear();
  const std::string_view open = text::kThinkOpen;
  if (!spec.thinking || spec.rendered.size() < open.size() ||
      spec.rendered.compare(spec.rendered.size() - open.size(), open.size(), open) != 0) {
    return;
  }
  const size_t live = static_cast<size_t>(session_->n_tokens());
  const std::string eos = ended_with_eos ? std::string(text::kEosToken) : std::string();
  // The turn replayed without its reasoning: "<think></think>" + content + calls.
  visible_.push_back({spec.rendered + std::string(text::kThinkClose) + content + block + eos, live,
                      kvcache::kExtResponsesVisible});
  // An earlier turn under the drop rule (no tools anywhere): "</think>" replaces "<think>".
  if (block.empty() && ended_with_eos) {
    visible_.push_back({spec.rendered.substr(0, spec.rendered.size() - open.size()) +
                            std::string(text::kThinkClose) + content + eos,
                        live, kvcache::kExtThinkingVisible});
  }
}

}  // namespace ds4::server
