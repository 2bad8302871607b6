// Grammar engine: GBNF parsing, the byte matcher, JSON Schema conversion and token masks
// (checked against a brute-force check of every token, on a small and the real vocabulary).
#include <gtest/gtest.h>

#include <limits>
#include <random>
#include <string>
#include <vector>

#include "grammar/constraint.h"
#include "grammar/grammar.h"
#include "grammar/json_schema.h"
#include "grammar/matcher.h"
#include "grammar/sampling.h"
#include "text/dsml.h"
#include "../server/real_tokenizer.h"
#include "test_seed.h"

namespace ds4::grammar {
namespace {

using Json = nlohmann::ordered_json;

std::shared_ptr<const Vocabulary> small_vocab() {
  // Single bytes, multi-byte pieces spanning grammar elements, UTF-8 split points.
  std::vector<std::string> toks;
  for (int b = 0; b < 256; ++b) toks.emplace_back(1, static_cast<char>(b));
  for (const char* t : {"{\"", "\":", "\",", "\"}", "12", "3+", "+(", "))", "true", "null",
                        "ab", "\"a", "a\"", " \"", "\xCE", "\xB1", "\xCE\xB1", "\xB1\xCE",
                        "\xCE\xB1\xCE", "\xE2\x82", "\xAC", "\xE2\x82\xAC"}) {
    toks.emplace_back(t);
  }
  toks.emplace_back("<EOS>");
  toks.emplace_back("<SPECIAL>");
  std::vector<bool> allowed(toks.size(), true);
  allowed[toks.size() - 1] = false;
  return std::make_shared<Vocabulary>(toks, allowed, static_cast<int32_t>(toks.size() - 2));
}

std::shared_ptr<CompiledGrammar> compile(const std::string& gbnf,
                                         std::shared_ptr<const Vocabulary> v = small_vocab()) {
  return std::make_shared<CompiledGrammar>(parse_gbnf(gbnf), std::move(v));
}

bool matches(const std::shared_ptr<CompiledGrammar>& g, const std::string& s) {
  Matcher m(g);
  return m.accept_bytes(s) && m.can_end();
}

bool prefix_ok(const std::shared_ptr<CompiledGrammar>& g, const std::string& s) {
  Matcher m(g);
  return m.accept_bytes(s);
}

const char* kArith = R"G(
root  ::= expr
expr  ::= term (("+" | "-") term)*
term  ::= factor (("*" | "/") factor)*
factor ::= [0-9]+ | "(" expr ")"
)G";

TEST(Gbnf, ArithmeticAcceptsAndRejects) {
  auto g = compile(kArith);
  for (const char* ok : {"1", "12+3", "(1+2)*3", "((4))/5-6"}) EXPECT_TRUE(matches(g, ok)) << ok;
  for (const char* bad : {"", "+", "1+", "(1", "1)", "a", "1 + 2"}) {
    EXPECT_FALSE(matches(g, bad)) << bad;
  }
  EXPECT_TRUE(prefix_ok(g, "(1+"));
  EXPECT_FALSE(prefix_ok(g, "1)"));
}

TEST(Gbnf, SyntaxFeatures) {
  auto g = compile(R"G(# comment
root ::= "a"{2,3} b? c+ [^x-z\n] "\x41\u00e9" . # trailing
b ::= "b"
c ::= ("c" | "C")
  | "k"
)G");
  EXPECT_TRUE(matches(g, "aackw" "A\xC3\xA9" "!"));
  EXPECT_TRUE(matches(g, "aaabCc" "\xE2\x82\xAC" "A\xC3\xA9" "\xF0\x9F\x98\x80"));
  EXPECT_FALSE(matches(g, "acw" "A\xC3\xA9" "!"));      // a{2,3}
  EXPECT_FALSE(matches(g, "aaaacw" "A\xC3\xA9" "!"));   // too many a
  EXPECT_FALSE(matches(g, "aacy" "A\xC3\xA9" "!"));     // [^x-z]
  EXPECT_FALSE(matches(g, "aac\n" "A\xC3\xA9" "!"));
  EXPECT_FALSE(matches(g, "aacw" "A\xC3\xA9"));         // '.' needs a character
}

TEST(Gbnf, Errors) {
  auto err = [](const std::string& text) {
    try {
      parse_gbnf(text);
    } catch (const GrammarError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(err("a ::= \"x\"").find("no 'root'"), std::string::npos);
  EXPECT_NE(err("root ::= x").find("'x' is used but not defined"), std::string::npos);
  EXPECT_NE(err("root ::= root \"a\" | \"b\"").find("left-recursive"), std::string::npos);
  EXPECT_NE(err("root ::= (\"a\"?)*").find("left-recursive"), std::string::npos);
  EXPECT_NE(err("root ::= \"abc").find("unterminated"), std::string::npos);
  EXPECT_NE(err("root ::= [abc").find("unterminated"), std::string::npos);
  EXPECT_NE(err("root ::= \"a\"\nroot ::= \"b\"").find("defined twice"), std::string::npos);
  EXPECT_NE(err("root ::= \"a\"{3,1}").find("n < m"), std::string::npos);
  EXPECT_NE(err("root ::= * \"a\"").find("nothing to repeat"), std::string::npos);
  EXPECT_NE(err("root = \"a\"").find("line 1"), std::string::npos);
}

TEST(Matcher, Utf8SplitAcrossTokens) {
  auto v = small_vocab();
  auto g = compile("root ::= [α-ω]+ \"€\"", v);
  Matcher m(g);
  auto id = [&](const std::string& s) {
    for (size_t i = 0; i < v->size(); ++i) {
      if (v->bytes(static_cast<int32_t>(i)) == s) return static_cast<int32_t>(i);
    }
    return -1;
  };
  // "α" = CE B1 arriving as two tokens, then a token that starts the next character.
  EXPECT_TRUE(m.accept_token(id("\xCE")));
  TokenMask mask;
  m.fill_mask(mask);
  EXPECT_TRUE(mask.test(id("\xB1")));
  EXPECT_TRUE(mask.test(id("\xB1\xCE")));
  EXPECT_FALSE(mask.test(id("\xCE")));   // a lead byte cannot follow a lead byte
  EXPECT_FALSE(mask.test(id("\xE2\x82")));
  EXPECT_FALSE(mask.eos);
  EXPECT_TRUE(m.accept_token(id("\xB1\xCE")));
  EXPECT_TRUE(m.accept_token(id("\xB1")));
  m.fill_mask(mask);
  EXPECT_TRUE(mask.test(id("\xE2\x82\xAC")));
  EXPECT_TRUE(mask.test(id("\xE2\x82")));
  EXPECT_TRUE(mask.test(id("\xCE\xB1\xCE")));
  EXPECT_FALSE(mask.test(id("\xAC")));
  EXPECT_FALSE(mask.test(id("a")));
  EXPECT_TRUE(m.accept_token(id("\xE2\x82")));
  EXPECT_FALSE(m.can_end());
  EXPECT_TRUE(m.accept_token(id("\xAC")));
  EXPECT_TRUE(m.can_end());
  EXPECT_TRUE(m.must_end());
  m.fill_mask(mask);
  EXPECT_EQ(mask.count(), 0u);
  EXPECT_TRUE(mask.eos);
  EXPECT_TRUE(m.accept_token(v->eos()));
}

// Every token checked by feeding its bytes to a copy of the matcher.
void expect_mask_exact(Matcher& m, const Vocabulary& v, const std::string& where) {
  TokenMask mask;
  m.fill_mask(mask);
  size_t checked = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    const auto id = static_cast<int32_t>(i);
    if (id == v.eos()) continue;
    Matcher probe = m;
    bool ok = !v.bytes(id).empty() && probe.accept_bytes(v.bytes(id));
    // Tokens outside the vocabulary's allowed set never appear, whatever their bytes.
    if (mask.test(id) != ok) {
      bool allowed = false;
      for (int32_t t : v.sorted_tokens()) allowed |= t == id;
      if (!allowed && !mask.test(id)) continue;
      ADD_FAILURE() << where << ": token " << id << " '" << v.bytes(id) << "' mask "
                    << mask.test(id) << " brute force " << ok;
      if (++checked > 5) return;
    }
  }
  EXPECT_EQ(mask.eos, m.can_end()) << where;
}

// Random walks through the grammar: at each step the mask must equal the brute force.
void random_walks(const std::shared_ptr<CompiledGrammar>& g, int walks, int steps, uint32_t seed,
                  bool check_every_step = true) {
  std::mt19937 rng(ds4::testdata::test_seed(seed));
  const Vocabulary& v = g->vocab();
  for (int w = 0; w < walks; ++w) {
    Matcher m(g);
    std::string out;
    for (int s = 0; s < steps; ++s) {
      if (check_every_step || s % 8 == 0) expect_mask_exact(m, v, "after '" + out + "'");
      if (::testing::Test::HasFailure()) return;
      TokenMask mask;
      m.fill_mask(mask);
      std::vector<int32_t> allowed;
      for (size_t i = 0; i < v.size(); ++i) {
        if (mask.test(static_cast<int32_t>(i))) allowed.push_back(static_cast<int32_t>(i));
      }
      if (allowed.empty()) break;
      const int32_t t = allowed[rng() % allowed.size()];
      ASSERT_TRUE(m.accept_token(t));
      out += v.bytes(t);
    }
  }
}

TEST(Mask, SmallVocabularyMatchesBruteForce) {
  random_walks(compile(kArith), 20, 12, 1);
  random_walks(compile(json_object_gbnf()), 20, 16, 2);
  random_walks(compile("root ::= [α-ω]+ \"€\" | \"ab\"* \"\\\"\""), 20, 8, 3);
}

TEST(Mask, SpecialTokensNeverAllowed) {
  auto v = small_vocab();
  auto g = compile("root ::= .*", v);
  Matcher m(g);
  TokenMask mask;
  m.fill_mask(mask);
  EXPECT_FALSE(mask.test(static_cast<int32_t>(v->size() - 1)));  // <SPECIAL>
  EXPECT_FALSE(mask.test(v->eos()));                              // EOS goes through mask.eos
  EXPECT_TRUE(mask.eos);
  EXPECT_TRUE(mask.test(0));  // "\0" is a character
}

// ---- JSON Schema conversion

std::shared_ptr<CompiledGrammar> schema(const Json& s) {
  return compile(json_schema_to_gbnf(s));
}

TEST(Schema, ObjectsRequiredOptionalAdditional) {
  auto g = schema(Json::parse(R"({"type":"object","properties":{"a":{"type":"integer"},
      "b":{"type":"string"},"c":{"type":"boolean"}},"required":["b"]})"));
  EXPECT_TRUE(matches(g, R"({"b":"x"})"));
  EXPECT_TRUE(matches(g, R"({"a":1,"b":"x"})"));
  EXPECT_TRUE(matches(g, R"({ "a": -5, "b": "", "c": true })"));
  EXPECT_TRUE(matches(g, R"({"b":"x","c":false})"));
  EXPECT_FALSE(matches(g, R"({"a":1})"));
  EXPECT_FALSE(matches(g, R"({"b":"x","a":1})"));  // declaration order
  EXPECT_FALSE(matches(g, R"({"b":"x","d":1})"));  // no extras unless allowed
  EXPECT_FALSE(matches(g, R"({"a":1.5,"b":"x"})"));
  EXPECT_FALSE(matches(g, R"({,"b":"x"})"));

  auto extra = schema(Json::parse(R"({"properties":{"ab":{"type":"null"}},
      "additionalProperties":{"type":"integer"}})"));
  EXPECT_TRUE(matches(extra, R"({})"));
  EXPECT_TRUE(matches(extra, R"({"ab":null,"x":1,"a":2,"abc":3})"));
  EXPECT_TRUE(matches(extra, R"({"x":1})"));
  EXPECT_FALSE(matches(extra, R"({"ab":null,"ab":1})"));  // an extra never reuses a name
  EXPECT_FALSE(matches(extra, R"({"x":"s"})"));
}

TEST(Schema, IntegerRanges) {
  for (auto [lo, hi] : std::vector<std::pair<int, int>>{{-150, 150}, {7, 123}, {-99, -10}, {0, 0}, {100, 1000}}) {
    auto g = schema(Json{{"type", "integer"}, {"minimum", lo}, {"maximum", hi}});
    for (int x = -1200; x <= 1200; ++x) {
      ASSERT_EQ(matches(g, std::to_string(x)), x >= lo && x <= hi) << x << " in [" << lo << "," << hi << "]";
    }
    EXPECT_FALSE(matches(g, "-0"));
    EXPECT_FALSE(matches(g, "007"));
  }
  auto g = schema(Json{{"type", "integer"}, {"exclusiveMinimum", 5}});
  EXPECT_FALSE(matches(g, "5"));
  EXPECT_TRUE(matches(g, "6"));
  EXPECT_TRUE(matches(g, "123456789"));
}

TEST(Schema, StringsFormatsPatterns) {
  auto len = schema(Json{{"type", "string"}, {"minLength", 2}, {"maxLength", 3}});
  EXPECT_FALSE(matches(len, "\"a\""));
  EXPECT_TRUE(matches(len, "\"ab\""));
  EXPECT_TRUE(matches(len, "\"a\\nβ\""));
  EXPECT_FALSE(matches(len, "\"abcd\""));
  auto date = schema(Json{{"type", "string"}, {"format", "date"}});
  EXPECT_TRUE(matches(date, "\"2024-02-28\""));
  EXPECT_FALSE(matches(date, "\"2024-02-30\""));
  EXPECT_FALSE(matches(date, "\"2024-13-01\""));
  auto dt = schema(Json{{"type", "string"}, {"format", "date-time"}});
  EXPECT_TRUE(matches(dt, "\"2024-01-31T23:59:59.5+02:00\""));
  EXPECT_FALSE(matches(dt, "\"2024-01-31T24:00:00Z\""));
  auto uuid = schema(Json{{"format", "uuid"}});
  EXPECT_TRUE(matches(uuid, "\"123e4567-e89b-12d3-a456-426614174000\""));
  auto email = schema(Json{{"format", "email"}});
  EXPECT_TRUE(matches(email, "\"a.b+c@example.co\""));
  EXPECT_FALSE(matches(email, "\"a..b@example.co\""));
  auto pat = schema(Json{{"type", "string"}, {"pattern", "^[a-z]{2,3}-\\d+(\\.[0-9]+)?$"}});
  EXPECT_TRUE(matches(pat, "\"ab-12\""));
  EXPECT_TRUE(matches(pat, "\"abc-1.50\""));
  EXPECT_FALSE(matches(pat, "\"a-1\""));
  EXPECT_FALSE(matches(pat, "\"ab-\""));
  auto unanchored = schema(Json{{"type", "string"}, {"pattern", "q\"\\\\"}});
  EXPECT_TRUE(matches(unanchored, R"("xxq\"\\yy")"));
  EXPECT_FALSE(matches(unanchored, R"("xxq")"));
}

TEST(Schema, ArraysEnumsRefs) {
  auto arr = schema(Json::parse(R"({"type":"array","items":{"type":"integer"},"minItems":1,"maxItems":3})"));
  EXPECT_FALSE(matches(arr, "[]"));
  EXPECT_TRUE(matches(arr, "[1]"));
  EXPECT_TRUE(matches(arr, "[1, 2,3]"));
  EXPECT_FALSE(matches(arr, "[1,2,3,4]"));
  auto tuple = schema(Json::parse(R"({"prefixItems":[{"type":"string"},{"type":"null"}],"items":false,"minItems":1})"));
  EXPECT_TRUE(matches(tuple, R"(["a"])"));
  EXPECT_TRUE(matches(tuple, R"(["a",null])"));
  EXPECT_FALSE(matches(tuple, R"(["a",null,1])"));
  EXPECT_FALSE(matches(tuple, R"([])"));
  auto en = schema(Json::parse(R"({"enum":["a",1,null,{"k":[true]}]})"));
  EXPECT_TRUE(matches(en, R"("a")"));
  EXPECT_TRUE(matches(en, R"({"k":[true]})"));
  EXPECT_FALSE(matches(en, R"("b")"));
  auto rec = schema(Json::parse(R"({"$defs":{"node":{"type":"object","properties":{
      "v":{"type":"integer"},"next":{"anyOf":[{"$ref":"#/$defs/node"},{"type":"null"}]}},
      "required":["v","next"]}},"$ref":"#/$defs/node"})"));
  EXPECT_TRUE(matches(rec, R"({"v":1,"next":{"v":2,"next":null}})"));
  EXPECT_FALSE(matches(rec, R"({"v":1,"next":{"v":2}})"));
  auto all = schema(Json::parse(R"({"allOf":[{"properties":{"a":{"const":1}},"required":["a"]},
      {"type":"object","properties":{"b":{"type":["string","null"]}},"required":["b"]}]})"));
  EXPECT_TRUE(matches(all, R"({"a":1,"b":null})"));
  EXPECT_FALSE(matches(all, R"({"a":1})"));
}

