// Session behaviour: snapshots, prefix reuse, rewind, state reset, errors, memory.
#include <cstring>
#include <sstream>

#include "gguf/gguf.h"
#include "oracle_util.h"

using namespace ds4;
using namespace ds4::test;

namespace {

class SessionTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    DS4_SKIP_WITHOUT_ORACLE(GetParam());
    o_ = std::make_unique<Oracle>(GetParam());
    path_ = oracle_gguf(GetParam(), "f32");
    ASSERT_TRUE(file_exists(path_)) << path_ << " is missing (written by the convert_oracle_ggufs fixture)";
  }
  Engine& engine() { return engine_for(path_, true); }
  std::vector<int32_t> prefix(int k) const { return {o_->tokens.begin(), o_->tokens.begin() + k}; }
  std::unique_ptr<Oracle> o_;
  std::string path_;
};

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

// Save after K tokens, load into a fresh session, continue: bit-identical logits.
TEST_P(SessionTest, SnapshotRoundTripIsBitIdentical) {
  Engine& e = engine();
  const int n = o_->n(), ctx = n + 8;
  for (int k : {1, 5, 37, n - 9}) {
    auto a = e.new_session(ctx);
    a->sync(prefix(k));
    auto bytes = a->save_snapshot();
    // Size follows the docs/kvcache.md layout exactly.
    const ModelConfig& c = e.config();
    size_t want = 4 * (13 + k) + 4ull * c.vocab + 8ull * c.n_layers;
    const int raw_live = std::min({k, c.window, ctx});
    for (int il = 0; il < c.n_layers; ++il) {
      const int r = c.compress_ratios[il];
      want += 4ull * raw_live * c.head_dim;
      if (r) {
        const int cc = r == 4 ? 2 : 1;
        want += 4ull * (k / r) * c.head_dim + 2 * 4ull * (cc * r) * (cc * c.head_dim);
      }
      if (r == 4) want += 4ull * (k / 4) * c.index_head_dim + 2 * 4ull * 8 * 2 * c.index_head_dim;
    }
    EXPECT_EQ(bytes.size(), want) << "k=" << k;

    auto b = e.new_session(ctx);
    b->load_snapshot(bytes.data(), bytes.size());
    EXPECT_EQ(b->tokens(), a->tokens());
    EXPECT_TRUE(same_bits(a->logits(), b->logits()));
    // Stream and FILE* forms carry the same bytes.
    std::stringstream ss;
    a->save_snapshot(ss);
    EXPECT_EQ(ss.str(), std::string(bytes.begin(), bytes.end()));
    std::FILE* f = std::tmpfile();
    ASSERT_NE(f, nullptr);
    a->save_snapshot(f);
    std::rewind(f);
    auto c2 = e.new_session(ctx);
    c2->load_snapshot(f);
    std::fclose(f);
    auto d = e.new_session(ctx);
    d->load_snapshot(ss);
    for (int i = k; i < n; ++i) {
      a->eval(o_->tokens[i]);
      b->eval(o_->tokens[i]);
      c2->eval(o_->tokens[i]);
      d->eval(o_->tokens[i]);
      ASSERT_TRUE(same_bits(a->logits(), b->logits())) << "k=" << k << " pos " << i;
      ASSERT_TRUE(same_bits(a->logits(), c2->logits())) << "k=" << k << " pos " << i;
      ASSERT_TRUE(same_bits(a->logits(), d->logits())) << "k=" << k << " pos " << i;
    }
  }
}

// Equal prefixes give equal payloads, however the state got there (frontier rows of the
// current window that are not yet written are canonical, docs/kvcache.md).
TEST_P(SessionTest, SnapshotIsCanonical) {
  Engine& e = engine();
  const int k = 37;  // k+1..k+2 complete no compressed row in any config used here
  auto a = e.new_session(64);
  a->sync(prefix(k));
  auto b = e.new_session(64);
  b->sync(prefix(k + 2));
  ASSERT_TRUE(b->can_rewind_cheaply(k));
  b->rewind(k);
  EXPECT_EQ(a->save_snapshot(), b->save_snapshot());
  // A prompt that ends on a window boundary (all state rows of the window written).
  auto c = e.new_session(64);
  c->sync(prefix(32));
  auto d = e.new_session(64);
  d->sync(prefix(31));
  d->eval(o_->tokens[31]);
  EXPECT_EQ(c->save_snapshot(), d->save_snapshot());
}

