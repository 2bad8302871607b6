#include "text/dsml.h"

#include "random/random.h"
#include "text/chat_json.h"
#include "text/unicode.h"

namespace ds4::text {

// ================================================================ rendering

namespace {

void write_parameter(SegmentWriter& out, std::string_view key, bool is_string, std::string_view value) {
  out.text("<");
  out.special(kDsmlToken);
  out.text("parameter name=\"");
  out.text(key);
  out.text(is_string ? "\" string=\"true\">" : "\" string=\"false\">");
  out.text(value);
  out.text("</");
  out.special(kDsmlToken);
  out.text("parameter>");
}

void write_parameters(SegmentWriter& out, const nlohmann::ordered_json& arguments) {
  bool first = true;
  auto separator = [&] {
    if (!first) out.text("\n");
    first = false;
  };
  if (arguments.is_null()) return;  // missing arguments: a zero-argument call
  if (arguments.is_string()) {
    const std::string& raw = arguments.get_ref<const std::string&>();
    std::optional<pyjson::Value> parsed = pyjson::parse(raw);
    if (!parsed || parsed->kind != pyjson::Value::Kind::Object) {
      // The encoder's fallback for text json.loads rejects. (It raises on non-object JSON;
      // treating that as unparsable text keeps the request servable.)
      write_parameter(out, "arguments", true, raw);
      return;
    }
    for (const auto& [key, value] : parsed->members) {
      separator();
      if (value.kind == pyjson::Value::Kind::String) {
        write_parameter(out, key, true, value.text);
      } else {
        write_parameter(out, key, false, pyjson::dumps(value));
      }
    }
    return;
  }
  if (arguments.is_object()) {
    for (const auto& [key, value] : arguments.items()) {
      separator();
      if (value.is_string()) {
        write_parameter(out, key, true, value.get_ref<const std::string&>());
      } else {
        write_parameter(out, key, false, pyjson::dumps(value));
      }
    }
    return;
  }
  // Numbers, arrays, booleans: what the encoder does with a non-string it cannot json.loads.
  write_parameter(out, "arguments", false, pyjson::dumps(arguments));
}

void write_invoke(SegmentWriter& out, std::string_view name, const nlohmann::ordered_json& arguments) {
  out.text("<");
  out.special(kDsmlToken);
  out.text("invoke name=\"");
  out.text(name);
  out.text("\">\n");
  write_parameters(out, arguments);
  out.text("\n</");
  out.special(kDsmlToken);
  out.text("invoke>");
}

}  // namespace

std::string render_dsml_parameters(const nlohmann::ordered_json& arguments) {
  SegmentWriter w;
  write_parameters(w, arguments);
  return join_segments(w.segments());
}

std::string render_dsml_invoke(std::string_view name, const nlohmann::ordered_json& arguments) {
  SegmentWriter w;
  write_invoke(w, name, arguments);
  return join_segments(w.segments());
}

void write_dsml_block(SegmentWriter& out, const std::vector<DsmlCallSpec>& calls) {
  out.text("\n\n<");
  out.special(kDsmlToken);
  out.text("tool_calls>\n");
  for (size_t i = 0; i < calls.size(); ++i) {
    if (i) out.text("\n");
    write_invoke(out, calls[i].name, calls[i].arguments);
  }
  out.text("\n</");
  out.special(kDsmlToken);
  out.text("tool_calls>");
}

std::string render_dsml_block(const std::vector<DsmlCallSpec>& calls) {
  SegmentWriter w;
  write_dsml_block(w, calls);
  return join_segments(w.segments());
}

// ================================================================ parsing

namespace {

constexpr std::string_view kStartFull = "<｜DSML｜tool_calls>";
constexpr std::string_view kStartBarMissing = "<DSML｜tool_calls>";
// Longest run of whitespace held back (and trimmed) before a possible block; longer runs
// are passed through so a whitespace flood cannot grow the buffer without bound.
constexpr size_t kMaxHeldWhitespace = 1024;

bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && s.compare(0, prefix.size(), prefix) == 0;
}

// Start of the longest suffix of `s` that is a proper prefix of one of `markers`
// (s.size() when there is none).
size_t partial_marker_start(std::string_view s, const std::vector<std::string_view>& markers) {
  size_t longest = 0;
  for (auto m : markers) longest = std::max(longest, m.size());
  size_t from = s.size() > longest ? s.size() - longest + 1 : 0;
  for (size_t k = from; k < s.size(); ++k) {
    std::string_view tail = s.substr(k);
    for (auto m : markers) {
      if (tail.size() < m.size() && starts_with(m, tail)) return k;
    }
  }
  return s.size();
}

// Start of the whitespace run that ends at `end`, at most kMaxHeldWhitespace long.
size_t whitespace_run_start(std::string_view s, size_t end) {
  size_t w = end;
  while (w > 0 && is_ws(s[w - 1]) && end - (w - 1) <= kMaxHeldWhitespace) --w;
  return w;
}

// JSON string body bytes (no quotes) with Python-style escaping of sanitized UTF-8.
std::string escaped_string_body(std::string_view raw) {
  std::string quoted = pyjson::dumps_string(unicode::utf8_sanitized(raw));
  return quoted.substr(1, quoted.size() - 2);
}

// Tag attributes as the model writes them: ` name="N"` optionally followed by
// ` string="true|false"`. DSML has no escaping, so like the official regexes the name runs to
// the last quote before the string attribute (it may itself contain quotes or '>').
struct TagAttributes {
  std::optional<std::string> name;
  std::optional<std::string> string_flag;
};

bool parse_attributes(std::string_view s, TagAttributes& out) {
  auto trim = [](std::string_view v) {
    while (!v.empty() && is_ws(v.front())) v.remove_prefix(1);
    while (!v.empty() && is_ws(v.back())) v.remove_suffix(1);
    return v;
  };
  s = trim(s);
  if (s.empty()) return true;
  for (std::string_view flag : {"true", "false"}) {
    std::string attr = "string=\"" + std::string(flag) + "\"";
    if (s.size() > attr.size() && s.ends_with(attr) && is_ws(s[s.size() - attr.size() - 1])) {
      out.string_flag = std::string(flag);
      s = trim(s.substr(0, s.size() - attr.size()));
      break;
    }
  }
  if (s.empty()) return true;
  constexpr std::string_view kName = "name=\"";
  if (!s.starts_with(kName) || s.size() < kName.size() + 1 || s.back() != '"') return false;
  out.name = std::string(s.substr(kName.size(), s.size() - kName.size() - 1));
  return true;
}

std::string random_call_id() { return random::unguessable_hex("call_", 32); }

}  // namespace

