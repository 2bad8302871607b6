// ds4-quantize: DeepSeek V4 checkpoints (or random weights) to GGUF, and GGUF inspection.
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "convert/convert.h"
#include "convert/safetensors.h"
#include "gguf/gguf.h"

namespace {

constexpr const char* kUsage = R"(usage:
  ds4-quantize --hf DIR --out FILE.gguf --recipe f32|q8|q2|q4 [options]
  ds4-quantize --synthetic CONFIG.json --out FILE.gguf --recipe f32|q8|q2|q4
               [--layers N] [--seed S] [options]
  ds4-quantize --inspect FILE.gguf
  ds4-quantize --dequantize IN.gguf OUT.gguf [--threads N]

Conversion (--hf): DIR holds config.json (reference ModelArgs or Hugging Face names) and
*.safetensors (model.safetensors.index.json when sharded) with the official tensor names.
Synthetic (--synthetic): random weights for a ModelArgs-form config; --layers N keeps the
first N layers of its schedule (plus the MTP block).

Recipes:
  f32  every float tensor F32 (exact copies, for tests)
  q8   published types: F16 embedding/HC/router/compressor/indexer, F32 norms/scales,
       Q8_0 attention/shared experts/output head, routed experts Q8_0
  q2   as q8 but routed experts gate/up IQ2_XXS, down Q2_K
  q4   as q8 but routed experts Q4_K

Options:
  --tokenizer FILE   Hugging Face tokenizer.json (default: a synthetic byte-level vocabulary)
  --imatrix FILE     importance matrix: llama.cpp GGUF imatrix or legacy .dat
  --mtp-out FILE     write the MTP block to this sidecar GGUF instead of the main file
  --no-mtp           leave the MTP block out
  --f16-fallback     store tensors whose rows do not fit the recipe's block type as F16
                     (default: such a tensor is an error)
  --name NAME        general.name
  --threads N        worker threads (default: all cores)
  --verbose          print each tensor as it is written
  --help             this text

Exit status: 0 success, 1 error, 2 bad arguments.
)";

[[noreturn]] void usage_error(const std::string& msg) {
  std::cerr << "ds4-quantize: " << msg << "\n(run ds4-quantize --help for usage)\n";
  std::exit(2);
}

uint64_t parse_uint(const std::string& opt, const std::string& v) {
  if (v.empty() || v.find_first_not_of("0123456789") != std::string::npos || v.size() > 19)
    usage_error(opt + " needs a non-negative integer, got '" + v + "'");
  return std::stoull(v);
}

}  // namespace

int main(int argc, char** argv) {
  using namespace ds4::convert;
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) usage_error("no arguments");
  std::string hf, synthetic, inspect, out, mtp_out, recipe, tokenizer, imatrix, name;
  std::vector<std::string> dequant;
  std::optional<uint64_t> layers, seed, threads;
  bool no_mtp = false, fallback = false, verbose = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= args.size()) usage_error(a + " needs a value");
      return args[++i];
    };
    if (a == "--help" || a == "-h") {
      std::cout << kUsage;
      return 0;
    } else if (a == "--hf") hf = value();
    else if (a == "--synthetic") synthetic = value();
    else if (a == "--inspect") inspect = value();
    else if (a == "--dequantize") {
      dequant.push_back(value());
      dequant.push_back(value());
    } else if (a == "--out" || a == "-o") out = value();
    else if (a == "--mtp-out") mtp_out = value();
    else if (a == "--recipe") recipe = value();
    else if (a == "--tokenizer") tokenizer = value();
    else if (a == "--imatrix") imatrix = value();
    else if (a == "--name") name = value();
    else if (a == "--layers") layers = parse_uint(a, value());
    else if (a == "--seed") seed = parse_uint(a, value());
    else if (a == "--threads") threads = parse_uint(a, value());
    else if (a == "--no-mtp") no_mtp = true;
    else if (a == "--f16-fallback") fallback = true;
    else if (a == "--verbose" || a == "-v") verbose = true;
    else usage_error("unknown argument '" + a + "'");
  }
  const int modes = !hf.empty() + !synthetic.empty() + !inspect.empty() + !dequant.empty();
  if (modes != 1) usage_error("give exactly one of --hf, --synthetic, --inspect, --dequantize");
  if (threads && (*threads == 0 || *threads > 1024)) usage_error("--threads must be 1..1024");
  try {
    if (!inspect.empty()) {
      inspect_gguf(inspect, std::cout);
      return 0;
    }
    if (!dequant.empty()) {
      dequantize_gguf(dequant[0], dequant[1], threads ? static_cast<int>(*threads) : 0);
      std::cerr << "wrote " << dequant[1] << "\n";
      return 0;
    }
    if (out.empty()) usage_error("--out is required");
    if (recipe.empty()) usage_error("--recipe is required");
    const auto r = parse_recipe(recipe);
    if (!r) usage_error("unknown recipe '" + recipe + "' (f32, q8, q2 or q4)");
    if (!hf.empty() && (layers || seed)) usage_error("--layers and --seed apply to --synthetic only");
    if (no_mtp && !mtp_out.empty()) usage_error("--no-mtp and --mtp-out contradict each other");
    if (layers && *layers == 0) usage_error("--layers must be at least 1");
    if (layers && *layers > 100000) usage_error("--layers is too large");
    auto fill = [&](OutputOptions& o) {
      o.out_path = out;
      o.mtp_out_path = mtp_out;
      o.recipe = *r;
      o.tokenizer_path = tokenizer;
      o.imatrix_path = imatrix;
      o.f16_fallback = fallback;
      o.include_mtp = !no_mtp;
      o.name = name;
      o.threads = threads ? static_cast<int>(*threads) : 0;
      o.verbose = verbose;
    };
    ConvertReport rep;
    if (!hf.empty()) {
      ConvertOptions o;
      fill(o);
      o.hf_dir = hf;
      rep = convert_checkpoint(o);
    } else {
      SyntheticOptions o;
      fill(o);
      o.config_path = synthetic;
      o.layers = layers ? static_cast<uint32_t>(*layers) : 0;
      o.seed = seed ? *seed : 1;
      rep = write_synthetic(o);
    }
    for (const auto& f : rep.fallbacks) std::cerr << "note: stored as F16: " << f << "\n";
    if (!rep.unused_sources.empty()) {
      std::cerr << "note: " << rep.unused_sources.size() << " checkpoint tensor(s) not used:";
      for (size_t i = 0; i < rep.unused_sources.size() && i < 10; ++i) std::cerr << " " << rep.unused_sources[i];
      std::cerr << (rep.unused_sources.size() > 10 ? " ..." : "") << "\n";
    }
    std::cerr << "wrote " << out << (mtp_out.empty() ? "" : " and " + mtp_out) << ": " << rep.tensors
              << " tensors, " << rep.bytes << " bytes of tensor data\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "ds4-quantize: error: " << e.what() << "\n";
    return 1;
  }
}