TEST_P(SessionTest, BadSnapshotsAreRejected) {
  Engine& e = engine();
  auto a = e.new_session(64);
  a->sync(prefix(9));
  auto good = a->save_snapshot();
  auto expect_bad = [&](std::vector<uint8_t> bytes, const char* what) {
    auto b = e.new_session(64);
    b->sync(prefix(3));
    try {
      b->load_snapshot(bytes.data(), bytes.size());
      ADD_FAILURE() << what << ": accepted";
    } catch (const Error& err) {
      EXPECT_EQ(err.kind(), Error::Kind::BadSnapshot) << what << ": " << err.what();
    }
    EXPECT_EQ(b->n_tokens(), 3) << what << ": a failed load must leave the session as it was";
  };
  expect_bad(std::vector<uint8_t>(good.begin(), good.begin() + good.size() / 2), "truncated");
  expect_bad(std::vector<uint8_t>(good.begin(), good.begin() + 20), "header only");
  auto trailing = good;
  trailing.push_back(0);
  expect_bad(trailing, "trailing byte");
  auto magic = good;
  magic[0] ^= 1;
  expect_bad(magic, "magic");
  auto layers = good;
  layers[8 * 4] += 1;
  expect_bad(layers, "layer count");
  auto tok = good;
  uint32_t big = 0x7fffffff;
  std::memcpy(tok.data() + 13 * 4, &big, 4);
  expect_bad(tok, "token id");
  // A snapshot from a larger context does not fit a smaller session.
  auto big_ctx = e.new_session(100);
  big_ctx->sync(prefix(9));
  auto bytes = big_ctx->save_snapshot();
  expect_bad(bytes, "larger context");
}

// sync() reuses the common prefix and gives the same logits as a fresh evaluation.
TEST_P(SessionTest, SyncReusesPrefixAndMatchesFresh) {
  Engine& e = engine();
  const int n = o_->n();
  auto s = e.new_session(n + 8);
  EXPECT_EQ(s->sync(prefix(40)), 0);
  EXPECT_EQ(s->sync(prefix(n)), 40);
  auto fresh = e.new_session(n + 8);
  fresh->sync(prefix(n));
  EXPECT_TRUE(same_bits(s->logits(), fresh->logits()));
  EXPECT_EQ(s->sync(prefix(n)), n);  // identical: nothing evaluated
  // A diverging suffix: reuse is whatever the state allows, the numbers must be fresh ones.
  std::vector<int32_t> alt = prefix(n - 1);
  alt.push_back((o_->tokens[n - 1] + 1) % o_->vocab);
  int reused = s->sync(alt);
  EXPECT_TRUE(reused == n - 1 || reused == 0) << reused;
  auto fresh2 = e.new_session(n + 8);
  fresh2->sync(alt);
  EXPECT_TRUE(same_bits(s->logits(), fresh2->logits()));
}

// A new prompt on a reused session starts from reset compressor state (the reference
// leaks the previous prompt's window into a < 4 token prompt; we must not).
TEST_P(SessionTest, NewPromptResetsCompressorState) {
  Engine& e = engine();
  auto s = e.new_session(128);
  s->sync(prefix(o_->n()));
  std::vector<int32_t> other = {o_->tokens[5], o_->tokens[6], o_->tokens[7]};
  EXPECT_EQ(s->sync(other), 0);
  auto fresh = e.new_session(128);
  fresh->sync(other);
  EXPECT_TRUE(same_bits(s->logits(), fresh->logits()));
  for (int i = 0; i < 6; ++i) {
    s->eval(o_->tokens[10 + i]);
    fresh->eval(o_->tokens[10 + i]);
    ASSERT_TRUE(same_bits(s->logits(), fresh->logits())) << i;
  }
  s->reset();
  EXPECT_EQ(s->n_tokens(), 0);
  EXPECT_TRUE(s->logits().empty());
}

