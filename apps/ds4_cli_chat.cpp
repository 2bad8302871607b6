// Prompt rendering, streamed output, the generation loop, the logprob dump and the
// conversation state shared by one-shot runs and the REPL.
#include <optional>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "grammar/constraint.h"
#include "grammar/sampling.h"
#include "ds4_cli.h"
#include "kvcache/hash.h"
#include "text/chat.h"
#include "text/chat_tokenize.h"
#include "text/json_writer.h"
#include "text/tokenizer.h"

namespace ds4::cli {

static_assert(std::is_same_v<int, int32_t>, "token ids are shared between int and int32_t vectors");

namespace {

constexpr std::string_view kThinkCloseText = "</think>";
constexpr const char* kDim = "\x1b[2m";
constexpr const char* kReset = "\x1b[0m";

double now_s() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

}  // namespace

// ---------------------------------------------------------------- rendering

// The CLI's modes as the text layer's render options; `effective` already accounts for the
// context size (effective_think_mode).
text::RenderOptions ChatRenderer::options(ThinkMode effective) {
  text::RenderOptions o;
  o.thinking_mode = effective == ThinkMode::None ? text::ThinkingMode::Chat : text::ThinkingMode::Thinking;
  o.reasoning_effort = effective == ThinkMode::Max ? text::ReasoningEffort::Max : text::ReasoningEffort::High;
  return o;
}

std::vector<int32_t> ChatRenderer::tokens(const nlohmann::ordered_json& messages,
                                          const text::RenderOptions& o) const {
  const std::vector<int> ids = text::tokenize_prompt(tok_, text::render_chat_segments(messages, o));
  return std::vector<int32_t>(ids.begin(), ids.end());
}

std::vector<int32_t> ChatRenderer::head(ThinkMode effective, const std::string& system) const {
  text::RenderOptions o = options(effective);
  o.add_generation_prompt = false;
  return tokens(nlohmann::ordered_json::array({{{"role", "system"}, {"content", system}}}), o);
}

void ChatRenderer::append_turn(std::vector<int32_t>& out, const std::string& user, ThinkMode effective) const {
  // A user message on its own: no BOS, and no Think-Max prefix (it belongs to the head).
  text::RenderOptions o = options(effective == ThinkMode::Max ? ThinkMode::High : effective);
  o.add_bos = false;
  const std::vector<int32_t> turn = tokens(nlohmann::ordered_json::array({{{"role", "user"}, {"content", user}}}), o);
  out.insert(out.end(), turn.begin(), turn.end());
}

std::vector<int32_t> ChatRenderer::one_shot(const std::string& prompt, const std::string& system,
                                            ThinkMode effective) const {
  if (prompt.starts_with(text::kBosToken)) {
    std::vector<int> ids = tok_.encode(prompt, /*parse_special=*/true);
    return std::vector<int32_t>(ids.begin(), ids.end());
  }
  return tokens(nlohmann::ordered_json::array({{{"role", "system"}, {"content", system}},
                                               {{"role", "user"}, {"content", prompt}}}),
                options(effective));
}

// ---------------------------------------------------------------- output

ReplyPrinter::ReplyPrinter(std::FILE* out, bool styled, bool starts_in_reasoning)
    : out_(out), styled_(styled), in_reasoning_(starts_in_reasoning) {}

void ReplyPrinter::emit(const char* p, size_t n) {
  if (n == 0) return;
  if (in_reasoning_ && !reasoning_opened_) open_reasoning();
  std::fwrite(p, 1, n, out_);
  at_line_start_ = p[n - 1] == '\n';
}

void ReplyPrinter::open_reasoning() {
  reasoning_opened_ = true;
  if (styled_) {
    std::fputs(kDim, out_);
  } else {
    std::fputs("<think>\n", out_);
    at_line_start_ = true;
  }
}

void ReplyPrinter::close_reasoning() {
  in_reasoning_ = false;
  if (!reasoning_opened_) return;  // nothing was shown: no empty block
  if (styled_) std::fputs(kReset, out_);
  if (!at_line_start_) std::fputc('\n', out_);
  if (!styled_) std::fputs("</think>\n", out_);
  at_line_start_ = true;
}

void ReplyPrinter::write(const std::string& bytes) {
  held_ += bytes;
  if (!in_reasoning_) {
    emit(held_.data(), held_.size());
    held_.clear();
    std::fflush(out_);
    return;
  }
  const size_t close = held_.find(kThinkCloseText);
  if (close != std::string::npos) {
    emit(held_.data(), close);
    close_reasoning();
    std::string rest = held_.substr(close + kThinkCloseText.size());
    held_.clear();
    write(rest);
    return;
  }
  // Hold a tail that may still become "</think>".
  size_t keep = 0;
  for (size_t k = std::min(held_.size(), kThinkCloseText.size() - 1); k > 0; --k) {
    if (held_.compare(held_.size() - k, k, kThinkCloseText.substr(0, k)) == 0) {
      keep = k;
      break;
    }
  }
  emit(held_.data(), held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  std::fflush(out_);
}

void ReplyPrinter::finish() {
  emit(held_.data(), held_.size());
  held_.clear();
  if (in_reasoning_) close_reasoning();
  if (!at_line_start_) std::fputc('\n', out_);
  at_line_start_ = true;
  std::fflush(out_);
}

// ---------------------------------------------------------------- generation

namespace {

// "processing N input tokens: a/b (p%), X t/s" redrawn in place on stderr.
class ProgressBar {
 public:
  explicit ProgressBar(double start) : start_(start) {}
  void update(int done, int total) {
    const double dt = now_s() - start_;
    const double pct = total > 0 ? 100.0 * done / total : 100.0;
    std::fprintf(stderr, "\rprocessing %d input tokens: %d/%d (%.1f%%), %.1f t/s\x1b[K", total,
                 done, total, pct, dt > 0 ? done / dt : 0.0);
    std::fflush(stderr);
    drawn_ = true;
  }
  void end() {
    if (drawn_) std::fputs("\r\x1b[K", stderr);
    drawn_ = false;
  }

 private:
  double start_;
  bool drawn_ = false;
};

bool cancel_requested(const std::atomic<bool>* c) {
  return c && c->load(std::memory_order_relaxed);
}

}  // namespace

TurnStats generate(Session& session, const std::vector<int32_t>& prompt, sample::Sampler& sampler,
                   const GenerateOptions& opt, std::vector<int32_t>& generated) {
  TurnStats st;
  st.prompt_tokens = static_cast<int>(prompt.size());
  session.set_cancel_flag(opt.cancel);
  const double t0 = now_s();
  ProgressBar bar(t0);
  SyncOptions sync_opt;
  if (opt.progress) sync_opt.progress = [&](int done, int total) { bar.update(done, total); };
  try {
    st.reused = session.sync(prompt, sync_opt);
  } catch (const Error& e) {
    bar.end();
    session.set_cancel_flag(nullptr);
    if (e.kind() != Error::Kind::Cancelled) throw;
    st.interrupted = true;
    st.prefill_s = now_s() - t0;
    return st;
  }
  bar.end();
  st.evaluated = st.prompt_tokens - st.reused;
  const double t1 = now_s();
  st.prefill_s = t1 - t0;
  if (opt.on_prefilled) opt.on_prefilled(st);

  const int room = session.context_size() - session.n_tokens();
  const int max_tokens = std::max(0, std::min(opt.max_tokens, room - 1));
  // With drafts the decoder verifies several tokens per pass; it hands them out one by one,
  // so this loop is the same as plain decode's (and so is its output, for greedy).
  std::optional<spec::Decoder> spec;
  // Drafts are not masked: a grammar turns speculative decoding off.
  if (opt.engine && opt.spec.max_draft > 0 && !opt.grammar) spec.emplace(*opt.engine, session, sampler, opt.spec);
  grammar::ConstrainedSampling gate(opt.grammar, opt.thinking, opt.think_close);
  while (st.generated < max_tokens) {
    if (cancel_requested(opt.cancel)) {
      st.interrupted = true;
      break;
    }
    const int32_t tok = spec                ? spec->sample(spec->logits())
                        : gate.active() ? gate.sample(sampler, session.logits())
                                        : gate.vet_free(sampler, session.logits(),
                                                        sampler.sample(session.logits()));
    gate.accept(tok);
    if (tok == opt.eos) {
      st.hit_eos = true;
      break;
    }
    generated.push_back(tok);
    ++st.generated;
    if (opt.on_token) opt.on_token(tok);
    // The last token is left for the next sync(): evaluating it would be wasted in one-shot.
    if (st.generated >= max_tokens) break;
    try {
      if (spec) {
        spec->advance(tok, max_tokens - st.generated);
      } else {
        session.eval(tok);
      }
    } catch (const Error& e) {
      if (e.kind() != Error::Kind::Cancelled) {
        session.set_cancel_flag(nullptr);
        throw;
      }
      st.interrupted = true;
      break;
    }
  }
  st.decode_s = now_s() - t1;
  if (spec) {
    spec->settle();  // the session holds the prompt and the evaluated reply tokens only
    if (opt.spec_stats) *opt.spec_stats = spec->stats();
  }
  session.set_cancel_flag(nullptr);
  return st;
}

void log_reuse(const TurnStats& s) {
  std::fprintf(stderr, "ds4: prefill: reused %d tokens, evaluated %d of %d\n", s.reused,
               s.evaluated, s.prompt_tokens);
  std::fflush(stderr);
}

std::string speed_summary(const TurnStats& s) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "ds4: prefill: %.2f t/s, generation: %.2f t/s",
                s.prefill_s > 0 ? s.evaluated / s.prefill_s : 0.0,
                s.decode_s > 0 ? s.generated / s.decode_s : 0.0);
  return buf;
}

