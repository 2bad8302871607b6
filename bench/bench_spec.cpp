// Speculative decoding benchmark (docs/speculative.md), through the public engine API:
//   bench_spec MODEL [--mtp FILE] [--prompt-len P] [--tokens T] [--rounds R] [-t N]
// Per round, interleaved: (1) the verify-cost curve: one decode step vs one verify batch of
// k+1 positions, k = 1..4 (ratio = verify time / step time); (2) greedy decode of T tokens
// plain, with MTP drafts (adaptive), with perfect drafts (the plain run's own tokens) for
// k = 1..4 and with always-wrong drafts (adaptive controller). Medians over rounds.
#include <algorithm>
#include <cmath>
#include <functional>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "ds4/engine.h"
#include "sample/sampler.h"
#include "spec/speculative.h"

using namespace ds4;

namespace {
double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_spec MODEL [--mtp FILE] [--prompt-len P] [--tokens T] [--rounds R] [-t N]\n");
    return 2;
  }
  EngineOptions eo;
  int prompt_len = 64, T = 48, rounds = 5;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--mtp") eo.mtp_path = argv[i + 1];
    else if (a == "--prompt-len") prompt_len = std::atoi(argv[i + 1]);
    else if (a == "--tokens") T = std::atoi(argv[i + 1]);
    else if (a == "--rounds") rounds = std::atoi(argv[i + 1]);
    else if (a == "-t") eo.threads = std::atoi(argv[i + 1]);
  }
  auto e = Engine::open(argv[1], eo);
  if (!e->has_mtp()) {
    std::fprintf(stderr, "bench_spec: the model has no MTP block\n");
    return 1;
  }
  const int V = e->n_vocab();
  std::vector<int32_t> prompt;
  for (int i = 0; i < prompt_len; ++i) prompt.push_back(static_cast<int32_t>((i * 7919 + 13) % V));
  const int ctx = prompt_len + T + 16;
  sample::Params greedy;
  greedy.temperature = 0;

  std::vector<double> step_s, verify_s[5], plain_tps, mtp_tps, perfect_tps[5], wrong_tps;
  double mtp_acc = 0;
  for (int r = 0; r < rounds; ++r) {
    // (1) verify-cost curve on one session: eval then rewind (cheap), interleaved.
    auto s = e->new_session(ctx);
    s->sync(prompt);
    for (int rep = 0; rep < 4; ++rep) {
      double t0 = now_s();
      s->eval(1);
      step_s.push_back(now_s() - t0);
      s->rewind(prompt_len);
      for (int k = 1; k <= 4; ++k) {
        std::vector<BatchEntry> b;
        for (int j = 0; j <= k; ++j) b.push_back({s.get(), 1 + j, prompt_len + j, true});
        BatchResult br;
        t0 = now_s();
        e->eval_batch(b, &br);
        verify_s[k].push_back(now_s() - t0);
        s->rewind(prompt_len);
      }
    }
    // (2) decode runs.
    auto run = [&](const spec::Options& so, std::function<int32_t(int)> drafts, std::vector<int32_t>* out,
                   spec::Stats* st) {
      auto ss = e->new_session(ctx);
      ss->sync(prompt);
      sample::Sampler sampler(greedy);
      spec::Decoder d(*e, *ss, sampler, so);
      if (drafts) d.set_draft_source(drafts);
      const double t0 = now_s();
      for (int i = 0; i < T; ++i) {
        const int32_t t = d.sample(d.logits());
        if (out) out->push_back(t);
        if (i + 1 < T) d.advance(t, T - i - 1);
      }
      const double dt = now_s() - t0;
      d.settle();
      if (st) *st = d.stats();
      return T / dt;
    };
    std::vector<int32_t> ref;
    plain_tps.push_back(run({0, false}, {}, &ref, nullptr));
    auto perfect = [&](int pos) { return ref[std::min<int>(pos - prompt_len, T - 1)]; };
    auto wrong = [&](int pos) { return (ref[std::min<int>(pos - prompt_len, T - 1)] + 1) % V; };
    spec::Stats st;
    mtp_tps.push_back(run({4, true}, {}, nullptr, &st));
    mtp_acc = st.acceptance();
    for (int k = 1; k <= 4; ++k) perfect_tps[k].push_back(run({k, false}, perfect, nullptr, nullptr));
    wrong_tps.push_back(run({4, true}, wrong, nullptr, nullptr));
  }
  const double st = median(step_s), plain = median(plain_tps);
  std::printf("decode step: %.3f ms\n", st * 1e3);
  std::printf("k  verify(k+1)/step  break-even acceptance  perfect-draft speedup\n");
  for (int k = 1; k <= 4; ++k) {
    const double c = median(verify_s[k]) / st;
    // Smallest i.i.d. acceptance a with (1 - a^(k+1)) / (1 - a) >= c (drafting cost ignored).
    double be = 1.0;
    for (double a = 0; a <= 1.0; a += 0.001)
      if ((a >= 0.9995 ? k + 1 : (1 - std::pow(a, k + 1)) / (1 - a)) >= c) {
        be = a;
        break;
      }
    std::printf("%d  %.2f  %.2f  %.2fx\n", k, c, be, median(perfect_tps[k]) / plain);
  }
  std::printf("plain %.1f t/s; MTP drafts (adaptive, N=4) %.2fx, acceptance %.1f%%; always-wrong drafts (adaptive) %.2fx\n",
              plain, median(mtp_tps) / plain, 100 * mtp_acc, median(wrong_tps) / plain);
  return 0;
}