// Rewind: cheap where allowed, re-evaluation otherwise; both continue like a fresh run.
TEST_P(SessionTest, RewindMatchesFresh) {
  Engine& e = engine();
  const int n = o_->n();
  auto s = e.new_session(n + 8);
  s->sync(prefix(n));
  // The documented rule: at most rewind_tokens positions back (completed compressor rows
  // do not matter), or to the start.
  const int R = e.options().rewind_tokens;
  auto rule = [&](int pos) { return pos == n || pos == 0 || n - pos <= R; };
  for (int pos = 0; pos <= n; ++pos) EXPECT_EQ(s->can_rewind_cheaply(pos), rule(pos)) << "pos " << pos;
  for (int pos : {n - 1, n - 3, n - 20, 2}) {
    s->rewind(pos);
    EXPECT_EQ(s->n_tokens(), pos);
    auto fresh = e.new_session(n + 8);
    fresh->sync(prefix(pos));
    EXPECT_TRUE(same_bits(s->logits(), fresh->logits())) << "pos " << pos;
    s->eval(o_->tokens[pos]);
    fresh->eval(o_->tokens[pos]);
    EXPECT_TRUE(same_bits(s->logits(), fresh->logits())) << "pos " << pos << " +1";
    s->sync(prefix(n));
  }
  EXPECT_THROW(s->rewind(n + 1), Error);
}

TEST_P(SessionTest, BadInputsGiveErrors) {
  Engine& e = engine();
  auto s = e.new_session(16);
  try {
    s->sync({1, 2, o_->vocab});
    ADD_FAILURE() << "token id >= vocab accepted";
  } catch (const Error& err) {
    EXPECT_EQ(err.kind(), Error::Kind::InvalidArgument);
    EXPECT_NE(std::string(err.what()).find("out of range"), std::string::npos) << err.what();
  }
  EXPECT_THROW(s->eval(-1), Error);
  try {
    s->sync(prefix(17));
    ADD_FAILURE() << "context overflow accepted";
  } catch (const Error& err) {
    EXPECT_EQ(err.kind(), Error::Kind::ContextOverflow);
  }
  s->sync(prefix(16));
  try {
    s->eval(o_->tokens[16]);
    ADD_FAILURE() << "eval past the context accepted";
  } catch (const Error& err) {
    EXPECT_EQ(err.kind(), Error::Kind::ContextOverflow);
  }
  EXPECT_THROW(e.new_session(0), Error);
  EXPECT_THROW(s->mtp_eval(nullptr, 1, 0), Error);
}

TEST_P(SessionTest, CancelStopsAtAChunkBoundary) {
  Engine& e = engine();
  auto s = e.new_session(o_->n() + 1);
  std::atomic<bool> flag{false};
  s->set_cancel_flag(&flag);
  SyncOptions so;
  so.chunk = 8;
  int calls = 0;
  so.progress = [&](int done, int total) {
    ++calls;
    EXPECT_LE(done, total);
    if (done >= 16) flag = true;
  };
  try {
    s->sync(o_->tokens, so);
    ADD_FAILURE() << "not cancelled";
  } catch (const Error& err) {
    EXPECT_EQ(err.kind(), Error::Kind::Cancelled);
  }
  EXPECT_EQ(s->n_tokens(), 16);
  EXPECT_EQ(calls, 2);
  // The kept prefix is a valid state: finishing gives the uncancelled numbers.
  flag = false;
  EXPECT_EQ(s->sync(o_->tokens), 16);
  auto fresh = e.new_session(o_->n() + 1);
  fresh->sync(o_->tokens);
  EXPECT_TRUE(same_bits(s->logits(), fresh->logits()));
}

