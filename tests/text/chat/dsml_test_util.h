// Helpers for DSML parser tests: feeding in chunks and normalizing event streams.
#pragma once

#include <algorithm>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "text/dsml.h"

namespace ds4::text::dsmltest {

inline DsmlParserOptions counting_ids(bool thinking = false) {
  DsmlParserOptions opt;
  opt.thinking = thinking;
  opt.make_id = [](size_t i) { return "call_" + std::to_string(i); };
  return opt;
}

// Merges adjacent text-like events of the same kind (and call index), which chunking may split.
inline std::vector<DsmlEvent> merged(const std::vector<DsmlEvent>& events) {
  std::vector<DsmlEvent> out;
  for (const auto& ev : events) {
    bool textual = ev.kind == DsmlEventKind::Reasoning || ev.kind == DsmlEventKind::Text ||
                   ev.kind == DsmlEventKind::ToolCallArgs;
    if (textual && ev.text.empty()) continue;
    if (textual && !out.empty() && out.back().kind == ev.kind && out.back().index == ev.index) {
      out.back().text += ev.text;
      continue;
    }
    out.push_back(ev);
  }
  return out;
}

// Feeds `text` split at the given cut points, then finishes.
inline std::vector<DsmlEvent> run_chunks(std::string_view text, const std::vector<size_t>& cuts,
                                         const DsmlParserOptions& opt) {
  DsmlStreamParser parser(opt);
  std::vector<DsmlEvent> events;
  size_t prev = 0;
  for (size_t cut : cuts) {
    parser.feed(text.substr(prev, cut - prev), events);
    prev = cut;
  }
  parser.feed(text.substr(prev), events);
  parser.finish(events);
  return merged(events);
}

inline std::vector<DsmlEvent> run_whole(std::string_view text, const DsmlParserOptions& opt) {
  return run_chunks(text, {}, opt);
}

inline std::string kind_name(DsmlEventKind k) {
  switch (k) {
    case DsmlEventKind::Reasoning: return "Reasoning";
    case DsmlEventKind::Text: return "Text";
    case DsmlEventKind::ToolCallStart: return "ToolCallStart";
    case DsmlEventKind::ToolCallArgs: return "ToolCallArgs";
    case DsmlEventKind::ToolCallEnd: return "ToolCallEnd";
    case DsmlEventKind::BlockEnd: return "BlockEnd";
    case DsmlEventKind::Error: return "Error";
  }
  return "?";
}

inline std::string describe(const std::vector<DsmlEvent>& events) {
  std::string s;
  for (const auto& ev : events) {
    s += kind_name(ev.kind) + "[" + std::to_string(ev.index) + "," + ev.id + "," + ev.name + "]";
    s += nlohmann::json(ev.text).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    if (ev.kind == DsmlEventKind::ToolCallEnd)
      s += ev.arguments.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    s += "\n";
  }
  return s;
}

// Sorted random cut points in [1, size).
inline std::vector<size_t> random_cuts(std::mt19937& rng, size_t size, size_t count) {
  std::vector<size_t> cuts;
  if (size < 2) return cuts;
  std::uniform_int_distribution<size_t> dist(1, size - 1);
  for (size_t i = 0; i < count; ++i) cuts.push_back(dist(rng));
  std::sort(cuts.begin(), cuts.end());
  cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
  return cuts;
}

}  // namespace ds4::text::dsmltest
