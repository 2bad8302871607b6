// The interactive chat: libedit line editing and history, slash commands, Ctrl+C handling.
#include <fcntl.h>
#include <histedit.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <clocale>
#include <cstdlib>
#include <cstring>

#include "ds4_cli.h"
#include "text/tokenizer.h"
#include "text/unicode.h"

namespace ds4::cli {

std::atomic<bool>& interrupt_flag() {
  static std::atomic<bool> flag{false};
  return flag;
}

namespace {

// Written by the SIGINT handler so that a wait for a key wakes up even when the signal came
// while the main thread was not inside read() (echoing a key, say) or landed on a worker.
int g_interrupt_pipe[2] = {-1, -1};

extern "C" void on_sigint(int) {
  interrupt_flag().store(true, std::memory_order_relaxed);
  if (g_interrupt_pipe[1] >= 0) {
    const int saved = errno;
    if (::write(g_interrupt_pipe[1], "!", 1) < 0) {
      // full pipe: a wake-up is already pending
    }
    errno = saved;
  }
}

}  // namespace

void install_sigint_handler() {
  if (g_interrupt_pipe[0] < 0 && ::pipe2(g_interrupt_pipe, O_NONBLOCK | O_CLOEXEC) != 0) {
    g_interrupt_pipe[0] = g_interrupt_pipe[1] = -1;  // the flag alone still cancels generation
  }
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: a blocked read must return so the prompt can be redrawn
  sigaction(SIGINT, &sa, nullptr);
}

void clear_interrupt() {
  interrupt_flag().store(false);
  char sink[64];
  while (g_interrupt_pipe[0] >= 0 && ::read(g_interrupt_pipe[0], sink, sizeof sink) > 0) {
  }
}

namespace {

// Waits for one byte of stdin: 1 read, 0 end of input, -1 Ctrl+C or an error.
int read_stdin_byte(unsigned char& b) {
  for (;;) {
    if (interrupt_flag().load()) return -1;
    pollfd fds[2] = {{STDIN_FILENO, POLLIN, 0}, {g_interrupt_pipe[0], POLLIN, 0}};
    const int ready = ::poll(fds, g_interrupt_pipe[0] >= 0 ? 2 : 1, -1);
    if (ready < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (fds[1].revents & POLLIN) return -1;  // Ctrl+C; clear_interrupt() drains the pipe
    if (fds[0].revents == 0) continue;
    const ssize_t n = ::read(STDIN_FILENO, &b, 1);
    if (n == 1) return 1;
    if (n == 0) return 0;
    if (errno == EINTR || errno == EAGAIN) continue;
    return -1;
  }
}

// Reads one UTF-8 character from stdin for libedit. Returning -1 on Ctrl+C (instead of
// libedit's own retry on EINTR) lets the REPL abandon the line at once.
int read_char(EditLine*, wchar_t* out) {
  unsigned char b = 0;
  int r = read_stdin_byte(b);
  if (r <= 0) {
    *out = 0;
    if (r < 0) errno = EINTR;
    return r;
  }
  // Bytes are read until they form a character or cannot become one (then U+FFFD).
  unsigned char seq[4] = {b};
  size_t len = 1;
  uint32_t cp = 0xFFFD;
  int got;
  while ((got = text::unicode::utf8_decode(seq, len, &cp)) == 0) {
    r = read_stdin_byte(seq[len]);
    if (r <= 0) {
      *out = 0;
      if (r < 0) errno = EINTR;
      return r;
    }
    ++len;
  }
  if (got < 0) cp = 0xFFFD;
  *out = static_cast<wchar_t>(cp);
  return 1;
}

char* prompt_text(EditLine*) {
  static char prompt[] = "ds4> ";
  return prompt;
}

std::string history_path() {
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : ".") + "/.ds4_history";
}

class LineReader {
 public:
  enum class Status { Line, Interrupted, Eof };

  LineReader() : path_(history_path()) {
    // libedit converts with the C library's multibyte functions: it needs a UTF-8 locale.
    if (!std::setlocale(LC_CTYPE, "") || MB_CUR_MAX == 1) std::setlocale(LC_CTYPE, "C.UTF-8");
    hist_ = history_init();
    history(hist_, &ev_, H_SETSIZE, 512);
    history(hist_, &ev_, H_SETUNIQUE, 1);
    history(hist_, &ev_, H_LOAD, path_.c_str());
    el_ = el_init("ds4", stdin, stdout, stderr);
    el_set(el_, EL_EDITOR, "emacs");
    el_set(el_, EL_PROMPT, prompt_text);
    el_set(el_, EL_HIST, history, hist_);
    el_set(el_, EL_GETCFN, read_char);
    // libedit prints the prompt before it leaves canonical mode and goes back to it while a
    // reply streams: keys typed then met the kernel's line editing (a Ctrl+D became a NUL
    // byte and never exited; keys were echoed into the reply). A non-canonical, silent
    // execute mode (signals and output processing stay on) hands typeahead to libedit as
    // typed. Only when libedit manages the terminal, which needs stdin and stdout to be one.
    if (isatty(STDIN_FILENO) && isatty(STDOUT_FILENO)) {
      el_set(el_, EL_SETTY, "-x", "-icanon", "-echo", "-iexten", static_cast<char*>(nullptr));
    }
    el_source(el_, nullptr);  // the user's ~/.editrc, if any
  }
  ~LineReader() {
    el_end(el_);
    history_end(hist_);
  }

  Status read(std::string& line) {
    int count = 0;
    const char* s = el_gets(el_, &count);
    if (!s || count <= 0) {
      if (interrupt_flag().exchange(false)) return Status::Interrupted;
      return Status::Eof;
    }
    line.assign(s, static_cast<size_t>(count));
    return Status::Line;
  }

