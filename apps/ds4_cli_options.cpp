// Command-line parsing and --help for ds4 (spec/server.md §15).
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

std::string usage_text() {
  std::ostringstream o;
  o << "Usage: ds4 [-p TEXT | --prompt-file FILE] [options]\n"
       "\n"
       "Without a prompt ds4 starts an interactive chat (ds4> ); with one it answers and exits.\n"
       "\n"
       "Model and runtime:\n"
       "  -m, --model FILE       GGUF model. Default: ./ds4flash.gguf\n"
       "      --mtp FILE         Optional MTP sidecar GGUF. Default: none\n"
       "      --mtp-draft N      Speculative decoding: draft up to N (1..4) tokens with the MTP\n"
       "                         block, verify them in one pass; same output as plain decode.\n"
       "                         An adaptive controller lowers N when it does not pay. Default: 0\n"
       "      --mtp-fixed        Keep N fixed (no adaptive controller; for benchmarks)\n"
       "  -c, --ctx N            Context size of the session in tokens. Default: 32768\n"
       "  -t, --threads N        Worker threads. Default: all cores\n"
       "  -b, --backend NAME     cpu or vulkan (builds with Vulkan; today the embedding and\n"
       "                         output head run on the GPU, the blocks on the CPU). Default: cpu\n"
       "      --cpu              Same as --backend cpu\n"
       "      --device N         Vulkan device index (see --list-devices). Default: 0\n"
       "      --list-devices     Print the Vulkan devices and exit\n"
       "\n"
       "Prompt and generation:\n"
       "  -p, --prompt TEXT      Answer TEXT and exit. A text starting with\n"
       "                         <｜begin▁of▁sentence｜> is used as an already rendered chat.\n"
       "      --prompt-file FILE Same, with the prompt read from FILE.\n"
       "  -sys, --system TEXT    System prompt; \"\" for none. Default: You are a helpful assistant\n"
       "  -n, --tokens N         Maximum tokens to generate. Default: 50000\n"
       "      --temp F           Sampling temperature; 0 is greedy. Default: 1\n"
       "      --top-k N          Keep the N most likely tokens; 0 is off. Default: 0\n"
       "      --top-p F          Nucleus probability mass, in (0, 1]. Default: 1\n"
       "      --min-p F          Drop tokens below F times the best one's probability. Default: 0.05\n"
       "      --seed N           Sampling seed for reproducible runs; 0 picks one. Default: 0\n"
       "      --think            Thinking mode (reasoning before the answer). This is the default.\n"
       "      --think-max        Think Max; needs --ctx >= 393216, else normal thinking.\n"
       "      --nothink          Answer directly without reasoning.\n"
       "      --grammar FILE     Constrain the answer to the GBNF grammar in FILE (llama.cpp's\n"
       "                         format; reasoning stays free). Default: none\n"
       "      --json-schema FILE Constrain the answer to JSON valid against the JSON Schema in\n"
       "                         FILE (keywords: docs/grammar.md). Default: none\n"
       "      --no-color         Never style the output (also: NO_COLOR in the environment).\n"
       "  -v, --verbose          Log prompt reuse per turn (also: DS4_DEBUG=1).\n"
       "\n"
       "Disk KV cache (interactive chat):\n"
       "      --kv-disk-dir DIR  Save the conversation after each turn; on start, resume the\n"
       "                         last one of the same system prompt. Default: off\n"
       "      --kv-disk-space-mb N\n"
       "                         Space budget of DIR in MiB (0: 4096). Default: 4096\n"
       "      --kv-cache-min-tokens N\n"
       "                         Never save or load shorter checkpoints. Default: 512\n"
       "\n"
       "Diagnostics:\n"
       "      --inspect          Load the model, print its configuration and exit.\n"
       "      --dump-tokens      Tokenize the prompt as written (markers recognised), print\n"
       "                         one line per token (id TAB escaped text) and exit.\n"
       "      --dump-logprobs FILE\n"
       "                         Greedy continuation of the chat prompt with the top-K\n"
       "                         alternatives per step, written to FILE as JSON.\n"
       "      --logprobs-top-k K Alternatives per step for --dump-logprobs, 1..128. Default: 20\n"
       "      --tokens-file F, --dump-logits F, --dump-hidden F\n"
       "                         Check mode: evaluate a token list and write raw f32 outputs\n"
       "                         (ds4 --tokens-file F --help lists its options).\n"
       "\n"
       "Interactive commands:\n"
       "  /help                  Show the commands.\n"
       "  /think, /think-max, /nothink\n"
       "                         Thinking mode for the following turns.\n"
       "  /ctx N                 New session of N tokens; the conversation is re-evaluated.\n"
       "  /read FILE             Send the contents of FILE as the next message.\n"
       "  /clear                 Start a new conversation.\n"
       "  /quit, /exit           Leave (so does Ctrl+D).\n"
       "  Ctrl+C                 Stop the current generation and return to the prompt.\n"
       "\n"
       "  -h, --help             Show this help.\n"
       "\n"
       "Get the model with: ./download_model.sh q2-imatrix\n";
  return o.str();
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

namespace {

struct UsageError {
  std::string message;
};

[[noreturn]] void bad_value(const std::string& flag, const std::string& value,
                            const std::string& why) {
  throw UsageError{"ds4: invalid value for " + flag + ": '" + value + "' (" + why + ")"};
}

long long parse_integer(const std::string& flag, const std::string& s, long long lo, long long hi) {
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || errno == ERANGE) bad_value(flag, s, "expected an integer");
  if (v < lo || v > hi) {
    bad_value(flag, s, "must be between " + std::to_string(lo) + " and " + std::to_string(hi));
  }
  return v;
}

uint64_t parse_u64(const std::string& flag, const std::string& s) {
  errno = 0;
  char* end = nullptr;
  if (s.empty() || s[0] == '-' || s[0] == '+') bad_value(flag, s, "expected a non-negative integer");
  const unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (*end != '\0' || errno == ERANGE) bad_value(flag, s, "expected a non-negative integer");
  return v;
}

float parse_float(const std::string& flag, const std::string& s, float lo, float hi,
                  bool lo_open = false) {
  char* end = nullptr;
  const float v = std::strtof(s.c_str(), &end);
  if (s.empty() || *end != '\0' || !std::isfinite(v)) bad_value(flag, s, "expected a number");
  if (v < lo || v > hi || (lo_open && v == lo)) {
    std::ostringstream range;
    range << "must be in " << (lo_open ? "(" : "[") << lo << ", " << hi << "]";
    bad_value(flag, s, range.str());
  }
  return v;
}

std::string read_whole_file(const std::string& path) {
  std::string text, error;
  if (!read_text_file(path, text, error)) throw UsageError{"ds4: cannot read prompt file: " + error};
  return text;
}

}  // namespace