TEST(Schema, UnsupportedKeywordsAreNamed) {
  for (auto [schema_text, kw] : std::vector<std::pair<const char*, const char*>>{
           {R"({"type":"string","contentSchema":{}})", "contentSchema"},
           {R"({"type":"object","patternProperties":{"a":{}}})", "patternProperties"},
           {R"({"type":"array","uniqueItems":true})", "uniqueItems"},
           {R"({"type":"number","minimum":1})", "minimum"},
           {R"({"type":"integer","multipleOf":3})", "multipleOf"},
           {R"({"not":{"type":"null"}})", "not"},
           {R"({"if":{},"then":{}})", "if"},
           {R"({"type":"string","format":"hostname"})", "format"},
           {R"({"type":"string","pattern":"(?=a)b"})", "pattern"},
           {R"({"type":"string","pattern":"(a)\\1"})", "pattern"},
           {R"({"$ref":"http://example.com/s.json"})", "$ref"},
           {R"({"type":"object","minProperties":1})", "minProperties"}}) {
    try {
      json_schema_to_gbnf(Json::parse(schema_text));
      ADD_FAILURE() << schema_text << " accepted";
    } catch (const SchemaError& e) {
      EXPECT_EQ(e.keyword, kw) << schema_text;
      EXPECT_NE(std::string(e.what()).find(kw), std::string::npos) << e.what();
    }
  }
}

// oneOf means exactly one branch: generated like anyOf only when no value can match two
// branches; overlapping branches are refused with the keyword named.
TEST(Schema, OneOfExclusiveBranchesOnly) {
  for (const char* ok : {
           R"({"oneOf":[{"type":"string"},{"type":"null"}]})",
           R"({"oneOf":[{"const":"a"},{"enum":["b",1]}]})",
           R"({"oneOf":[{"type":"integer"},{"type":"string"},{"type":"array"}]})",
           R"({"oneOf":[{"enum":[1,2]},{"type":"string"}]})",
           R"({"oneOf":[{"type":"object","properties":{"kind":{"const":"a"}},"required":["kind"]},
                        {"type":"object","properties":{"kind":{"const":"b"},"n":{"type":"integer"}},"required":["kind","n"]}]})",
           R"({"oneOf":[{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"],"additionalProperties":false},
                        {"type":"object","properties":{"b":{"type":"integer"}},"required":["b"],"additionalProperties":false}]})",
           R"({"$defs":{"s":{"type":"string"}},"oneOf":[{"$ref":"#/$defs/s"},{"type":"boolean"}]})"}) {
    EXPECT_NO_THROW(json_schema_to_gbnf(Json::parse(ok))) << ok;
  }
  // A false branch matches nothing: it is left out (and overlaps nothing).
  auto with_false = schema(Json::parse(R"({"oneOf":[true,false,false]})"));
  EXPECT_TRUE(matches(with_false, "[1]"));
  EXPECT_THROW(json_schema_to_gbnf(Json::parse(R"({"anyOf":[false,false]})")), SchemaError);
  auto tagged = schema(Json::parse(R"({"oneOf":[{"const":"a"},{"type":"integer"}]})"));
  EXPECT_TRUE(matches(tagged, R"("a")"));
  EXPECT_TRUE(matches(tagged, "12"));
  for (const char* overlap : {
           R"({"oneOf":[{"type":"integer"},{"type":"number"}]})",
           R"({"oneOf":[{"type":"string","maxLength":3},{"type":"string","minLength":2}]})",
           R"({"oneOf":[{"type":"string"},{"properties":{"a":{}}}]})",
           R"({"oneOf":[{"enum":["a","b"]},{"const":"b"}]})",
           R"({"oneOf":[{"type":"object","properties":{"k":{"const":"a"}}},
                        {"type":"object","properties":{"k":{"const":"b"}}}]})",
           R"({"oneOf":[{"type":"integer"},true]})"}) {
    try {
      json_schema_to_gbnf(Json::parse(overlap));
      ADD_FAILURE() << overlap << " accepted";
    } catch (const SchemaError& e) {
      EXPECT_EQ(e.keyword, "oneOf") << overlap;
      EXPECT_NE(std::string(e.what()).find("'oneOf'"), std::string::npos) << e.what();
    }
  }
}

