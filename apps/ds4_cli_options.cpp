// Command-line parsing and --help for ds4 (flags as the original ds4 CLI names them).
#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "args/args.h"
#include "args/engine_options.h"
#include "ds4_cli.h"
#include "grammar/grammar.h"
#include "grammar/json_schema.h"

namespace ds4::cli {

const char* think_mode_name(ThinkMode m) {
  switch (m) {
    case ThinkMode::None: return "none";
    case ThinkMode::High: return "high";
    case ThinkMode::Max: return "max";
  }
  return "?";
}

ThinkMode effective_think_mode(ThinkMode requested, int ctx) {
  if (requested == ThinkMode::Max && ctx < kThinkMaxMinContext) return ThinkMode::High;
  return requested;
}

namespace {

using args::UsageError;

constexpr const char* kUsage = "ds4 [-p TEXT | --prompt-file FILE] [options]";
constexpr const char* kAbout =
    "Without a prompt ds4 starts an interactive chat (ds4> ); with one it answers and exits.";
constexpr const char* kFooter =
    "Check mode:\n"
    "  --tokens-file F, --dump-logits F, --dump-hidden F\n"
    "                          Evaluate a token list and write raw f32 outputs\n"
    "                          (ds4 --tokens-file F --help lists its options).\n"
    "\n"
    "Interactive commands:\n"
    "  /help                   Show the commands.\n"
    "  /think, /think-max, /nothink\n"
    "                          Thinking mode for the following turns.\n"
    "  /ctx N                  New session of N tokens; the conversation is re-evaluated.\n"
    "  /read FILE              Send the contents of FILE as the next message.\n"
    "  /clear                  Start a new conversation.\n"
    "  /quit, /exit            Leave (so does Ctrl+D).\n"
    "  Ctrl+C                  Stop the current generation and return to the prompt.\n"
    "\n"
    "Get the model with: ./download_model.sh q2-imatrix";

// What the flags hold before parse_args turns them into CliOptions.
struct CliFlags {
  std::string prompt, prompt_file, grammar, json_schema, unavailable_flag;
  bool server = false, unavailable = false;
};

// Every flag of ds4, bound to `o` and `f`.
void describe(args::Parser& p, CliOptions& o, CliFlags& f) {
  p.group("Model and runtime");
  args::add_engine_options(p, o.model_path, o);
  args::add_mtp_options(p, {o.mtp_path, o.mtp_draft, o.mtp_adaptive});
  p.value(
      "-c,--ctx",
      [&o](const std::string& v) {
        o.ctx = static_cast<int>(args::Parser::parse_integer(v, 1, INT_MAX));
        o.ctx_given = true;
      },
      "N", "Context size of the session in tokens. Default: 32768");
  p.group("Prompt and generation");
  p.text("-p,--prompt", f.prompt, "TEXT",
         "Answer TEXT and exit. A text starting with\n"
         "<｜begin▁of▁sentence｜> is used as an already rendered chat.");
  p.text("--prompt-file", f.prompt_file, "FILE", "Same, with the prompt read from FILE.");
  p.text("--system", o.system, "TEXT", "System prompt; \"\" for none. Default: You are a helpful assistant");
  p.alias("-sys", "--system", true);
  p.integer("-n,--tokens", o.n_predict, 1, INT_MAX, "N", "Maximum tokens to generate. Default: 50000");
  p.number("--temp", o.sampling.temperature, 0.0, 100.0, false, "F", "Sampling temperature; 0 is greedy. Default: 1");
  p.alias("--temperature", "--temp", false);
  p.integer("--top-k", o.sampling.top_k, 0, INT_MAX, "N", "Keep the N most likely tokens; 0 is off. Default: 0");
  p.number("--top-p", o.sampling.top_p, 0.0, 1.0, true, "F", "Nucleus probability mass, in (0, 1]. Default: 1");
  p.number("--min-p", o.sampling.min_p, 0.0, 1.0, false, "F",
           "Drop tokens below F times the best one's probability. Default: 0.05");
  p.unsigned_integer("--seed", o.sampling.seed, UINT64_MAX, "N",
                     "Sampling seed for reproducible runs; 0 picks one. Default: 0");
  p.flag("--think", [&o] { o.think = ThinkMode::High; },
         "Thinking mode (reasoning before the answer). This is the default.");
  p.flag("--think-max", [&o] { o.think = ThinkMode::Max; },
         "Think Max; needs --ctx >= " + std::to_string(kThinkMaxMinContext) + ", else normal thinking.");
  p.flag("--nothink", [&o] { o.think = ThinkMode::None; }, "Answer directly without reasoning.");
  p.text("--grammar", f.grammar, "FILE",
         "Constrain the answer to the GBNF grammar in FILE (llama.cpp's\n"
         "format; reasoning stays free). Default: none");
  p.text("--json-schema", f.json_schema, "FILE",
         "Constrain the answer to JSON valid against the JSON Schema in\n"
         "FILE (keywords: docs/grammar.md). Default: none");
  p.flag("--no-color", [&o] { o.color = false; }, "Never style the output (also: NO_COLOR in the environment).");
  p.flag("-v,--verbose", o.verbose, "Log prompt reuse per turn (also: DS4_DEBUG=1).");
  p.group("Disk KV cache (interactive chat)");
  p.value(
      "--kv-disk-dir",
      [&o](const std::string& d) {
        if (d.empty()) throw UsageError("needs a directory");
        o.kv.dir = d;
      },
      "DIR",
      "Save the conversation after each turn; on start, resume the\n"
      "last one of the same system prompt. Default: off");
  p.integer("--kv-disk-space-mb", o.kv.space_mb, 0, int64_t(1) << 30, "N",
            "Space budget of DIR in MiB (0: 4096). Default: 4096");
  p.integer("--kv-cache-min-tokens", o.kv.min_tokens, 1, INT_MAX, "N",
            "Never save or load shorter checkpoints. Default: 512");
  p.group("Diagnostics");
  p.flag("--inspect", o.inspect, "Load the model, print its configuration and exit.");
  p.flag("--dump-tokens", o.dump_tokens,
         "Tokenize the prompt as written (markers recognised), print\n"
         "one line per token (id TAB escaped text) and exit.");
  p.text("--dump-logprobs", o.dump_logprobs_path, "FILE",
         "Greedy continuation of the chat prompt with the top-K\n"
         "alternatives per step, written to FILE as JSON.");
  p.integer("--logprobs-top-k", o.logprobs_top_k, 1, 128, "K",
            "Alternatives per step for --dump-logprobs, 1..128. Default: 20");
  // Names that users of other tools try; each gets a pointed answer instead of "unknown".
  p.group("");
  for (const char* name : {"--metal", "--cuda"}) {
    p.flag(name, [&f, name] {
      f.unavailable = true;
      f.unavailable_flag = name;
    }, "");
  }
  p.flag("--server", f.server, "");
  p.footer(kFooter);
}

}  // namespace

std::string usage_text() {
  CliOptions o;
  CliFlags f;
  args::Parser p("ds4", kUsage, kAbout);
  describe(p, o, f);
  return p.help();
}

bool read_text_file(const std::string& path, std::string& out, std::string& error) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    error = path + ": " + std::strerror(errno);
    return false;
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    error = path + ": " + std::strerror(errno);
    ::close(fd);
    return false;
  }
  if (S_ISDIR(st.st_mode)) {
    error = path + ": is a directory";
    ::close(fd);
    return false;
  }
  out.clear();
  char buf[1 << 16];
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      error = path + ": " + std::strerror(errno);
      ::close(fd);
      return false;
    }
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return true;
}

