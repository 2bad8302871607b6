#include "server/worker.h"

#include <algorithm>
#include <cstdio>

#include "text/chat.h"
#include "text/chat_tokenize.h"
#include "text/dsml.h"

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

Worker::Worker(std::unique_ptr<Session> session, const text::Tokenizer& tok, Metrics& metrics,
               bool log, std::unique_ptr<kvcache::DiskCache> disk)
    : session_(std::move(session)), tok_(tok), metrics_(metrics), log_(log),
      ctx_(session_->context_size()), disk_(std::move(disk)) {
  if (auto id = tok_.find_token("<｜User｜>")) user_id_ = *id;
  if (auto id = tok_.find_token("<｜Assistant｜>")) assistant_id_ = *id;
  thread_ = std::thread([this] { loop(); });
}

std::vector<kvcache::ToolReplayEntry> Worker::tool_entries() const {
  std::vector<kvcache::ToolReplayEntry> out;
  if (!tool_replay_) return out;
  for (auto& [id, dsml] : tool_replay_->entries()) out.push_back({std::move(id), std::move(dsml)});
  return out;
}

void Worker::log_kv(const std::string& line) const {
  if (log_) std::fprintf(stderr, "ds4-server: %s\n", line.c_str());
}

std::string Worker::live_text(size_t n) const {
  const auto& t = session_->tokens();
  std::string out;
  for (size_t i = 0; i < n && i < t.size(); ++i) out += tok_.token_bytes(t[i]);
  return out;
}

void Worker::save_live(kvcache::Reason reason) {
  if (!disk_) return;
  const int n = session_->n_tokens();
  if (n < disk_->options().min_tokens) return;
  // After a tool-less thinking answer the client's next prompt drops the reasoning: key the
  // checkpoint by that visible text (spec §12 ext flag bit 2); its tokens stay authoritative.
  // (The Responses form, bit 1, is not used: which endpoint a binding came from is unknown.)
  for (const auto& v : visible_) {
    if (v.kv_flag == kvcache::kExtThinkingVisible && v.live_tokens == static_cast<size_t>(n)) {
      disk_->save(*session_, v.text, reason, tool_entries(), v.kv_flag);
      return;
    }
  }
  disk_->save(*session_, live_text(static_cast<size_t>(n)), reason, tool_entries());
}

const char* Worker::consult_disk(const GenerationSpec& spec, std::vector<int32_t>& tokens,
                                 const char* source, bool& cold) {
  Session& s = *session_;
  auto common_prefix = [&] {
    const auto& live = s.tokens();
    size_t c = 0;
    while (c < live.size() && c < tokens.size() && live[c] == tokens[c]) ++c;
    return static_cast<int>(c);
  };
  auto reusable = [&] {
    const int c = common_prefix();
    return c > 0 && s.can_rewind_cheaply(c) ? c : 0;
  };
  const std::string_view src = source;
  if (!disk_ || src == "token-prefix" || src == "text-prefix" || src == "visible-prefix") {
    cold = false;
    return source;
  }
  if (s.n_tokens() > 0) {
    const char* why = static_cast<size_t>(s.n_tokens()) > tokens.size()
                          ? "incoming-prompt-shorter-than-live-checkpoint"
                          : "token-mismatch";
    log_kv("kv cache: live miss reason=" + std::string(why) + " live=" +
           std::to_string(s.n_tokens()) + " common=" + std::to_string(common_prefix()) +
           " prompt=" + std::to_string(tokens.size()));
    save_live(kvcache::Reason::Evict);
  }
  last_frontier_ = 0;
  const int keep = reusable();
  auto accept = [&](size_t key_bytes, int n) {
    return n > keep && n < ctx_ && segments_after(spec.segments, key_bytes).has_value();
  };
  if (auto hit = disk_->load_longest_prefix(spec.rendered, s, accept)) {
    auto rest = segments_after(spec.segments, hit->key_bytes);
    std::vector<int32_t> joined(s.tokens().begin(), s.tokens().end());
    auto suffix = tokenize_segments(tok_, *rest);
    joined.insert(joined.end(), suffix.begin(), suffix.end());
    tokens = std::move(joined);
    last_frontier_ = hit->tokens;
    if (tool_replay_) {
      for (const auto& t : hit->tools) tool_replay_->insert(t.id, t.dsml);
    }
    cold = false;
    return "disk";
  }
  cold = reusable() == 0;
  return source;
}