// Thinking: the grammar starts after "</think>" even when the model spells it with ordinary
// tokens; a token that closes the reasoning with answer bytes the grammar refuses is never
// drawn.
TEST(ConstrainedSampling, ReasoningClosedByOrdinaryTokens) {
  std::vector<std::string> toks;
  for (int b = 0; b < 256; ++b) toks.emplace_back(1, static_cast<char>(b));
  const int32_t gt_brace = static_cast<int32_t>(toks.size());
  toks.emplace_back(">{");
  const int32_t gt_t = static_cast<int32_t>(toks.size());
  toks.emplace_back(">t");
  toks.emplace_back("<EOS>");
  const auto eos = static_cast<int32_t>(toks.size() - 1);
  auto v = std::make_shared<Vocabulary>(toks, std::vector<bool>(toks.size(), true), eos);
  auto g = compile("root ::= \"true\"", v);
  sample::Sampler sampler(sample::Params{});
  std::vector<float> logits(toks.size(), -std::numeric_limits<float>::infinity());
  for (bool brace : {true, false}) {
    ConstrainedSampling cs(g, /*thinking=*/true, /*think_close_id=*/-1);
    for (char c : std::string("I think. </think")) cs.accept(static_cast<uint8_t>(c));
    EXPECT_FALSE(cs.active());
    std::fill(logits.begin(), logits.end(), -std::numeric_limits<float>::infinity());
    logits['>'] = 1.0f;
    logits[static_cast<size_t>(brace ? gt_brace : gt_t)] = 10.0f;
    const int32_t tok = cs.vet_free(sampler, logits, brace ? gt_brace : gt_t, /*greedy=*/true);
    EXPECT_EQ(tok, brace ? static_cast<int32_t>('>') : gt_t);
    cs.accept(tok);
    EXPECT_TRUE(cs.active());
    // The answer continues under the grammar: "true" (after "t" when it came with ">t").
    for (char c : std::string(brace ? "true" : "rue")) {
      std::fill(logits.begin(), logits.end(), 0.0f);
      const int32_t next = cs.sample(sampler, logits);
      EXPECT_EQ(next, static_cast<int32_t>(static_cast<uint8_t>(c)));
      cs.accept(next);
    }
  }
}

