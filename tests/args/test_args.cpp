// The shared command-line parser: syntax from CLI11, values, aliases, errors and --help.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "args/args.h"

namespace ds4::args {
namespace {

struct Opts {
  std::string model = "default.gguf", system = "sys";
  int ctx = 100;
  float temp = 1.0f;
  uint64_t seed = 0;
  bool verbose = false;
  std::vector<std::string> pair;
  int cpu_calls = 0;
};

class ParserTest : public ::testing::Test {
 protected:
  ParserTest() : p("prog", "prog [options]", "Does things.") {
    p.text("-m,--model", o.model, "FILE", "model file");
    p.text("--system", o.system, "TEXT", "system prompt\nsecond line");
    p.alias("-sys", "--system", true);
    p.group("Numbers");
    p.integer("-c,--ctx", o.ctx, 1, 1000, "N", "context");
    p.number("--temp", o.temp, 0.0, 2.0, false, "F", "temperature");
    p.alias("--temperature", "--temp", false);
    p.unsigned_integer("--seed", o.seed, UINT64_MAX, "N", "seed");
    p.flag("-v,--verbose", o.verbose, "talk");
    p.flag("--cpu", [this] { ++o.cpu_calls; }, "cpu");
    p.texts("--pair", o.pair, 2, "A B", "two values");
  }
  Outcome parse(const std::vector<std::string>& args) { return p.parse(args); }
  Opts o;
  Parser p;
};

TEST_F(ParserTest, ValuesAndDefaults) {
  EXPECT_FALSE(parse({}).done());
  EXPECT_EQ(o.model, "default.gguf");
  EXPECT_EQ(o.ctx, 100);
  const Outcome r = parse({"-m", "a.gguf", "--ctx=7", "--temp", "0.5", "--seed", "18446744073709551615", "-v",
                           "--cpu", "--pair", "x", "y"});
  ASSERT_FALSE(r.done()) << r.err;
  EXPECT_EQ(o.model, "a.gguf");
  EXPECT_EQ(o.ctx, 7);
  EXPECT_FLOAT_EQ(o.temp, 0.5f);
  EXPECT_EQ(o.seed, 18446744073709551615ull);
  EXPECT_TRUE(o.verbose);
  EXPECT_EQ(o.cpu_calls, 1);
  EXPECT_EQ(o.pair, (std::vector<std::string>{"x", "y"}));
}

TEST_F(ParserTest, RepeatedOptionKeepsTheLastValue) {
  ASSERT_FALSE(parse({"-c", "5", "--ctx", "9"}).done());
  EXPECT_EQ(o.ctx, 9);
  EXPECT_EQ(p.count("--ctx"), 2u);
  EXPECT_EQ(p.count("-c"), 2u);
}

TEST_F(ParserTest, AliasesAndValuesThatLookLikeOptions) {
  ASSERT_FALSE(parse({"-sys", "S", "--temperature", "1.5"}).done());
  EXPECT_EQ(o.system, "S");
  EXPECT_FLOAT_EQ(o.temp, 1.5f);
  // A value is never translated nor taken for an option.
  ASSERT_FALSE(parse({"--system", "-sys", "-m", "--temperature"}).done());
  EXPECT_EQ(o.system, "-sys");
  EXPECT_EQ(o.model, "--temperature");
  ASSERT_FALSE(parse({"-sys=T"}).done());
  EXPECT_EQ(o.system, "T");
  // A flag takes no value: the next argument is translated.
  ASSERT_FALSE(parse({"-v", "-sys", "U", "--cpu", "--temperature", "0.25"}).done());
  EXPECT_EQ(o.system, "U");
  EXPECT_FLOAT_EQ(o.temp, 0.25f);
}

TEST_F(ParserTest, UsageErrorsAreOneLineWithExitCode2) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--bogus"}, "prog: unknown option: --bogus (see prog --help)\n"},
      {{"stray"}, "prog: unexpected argument: stray (see prog --help)\n"},
      {{"--ctx"}, "prog: missing value for --ctx (see prog --help)\n"},
      {{"--ctx", "0"}, "prog: invalid value for --ctx: '0' (must be between 1 and 1000) (see prog --help)\n"},
      {{"--ctx", "12x"}, "prog: invalid value for --ctx: '12x' (expected an integer) (see prog --help)\n"},
      {{"-c", "99999999999999999999"},
       "prog: invalid value for --ctx: '99999999999999999999' (must be between 1 and 1000) (see prog --help)\n"},
      {{"--temp", "nan"}, "prog: invalid value for --temp: 'nan' (expected a number) (see prog --help)\n"},
      {{"--temp", "-1"}, "prog: invalid value for --temp: '-1' (must be in [0, 2]) (see prog --help)\n"},
      {{"--seed", "-5"}, "prog: invalid value for --seed: '-5' (expected a non-negative integer) (see prog --help)\n"},
      {{"--pair", "x"}, "prog: missing value for --pair (see prog --help)\n"},
  };
  for (const auto& [args, message] : cases) {
    const Outcome r = parse(args);
    EXPECT_EQ(r.exit_code, 2) << args[0];
    EXPECT_EQ(r.err, message);
    EXPECT_EQ(r.out, "");
  }
}

