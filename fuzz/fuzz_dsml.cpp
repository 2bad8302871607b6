// libFuzzer target for the DSML streaming parser and the Python-style JSON reader.
// The input's first byte picks the options and a chunk size, so one corpus exercises
// thinking/visible starts and many chunkings; whole and chunked runs must agree.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "text/chat_json.h"
#include "text/dsml.h"

namespace {

std::string flatten(const std::vector<ds4::text::DsmlEvent>& events) {
  std::string out;
  ds4::text::DsmlEventKind last{};
  size_t last_index = 0;
  bool have_last = false;
  for (const auto& ev : events) {
    bool textual = ev.kind == ds4::text::DsmlEventKind::Reasoning || ev.kind == ds4::text::DsmlEventKind::Text ||
                   ev.kind == ds4::text::DsmlEventKind::ToolCallArgs;
    if (textual && ev.text.empty()) continue;
    if (!(textual && have_last && last == ev.kind && last_index == ev.index)) {
      out += '\x01';
      out += std::to_string(static_cast<int>(ev.kind)) + ':' + std::to_string(ev.index) + ':' + ev.id + ':' + ev.name + ':';
    }
    out += ev.text;
    last = ev.kind;
    last_index = ev.index;
    have_last = true;
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  uint8_t control = data[0];
  std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);

  ds4::text::DsmlParserOptions opt;
  opt.thinking = control & 1;
  opt.make_id = [](size_t i) { return "call_" + std::to_string(i); };
  opt.max_tag_bytes = 256;
  opt.max_json_value_bytes = 4096;

  ds4::text::DsmlStreamParser whole(opt);
  std::vector<ds4::text::DsmlEvent> a;
  whole.feed(text, a);
  whole.finish(a);

  size_t chunk = 1 + (control >> 1);
  ds4::text::DsmlStreamParser pieces(opt);
  std::vector<ds4::text::DsmlEvent> b;
  for (size_t i = 0; i < text.size(); i += chunk) {
    pieces.feed(text.substr(i, chunk), b);
    (void)pieces.in_dsml_syntax();
  }
  pieces.finish(b);
  if (flatten(a) != flatten(b)) std::abort();
  for (const auto& call : whole.tool_calls())
    if (!nlohmann::ordered_json::accept(call.arguments_json)) std::abort();

  if (auto v = ds4::text::pyjson::parse(text)) (void)ds4::text::pyjson::dumps(*v);
  return 0;
}
