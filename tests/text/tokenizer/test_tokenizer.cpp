// Tokenizer on the real V4 vocabulary, against independent truth: the id lists of
// docs/prompting.md, known V4 ids and the official API prompt-token counts.
#include "text/tokenizer.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <random>
#include <thread>
#include <string>
#include <vector>

#include "text/hf_tokenizer.h"
#include "text/unicode.h"
#include "test_data.h"
#include "tokenizer_fixture.h"
#include "test_seed.h"
#include "utf8_replace_vectors.h"

namespace ds4::text {
namespace {

using testing::read_file;
using testing::v4_tokenizer;
using Ids = std::vector<int>;

TEST(Tokenizer, ControlIdsByText) {
  const Tokenizer& t = v4_tokenizer();
  EXPECT_EQ(t.vocab_size(), 129280u);
  EXPECT_EQ(t.bos_id(), 0);
  EXPECT_EQ(t.eos_id(), 1);
  EXPECT_EQ(t.user_id(), 128803);
  EXPECT_EQ(t.assistant_id(), 128804);
  EXPECT_EQ(t.think_open_id(), 128821);
  EXPECT_EQ(t.think_close_id(), 128822);
  EXPECT_EQ(t.dsml_id(), 128825);
  EXPECT_EQ(t.latest_reminder_id(), 128828);
  EXPECT_TRUE(t.is_special(0));
  EXPECT_TRUE(t.is_special(128803));
  EXPECT_FALSE(t.is_special(19923));
  EXPECT_EQ(t.find_token("Hello"), std::optional<int>(19923));
  EXPECT_EQ(t.find_token("no such token text"), std::nullopt);
}

TEST(Tokenizer, SpecTableRows) {
  const Tokenizer& t = v4_tokenizer();
  EXPECT_EQ(t.encode("hello—world"), (Ids{33310, 965, 29616}));
  EXPECT_EQ(t.encode("x² + y²"), (Ids{90, 1628, 940, 383, 1628}));
  EXPECT_EQ(t.encode("価格は１２３円です"), (Ids{46242, 1851, 2841, 127167, 25081, 34839, 8262}));
  EXPECT_EQ(t.encode("“quoted”"), (Ids{428, 403, 12284, 430}));
  // a, then "\u00a0b" as one piece (its BPE is that of the piece alone).
  Ids nbsp_piece;
  t.encode_piece("\u00a0b", nbsp_piece);
  Ids expected{t.encode("a")};
  expected.insert(expected.end(), nbsp_piece.begin(), nbsp_piece.end());
  EXPECT_EQ(t.encode("a\u00a0b"), expected);
  EXPECT_EQ(expected.size(), 3u);  // "a", then the two byte-level tokens of C2 A0 62
}

TEST(Tokenizer, CrossChecksOfSpecSection5) {
  const Tokenizer& t = v4_tokenizer();
  EXPECT_EQ(t.encode("Hello! 毕老师！1 + 1 = 2 ĠÑĤÐ²ÑĬÑĢ"),
            (Ids{19923, 3, 223, 5464, 5008, 1175, 19, 940, 223, 19, 438, 223, 20,
                 6113, 257, 76589, 131, 100, 76032, 1628, 76589, 131, 108, 76589, 131, 98}));
  EXPECT_EQ(t.encode("<｜User｜>你好<｜Assistant｜><think>推理</think>答案<｜end▁of▁sentence｜>", true),
            (Ids{128803, 30594, 128804, 128821, 36101, 128822, 7624, 1}));
  EXPECT_EQ(t.encode("<｜User｜><tool_result>out</tool_result><｜Assistant｜><think>", true),
            (Ids{128803, 30, 72461, 46148, 32, 606, 1718, 72461, 46148, 32, 128804, 128821}));
  EXPECT_EQ(t.encode("</think>\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"get_weather\">\n", true),
            (Ids{128822, 271, 30, 128825, 72461, 4941, 12548, 1018, 30, 128825, 40148, 5406,
                 2329, 1281, 1133, 65, 50219, 3816}));
}

TEST(Tokenizer, GoldenE1AndApiVectorIds) {
  const Tokenizer& t = v4_tokenizer();
  auto chat = [&](const std::string& prompt) {
    return t.encode("<｜begin▁of▁sentence｜><｜User｜>" + prompt + "<｜Assistant｜></think>", true);
  };
  EXPECT_EQ(chat("Answer with only the number: 2048 divided by 128 is"),
            (Ids{0, 128803, 7805, 418, 1353, 270, 1167, 28, 223, 11154, 26, 7203, 513, 223,
                 7833, 344, 128804, 128822}));
  EXPECT_EQ(chat("Rispondi in italiano con una frase: chi era Ada Lovelace?"),
            (Ids{0, 128803, 52, 278, 4908, 75, 295, 89034, 399, 3919, 123003, 28, 23442, 9861,
                 63030, 47121, 317, 805, 33, 128804, 128822}));
  EXPECT_EQ(chat("Complete the C statement with the next exact token only:\nreturn "
                 "snprintf(buf, sizeof(buf), \"%d\", value"),
            (Ids{0, 128803, 41174, 270, 345, 6809, 418, 270, 2894, 6319, 17840, 1353, 1137, 3916,
                 6400, 15626, 97201, 14, 36220, 97201, 754, 51663, 70, 1760, 1990, 128804,
                 128822}));
  // The API's continuation tokens decode to the texts the API returned.
  EXPECT_EQ(t.decode({108149, 47121, 317, 805}), "Ada Lovelace");
  EXPECT_EQ(t.decode({9854, 69, 201, 3916}), "```c\nreturn");
}

// usage.prompt_tokens of the official API (non-thinking chat, one user message) counts
// BOS <｜User｜> prompt <｜Assistant｜> </think>.
TEST(Tokenizer, OfficialApiPromptTokenCounts) {
  const Tokenizer& t = v4_tokenizer();
  const std::string dir = ds4::testdata::vectors_dir() + "/ds4-official/";
  const nlohmann::json manifest = nlohmann::json::parse(read_file(dir + "manifest.json"));
  std::vector<int> counts;
  for (const auto& p : manifest["prompts"]) {
    const std::string prompt = read_file(dir + p["prompt_file"].get<std::string>());
    const nlohmann::json official =
        nlohmann::json::parse(read_file(dir + p["official_file"].get<std::string>()));
    const int expected = official["usage"]["prompt_tokens"].get<int>();
    const Ids ids = t.encode("<｜begin▁of▁sentence｜><｜User｜>" + prompt + "<｜Assistant｜></think>",
                             /*parse_special=*/true);
    EXPECT_EQ(static_cast<int>(ids.size()), expected) << p["id"];
    // The same ids built from segments: control ids pushed, user text BPE'd alone.
    Ids segments{t.bos_id(), t.user_id()};
    t.encode_append(prompt, segments);
    segments.push_back(t.assistant_id());
    segments.push_back(t.think_close_id());
    EXPECT_EQ(segments, ids) << p["id"];
    counts.push_back(expected);
  }
  EXPECT_EQ(counts, (std::vector<int>{21, 27, 18, 3353, 3844}));
}

// U+0085 and U+FEFF, where the JavaScript reference's \s differs from Oniguruma's: the ids
// are the BPE of the pieces derived by hand from the Oniguruma semantics.
TEST(Tokenizer, NelAndBomFollowOniguruma) {
  const Tokenizer& t = v4_tokenizer();
  auto bpe_pieces = [&](const std::vector<std::string>& pieces) {
    Ids ids;
    for (const std::string& p : pieces) t.encode_piece(p, ids);
    return ids;
  };
  EXPECT_EQ(t.encode("a \u0085"), bpe_pieces({"a", " \u0085"}));
  EXPECT_EQ(t.encode("a\u0085\n"), bpe_pieces({"a", "\u0085\n"}));
  EXPECT_EQ(t.encode("x \u0085 y"), bpe_pieces({"x", " \u0085", " y"}));
  EXPECT_EQ(t.encode("a\ufeff\n"), bpe_pieces({"a", "\ufeff", "\n"}));
  EXPECT_EQ(t.encode("\ufeffhello"), bpe_pieces({"\ufeffhello"}));
  EXPECT_EQ(t.encode("a \ufeff"), bpe_pieces({"a", " ", "\ufeff"}));
  // JavaScript's \s split gives other pieces and, for NEL, other ids. (For U+FEFF the
  // split differs but no merge joins EF BB BF to a neighbour, so the ids agree.)
  EXPECT_NE(t.encode("a \u0085"), bpe_pieces({"a", " ", "\u0085"}));
}

TEST(Tokenizer, SpecialTokensOnlyWhenAsked) {
  const Tokenizer& t = v4_tokenizer();
  const std::string s = "a<｜User｜>b";
  const Ids plain = t.encode(s);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 128803), 0);
  EXPECT_EQ(t.decode(plain), s);
  EXPECT_EQ(t.encode(s, true), (Ids{t.encode("a")[0], 128803, t.encode("b")[0]}));
  // Leftmost-longest: <｜tool▁calls▁begin｜> is not cut at a shorter special token.
  EXPECT_EQ(t.encode("<｜tool▁calls▁begin｜>", true), (Ids{128806}));
  // A prefix of a special token is plain text.
  const Ids partial = t.encode("<｜User", true);
  EXPECT_EQ(partial, t.encode("<｜User"));
  // Adjacent specials and specials at both ends.
  EXPECT_EQ(t.encode("<think></think>", true), (Ids{128821, 128822}));
  EXPECT_EQ(t.encode("｜DSML｜｜DSML｜x", true), (Ids{128825, 128825, t.encode("x")[0]}));
  EXPECT_TRUE(t.encode("", true).empty());
  EXPECT_TRUE(t.encode("").empty());
}