// ---- tool calls (DSML)

const std::string kBar = "\xEF\xBD\x9C";  // U+FF5C
std::string dsml_tag(const std::string& rest) { return "<" + kBar + "DSML" + kBar + rest; }
std::string dsml_close(const std::string& what) { return "</" + kBar + "DSML" + kBar + what + ">"; }
std::string param(const std::string& key, bool str, const std::string& value) {
  return dsml_tag("parameter name=\"" + key + "\" string=\"" + (str ? "true" : "false") + "\">") +
         value + dsml_close("parameter");
}
std::string block(const std::vector<std::pair<std::string, std::vector<std::string>>>& calls) {
  std::string out = "\n\n" + dsml_tag("tool_calls>\n");
  for (size_t i = 0; i < calls.size(); ++i) {
    out += (i ? "\n" : "") + dsml_tag("invoke name=\"" + calls[i].first + "\">\n");
    for (size_t j = 0; j < calls[i].second.size(); ++j) out += (j ? "\n" : "") + calls[i].second[j];
    out += "\n" + dsml_close("invoke");
  }
  return out + "\n" + dsml_close("tool_calls");
}

const char* kWeatherParams = R"({"type":"object","properties":{
    "city":{"type":"string","maxLength":24},
    "days":{"type":"integer","minimum":1,"maximum":7},
    "unit":{"enum":["C","F"]},
    "when":{"type":"string","format":"date"},
    "opts":{"type":"object","properties":{"alerts":{"type":"boolean"}},"required":["alerts"],"additionalProperties":false},
    "note":{"anyOf":[{"type":"string","maxLength":4},{"type":"null"}]}},
  "required":["city","days"],"additionalProperties":false})";

