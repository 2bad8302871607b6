// `ds4` check mode: run token ids through the engine and dump logits/hidden states as raw
// little-endian f32 (for comparison with the reference oracle).
#pragma once

namespace ds4::app {

// True when argv asks for check mode (any of --tokens-file / --dump-logits).
bool is_check_mode(int argc, char** argv);
// Runs check mode; returns the process exit code (prints errors to stderr).
int run_check(int argc, char** argv);

}  // namespace ds4::app