ParseResult parse_args(const std::vector<std::string>& args) {
  ParseResult r;
  CliOptions& o = r.options;
  try {
    bool have_prompt = false;
    for (size_t i = 0; i < args.size(); ++i) {
      const std::string& a = args[i];
      auto value = [&]() -> const std::string& {
        if (i + 1 >= args.size()) throw UsageError{"ds4: missing value for " + a};
        return args[++i];
      };
      auto set_prompt = [&](std::string text, std::string file) {
        if (have_prompt) throw UsageError{"ds4: give only one prompt source (-p or --prompt-file)"};
        have_prompt = true;
        o.prompt = std::move(text);
        o.prompt_file = std::move(file);
      };
      if (a == "-h" || a == "--help") {
        r.exit_code = 0;
        r.message = usage_text();
        return r;
      } else if (a == "-m" || a == "--model") {
        o.model_path = value();
      } else if (a == "--mtp") {
        o.mtp_path = value();
      } else if (a == "--mtp-draft") {
        o.mtp_draft = static_cast<int>(parse_integer(a, value(), 0, spec::kMaxDraft));
      } else if (a == "--mtp-fixed") {
        o.mtp_adaptive = false;
      } else if (a == "-c" || a == "--ctx") {
        o.ctx = static_cast<int>(parse_integer(a, value(), 1, INT_MAX));
        o.ctx_given = true;
      } else if (a == "-t" || a == "--threads") {
        o.threads = static_cast<int>(parse_integer(a, value(), 1, 4096));
      } else if (a == "--cpu") {
        o.backend = Backend::Cpu;
      } else if (a == "-b" || a == "--backend") {
        const std::string& b = value();
        if (!parse_backend(b, &o.backend)) throw UsageError{"ds4: unknown backend '" + b + "' (cpu or vulkan)"};
        if (!has_backend(o.backend))
          throw UsageError{"ds4: backend '" + b + "' is not available in this build (configure with -DDS4_VULKAN=ON)"};
      } else if (a == "--device") {
        o.device = static_cast<int>(parse_integer(a, value(), 0, 1023));
      } else if (a == "--list-devices") {
        r.exit_code = 0;
        r.message = describe_devices();
        return r;
      } else if (a == "--metal" || a == "--cuda") {
        throw UsageError{"ds4: " + a + " is not available (backends: cpu, vulkan)"};
      } else if (a == "-p" || a == "--prompt") {
        set_prompt(value(), "");
      } else if (a == "--prompt-file") {
        const std::string& f = value();
        set_prompt(read_whole_file(f), f);
      } else if (a == "-sys" || a == "--system") {
        o.system = value();
      } else if (a == "-n" || a == "--tokens") {
        o.n_predict = static_cast<int>(parse_integer(a, value(), 1, INT_MAX));
      } else if (a == "--temp" || a == "--temperature") {
        o.sampling.temperature = parse_float(a, value(), 0.f, 100.f);
      } else if (a == "--top-k") {
        o.sampling.top_k = static_cast<int>(parse_integer(a, value(), 0, INT_MAX));
      } else if (a == "--top-p") {
        o.sampling.top_p = parse_float(a, value(), 0.f, 1.f, /*lo_open=*/true);
      } else if (a == "--min-p") {
        o.sampling.min_p = parse_float(a, value(), 0.f, 1.f);
      } else if (a == "--seed") {
        o.sampling.seed = parse_u64(a, value());
      } else if (a == "--grammar" || a == "--json-schema") {
        const std::string& f = value();
        if (!o.grammar.empty()) throw UsageError{"ds4: give only one of --grammar and --json-schema"};
        std::string text, error;
        if (!read_text_file(f, text, error)) throw UsageError{"ds4: cannot read " + a + " file: " + error};
        try {
          o.grammar = a == "--grammar"
                          ? text
                          : grammar::json_schema_to_gbnf(nlohmann::ordered_json::parse(text));
          grammar::parse_gbnf(o.grammar);  // report errors now, not after loading the model
        } catch (const nlohmann::json::exception& e) {
          throw UsageError{"ds4: " + f + ": not JSON: " + e.what()};
        } catch (const grammar::GrammarError& e) {
          throw UsageError{"ds4: " + f + ": " + e.what()};
        }
      } else if (a == "--think") {
        o.think = ThinkMode::High;
      } else if (a == "--think-max") {
        o.think = ThinkMode::Max;
      } else if (a == "--nothink") {
        o.think = ThinkMode::None;
      } else if (a == "--no-color") {
        o.color = false;
      } else if (a == "-v" || a == "--verbose") {
        o.verbose = true;
      } else if (a == "--inspect") {
        o.inspect = true;
      } else if (a == "--dump-tokens") {
        o.dump_tokens = true;
      } else if (a == "--dump-logprobs") {
        o.dump_logprobs_path = value();
      } else if (a == "--logprobs-top-k") {
        o.logprobs_top_k = static_cast<int>(parse_integer(a, value(), 1, 128));
      } else if (a == "--kv-disk-dir") {
        o.kv.dir = value();
        if (o.kv.dir.empty()) throw UsageError{"ds4: --kv-disk-dir needs a directory"};
      } else if (a == "--kv-disk-space-mb") {
        o.kv.space_mb = static_cast<uint64_t>(parse_integer(a, value(), 0, int64_t(1) << 30));
      } else if (a == "--kv-cache-min-tokens") {
        o.kv.min_tokens = static_cast<int>(parse_integer(a, value(), 1, INT_MAX));
        // Cold saves are a server notion; keep the option set consistent.
        o.kv.cold_max_tokens = std::max(o.kv.cold_max_tokens, o.kv.min_tokens);
      } else if (a == "--server") {
        throw UsageError{"ds4: the HTTP server is a separate program: ds4-server"};
      } else {
        throw UsageError{"ds4: unknown option: " + a + "\nds4: see ds4 --help"};
      }
    }
    if (o.dump_tokens && !o.prompt) {
      throw UsageError{"ds4: --dump-tokens needs -p TEXT or --prompt-file FILE"};
    }
    if (!o.dump_logprobs_path.empty() && !o.prompt) {
      throw UsageError{"ds4: --dump-logprobs needs -p TEXT or --prompt-file FILE"};
    }
  } catch (const UsageError& e) {
    r.exit_code = 2;
    r.message = e.message + "\n";
    return r;
  }
  if (const char* d = std::getenv("DS4_DEBUG"); d && *d && std::string(d) != "0") {
    o.verbose = true;
  }
  if (const char* nc = std::getenv("NO_COLOR"); nc && *nc) o.color = false;
  return r;
}

}  // namespace ds4::cli