// ---------------------------------------------------------------- logprob dump

namespace {

// {"id", "text", "bytes"}: "text" goes through the one JSON writer (invalid UTF-8 as U+FFFD);
// "bytes" keeps the token's exact bytes.
nlohmann::ordered_json json_token(const text::Tokenizer& tok, int32_t id) {
  const std::string& bytes = tok.token_bytes(id);
  nlohmann::ordered_json raw = nlohmann::ordered_json::array();
  for (char c : bytes) raw.push_back(static_cast<unsigned char>(c));
  return {{"id", id}, {"text", bytes}, {"bytes", std::move(raw)}};
}

// Non-finite values have no JSON number: null (as the writer does for them).
nlohmann::ordered_json json_number(float v) {
  return std::isfinite(v) ? nlohmann::ordered_json(v) : nlohmann::ordered_json(nullptr);
}

}  // namespace

void write_logprobs_json(std::FILE* out, Session& session, const text::Tokenizer& tok,
                         const std::vector<int32_t>& prompt, int top_k, int max_tokens,
                         int32_t eos) {
  session.sync(prompt);
  const int room = session.context_size() - session.n_tokens();
  max_tokens = std::max(0, std::min(max_tokens, room - 1));
  std::fprintf(out,
               "{\n  \"source\":\"ds4\",\n  \"prompt_tokens\":%zu,\n  \"ctx\":%d,\n"
               "  \"top_k\":%d,\n  \"steps\":[\n",
               prompt.size(), session.context_size(), top_k);
  for (int step = 0; step < max_tokens; ++step) {
    const std::vector<float>& logits = session.logits();
    const int32_t best = sample::argmax(logits);
    const auto top = sample::top_logprobs(logits, top_k);
    nlohmann::ordered_json alternatives = nlohmann::ordered_json::array();
    for (const auto& t : top) {
      alternatives.push_back({{"token", json_token(tok, t.id)},
                              {"logit", json_number(logits[static_cast<size_t>(t.id)])},
                              {"logprob", json_number(t.logprob)}});
    }
    const nlohmann::ordered_json entry = {
        {"step", step}, {"selected", json_token(tok, best)}, {"top_logprobs", std::move(alternatives)}};
    const std::string line = (step ? ",\n    " : "    ") + text::dump_json(entry);
    std::fputs(line.c_str(), out);
    if (best == eos || step + 1 >= max_tokens) break;
    session.eval(best);
  }
  std::fputs("\n  ]\n}\n", out);
}