TEST(Tokenizer, DecodeSpecialAndByteTokens) {
  const Tokenizer& t = v4_tokenizer();
  EXPECT_EQ(t.decode({0, 128803, 128821}), "<｜begin▁of▁sentence｜><｜User｜><think>");
  EXPECT_EQ(t.token_bytes(t.encode(" ")[0]), " ");
  EXPECT_EQ(t.token_text(t.encode(" ")[0]), "Ġ");
  EXPECT_EQ(t.token_bytes(t.encode("\n")[0]), "\n");
  EXPECT_THROW(t.decode({-1}), TokenizerError);
  EXPECT_THROW(t.decode({129280}), TokenizerError);
  EXPECT_THROW(t.token_text(1 << 30), TokenizerError);
}

TEST(Tokenizer, StreamDecoderHoldsIncompleteSequences) {
  const Tokenizer& t = v4_tokenizer();
  // "毕" is E6 AF 95; U+1F642 is F0 9F 99 82. Byte tokens split them.
  auto byte_id = [&](unsigned char b) {
    Ids ids;
    t.encode_piece(std::string(1, static_cast<char>(b)), ids);
    return ids.at(0);
  };
  StreamDecoder d(t);
  EXPECT_EQ(d.push(byte_id(0xF0)), "");
  EXPECT_EQ(d.push(byte_id(0x9F)), "");
  EXPECT_EQ(d.push(byte_id(0x99)), "");
  EXPECT_EQ(d.pending(), 3u);
  EXPECT_EQ(d.push(byte_id(0x82)), "\xF0\x9F\x99\x82");
  EXPECT_EQ(d.pending(), 0u);
  EXPECT_EQ(d.push_bytes("ab\xE6\xAF"), "ab");
  EXPECT_EQ(d.push_bytes("\x95" "c"), "\xE6\xAF\x95" "c");
  // Invalid bytes: one U+FFFD per maximal invalid subpart; an incomplete tail at flush is one.
  EXPECT_EQ(d.push_bytes("x\xFFy\xE6"), "x\xEF\xBF\xBDy");
  EXPECT_EQ(d.push_bytes("z"), "\xEF\xBF\xBDz");  // E6 then 'z' cannot complete
  EXPECT_EQ(d.push_bytes("\xE6\xAF"), "");
  EXPECT_EQ(d.flush(), "\xEF\xBF\xBD");
  EXPECT_EQ(d.flush(), "");

  StreamDecoder raw(t, StreamDecoder::InvalidBytes::kRaw);
  EXPECT_EQ(raw.push_bytes("x\xFFy\xE6"), "x\xFFy");
  EXPECT_EQ(raw.push_bytes("\x41"), "\xE6\x41");
  EXPECT_EQ(raw.push_bytes("\xE6\xAF"), "");
  EXPECT_EQ(raw.flush(), "\xE6\xAF");
}