TEST_F(ParserTest, CheckRunsAfterTheValuesAndMayRefuse) {
  int seen = 0;
  const Outcome r = p.parse({"--ctx", "8"}, [&] {
    seen = o.ctx;
    throw UsageError("ctx 8 is not welcome");
  });
  EXPECT_EQ(seen, 8);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "prog: ctx 8 is not welcome (see prog --help)\n");
  p.help_command("prog --mode x --help");
  EXPECT_EQ(parse({"--bogus"}).err, "prog: unknown option: --bogus (see prog --mode x --help)\n");
}

TEST_F(ParserTest, HelpAndVersionWinOverBadValues) {
  const Outcome h = parse({"--ctx", "0", "--help"});
  EXPECT_EQ(h.exit_code, 0);
  EXPECT_EQ(h.out, p.help());
  EXPECT_EQ(h.err, "");
  const Outcome v = parse({"--version"});
  EXPECT_EQ(v.exit_code, 0);
  EXPECT_EQ(v.out, std::string("prog ") + version() + "\n");
}

TEST_F(ParserTest, HelpLayout) {
  const std::string h = p.help();
  // Descriptions start at column 26; a continuation line is indented to it.
  EXPECT_EQ(h,
            "Usage: prog [options]\n"
            "\n"
            "Does things.\n"
            "\n"
            "Options:\n"
            "  -m, --model FILE        model file\n"
            "  -sys, --system TEXT     system prompt\n"
            "                          second line\n"
            "\n"
            "Numbers:\n"
            "  -c, --ctx N             context\n"
            "      --temp F            temperature\n"
            "      --seed N            seed\n"
            "  -v, --verbose           talk\n"
            "      --cpu               cpu\n"
            "      --pair A B          two values\n"
            "\n"
            "General:\n"
            "  -h, --help              Show this help and exit.\n"
            "      --version           Show the version and exit.\n"
            "\n"
            "Exit status: 0 success, 1 failure, 2 bad command line.\n");
}

TEST(ParseValues, Ranges) {
  EXPECT_EQ(Parser::parse_integer("-3", -5, 5), -3);
  EXPECT_THROW(Parser::parse_integer("", 0, 5), UsageError);
  EXPECT_THROW(Parser::parse_integer(" 3", 0, 5), UsageError);
  EXPECT_THROW(Parser::parse_integer("6", 0, 5), UsageError);
  EXPECT_EQ(Parser::parse_unsigned("5", 5), 5u);
  EXPECT_THROW(Parser::parse_unsigned("+5", 5), UsageError);
  EXPECT_DOUBLE_EQ(Parser::parse_number("1", 0, 1, true), 1.0);
  EXPECT_THROW(Parser::parse_number("0", 0, 1, true), UsageError);
  EXPECT_THROW(Parser::parse_number("inf", 0, 1e9, false), UsageError);
}

}  // namespace
}  // namespace ds4::args
