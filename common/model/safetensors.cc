#include "common/model/safetensors.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <utility>

#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/util/file_util.h"
#include "common/util/status_macros.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors I/O assumes a little-endian host");

namespace rlhf::model {
namespace {

using Json = nlohmann::json;

// Headers above this size are rejected before parsing (the reference implementation uses 100 MB).
constexpr uint64_t kMaxHeaderBytes = 100u << 20;
constexpr char kMetadataKey[] = "__metadata__";

struct DtypeInfo {
  SafetensorsDtype dtype;
  const char* name;
  size_t item_size;
  c10::ScalarType scalar_type;
};

constexpr DtypeInfo kDtypes[] = {
    {SafetensorsDtype::kF64, "F64", 8, c10::ScalarType::Double},
    {SafetensorsDtype::kF32, "F32", 4, c10::ScalarType::Float},
    {SafetensorsDtype::kF16, "F16", 2, c10::ScalarType::Half},
    {SafetensorsDtype::kBF16, "BF16", 2, c10::ScalarType::BFloat16},
    {SafetensorsDtype::kI64, "I64", 8, c10::ScalarType::Long},
    {SafetensorsDtype::kI32, "I32", 4, c10::ScalarType::Int},
    {SafetensorsDtype::kI16, "I16", 2, c10::ScalarType::Short},
    {SafetensorsDtype::kI8, "I8", 1, c10::ScalarType::Char},
    {SafetensorsDtype::kU8, "U8", 1, c10::ScalarType::Byte},
    {SafetensorsDtype::kBool, "BOOL", 1, c10::ScalarType::Bool},
};

const DtypeInfo& Info(SafetensorsDtype dtype) {
  for (const DtypeInfo& info : kDtypes) {
    if (info.dtype == dtype) return info;
  }
  return kDtypes[0];  // unreachable: every enumerator is in the table
}

const DtypeInfo* InfoByName(const std::string& name) {
  for (const DtypeInfo& info : kDtypes) {
    if (name == info.name) return &info;
  }
  return nullptr;
}

const DtypeInfo* InfoByScalarType(c10::ScalarType type) {
  for (const DtypeInfo& info : kDtypes) {
    if (info.scalar_type == type) return &info;
  }
  return nullptr;
}

bool IsFloating(SafetensorsDtype d) {
  return d == SafetensorsDtype::kF64 || d == SafetensorsDtype::kF32 || d == SafetensorsDtype::kF16 ||
         d == SafetensorsDtype::kBF16;
}

std::string ShapeString(const std::vector<int64_t>& shape) { return absl::StrCat("[", absl::StrJoin(shape, ","), "]"); }

absl::Status Bad(const std::string& source, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", message));
}

uint64_t ReadLe64(const char* p) {
  uint64_t v = 0;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

}  // namespace

absl::string_view SafetensorsDtypeName(SafetensorsDtype dtype) { return Info(dtype).name; }

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  ASSIGN_OR_RETURN(std::string bytes, util::ReadFile(path));
  return Parse(std::move(bytes), path);
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Parse(std::string bytes, std::string source) {
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile(std::move(bytes), std::move(source)));
  RETURN_IF_ERROR(file->ParseHeader());
  return file;
}

absl::Status SafetensorsFile::ParseHeader() {
  const uint64_t size = bytes_.size();
  if (size < 8) {
    return Bad(source_, absl::StrCat("truncated file: ", size, " bytes, need at least 8 for the header length"));
  }
  const uint64_t header_len = ReadLe64(bytes_.data());
  if (header_len > kMaxHeaderBytes) {
    return Bad(source_, absl::StrCat("header length ", header_len, " exceeds the limit of ", kMaxHeaderBytes));
  }
  if (header_len > size - 8) {
    return Bad(source_, absl::StrCat("header length ", header_len, " goes beyond the end of the file (", size,
                                     " bytes): truncated file?"));
  }
  if (header_len < 2 || bytes_[8] != '{') return Bad(source_, "header is not a JSON object");
  data_start_ = 8 + header_len;
  const uint64_t data_size = size - data_start_;

  Json header;
  try {
    header = Json::parse(bytes_.begin() + 8, bytes_.begin() + static_cast<std::ptrdiff_t>(data_start_));
  } catch (const Json::exception& e) {
    return Bad(source_, absl::StrCat("bad JSON header: ", e.what()));
  }
  if (!header.is_object()) return Bad(source_, "header is not a JSON object");

  std::vector<std::pair<std::string, const SafetensorsEntry*>> by_offset;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const Json& value = it.value();
    if (name == kMetadataKey) {
      if (!value.is_object()) return Bad(source_, "__metadata__ is not a JSON object");
      for (auto m = value.begin(); m != value.end(); ++m) {
        if (!m.value().is_string()) {
          return Bad(source_, absl::StrCat("__metadata__ value of '", m.key(), "' is not a string"));
        }
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = absl::StrCat("tensor '", name, "'");
    if (name.empty()) return Bad(source_, "tensor with an empty name");
    if (!value.is_object()) return Bad(source_, absl::StrCat(where, ": entry is not a JSON object"));
    SafetensorsEntry entry;
    auto dtype_it = value.find("dtype");
    if (dtype_it == value.end() || !dtype_it->is_string()) {
      return Bad(source_, absl::StrCat(where, ": missing or non-string \"dtype\""));
    }
    const DtypeInfo* info = InfoByName(dtype_it->get<std::string>());
    if (info == nullptr) {
      return Bad(source_, absl::StrCat(where, ": unknown dtype \"", dtype_it->get<std::string>(), "\""));
    }
    entry.dtype = info->dtype;
    auto shape_it = value.find("shape");
    if (shape_it == value.end() || !shape_it->is_array()) {
      return Bad(source_, absl::StrCat(where, ": missing or non-array \"shape\""));
    }
    uint64_t numel = 1;
    for (const Json& dim : *shape_it) {
      if (!dim.is_number_unsigned() || dim.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
        return Bad(source_, absl::StrCat(where, ": shape has a non-integer or negative dimension ", dim.dump()));
      }
      const uint64_t d = dim.get<uint64_t>();
      if (__builtin_mul_overflow(numel, d, &numel)) return Bad(source_, absl::StrCat(where, ": shape overflows"));
      entry.shape.push_back(static_cast<int64_t>(d));
    }
    auto off_it = value.find("data_offsets");
    if (off_it == value.end() || !off_it->is_array() || off_it->size() != 2 || !(*off_it)[0].is_number_unsigned() ||
        !(*off_it)[1].is_number_unsigned()) {
      return Bad(source_, absl::StrCat(where, ": \"data_offsets\" must be [begin, end] with unsigned integers"));
    }
    entry.begin = (*off_it)[0].get<uint64_t>();
    entry.end = (*off_it)[1].get<uint64_t>();
    if (entry.begin > entry.end || entry.end > data_size) {
      return Bad(source_, absl::StrCat(where, ": data_offsets [", entry.begin, ", ", entry.end,
                                       "] out of range of the data buffer (", data_size, " bytes)"));
    }
    uint64_t nbytes = 0;
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(info->item_size), &nbytes) ||
        nbytes != entry.end - entry.begin) {
      return Bad(source_, absl::StrCat(where, ": data_offsets [", entry.begin, ", ", entry.end, "] hold ",
                                       entry.end - entry.begin, " bytes but shape ", ShapeString(entry.shape), " of ",
                                       info->name, " needs ", numel, " x ", info->item_size));
    }
    auto [pos, inserted] = entries_.emplace(name, std::move(entry));
    if (!inserted) return Bad(source_, absl::StrCat(where, " appears twice"));
    by_offset.emplace_back(name, &pos->second);
  }

