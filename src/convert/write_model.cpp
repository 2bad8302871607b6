#include "convert/write_model.h"

#include <atomic>
#include <iostream>
#include <memory>

#include "convert/safetensors.h"

namespace ds4::convert {

ModelWriter::ModelWriter(const OutputOptions& o, const ModelConfig& c, const Vocab& v) : o_(o) {
  write_model_metadata(c, main_);
  main_.set("general.quantization_version", gguf::Value::make_u32(2));
  main_.set("quantize.recipe", gguf::Value::make_string(std::string(recipe_name(o.recipe))));
  write_vocab(v, main_);
  if (!o.mtp_out_path.empty()) {
    write_model_metadata(c, mtp_);
    mtp_.set("quantize.recipe", gguf::Value::make_string(std::string(recipe_name(o.recipe))));
  }
}

void ModelWriter::note_imatrix(const Imatrix& im) {
  main_.set("quantize.imatrix.file", gguf::Value::make_string(im.path()));
  main_.set("quantize.imatrix.entries_count", gguf::Value::make_u32(static_cast<uint32_t>(im.size())));
}

void ModelWriter::add(const PlannedTensor& p, gguf::Writer::Producer produce) {
  const bool to_sidecar = p.spec.mtp && !o_.mtp_out_path.empty();
  auto counter = std::make_shared<size_t>(++total_);
  if (o_.verbose) {
    auto inner = std::move(produce);
    const std::string line = p.spec.gguf_name + " " + std::string(quant::type_name(p.type)) + " " +
                             shape_string(p.spec.dims);
    produce = [inner, line, counter, this](uint8_t* dst, uint64_t n) {
      std::cerr << "[" << *counter << "/" << total_ << "] " << line << "\n";
      inner(dst, n);
    };
  }
  (to_sidecar ? mtp_ : main_).add_tensor_lazy(p.spec.gguf_name, p.type, p.spec.dims, std::move(produce));
  (to_sidecar ? n_mtp_ : n_main_)++;
  planned_.push_back(p);
}

void ModelWriter::add_zeros(const PlannedTensor& p) {
  const bool to_sidecar = p.spec.mtp && !o_.mtp_out_path.empty();
  (to_sidecar ? mtp_ : main_).add_tensor_zeros(p.spec.gguf_name, p.type, p.spec.dims);
  (to_sidecar ? n_mtp_ : n_main_)++;
  ++total_;
  planned_.push_back(p);
}

void ModelWriter::write(ConvertReport& report) {
  if (!o_.mtp_out_path.empty() && n_mtp_ == 0)
    throw ConvertError("--mtp-out given but the model has no MTP block to write");
  main_.write(o_.out_path);
  if (!o_.mtp_out_path.empty()) mtp_.write(o_.mtp_out_path);
  report.tensors = planned_.size();
  report.bytes = 0;
  for (const auto& p : planned_) report.bytes += p.nbytes;
}

}  // namespace ds4::convert