// ---------------------------------------------------------------- conversation

Conversation::Conversation(Engine& engine, const text::Tokenizer& tok, CliOptions& opt)
    : engine_(engine),
      tok_(tok),
      opt_(opt),
      renderer_(tok),
      session_(engine.new_session(opt.ctx)),
      sampler_(opt.sampling) {
  if (!opt_.kv.dir.empty()) {
    const bool verbose = opt_.verbose;
    disk_ = std::make_unique<kvcache::DiskCache>(
        opt_.kv, kvcache::identity_of(engine.config(), opt_.kv_quant_bits),
        [verbose](const std::string& line) {
          if (verbose) std::fprintf(stderr, "ds4: %s\n", line.c_str());
        });
  }
}

namespace {

std::string token_text(const text::Tokenizer& tok, const std::vector<int32_t>& ids) {
  std::string out;
  for (int32_t t : ids) out += tok.token_bytes(t);
  return out;
}

}  // namespace

int Conversation::resume() {
  if (!disk_) return 0;
  const std::vector<int32_t> head = transcript();  // before any turn: the head alone
  const std::string head_text = token_text(tok_, head);
  // The newest conversation checkpoint of this head (the REPL saves them as agent-session).
  std::string best;
  uint64_t best_used = 0;
  uint32_t best_tokens = 0;
  for (const auto& f : disk_->scan()) {
    if (!f.header || f.header->reason != kvcache::Reason::AgentSession) continue;
    if (f.key_bytes <= head_text.size()) continue;
    const auto& h = *f.header;
    if (best.empty() || h.last_used > best_used || (h.last_used == best_used && h.tokens > best_tokens)) {
      best = f.name;
      best_used = h.last_used;
      best_tokens = h.tokens;
    }
  }
  if (best.empty()) return 0;
  auto key = disk_->read_key(best);
  if (!key || key->compare(0, head_text.size(), head_text) != 0) return 0;
  auto hit = disk_->load_longest_prefix(*key, *session_);
  if (!hit) return 0;
  const auto& live = session_->tokens();
  if (live.size() <= head.size() || !std::equal(head.begin(), head.end(), live.begin())) {
    session_->reset();  // another head spelled with the same bytes: start fresh
    return 0;
  }
  turns_.assign(live.begin() + static_cast<std::ptrdiff_t>(head.size()), live.end());
  saved_name_ = hit->name;
  return hit->tokens;
}