DsmlStreamParser::DsmlStreamParser(DsmlParserOptions options) : opt_(std::move(options)) {}

void DsmlStreamParser::emit(std::vector<DsmlEvent>& out, DsmlEvent ev) {
  std::vector<DsmlEvent>& target = tentative_ || holding_ ? held_ : out;
  // Held argument fragments stay apart: they go out later, in the pieces they parsed in.
  bool mergeable = ev.kind == DsmlEventKind::Reasoning || ev.kind == DsmlEventKind::Text ||
                   (ev.kind == DsmlEventKind::ToolCallArgs && !holding_);
  if (mergeable && !target.empty() && target.back().kind == ev.kind && target.back().index == ev.index) {
    target.back().text += ev.text;
    return;
  }
  target.push_back(std::move(ev));
}

void DsmlStreamParser::emit_text(std::vector<DsmlEvent>& out, std::string_view bytes) {
  if (bytes.empty()) return;
  DsmlEvent ev;
  ev.kind = state_ == State::Reasoning || (state_ == State::Start && opt_.thinking) ? DsmlEventKind::Reasoning
                                                                                   : DsmlEventKind::Text;
  ev.text = std::string(bytes);
  // Text outside blocks is never held, even while a tentative block is being decided.
  bool saved = tentative_, saved_holding = holding_;
  tentative_ = holding_ = false;
  emit(out, std::move(ev));
  tentative_ = saved;
  holding_ = saved_holding;
}

