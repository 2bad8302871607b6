// One command-line parser for every ds4 binary, built on CLI11.
//
// Each binary describes its options here and fills its own option struct from them; the
// parser gives all of them the same --help layout, the same --version, and the same
// one-line errors with exit code 2. CLI11 does the syntax (names, values, "--name=value");
// values are converted and range-checked here after the parse, so --help wins over a bad
// value and every value error reads "invalid value for --flag: 'text' (why)".
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace CLI {
class App;
class Option;
}  // namespace CLI

namespace ds4::args {

// The project version (CMake's project(VERSION)).
const char* version();

// A usage error: thrown by a binary's own checks (a bad combination, an unreadable input
// named on the command line); the parser reports it like any other and exits 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// What parsing decided.
struct Outcome {
  int exit_code = -1;  // -1: run the program; 0: help or version printed; 2: usage error
  std::string out;     // for stdout (help, version)
  std::string err;     // for stderr: "PROGRAM: message (see PROGRAM --help)\n"
  bool done() const { return exit_code >= 0; }
};

// Writes the texts of a finished outcome and returns its exit code.
int finish(const Outcome& o);

class Parser {
 public:
  // `usage`: the synopsis after "Usage: " (e.g. "ds4-server [options]"); `about`: what the
  // program does, a paragraph under it.
  Parser(std::string program, std::string usage, std::string about);
  ~Parser();
  Parser(const Parser&) = delete;
  Parser& operator=(const Parser&) = delete;

  // Options added after this call are listed under `title` in --help.
  void group(std::string title);
  // Text printed after the options (exit codes are always added).
  void footer(std::string text);
  // The command that error lines point to; default "PROGRAM --help".
  void help_command(std::string command) { help_command_ = std::move(command); }

  // `names` as CLI11 takes them: "-m,--model". `value` names the value in --help ("FILE").
  // `help` is the description; a "\n" starts an indented continuation line.
  CLI::Option* flag(const std::string& names, bool& target, const std::string& help);
  // A flag whose effect is not a bool: `on_set` runs after the parse when it was given.
  CLI::Option* flag(const std::string& names, std::function<void()> on_set, const std::string& help);
  CLI::Option* text(const std::string& names, std::string& target, const std::string& value,
                    const std::string& help);
  // An option taking exactly `n` values ("--dequantize IN OUT").
  CLI::Option* texts(const std::string& names, std::vector<std::string>& target, int n,
                     const std::string& value, const std::string& help);
  // Any value: `set` converts it after the parse; throwing UsageError there reports
  // "invalid value for NAME: 'TEXT' (what())".
  CLI::Option* value(const std::string& names, std::function<void(const std::string&)> set,
                     const std::string& value, const std::string& help);
  // Integers in [lo, hi]; `number` takes finite decimals in [lo, hi], (lo, hi] when lo_open.
  template <class T>
  CLI::Option* integer(const std::string& names, T& target, int64_t lo, int64_t hi,
                       const std::string& value, const std::string& help) {
    return this->value(
        names, [&target, lo, hi](const std::string& s) { target = static_cast<T>(parse_integer(s, lo, hi)); },
        value, help);
  }
  CLI::Option* unsigned_integer(const std::string& names, uint64_t& target, uint64_t hi,
                                const std::string& value, const std::string& help);
  template <class T>
  CLI::Option* number(const std::string& names, T& target, double lo, double hi, bool lo_open,
                      const std::string& value, const std::string& help) {
    return this->value(
        names,
        [&target, lo, hi, lo_open](const std::string& s) { target = static_cast<T>(parse_number(s, lo, hi, lo_open)); },
        value, help);
  }
  // Another spelling of `name`: one dash and several letters ("-sys", "-np", which CLI11
  // cannot name), or an old long name. `shown`: listed beside `name` in --help.
  void alias(const std::string& spelling, const std::string& name, bool shown);

  // Parses the arguments (program name excluded). `check` runs after every value is set;
  // it may throw UsageError.
  Outcome parse(const std::vector<std::string>& args, const std::function<void()>& check = {});
  Outcome parse(int argc, const char* const* argv, const std::function<void()>& check = {});

  std::string help() const;
  const std::string& program() const { return program_; }
  // How many times the option named `name` (any of its names) was given in the last parse.
  size_t count(const std::string& name) const;

  // Exposed for the converters above and for tests.
  static int64_t parse_integer(const std::string& s, int64_t lo, int64_t hi);
  static uint64_t parse_unsigned(const std::string& s, uint64_t hi);
  static double parse_number(const std::string& s, double lo, double hi, bool lo_open);

 private:
  struct Deferred {
    CLI::Option* option;
    std::string* raw;
    std::function<void(const std::string&)> set;
  };
  struct Alias {
    std::string spelling, name;
    bool shown;
  };
  std::vector<std::string> translate(const std::vector<std::string>& args) const;
  std::string error_line(const std::string& message) const;
  CLI::Option* find(const std::string& name) const;

  std::string program_, usage_, about_, footer_, group_ = "Options", help_command_;
  std::unique_ptr<CLI::App> app_;
  std::deque<std::string> raw_;  // stable storage of raw values
  std::vector<Deferred> deferred_;
  std::vector<Alias> aliases_;
  friend class HelpFormatter;
};

}  // namespace ds4::args
