#include "server/output.h"

#include <algorithm>
#include <cstdio>

#include "text/unicode.h"

namespace ds4::server {

namespace {

text::DsmlParserOptions parser_options(const GenerationSpec& spec, ToolReplay* replay) {
  text::DsmlParserOptions popt;
  popt.thinking = spec.thinking;
  popt.parse_tool_calls = spec.parse_tools;
  // Streamed answers must agree with whole ones: a call goes out only once its block is valid.
  popt.hold_calls_until_block_end = true;
  popt.make_id = [replay, prefix = spec.tool_id_prefix](size_t) {
    return replay ? replay->new_id(prefix) : ToolReplay::random_id(prefix);
  };
  return popt;
}

}  // namespace

OutputPipeline::OutputPipeline(Job& job, const text::Tokenizer& tok, ToolReplay* replay, bool log,
                               int64_t max_new)
    : job_(job), spec_(job.spec), tok_(tok), replay_(replay), log_(log), max_new_(max_new),
      sampler_(job.spec.sampling),
      // Reasoning stays free: in thinking mode the grammar starts after </think>.
      grammar_(job.spec.forced_tokens && !job.spec.forced_then_sample ? nullptr : job.spec.grammar,
               job.spec.thinking && !job.spec.raw_output, tok.think_close_id()),
      parser_(parser_options(job.spec, replay)),
      decoder_(tok, text::StreamDecoder::InvalidBytes::kRaw) {
  for (const auto& st : spec_.stop) max_stop_ = std::max(max_stop_, st.size());
}

void OutputPipeline::forward(std::vector<text::DsmlEvent>& evs) {
  for (auto& pe : evs) {
    GenEvent ev{GenEvent::Kind::Content};
    switch (pe.kind) {
      case text::DsmlEventKind::Reasoning:
        ev.kind = GenEvent::Kind::Reasoning;
        ev.text = std::move(pe.text);
        break;
      case text::DsmlEventKind::Text:
        ev.text = std::move(pe.text);
        visible_content_ += ev.text;
        break;
      case text::DsmlEventKind::ToolCallStart:
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
        if (log_) std::fprintf(stderr, "ds4-server: #%llu %s\n",
                               static_cast<unsigned long long>(job_.serial), pe.text.c_str());
        continue;
      default:
        continue;
    }
    if ((ev.kind == GenEvent::Kind::Content || ev.kind == GenEvent::Kind::Reasoning) &&
        ev.text.empty()) {
      continue;
    }
    job_.push(std::move(ev));
  }
  evs.clear();
}

void OutputPipeline::feed(size_t upto) {
  if (upto <= fed_) return;
  std::string_view bytes(raw_.data() + fed_, upto - fed_);
  fed_ = upto;
  if (spec_.raw_output) {
    GenEvent ev{GenEvent::Kind::Content};
    ev.text = std::string(bytes);
    job_.push(std::move(ev));
    return;
  }
  parser_.feed(bytes, pevents_);
  forward(pevents_);
}

std::optional<int32_t> OutputPipeline::step(std::span<const float> logits,
                                            const std::function<int32_t(std::span<const float>, bool)>& pick) {
  if (cancelled_) return std::nullopt;
  if (generated_ >= max_new_) {
    finish_ = "length";
    return std::nullopt;
  }
  const int32_t eos = tok_.eos_id();
  int32_t tok;
  if (spec_.forced_tokens && (!spec_.forced_then_sample ||
                             generated_ < static_cast<int64_t>(spec_.forced_tokens->size()))) {
    tok = generated_ < static_cast<int64_t>(spec_.forced_tokens->size())
              ? (*spec_.forced_tokens)[generated_]
              : eos;
  } else if (grammar_.active()) {
    tok = grammar_.sample(sampler_, logits);
  } else {
    const bool greedy = !spec_.raw_output && parser_.in_dsml_syntax();
    tok = pick ? pick(logits, greedy) : sampler_.sample(logits, greedy);
    tok = grammar_.vet_free(sampler_, logits, tok, greedy);
  }
  grammar_.accept(tok);
  ++generated_;
  if (spec_.top_logprobs >= 0) {
    GenEvent ev{GenEvent::Kind::Logprob};
    ev.logprob.id = tok;
    ev.logprob.bytes = tok_.token_bytes(tok);
    ev.logprob.logprob = sample::token_logprob(logits, tok);
    for (const auto& tp : sample::top_logprobs(logits, spec_.top_logprobs)) {
      ev.logprob.top.emplace_back(tok_.token_bytes(tp.id), tp.logprob);
    }
    job_.push(std::move(ev));
  }
  if (tok == eos) {
    finish_ = "stop";
    pending_eval_ = tok;
    return std::nullopt;
  }
  raw_ += decoder_.push(tok);
  if (max_stop_ > 0) {
    size_t hit = std::string::npos;
    for (const auto& st : spec_.stop) {
      const size_t p = raw_.find(st, fed_);
      if (p < hit) {
        hit = p;
        stop_matched_ = st;
      }
    }
    if (hit != std::string::npos) {
      feed(hit);
      raw_.resize(hit);
      stop_hit_ = true;
      finish_ = "stop";
      return std::nullopt;
    }
    const size_t safe = raw_.size() >= max_stop_ - 1 ? raw_.size() - (max_stop_ - 1) : 0;
    feed(text::unicode::utf8_cut(raw_, safe));
  } else {
    feed(raw_.size());
  }
  if (!spec_.raw_output && parser_.tool_calls_done()) {
    finish_ = "tool_calls";
    pending_eval_ = tok;
    return std::nullopt;
  }
  return tok;
}

void OutputPipeline::finish(const Usage& usage, bool shutting_down) {
  if (!stop_hit_ && !cancelled_) {
    raw_ += decoder_.flush();
    feed(raw_.size());
  }
  if (!spec_.raw_output && !cancelled_) {
    parser_.finish(pevents_);
    forward(pevents_);
  }
  GenEvent done{GenEvent::Kind::Done};
  done.usage = usage;
  done.usage.completion_tokens = generated_;
  // A job cut short by shutdown ends as a failed generation; one whose client left is
  // answered to nobody.
  done.finish_reason = cancelled_ ? (shutting_down ? "error" : "cancelled") : finish_;
  if (!spec_.raw_output) {
    for (const auto& c : parser_.tool_calls()) {
      done.tool_calls.push_back({c.id, c.name, c.arguments_json});
    }
    if (finish_ == "tool_calls" && done.tool_calls.empty()) done.finish_reason = "stop";
    // Remembered before the client sees the ids, so its next request can replay them.
    if (replay_) {
      for (const auto& c : parser_.tool_calls()) replay_->insert(c.id, c.block_raw);
    }
  }
  if (stop_hit_) done.stop_sequence = stop_matched_;
  done_finish_ = done.finish_reason;
  job_.push(std::move(done));
}

bool OutputPipeline::complete() const {
  return !cancelled_ && !stop_hit_ && !parser_.had_error() &&
         (finish_ == "stop" || done_finish_ == "tool_calls") && pending_eval_ >= 0;
}

std::string OutputPipeline::first_call_block() const {
  const auto& calls = parser_.tool_calls();
  return calls.empty() ? std::string() : calls.front().block_raw;
}

}  // namespace ds4::server
