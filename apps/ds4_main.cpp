#include <cstdio>
#include <cstring>

#include "ds4_check.h"
#include "ds4_cli.h"

int main(int argc, char** argv) {
  // Check mode (--tokens-file / --dump-logits) first; everything else is the chat CLI.
  if (ds4::app::is_check_mode(argc, argv)) {
    for (int i = 1; i < argc; ++i) {
      if (!std::strcmp(argv[i], "-h") || !std::strcmp(argv[i], "--help")) {
        ds4::app::print_check_usage();
        return 0;
      }
    }
    return ds4::app::run_check(argc, argv);
  }
  return ds4::cli::run_cli(argc, argv);
}