int Worker::sync_with_checkpoints(const std::vector<int32_t>& tokens, bool cold,
                                  const SyncOptions& so) {
  Session& s = *session_;
  if (!disk_) return s.sync(tokens, so);
  const kvcache::CacheOptions& o = disk_->options();
  const int n = static_cast<int>(tokens.size());
  // Nothing cheaply reusable: start from zero, so the cold checkpoint is taken on the way.
  if (cold) s.reset();
  int start = 0;
  {
    const auto& live = s.tokens();
    while (start < n && static_cast<size_t>(start) < live.size() && live[start] == tokens[start]) ++start;
  }
  std::vector<std::pair<int, kvcache::Reason>> stops;
  int cold_len = -1;
  if (cold && o.cold_max_tokens > 0 && n >= o.min_tokens && n <= o.cold_max_tokens) {
    cold_len = kvcache::chat_anchor(o, tokens, user_id_, assistant_id_);
    if (cold_len < 0) cold_len = kvcache::cold_store_len(o, n);
    stops.emplace_back(cold_len, kvcache::Reason::Cold);
  }
  for (int f = kvcache::continued_target(o, last_frontier_); f > 0 && f <= n;
       f = kvcache::continued_target(o, f)) {
    // Frontiers under the minimum would be refused anyway: no pause for them.
    if (f != cold_len && f >= o.min_tokens) stops.emplace_back(f, kvcache::Reason::Continued);
  }
  std::sort(stops.begin(), stops.end());
  int reused = -1;
  int base = 0;
  const int total = n - start;
  for (const auto& [pos, reason] : stops) {
    if (pos <= start || pos < s.n_tokens()) continue;  // already live: nothing to pause for
    SyncOptions part = so;
    if (so.progress) part.progress = [&, base](int done, int) { so.progress(base + done, total); };
    const int r = s.sync(std::vector<int32_t>(tokens.begin(), tokens.begin() + pos), part);
    if (reused < 0) reused = r;
    base = pos - start;
    if (s.n_tokens() == pos) {
      disk_->save(s, live_text(static_cast<size_t>(pos)), reason, tool_entries());
      last_frontier_ = std::max(last_frontier_, pos);
    }
  }
  SyncOptions part = so;
  if (so.progress) part.progress = [&, base](int done, int) { so.progress(base + done, total); };
  const int r = s.sync(tokens, part);
  return reused < 0 ? r : reused;
}

Worker::~Worker() { stop(); }

std::shared_ptr<Job> Worker::submit(GenerationSpec spec) {
  auto job = std::make_shared<Job>(std::move(spec));
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) throw ApiError(503, "server shutting down", "server_error");
    job->serial = next_serial_++;
    queue_.push_back(job);
    metrics_.queue_depth++;
  }
  cv_.notify_one();
  return job;
}

void Worker::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    for (auto& j : queue_) j->cancelled = true;
    if (running_) running_->cancelled = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (disk_ && !shutdown_saved_) {
    shutdown_saved_ = true;
    save_live(kvcache::Reason::Shutdown);
  }
}

void Worker::loop() {
  while (true) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;
      job = queue_.front();
      queue_.pop_front();
      running_ = job;
    }
    metrics_.busy = 1;
    if (job->cancelled) {
      metrics_.cancelled_jobs++;
      GenEvent ev{GenEvent::Kind::Failed};
      ev.error = ApiError(499, "request cancelled", "cancelled");
      job->push(std::move(ev));
    } else {
      run(*job);
    }
    metrics_.busy = 0;
    metrics_.queue_depth--;
    std::lock_guard<std::mutex> lock(mu_);
    running_.reset();
  }
}

const char* Worker::choose_tokens(const GenerationSpec& spec, std::vector<int32_t>& tokens) {
  tokens = spec.tokens;
  const auto& live = session_->tokens();
  if (live.empty()) return "cold";
  if (live.size() <= tokens.size() && std::equal(live.begin(), live.end(), tokens.begin())) {
    return "token-prefix";
  }
  // The live text may match byte for byte while its tokens differ (the model sampled a
  // different BPE split than a fresh tokenization of the same bytes): keep the live tokens
  // and tokenize only the new suffix.
  std::string live_text = tok_.decode(std::vector<int>(live.begin(), live.end()));
  if (spec.rendered.size() > live_text.size() &&
      spec.rendered.compare(0, live_text.size(), live_text) == 0) {
    if (auto rest = segments_after(spec.segments, live_text.size())) {
      std::vector<int32_t> joined(live.begin(), live.end());
      auto suffix = tokenize_segments(tok_, *rest);
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
      auto suffix = tokenize_segments(tok_, *rest);
      joined.insert(joined.end(), suffix.begin(), suffix.end());
      tokens = std::move(joined);
      return "visible-prefix";
    }
  }
  return "common-prefix";
}

