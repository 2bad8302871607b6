// ds4-bench pieces: flags, the frontier schedule of ds4's sweep, CSV format, greedy pick.
#include <climits>
#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "ds4_bench.h"

namespace ds4::bench {
namespace {

args::Outcome parse_outcome(const std::vector<std::string>& args, BenchOptions& o) {
  std::vector<const char*> argv{"ds4-bench"};
  for (const auto& a : args) argv.push_back(a.c_str());
  return parse_options(static_cast<int>(argv.size()), argv.data(), o);
}

BenchOptions parse(std::vector<std::string> args) {
  BenchOptions o;
  const args::Outcome r = parse_outcome(args, o);
  EXPECT_FALSE(r.done()) << r.err;
  return o;
}

// The usage error's message ("" when the arguments were accepted).
std::string parse_error(std::vector<std::string> args) {
  BenchOptions o;
  const args::Outcome r = parse_outcome(args, o);
  if (r.done()) {
    EXPECT_EQ(r.exit_code, 2);
  }
  return r.err;
}

TEST(BenchOptions, DefaultsFollowDs4) {
  const BenchOptions o = parse({"--prompt-file", "p.txt"});
  EXPECT_EQ(o.model_path, "ds4flash.gguf");
  EXPECT_EQ(o.ctx_start, 2048);
  EXPECT_EQ(o.ctx_max, 32768);
  EXPECT_EQ(o.step_incr, 2048);
  EXPECT_EQ(o.step_mul, 1.0);
  EXPECT_EQ(o.gen_tokens, 128);
  EXPECT_EQ(o.ctx_alloc, 32768 + 128 + 1);  // ctx-max + gen + 1
  EXPECT_EQ(o.system, "You are a helpful assistant.");
}

TEST(BenchOptions, AllFlags) {
  const BenchOptions o = parse({"-m", "m.gguf", "--chat-prompt-file", "c.txt", "-sys", "S", "--ctx-start", "512",
                                "--ctx-max", "4096", "--ctx-alloc", "5000", "--step-mul", "2", "--step-incr", "7",
                                "-n", "16", "--csv", "out.csv", "-t", "2", "--prefill-chunk", "512", "--cpu",
                                "--backend", "cpu", "--warm-weights", "--quality"});
  EXPECT_EQ(o.model_path, "m.gguf");
  EXPECT_EQ(o.chat_prompt_path, "c.txt");
  EXPECT_TRUE(o.prompt_path.empty());
  EXPECT_EQ(o.system, "S");
  EXPECT_EQ(o.ctx_start, 512);
  EXPECT_EQ(o.ctx_max, 4096);
  EXPECT_EQ(o.ctx_alloc, 5000);
  EXPECT_EQ(o.step_mul, 2.0);
  EXPECT_EQ(o.step_incr, 7);
  EXPECT_EQ(o.gen_tokens, 16);
  EXPECT_EQ(o.csv_path, "out.csv");
  EXPECT_EQ(o.threads, 2);
  EXPECT_EQ(o.prefill_chunk, 512);
  EXPECT_TRUE(o.warm_weights);
  EXPECT_TRUE(o.quality);
  EXPECT_EQ(parse({"--prompt-file", "p", "--tokens", "3"}).gen_tokens, 3);
  EXPECT_EQ(parse({"--prompt-file", "p", "--gen-tokens", "0"}).gen_tokens, 0);
  BenchOptions scratch;
  const args::Outcome help = parse_outcome({"--help"}, scratch);
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_EQ(help.out, usage_text());
}

TEST(BenchOptions, ClearErrors) {
  EXPECT_NE(parse_error({}).find("exactly one of --prompt-file or --chat-prompt-file"), std::string::npos);
  EXPECT_NE(parse_error({"--prompt-file", "a", "--chat-prompt-file", "b"}).find("exactly one"), std::string::npos);
  EXPECT_NE(parse_error({"--prompt-file", "a", "--bogus"}).find("unknown option: --bogus"), std::string::npos);
  EXPECT_NE(parse_error({"--prompt-file"}).find("missing value for --prompt-file"), std::string::npos);
  EXPECT_NE(parse_error({"--prompt-file", "a", "--ctx-max", "12x"}).find("--ctx-max"), std::string::npos);
  EXPECT_NE(parse_error({"--prompt-file", "a", "--ctx-max", "-5"}).find("--ctx-max"), std::string::npos);
  EXPECT_NE(parse_error({"--prompt-file", "a", "--ctx-max", "99999999999"}).find("--ctx-max"), std::string::npos);
  EXPECT_NE(parse_error({"--prompt-file", "a", "-t", "0"}).find("-t"), std::string::npos);
  EXPECT_NE(parse_error({"--prompt-file", "a", "--ctx-start", "10", "--ctx-max", "5"}).find("--ctx-start"),
            std::string::npos);
  EXPECT_NE(parse_error({"--prompt-file", "a", "--step-mul", "0.5"}).find("--step-mul must be >= 1"),
            std::string::npos);
  EXPECT_NE(parse_error({"--prompt-file", "a", "--step-mul", "nan"}).find("--step-mul"), std::string::npos);
  EXPECT_NE(parse_error({"--prompt-file", "a", "--step-incr", "0"}).find("--step-incr"), std::string::npos);
  // ctx-alloc must leave room for ctx-max + gen tokens.
  EXPECT_NE(parse_error({"--prompt-file", "a", "--ctx-start", "50", "--ctx-max", "100", "-n", "10", "--ctx-alloc", "110"})
                .find("--ctx-alloc must be greater than"),
            std::string::npos);
  EXPECT_EQ(parse({"--prompt-file", "a", "--ctx-start", "50", "--ctx-max", "100", "-n", "10", "--ctx-alloc", "111"}).ctx_alloc, 111);
  EXPECT_NE(parse_error({"--prompt-file", "a", "--backend", "metal"}).find("unknown backend 'metal'"), std::string::npos);
}

TEST(BenchParallel, ListsAndSchedule) {
  const BenchOptions o = parse({"--prompt-file", "a", "--ctx-start", "256", "-n", "8", "--parallel", "8,2,4,2"});
  // Sorted, distinct, N = 1 added as the baseline; the one frontier is --ctx-start.
  EXPECT_EQ(o.parallel, (std::vector<int>{1, 2, 4, 8}));
  EXPECT_EQ(o.ctx_max, 256);
  EXPECT_EQ(o.ctx_alloc, 256 + 8 + 1);
  EXPECT_EQ(o.rounds, 3);
  EXPECT_EQ(parse({"--prompt-file", "a", "--ctx-start", "64", "-np", "3", "--rounds", "5"}).rounds, 5);
  EXPECT_TRUE(parse({"--prompt-file", "a"}).parallel.empty());
  // Each sequence owns a slice of the text after the shared start: 32 tokens, or a quarter
  // of a short context; the text must hold the largest N's slices.
  EXPECT_EQ(parallel_tail_tokens(256), 32);
  EXPECT_EQ(parallel_tail_tokens(40), 10);
  EXPECT_EQ(parallel_tail_tokens(2), 1);
  EXPECT_EQ(parallel_prompt_tokens(o), 256 + 7 * 32);
  // Rounds rotate the order, so no N always runs first.
  EXPECT_EQ(round_order(o.parallel, 0), (std::vector<int>{1, 2, 4, 8}));
  EXPECT_EQ(round_order(o.parallel, 1), (std::vector<int>{2, 4, 8, 1}));
  EXPECT_EQ(round_order(o.parallel, 5), (std::vector<int>{2, 4, 8, 1}));
  EXPECT_EQ(parallel_csv_header(), "parallel,ctx_tokens,gen_tokens,agg_tps,ratio,ratio_min,ratio_max,cpu_agg_tps,cpu_ratio");
  EXPECT_EQ(parallel_csv_row(4, 256, 8, 3.14159, 2.0, 1.5, 2.25, 7.5, 2.5), "4,256,8,3.14,2.000,1.500,2.250,7.50,2.500");
}

TEST(BenchParallel, ClearErrors) {
  EXPECT_NE(parse_error({"--prompt-file", "a", "--parallel", "0"}).find("--parallel"), std::string::npos);
  EXPECT_NE(parse_error({"--prompt-file", "a", "--parallel", "2,,4"}).find("--parallel"), std::string::npos);
  EXPECT_NE(parse_error({"--prompt-file", "a", "--parallel", "4x"}).find("--parallel"), std::string::npos);
  EXPECT_NE(parse_error({"--prompt-file", "a", "--parallel", "1000"}).find("between 1 and 256"), std::string::npos);
  EXPECT_NE(parse_error({"--prompt-file", "a", "--parallel"}).find("missing value for --parallel"), std::string::npos);
  EXPECT_NE(parse_error({"--prompt-file", "a", "--parallel", "2", "--rounds", "0"}).find("--rounds"), std::string::npos);
  EXPECT_NE(parse_error({"--prompt-file", "a", "--parallel", "2", "--ctx-start", "64", "--ctx-max", "128"})
                .find("--parallel measures at --ctx-start"),
            std::string::npos);
}

TEST(BenchOptions, BackendAndDevice) {
  EXPECT_EQ(parse({"--prompt-file", "a"}).backend, ds4::Backend::Cpu);
  if (ds4::has_backend(ds4::Backend::Vulkan)) {
    const BenchOptions o = parse({"--prompt-file", "a", "-b", "vulkan", "--device", "1"});
    EXPECT_EQ(o.backend, ds4::Backend::Vulkan);
    EXPECT_EQ(o.device, 1);
  } else {
    EXPECT_NE(parse_error({"--prompt-file", "a", "-b", "vulkan"}).find("not available in this build"), std::string::npos);
  }
  EXPECT_NE(parse_error({"--prompt-file", "a", "--device", "-1"}).find("--device"), std::string::npos);
  EXPECT_TRUE(parse({"--list-devices"}).list_devices);  // no prompt needed to list devices
  EXPECT_EQ(parse({"--prompt-file", "a"}).cpu_moe_layers, 0);
  EXPECT_EQ(parse({"--prompt-file", "a", "--cpu-moe"}).cpu_moe_layers, INT_MAX);
  EXPECT_EQ(parse({"--prompt-file", "a", "--n-cpu-moe", "3"}).cpu_moe_layers, 3);
  EXPECT_NE(parse_error({"--prompt-file", "a", "--n-cpu-moe", "-2"}).find("--n-cpu-moe"), std::string::npos);
}

TEST(BenchFrontiers, LinearSteps) {
  BenchOptions o = parse({"--prompt-file", "a", "--ctx-start", "2048", "--ctx-max", "8192"});
  EXPECT_EQ(frontiers(o), (std::vector<int>{2048, 4096, 6144, 8192}));
  // The last step is capped at ctx-max.
  o = parse({"--prompt-file", "a", "--ctx-start", "100", "--ctx-max", "250", "--step-incr", "100"});
  EXPECT_EQ(frontiers(o), (std::vector<int>{100, 200, 250}));
  // Start equal to max: one frontier.
  o = parse({"--prompt-file", "a", "--ctx-start", "64", "--ctx-max", "64"});
  EXPECT_EQ(frontiers(o), (std::vector<int>{64}));
}

TEST(BenchFrontiers, MultiplicativeStepsRoundUp) {
  BenchOptions o = parse({"--prompt-file", "a", "--ctx-start", "1000", "--ctx-max", "4000", "--step-mul", "1.5"});
  // ceil(1000*1.5)=1500, ceil(2250)=2250, ceil(3375)=3375, ceil(5062.5) capped to 4000.
  EXPECT_EQ(frontiers(o), (std::vector<int>{1000, 1500, 2250, 3375, 4000}));
  // A factor that would not advance still moves by one token.
  o = parse({"--prompt-file", "a", "--ctx-start", "3", "--ctx-max", "6", "--step-mul", "1.01"});
  EXPECT_EQ(frontiers(o), (std::vector<int>{3, 4, 5, 6}));
  o = parse({"--prompt-file", "a", "--ctx-start", "2048", "--ctx-max", "65536", "--step-mul", "2"});
  EXPECT_EQ(frontiers(o), (std::vector<int>{2048, 4096, 8192, 16384, 32768, 65536}));
}

TEST(BenchCsv, Ds4Format) {
  EXPECT_EQ(csv_header(), "ctx_tokens,prefill_tokens,prefill_tps,gen_tokens,gen_tps,kvcache_bytes");
  // 2048 tokens in 4 s = 512 t/s; 128 tokens in 3 s = 42.666.. -> 42.67.
  EXPECT_EQ(csv_row(4096, 2048, 4.0, 128, 3.0, 926033292ull), "4096,2048,512.00,128,42.67,926033292");
  EXPECT_EQ(csv_row(64, 64, 0.0, 0, 0.0, 5), "64,64,0.00,0,0.00,5");
}

TEST(BenchGreedy, ArgmaxSkipsExcludedAndNaN) {
  const std::vector<float> l{1.0f, 5.0f, 3.0f, 5.0f};
  EXPECT_EQ(argmax_excluding(l, -1), 1);  // first of equal maxima
  EXPECT_EQ(argmax_excluding(l, 1), 3);
  EXPECT_EQ(argmax_excluding({NAN, 2.0f, NAN}, -1), 1);
  EXPECT_EQ(argmax_excluding({7.0f}, 0), -1);
  EXPECT_EQ(argmax_excluding({}, 0), -1);
  EXPECT_EQ(argmax_excluding({-INFINITY, -INFINITY}, 0), 1);
}

}  // namespace
}  // namespace ds4::bench