// Session memory against the docs/forward-pass.md state table (raw window, compressed rows ctx/r+2, indexer rows,
// compressor states), plus the engine's small rewind slack.
TEST_P(SessionTest, MemoryEstimateFollowsSpecFormula) {
  Engine& e = engine();
  const ModelConfig& c = e.config();
  for (int ctx : {64, 100, 4096}) {
    uint64_t spec = 0;
    for (int il = 0; il < c.n_layers; ++il) {
      const int r = c.compress_ratios[il];
      spec += 4ull * std::min(ctx, c.window) * c.head_dim;
      if (r) {
        const int cc = r == 4 ? 2 : 1;
        spec += 4ull * (ctx / r + 2) * c.head_dim + 2 * 4ull * cc * r * cc * c.head_dim;
      }
      if (r == 4) spec += 4ull * (ctx / 4 + 2) * c.index_head_dim + 2 * 4ull * 8 * 2 * c.index_head_dim;
    }
    const uint64_t got = e.session_memory_bytes(ctx);
    std::printf("[%s] ctx %d: engine %llu bytes, spec formula %llu bytes\n", o_->name.c_str(), ctx,
                static_cast<unsigned long long>(got), static_cast<unsigned long long>(spec));
    EXPECT_GE(got, spec);
    // Extra: rewind slack rows per layer (+MTP ring), logits/hidden history and the
    // compressor undo logs (per step one state row, plus the 4 shifted rows at ratio 4).
    const uint64_t R = e.options().rewind_tokens;
    uint64_t undo = 0;
    for (int il = 0; il < c.n_layers; ++il) {
      const int r = c.compress_ratios[il];
      if (r) undo += R * 2 * 4ull * (r == 4 ? 5 * 2 * c.head_dim : c.head_dim);
      if (r == 4) undo += R * 2 * 4ull * 5 * 2 * c.index_head_dim;
    }
    const uint64_t slack = 4ull * R * c.head_dim * (c.n_layers + 2) +
                           4ull * (R + 1) * (static_cast<uint64_t>(c.vocab) + static_cast<uint64_t>(c.hc) * c.dim) +
                           4ull * std::min(ctx, c.window) * c.head_dim + undo;
    EXPECT_LE(got, spec + slack);
  }
}

// Per-pass timing: chunks of several tokens count as prefill, single tokens as decode; the
// parts of a pass add up to no more than the pass.
TEST_P(SessionTest, StatsCountPassesAndTokens) {
  Engine& e = engine();
  const int n_layers = e.config().n_layers;
  auto s = e.new_session(o_->n() + 8);
  EXPECT_EQ(s->stats().prefill.passes, 0);
  EXPECT_EQ(s->stats().decode.layer_s.size(), static_cast<size_t>(n_layers));
  SyncOptions opt;
  opt.chunk = 4;
  s->sync(prefix(10), opt);  // chunks of 4, 4, 2
  s->eval(o_->tokens[10]);
  s->eval(o_->tokens[11]);
  const EvalStats& st = s->stats();
  EXPECT_EQ(st.prefill.passes, 3);
  EXPECT_EQ(st.prefill.tokens, 10);
  EXPECT_EQ(st.decode.passes, 2);
  EXPECT_EQ(st.decode.tokens, 2);
  for (const EvalStats::Phase* ph : {&st.prefill, &st.decode}) {
    ASSERT_EQ(ph->layer_s.size(), static_cast<size_t>(n_layers));
    double parts = ph->embed_s + ph->head_s;
    for (double t : ph->layer_s) {
      EXPECT_GE(t, 0.0);
      parts += t;
    }
    EXPECT_GT(ph->total_s, 0.0);
    EXPECT_LE(parts, ph->total_s * (1 + 1e-9) + 1e-9);
  }
  EXPECT_GT(e.scratch_bytes(), 0u);
  EXPECT_GE(e.threads(), 1);
  s->reset_stats();
  EXPECT_EQ(s->stats().decode.passes, 0);
  EXPECT_EQ(s->stats().prefill.total_s, 0.0);
  EXPECT_EQ(s->stats().prefill.layer_s.size(), static_cast<size_t>(n_layers));
}

