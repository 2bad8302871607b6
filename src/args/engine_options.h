// The engine flags every binary that opens a model takes (ds4, ds4-server, ds4-bench):
// described once so that their names, ranges, errors and --help lines agree.
#pragma once

#include <string>
#include <vector>

#include "args/args.h"
#include "ds4/engine.h"

namespace ds4::args {

// The engine flags as parsed; the option structs of ds4, ds4-server and ds4-bench derive
// from it, so each reads them under the same names and opens its engine alike.
struct EngineFlags {
  int threads = 0;                 // -t, --threads; 0: all cores
  std::vector<int> layer_split;    // --layer-split: layers per MPI rank; empty: by bytes
  Backend backend = Backend::Cpu;  // -b, --backend; --cpu
  int device = 0;                  // --device (Vulkan)
  int cpu_moe_layers = 0;          // --cpu-moe (INT_MAX), --n-cpu-moe N
  bool list_devices = false;       // --list-devices: print them and exit

  // EngineOptions with these settings, the other fields at their defaults.
  EngineOptions engine_options() const;
};

// Adds -m/--model (bound to `model_path`, whose value now is the default --help names) and
// the flags of `f` to the parser's current group.
void add_engine_options(Parser& p, std::string& model_path, EngineFlags& f);

// Speculative decoding with the MTP block (ds4, ds4-server).
struct MtpTargets {
  std::string& path;  // --mtp FILE
  int& draft;         // --mtp-draft N
  bool& adaptive;     // --mtp-fixed clears it
};
void add_mtp_options(Parser& p, const MtpTargets& t);

}  // namespace ds4::args
