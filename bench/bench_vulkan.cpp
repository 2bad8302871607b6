// Vulkan kernel benchmark: each mat-vec format streaming a weight matrix once per dispatch,
// against a copy of an equally large buffer on the same device, interleaved (A/B), reported
// as the kernel's weight-read rate over the copy's bytes-moved rate. Information only (on
// lavapipe the numbers describe the CPU); run on a real GPU via scripts/vulkan_perf.sh.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "quant/quant.h"
#include "vulkan/context.h"
#include "vulkan/ops.h"
#include "vulkan/recorder.h"

using namespace ds4;
using namespace ds4::vulkan;

namespace {

double seconds_of(Recorder& rec) {
  const auto t0 = std::chrono::steady_clock::now();
  rec.submit_and_wait();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int usage() {
  std::fprintf(stderr,
               "usage: bench_vulkan [--device N] [--mib N] [--reps N] [--vectors N] [--list-devices]\n"
               "  --mib N      weight bytes per format (default 16)\n"
               "  --reps N     interleaved copy/kernel pairs per format (default 5)\n"
               "  --vectors N  operand vectors per product (default 1: decode; more: prefill)\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  int device = 0, reps = 5, nvec = 1;
  size_t mib = 16;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(usage());
      }
      return argv[++i];
    };
    if (a == "--device") device = std::atoi(next());
    else if (a == "--mib") mib = static_cast<size_t>(std::atoll(next()));
    else if (a == "--reps") reps = std::max(1, std::atoi(next()));
    else if (a == "--vectors") nvec = std::max(1, std::atoi(next()));
    else if (a == "--list-devices") {
      std::fputs(describe_devices(list_devices()).c_str(), stdout);
      return 0;
    } else if (a == "-h" || a == "--help") {
      usage();
      return 0;
    } else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return usage();
    }
  }
  try {
    Context ctx(ContextOptions{.device = device});
    Ops ops(ctx);
    std::printf("device %d: %s (subgroup %u), %d operand vector(s)\n", device, ctx.info().name.c_str(),
                ctx.info().subgroup_size, nvec);
    const int64_t cols = 4096;
    std::printf("%-8s %10s %12s %12s %8s\n", "format", "MiB", "kernel GB/s", "copy GB/s", "frac");
    for (quant::Type t : {quant::Type::IQ2_XXS, quant::Type::Q2_K, quant::Type::Q4_K, quant::Type::Q8_0,
                          quant::Type::F16, quant::Type::F32}) {
      const size_t rb = *quant::row_bytes(t, cols);
      const int64_t rows = std::max<int64_t>(1, static_cast<int64_t>(mib * 1048576 / rb));
      const size_t bytes = rb * static_cast<size_t>(rows);
      // Random weights: quantize one block row of random floats and repeat it (the kernel's
      // work does not depend on the values).
      std::vector<float> src(static_cast<size_t>(cols) * nvec);
      std::mt19937 rng(1);
      std::normal_distribution<float> nd(0.f, 0.05f);
      for (auto& v : src) v = nd(rng);
      std::vector<uint8_t> one(rb), w(bytes);
      quant::quantize_row(t, src.data(), one.data(), cols);
      for (int64_t r = 0; r < rows; ++r) std::memcpy(w.data() + r * rb, one.data(), rb);
      Buffer wb = ctx.create_buffer(bytes), xb = ctx.create_buffer(src.size() * 4);
      ctx.upload(wb, w.data(), bytes);
      ctx.upload(xb, src.data(), src.size() * 4);
      const size_t words = Ops::act_words(t, cols);
      Buffer qb = ctx.create_buffer(words * 4 * nvec), yb = ctx.create_buffer(rows * 4 * nvec);
      Buffer ca = ctx.create_buffer(bytes), cbuf = ctx.create_buffer(bytes);
      Recorder kernel(ctx), copy(ctx);
      const bool is_float = t == quant::Type::F32 || t == quant::Type::F16;
      ops.quantize_act(kernel, t, {&xb}, cols, nvec, cols, {&qb}, words);
      ops.matmul(kernel, DeviceMatrix{t, rows, cols, rb, &wb, 0}, is_float ? Range{&xb} : Range{&qb}, words, nvec,
                 {&yb}, rows);
      // The copy moves bytes/2 in and bytes/2 out: the same bytes touched as the kernel reads.
      const size_t half = std::min<size_t>(bytes / 2 / 16 * 16, ctx.max_binding_bytes() / 16 * 16);
      ops.copy(copy, {&ca, 0, half}, {&cbuf, 0, half}, half);
      kernel.submit_and_wait();  // warm-up (pipeline compilation, first touch)
      copy.submit_and_wait();
      std::vector<double> ratio, krate, crate;
      for (int i = 0; i < reps; ++i) {
        const double tc = seconds_of(copy);
        const double tk = seconds_of(kernel);
        krate.push_back(bytes / tk / 1e9);
        crate.push_back(2.0 * half / tc / 1e9);
        ratio.push_back((bytes / tk) / (2.0 * half / tc));
      }
      std::printf("%-8s %10.1f %12.4f %12.3f %8.4f\n", std::string(quant::type_name(t)).c_str(), bytes / 1048576.0,
                  median(krate), median(crate), median(ratio));
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_vulkan: %s\n", e.what());
    return 1;
  }
  return 0;
}
