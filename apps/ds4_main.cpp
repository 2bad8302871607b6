#include <cstdio>
#include <cstring>

#include "ds4_check.h"

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "-h") || !std::strcmp(argv[i], "--help")) {
      ds4::app::print_check_usage();
      return 0;
    }
  }
  if (ds4::app::is_check_mode(argc, argv)) return ds4::app::run_check(argc, argv);
  std::fprintf(stderr, "ds4: nothing to do (only check mode is available; see --help)\n");
  return 2;
}