// However the bytes are split into pushes, the stream reads as Python's
// bytes.decode("utf-8", "replace") of the whole (vectors from gen_utf8_replace_vectors.py);
// kRaw passes the bytes through unchanged.
TEST(Tokenizer, StreamDecoderReplacesAsPythonDecodesWhateverTheSplit) {
  const Tokenizer& t = v4_tokenizer();
  for (const auto& v : ds4::test::kUtf8ReplaceVectors) {
    const std::string in(v.input, v.input_size);
    const std::string expected = v.replaced;
    SCOPED_TRACE(::testing::PrintToString(in));
    EXPECT_EQ(unicode::utf8_sanitized(in), expected);
    auto stream = [&](const std::vector<size_t>& cuts, StreamDecoder::InvalidBytes mode) {
      StreamDecoder d(t, mode);
      std::string out;
      size_t at = 0;
      for (size_t cut : cuts) {
        out += d.push_bytes(in.substr(at, cut - at));
        at = cut;
      }
      out += d.push_bytes(in.substr(at));
      out += d.flush();
      EXPECT_EQ(d.pending(), 0u);
      return out;
    };
    EXPECT_EQ(stream({}, StreamDecoder::InvalidBytes::kReplace), expected);
    std::vector<size_t> every;
    for (size_t i = 1; i < in.size(); ++i) every.push_back(i);
    EXPECT_EQ(stream(every, StreamDecoder::InvalidBytes::kReplace), expected) << "byte by byte";
    EXPECT_EQ(stream(every, StreamDecoder::InvalidBytes::kRaw), in);
    for (size_t i = 1; i < in.size(); ++i) {
      EXPECT_EQ(stream({i}, StreamDecoder::InvalidBytes::kReplace), expected) << "split at " << i;
    }
  }
}