void DsmlStreamParser::emit_args(std::vector<DsmlEvent>& out, std::string_view fragment) {
  call_args_.append(fragment);
  DsmlEvent ev;
  ev.kind = DsmlEventKind::ToolCallArgs;
  ev.index = next_call_index_;
  ev.text = std::string(fragment);
  emit(out, std::move(ev));
}

void DsmlStreamParser::consume_block(size_t n) {
  block_raw_.append(buf_, 0, n);
  buf_.erase(0, n);
}

void DsmlStreamParser::begin_block(size_t ws_start, size_t tag_start, size_t tag_len, bool bar_missing) {
  tentative_ = state_ == State::Reasoning;
  holding_ = !tentative_ && opt_.hold_calls_until_block_end;
  prefix_ = bar_missing ? "<DSML｜" : "<｜DSML｜";
  close_prefix_ = bar_missing ? "</DSML｜" : "</｜DSML｜";
  block_raw_.assign(buf_, ws_start, tag_start + tag_len - ws_start);
  buf_.erase(0, tag_start + tag_len);
  held_.clear();
  block_calls_.clear();
  block_first_call_index_ = next_call_index_;
  state_ = State::BlockExpectInvoke;
}

void DsmlStreamParser::block_was_reasoning(std::vector<DsmlEvent>& out) {
  tentative_ = false;
  held_.clear();
  block_calls_.clear();
  next_call_index_ = block_first_call_index_;
  state_ = State::Reasoning;
  emit_text(out, block_raw_);
  block_raw_.clear();
}

void DsmlStreamParser::fail(std::vector<DsmlEvent>& out, const std::string& why) {
  if (tentative_) {
    // DSML-looking text inside reasoning that did not parse: it was just reasoning.
    block_was_reasoning(out);
    return;
  }
  had_error_ = true;
  holding_ = false;
  held_.clear();  // held call events of the rejected block are never emitted
  DsmlEvent ev;
  ev.kind = DsmlEventKind::Error;
  ev.text = "invalid tool call: " + why;
  out.push_back(std::move(ev));
  state_ = State::PlainText;
  emit_text(out, block_raw_);
  block_raw_.clear();
}

void DsmlStreamParser::end_block(std::vector<DsmlEvent>& out) {
  for (auto& call : block_calls_) call.block_raw = block_raw_;
  if (holding_) {
    holding_ = false;
    for (auto& held : held_) out.push_back(std::move(held));
    held_.clear();
  }
  DsmlEvent ev;
  ev.kind = DsmlEventKind::BlockEnd;
  ev.text = block_raw_;
  emit(out, std::move(ev));
  if (tentative_) {
    state_ = State::AfterTentative;
    return;
  }
  for (auto& call : block_calls_) calls_.push_back(std::move(call));
  block_calls_.clear();
  done_ = true;
  state_ = State::Done;
}

// Reads a tag's attribute text up to its closing '>': the first '>' right after a quote, or
// the first '>' at all while no quote has been seen (attribute-less tags).
bool DsmlStreamParser::read_tag(bool eof, std::string& attrs_out, bool& complete, std::vector<DsmlEvent>& out) {
  complete = false;
  size_t i = 0;
  for (; i < buf_.size(); ++i) {
    char c = buf_[i];
    if (c == '>' && (!tag_seen_quote_ || tag_prev_ == '"')) {
      complete = true;
      break;
    }
    if (c == '"') tag_seen_quote_ = true;
    tag_prev_ = c;
  }
  if (complete) {
    attrs_out.append(buf_, 0, i);
    consume_block(i + 1);
  } else {
    attrs_out.append(buf_);
    consume_block(buf_.size());
  }
  if (attrs_out.size() > opt_.max_tag_bytes) {
    fail(out, "tag too long");
    return true;
  }
  if (!complete && eof) {
    fail(out, "unterminated tag");
    return true;
  }
  return complete;
}