  void remember(const std::string& line) {
    history(hist_, &ev_, H_ENTER, line.c_str());
    history(hist_, &ev_, H_SAVE, path_.c_str());
  }

 private:
  std::string path_;
  EditLine* el_ = nullptr;
  History* hist_ = nullptr;
  HistEvent ev_;
};

std::string trim(const std::string& s) {
  size_t a = 0, b = s.size();
  while (a < b && std::isspace(static_cast<unsigned char>(s[a]))) ++a;
  while (b > a && std::isspace(static_cast<unsigned char>(s[b - 1]))) --b;
  return s.substr(a, b - a);
}

// "/name rest" -> true when line is the command `name` (alone or followed by whitespace).
bool is_command(const std::string& line, const std::string& name, std::string* rest) {
  if (line.compare(0, name.size(), name) != 0) return false;
  if (line.size() > name.size() && !std::isspace(static_cast<unsigned char>(line[name.size()]))) {
    return false;
  }
  if (rest) *rest = trim(line.substr(name.size()));
  return true;
}

void print_commands() {
  std::printf(
      "Commands:\n"
      "  /help          Show this help.\n"
      "  /think         Thinking mode (reasoning, then the answer).\n"
      "  /think-max     Think Max (needs a context of at least %d tokens).\n"
      "  /nothink       Answer directly.\n"
      "  /ctx N         New session of N tokens; the conversation is re-evaluated.\n"
      "  /read FILE     Send the contents of FILE as the next message.\n"
      "  /clear         Start a new conversation.\n"
      "  /quit, /exit   Leave (so does Ctrl+D).\n"
      "  Ctrl+C         Stop a generation; at the prompt, clear the line.\n",
      kThinkMaxMinContext);
  std::fflush(stdout);
}

void report_mode(const Conversation& chat) {
  const ThinkMode eff = effective_think_mode(chat.think(), chat.ctx());
  if (chat.think() == ThinkMode::Max && eff != ThinkMode::Max) {
    std::printf("Thinking mode: high (Think Max needs --ctx >= %d; ctx is %d).\n",
                kThinkMaxMinContext, chat.ctx());
  } else {
    std::printf("Thinking mode: %s.\n", think_mode_name(eff));
  }
  std::fflush(stdout);
}

}  // namespace

int run_repl(Engine& engine, const text::Tokenizer& tok, CliOptions& opt) {
  Conversation chat(engine, tok, opt);
  install_sigint_handler();
  LineReader reader;
  std::printf("ds4 interactive chat. /help for commands, Ctrl+D to exit.\n");
  if (const int resumed = chat.resume(); resumed > 0) {
    std::printf("Resumed the last conversation (%d tokens) from %s; /clear starts a new one.\n",
                resumed, opt.kv.dir.c_str());
  }
  std::fflush(stdout);
  for (;;) {
    clear_interrupt();  // a Ctrl+C that stopped the last reply must not cancel this line
    std::string raw;
    const LineReader::Status status = reader.read(raw);
    if (status == LineReader::Status::Eof) {
      std::fputc('\n', stdout);
      break;
    }
    if (status == LineReader::Status::Interrupted) {
      std::fputs("^C\n", stdout);  // the line is dropped; a fresh prompt follows
      std::fflush(stdout);
      continue;
    }
    const std::string line = trim(raw);
    if (line.empty()) continue;
    reader.remember(line);

    std::string arg;
    if (line == "/help") {
      print_commands();
    } else if (line == "/quit" || line == "/exit") {
      break;
    } else if (line == "/think") {
      chat.set_think(ThinkMode::High);
      report_mode(chat);
    } else if (line == "/think-max") {
      chat.set_think(ThinkMode::Max);
      report_mode(chat);
    } else if (line == "/nothink") {
      chat.set_think(ThinkMode::None);
      report_mode(chat);
    } else if (line == "/clear") {
      chat.clear();
      std::printf("New conversation.\n");
      std::fflush(stdout);
    } else if (is_command(line, "/ctx", &arg)) {
      char* end = nullptr;
      const long n = std::strtol(arg.c_str(), &end, 10);
      if (arg.empty() || *end != '\0' || n <= 0 || n > engine.context_limit()) {
        std::fprintf(stderr, "ds4: /ctx needs a token count between 1 and %lld\n",
                     static_cast<long long>(engine.context_limit()));
        continue;
      }
      try {
        chat.set_ctx(static_cast<int>(n));
        std::printf("Context: %d tokens (%.1f MiB of session state).\n", chat.ctx(),
                    engine.session_memory_bytes(chat.ctx()) / (1024.0 * 1024.0));
        std::fflush(stdout);
        if (opt.think == ThinkMode::Max) report_mode(chat);
      } catch (const Error& e) {
        std::fprintf(stderr, "ds4: /ctx failed: %s\n", e.what());
      }
    } else if (is_command(line, "/read", &arg)) {
      if (arg.empty()) {
        std::fprintf(stderr, "ds4: /read needs a file name\n");
        continue;
      }
      std::string text, error;
      if (!read_text_file(arg, text, error)) {
        std::fprintf(stderr, "ds4: cannot read %s\n", error.c_str());
        continue;
      }
      chat.turn(text, stdout, &interrupt_flag());  // failures are reported inline
    } else if (line[0] == '/') {
      std::fprintf(stderr, "ds4: unknown command: %s (/help lists them)\n", line.c_str());
    } else {
      chat.turn(line, stdout, &interrupt_flag());
    }
  }
  return 0;
}

}  // namespace ds4::cli
