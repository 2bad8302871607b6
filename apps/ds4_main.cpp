#include "ds4_check.h"
#include "ds4_cli.h"

int main(int argc, char** argv) {
  // Check mode (--tokens-file / --dump-logits) first; everything else is the chat CLI.
  if (ds4::app::is_check_mode(argc, argv)) return ds4::app::run_check(argc, argv);
  return ds4::cli::run_cli(argc, argv);
}
