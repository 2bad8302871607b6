// ds4-quantize: DeepSeek V4 checkpoints (or random weights) to GGUF, and GGUF inspection.
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "convert/convert.h"
#include "convert/safetensors.h"
#include "args/args.h"
#include "gguf/gguf.h"

namespace {

constexpr const char* kAbout = R"(Converts DeepSeek V4 checkpoints (or random weights) to GGUF, and inspects GGUF files.

Modes (exactly one):
  ds4-quantize --hf DIR --out FILE.gguf --recipe f32|q8|q2|q4 [options]
  ds4-quantize --synthetic CONFIG.json --out FILE.gguf --recipe f32|q8|q2|q4
               [--layers N] [--seed S] [--sparse-experts] [options]
  ds4-quantize --inspect FILE.gguf
  ds4-quantize --dequantize IN.gguf OUT.gguf [--threads N]

Conversion (--hf): DIR holds config.json (reference ModelArgs or Hugging Face names) and
*.safetensors (model.safetensors.index.json when sharded) with the official tensor names.
Synthetic (--synthetic): random weights for a ModelArgs-form config; --layers N keeps the
first N layers of its schedule (plus the MTP block). --sparse-experts leaves the routed
experts all zero, as holes of a sparse file: the full size to read, little disk (benchmarks).)";

constexpr const char* kRecipes = R"(Recipes:
  f32  every float tensor F32 (exact copies, for tests)
  q8   published types: F16 embedding/HC/router/compressor/indexer, F32 norms/scales,
       Q8_0 attention/shared experts/output head, routed experts Q8_0
  q2   as q8 but routed experts gate/up IQ2_XXS, down Q2_K
  q4   as q8 but routed experts Q4_K)";

}  // namespace

int main(int argc, char** argv) {
  using namespace ds4::convert;
  std::string hf, synthetic, inspect, out, mtp_out, recipe, tokenizer, imatrix, name;
  std::vector<std::string> dequant;
  uint64_t seed = 1;
  uint32_t layers = 0;
  int threads = 0;
  bool no_mtp = false, fallback = false, verbose = false, sparse_experts = false;
  std::optional<Recipe> r;

  ds4::args::Parser p("ds4-quantize", "ds4-quantize MODE [options]", kAbout);
  p.group("Modes");
  p.text("--hf", hf, "DIR", "convert the checkpoint in DIR");
  p.text("--synthetic", synthetic, "CONFIG.json", "random weights for this config");
  p.text("--inspect", inspect, "FILE.gguf", "print the metadata and tensors of a GGUF");
  p.texts("--dequantize", dequant, 2, "IN.gguf OUT.gguf", "write IN with every tensor as F32 to OUT");
  p.group("Options");
  p.text("-o,--out", out, "FILE", "output GGUF");
  p.text("--recipe", recipe, "NAME", "f32, q8, q2 or q4 (see Recipes)");
  p.text("--tokenizer", tokenizer, "FILE", "Hugging Face tokenizer.json (default: a synthetic byte-level vocabulary)");
  p.text("--imatrix", imatrix, "FILE", "importance matrix: llama.cpp GGUF imatrix or legacy .dat");
  p.text("--mtp-out", mtp_out, "FILE", "write the MTP block to this sidecar GGUF instead of the main file");
  p.flag("--no-mtp", no_mtp, "leave the MTP block out");
  p.flag("--f16-fallback", fallback,
         "store tensors whose rows do not fit the recipe's block type as F16\n(default: such a tensor is an error)");
  p.text("--name", name, "NAME", "general.name");
  p.integer("--layers", layers, 1, 100000, "N", "keep the first N layers (--synthetic; default: all)");
  p.flag("--sparse-experts", sparse_experts, "routed experts all zero, as holes of a sparse file (--synthetic)");
  p.unsigned_integer("--seed", seed, UINT64_MAX, "S", "random seed (--synthetic; default 1)");
  p.integer("--threads", threads, 1, 1024, "N", "worker threads (default: all cores)");
  p.flag("-v,--verbose", verbose, "print each tensor as it is written");
  p.footer(kRecipes);
  const ds4::args::Outcome parsed = p.parse(argc, argv, [&] {
    const int modes = !hf.empty() + !synthetic.empty() + !inspect.empty() + !dequant.empty();
    if (modes != 1) throw ds4::args::UsageError("give exactly one of --hf, --synthetic, --inspect, --dequantize");
    if (!inspect.empty() || !dequant.empty()) return;
    if (out.empty()) throw ds4::args::UsageError("--out is required");
    if (recipe.empty()) throw ds4::args::UsageError("--recipe is required");
    r = parse_recipe(recipe);
    if (!r) throw ds4::args::UsageError("unknown recipe '" + recipe + "' (f32, q8, q2 or q4)");
    if (!hf.empty() && (p.count("--layers") || p.count("--seed") || sparse_experts))
      throw ds4::args::UsageError("--layers, --seed and --sparse-experts apply to --synthetic only");
    if (no_mtp && !mtp_out.empty()) throw ds4::args::UsageError("--no-mtp and --mtp-out contradict each other");
  });
  if (parsed.done()) return ds4::args::finish(parsed);
  try {
    if (!inspect.empty()) {
      inspect_gguf(inspect, std::cout);
      return 0;
    }
    if (!dequant.empty()) {
      dequantize_gguf(dequant[0], dequant[1], threads);
      std::cerr << "wrote " << dequant[1] << "\n";
      return 0;
    }
    auto fill = [&](OutputOptions& o) {
      o.out_path = out;
      o.mtp_out_path = mtp_out;
      o.recipe = *r;
      o.tokenizer_path = tokenizer;
      o.imatrix_path = imatrix;
      o.f16_fallback = fallback;
      o.include_mtp = !no_mtp;
      o.name = name;
      o.threads = threads;
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
      o.layers = layers;
      o.seed = seed;
      o.sparse_experts = sparse_experts;
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