ParseResult parse_args(const std::vector<std::string>& argv) {
  ParseResult r;
  CliOptions& o = r.options;
  CliFlags f;
  args::Parser p("ds4", kUsage, kAbout);
  describe(p, o, f);
  const args::Outcome parsed = p.parse(argv, [&] {
    if (f.unavailable) throw UsageError(f.unavailable_flag + " is not available (backends: cpu, vulkan)");
    if (f.server) throw UsageError("the HTTP server is a separate program: ds4-server");
    if (p.count("--prompt") + p.count("--prompt-file") > 1) {
      throw UsageError("give only one prompt source (-p or --prompt-file)");
    }
    if (p.count("--prompt-file")) {
      std::string text, error;
      if (!read_text_file(f.prompt_file, text, error)) throw UsageError("cannot read prompt file: " + error);
      o.prompt = std::move(text);
      o.prompt_file = f.prompt_file;
    } else if (p.count("--prompt")) {
      o.prompt = f.prompt;
    }
    if (p.count("--grammar") + p.count("--json-schema") > 1) {
      throw UsageError("give only one of --grammar and --json-schema");
    }
    const bool schema = p.count("--json-schema") > 0;
    if (schema || p.count("--grammar")) {
      const std::string& file = schema ? f.json_schema : f.grammar;
      std::string text, error;
      if (!read_text_file(file, text, error)) {
        throw UsageError(std::string("cannot read ") + (schema ? "--json-schema" : "--grammar") + " file: " + error);
      }
      try {
        o.grammar = schema ? grammar::json_schema_to_gbnf(nlohmann::ordered_json::parse(text)) : text;
        grammar::parse_gbnf(o.grammar);  // report errors now, not after loading the model
      } catch (const nlohmann::json::exception& e) {
        throw UsageError(file + ": not JSON: " + e.what());
      } catch (const grammar::GrammarError& e) {
        throw UsageError(file + ": " + e.what());
      }
    }
    // Cold saves are a server notion; keep the option set consistent.
    o.kv.cold_max_tokens = std::max(o.kv.cold_max_tokens, o.kv.min_tokens);
    if (o.dump_tokens && !o.prompt) throw UsageError("--dump-tokens needs -p TEXT or --prompt-file FILE");
    if (!o.dump_logprobs_path.empty() && !o.prompt) {
      throw UsageError("--dump-logprobs needs -p TEXT or --prompt-file FILE");
    }
  });
  if (parsed.done()) {
    r.exit_code = parsed.exit_code;
    r.message = parsed.exit_code == 0 ? parsed.out : parsed.err;
    return r;
  }
  if (o.list_devices) {
    r.exit_code = 0;
    r.message = describe_devices();
    return r;
  }
  if (const char* d = std::getenv("DS4_DEBUG"); d && *d && std::string(d) != "0") {
    o.verbose = true;
  }
  if (const char* nc = std::getenv("NO_COLOR"); nc && *nc) o.color = false;
  return r;
}

}  // namespace ds4::cli
