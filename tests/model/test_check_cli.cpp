// The `ds4` check mode (binary) against the oracle, and its error handling; MTP sidecar.
#include <sys/wait.h>

#include <cstdlib>
#include <cstring>

#include "oracle_util.h"

using namespace ds4;
using namespace ds4::test;

namespace {

int run(const std::string& cmd) {
  int rc = std::system((cmd + " 2>/dev/null").c_str());
  if (rc == -1 || !WIFEXITED(rc)) return -1;  // a signal is a failure in itself
  return WEXITSTATUS(rc);
}

std::string bin(const char* name) { return std::string(DS4_BIN_DIR) + "/" + name; }
std::string tmp(const std::string& name) {
  std::system((std::string("mkdir -p ") + DS4_TEST_TMP + "/model").c_str());
  return std::string(DS4_TEST_TMP) + "/model/" + name;
}

}  // namespace

TEST(CheckCli, DecodeFromMatchesOracle) {
  Oracle o("tiny-a");
  const std::string model = oracle_gguf("tiny-a", "f32");
  ASSERT_TRUE(file_exists(model)) << model;
  const std::string out = tmp("cli_k37.bin");
  ASSERT_EQ(run(bin("ds4") + " -m " + model + " --tokens-file " + o.dir + "/tokens.json --dump-logits " + out +
                " --decode-from 37 --no-qat-sim --threads 1 --chunk 7"),
            0);
  auto got = read_bin<float>(out);
  auto ref = o.f32("logits_decode_k37_noqat.bin");
  ASSERT_EQ(got.size(), ref.size());
  RowStats s = compare_rows(got.data(), ref.data(), static_cast<int>(ref.size() / o.vocab), o.vocab);
  EXPECT_LE(s.max_rel, 1e-4) << describe(s);
  EXPECT_EQ(s.argmax_mismatch, 0);

  // --dump-hidden: [layer][position][hc][dim]; its last layer is hidden_prefill_noqat.
  const std::string hid = tmp("cli_hidden.bin");
  ASSERT_EQ(run(bin("ds4") + " -m " + model + " --tokens-file " + o.dir + "/tokens.json --dump-hidden " + hid +
                " --no-qat-sim"),
            0);
  auto h = read_bin<float>(hid);
  auto href = o.f32("hidden_prefill_noqat.bin");
  ASSERT_EQ(h.size(), href.size() * o.n_layers);
  RowStats hs = compare_rows(h.data() + (o.n_layers - 1) * href.size(), href.data(), o.n(), static_cast<int>(o.hcD()));
  EXPECT_LE(hs.max_abs, 1e-3) << describe(hs);

  // MTP with the oracle's own hidden states.
  const std::string mtp = tmp("cli_mtp.bin");
  ASSERT_EQ(run(bin("ds4") + " -m " + model + " --tokens-file " + o.dir + "/tokens.json --dump-mtp-logits " + mtp +
                " --mtp-hidden " + o.dir + "/hidden_prefill_noqat.bin --no-qat-sim"),
            0);
  auto m = read_bin<float>(mtp);
  auto mref = o.f32("mtp_logits_prefill_noqat.bin");
  ASSERT_EQ(m.size(), mref.size());
  EXPECT_LE(compare_rows(m.data(), mref.data(), o.n() - 1, o.vocab).max_rel, 1e-4);
}

TEST(CheckCli, ErrorsExitNonZero) {
  Oracle o("tiny-a");
  const std::string model = oracle_gguf("tiny-a", "f32");
  ASSERT_TRUE(file_exists(model)) << model;
  const std::string out = tmp("cli_err.bin");
  const std::string bad_tokens = tmp("bad_tokens.json");
  {
    std::ofstream f(bad_tokens);
    f << "{\"tokens\": [1, 2, 99999]}";
  }
  const std::string not_json = tmp("not_json.json");
  {
    std::ofstream f(not_json);
    f << "[1, 2,";
  }
  EXPECT_EQ(run(bin("ds4") + " -m " + model + " --tokens-file " + bad_tokens + " --dump-logits " + out), 1);
  EXPECT_EQ(run(bin("ds4") + " -m " + model + " --tokens-file " + not_json + " --dump-logits " + out), 1);
  EXPECT_EQ(run(bin("ds4") + " -m " + model + " --tokens-file /nonexistent.json --dump-logits " + out), 1);
  EXPECT_EQ(run(bin("ds4") + " -m /nonexistent.gguf --tokens-file " + o.dir + "/tokens.json --dump-logits " + out), 1);
  EXPECT_EQ(run(bin("ds4") + " -m " + model + " --tokens-file " + o.dir + "/tokens.json --dump-logits " + out +
                " --decode-from 0"),
            1);
  EXPECT_EQ(run(bin("ds4") + " -m " + model + " --tokens-file " + o.dir + "/tokens.json --dump-logits " + out +
                " --ctx 10"),
            1);
  EXPECT_EQ(run(bin("ds4") + " -m " + model + " --tokens-file " + o.dir + "/tokens.json --bogus"), 2);
}

// The MTP block from a sidecar GGUF equals the one stored in the main file.
TEST(CheckCli, MtpSidecarEqualsMainFile) {
  Oracle o("tiny-a");
  const std::string model = oracle_gguf("tiny-a", "f32");
  ASSERT_TRUE(file_exists(model)) << model;
  const std::string main_only = tmp("tiny-a-nomtp.gguf"), sidecar = tmp("tiny-a-mtp.gguf");
  ASSERT_EQ(run(bin("ds4-quantize") + " --hf " + o.dir + " --out " + main_only + " --recipe f32 --mtp-out " + sidecar),
            0);
  EngineOptions opt;
  opt.threads = 1;
  auto plain = Engine::open(main_only, opt);
  EXPECT_FALSE(plain->has_mtp());
  opt.mtp_path = sidecar;
  auto with = Engine::open(main_only, opt);
  ASSERT_TRUE(with->has_mtp());
  Engine& ref = engine_for(model, true);
  auto h = o.f32("hidden_prefill.bin");
  auto s1 = with->new_session(o.n());
  auto s2 = ref.new_session(o.n());
  for (int j = 0; j < 20; ++j) {
    auto a = s1->mtp_eval(h.data() + j * o.hcD(), o.tokens[j + 1], j);
    auto b = s2->mtp_eval(h.data() + j * o.hcD(), o.tokens[j + 1], j);
    ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * 4)) << j;
  }
  // The main model is unaffected by where the MTP block lives.
  auto m1 = with->new_session(o.n());
  auto m2 = ref.new_session(o.n());
  m1->sync(o.tokens);
  m2->sync(o.tokens);
  EXPECT_EQ(0, std::memcmp(m1->logits().data(), m2->logits().data(), o.vocab * 4));
  EXPECT_THROW(plain->new_session(8)->mtp_eval(h.data(), 1, 0), Error);
}