  // The data buffer must be covered exactly: no overlaps, no holes, nothing after the last tensor.
  std::sort(by_offset.begin(), by_offset.end(), [](const auto& a, const auto& b) {
    return std::make_pair(a.second->begin, a.second->end) < std::make_pair(b.second->begin, b.second->end);
  });
  uint64_t covered = 0;
  std::string previous;
  for (const auto& [name, entry] : by_offset) {
    if (entry->begin < covered) {
      return Bad(source_, absl::StrCat("tensor '", name, "' data_offsets [", entry->begin, ", ", entry->end,
                                       "] overlap tensor '", previous, "'"));
    }
    if (entry->begin > covered) {
      return Bad(source_, absl::StrCat("hole in the data buffer at bytes [", covered, ", ", entry->begin,
                                       ") before tensor '", name, "'"));
    }
    covered = entry->end;
    previous = name;
  }
  if (covered != data_size) {
    return Bad(source_, absl::StrCat("data buffer has ", data_size, " bytes but the tensors cover ", covered));
  }
  return absl::OkStatus();
}

std::vector<std::string> SafetensorsFile::Names() const {
  std::vector<std::string> names;
  names.reserve(entries_.size());
  for (const auto& [name, entry] : entries_) names.push_back(name);
  return names;
}

absl::StatusOr<SafetensorsEntry> SafetensorsFile::Entry(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat(source_, ": tensor '", name, "' not found"));
  }
  return it->second;
}

