// Single-core encode throughput. Usage: bench_tokenizer [file ...]
// Without files it uses the reference corpus and the official long prompts.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "text/hf_tokenizer.h"
#include "text/tokenizer.h"
#include "tokenizer_fixture.h"

int main(int argc, char** argv) {
  using namespace ds4::text;
  std::vector<std::string> paths;
  for (int i = 1; i < argc; ++i) paths.emplace_back(argv[i]);
  if (paths.empty()) {
    const std::string corpus = std::string(DS4_SOURCE_DIR) + "/tests/text/tokenizer/corpus";
    if (std::filesystem::exists(corpus)) {
      for (const auto& e : std::filesystem::directory_iterator(corpus)) {
        if (e.is_regular_file()) paths.push_back(e.path().string());
      }
    }
    const std::string off = std::string(DS4_SHARED_DIR) + "/vectors/ds4-official/prompts/";
    paths.push_back(off + "long_memory_archive.txt");
    paths.push_back(off + "long_code_audit.txt");
  }
  std::string text;
  for (const auto& p : paths) text += testing::read_file(p);
  const Tokenizer& tok = testing::v4_tokenizer();
  std::printf("input: %zu files, %.2f MB\n", paths.size(), text.size() / 1e6);

  auto run = [&](bool cold, int reps) {
    double best = 1e30;
    size_t n_tokens = 0;
    for (int r = 0; r < reps; ++r) {
      if (cold) tok.clear_cache();
      const auto t0 = std::chrono::steady_clock::now();
      const std::vector<int> ids = tok.encode(text);
      const auto t1 = std::chrono::steady_clock::now();
      n_tokens = ids.size();
      best = std::min(best, std::chrono::duration<double>(t1 - t0).count());
    }
    std::printf("%s cache: %.1f MB/s (%zu tokens, %.1f ms)\n", cold ? "cold" : "warm",
                text.size() / 1e6 / best, n_tokens, best * 1e3);
  };
  run(true, 3);
  run(false, 5);
  return 0;
}
