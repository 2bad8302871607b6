#include "text/hf_tokenizer.h"

#include <fstream>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include <nlohmann/json.hpp>

namespace ds4::text {

namespace {

using nlohmann::json;

void place(HfTokenizer& tok, int64_t id, const std::string& text, int32_t type,
           const char* what) {
  if (id < 0 || id > (int64_t{1} << 24)) {
    throw HfTokenizerError(std::string("tokenizer.json: ") + what + " id out of range: " +
                           std::to_string(id));
  }
  const size_t idx = static_cast<size_t>(id);
  if (idx >= tok.tokens.size()) {
    tok.tokens.resize(idx + 1);
    tok.token_types.resize(idx + 1, kTokenUnused);
  }
  // An added token may restate a vocab entry (V3 does this for BOS/EOS/pad): the texts must
  // agree, the added-token type wins.
  if (!tok.tokens[idx].empty() && tok.tokens[idx] != text) {
    throw HfTokenizerError("tokenizer.json: id " + std::to_string(id) + " defined twice (\"" +
                           tok.tokens[idx] + "\" and \"" + text + "\")");
  }
  if (text.empty()) {
    throw HfTokenizerError("tokenizer.json: empty token text for id " + std::to_string(id));
  }
  tok.tokens[idx] = text;
  tok.token_types[idx] = type;
}

}  // namespace

HfTokenizer parse_hf_tokenizer_json(std::string_view json_text) {
  json root;
  try {
    root = json::parse(json_text.begin(), json_text.end());
  } catch (const json::exception& e) {
    throw HfTokenizerError(std::string("tokenizer.json: not valid JSON: ") + e.what());
  }
  HfTokenizer tok;
  try {
    if (!root.is_object() || !root.contains("model") || !root["model"].is_object()) {
      throw HfTokenizerError("tokenizer.json: missing \"model\" object");
    }
    const json& model = root["model"];
    if (model.contains("type") && model["type"].is_string() && model["type"] != "BPE") {
      throw HfTokenizerError("tokenizer.json: model type is " +
                             model["type"].get<std::string>() + ", expected BPE");
    }
    if (!model.contains("vocab") || !model["vocab"].is_object()) {
      throw HfTokenizerError("tokenizer.json: missing model.vocab object");
    }
    if (!model.contains("merges") || !model["merges"].is_array()) {
      throw HfTokenizerError("tokenizer.json: missing model.merges array");
    }
    for (const auto& [text, id] : model["vocab"].items()) {
      if (!id.is_number_integer()) {
        throw HfTokenizerError("tokenizer.json: vocab id of \"" + text + "\" is not an integer");
      }
      place(tok, id.get<int64_t>(), text, kTokenNormal, "vocab");
    }
    std::unordered_set<std::string> seen_text;
    seen_text.reserve(tok.tokens.size() * 2);
    for (const std::string& t : tok.tokens) {
      if (!t.empty() && !seen_text.insert(t).second) {
        throw HfTokenizerError("tokenizer.json: vocab text repeated: \"" + t + "\"");
      }
    }
    tok.merges.reserve(model["merges"].size());
    for (const json& m : model["merges"]) {
      // Older files store "A B", newer ones ["A", "B"].
      if (m.is_string()) {
        tok.merges.push_back(m.get<std::string>());
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        tok.merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
      } else {
        throw HfTokenizerError("tokenizer.json: malformed merge entry " + m.dump());
      }
    }
    if (root.contains("added_tokens") && root["added_tokens"].is_array()) {
      for (const json& a : root["added_tokens"]) {
        if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() ||
            !a.contains("content") || !a["content"].is_string()) {
          throw HfTokenizerError("tokenizer.json: malformed added token " + a.dump());
        }
        const bool special = a.value("special", false);
        place(tok, a["id"].get<int64_t>(), a["content"].get<std::string>(),
              special ? kTokenControl : kTokenUserDefined, "added token");
      }
    }
  } catch (const json::exception& e) {
    throw HfTokenizerError(std::string("tokenizer.json: ") + e.what());
  }
  for (size_t i = 0; i < tok.tokens.size(); ++i) {
    if (tok.tokens[i] == "<｜begin▁of▁sentence｜>") tok.bos_id = static_cast<int>(i);
    if (tok.tokens[i] == "<｜end▁of▁sentence｜>") tok.eos_id = static_cast<int>(i);
  }
  return tok;
}

HfTokenizer load_hf_tokenizer(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw HfTokenizerError("cannot open tokenizer file: " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw HfTokenizerError("error reading tokenizer file: " + path);
  try {
    return parse_hf_tokenizer_json(ss.str());
  } catch (const HfTokenizerError& e) {
    throw HfTokenizerError(path + ": " + e.what());
  }
}

const std::vector<V4SpecialToken>& v4_special_tokens() {
  // docs/prompting.md (ids from V4 token tables; looked up by text at load anyway).
  static const std::vector<V4SpecialToken> table = {
      {128821, "<think>"},
      {128822, "</think>"},
      {128825, "｜DSML｜"},
      {128828, "<｜latest_reminder｜>"},
      {128829, "<｜action｜>"},
      {128830, "<｜query｜>"},
      {128831, "<｜authority｜>"},
      {128832, "<｜domain｜>"},
      {128836, "<｜title｜>"},
      {128844, "<｜extracted_url｜>"},
      {128845, "<｜read_url｜>"},
  };
  return table;
}

void add_v4_special_tokens(HfTokenizer& tok, size_t vocab_size) {
  if (vocab_size < tok.tokens.size()) {
    throw HfTokenizerError("add_v4_special_tokens: vocab_size " + std::to_string(vocab_size) +
                           " is smaller than the table (" + std::to_string(tok.tokens.size()) +
                           " ids)");
  }
  tok.tokens.resize(vocab_size);
  tok.token_types.resize(vocab_size, kTokenUnused);
  for (const V4SpecialToken& s : v4_special_tokens()) {
    const size_t id = static_cast<size_t>(s.id);
    if (id >= vocab_size) {
      throw HfTokenizerError("add_v4_special_tokens: vocab_size " + std::to_string(vocab_size) +
                             " too small for " + s.text);
    }
    if (!tok.tokens[id].empty() && tok.tokens[id] != s.text) {
      throw HfTokenizerError("add_v4_special_tokens: id " + std::to_string(id) +
                             " already holds \"" + tok.tokens[id] + "\", wanted " + s.text);
    }
    tok.tokens[id] = s.text;
    tok.token_types[id] = kTokenControl;
  }
  std::unordered_set<std::string> used(tok.tokens.begin(), tok.tokens.end());
  for (size_t id = 0; id < vocab_size; ++id) {
    if (!tok.tokens[id].empty()) continue;
    std::string name = id >= 128000 ? "<｜place▁holder▁no▁" + std::to_string(id - 128000) + "｜>"
                                    : "<｜unused▁id▁" + std::to_string(id) + "｜>";
    if (used.count(name)) {
      throw HfTokenizerError("add_v4_special_tokens: placeholder " + name +
                             " collides with an existing token");
    }
    used.insert(name);
    tok.tokens[id] = std::move(name);
    tok.token_types[id] = kTokenControl;
  }
}

}  // namespace ds4::text
