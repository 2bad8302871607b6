// The one UTF-8 module (text/unicode.h) and the one JSON writer (text/json_writer.h). Expected
// replacements come from the Unicode Standard's example of U+FFFD substitution of maximal
// subparts (chapter 3, table 3-8) and from Python's bytes.decode("utf-8", "replace"), which
// follows the same practice.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "test_seed.h"
#include "text/json_writer.h"
#include "text/unicode.h"

namespace ds4::text {
namespace {

const std::string kFffd = "\xEF\xBF\xBD";

std::string fffd(int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += kFffd;
  return s;
}

TEST(Utf8, SanitizedReplacesMaximalSubparts) {
  using unicode::utf8_sanitized;
  // Unicode table 3-8: 61 F1 80 80 E1 80 C2 62 80 63 80 BF 64.
  EXPECT_EQ(utf8_sanitized("a\xF1\x80\x80\xE1\x80\xC2" "b\x80" "c\x80\xBF" "d"),
            "a" + fffd(3) + "b" + fffd(1) + "c" + fffd(2) + "d");
  // Python's decode("utf-8", "replace").
  EXPECT_EQ(utf8_sanitized("\xe4\xbd"), fffd(1));                // incomplete at the end
  EXPECT_EQ(utf8_sanitized("x\xe4\xbd"), "x" + fffd(1));
  EXPECT_EQ(utf8_sanitized("\xf0\x9f\x98"), fffd(1));
  EXPECT_EQ(utf8_sanitized("\xc0\x80"), fffd(2));                // overlong
  EXPECT_EQ(utf8_sanitized("\xe0\x80\xaf"), fffd(3));            // overlong
  EXPECT_EQ(utf8_sanitized("\xed\xa0\x80"), fffd(3));            // surrogate
  EXPECT_EQ(utf8_sanitized("\xf4\x90\x80\x80"), fffd(4));        // above U+10FFFF
  EXPECT_EQ(utf8_sanitized("\xff" "a"), fffd(1) + "a");
  EXPECT_EQ(utf8_sanitized("\x80\x80"), fffd(2));
  EXPECT_EQ(utf8_sanitized("é中😀 ok"), "é中😀 ok");
}

TEST(Utf8, NextDecodesOneCharacterOrNothing) {
  const std::string s = "a\xE2\x82\xAC\xF0\x9F\x99\x82\xE2\x41";
  size_t pos = 0;
  EXPECT_EQ(unicode::utf8_next(s, pos), std::optional<uint32_t>('a'));
  EXPECT_EQ(unicode::utf8_next(s, pos), std::optional<uint32_t>(0x20AC));
  EXPECT_EQ(unicode::utf8_next(s, pos), std::optional<uint32_t>(0x1F642));
  EXPECT_EQ(pos, 8u);
  EXPECT_EQ(unicode::utf8_next(s, pos), std::nullopt);  // E2 41: invalid
  EXPECT_EQ(pos, 8u);
  size_t end = s.size();
  EXPECT_EQ(unicode::utf8_next(s, end), std::nullopt);
  const std::string cut = "\xE2\x82";
  size_t at = 0;
  EXPECT_EQ(unicode::utf8_next(cut, at), std::nullopt);  // incomplete
  EXPECT_EQ(at, 0u);
}

TEST(Utf8, IncompleteTailIsWhatMoreBytesCouldComplete) {
  using unicode::utf8_incomplete_tail;
  EXPECT_EQ(utf8_incomplete_tail(""), 0u);
  EXPECT_EQ(utf8_incomplete_tail("abc"), 0u);
  EXPECT_EQ(utf8_incomplete_tail("a\xE2"), 1u);
  EXPECT_EQ(utf8_incomplete_tail("a\xE2\x82"), 2u);
  EXPECT_EQ(utf8_incomplete_tail("a\xE2\x82\xAC"), 0u);  // complete
  EXPECT_EQ(utf8_incomplete_tail("\xF0\x9F\x99"), 3u);
  EXPECT_EQ(utf8_incomplete_tail("\xE0\x80"), 0u);   // overlong: can never become valid
  EXPECT_EQ(utf8_incomplete_tail("\xED\xA0"), 0u);   // surrogate
  EXPECT_EQ(utf8_incomplete_tail("\xC0"), 0u);       // never a lead
  EXPECT_EQ(utf8_incomplete_tail("\x80\x80\x80"), 0u);
}

TEST(Utf8, CutNeverSplitsASequence) {
  using unicode::utf8_cut;
  const std::string s = "ab\xE2\x82\xAC" "c";  // a b € c
  EXPECT_EQ(utf8_cut(s, 2), 2u);
  EXPECT_EQ(utf8_cut(s, 3), 2u);
  EXPECT_EQ(utf8_cut(s, 4), 2u);
  EXPECT_EQ(utf8_cut(s, 5), 5u);
  EXPECT_EQ(utf8_cut(s, 99), s.size());
  EXPECT_EQ(utf8_cut("\x80\x80\x80\x80\x80", 4), 4u);  // no lead within reach: not UTF-8
}

// Every code point of a range is covered by exactly one of its byte-range sequences, and
// nothing else is: the products add up to the range's size.
TEST(Utf8, RangeSequencesCoverExactlyTheRange) {
  for (auto [lo, hi] : std::vector<std::pair<uint32_t, uint32_t>>{
           {0x00, 0x7F}, {0x41, 0x5A}, {0x70, 0x900}, {0x7FF, 0x800}, {0x400, 0xD7FF},
           {0xE000, 0x10FFFF}, {0xFF5C, 0xFF5C}, {0x1F600, 0x1F64F}}) {
    std::vector<unicode::Utf8ByteRanges> seqs;
    unicode::utf8_range_sequences(lo, hi, seqs);
    uint64_t total = 0;
    for (const auto& seq : seqs) {
      uint64_t product = 1;
      for (auto [a, b] : seq) product *= static_cast<uint64_t>(b - a + 1);
      total += product;
    }
    EXPECT_EQ(total, uint64_t(hi) - lo + 1) << std::hex << lo << ".." << hi;
    for (uint32_t cp = lo; cp <= hi; cp += 1 + (hi - lo) / 4096) {
      const std::string e = unicode::utf8_encode(cp);
      int matches = 0;
      for (const auto& seq : seqs) {
        bool in = seq.size() == e.size();
        for (size_t i = 0; in && i < e.size(); ++i) {
          const auto b = static_cast<uint8_t>(e[i]);
          in = b >= seq[i].first && b <= seq[i].second;
        }
        matches += in;
      }
      EXPECT_EQ(matches, 1) << std::hex << cp;
    }
  }
}

TEST(JsonWriter, EscapesControlsKeepsValidUtf8) {
  EXPECT_EQ(dump_json("a\"b\\c\n\t\r\x01"), "\"a\\\"b\\\\c\\n\\t\\r\\u0001\"");
  EXPECT_EQ(dump_json("é中😀"), "\"é中😀\"");
  EXPECT_EQ(dump_json(nlohmann::ordered_json{{"b", 1}, {"a", "x"}}), "{\"b\":1,\"a\":\"x\"}");
}

// The writer's invalid-UTF-8 policy is the module's: on random bytes (mostly from the ranges
// where sequences go wrong) nlohmann's replacement equals utf8_sanitized, and the output
// always parses back.
TEST(JsonWriter, InvalidUtf8AsTheModuleReplacesIt) {
  std::mt19937 rng(ds4::testdata::test_seed(2024));
  const unsigned char pool[] = {'a', '"', 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC2, 0xDF,
                                0xE0, 0xE1, 0xED, 0xEF, 0xF0, 0xF1, 0xF4, 0xF5, 0xFF};
  for (int round = 0; round < 20000; ++round) {
    std::string s(1 + rng() % 8, '\0');
    for (auto& c : s) c = static_cast<char>(pool[rng() % sizeof pool]);
    const std::string want = dump_json(unicode::utf8_sanitized(s));
    ASSERT_EQ(dump_json(s), want) << "round " << round;
    EXPECT_EQ(nlohmann::json::parse(want).get<std::string>(), unicode::utf8_sanitized(s));
  }
}

}  // namespace
}  // namespace ds4::text