bool DsmlStreamParser::step_text(bool eof, std::vector<DsmlEvent>& out) {
  bool reasoning = state_ == State::Reasoning;
  std::vector<std::string_view> markers;
  if (reasoning) markers.push_back(kThinkClose);
  if (opt_.parse_tool_calls) {
    markers.push_back(kStartFull);
    markers.push_back(kStartBarMissing);
  }
  size_t best = std::string::npos;
  std::string_view best_marker;
  for (auto m : markers) {
    size_t p = buf_.find(m);
    if (p < best) {
      best = p;
      best_marker = m;
    }
  }
  if (best != std::string::npos) {
    if (best_marker == kThinkClose) {
      emit_text(out, std::string_view(buf_).substr(0, best));
      buf_.erase(0, best + kThinkClose.size());
      state_ = State::Content;
      return true;
    }
    size_t w = whitespace_run_start(buf_, best);
    emit_text(out, std::string_view(buf_).substr(0, w));
    begin_block(w, best, best_marker.size(), best_marker == kStartBarMissing);
    return true;
  }
  if (eof) {
    emit_text(out, buf_);
    buf_.clear();
    return false;
  }
  size_t hold = partial_marker_start(buf_, markers);
  if (opt_.parse_tool_calls) hold = whitespace_run_start(buf_, hold);
  emit_text(out, std::string_view(buf_).substr(0, hold));
  buf_.erase(0, hold);
  return false;
}

bool DsmlStreamParser::step_value(bool eof, std::vector<DsmlEvent>& out) {
  std::string close = close_prefix_ + "parameter>";
  size_t p = buf_.find(close);
  size_t take;
  if (p != std::string::npos) {
    take = p;
  } else {
    take = partial_marker_start(buf_, {close});
    if (value_is_string_ && !eof) take -= unicode::utf8_incomplete_tail(std::string_view(buf_).substr(0, take));
  }
  std::string_view chunk = std::string_view(buf_).substr(0, take);
  if (value_is_string_) {
    if (!chunk.empty()) emit_args(out, escaped_string_body(chunk));
  } else {
    for (char c : chunk) {
      if (json_in_string_) {
        if (json_escape_) {
          json_escape_ = false;
        } else if (c == '\\') {
          json_escape_ = true;
        } else if (c == '"') {
          json_in_string_ = false;
        }
      } else if (c == '"') {
        json_in_string_ = true;
      }
    }
    json_value_.append(chunk);
  }
  consume_block(take);
  if (!value_is_string_ && json_value_.size() > opt_.max_json_value_bytes) {
    fail(out, "parameter value too long");
    return true;
  }
  if (p == std::string::npos) {
    if (eof) {
      fail(out, "unterminated parameter value");
      return true;
    }
    return false;
  }
  if (value_is_string_) {
    emit_args(out, "\"");
  } else if (nlohmann::ordered_json::accept(json_value_)) {
    emit_args(out, json_value_);
  } else {
    // Not JSON after all: keep the bytes as a string so the arguments stay valid JSON.
    emit_args(out, pyjson::dumps_string(unicode::utf8_sanitized(json_value_)));
  }
  json_value_.clear();
  consume_block(close.size());
  state_ = State::BlockExpectParam;
  return true;
}

