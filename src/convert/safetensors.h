// Read-only access to safetensors checkpoints (one file or a sharded directory), mmapped and
// validated up front so that a damaged file fails with a message instead of a bad read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace ds4::convert {

// Every conversion failure: the message names the file, tensor or key concerned.
struct ConvertError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

enum class StDtype { F64, F32, F16, BF16, F8_E4M3, F8_E5M2, F8_E8M0, I64, I32, I16, I8, U64, U32, U16, U8, BOOL };
std::string_view st_dtype_name(StDtype t);
size_t st_dtype_size(StDtype t);

struct StTensor {
  std::string name;
  StDtype dtype = StDtype::F32;
  std::vector<uint64_t> shape;  // as stored (row-major, outermost first)
  const uint8_t* data = nullptr;
  uint64_t nbytes = 0;
  const std::string* file = nullptr;  // path of the file holding it

  uint64_t n_elements() const;
};

// One mmapped .safetensors file.
class SafetensorsFile {
 public:
  static std::unique_ptr<SafetensorsFile> open(const std::string& path);
  // Parses an in-memory image (copied); for tests.
  static std::unique_ptr<SafetensorsFile> from_memory(const void* data, size_t size,
                                                      std::string name = "<memory>");
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<StTensor>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  SafetensorsFile() = default;
  void parse();

  std::string path_;
  const uint8_t* base_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;
  std::vector<uint8_t> owned_;
  std::vector<StTensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a checkpoint directory: the shards named by model.safetensors.index.json
// when present, otherwise every *.safetensors file in it. A path to a single file also works.
class Checkpoint {
 public:
  static Checkpoint open(const std::string& path);
  // For tests: a checkpoint made of already opened files.
  static Checkpoint from_files(std::vector<std::unique_ptr<SafetensorsFile>> files);

  const StTensor* find(std::string_view name) const;
  const StTensor& require(std::string_view name) const;  // throws ConvertError
  std::vector<std::string> names() const;
  size_t size() const { return by_name_.size(); }

 private:
  void index_files();
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const StTensor*, std::less<>> by_name_;
};

// Reads a float tensor (F64/F32/F16/BF16) of exactly `shape` into f32.
std::vector<float> read_float_tensor(const StTensor& t, const std::vector<uint64_t>& shape);

// How a weight is stored in a checkpoint, checked against the shape it must have.
struct WeightSource {
  enum class Kind { Float, Fp8, Fp4 };
  Kind kind = Kind::Float;
  const StTensor* weight = nullptr;
  const StTensor* scale = nullptr;  // Fp8 / Fp4
  bool scale_f32 = false;           // Fp8 scales stored as F32 instead of e8m0
};
// Validates names, dtypes and shapes without reading data (see read_weight_f32).
WeightSource resolve_weight(const Checkpoint& ck, const std::string& name, const std::vector<uint64_t>& shape);
void read_weight_f32(const WeightSource& src, const std::vector<uint64_t>& shape, float* out);

// Reads a 2-D weight [rows, cols] (official layout: out, in) as f32, whatever its storage:
// a float dtype; F8_E4M3 with a sibling "<base>.scale" (F8_E8M0/U8 or F32, 128x128 blocks);
// or packed FP4 (I8/U8 [rows, cols/2]) with an e8m0 "<base>.scale" [rows, cols/32].
// `name` ends in ".weight"; 1-D float tensors pass through read_float_tensor.
void read_weight_f32(const Checkpoint& ck, const std::string& name,
                     const std::vector<uint64_t>& shape, float* out);

// Reads an integer tensor of `shape` (I64/I32/I16/I8/U8..U64) into i32, range-checked.
std::vector<int32_t> read_int_tensor(const StTensor& t, const std::vector<uint64_t>& shape);

std::string shape_string(const std::vector<uint64_t>& shape);

}  // namespace ds4::convert
