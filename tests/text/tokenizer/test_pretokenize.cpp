// Pre-tokenizer semantics (docs/prompting.md), checked piece by piece against
// expectations derived by hand from the three regexes.
#include "text/pretokenize.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "text/unicode.h"

namespace ds4::text {
namespace {

using V = std::vector<std::string>;

V pieces(const std::string& s) { return pretokenize_strings(s); }

TEST(Pretokenize, SpecExamples) {
  EXPECT_EQ(pieces("12345"), (V{"123", "45"}));
  EXPECT_EQ(pieces(" 2048"), (V{" ", "204", "8"}));
  EXPECT_EQ(pieces("    int"), (V{"   ", " int"}));
  EXPECT_EQ(pieces("\n\n    int"), (V{"\n\n", "   ", " int"}));
  EXPECT_EQ(pieces(">;\n"), (V{">;\n"}));
  EXPECT_EQ(pieces("  \n  x"), (V{"  \n", " ", " x"}));
}

TEST(Pretokenize, SpecTableRows) {
  EXPECT_EQ(pieces("hello—world"), (V{"hello", "—", "world"}));
  EXPECT_EQ(pieces("x² + y²"), (V{"x", "²", " +", " y", "²"}));
  EXPECT_EQ(pieces("価格は１２３円です"), (V{"価格は", "１２３", "円です"}));
  EXPECT_EQ(pieces("“quoted”"), (V{"“", "quoted", "”"}));
  EXPECT_EQ(pieces("a\u00a0b"), (V{"a", "\u00a0b"}));
}

TEST(Pretokenize, FirstAlternativeAsciiPunctLetters) {
  // [punct][A-Za-z]+ wins over " ?[\p{P}\p{S}]+" at the same position.
  EXPECT_EQ(pieces("it's"), (V{"it", "'s"}));
  EXPECT_EQ(pieces("a.bé"), (V{"a", ".b", "é"}));
  // ...but only when a letter follows the first punctuation character.
  EXPECT_EQ(pieces("..x"), (V{"..", "x"}));
  EXPECT_EQ(pieces(" .x"), (V{" .", "x"}));
  EXPECT_EQ(pieces("#include"), (V{"#include"}));
}

TEST(Pretokenize, LetterRunsWithOptionalPrefix) {
  EXPECT_EQ(pieces(" hello world"), (V{" hello", " world"}));
  EXPECT_EQ(pieces("\thello"), (V{"\thello"}));
  // CR/LF cannot be the prefix; \s*[\r\n]+ takes them.
  EXPECT_EQ(pieces("\nhello"), (V{"\n", "hello"}));
  // Combining marks join the run (e + U+0301).
  EXPECT_EQ(pieces("cafe\u0301 x"), (V{"cafe\u0301", " x"}));
  // A lone mark after a symbol: prefix class excludes S, the mark starts its own run.
  EXPECT_EQ(pieces("+\u0301"), (V{"+", "\u0301"}));
  // Zero-width joiner (Cf) as prefix of a letter run.
  EXPECT_EQ(pieces("a\u200db"), (V{"a", "\u200db"}));
}

TEST(Pretokenize, PunctuationAndSymbols) {
  EXPECT_EQ(pieces(" ++\r\n\r\nx"), (V{" ++\r\n\r\n", "x"}));
  EXPECT_EQ(pieces("a  ++"), (V{"a", " ", " ++"}));
  EXPECT_EQ(pieces("👍👍 🎉"), (V{"👍👍", " 🎉"}));
  EXPECT_EQ(pieces("(x)"), (V{"(x", ")"}));
  EXPECT_EQ(pieces("(é)"), (V{"(", "é", ")"}));
}

TEST(Pretokenize, Whitespace) {
  EXPECT_EQ(pieces("a   "), (V{"a", "   "}));
  EXPECT_EQ(pieces("a \n"), (V{"a", " \n"}));
  EXPECT_EQ(pieces("a\r\n\r\n  b"), (V{"a", "\r\n\r\n", " ", " b"}));
  EXPECT_EQ(pieces("a \t b"), (V{"a", " \t", " b"}));
  EXPECT_EQ(pieces(" "), (V{" "}));
  EXPECT_EQ(pieces("x\u3000y"), (V{"x", "\u3000y"}));
  EXPECT_EQ(pieces("x\u3000\u3000y"), (V{"x", "\u3000", "\u3000y"}));
  // A whitespace run is cut by a digit chunk: the lookahead cannot see past the segment.
  EXPECT_EQ(pieces("  1"), (V{"  ", "1"}));
}

TEST(Pretokenize, DigitsAndCjk) {
  EXPECT_EQ(pieces("1234567"), (V{"123", "456", "7"}));
  EXPECT_EQ(pieces("v1.2.3"), (V{"v", "1", ".", "2", ".", "3"}));
  EXPECT_EQ(pieces("٣٤٥٦"), (V{"٣٤٥", "٦"}));  // Arabic-Indic digits are \p{N}
  EXPECT_EQ(pieces("Ⅻ and ½"), (V{"Ⅻ", " and", " ", "½"}));
  EXPECT_EQ(pieces("我爱ABC"), (V{"我爱", "ABC"}));
  EXPECT_EQ(pieces(" 中文"), (V{" ", "中文"}));
  // Katakana middle dot (Po) and prolonged sound mark (Lm) inside the kana range:
  // regex 2 keeps them in one run, regex 3 then splits at the dot.
  EXPECT_EQ(pieces("コーヒー・ミルク"), (V{"コーヒー", "・", "ミルク"}));
  // U+9FA6 is outside [一-龥]: no split from the Latin text by regex 2.
  EXPECT_EQ(pieces("a\u9fa6"), (V{"a\u9fa6"}));
}

TEST(Pretokenize, OnigurumaWhiteSpaceSet) {
  // U+0085 (NEL) is \s for Oniguruma: " NEL" at the end is one \s+ piece.
  EXPECT_EQ(pieces("a \u0085"), (V{"a", " \u0085"}));
  EXPECT_EQ(pieces("a\u0085\n"), (V{"a", "\u0085\n"}));
  // U+FEFF is not \s (it is Cf): the run before \n does not absorb it.
  EXPECT_EQ(pieces("a\ufeff\n"), (V{"a", "\ufeff", "\n"}));
  EXPECT_EQ(pieces("a \ufeff"), (V{"a", " ", "\ufeff"}));
  // U+180E is no longer White_Space (Cf since Unicode 6.3).
  EXPECT_EQ(pieces("a \u180e"), (V{"a", " ", "\u180e"}));
}

TEST(Pretokenize, InvalidUtf8IsSymbolLikeAndLossless) {
  // A stray continuation byte acts like U+FFFD (\p{S}): " ?[\p{P}\p{S}]+" takes it.
  EXPECT_EQ(pieces("a \x80\x81"), (V{"a", " \x80\x81"}));
  EXPECT_EQ(pieces("ab\xff"), (V{"ab", "\xff"}));
  // A truncated sequence is invalid byte by byte.
  EXPECT_EQ(pieces("x\xe4\xb8"), (V{"x", "\xe4\xb8"}));
  // Overlong encoding of '/' and an encoded surrogate are invalid.
  EXPECT_EQ(pieces("\xc0\xaf"), (V{"\xc0\xaf"}));
  EXPECT_EQ(pieces("\xed\xa0\x80z"), (V{"\xed\xa0\x80", "z"}));
  EXPECT_EQ(pieces(std::string("a\0b", 3)), (V{"a", std::string("\0b", 2)}));
}

TEST(Pretokenize, PiecesCoverInput) {
  const std::string s = "Hello,  wörld!\r\n\t12345 日本語テキスト 🙂‍↕️ ¿Qué? \xff\xfe end  ";
  std::string joined;
  for (const auto& p : pieces(s)) {
    EXPECT_FALSE(p.empty());
    joined += p;
  }
  EXPECT_EQ(joined, s);
  EXPECT_TRUE(pieces("").empty());
}

TEST(Unicode, Utf8DecodeStrict) {
  using unicode::utf8_decode;
  uint32_t cp = 0;
  auto dec = [&](const char* s, size_t n) {
    return utf8_decode(reinterpret_cast<const unsigned char*>(s), n, &cp);
  };
  EXPECT_EQ(dec("\xe2\x82\xac", 3), 3);
  EXPECT_EQ(cp, 0x20ACu);
  EXPECT_EQ(dec("\xf0\x9f\x99\x82", 4), 4);
  EXPECT_EQ(cp, 0x1F642u);
  EXPECT_EQ(dec("\xe2\x82", 2), 0);  // incomplete
  EXPECT_EQ(dec("\xf0\x9f", 2), 0);
  EXPECT_EQ(dec("\xe2\x41", 2), -1);
  EXPECT_EQ(dec("\xc1\xbf", 2), -1);          // overlong
  EXPECT_EQ(dec("\xe0\x80\x80", 3), -1);      // overlong
  EXPECT_EQ(dec("\xf0\x80\x80\x80", 4), -1);  // overlong
  EXPECT_EQ(dec("\xed\xbf\xbf", 3), -1);      // surrogate
  EXPECT_EQ(dec("\xf4\x90\x80\x80", 4), -1);  // > U+10FFFF
  EXPECT_EQ(dec("\xf5\x80", 2), -1);
  EXPECT_EQ(dec("\x80", 1), -1);
}

TEST(Unicode, ByteMap) {
  using unicode::byte_to_codepoint;
  using unicode::codepoint_to_byte;
  EXPECT_EQ(byte_to_codepoint(0x00), 0x100u);
  EXPECT_EQ(byte_to_codepoint('\t'), 0x109u);
  EXPECT_EQ(byte_to_codepoint('\n'), 0x10Au);
  EXPECT_EQ(byte_to_codepoint('\r'), 0x10Du);
  EXPECT_EQ(byte_to_codepoint(' '), 0x120u);
  EXPECT_EQ(byte_to_codepoint(0x7F), 0x121u);
  EXPECT_EQ(byte_to_codepoint(0xA0), 0x142u);
  EXPECT_EQ(byte_to_codepoint(0xAD), 0x143u);
  EXPECT_EQ(byte_to_codepoint('A'), uint32_t{'A'});
  EXPECT_EQ(byte_to_codepoint(0xE9), 0xE9u);
  for (int b = 0; b < 256; ++b) {
    EXPECT_EQ(codepoint_to_byte(byte_to_codepoint(static_cast<uint8_t>(b))), b);
  }
  EXPECT_EQ(codepoint_to_byte(0x144), -1);
  EXPECT_EQ(codepoint_to_byte(0x20AC), -1);
}

TEST(Unicode, Categories) {
  using namespace unicode;
  EXPECT_EQ(char_class('a'), kLetter | kAsciiLetter);
  EXPECT_EQ(char_class('!'), kPunct | kAsciiPunct);
  EXPECT_EQ(char_class('$'), kSymbol | kAsciiPunct);
  EXPECT_EQ(char_class('\n'), kSpace | kCrLf);
  EXPECT_EQ(char_class(0x0301), kMark);
  EXPECT_EQ(char_class(0x00B2), kNumber);
  EXPECT_EQ(char_class(0x4E2D), kLetter | kCjk);
  EXPECT_EQ(char_class(0x30FB), kPunct | kCjk);
  EXPECT_EQ(char_class(0x1F600), kSymbol);
  EXPECT_EQ(char_class(0x10330), kLetter);  // Gothic
  EXPECT_EQ(char_class(0x00A0), kSpace);
  EXPECT_EQ(char_class(0x0085), kSpace);
  EXPECT_EQ(char_class(0xFEFF), 0);
  EXPECT_EQ(char_class(0xE000), 0);    // private use
  EXPECT_EQ(char_class(0x10FFFF), 0);  // unassigned
}

}  // namespace
}  // namespace ds4::text