// The per-layer split of a pass: the attention and indexer stages are parts of their layer's
// time, the attention runs in every layer, the indexer only in ratio-4 layers and only once
// a position sees more compressed rows than top-k; the rest (weights) is never empty.
TEST_P(SessionTest, StatsSplitLayersIntoAttentionIndexerAndWeights) {
  Engine& e = engine();
  const ModelConfig& c = e.config();
  const int n_layers = c.n_layers;
  // The first position whose indexer scores: (pos + 1) / 4 > index_topk.
  const int first_indexed = 4 * (c.index_topk + 1) - 1;
  ASSERT_LT(first_indexed + 4, o_->n()) << "the oracle prompt is too short to engage the indexer";
  auto s = e.new_session(o_->n() + 8);
  SyncOptions opt;
  opt.chunk = 4;
  auto check = [&](const EvalStats::Phase& ph, bool indexed, const char* what) {
    ASSERT_EQ(ph.attention_s.size(), static_cast<size_t>(n_layers)) << what;
    ASSERT_EQ(ph.indexer_s.size(), static_cast<size_t>(n_layers)) << what;
    for (int l = 0; l < n_layers; ++l) {
      const double layer = ph.layer_s[l], att = ph.attention_s[l], idx = ph.indexer_s[l];
      EXPECT_GT(att, 0.0) << what << " layer " << l;
      if (indexed && c.compress_ratios[l] == 4) EXPECT_GT(idx, 0.0) << what << " layer " << l;
      else EXPECT_EQ(idx, 0.0) << what << " layer " << l;
      EXPECT_LT(att + idx, layer) << what << " layer " << l;  // the weights take the rest
    }
  };
  s->sync(prefix(first_indexed - 4), opt);  // no position reaches the indexer yet
  check(s->stats().prefill, false, "prefill before the indexer");
  s->eval(o_->tokens[first_indexed - 4]);
  check(s->stats().decode, false, "decode before the indexer");
  s->reset_stats();
  s->sync(prefix(first_indexed + 3), opt);
  s->eval(o_->tokens[first_indexed + 3]);
  check(s->stats().prefill, true, "prefill with the indexer");
  check(s->stats().decode, true, "decode with the indexer");
}

// decode_read_bytes against the file's tensor table: every matrix of the layer (routed
// experts n_used/n_experts of theirs, the hash table one row, the indexer only once it
// runs), plus the KV rows a token at `pos` attends to; the head adds one embedding row.
TEST_P(SessionTest, DecodeReadBytesFollowTheTensorTable) {
  Engine& e = engine();
  const ModelConfig& c = e.config();
  const auto f = gguf::File::open(path_);
  for (int64_t pos : {0, 5, 40, 300, 5000}) {
    for (int il = 0; il < c.n_layers; ++il) {
      const std::string pre = "blk." + std::to_string(il) + ".";
      const int r = c.compress_ratios[il];
      const int64_t n_comp = r ? (pos + 1) / r : 0;
      const bool indexer_runs = r == 4 && n_comp > c.index_topk;
      uint64_t want = 0;
      for (const gguf::TensorInfo& t : f->tensors()) {
        if (t.name.rfind(pre, 0) != 0) continue;
        const std::string rest = t.name.substr(pre.size());
        if (rest.find("tid2eid") != std::string::npos) {
          want += 4ull * c.n_experts_used;
          continue;
        }
        if (t.dims.size() < 2 || t.dims[1] <= 1 || rest.find("_ape") != std::string::npos) continue;  // vectors
        if (rest.rfind("indexer.", 0) == 0 && !indexer_runs) continue;
        if (rest.find("_exps.") != std::string::npos) {
          want += t.nbytes / c.n_experts * c.n_experts_used;
          continue;
        }
        want += t.nbytes;
      }
      const uint64_t row = 4ull * c.head_dim;
      want += std::min<int64_t>(pos + 1, c.window) * row;
      if (r == 128 || (r != 0 && r != 4)) want += n_comp * row;
      if (r == 4) {
        want += std::min<int64_t>(n_comp, c.index_topk) * row;
        if (indexer_runs) want += n_comp * 4ull * c.index_head_dim;
      }
      EXPECT_EQ(e.decode_read_bytes(il, pos), want) << "layer " << il << " pos " << pos;
    }
    const auto* out = f->find_tensor("output.weight");
    const auto* hc = f->find_tensor("output_hc_fn.weight");
    const auto* emb = f->find_tensor("token_embd.weight");
    ASSERT_TRUE(out && hc && emb);
    EXPECT_EQ(e.decode_read_bytes(c.n_layers, pos), out->nbytes + hc->nbytes + emb->nbytes / c.vocab);
  }
  EXPECT_EQ(e.decode_read_bytes(-1, 0), 0u);
  EXPECT_EQ(e.decode_read_bytes(c.n_layers + 1, 0), 0u);
}

