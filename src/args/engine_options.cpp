#include "args/engine_options.h"

#include <climits>
#include <stdexcept>

#include "model/stages.h"
#include "spec/speculative.h"

namespace ds4::args {

EngineOptions EngineFlags::engine_options() const {
  EngineOptions eo;
  eo.threads = threads;
  eo.layer_split = layer_split;
  eo.backend = backend;
  eo.device = device;
  eo.cpu_moe_layers = cpu_moe_layers;
  return eo;
}

void add_engine_options(Parser& p, std::string& model_path, EngineFlags& t) {
  p.text("-m,--model", model_path, "FILE", "GGUF model. Default: " + model_path);
  p.integer("-t,--threads", t.threads, 1, 4096, "N", "Worker threads. Default: all cores");
  p.value(
      "--layer-split",
      [&t = t.layer_split](const std::string& v) {
        try {
          t = model::parse_layer_split(v);
        } catch (const std::invalid_argument& e) {
          throw UsageError(e.what());
        }
      },
      "A,B,...", "Under mpirun: layers per rank (docs/mpi.md). Default: by bytes");
  p.value(
      "-b,--backend",
      [&t = t.backend](const std::string& b) {
        if (!parse_backend(b, &t)) throw UsageError("unknown backend '" + b + "' (cpu or vulkan)");
        if (!has_backend(t)) {
          throw UsageError("backend '" + b + "' is not available in this build (configure with -DDS4_VULKAN=ON)");
        }
      },
      "NAME",
      "cpu or vulkan (builds with Vulkan: the whole model on the GPU).\n"
      "Default: cpu");
  p.flag("--cpu", [&t = t.backend] { t = Backend::Cpu; }, "Same as --backend cpu");
  p.integer("--device", t.device, 0, 1023, "N", "Vulkan device index (see --list-devices). Default: 0");
  p.flag("--cpu-moe", [&t = t.cpu_moe_layers] { t = INT_MAX; },
         "Vulkan: routed experts stay in host memory and run on the CPU");
  p.integer("--n-cpu-moe", t.cpu_moe_layers, 0, INT_MAX, "N", "Vulkan: the same for the first N layers only");
  p.flag("--list-devices", t.list_devices, "Print the Vulkan devices and exit");
}

void add_mtp_options(Parser& p, const MtpTargets& t) {
  p.text("--mtp", t.path, "FILE", "Optional MTP sidecar GGUF. Default: none");
  p.integer("--mtp-draft", t.draft, 0, spec::kMaxDraft, "N",
            "Speculative decoding: draft up to N (1..4) tokens with the MTP\n"
            "block, verify them in one pass; same output as plain decode.\n"
            "An adaptive controller lowers N when it does not pay. Default: 0");
  p.flag("--mtp-fixed", [&t = t.adaptive] { t = false; }, "Keep N fixed (no adaptive controller; for benchmarks)");
}

}  // namespace ds4::args
