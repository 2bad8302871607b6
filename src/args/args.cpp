#include "args/args.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>

namespace ds4::args {

namespace {

constexpr size_t kNameColumn = 26;  // descriptions start here in --help

// CLI11 flags keep a type size of 1 but expect no value.
bool takes_value(const CLI::Option* o) { return o->get_expected_max() > 0 && o->get_type_size_max() > 0; }

std::string trim_number(double v) {
  std::ostringstream o;
  o << v;
  return o.str();
}

}  // namespace

const char* version() { return DS4_VERSION; }

int finish(const Outcome& o) {
  if (!o.out.empty()) std::fputs(o.out.c_str(), stdout);
  if (!o.err.empty()) std::fputs(o.err.c_str(), stderr);
  return o.exit_code;
}

Parser::Parser(std::string program, std::string usage, std::string about)
    : program_(std::move(program)), usage_(std::move(usage)), about_(std::move(about)),
      app_(std::make_unique<CLI::App>(about_, program_)) {
  // A repeated option keeps its last value, as the hand-written parsers did.
  app_->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app_->set_help_flag("-h,--help", "Show this help and exit.")->group("General");
  app_->set_version_flag("--version", version(), "Show the version and exit.")->group("General");
}

Parser::~Parser() = default;

void Parser::group(std::string title) { group_ = std::move(title); }
void Parser::footer(std::string text) { footer_ = std::move(text); }

CLI::Option* Parser::flag(const std::string& names, bool& target, const std::string& help) {
  return app_->add_flag(names, target, help)->group(group_);
}

CLI::Option* Parser::flag(const std::string& names, std::function<void()> on_set,
                          const std::string& help) {
  CLI::Option* o = app_->add_flag(names, help)->group(group_);
  deferred_.push_back({o, nullptr, [f = std::move(on_set)](const std::string&) { f(); }});
  return o;
}

CLI::Option* Parser::text(const std::string& names, std::string& target, const std::string& value,
                          const std::string& help) {
  return app_->add_option(names, target, help)->type_name(value)->group(group_);
}

CLI::Option* Parser::texts(const std::string& names, std::vector<std::string>& target, int n,
                           const std::string& value, const std::string& help) {
  return app_->add_option(names, target, help)->type_size(n)->type_name(value)->group(group_);
}

CLI::Option* Parser::value(const std::string& names, std::function<void(const std::string&)> set,
                           const std::string& value, const std::string& help) {
  std::string& raw = raw_.emplace_back();
  CLI::Option* o = app_->add_option(names, raw, help)->type_name(value)->group(group_);
  deferred_.push_back({o, &raw, std::move(set)});
  return o;
}

CLI::Option* Parser::unsigned_integer(const std::string& names, uint64_t& target, uint64_t hi,
                                      const std::string& value, const std::string& help) {
  return this->value(names, [&target, hi](const std::string& s) { target = parse_unsigned(s, hi); },
                     value, help);
}

void Parser::alias(const std::string& spelling, const std::string& name, bool shown) {
  aliases_.push_back({spelling, name, shown});
}

int64_t Parser::parse_integer(const std::string& s, int64_t lo, int64_t hi) {
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) {
    if (ec == std::errc::result_out_of_range) {
      throw UsageError("must be between " + std::to_string(lo) + " and " + std::to_string(hi));
    }
    throw UsageError("expected an integer");
  }
  if (v < lo || v > hi) throw UsageError("must be between " + std::to_string(lo) + " and " + std::to_string(hi));
  return v;
}

uint64_t Parser::parse_unsigned(const std::string& s, uint64_t hi) {
  uint64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) {
    throw UsageError("expected a non-negative integer");
  }
  if (v > hi) throw UsageError("must be at most " + std::to_string(hi));
  return v;
}

double Parser::parse_number(const std::string& s, double lo, double hi, bool lo_open) {
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (s.empty() || *end != '\0' || !std::isfinite(v)) throw UsageError("expected a number");
  if (v < lo || v > hi || (lo_open && v == lo)) {
    throw UsageError("must be in " + std::string(lo_open ? "(" : "[") + trim_number(lo) + ", " +
                     trim_number(hi) + "]");
  }
  return v;
}

CLI::Option* Parser::find(const std::string& name) const {
  return app_->get_option_no_throw(name);
}

size_t Parser::count(const std::string& name) const {
  const CLI::Option* o = find(name);
  return o ? o->count() : 0;
}

// Aliases become their option's name; values are copied untouched (a prompt may well be
// "-sys"), and everything after "--" too.
std::vector<std::string> Parser::translate(const std::vector<std::string>& args) const {
  std::vector<std::string> out;
  out.reserve(args.size());
  for (size_t i = 0; i < args.size(); ++i) {
    std::string a = args[i];
    if (a == "--") {
      out.insert(out.end(), args.begin() + static_cast<std::ptrdiff_t>(i), args.end());
      break;
    }
    for (const Alias& al : aliases_) {
      if (a == al.spelling) {
        a = al.name;
      } else if (a.rfind(al.spelling + "=", 0) == 0) {
        a = al.name + a.substr(al.spelling.size());
      }
    }
    out.push_back(a);
    if (a.size() < 2 || a[0] != '-' || a.find('=') != std::string::npos) continue;
    if (const CLI::Option* o = find(a); o && takes_value(o)) {
      const int values = std::max(1, o->get_items_expected_min());
      for (int k = 0; k < values && i + 1 < args.size(); ++k) out.push_back(args[++i]);
    }
  }
  return out;
}

