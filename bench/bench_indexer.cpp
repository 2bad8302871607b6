// The indexer's scan of one decode step (bench/README.md, "Cost with context"): every
// compressed row of a ratio-4 layer scored against the token's index queries, as
// cpu::index_scores() does it (8 rows per pass over the heads, AVX2 where the CPU has it)
// against the previous form (one dispatched dot_f32 per row and head, then the ReLU and the
// head weight), in interleaved rounds on the same data. Single thread, thread CPU time: on a
// shared machine that is what the scan costs when it has its core.
//
//   bench_indexer [--rows N] [--heads H] [--dim D] [--rounds R] [--reps K]
//
// Defaults are DeepSeek V4 Flash at a 16384-token context: 4096 compressed rows, 64 index
// heads of 128 dims. For scale, the same token's attention in that layer is timed too
// (cpu::attend_heads: 64 heads of 512 dims over the 128-row window and the top-512 rows).
#include <time.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cpu/attention.h"
#include "quant/quant.h"

namespace {

double thread_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// The scan as the engine ran it before cpu::index_scores().
void previous_scan(const float* q, const float* w, int heads, int dim, const float* keys, int64_t n_rows,
                   float* scores) {
  const ds4::quant::Kernels& k = ds4::quant::kernels();
  for (int64_t row = 0; row < n_rows; ++row) {
    const float* kr = keys + row * dim;
    float s = 0.f;
    for (int h = 0; h < heads; ++h) s += w[h] * std::max(0.f, k.dot_f32(q + static_cast<int64_t>(h) * dim, kr, dim));
    scores[row] = s;
  }
}

int usage() {
  std::fprintf(stderr, "usage: bench_indexer [--rows N] [--heads H] [--dim D] [--rounds R] [--reps K]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  int rows = 4096, heads = 64, dim = 128, rounds = 7, reps = 20;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) return usage();
    const int v = std::atoi(argv[++i]);
    if (v <= 0) return usage();
    if (a == "--rows") rows = v;
    else if (a == "--heads") heads = v;
    else if (a == "--dim") dim = v;
    else if (a == "--rounds") rounds = v;
    else if (a == "--reps") reps = v;
    else return usage();
  }
  std::mt19937 rng(18);
  std::normal_distribution<float> g(0.f, 1.f);
  std::vector<float> q(static_cast<size_t>(heads) * dim), w(heads), keys(static_cast<size_t>(rows) * dim);
  for (auto& v : q) v = g(rng);
  for (auto& v : w) v = g(rng) / std::sqrt(static_cast<float>(heads * dim));
  for (auto& v : keys) v = g(rng);
  std::vector<float> old_s(rows), new_s(rows);
  const ds4::cpu::IndexScoreFn scan = ds4::cpu::index_scores();
  auto time_old = [&] {
    const double t0 = thread_cpu_seconds();
    for (int r = 0; r < reps; ++r) previous_scan(q.data(), w.data(), heads, dim, keys.data(), rows, old_s.data());
    return (thread_cpu_seconds() - t0) / reps;
  };
  auto time_new = [&] {
    const double t0 = thread_cpu_seconds();
    for (int r = 0; r < reps; ++r) scan(q.data(), w.data(), heads, dim, keys.data(), 0, rows, new_s.data());
    return (thread_cpu_seconds() - t0) / reps;
  };
  time_old();  // untimed: pages and caches in place
  time_new();
  std::vector<double> t_old, t_new, ratio;
  for (int r = 0; r < rounds; ++r) {
    const bool old_first = r % 2 == 0;
    const double a = old_first ? time_old() : time_new();
    const double b = old_first ? time_new() : time_old();
    t_old.push_back(old_first ? a : b);
    t_new.push_back(old_first ? b : a);
    ratio.push_back(t_old.back() / t_new.back());
  }
  // The two sum the dot products in different orders: differences of float rounding only,
  // relative to the largest score.
  double max_diff = 0, max_score = 0;
  for (int j = 0; j < rows; ++j) {
    max_diff = std::max(max_diff, std::fabs(static_cast<double>(old_s[j]) - new_s[j]));
    max_score = std::max(max_score, std::fabs(static_cast<double>(old_s[j])));
  }
  const double max_rel = max_diff / std::max(max_score, 1e-30);
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  // The attention the chosen rows feed (all heads on this thread; the engine splits them).
  const int att_heads = 64, att_dim = 512, att_rows = 128 + std::min(rows, 512);
  std::vector<float> aq(static_cast<size_t>(att_heads) * att_dim), sinks(att_heads),
      astore(static_cast<size_t>(att_rows) * att_dim), aout(aq.size()),
      ascores(static_cast<size_t>(att_heads) * att_rows);
  for (auto& v : aq) v = g(rng);
  for (auto& v : sinks) v = g(rng);
  for (auto& v : astore) v = g(rng);
  std::vector<const float*> arows(att_rows);
  for (int j = 0; j < att_rows; ++j) arows[j] = astore.data() + static_cast<size_t>(j) * att_dim;
  const ds4::cpu::AttendFn attend = ds4::cpu::attend_heads();
  std::vector<double> t_att;
  for (int r = 0; r < rounds; ++r) {
    const double t0 = thread_cpu_seconds();
    for (int k = 0; k < reps; ++k)
      attend(aq.data(), 0, att_heads, att_dim, arows.data(), att_rows, sinks.data(), 0.04f, aout.data(),
             ascores.data());
    t_att.push_back((thread_cpu_seconds() - t0) / reps);
  }

  const double macs = static_cast<double>(rows) * heads * dim;
  const double tn = median(t_new), to = median(t_old);
  std::printf("indexer scan: %d rows x %d heads x %d dims (%s kernels), 1 thread, thread CPU time, median of %d rounds\n",
              rows, heads, dim, ds4::quant::kernels().isa_name, rounds);
  std::printf("  previous (dot_f32 per row and head): %.3f ms, %.2f GMAC/s\n", to * 1e3, macs / to / 1e9);
  std::printf("  index_scores (8 rows per pass):      %.3f ms, %.2f GMAC/s\n", tn * 1e3, macs / tn / 1e9);
  std::printf("  speed-up x%.2f (rounds %.2f..%.2f); largest score difference %.1e of the largest score\n", median(ratio),
              *std::min_element(ratio.begin(), ratio.end()), *std::max_element(ratio.begin(), ratio.end()), max_rel);
  const double ta = median(t_att);
  std::printf("  for scale, attend_heads over %d rows x %d heads x %d dims: %.3f ms, %.2f GMAC/s (scores and values)\n",
              att_rows, att_heads, att_dim, ta * 1e3, 2.0 * att_rows * att_heads * att_dim / ta / 1e9);
  return max_rel < 1e-4 ? 0 : 1;
}