INSTANTIATE_TEST_SUITE_P(Session, SessionTest, ::testing::Values("tiny-a", "tiny-q"), [](const auto& info) {
  std::string s = info.param;
  std::replace(s.begin(), s.end(), '-', '_');
  return s;
});

// Model files that are damaged or inconsistent fail at open with a clear error.
TEST(ModelFile, TruncatedAndInconsistentFilesAreRejected) {
  const std::string src = oracle_gguf("tiny-a", "f32");
  ASSERT_TRUE(file_exists(src)) << src;
  auto bytes = read_bin<uint8_t>(src);
  const std::string dir = std::string(DS4_TEST_TMP) + "/model";
  std::system(("mkdir -p " + dir).c_str());
  const std::string trunc = dir + "/truncated.gguf";
  {
    std::ofstream f(trunc, std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size() * 2 / 3));
  }
  try {
    Engine::open(trunc);
    ADD_FAILURE() << "truncated file opened";
  } catch (const Error& err) {
    EXPECT_EQ(err.kind(), Error::Kind::BadModel);
  }
  EXPECT_THROW(Engine::open(dir + "/does-not-exist.gguf"), Error);

  // Same file with one key dropped, one tensor dropped, one value made inconsistent.
  auto in = gguf::File::open(src);
  auto rewrite = [&](const std::string& out, const std::string& skip_key, const std::string& skip_tensor,
                     const std::string& bad_key) {
    gguf::Writer w;
    for (const auto& [k, v] : in->metadata()) {
      if (k == skip_key || k == "general.alignment") continue;
      if (k == bad_key) w.set(k, gguf::Value::make_u32(7));
      else w.set(k, v);
    }
    for (const auto& t : in->tensors()) {
      if (t.name == skip_tensor) continue;
      w.add_tensor(t.name, t.type, t.dims, std::vector<uint8_t>(t.data, t.data + t.nbytes));
    }
    w.write(out);
  };
  auto expect_bad = [&](const std::string& file, const std::string& needle) {
    try {
      Engine::open(file);
      ADD_FAILURE() << file << " opened";
    } catch (const Error& err) {
      EXPECT_EQ(err.kind(), Error::Kind::BadModel);
      EXPECT_NE(std::string(err.what()).find(needle), std::string::npos) << err.what();
    }
  };
  rewrite(dir + "/nokey.gguf", "deepseek4.attention.sliding_window", "", "");
  expect_bad(dir + "/nokey.gguf", "deepseek4.attention.sliding_window");
  rewrite(dir + "/notensor.gguf", "", "blk.3.attn_compressor_kv.weight", "");
  expect_bad(dir + "/notensor.gguf", "blk.3.attn_compressor_kv.weight");
  rewrite(dir + "/badshape.gguf", "", "", "deepseek4.attention.q_lora_rank");
  expect_bad(dir + "/badshape.gguf", "attn_q_a");
  // The rewritten-but-intact file still opens (so the failures above are the edits).
  rewrite(dir + "/intact.gguf", "", "", "");
  EXPECT_NO_THROW(Engine::open(dir + "/intact.gguf"));
}