void Worker::remember_visible(const GenerationSpec& spec, const std::string& content,
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

namespace {

// Largest cut <= n that does not split a UTF-8 sequence of s.
size_t utf8_cut(const std::string& s, size_t n) {
  if (n >= s.size()) return s.size();
  size_t cut = n;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80 && n - cut < 3) --cut;
  if ((static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) return n;  // not UTF-8 anyway
  return cut;
}

}  // namespace

void Worker::run(Job& job) {
  const GenerationSpec& spec = job.spec;
  Session& s = *session_;
  metrics_.generation_requests++;
  s.set_cancel_flag(&job.cancelled);
  struct ClearFlag {
    Session& s;
    ~ClearFlag() { s.set_cancel_flag(nullptr); }
  } clear_flag{s};

  std::vector<int32_t> tokens;
  const char* source = "cold";
  int reused = 0;
  auto t0 = Clock::now();
  try {
    source = choose_tokens(spec, tokens);
    bool cold = false;
    source = consult_disk(spec, tokens, source, cold);  // an evict save may key by visible_
    visible_.clear();  // they described the live state this request replaces
    if (tokens.size() >= static_cast<size_t>(ctx_)) throw context_length_error(tokens.size(), ctx_);
    {
      // Tells the request thread its job is running (it then commits the response headers).
      GenEvent ev{GenEvent::Kind::Progress};
      ev.a = 0;
      ev.b = static_cast<int64_t>(tokens.size());
      job.push(std::move(ev));
    }
    SyncOptions so;
    so.progress = [&](int done, int total) {
      GenEvent ev{GenEvent::Kind::Progress};
      ev.a = done;
      ev.b = total;
      job.push(std::move(ev));
    };
    reused = sync_with_checkpoints(tokens, cold, so);
  } catch (const ApiError& e) {
    metrics_.request_errors++;
    GenEvent ev{GenEvent::Kind::Failed};
    ev.error = e;
    job.push(std::move(ev));
    return;
  } catch (const Error& e) {
    GenEvent ev{GenEvent::Kind::Failed};
    if (e.kind() == Error::Kind::Cancelled || job.cancelled) {
      metrics_.cancelled_jobs++;
      ev.error = ApiError(499, "request cancelled", "cancelled");
    } else if (e.kind() == Error::Kind::ContextOverflow) {
      ev.error = context_length_error(tokens.size(), ctx_);
    } else {
      ev.error = ApiError(500, std::string("prefill failed: ") + e.what(), "server_error");
    }
    job.push(std::move(ev));
    return;
  } catch (const std::exception& e) {
    GenEvent ev{GenEvent::Kind::Failed};
    ev.error = ApiError(500, std::string("prefill failed: ") + e.what(), "server_error");
    job.push(std::move(ev));
    return;
  }
  auto t1 = Clock::now();
  double prefill_s = std::chrono::duration<double>(t1 - t0).count();
  size_t evaluated = tokens.size() - static_cast<size_t>(reused);
  metrics_.add_prefill(evaluated, prefill_s);
  metrics_.prompt_tokens += tokens.size();
  metrics_.cached_prompt_tokens += reused;
  if (reused > 0) metrics_.cache_hits++;

  Usage usage;
  usage.prompt_tokens = static_cast<int64_t>(tokens.size());
  usage.cached_tokens = reused;
  {
    GenEvent ev{GenEvent::Kind::Started};
    ev.usage = usage;
    job.push(std::move(ev));
  }

  // ---- decode
  const int64_t room = ctx_ - static_cast<int64_t>(tokens.size());
  const int64_t max_new = std::max<int64_t>(0, std::min(spec.max_tokens, room));
  sample::Params sp = spec.sampling;
  sample::Sampler sampler(sp);
  text::DsmlParserOptions popt;
  popt.thinking = spec.thinking;
  popt.parse_tool_calls = spec.parse_tools;
  // Streamed answers must agree with whole ones: a call goes out only once its block is valid.
  popt.hold_calls_until_block_end = true;
  popt.make_id = [this, &spec](size_t) {
    return tool_replay_ ? tool_replay_->new_id(spec.tool_id_prefix)
                        : ToolReplay::random_id(spec.tool_id_prefix);
  };
  text::DsmlStreamParser parser(popt);
  text::StreamDecoder decoder(tok_, text::StreamDecoder::InvalidBytes::kRaw);

  size_t max_stop = 0;
  for (const auto& st : spec.stop) max_stop = std::max(max_stop, st.size());
  std::string raw;  // every decided output byte
  size_t fed = 0;   // bytes of raw already handed to the parser
  std::vector<text::DsmlEvent> pevents;
  bool any_tool_started = false;
  std::string visible_content;  // the answer text the client sees

  auto forward = [&](std::vector<text::DsmlEvent>& evs) {
    for (auto& pe : evs) {
      GenEvent ev{GenEvent::Kind::Content};
      switch (pe.kind) {
        case text::DsmlEventKind::Reasoning:
          ev.kind = GenEvent::Kind::Reasoning;
          ev.text = std::move(pe.text);
          break;
        case text::DsmlEventKind::Text:
          ev.text = std::move(pe.text);
          visible_content += ev.text;
          break;
        case text::DsmlEventKind::ToolCallStart:
          any_tool_started = true;
          ev.kind = GenEvent::Kind::ToolCallStart;
          ev.index = pe.index;
          ev.id = pe.id;
          ev.name = pe.name;
          break;
        case text::DsmlEventKind::ToolCallArgs:
          ev.kind = GenEvent::Kind::ToolCallArgs;
          ev.index = pe.index;
          ev.text = std::move(pe.text);
          break;
        case text::DsmlEventKind::Error:
          if (log_) std::fprintf(stderr, "ds4-server: #%llu invalid tool call: %s\n",
                                 static_cast<unsigned long long>(job.serial), pe.text.c_str());
          continue;
        default:
          continue;
      }
      if ((ev.kind == GenEvent::Kind::Content || ev.kind == GenEvent::Kind::Reasoning) &&
          ev.text.empty()) {
        continue;
      }
      job.push(std::move(ev));
    }
    evs.clear();
  };
  auto feed = [&](size_t upto) {
    if (upto <= fed) return;
    std::string_view bytes(raw.data() + fed, upto - fed);
    fed = upto;
    if (spec.raw_output) {
      GenEvent ev{GenEvent::Kind::Content};
      ev.text = std::string(bytes);
      job.push(std::move(ev));
      return;
    }
    parser.feed(bytes, pevents);
    forward(pevents);
  };

  std::string finish = "length";
  int64_t generated = 0;
  int32_t pending_eval = -1;  // final sampled token, evaluated after the answer is out
  bool stop_hit = false, cancelled = false;
  std::string stop_matched;
  const int32_t eos = tok_.eos_id();
  int continued_at = disk_ ? kvcache::continued_target(disk_->options(), last_frontier_) : 0;
  try {
    while (true) {
      if (job.cancelled) {
        cancelled = true;
        break;
      }
      if (generated >= max_new) {
        finish = "length";
        break;
      }
      const auto& logits = s.logits();
      int32_t tok;
      if (spec.forced_tokens) {
        tok = generated < static_cast<int64_t>(spec.forced_tokens->size())
                  ? (*spec.forced_tokens)[generated]
                  : eos;
      } else {
        bool greedy = !spec.raw_output && parser.in_dsml_syntax();
        tok = sampler.sample(logits, greedy);
      }
      ++generated;
      if (spec.top_logprobs >= 0) {
        GenEvent ev{GenEvent::Kind::Logprob};
        ev.logprob.id = tok;
        ev.logprob.bytes = tok_.token_bytes(tok);
        ev.logprob.logprob = sample::token_logprob(logits, tok);
        for (const auto& tp : sample::top_logprobs(logits, spec.top_logprobs)) {
          ev.logprob.top.emplace_back(tok_.token_bytes(tp.id), tp.logprob);
        }
        job.push(std::move(ev));
      }
      if (spec.test_delay_ms > 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(spec.test_delay_ms));
      }
      if (tok == eos) {
        finish = "stop";
        pending_eval = tok;
        break;
      }
      raw += decoder.push(tok);
      if (max_stop > 0) {
        size_t hit = std::string::npos;
        for (const auto& st : spec.stop) {
          size_t p = raw.find(st, fed);
          if (p < hit) {
            hit = p;
            stop_matched = st;
          }
        }
        if (hit != std::string::npos) {
          feed(hit);
          raw.resize(hit);
          stop_hit = true;
          finish = "stop";
          break;
        }
        size_t safe = raw.size() >= max_stop - 1 ? raw.size() - (max_stop - 1) : 0;
        feed(utf8_cut(raw, safe));
      } else {
        feed(raw.size());
      }
      if (!spec.raw_output && parser.tool_calls_done()) {
        finish = "tool_calls";
        pending_eval = tok;
        break;
      }
      try {
        s.eval(tok);
      } catch (const Error& e) {
        // The engine honours the cancel flag inside eval too.
        if (e.kind() != Error::Kind::Cancelled) throw;
        cancelled = true;
        break;
      }
      if (continued_at > 0 && s.n_tokens() >= continued_at && !parser.in_dsml_syntax()) {
        save_live(kvcache::Reason::Continued);
        last_frontier_ = s.n_tokens();
        continued_at = kvcache::continued_target(disk_->options(), last_frontier_);
      }
    }
    if (!stop_hit && !cancelled) {
      raw += decoder.flush();
      feed(raw.size());
    }
    if (!spec.raw_output && !cancelled) {
      parser.finish(pevents);
      forward(pevents);
    }
  } catch (const std::exception& e) {
    GenEvent ev{GenEvent::Kind::Failed};
    ev.error = ApiError(500, std::string("generation failed: ") + e.what(), "server_error");
    job.push(std::move(ev));
    return;
  }
  auto t2 = Clock::now();
  double decode_s = std::chrono::duration<double>(t2 - t1).count();
  metrics_.add_decode(generated, decode_s);
  metrics_.completion_tokens += generated;
  if (cancelled) metrics_.cancelled_jobs++;
  (void)any_tool_started;

  GenEvent done{GenEvent::Kind::Done};
  usage.completion_tokens = generated;
  done.usage = usage;
  // A job cut short by shutdown ends as a failed generation; one whose client left is
  // answered to nobody.
  bool shutting_down;
  {
    std::lock_guard<std::mutex> lock(mu_);
    shutting_down = stopping_;
  }
  done.finish_reason = cancelled ? (shutting_down ? "error" : "cancelled") : finish;
  if (!spec.raw_output) {
    for (const auto& c : parser.tool_calls()) {
      done.tool_calls.push_back({c.id, c.name, c.arguments_json});
    }
    if (finish == "tool_calls" && done.tool_calls.empty()) done.finish_reason = "stop";
    // Remembered before the client sees the ids, so its next request can replay them.
    if (tool_replay_) {
      for (const auto& c : parser.tool_calls()) tool_replay_->insert(c.id, c.block_raw);
    }
  }
  if (stop_hit) done.stop_sequence = stop_matched;
  const std::string done_finish = done.finish_reason;
  job.push(std::move(done));

  if (log_) {
    std::fprintf(stderr,
                 "ds4-server: %s #%llu ctx=%d..%zu (%s) gen=%lld finish=%s prefill %.1f t/s "
                 "decode %.1f t/s\n",
                 spec.log_tag.c_str(), static_cast<unsigned long long>(job.serial), reused,
                 tokens.size(), source, static_cast<long long>(generated),
                 cancelled ? "cancelled" : finish.c_str(),
                 prefill_s > 0 ? evaluated / prefill_s : 0.0,
                 decode_s > 0 ? generated / decode_s : 0.0);
  }
  // The closing token (EOS or the end of a tool-call block) joins the live state after the
  // client has its answer, so the next turn's prompt extends the live tokens.
  if (pending_eval >= 0 && s.n_tokens() < ctx_) {
    // One token, even when a shutdown cancelled the job meanwhile: the state it completes
    // is what the shutdown checkpoint saves.
    s.set_cancel_flag(nullptr);
    try {
      s.eval(pending_eval);
    } catch (const std::exception&) {
      s.reset();
    }
  }
  const bool complete = !cancelled && !stop_hit && !parser.had_error() &&
                        (finish == "stop" || done_finish == "tool_calls");
  if (complete && !spec.raw_output && pending_eval >= 0 && s.n_tokens() > 0) {
    const auto& calls = parser.tool_calls();
    remember_visible(spec, visible_content, calls.empty() ? std::string() : calls.front().block_raw,
                     /*ended_with_eos=*/finish == "stop");
  }
}

}  // namespace ds4::server