bool DsmlStreamParser::step(bool eof, std::vector<DsmlEvent>& out) {
  switch (state_) {
    case State::Start: {
      if (starts_with(buf_, kThinkOpen)) {
        buf_.erase(0, kThinkOpen.size());
        state_ = State::Reasoning;
        return true;
      }
      if (!eof && starts_with(kThinkOpen, buf_)) return false;  // also true for an empty buffer
      state_ = opt_.thinking ? State::Reasoning : State::Content;
      return true;
    }
    case State::Reasoning:
    case State::Content:
      return step_text(eof, out);

    case State::BlockExpectInvoke:
    case State::BlockExpectParam: {
      size_t ws = 0;
      while (ws < buf_.size() && is_ws(buf_[ws])) ++ws;
      consume_block(ws);
      bool want_invoke = state_ == State::BlockExpectInvoke;
      std::string open = prefix_ + (want_invoke ? "invoke" : "parameter");
      std::string close = close_prefix_ + (want_invoke ? "tool_calls>" : "invoke>");
      if (starts_with(buf_, open)) {
        consume_block(open.size());
        tag_attrs_.clear();
        tag_seen_quote_ = false;
        tag_prev_ = 0;
        if (want_invoke) invoke_raw_start_ = block_raw_.size() - open.size();
        state_ = want_invoke ? State::BlockInvokeTag : State::BlockParamTag;
        return true;
      }
      if (starts_with(buf_, close)) {
        consume_block(close.size());
        if (want_invoke) {
          if (block_calls_.empty()) {
            fail(out, "empty tool_calls block");
            return true;
          }
          end_block(out);
          return true;
        }
        emit_args(out, "}");
        DsmlToolCall& call = block_calls_.back();
        call.arguments_json = call_args_;
        call.invoke_raw = block_raw_.substr(invoke_raw_start_);
        try {
          call.arguments = nlohmann::ordered_json::parse(call_args_);
        } catch (const std::exception&) {
          call.arguments = nlohmann::ordered_json::object();  // unreachable by construction
        }
        DsmlEvent ev;
        ev.kind = DsmlEventKind::ToolCallEnd;
        ev.index = next_call_index_;
        ev.id = call.id;
        ev.name = call.name;
        ev.arguments = call.arguments;
        ev.text = call_args_;
        emit(out, std::move(ev));
        ++next_call_index_;
        state_ = State::BlockExpectInvoke;
        return true;
      }
      bool could_grow = starts_with(open, buf_) || starts_with(close, buf_);
      if (!eof && could_grow) return false;
      if (buf_.empty()) {
        fail(out, "unterminated tool_calls block");
      } else {
        fail(out, want_invoke ? "expected an invoke tag or the end of the block"
                              : "expected a parameter tag or the end of the invoke");
      }
      return true;
    }

    case State::BlockInvokeTag:
    case State::BlockParamTag: {
      bool complete = false;
      State before = state_;
      bool progressed = read_tag(eof, tag_attrs_, complete, out);
      if (state_ != before) return true;  // failed
      if (!complete) return progressed;
      TagAttributes attrs;
      if (!parse_attributes(tag_attrs_, attrs)) {
        fail(out, "malformed tag attributes");
        return true;
      }
      const std::optional<std::string>& name = attrs.name;
      if (!name) {
        fail(out, state_ == State::BlockInvokeTag ? "invoke without name" : "parameter without name");
        return true;
      }
      if (state_ == State::BlockInvokeTag) {
        DsmlToolCall call;
        call.id = opt_.make_id ? opt_.make_id(next_call_index_) : random_call_id();
        call.name = unicode::utf8_sanitized(*name);
        DsmlEvent ev;
        ev.kind = DsmlEventKind::ToolCallStart;
        ev.index = next_call_index_;
        ev.id = call.id;
        ev.name = call.name;
        emit(out, std::move(ev));
        block_calls_.push_back(std::move(call));
        call_args_.clear();
        params_in_invoke_ = 0;
        emit_args(out, "{");
        state_ = State::BlockExpectParam;
        return true;
      }
      value_is_string_ = attrs.string_flag != "false";
      std::string head = params_in_invoke_ ? ", " : "";
      head += pyjson::dumps_string(unicode::utf8_sanitized(*name));
      head += ": ";
      if (value_is_string_) head += "\"";
      emit_args(out, head);
      ++params_in_invoke_;
      json_value_.clear();
      json_in_string_ = false;
      json_escape_ = false;
      state_ = State::BlockValue;
      return true;
    }

    case State::BlockValue:
      return step_value(eof, out);

    case State::AfterTentative: {
      size_t ws = 0;
      while (ws < buf_.size() && is_ws(buf_[ws])) ++ws;
      if (ws == buf_.size() && ws <= kMaxHeldWhitespace) {
        if (!eof) return false;
        // The output ended right after the block: the model skipped "</think>" and called.
        for (auto& ev : held_) out.push_back(std::move(ev));
        held_.clear();
        for (auto& call : block_calls_) calls_.push_back(std::move(call));
        block_calls_.clear();
        tentative_ = false;
        buf_.clear();
        done_ = true;
        state_ = State::Done;
        return false;
      }
      // More reasoning followed: the block was part of the reasoning text.
      block_was_reasoning(out);
      return true;
    }

    case State::Done:
      buf_.clear();
      return false;

    case State::PlainText:
      emit_text(out, buf_);
      buf_.clear();
      return false;
  }
  return false;
}

