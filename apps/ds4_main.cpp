#include "ds4/engine.h"
#include "ds4_check.h"
#include "ds4_cli.h"

int main(int argc, char** argv) {
  ds4::init_cluster(&argc, &argv);  // under mpirun: ranks other than 0 serve their stage
  // Check mode (--tokens-file / --dump-logits) first; everything else is the chat CLI.
  if (ds4::app::is_check_mode(argc, argv)) return ds4::app::run_check(argc, argv);
  return ds4::cli::run_cli(argc, argv);
}
