// libFuzzer target for the GGUF reader, with a differential check: every image the reader
// accepts is re-serialised by the Writer and must read back identically. Any other
// exception than gguf::Error, a crash, or a round-trip mismatch is a finding.
//
// Built with -DDS4_FUZZ_REPLAY_MAIN (no libFuzzer), the same entry point gets a plain main()
// that replays files and directories named on the command line, so CI can push a corpus
// through the harness with an ordinary compiler.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "gguf/gguf.h"

namespace {

using ds4::gguf::Error;
using ds4::gguf::File;
using ds4::gguf::TensorInfo;
using ds4::gguf::Value;
using ds4::gguf::Writer;

[[noreturn]] void finding(const std::string& what) {
  std::fprintf(stderr, "fuzz_gguf: %s\n", what.c_str());
  std::abort();
}

// Calls every accessor on every key: each must return or throw Error.
void exercise_accessors(const File& f) {
  for (const auto& entry : f.metadata()) {
    const std::string& key = entry.first;  // clang 14 cannot capture structured bindings
    const Value& value = entry.second;
    if (f.find(key) != &value) finding("find() does not return the stored value for a key");
    auto quiet = [](auto&& fn) {
      try {
        fn();
      } catch (const Error&) {
      }
    };
    quiet([&] { f.get_uint_or(key, 0); });
    quiet([&] { f.get_int_or(key, 0); });
    quiet([&] { f.get_float_or(key, 0); });
    quiet([&] { f.get_bool_or(key, false); });
    quiet([&] { f.get_string_or(key, ""); });
    quiet([&] { f.get_int_array(key); });
    quiet([&] { f.get_float_array(key); });
    quiet([&] { f.get_string_array(key); });
    (void)value.as_number();
    (void)ds4::gguf::value_type_name(value.type);
  }
}

// Touches every tensor byte so that ASan sees any out-of-bounds data pointer.
uint64_t checksum_tensors(const File& f) {
  uint64_t sum = 0;
  for (const TensorInfo& t : f.tensors()) {
    if (f.find_tensor(t.name) != &t) finding("find_tensor() mismatch for " + t.name);
    for (uint64_t k = 0; k < t.nbytes; ++k) sum = sum * 31 + t.data[k];
    sum += t.n_elements() + t.row_bytes();
  }
  return sum;
}

void round_trip(const File& f) {
  std::vector<uint8_t> bytes;
  try {
    Writer w;
    for (const auto& [key, value] : f.metadata()) w.set(key, value);
    for (const TensorInfo& t : f.tensors()) {
      w.add_tensor(t.name, t.type, t.dims, std::vector<uint8_t>(t.data, t.data + t.nbytes));
    }
    bytes = w.to_bytes();
  } catch (const Error& e) {
    finding(std::string("writer rejected what the reader accepted: ") + e.what());
  }
  std::unique_ptr<File> g;
  try {
    g = File::from_memory(bytes.data(), bytes.size(), "round-trip");
  } catch (const Error& e) {
    finding(std::string("reader rejected the writer's output: ") + e.what());
  }
  if (g->alignment() != f.alignment()) finding("alignment changed in the round trip");
  if (g->metadata().size() != f.metadata().size()) finding("metadata count changed");
  for (size_t k = 0; k < f.metadata().size(); ++k) {
    if (g->metadata()[k].first != f.metadata()[k].first ||
        !(g->metadata()[k].second == f.metadata()[k].second)) {
      finding("metadata entry " + std::to_string(k) + " changed in the round trip");
    }
  }
  if (g->tensors().size() != f.tensors().size()) finding("tensor count changed");
  for (size_t k = 0; k < f.tensors().size(); ++k) {
    const TensorInfo& a = f.tensors()[k];
    const TensorInfo& b = g->tensors()[k];
    if (a.name != b.name || a.type != b.type || a.dims != b.dims || a.nbytes != b.nbytes ||
        (a.nbytes && std::memcmp(a.data, b.data, a.nbytes) != 0)) {
      finding("tensor " + a.name + " changed in the round trip");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::unique_ptr<File> f;
  try {
    f = File::from_memory(data, size, "fuzz.gguf");
  } catch (const Error&) {
    return 0;  // rejection is the expected outcome for most inputs
  }
  exercise_accessors(*f);
  volatile uint64_t sink = checksum_tensors(*f);
  (void)sink;
  round_trip(*f);
  return 0;
}

#ifdef DS4_FUZZ_REPLAY_MAIN
#include <filesystem>
#include <fstream>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s FILE_OR_DIR...\n(replays inputs through the GGUF fuzz harness)\n",
                 argv[0]);
    return 2;
  }
  std::vector<std::filesystem::path> inputs;
  for (int i = 1; i < argc; ++i) {
    const std::filesystem::path p(argv[i]);
    std::error_code ec;
    if (std::filesystem::is_directory(p, ec)) {
      for (const auto& e : std::filesystem::recursive_directory_iterator(p)) {
        if (e.is_regular_file()) inputs.push_back(e.path());
      }
    } else if (std::filesystem::is_regular_file(p, ec)) {
      inputs.push_back(p);
    } else {
      std::fprintf(stderr, "%s: no such file or directory\n", argv[i]);
      return 2;
    }
  }
  size_t accepted = 0;
  for (const auto& path : inputs) {
    std::ifstream in(path, std::ios::binary);
    const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                                     std::istreambuf_iterator<char>());
    if (!in.good() && !in.eof()) {
      std::fprintf(stderr, "%s: read failed\n", path.c_str());
      return 2;
    }
    try {
      File::from_memory(bytes.data(), bytes.size());
      ++accepted;
    } catch (const Error&) {
    }
    LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
  }
  std::printf("replayed %zu inputs (%zu accepted by the reader)\n", inputs.size(), accepted);
  return 0;
}
#endif