std::string Parser::error_line(const std::string& message) const {
  return program_ + ": " + message + " (see " + (help_command_.empty() ? program_ + " --help" : help_command_) + ")\n";
}

Outcome Parser::parse(int argc, const char* const* argv, const std::function<void()>& check) {
  return parse(std::vector<std::string>(argv + (argc > 0 ? 1 : 0), argv + argc), check);
}

Outcome Parser::parse(const std::vector<std::string>& args, const std::function<void()>& check) {
  Outcome r;
  std::vector<std::string> reversed = translate(args);
  std::reverse(reversed.begin(), reversed.end());
  try {
    app_->parse(reversed);
  } catch (const CLI::CallForHelp&) {
    r.exit_code = 0;
    r.out = help();
    return r;
  } catch (const CLI::CallForAllHelp&) {
    r.exit_code = 0;
    r.out = help();
    return r;
  } catch (const CLI::CallForVersion&) {
    r.exit_code = 0;
    r.out = program_ + " " + version() + "\n";
    return r;
  } catch (const CLI::ExtrasError&) {
    const std::vector<std::string> left = app_->remaining();
    const std::string first = left.empty() ? "?" : left.front();
    r.exit_code = 2;
    r.err = error_line((first.size() > 1 && first[0] == '-' ? "unknown option: " : "unexpected argument: ") + first);
    return r;
  } catch (const CLI::ArgumentMismatch& e) {
    // CLI11 says "NAME: N required TYPE missing" when the arguments ran out.
    const std::string what = e.what();
    const size_t colon = what.find(':');
    r.exit_code = 2;
    r.err = error_line(what.find("required") != std::string::npos && colon != std::string::npos
                           ? "missing value for " + what.substr(0, colon)
                           : what);
    return r;
  } catch (const CLI::ParseError& e) {
    r.exit_code = 2;
    r.err = error_line(e.what());
    return r;
  }
  try {
    // Applied in the order given on the command line (each at its last occurrence), so
    // "--nothink --think-max" ends in Think Max and "--think-max --think" does not.
    // (CLI11 2.1 keeps the order of earlier parses too: options not given now are skipped.)
    std::vector<const Deferred*> given;
    const std::vector<CLI::Option*>& order = app_->parse_order();
    for (size_t i = order.size(); i-- > 0;) {
      for (const Deferred& d : deferred_) {
        if (d.option == order[i] && d.option->count() > 0 &&
            std::find(given.begin(), given.end(), &d) == given.end()) {
          given.push_back(&d);
        }
      }
    }
    std::reverse(given.begin(), given.end());
    for (const Deferred* dp : given) {
      const Deferred& d = *dp;
      if (!d.raw) {
        d.set("");
        continue;
      }
      try {
        d.set(*d.raw);
      } catch (const UsageError& e) {
        throw UsageError("invalid value for " + d.option->get_name() + ": '" + *d.raw + "' (" + e.what() + ")");
      }
    }
    if (check) check();
  } catch (const UsageError& e) {
    r.exit_code = 2;
    r.err = error_line(e.what());
  }
  return r;
}

std::string Parser::help() const {
  std::string h = "Usage: " + usage_ + "\n";
  if (!about_.empty()) h += "\n" + about_ + "\n";
  std::vector<std::string> groups;
  const std::vector<const CLI::Option*> options = static_cast<const CLI::App&>(*app_).get_options();
  for (const CLI::Option* o : options) {
    const std::string& g = o->get_group();
    if (!g.empty() && std::find(groups.begin(), groups.end(), g) == groups.end()) groups.push_back(g);
  }
  // General (help, version) comes last.
  if (auto it = std::find(groups.begin(), groups.end(), "General"); it != groups.end()) {
    groups.erase(it);
    groups.push_back("General");
  }
  for (const std::string& g : groups) {
    h += "\n" + g + ":\n";
    for (const CLI::Option* o : options) {
      if (o->get_group() != g) continue;
      std::vector<std::string> shorts, longs;
      for (const std::string& s : o->get_snames()) shorts.push_back("-" + s);
      for (const std::string& l : o->get_lnames()) longs.push_back("--" + l);
      for (const Alias& al : aliases_) {
        if (!al.shown || !o->check_name(al.name)) continue;
        (al.spelling.rfind("--", 0) == 0 ? longs : shorts).push_back(al.spelling);
      }
      std::string names = shorts.empty() ? "      " : "  ";
      for (size_t i = 0; i < shorts.size() + longs.size(); ++i) {
        if (i) names += ", ";
        names += i < shorts.size() ? shorts[i] : longs[i - shorts.size()];
      }
      if (takes_value(o)) names += " " + o->get_type_name();
      h += names;
      if (names.size() + 2 > kNameColumn) {  // at least two spaces before a description
        h += "\n" + std::string(kNameColumn, ' ');
      } else {
        h += std::string(kNameColumn - names.size(), ' ');
      }
      for (const char c : o->get_description()) {
        h += c;
        if (c == '\n') h += std::string(kNameColumn, ' ');
      }
      h += "\n";
    }
  }
  if (!footer_.empty()) h += "\n" + footer_ + (footer_.back() == '\n' ? "" : "\n");
  h += "\nExit status: 0 success, 1 failure, 2 bad command line.\n";
  return h;
}

}  // namespace ds4::args
