// ds4: the chat CLI program (one-shot, REPL, diagnostics).
#include "grammar/constraint.h"
#include "grammar/sampling.h"
#include "ds4_cli.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <memory>

#include "gguf/gguf.h"
#include "text/tokenizer.h"

namespace ds4::cli {

namespace {

bool file_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

void print_missing_model(const std::string& path) {
  std::fprintf(stderr,
               "ds4: model file not found: %s\n"
               "ds4: download DeepSeek V4 Flash (about 81 GB) with:\n"
               "ds4:     ./download_model.sh q2-imatrix\n"
               "ds4: which links it as ./ds4flash.gguf; or pass another GGUF with -m FILE.\n",
               path.c_str());
}

// The tokenizer comes from the model's own GGUF metadata.
std::unique_ptr<text::Tokenizer> load_tokenizer(const std::string& path) {
  std::unique_ptr<gguf::File> file = gguf::File::open(path);
  if (!file->has("tokenizer.ggml.tokens") || !file->has("tokenizer.ggml.merges")) {
    throw text::TokenizerError(path + " has no tokenizer (tokenizer.ggml.tokens/merges missing)");
  }
  return std::make_unique<text::Tokenizer>(*file);
}

void print_inspect(const Engine& engine, const std::string& path) {
  const ModelConfig& c = engine.config();
  std::printf("model: %s\n", path.c_str());
  std::printf("name: %s\n", c.name.c_str());
  std::printf("layers: %d  dim: %d  vocab: %d  heads: %d x %d (rope %d)\n", c.n_layers, c.dim,
              c.vocab, c.n_heads, c.head_dim, c.rope_dim);
  std::printf("experts: %d routed (%d used), %d shared, inter dim %d, %d hash layers\n",
              c.n_experts, c.n_experts_used, c.n_shared_experts, c.moe_inter_dim,
              c.n_hash_layers);
  std::printf("attention window: %d  hyper-connections: %d\n", c.window, c.hc);
  std::printf("context limit: %lld  MTP: %s\n", static_cast<long long>(engine.context_limit()),
              engine.has_mtp() ? "yes" : "no");
}

int run_one_shot(Engine& engine, const text::Tokenizer& tok, const CliOptions& opt) {
  const ThinkMode eff = effective_think_mode(opt.think, opt.ctx);
  ChatRenderer renderer(tok);
  const std::vector<int32_t> prompt = renderer.one_shot(*opt.prompt, opt.system, eff);
  std::unique_ptr<Session> session = engine.new_session(opt.ctx);
  // A pre-rendered prompt decides its own mode by how it ends.
  const bool thinking = prompt.empty() ? eff != ThinkMode::None
                                       : prompt.back() == tok.think_open_id();
  if (static_cast<int64_t>(prompt.size()) >= opt.ctx) {
    std::fprintf(stderr, "ds4: the prompt has %zu tokens; it does not fit --ctx %d\n",
                 prompt.size(), opt.ctx);
    return 1;
  }

  install_sigint_handler();
  sample::Sampler sampler(opt.sampling);
  const bool styled = opt.color && isatty(STDOUT_FILENO);
  ReplyPrinter printer(stdout, styled, thinking);
  text::StreamDecoder decoder(tok);
  GenerateOptions g;
  g.max_tokens = opt.n_predict;
  g.eos = tok.eos_id();
  g.cancel = &interrupt_flag();
  g.progress = isatty(STDERR_FILENO);
  g.on_token = [&](int32_t t) { printer.write(decoder.push(t)); };
  if (opt.verbose) g.on_prefilled = log_reuse;
  g.engine = &engine;
  g.spec = spec::Options{opt.mtp_draft, opt.mtp_adaptive};
  spec::Stats spec_stats;
  g.spec_stats = &spec_stats;
  if (!opt.grammar.empty()) {
    g.grammar = grammar::compile_cached(opt.grammar, grammar::vocabulary_of(tok));
    g.thinking = thinking;
    g.think_close = tok.think_close_id();
  }
  std::vector<int32_t> reply;
  const TurnStats st = generate(*session, prompt, sampler, g, reply);
  printer.write(decoder.flush());
  printer.finish();
  if (st.interrupted) std::fputs("ds4: interrupted\n", stderr);
  std::fprintf(stderr, "%s\n", speed_summary(st).c_str());
  if (opt.mtp_draft > 0) {
    std::fprintf(stderr, "ds4: mtp: %lld verify passes, %lld single steps, drafted %lld, accepted %lld (%.1f%%)\n",
                 static_cast<long long>(spec_stats.verifies), static_cast<long long>(spec_stats.singles),
                 static_cast<long long>(spec_stats.drafted), static_cast<long long>(spec_stats.accepted),
                 100.0 * spec_stats.acceptance());
  }
  return st.interrupted ? 130 : 0;
}

int run_dump_logprobs(Engine& engine, const text::Tokenizer& tok, const CliOptions& opt) {
  const ThinkMode eff = effective_think_mode(opt.think, opt.ctx);
  const std::vector<int32_t> prompt = ChatRenderer(tok).one_shot(*opt.prompt, opt.system, eff);
  std::unique_ptr<Session> session = engine.new_session(opt.ctx);
  std::FILE* f = std::fopen(opt.dump_logprobs_path.c_str(), "wb");
  if (!f) {
    std::fprintf(stderr, "ds4: cannot write %s\n", opt.dump_logprobs_path.c_str());
    return 1;
  }
  write_logprobs_json(f, *session, tok, prompt, opt.logprobs_top_k, opt.n_predict, tok.eos_id());
  if (std::fclose(f) != 0) {
    std::fprintf(stderr, "ds4: writing %s failed\n", opt.dump_logprobs_path.c_str());
    return 1;
  }
  return 0;
}

}  // namespace

int run_cli(int argc, char** argv) {
  std::vector<std::string> args(argv + (argc > 0 ? 1 : 0), argv + argc);
  ParseResult parsed = parse_args(args);
  if (parsed.exit_code >= 0) {
    std::fputs(parsed.message.c_str(), parsed.exit_code == 0 ? stdout : stderr);
    return parsed.exit_code;
  }
  CliOptions& opt = parsed.options;
  if (!file_exists(opt.model_path)) {
    print_missing_model(opt.model_path);
    return 1;
  }
  if (!opt.mtp_path.empty() && !file_exists(opt.mtp_path)) {
    std::fprintf(stderr, "ds4: MTP file not found: %s (./download_model.sh mtp)\n",
                 opt.mtp_path.c_str());
    return 1;
  }

  try {
    if (opt.dump_tokens) {
      // Only the tokenizer: the weights are never touched.
      const std::unique_ptr<text::Tokenizer> tok = load_tokenizer(opt.model_path);
      const std::vector<int> ids = tok->encode(*opt.prompt, /*parse_special=*/true);
      std::fputs(text::format_token_dump(*tok, ids).c_str(), stdout);
      return 0;
    }

    EngineOptions eo = opt.engine_options();
    eo.mtp_path = opt.mtp_path;
    std::unique_ptr<Engine> engine;
    try {
      engine = Engine::open(opt.model_path, eo);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "ds4: cannot load %s: %s\n", opt.model_path.c_str(), e.what());
      return 1;
    }
    if (opt.inspect) {
      print_inspect(*engine, opt.model_path);
      return 0;
    }
    if (const std::string why = spec::unsupported_reason(*engine, opt.mtp_draft); !why.empty()) {
      std::fprintf(stderr, "ds4: %s\n", why.c_str());
      return 2;
    }
    if (!opt.ctx_given && opt.ctx > engine->context_limit()) {
      opt.ctx = static_cast<int>(engine->context_limit());
    }
    if (opt.ctx > engine->context_limit()) {
      std::fprintf(stderr, "ds4: invalid value for --ctx: %d (the model allows at most %lld)\n",
                   opt.ctx, static_cast<long long>(engine->context_limit()));
      return 2;
    }
    const std::unique_ptr<text::Tokenizer> tok = load_tokenizer(opt.model_path);
    std::fprintf(stderr, "ds4: context buffers %.2f MiB (ctx=%d)\n",
                 engine->session_memory_bytes(opt.ctx) / (1024.0 * 1024.0), opt.ctx);
    if (opt.think == ThinkMode::Max && effective_think_mode(opt.think, opt.ctx) != ThinkMode::Max) {
      std::fprintf(stderr,
                   "ds4: warning: --think-max needs --ctx >= %d; ctx=%d uses normal thinking\n",
                   kThinkMaxMinContext, opt.ctx);
    }
    if (!opt.dump_logprobs_path.empty()) return run_dump_logprobs(*engine, *tok, opt);
    if (opt.prompt) return run_one_shot(*engine, *tok, opt);
    if (!opt.kv.dir.empty()) {
      // The tensor info lives in the file object: keep it open while it is read.
      const std::unique_ptr<gguf::File> file = gguf::File::open(opt.model_path);
      if (const auto* t = file->find_tensor(kvcache::kExpertTensorName)) {
        opt.kv_quant_bits = kvcache::quant_bits_for(t->type);
      }
    }
    return run_repl(*engine, *tok, opt);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ds4: %s\n", e.what());
    return 1;
  }
}

}  // namespace ds4::cli
