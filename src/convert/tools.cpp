// --inspect and --dequantize.
#include <cstring>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "convert/convert.h"
#include "convert/parallel.h"
#include "convert/safetensors.h"
#include "gguf/gguf.h"
#include "quant/quant.h"

namespace ds4::convert {

namespace {

std::string scalar_text(const gguf::Value& v) {
  using gguf::ValueType;
  std::ostringstream s;
  switch (v.type) {
    case ValueType::STRING: {
      std::string t = v.s;
      if (t.size() > 80) t = t.substr(0, 77) + "...";
      s << '"' << t << '"';
      break;
    }
    case ValueType::BOOL: s << (v.u ? "true" : "false"); break;
    case ValueType::FLOAT32:
    case ValueType::FLOAT64: s << std::setprecision(9) << v.f; break;
    case ValueType::INT8:
    case ValueType::INT16:
    case ValueType::INT32:
    case ValueType::INT64: s << v.i; break;
    case ValueType::ARRAY: s << "[array]"; break;
    default: s << v.u; break;
  }
  return s.str();
}

std::string value_text(const gguf::Value& v) {
  if (v.type != gguf::ValueType::ARRAY) return std::string(gguf::value_type_name(v.type)) + " " + scalar_text(v);
  std::ostringstream s;
  s << "[" << gguf::value_type_name(v.elem_type) << " x " << v.array.size() << "] ";
  const size_t show = v.array.size() <= 16 ? v.array.size() : 8;
  for (size_t i = 0; i < show; ++i) s << (i ? ", " : "") << scalar_text(v.array[i]);
  if (show < v.array.size()) s << ", ... (" << v.array.size() - show << " more)";
  return s.str();
}

std::string dims_text(const std::vector<uint64_t>& d) { return shape_string(d); }

}  // namespace

void inspect_gguf(const std::string& path, std::ostream& out) {
  const auto f = gguf::File::open(path);
  out << "file: " << path << "\n";
  out << "gguf version " << f->version() << ", alignment " << f->alignment() << ", " << f->metadata().size()
      << " metadata keys, " << f->tensors().size() << " tensors\n\n";
  out << "metadata:\n";
  for (const auto& [k, v] : f->metadata()) out << "  " << k << " = " << value_text(v) << "\n";
  out << "\ntensors:\n";
  size_t w = 4;
  for (const auto& t : f->tensors()) w = std::max(w, t.name.size());
  out << "  " << std::left << std::setw(static_cast<int>(w)) << "name" << "  " << std::setw(8) << "type"
      << "  " << std::setw(24) << "dims" << "  " << std::right << std::setw(14) << "bytes" << "\n";
  uint64_t total = 0;
  for (const auto& t : f->tensors()) {
    out << "  " << std::left << std::setw(static_cast<int>(w)) << t.name << "  " << std::setw(8)
        << quant::type_name(t.type) << "  " << std::setw(24) << dims_text(t.dims) << "  " << std::right
        << std::setw(14) << t.nbytes << "\n";
    total += t.nbytes;
  }
  out << "\ntotal: " << f->tensors().size() << " tensors, " << total << " bytes of tensor data ("
      << std::fixed << std::setprecision(2) << static_cast<double>(total) / (1024.0 * 1024.0) << " MiB), file "
      << f->file_size() << " bytes\n";
}

void dequantize_gguf(const std::string& in_path, const std::string& out_path, int threads) {
  const auto f = gguf::File::open(in_path);
  gguf::Writer w;
  w.set_alignment(f->alignment());
  for (const auto& [k, v] : f->metadata())
    if (k != "general.alignment") w.set(k, v);
  w.set("quantize.dequantized_from", gguf::Value::make_string(in_path));
  cpu::ThreadPool pool(converter_pool(threads));
  for (const auto& t : f->tensors()) {
    const bool keep = t.type == quant::Type::F32 || t.type == quant::Type::I32 || t.type == quant::Type::I8 ||
                      t.type == quant::Type::I16 || t.type == quant::Type::I64 || t.type == quant::Type::F64;
    const gguf::TensorInfo* ti = &t;
    if (keep) {
      w.add_tensor_lazy(t.name, t.type, t.dims, [ti](uint8_t* dst, uint64_t n) { std::memcpy(dst, ti->data, n); });
      continue;
    }
    const auto info = quant::type_info(static_cast<uint32_t>(t.type));
    if (!info || !info->engine_supported)
      throw ConvertError(in_path + ": tensor " + t.name + " has type " + std::string(quant::type_name(t.type)) +
                         " which cannot be dequantized");
    w.add_tensor_lazy(t.name, quant::Type::F32, t.dims, [ti, &pool](uint8_t* dst, uint64_t n) {
      const uint64_t cols = ti->ne(0), rows = ti->n_elements() / std::max<uint64_t>(1, cols);
      if (n != rows * cols * 4) throw ConvertError(ti->name + ": unexpected dequantized size");
      const uint64_t rb = ti->row_bytes();
      parallel_for(pool, rows, [&](size_t r) {
        quant::dequantize_row(ti->type, ti->data + r * rb, reinterpret_cast<float*>(dst) + r * cols,
                              static_cast<int64_t>(cols));
      });
    });
  }
  w.write(out_path);
}

}  // namespace ds4::convert
