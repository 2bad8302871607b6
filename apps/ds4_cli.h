// ds4 chat CLI: one-shot generation, the interactive REPL and the diagnostics
// (--dump-tokens, --dump-logprobs), following ds4's CLI.
//
// The pieces below are exposed so the unit tests can drive them without a model; run_cli()
// is the whole program.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "args/engine_options.h"
#include "ds4/engine.h"
#include "kvcache/store.h"
#include "grammar/matcher.h"
#include "sample/sampler.h"
#include "spec/speculative.h"
#include "text/chat.h"

namespace ds4::text {
class Tokenizer;
}

namespace ds4::cli {

// The main entry point: returns the process exit code (0 ok, 1 runtime failure, 2 usage).
int run_cli(int argc, char** argv);

enum class ThinkMode { None, High, Max };
const char* think_mode_name(ThinkMode m);

// Think Max needs a context of at least this many tokens (the text layer's threshold, see
// docs/prompting.md); below it High is used.
inline constexpr int kThinkMaxMinContext = static_cast<int>(text::kThinkMaxMinContext);
ThinkMode effective_think_mode(ThinkMode requested, int ctx);

struct CliOptions : args::EngineFlags {
  std::string model_path = "./ds4flash.gguf";
  std::string mtp_path;
  int mtp_draft = 0;          // --mtp-draft N: speculative decoding with N MTP drafts
  bool mtp_adaptive = true;   // --mtp-fixed turns the controller off (benchmarks)
  int ctx = 32768;
  bool ctx_given = false;  // the default is lowered to a smaller model's limit
  std::optional<std::string> prompt;  // -p, or the contents of --prompt-file
  std::string prompt_file;
  std::string system = "You are a helpful assistant";
  int n_predict = 50000;
  sample::Params sampling;  // the sampler's defaults: temp 1, top_p 1, min_p 0.05
  ThinkMode think = ThinkMode::High;
  bool dump_tokens = false;
  std::string dump_logprobs_path;
  int logprobs_top_k = 20;
  bool inspect = false;
  bool verbose = false;   // also DS4_DEBUG=1: per-turn prefill reuse lines
  bool color = true;      // --no-color / NO_COLOR turn terminal styling off
  // Disk KV cache (--kv-disk-dir, --kv-disk-space-mb, --kv-cache-min-tokens): the
  // interactive chat saves itself after each turn and resumes after a restart.
  kvcache::CacheOptions kv;
  // Structured output: the answer must match this GBNF grammar (--grammar FILE, or
  // --json-schema FILE converted); empty: unconstrained.
  std::string grammar;
  uint8_t kv_quant_bits = 4;  // from the model's expert tensors (set by run_cli)
};

struct ParseResult {
  CliOptions options;
  int exit_code = -1;   // >= 0: stop now with this code (help printed, or a usage error)
  std::string message;  // what to print (stdout for help, stderr for errors)
};

// Parses argv (argv[0] excluded). Reads --prompt-file. Never exits.
ParseResult parse_args(const std::vector<std::string>& args);
std::string usage_text();
// Reads a whole file (a pipe or /dev/stdin too). A directory or a read error is false with
// `error` naming the file and the reason, never an empty text.
bool read_text_file(const std::string& path, std::string& out, std::string& error);

// ---------------------------------------------------------------- rendering (token level)

// The CLI's prompts, rendered by the text layer's chat renderer (text/chat.h, docs/prompting.md) and tokenized
// like the server's: control ids for markers, client text BPE-encoded without recognising
// special-token strings. A conversation is a head, then turns appended to the token transcript
// (the replies stay the tokens the model generated).
class ChatRenderer {
 public:
  explicit ChatRenderer(const text::Tokenizer& tok) : tok_(tok) {}
  // BOS + [Think-Max prefix] + system text.
  std::vector<int32_t> head(ThinkMode effective, const std::string& system) const;
  // <｜User｜> + text + <｜Assistant｜> + <think> (thinking) or </think> (no thinking).
  void append_turn(std::vector<int32_t>& out, const std::string& user, ThinkMode effective) const;
  // One-shot prompt: a text starting with BOS is taken as already rendered (markers
  // recognised); anything else is the system and user messages with the generation prompt.
  std::vector<int32_t> one_shot(const std::string& prompt, const std::string& system,
                                ThinkMode effective) const;
  const text::Tokenizer& tokenizer() const { return tok_; }

 private:
  static text::RenderOptions options(ThinkMode effective);
  std::vector<int32_t> tokens(const nlohmann::ordered_json& messages, const text::RenderOptions& o) const;
  const text::Tokenizer& tok_;
};

// ---------------------------------------------------------------- output

// Streams generated text, showing reasoning distinctly: on a terminal in dim style, when
// piped between "<think>" and "</think>" lines. Markers are found on decoded bytes (the
// model may spell "</think>" with ordinary pieces), so a partial marker is held back.
class ReplyPrinter {
 public:
  ReplyPrinter(std::FILE* out, bool styled, bool starts_in_reasoning);
  void write(const std::string& bytes);
  void finish();  // flushes held bytes, closes the reasoning block, ends the line
  bool in_reasoning() const { return in_reasoning_; }