ToolCallGrammar weather_tools() {
  ToolCallGrammar spec;
  spec.tools.push_back({"get_weather", Json::parse(kWeatherParams), true});
  spec.tools.push_back({"now", Json::parse(R"({"type":"object","properties":{}})"), true});
  spec.tools.push_back({"free_tool", Json::parse(R"({"type":"object"})"), false});
  return spec;
}

// A whole answer, the DSML parser's reading of it (independent code: src/text/dsml), and
// the arguments it yields.
Json parsed_arguments(const std::string& answer, size_t call = 0) {
  auto parsed = text::parse_completion(answer);
  if (parsed.error || parsed.tool_calls.size() <= call) return Json();
  return Json::parse(parsed.tool_calls[call].arguments_json);
}

TEST(ToolCalls, StrictParametersFollowTheSchema) {
  ToolCallGrammar spec = weather_tools();
  spec.required = true;
  auto g = compile(tool_calls_gbnf(spec));
  const std::string ok = block({{"get_weather", {param("city", true, "Paris \"old\" <town>"),
                                                  param("days", false, "3"), param("unit", true, "C"),
                                                  param("opts", false, "{\"alerts\": true}"),
                                                  param("note", false, "null")}}});
  EXPECT_TRUE(matches(g, ok));
  EXPECT_EQ(parsed_arguments(ok), Json::parse(R"({"city":"Paris \"old\" <town>","days":3,"unit":"C","opts":{"alerts":true},"note":null})"));
  const std::string minimal = block({{"get_weather", {param("city", true, "x"), param("days", false, "7")}}});
  EXPECT_TRUE(matches(g, minimal));
  EXPECT_TRUE(matches(g, block({{"now", {}}, {"get_weather", {param("city", true, ""), param("days", false, "1"),
                                                               param("when", true, "2024-02-28")}}})));
  EXPECT_TRUE(matches(g, block({{"free_tool", {param("anything", true, "goes"), param("x", false, "[1")}}})));
  for (const std::string& bad : {
           block({{"get_weather", {param("city", true, "x")}}}),                              // days missing
           block({{"get_weather", {param("days", false, "3"), param("city", true, "x")}}}),  // order
           block({{"get_weather", {param("city", true, "x"), param("days", true, "3")}}}),   // string="true" int
           block({{"get_weather", {param("city", true, "x"), param("days", false, "8")}}}),  // range
           block({{"get_weather", {param("city", false, "\"x\""), param("days", false, "3")}}}),
           block({{"get_weather", {param("city", true, "a city name longer than the limit"), param("days", false, "3")}}}),
           block({{"get_weather", {param("city", true, "x"), param("days", false, "3"), param("unit", true, "K")}}}),
           block({{"get_weather", {param("city", true, "x"), param("days", false, "3"), param("extra", true, "1")}}}),
           block({{"get_weather", {param("city", true, "x"), param("days", false, "3"),
                                   param("opts", false, "{\"alerts\": 1}")}}}),
           block({{"unknown", {}}}),
           block({{"now", {param("a", true, "b")}}}),
           std::string("Sure.") + block({{"now", {}}}),  // required: no text before the block
       }) {
    EXPECT_FALSE(matches(g, bad)) << bad;
  }
}

