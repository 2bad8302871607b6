// Speculative decoding benchmark (docs/speculative.md), through the public engine API:
//   bench_spec MODEL [--mtp FILE] [--prompt-len P] [--tokens T] [--rounds R] [--reps N]
//              [--extra 0|1] [-t N]
// Per round, interleaved:
// (1) the verify-cost curve: one MTP draft, one decode step and one verify batch of k+1
//     positions, k = 1..4, on the same session (rewound after each), several times;
// (2) greedy decode of T tokens: each speculative run right after a plain run of the same
//     prompt (ratio = its tokens/s over that plain run's): MTP drafts (adaptive controller),
//     perfect drafts (the plain run's own tokens, fixed k = 1..4), always-wrong drafts
//     (adaptive controller, drafting free) and MTP drafts at a fixed k = 1 (no controller).
//     On a model with random weights (the synthetic Flash slice) the MTP block's drafts are
//     random too: the "MTP drafts" runs are then random drafts that cost a real draft.
// Reported: per round (each round's curve is the median of its repetitions), then the median
// over rounds with the range (min-max), of wall time and of process CPU time. On a shared
// machine a pass longer than the scheduler's time slice is often preempted, so wall-time
// medians of long passes jump by a whole slice; CPU time shows the work itself.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "ds4/engine.h"
#include "sample/sampler.h"
#include "spec/speculative.h"

using namespace ds4;

