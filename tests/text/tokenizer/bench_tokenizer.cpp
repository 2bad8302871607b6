// Single-core encode throughput. Usage: bench_tokenizer [file ...]
// Without files: natural text (hand-written corpus files and the official long prompts),
// then the whole corpus including the generated stress files. Reports thread CPU time, so
// other processes sharing the cores do not distort the figure.
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "text/hf_tokenizer.h"
#include "text/tokenizer.h"
#include "tokenizer_fixture.h"

namespace {

double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

void bench(const char* label, const std::vector<std::string>& paths) {
  using namespace ds4::text;
  std::string text;
  for (const auto& p : paths) text += testing::read_file(p);
  const Tokenizer& tok = testing::v4_tokenizer();
  std::printf("%s: %zu files, %.3f MB\n", label, paths.size(), static_cast<double>(text.size()) / 1e6);
  std::vector<int> ids;
  for (const bool cold : {true, false}) {
    // Repeat for at least 0.3 s of CPU time; report the mean and the best run (the best
    // approximates an otherwise idle core when other processes share the machine).
    double spent = 0, best = 1e30;
    int reps = 0;
    while (spent < 0.3 || reps < 3) {
      if (cold) {
        tok.clear_cache();
        (void)tok.cache_entries();  // performs the lazy clear outside the timed region
      }
      ids.clear();
      const double t0 = thread_cpu_seconds();
      tok.encode_append(text, ids);
      const double dt = thread_cpu_seconds() - t0;
      spent += dt;
      best = std::min(best, dt);
      ++reps;
    }
    const double mb = static_cast<double>(text.size()) / 1e6;
    std::printf("  %s cache: mean %.1f MB/s, best %.1f MB/s (%zu tokens, %d runs)\n",
                cold ? "cold" : "warm", mb * reps / spent, mb / best, ids.size(), reps);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> paths;
  for (int i = 1; i < argc; ++i) paths.emplace_back(argv[i]);
  if (!paths.empty()) {
    bench("input", paths);
    return 0;
  }
  const std::string corpus = std::string(DS4_SOURCE_DIR) + "/tests/text/tokenizer/corpus";
  const std::string off = std::string(DS4_TEST_DATA_DIR) + "/vectors/ds4-official/prompts/";
  std::vector<std::string> natural = {off + "long_memory_archive.txt", off + "long_code_audit.txt"};
  std::vector<std::string> all;
  if (std::filesystem::exists(corpus)) {
    for (const auto& e : std::filesystem::directory_iterator(corpus)) {
      if (!e.is_regular_file()) continue;
      all.push_back(e.path().string());
      const std::string name = e.path().filename().string();
      if (name.rfind("generated_", 0) != 0 && e.path().extension() != ".json") {
        natural.push_back(e.path().string());
      }
    }
  }
  std::sort(all.begin(), all.end());
  bench("natural text", natural);
  bench("whole corpus (with generated stress files)", all);
  return 0;
}
