// Assembles the output GGUF(s) of a conversion: model metadata, vocabulary, and tensors that
// are produced while the file is written (nothing large is held in memory).
#pragma once

#include <string>
#include <vector>

#include "convert/catalogue.h"
#include "convert/convert.h"
#include "convert/imatrix.h"
#include "convert/vocab.h"
#include "gguf/gguf.h"

namespace ds4::convert {

class ModelWriter {
 public:
  ModelWriter(const OutputOptions& o, const ModelConfig& c, const Vocab& v);
  void note_imatrix(const Imatrix& im);
  void set_meta(std::string key, gguf::Value v) { main_.set(std::move(key), std::move(v)); }
  void add(const PlannedTensor& p, gguf::Writer::Producer produce);
  // An all-zero tensor stored as a hole (gguf::Writer::add_tensor_zeros).
  void add_zeros(const PlannedTensor& p);
  void write(ConvertReport& report);

 private:
  const OutputOptions& o_;
  gguf::Writer main_, mtp_;
  size_t n_main_ = 0, n_mtp_ = 0;
  size_t total_ = 0;
  std::vector<PlannedTensor> planned_;
};

}  // namespace ds4::convert