namespace {

struct Clock {
  double wall, cpu;
};
Clock now() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  const double cpu = u.ru_utime.tv_sec + u.ru_stime.tv_sec + 1e-6 * (u.ru_utime.tv_usec + u.ru_stime.tv_usec);
  return {std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(), cpu};
}
Clock since(const Clock& t0) {
  const Clock t = now();
  return {t.wall - t0.wall, t.cpu - t0.cpu};
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

// "median (min-max)" of per-round values.
std::string spread(const std::vector<double>& v, const char* fmt = "%.2f") {
  if (v.empty()) return "-";
  char a[32], b[32], c[32];
  std::snprintf(a, sizeof a, fmt, median(v));
  std::snprintf(b, sizeof b, fmt, *std::min_element(v.begin(), v.end()));
  std::snprintf(c, sizeof c, fmt, *std::max_element(v.begin(), v.end()));
  return std::string(a) + " (" + b + "-" + c + ")";
}

// Wall and CPU samples of one quantity.
struct Samples {
  std::vector<double> wall, cpu;
  void add(const Clock& c) {
    wall.push_back(c.wall);
    cpu.push_back(c.cpu);
  }
};

// Smallest i.i.d. acceptance a with (1 - a^(k+1)) / (1 - a) >= c: the expected tokens of a
// pass of k drafts pay for its cost c (in decode steps).
double break_even(int k, double c) {
  for (double a = 0; a <= 1.0; a += 0.001)
    if ((a >= 0.9995 ? k + 1 : (1 - std::pow(a, k + 1)) / (1 - a)) >= c) return a;
  return 1.0;
}

std::string acceptance_text(double a) {
  if (a >= 1.0) return "never";
  char b[16];
  std::snprintf(b, sizeof b, "%.2f", a);
  return b;
}

std::string describe(const spec::Stats& x) {
  char b[160];
  std::snprintf(b, sizeof b, "%lld verifies, %lld single steps, %lld probes, acceptance %.1f%%",
                static_cast<long long>(x.verifies), static_cast<long long>(x.singles),
                static_cast<long long>(x.probes), 100 * x.acceptance());
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc % 2 != 0) {
    std::fprintf(stderr,
                 "usage: bench_spec MODEL [--mtp FILE] [--prompt-len P] [--tokens T] [--rounds R] [--reps N] "
                 "[--extra 0|1] [-t N]\n"
                 "  --reps N   repetitions of the verify-cost curve per round (default 4)\n"
                 "  --extra 0  leave out the always-wrong and fixed-k=1 MTP runs (slow models)\n");
    return 2;
  }
  EngineOptions eo;
  int prompt_len = 64, T = 48, rounds = 5, reps = 4;
  bool extra = true;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--mtp") {
      eo.mtp_path = argv[i + 1];
    } else if (a == "--prompt-len") {
      prompt_len = std::atoi(argv[i + 1]);
    } else if (a == "--tokens") {
      T = std::atoi(argv[i + 1]);
    } else if (a == "--rounds") {
      rounds = std::atoi(argv[i + 1]);
    } else if (a == "--reps") {
      reps = std::atoi(argv[i + 1]);
    } else if (a == "--extra") {
      extra = std::atoi(argv[i + 1]) != 0;
    } else if (a == "-t") {
      eo.threads = std::atoi(argv[i + 1]);
    } else {
      std::fprintf(stderr, "bench_spec: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  if (prompt_len < 1 || T < 2 || rounds < 1 || reps < 1) {
    std::fprintf(stderr, "bench_spec: --prompt-len >= 1, --tokens >= 2, --rounds >= 1 and --reps >= 1 please\n");
    return 2;
  }
  auto e = Engine::open(argv[1], eo);
  if (!e->has_mtp()) {
    std::fprintf(stderr, "bench_spec: the model has no MTP block (pass --mtp FILE)\n");
    return 1;
  }
  const int V = e->n_vocab();
  std::vector<int32_t> prompt;
  for (int i = 0; i < prompt_len; ++i) prompt.push_back(static_cast<int32_t>((i * 7919 + 13) % V));
  const int ctx = prompt_len + T + 16;
  sample::Params greedy;
  greedy.temperature = 0;

  // Per round: verify(k+1) / step and draft / step, each the ratio of that round's medians.
  Samples verify_ratio[spec::kMaxDraft + 1], draft_ratio;
  // Per round: speculative tokens/s over the plain run just before it (wall, CPU).
  Samples mtp_ratio, wrong_ratio, mtp1_ratio, perfect_ratio[spec::kMaxDraft + 1];
  std::vector<double> plain_tps;
  spec::Stats mtp_st, wrong_st;
  for (int r = 0; r < rounds; ++r) {
    // (1) verify-cost curve on one session: eval then rewind (cheap), interleaved.
    {
      Samples step, draft, verify[spec::kMaxDraft + 1];
      auto s = e->new_session(ctx);
      s->sync(prompt);
      for (int rep = 0; rep < reps; ++rep) {
        Clock t0 = now();
        s->mtp_eval(s->hidden().data(), 1, prompt_len - 1);
        draft.add(since(t0));
        t0 = now();
        s->eval(1);
        step.add(since(t0));
        s->rewind(prompt_len);
        for (int k = 1; k <= spec::kMaxDraft; ++k) {
          std::vector<BatchEntry> b;
          for (int j = 0; j <= k; ++j) b.push_back({s.get(), 1 + j, prompt_len + j, true});
          BatchResult br;
          t0 = now();
          e->eval_batch(b, &br);
          verify[k].add(since(t0));
          s->rewind(prompt_len);
        }
      }
      const double sw = median(step.wall), sc = median(step.cpu);
      draft_ratio.add({median(draft.wall) / sw, median(draft.cpu) / sc});
      std::printf("round %d: step %.1f ms wall, %.1f ms CPU; draft/step %.2f CPU; verify(k+1)/step CPU:", r + 1,
                  sw * 1e3, sc * 1e3, draft_ratio.cpu.back());
      for (int k = 1; k <= spec::kMaxDraft; ++k) {
        verify_ratio[k].add({median(verify[k].wall) / sw, median(verify[k].cpu) / sc});
        std::printf(" %.2f", verify_ratio[k].cpu.back());
      }
      std::printf("\n");
      std::fflush(stdout);
    }
    // (2) decode runs: (tokens/s wall, tokens/s CPU).
    auto run = [&](const spec::Options& so, std::function<int32_t(int)> drafts, std::vector<int32_t>* out,
                   spec::Stats* st) {
      auto ss = e->new_session(ctx);
      ss->sync(prompt);
      sample::Sampler sampler(greedy);
      spec::Decoder d(*e, *ss, sampler, so);
      if (drafts) d.set_draft_source(drafts);
      const Clock t0 = now();
      for (int i = 0; i < T; ++i) {
        const int32_t t = d.sample(d.logits());
        if (out) out->push_back(t);
        if (i + 1 < T) d.advance(t, T - i - 1);
      }
      const Clock dt = since(t0);
      d.settle();
      if (st) *st = d.stats();
      return Clock{T / dt.wall, T / std::max(dt.cpu, 1e-9)};
    };
    auto paired = [&](Samples& into, const spec::Options& so, std::function<int32_t(int)> drafts,
                      spec::Stats* st) {
      const Clock base = run({0, false}, {}, nullptr, nullptr);
      plain_tps.push_back(base.wall);
      const Clock x = run(so, std::move(drafts), nullptr, st);
      into.add({x.wall / base.wall, x.cpu / base.cpu});
    };
    std::vector<int32_t> ref;
    plain_tps.push_back(run({0, false}, {}, &ref, nullptr).wall);
    auto perfect = [&](int pos) { return ref[std::min<int>(pos - prompt_len, T - 1)]; };
    auto wrong = [&](int pos) { return (ref[std::min<int>(pos - prompt_len, T - 1)] + 1) % V; };
    paired(mtp_ratio, {spec::kMaxDraft, true}, {}, &mtp_st);
    for (int k = 1; k <= spec::kMaxDraft; ++k) paired(perfect_ratio[k], {k, false}, perfect, nullptr);
    if (extra) {
      paired(wrong_ratio, {spec::kMaxDraft, true}, wrong, &wrong_st);
      paired(mtp1_ratio, {1, false}, {}, nullptr);
    }
    std::printf("round %d: plain %.2f tokens/s wall; CPU ratios: perfect k=1..4", r + 1, plain_tps.back());
    for (int k = 1; k <= spec::kMaxDraft; ++k) std::printf(" %.2f", perfect_ratio[k].cpu.back());
    std::printf(", MTP adaptive %.3f", mtp_ratio.cpu.back());
    if (extra)
      std::printf(", always-wrong adaptive %.3f, MTP fixed k=1 %.3f", wrong_ratio.cpu.back(), mtp1_ratio.cpu.back());
    std::printf("\n");
    std::fflush(stdout);
  }

  std::printf("\nthreads %d, prompt %d tokens, %d tokens per decode run, %d rounds; median (min-max) over rounds\n",
              e->threads(), prompt_len, T, rounds);
  std::printf("one MTP draft / decode step: %s wall, %s CPU\n", spread(draft_ratio.wall).c_str(),
              spread(draft_ratio.cpu).c_str());
  const double dr_c = median(draft_ratio.cpu);
  std::printf("k | verify(k+1)/step wall | CPU | break-even acceptance (CPU): free drafts, MTP drafts | "
              "perfect-draft speedup wall | CPU\n");
  for (int k = 1; k <= spec::kMaxDraft; ++k) {
    const double cc = median(verify_ratio[k].cpu);
    std::printf("%d | %s | %s | %s, %s | %s | %s\n", k, spread(verify_ratio[k].wall).c_str(),
                spread(verify_ratio[k].cpu).c_str(), acceptance_text(break_even(k, cc)).c_str(),
                acceptance_text(break_even(k, cc + k * dr_c)).c_str(), spread(perfect_ratio[k].wall).c_str(),
                spread(perfect_ratio[k].cpu).c_str());
  }
  std::printf("plain decode: %s tokens/s (wall)\n", spread(plain_tps, "%.2f").c_str());
  std::printf("MTP drafts (adaptive, N=4), of plain: %s wall, %s CPU (last round: %s)\n",
              spread(mtp_ratio.wall, "%.3f").c_str(), spread(mtp_ratio.cpu, "%.3f").c_str(), describe(mtp_st).c_str());
  if (extra) {
    std::printf("always-wrong drafts (adaptive, N=4, drafting free), of plain: %s wall, %s CPU (last round: %s)\n",
                spread(wrong_ratio.wall, "%.3f").c_str(), spread(wrong_ratio.cpu, "%.3f").c_str(),
                describe(wrong_st).c_str());
    std::printf("MTP drafts (fixed k=1, no controller), of plain: %s wall, %s CPU\n",
                spread(mtp1_ratio.wall, "%.3f").c_str(), spread(mtp1_ratio.cpu, "%.3f").c_str());
  }
  return 0;
}
