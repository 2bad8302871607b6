// The engine flags every binary that opens a model takes (ds4, ds4-server, ds4-bench):
// described once so that their names, ranges, errors and --help lines agree.
#pragma once

#include <string>
#include <vector>

#include "args/args.h"
#include "ds4/engine.h"

namespace ds4::args {

// Where the parsed engine flags go (fields of the binary's own option struct).
struct EngineTargets {
  std::string& model_path;        // -m, --model (its value now is the default --help names)
  int& threads;                   // -t, --threads (0 stays "all cores" when not given)
  std::vector<int>& layer_split;  // --layer-split
  Backend& backend;               // -b, --backend; --cpu
  int& device;                    // --device
  int& cpu_moe_layers;            // --cpu-moe (INT_MAX), --n-cpu-moe N
  bool& list_devices;             // --list-devices
};

// Adds the flags above to the parser's current group.
void add_engine_options(Parser& p, const EngineTargets& t);

// Speculative decoding with the MTP block (ds4, ds4-server).
struct MtpTargets {
  std::string& path;  // --mtp FILE
  int& draft;         // --mtp-draft N
  bool& adaptive;     // --mtp-fixed clears it
};
void add_mtp_options(Parser& p, const MtpTargets& t);

}  // namespace ds4::args