TEST(Tokenizer, StreamDecoderRawEqualsDecode) {
  const Tokenizer& t = v4_tokenizer();
  const std::string text = "Überprüfung 检查 🙂‍↕️ \xF0\x9F end\xC3";
  const Ids ids = t.encode(text);
  StreamDecoder d(t, StreamDecoder::InvalidBytes::kRaw);
  std::string out;
  for (int id : ids) {
    const std::string part = d.push(id);
    // Never a partial sequence at the end of a chunk, except flushed invalid bytes.
    out += part;
  }
  out += d.flush();
  EXPECT_EQ(out, text);
  EXPECT_EQ(t.decode(ids), text);
}

TEST(Tokenizer, TokenDumpEscapes) {
  const Tokenizer& t = v4_tokenizer();
  const Ids ids = {t.encode("\n")[0], t.encode("\t")[0], t.encode("\r")[0], t.encode("\\")[0],
                   t.encode(std::string(1, '\x01'))[0], t.encode("\x7f")[0], 128803, 19923};
  EXPECT_EQ(format_token_dump(t, ids),
            std::to_string(ids[0]) + "\t\\n\n" + std::to_string(ids[1]) + "\t\\t\n" +
                std::to_string(ids[2]) + "\t\\r\n" + std::to_string(ids[3]) + "\t\\\\\n" +
                std::to_string(ids[4]) + "\t\\x01\n" + std::to_string(ids[5]) + "\t\\x7f\n" +
                "128803\t<｜User｜>\n19923\tHello\n");
  EXPECT_EQ(format_token_dump(t, {-5}), "-5\t<invalid>\n");
  EXPECT_EQ(format_token_dump(t, {}), "");
}

// 10k random byte strings, invalid UTF-8 included: encode never fails and decodes back
// byte for byte, with and without special-token extraction.
TEST(Tokenizer, RandomBytesRoundTrip) {
  const Tokenizer& t = v4_tokenizer();
  std::mt19937 rng(ds4::testdata::test_seed(12345));
  const std::vector<std::string> fragments = {
      " ", "  ", "\n", "\r\n", "\t", "a", "Z", "é", "中", "ア", "・", "1", "٣", "²", "—", "“", "!",
      ".", "'s", "\u0301", "\u200d", "\u00a0", "\u3000", "\u0085", "\ufeff", "🙂", "<｜User｜>",
      "<think>", "｜DSML｜", "\xF0\x9F", "\xE6", "\x80", "\xFF", std::string(1, '\0')};
  for (int iter = 0; iter < 10000; ++iter) {
    std::string s;
    const int len = static_cast<int>(rng() % 40);
    for (int i = 0; i < len; ++i) {
      if (rng() % 3 == 0) {
        s.push_back(static_cast<char>(rng() & 0xFF));
      } else {
        s += fragments[rng() % fragments.size()];
      }
    }
    const Ids ids = t.encode(s);
    ASSERT_EQ(t.decode(ids), s) << "iteration " << iter;
    for (int id : ids) ASSERT_FALSE(t.is_special(id)) << "iteration " << iter;
    ASSERT_EQ(t.decode(t.encode(s, true)), s) << "iteration " << iter;
  }
}