 private:
  void emit(const char* p, size_t n);
  void open_reasoning();
  void close_reasoning();
  std::FILE* out_;
  bool styled_;
  bool in_reasoning_;
  bool reasoning_opened_ = false;
  bool at_line_start_ = true;
  std::string held_;
};

// ---------------------------------------------------------------- generation

struct TurnStats {
  int prompt_tokens = 0;
  int reused = 0;     // tokens of the live state kept by sync()
  int evaluated = 0;  // prompt tokens evaluated by sync()
  int generated = 0;
  double prefill_s = 0, decode_s = 0;
  bool interrupted = false;
  bool hit_eos = false;
};

struct GenerateOptions {
  int max_tokens = 0;  // clamped to the room left in the context minus one
  int32_t eos = -1;
  const std::atomic<bool>* cancel = nullptr;
  bool progress = false;  // draw the prefill bar on stderr
  std::function<void(int32_t)> on_token;  // each generated token except EOS
  std::function<void(const TurnStats&)> on_prefilled;  // after sync(), before decoding
  // Speculative decoding (src/spec): needs the engine for verify batches; 0 drafts = plain.
  Engine* engine = nullptr;
  spec::Options spec;
  spec::Stats* spec_stats = nullptr;  // filled when set
  // Structured output: the answer (after </think> when `thinking`) follows this grammar.
  std::shared_ptr<grammar::CompiledGrammar> grammar;
  bool thinking = false;
  int32_t think_close = -1;
};

// Makes the session hold `prompt` (suffix-only evaluation through sync), then samples up to
// max_tokens. Ctrl+C (cancel) during prefill or decoding stops cleanly (interrupted = true).
// Engine errors other than Cancelled propagate.
TurnStats generate(Session& session, const std::vector<int32_t>& prompt, sample::Sampler& sampler,
                   const GenerateOptions& opt, std::vector<int32_t>& generated);

// The --verbose line "ds4: prefill: reused R tokens, evaluated E of N" (stderr).
void log_reuse(const TurnStats& s);
// "ds4: prefill: X t/s, generation: Y t/s".
std::string speed_summary(const TurnStats& s);

// --dump-logprobs: greedy continuation with the top-k alternatives per step, as JSON (written
// by text::dump_json, so a token's invalid UTF-8 "text" reads as U+FFFD; "bytes" is exact).
void write_logprobs_json(std::FILE* out, Session& session, const text::Tokenizer& tok,
                         const std::vector<int32_t>& prompt, int top_k, int max_tokens,
                         int32_t eos);

// ---------------------------------------------------------------- interactive chat

// The REPL's conversation: a token transcript kept in sync with one live session.
class Conversation {
 public:
  Conversation(Engine& engine, const text::Tokenizer& tok, CliOptions& opt);
  // Runs one user turn: renders it, evaluates only the new suffix, streams the reply.
  // Returns false on an engine failure (already reported).
  bool turn(const std::string& user_text, std::FILE* out, const std::atomic<bool>* cancel);
  void set_think(ThinkMode m) { opt_.think = m; }
  ThinkMode think() const { return opt_.think; }
  // New session of `ctx` tokens; the transcript is re-evaluated on the next turn.
  void set_ctx(int ctx);
  int ctx() const { return session_->context_size(); }
  void clear() {
    turns_.clear();
    saved_name_.clear();  // the old conversation's checkpoint stays on disk
  }
  // Everything the next turn's prompt starts with.
  std::vector<int32_t> transcript() const;
  Session& session() { return *session_; }
  // With a disk cache: the most recently used saved conversation of this system prompt
  // becomes the current one (transcript and live state). Returns its token count, or 0.
  int resume();

 private:
  Engine& engine_;
  const text::Tokenizer& tok_;
  CliOptions& opt_;
  ChatRenderer renderer_;
  std::unique_ptr<Session> session_;
  sample::Sampler sampler_;
  std::vector<int32_t> turns_;  // rendered turns after the head, generated tokens included
  std::unique_ptr<kvcache::DiskCache> disk_;
  std::string saved_name_;  // this conversation's checkpoint, replaced after each turn
  void save_to_disk();
};

// The REPL on stdin/stdout (libedit line editing and history in ~/.ds4_history).
int run_repl(Engine& engine, const text::Tokenizer& tok, CliOptions& opt);

// Set by the SIGINT handler; generation and prefill poll it, and a wait for a key at the
// REPL prompt wakes up on it. clear_interrupt() resets it (and the pending wake-up).
std::atomic<bool>& interrupt_flag();
void install_sigint_handler();
void clear_interrupt();

}  // namespace ds4::cli