TEST(ToolCalls, AutoLeavesTextFreeAndNamedOrSingleRestrict) {
  ToolCallGrammar spec = weather_tools();
  auto g = compile(tool_calls_gbnf(spec));
  EXPECT_TRUE(matches(g, "Just text, with <tags> and D S M L and " + kBar + " bars."));
  EXPECT_TRUE(matches(g, ""));
  const std::string call = block({{"now", {}}});
  EXPECT_TRUE(matches(g, "Let me check." + call));
  EXPECT_EQ(text::parse_completion("Let me check." + call).tool_calls.size(), 1u);
  EXPECT_FALSE(prefix_ok(g, "text DSML" + kBar));  // a DSML tag is only a block's
  EXPECT_FALSE(matches(g, "Let me check." + block({{"get_weather", {param("city", true, "x")}}})));
  EXPECT_FALSE(matches(g, call + " more"));
  // A response format: that answer, or a block.
  const Json answer = Json::parse(R"({"type":"object","properties":{"ok":{"type":"boolean"}},"required":["ok"]})");
  spec.answer = &answer;
  auto ga = compile(tool_calls_gbnf(spec));
  EXPECT_TRUE(matches(ga, R"({"ok": true})"));
  EXPECT_TRUE(matches(ga, call));
  EXPECT_FALSE(matches(ga, "text"));
  // A named tool, one call per block.
  spec.answer = nullptr;
  spec.required = true;
  spec.only = "now";
  spec.parallel = false;
  auto gn = compile(tool_calls_gbnf(spec));
  EXPECT_TRUE(matches(gn, call));
  EXPECT_FALSE(matches(gn, block({{"now", {}}, {"now", {}}})));
  EXPECT_FALSE(matches(gn, block({{"get_weather", {param("city", true, "x"), param("days", false, "3")}}})));
}