absl::StatusOr<at::Tensor> SafetensorsFile::Get(const std::string& name, const SafetensorsGetOptions& options) const {
  ASSIGN_OR_RETURN(SafetensorsEntry entry, Entry(name));
  if (options.expected_shape.has_value() && *options.expected_shape != entry.shape) {
    return Bad(source_, absl::StrCat("tensor '", name, "' has shape ", ShapeString(entry.shape), ", expected ",
                                     ShapeString(*options.expected_shape)));
  }
  const bool floating = IsFloating(entry.dtype);
  if (options.conversion == SafetensorsConversion::kFloat32 && !floating) {
    return Bad(source_, absl::StrCat("tensor '", name, "' has dtype ", Info(entry.dtype).name,
                                     ", expected a floating dtype"));
  }
  if (options.conversion == SafetensorsConversion::kInt64 && floating) {
    return Bad(source_, absl::StrCat("tensor '", name, "' has dtype ", Info(entry.dtype).name,
                                     ", expected an integer dtype"));
  }
  try {
    at::Tensor t = at::empty(entry.shape, at::TensorOptions().dtype(Info(entry.dtype).scalar_type));
    if (entry.end > entry.begin) {
      std::memcpy(t.data_ptr(), bytes_.data() + data_start_ + entry.begin, entry.end - entry.begin);
    }
    if (options.conversion == SafetensorsConversion::kFloat32) t = t.to(at::kFloat);
    if (options.conversion == SafetensorsConversion::kInt64) t = t.to(at::kLong);
    return t.to(options.device);
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat(source_, ": cannot materialise tensor '", name, "': ", e.what_without_backtrace()));
  }
}

absl::Status SafetensorsFile::ReadInto(const std::string& name, at::Tensor& dst) const {
  ASSIGN_OR_RETURN(SafetensorsEntry entry, Entry(name));
  if (!dst.defined() || dst.sizes().vec() != entry.shape) {
    return Bad(source_, absl::StrCat("tensor '", name, "' has shape ", ShapeString(entry.shape), ", expected ",
                                     dst.defined() ? ShapeString(dst.sizes().vec()) : "a defined tensor"));
  }
  const DtypeInfo& info = Info(entry.dtype);
  if (IsFloating(entry.dtype) != at::isFloatingType(dst.scalar_type())) {
    return Bad(source_, absl::StrCat("tensor '", name, "' has dtype ", info.name, ", which cannot be read into ",
                                     c10::toString(dst.scalar_type())));
  }
  try {
    if (info.scalar_type == dst.scalar_type() && dst.device().is_cpu() && dst.is_contiguous()) {
      if (entry.end > entry.begin) {
        std::memcpy(dst.data_ptr(), bytes_.data() + data_start_ + entry.begin, entry.end - entry.begin);
      }
      return absl::OkStatus();
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(source_, ": cannot read tensor '", name, "': ", e.what_without_backtrace()));
  }
  ASSIGN_OR_RETURN(at::Tensor value, Get(name));
  try {
    dst.copy_(value);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(source_, ": cannot copy tensor '", name, "': ", e.what_without_backtrace()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> SerializeSafetensors(const std::map<std::string, at::Tensor>& tensors,
                                                 const std::map<std::string, std::string>& metadata) {
  Json header = Json::object();
  if (!metadata.empty()) {
    Json meta = Json::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
    header[kMetadataKey] = std::move(meta);
  }
  std::vector<at::Tensor> contiguous;
  contiguous.reserve(tensors.size());
  uint64_t offset = 0;
  try {
    for (const auto& [name, tensor] : tensors) {  // std::map: sorted by name, data in the same order
      if (name.empty() || name == kMetadataKey) {
        return absl::InvalidArgumentError(absl::StrCat("invalid tensor name '", name, "'"));
      }
      if (!tensor.defined()) return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' is undefined"));
      const DtypeInfo* info = InfoByScalarType(tensor.scalar_type());
      if (info == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor '", name, "' has dtype ", c10::toString(tensor.scalar_type()),
                         " which safetensors cannot hold"));
      }
      at::Tensor t = tensor.detach().to(c10::kCPU).contiguous();
      const uint64_t nbytes = static_cast<uint64_t>(t.numel()) * info->item_size;
      header[name] = {{"dtype", info->name}, {"shape", t.sizes().vec()}, {"data_offsets", {offset, offset + nbytes}}};
      offset += nbytes;
      contiguous.push_back(std::move(t));
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("cannot serialise tensors: ", e.what_without_backtrace()));
  }
  std::string header_text = header.dump();
  header_text.append((8 - header_text.size() % 8) % 8, ' ');  // align the data buffer to 8 bytes
  std::string out;
  out.reserve(8 + header_text.size() + offset);
  const uint64_t header_len = header_text.size();
  out.append(reinterpret_cast<const char*>(&header_len), 8);
  out.append(header_text);
  for (const at::Tensor& t : contiguous) {
    out.append(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
  }
  return out;
}

absl::Status WriteSafetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  ASSIGN_OR_RETURN(std::string bytes, SerializeSafetensors(tensors, metadata));
  return util::WriteFileAtomically(path, bytes);
}

}  // namespace rlhf::model
