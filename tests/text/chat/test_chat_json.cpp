// Python json.loads/json.dumps(ensure_ascii=False) behaviour, which the official encoder uses
// for tool schemas and past arguments. Expected strings were produced by CPython 3's json.
#include <cmath>

#include <gtest/gtest.h>

#include "text/chat_json.h"

namespace ds4::text::pyjson {
namespace {

std::string roundtrip(std::string_view text) {
  std::optional<Value> v = parse(text);
  if (!v) return "<rejected>";
  return dumps(*v);
}

TEST(PyJson, NumbersPrintLikePython) {
  const std::pair<const char*, const char*> cases[] = {
      {"1e2", "100.0"},
      {"1.50", "1.5"},
      {"1E-7", "1e-07"},
      {"-0.0", "-0.0"},
      {"-0", "0"},
      {"12345678901234567890", "12345678901234567890"},
      {"123456789012345678901234567890", "123456789012345678901234567890"},
      {"0.1", "0.1"},
      {"1e16", "1e+16"},
      {"1e15", "1000000000000000.0"},
      {"0.0001", "0.0001"},
      {"0.00001", "1e-05"},
      {"1e-4", "0.0001"},
      {"5e-324", "5e-324"},
      {"1.7976931348623157e308", "1.7976931348623157e+308"},
      {"1e400", "Infinity"},
      {"-1e400", "-Infinity"},
      {"NaN", "NaN"},
      {"Infinity", "Infinity"},
      {"-Infinity", "-Infinity"},
      {"2.5e-5", "2.5e-05"},
      {"12345678901234567.0", "1.2345678901234568e+16"},
      {"100", "100"},
      {"1.0", "1.0"},
      {"3.14159", "3.14159"},
      {"1e22", "1e+22"},
      {"123e-20", "1.23e-18"},
      {"0.000123", "0.000123"},
      {"9007199254740993.0", "9007199254740992.0"},
  };
  for (const auto& [in, out] : cases) EXPECT_EQ(roundtrip(in), out) << in;
}

TEST(PyJson, StructuresAndStrings) {
  EXPECT_EQ(roundtrip(R"({"a": 1, "a": 2, "b": 3})"), R"({"a": 2, "b": 3})");
  EXPECT_EQ(roundtrip(R"({"x":[1,2,{"y":null}],"z":true})"), R"({"x": [1, 2, {"y": null}], "z": true})");
  EXPECT_EQ(roundtrip(R"("\u00e9\ud83d\ude00")"), "\"é😀\"");
  EXPECT_EQ(roundtrip(R"("tab\there\u0001\u001f\u007f/\/")"), "\"tab\\there\\u0001\\u001f\x7f//\"");
  EXPECT_EQ(roundtrip("[]"), "[]");
  EXPECT_EQ(roundtrip("{}"), "{}");
  EXPECT_EQ(roundtrip("  [ 1 , 2 ]  "), "[1, 2]");
  EXPECT_EQ(roundtrip(R"("\b\f\r")"), R"("\b\f\r")");
}

TEST(PyJson, RejectsWhatPythonRejects) {
  for (const char* bad : {"01", "1.", ".5", "[1,]", "{\"a\" 1}", "\"\t\"", "\"\\x\"", "nan", "True", "1 2", "-",
                          "{\"a\":1,}", "\"abc", "[1", ""}) {
    EXPECT_FALSE(parse(bad).has_value()) << bad;
  }
}

TEST(PyJson, DeepNestingIsRejectedNotACrash) {
  std::string deep(100000, '[');
  EXPECT_FALSE(parse(deep).has_value());
  deep += std::string(100000, ']');
  EXPECT_FALSE(parse(deep).has_value());
}

TEST(PyJson, DumpsNlohmannKeepsOrderAndPythonFloats) {
  auto v = nlohmann::ordered_json::parse(R"({"z": 1, "a": [0.5, -1, 1e2, "é\n"], "m": {"k": false}})");
  EXPECT_EQ(dumps(v), R"({"z": 1, "a": [0.5, -1, 100.0, "é\n"], "m": {"k": false}})");
}

TEST(PyJson, ReprFloatDirect) {
  EXPECT_EQ(repr_float(0.0), "0.0");
  EXPECT_EQ(repr_float(-0.0), "-0.0");
  EXPECT_EQ(repr_float(std::nan("")), "NaN");
  EXPECT_EQ(repr_float(123456.789), "123456.789");
  EXPECT_EQ(repr_float(1e-5), "1e-05");
  EXPECT_EQ(repr_float(9999999999999998.0), "9999999999999998.0");
}

}  // namespace
}  // namespace ds4::text::pyjson