TEST(Tokenizer, LongPiecesUseHeapMergeConsistently) {
  const Tokenizer& t = v4_tokenizer();
  // The same piece BPE'd at different lengths: a long word is one piece; its ids must
  // decode back and match the reference comparison corpus (see test_reference.cpp).
  std::string word;
  for (int i = 0; i < 500; ++i) word += "abracadabra"[i % 11];
  const Ids ids = t.encode(word);
  EXPECT_EQ(t.decode(ids), word);
  // Heap (long) and naive (short) merges agree on a piece at the threshold boundary:
  // a repeated short unit must tokenize periodically once merges saturate.
  const std::string unit = "the";
  std::string rep;
  for (int i = 0; i < 100; ++i) rep += unit;
  EXPECT_EQ(t.decode(t.encode(rep)), rep);
}

TEST(Tokenizer, CacheIsUsedAndBounded) {
  const Tokenizer& t = v4_tokenizer();
  t.clear_cache();
  EXPECT_EQ(t.cache_entries(), 0u);
  const Ids a = t.encode("caching caching caching");
  EXPECT_GT(t.cache_entries(), 0u);
  const Ids b = t.encode("caching caching caching");
  EXPECT_EQ(a, b);
}

TEST(Tokenizer, ConcurrentEncodeAgrees) {
  const Tokenizer& t = v4_tokenizer();
  const std::string text = read_file(ds4::testdata::vectors_dir() +
                                     "/ds4-official/prompts/long_code_audit.txt");
  const Ids expected = t.encode(text);
  std::vector<Ids> results(3);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < results.size(); ++i) {
    threads.emplace_back([&, i] {
      for (int r = 0; r < 3; ++r) {
        if (i == 0) t.clear_cache();
        results[i] = t.encode(text);
      }
    });
  }
  for (auto& th : threads) th.join();
  for (const Ids& r : results) EXPECT_EQ(r, expected);
}

TEST(Tokenizer, RejectsBadTables) {
  // Minimal byte-level vocabulary: the 256 byte symbols plus the seven control tokens.
  std::vector<std::string> toks;
  for (int b = 0; b < 256; ++b) {
    std::string s;
    const bool self = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    static int next = 0x100;
    const uint32_t cp = self ? static_cast<uint32_t>(b) : static_cast<uint32_t>(next++);
    if (cp < 0x80) {
      s.push_back(static_cast<char>(cp));
    } else {
      s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
    toks.push_back(s);
  }
  for (const char* c : {"<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>",
                        "<｜Assistant｜>", "<think>", "</think>", "｜DSML｜"}) {
    toks.push_back(c);
  }
  toks.push_back("ab");
  toks.push_back("abc");
  const Tokenizer ok(toks, {"a b", "ab c"});
  EXPECT_EQ(ok.encode("abc"), (Ids{static_cast<int>(toks.size()) - 1}));
  EXPECT_EQ(ok.encode("abd").size(), 2u);
  EXPECT_EQ(ok.encode("<think>", true), (Ids{260}));  // the 5th control token
  EXPECT_TRUE(ok.is_special(260));  // heuristic without token types

  EXPECT_THROW(Tokenizer(toks, {"a x_unknown"}), TokenizerError);
  EXPECT_THROW(Tokenizer(toks, {"ab"}), TokenizerError);
  EXPECT_THROW(Tokenizer(toks, {"c b"}), TokenizerError);  // "cb" not a token
  auto dup = toks;
  dup.push_back("ab");
  EXPECT_THROW(Tokenizer(dup, {}), TokenizerError);
  auto missing_byte = toks;
  missing_byte[65] = "AA";  // no token for 'A' any more
  EXPECT_THROW(Tokenizer(missing_byte, {}), TokenizerError);
  auto no_dsml = toks;
  no_dsml[262] = "DSML";
  EXPECT_THROW(Tokenizer(no_dsml, {}), TokenizerError);
  EXPECT_NO_THROW(Tokenizer(no_dsml, {}, {}, /*require_control_tokens=*/false));
  EXPECT_THROW(Tokenizer(toks, {}, {1, 2, 3}), TokenizerError);
  EXPECT_THROW(Tokenizer({}, {}), TokenizerError);
}

}  // namespace
}  // namespace ds4::text
