// Loads tests/data/vectors/prompting-golden/examples.json (official-encoder renderings).
#pragma once

#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

#include "test_data.h"
#include "text/chat.h"

namespace ds4::text::golden {

inline const nlohmann::ordered_json& golden_cases() {
  static const nlohmann::ordered_json cases = [] {
    std::string path = ds4::testdata::vectors_dir() + "/prompting-golden/examples.json";
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot open " + path);
    std::stringstream ss;
    ss << in.rdbuf();
    return nlohmann::ordered_json::parse(ss.str())["cases"];
  }();
  return cases;
}

inline const nlohmann::ordered_json& golden_case(const std::string& id) {
  for (const auto& c : golden_cases())
    if (c["id"] == id) return c;
  throw std::runtime_error("no golden case " + id);
}

inline RenderOptions golden_options(const nlohmann::ordered_json& c) {
  RenderOptions opt;
  opt.thinking_mode = c["thinking_mode"] == "thinking" ? ThinkingMode::Thinking : ThinkingMode::Chat;
  const auto& effort = c["reasoning_effort"];
  if (effort == "high") opt.reasoning_effort = ReasoningEffort::High;
  if (effort == "max") opt.reasoning_effort = ReasoningEffort::Max;
  return opt;
}

}  // namespace ds4::text::golden