TEST(ToolCalls, UnsupportedParameterSchemasAreNamed) {
  for (auto [params, kw] : std::vector<std::pair<const char*, const char*>>{
           {R"({"type":"object","properties":{"a":{"type":"string","format":"hostname"}}})", "format"},
           {R"({"type":"object","properties":{"a":{"not":{}}}})", "not"},
           {R"({"anyOf":[{"type":"object"},{"type":"null"}]})", "anyOf"},
           {R"({"type":"array"})", "type"},
           {R"({"type":"object","properties":{"a":{"oneOf":[{"type":"integer"},{"type":"number"}]}}})", "oneOf"}}) {
    ToolCallGrammar spec;
    spec.tools.push_back({"t", Json::parse(params), true});
    try {
      tool_calls_gbnf(spec);
      ADD_FAILURE() << params << " accepted";
    } catch (const SchemaError& e) {
      EXPECT_EQ(e.keyword, kw) << params;
      EXPECT_NE(std::string(e.what()).find("tool 't'"), std::string::npos) << e.what();
    }
  }
}

// ---- the real vocabulary

TEST(Mask, RealVocabularyMatchesBruteForce) {
  const auto& tok = test::real_tokenizer();
  auto v = vocabulary_of(tok);
  ASSERT_GT(v->sorted_tokens().size(), 120000u);
  // Special tokens (<think>, DSML, BOS...) are not in the trie.
  for (int id : {tok.bos_id(), tok.think_open_id(), tok.dsml_id(), tok.user_id()}) {
    for (int32_t t : v->sorted_tokens()) ASSERT_NE(t, id);
  }
  auto schema_g = compile(json_schema_to_gbnf(Json::parse(R"({"type":"object","properties":{
      "name":{"type":"string","maxLength":12},"tags":{"type":"array","items":{"enum":["x","yz"]}},
      "n":{"type":"integer","minimum":-3,"maximum":250}},"required":["name","n"]})")), v);
  random_walks(schema_g, 3, 24, 7, /*check_every_step=*/false);
  random_walks(compile(json_object_gbnf(), v), 2, 24, 8, false);
  random_walks(compile(kArith, v), 2, 16, 9, false);
  // A tool-call grammar: its vocabulary holds the DSML marker token, allowed only at tags.
  auto vd = vocabulary_of(tok, /*dsml_marker=*/true);
  ToolCallGrammar spec = weather_tools();
  spec.required = true;
  auto tool_g = compile(tool_calls_gbnf(spec), vd);
  Matcher m(tool_g);
  ASSERT_TRUE(m.accept_bytes("\n\n<"));
  TokenMask mask;
  m.fill_mask(mask);
  EXPECT_TRUE(mask.test(tok.dsml_id()));
  expect_mask_exact(m, *vd, "block start");
  ASSERT_TRUE(m.accept_token(tok.dsml_id()));
  random_walks(tool_g, 2, 40, 10, false);
}

}  // namespace
}  // namespace ds4::grammar