void Conversation::save_to_disk() {
  if (!disk_) return;
  // The reply's last token and the closing EOS join the live state (the next turn would
  // evaluate them anyway), so the checkpoint is the whole transcript.
  const std::vector<int32_t> all = transcript();
  if (static_cast<int>(all.size()) < opt_.kv.min_tokens || static_cast<int>(all.size()) >= ctx()) {
    return;
  }
  session_->sync(all);
  const std::string key = token_text(tok_, all);
  const std::string name = kvcache::sha1_hex(key) + ".kv";
  if (disk_->save(*session_, key, kvcache::Reason::AgentSession)) {
    // The previous turn's checkpoint is a prefix of this one: no longer needed.
    if (!saved_name_.empty() && saved_name_ != name) disk_->remove(saved_name_);
    saved_name_ = name;
  }
}

std::vector<int32_t> Conversation::transcript() const {
  std::vector<int32_t> all = renderer_.head(effective_think_mode(opt_.think, ctx()), opt_.system);
  all.insert(all.end(), turns_.begin(), turns_.end());
  return all;
}

void Conversation::set_ctx(int ctx) {
  std::unique_ptr<Session> fresh = engine_.new_session(ctx);  // throws: the old one stays
  session_.reset();
  session_ = std::move(fresh);
}

namespace {

std::string escape_for_log(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c == '\\') out += "\\\\";
    else out += c;
  }
  return out;
}

}  // namespace

bool Conversation::turn(const std::string& user_text, std::FILE* out,
                        const std::atomic<bool>* cancel) {
  const ThinkMode eff = effective_think_mode(opt_.think, ctx());
  const bool thinking = eff != ThinkMode::None;
  const size_t rollback = turns_.size();
  renderer_.append_turn(turns_, user_text, eff);
  const std::vector<int32_t> prompt = transcript();
  if (disk_ && session_->n_tokens() == 0) {
    // A fresh session (after /ctx or /clear): a stored prefix saves the prefill.
    disk_->load_longest_prefix(token_text(tok_, prompt), *session_);
  }
  if (opt_.verbose) {
    std::vector<int> rendered(turns_.begin() + static_cast<std::ptrdiff_t>(rollback), turns_.end());
    std::fprintf(stderr, "ds4: turn: %s\n", escape_for_log(tok_.decode(rendered)).c_str());
  }

  const bool styled = opt_.color && isatty(fileno(out));
  ReplyPrinter printer(out, styled, thinking);
  text::StreamDecoder decoder(tok_);
  GenerateOptions g;
  g.max_tokens = opt_.n_predict;
  g.eos = tok_.eos_id();
  g.cancel = cancel;
  g.progress = isatty(fileno(stderr));
  g.on_token = [&](int32_t t) { printer.write(decoder.push(t)); };
  if (opt_.verbose) g.on_prefilled = log_reuse;
  g.engine = &engine_;
  g.spec = spec::Options{opt_.mtp_draft, opt_.mtp_adaptive};
  if (!opt_.grammar.empty()) {
    g.grammar = grammar::compile_cached(opt_.grammar, grammar::vocabulary_of(tok_));
    g.thinking = thinking;
    g.think_close = tok_.think_close_id();
  }
  std::vector<int32_t> reply;
  TurnStats st;
  try {
    st = generate(*session_, prompt, sampler_, g, reply);
  } catch (const Error& e) {
    printer.finish();
    turns_.resize(rollback);
    if (e.kind() == Error::Kind::ContextOverflow) {
      std::fprintf(stderr,
                   "ds4: the conversation (%zu tokens) does not fit the context of %d tokens; "
                   "use /clear or /ctx N\n",
                   prompt.size(), ctx());
    } else {
      std::fprintf(stderr, "ds4: generation failed: %s\n", e.what());
    }
    return false;
  }
  printer.write(decoder.flush());
  printer.finish();
  if (st.interrupted && st.generated == 0) {
    turns_.resize(rollback);  // nothing was said: the turn never happened
    std::fputs("ds4: interrupted\n", stderr);
    return true;
  }
  turns_.insert(turns_.end(), reply.begin(), reply.end());
  turns_.push_back(tok_.eos_id());
  if (st.interrupted) std::fputs("ds4: interrupted\n", stderr);
  std::fprintf(stderr, "%s\n", speed_summary(st).c_str());
  try {
    save_to_disk();
  } catch (const Error& e) {
    std::fprintf(stderr, "ds4: saving the conversation failed: %s\n", e.what());
  }
  return true;
}

}  // namespace ds4::cli