void DsmlStreamParser::feed(std::string_view bytes, std::vector<DsmlEvent>& out) {
  buf_.append(bytes);
  while (step(false, out)) {
  }
}

void DsmlStreamParser::finish(std::vector<DsmlEvent>& out) {
  while (step(true, out)) {
  }
}

bool DsmlStreamParser::in_reasoning() const {
  return state_ == State::Reasoning || (state_ == State::Start && opt_.thinking) || tentative_;
}

DsmlPosition DsmlStreamParser::position() const {
  switch (state_) {
    case State::Start:
    case State::Reasoning:
    case State::Content: {
      if (!opt_.parse_tool_calls) return DsmlPosition::Outside;
      // Once "<｜DSML｜" itself is out, the rest of the start tag is syntax.
      for (std::string_view start : {kStartFull, kStartBarMissing}) {
        size_t head = start.size() - std::string_view("tool_calls>").size();
        size_t k = partial_marker_start(buf_, {start});
        if (buf_.size() - k >= head) return DsmlPosition::Structural;
      }
      return DsmlPosition::Outside;
    }
    case State::BlockExpectInvoke:
    case State::BlockInvokeTag:
    case State::BlockExpectParam:
    case State::BlockParamTag:
      return DsmlPosition::Structural;
    case State::BlockValue: {
      std::string close = close_prefix_ + "parameter>";
      size_t k = partial_marker_start(buf_, {close});
      if (buf_.size() - k >= 2) return DsmlPosition::Structural;  // "</" of the closing tag
      if (value_is_string_) return DsmlPosition::StringBody;
      return json_in_string_ ? DsmlPosition::JsonString : DsmlPosition::JsonStructural;
    }
    case State::AfterTentative:
    case State::Done:
    case State::PlainText:
      return DsmlPosition::Outside;
  }
  return DsmlPosition::Outside;
}

bool DsmlStreamParser::in_dsml_syntax() const {
  DsmlPosition p = position();
  return p == DsmlPosition::Structural || p == DsmlPosition::JsonStructural;
}

ParsedCompletion parse_completion(std::string_view text, const DsmlParserOptions& options) {
  DsmlStreamParser parser(options);
  std::vector<DsmlEvent> events;
  parser.feed(text, events);
  parser.finish(events);
  ParsedCompletion result;
  for (const auto& ev : events) {
    if (ev.kind == DsmlEventKind::Reasoning) result.reasoning += ev.text;
    if (ev.kind == DsmlEventKind::Text) result.content += ev.text;
    if (ev.kind == DsmlEventKind::Error && !result.error) result.error = ev.text;
  }
  // On error the parser has already returned the block's bytes as text and confirmed no call.
  if (!result.error) result.tool_calls = parser.tool_calls();
  return result;
}

}  // namespace ds4::text
