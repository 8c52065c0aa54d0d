#include "common/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <utility>

#include <ATen/ops/empty.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/model/torch_boundary.h"
#include "common/util/file_util.h"
#include "common/util/status_macros.h"
#include "common/util/json_errors.h"

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

SafetensorsFile::SafetensorsFile(std::string bytes, std::string source)
    : owned_(std::move(bytes)), source_(std::move(source)) {
  data_ = owned_.data();
  size_ = owned_.size();
}

SafetensorsFile::SafetensorsFile(const char* mapped, uint64_t size, std::string source)
    : data_(mapped), size_(size), mapped_(true), source_(std::move(source)) {}

SafetensorsFile::~SafetensorsFile() {
  if (mapped_ && size_ > 0) ::munmap(const_cast<char*>(data_), size_);
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return util::ErrnoStatus("cannot open", path, errno);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return util::ErrnoStatus("cannot stat", path, err);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  void* mapped = nullptr;
  if (size > 0) {
    mapped = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (mapped == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return util::ErrnoStatus("cannot map", path, err);
    }
  }
  ::close(fd);
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile(static_cast<const char*>(mapped), size, path));
  RETURN_IF_ERROR(file->ParseHeader());
  return file;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Parse(std::string bytes, std::string source) {
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile(std::move(bytes), std::move(source)));
  RETURN_IF_ERROR(file->ParseHeader());
  return file;
}

absl::Status SafetensorsFile::ParseHeader() {
  const uint64_t size = size_;
  if (size < 8) {
    return Bad(source_, absl::StrCat("truncated file: ", size, " bytes, need at least 8 for the header length"));
  }
  const uint64_t header_len = ReadLe64(data_);
  if (header_len > kMaxHeaderBytes) {
    return Bad(source_, absl::StrCat("header length ", header_len, " exceeds the limit of ", kMaxHeaderBytes));
  }
  if (header_len > size - 8) {
    return Bad(source_, absl::StrCat("header length ", header_len, " goes beyond the end of the file (", size,
                                     " bytes): truncated file?"));
  }
  if (header_len < 2 || data_[8] != '{') return Bad(source_, "header is not a JSON object");
  data_start_ = 8 + header_len;
  const uint64_t data_size = size - data_start_;

  Json header;
  try {
    header = Json::parse(data_ + 8, data_ + data_start_);
  } catch (const Json::exception& e) {
    return Bad(source_, absl::StrCat("bad JSON header: ", util::JsonErrorText(e.what())));
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
  return TorchBoundary(
      absl::StrCat(source_, ": cannot materialise tensor '", name, "'"), [&]() -> absl::StatusOr<at::Tensor> {
        at::Tensor t = at::empty(entry.shape, at::TensorOptions().dtype(Info(entry.dtype).scalar_type));
        if (entry.end > entry.begin) {
          std::memcpy(t.data_ptr(), TensorData(entry), entry.end - entry.begin);
        }
        if (options.conversion == SafetensorsConversion::kFloat32) t = t.to(at::kFloat);
        if (options.conversion == SafetensorsConversion::kInt64) t = t.to(at::kLong);
        return t.to(options.device);
      });
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
  absl::Status status = TorchBoundary(absl::StrCat(source_, ": cannot read tensor '", name, "'"), [&]() {
    if (info.scalar_type == dst.scalar_type() && dst.device().is_cpu() && dst.is_contiguous()) {
      if (entry.end > entry.begin) std::memcpy(dst.data_ptr(), TensorData(entry), entry.end - entry.begin);
      return absl::OkStatus();
    }
    ASSIGN_OR_RETURN(at::Tensor value, Get(name));
    dst.copy_(value);
    return absl::OkStatus();
  });
  Release(entry);
  return status;
}

void SafetensorsFile::Release(const SafetensorsEntry& entry) const {
  if (!mapped_ || entry.end <= entry.begin) return;
  // Whole pages inside the tensor's bytes: the pages it shares with its neighbours stay.
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t begin = (data_start_ + entry.begin + page - 1) / page * page;
  const uint64_t end = (data_start_ + entry.end) / page * page;
  if (end > begin) ::madvise(const_cast<char*>(data_) + begin, end - begin, MADV_DONTNEED);
}

absl::Status SafetensorsFile::CheckFinite(const std::string& name) const {
  ASSIGN_OR_RETURN(SafetensorsEntry entry, Entry(name));
  const char* p = TensorData(entry);
  const uint64_t nbytes = entry.end - entry.begin;
  // A float is non-finite when its exponent bits are all ones.
  auto scan = [&](auto word, uint64_t exponent_mask) -> absl::Status {
    using Word = decltype(word);
    const uint64_t n = nbytes / sizeof(Word);
    for (uint64_t i = 0; i < n; ++i) {
      Word w;
      std::memcpy(&w, p + i * sizeof(Word), sizeof(Word));
      if ((static_cast<uint64_t>(w) & exponent_mask) == exponent_mask) {
        return Bad(source_, absl::StrCat("tensor '", name, "' holds a non-finite value (NaN or Inf) at element ", i));
      }
    }
    return absl::OkStatus();
  };
  switch (entry.dtype) {
    case SafetensorsDtype::kF64:
      return scan(uint64_t{0}, 0x7FF0000000000000ull);
    case SafetensorsDtype::kF32:
      return scan(uint32_t{0}, 0x7F800000u);
    case SafetensorsDtype::kF16:
      return scan(uint16_t{0}, 0x7C00u);
    case SafetensorsDtype::kBF16:
      return scan(uint16_t{0}, 0x7F80u);
    default:
      return absl::OkStatus();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Checkpoints: one file or shards.

namespace {

constexpr char kSingleFile[] = "model.safetensors";
constexpr char kIndexFile[] = "model.safetensors.index.json";

std::string ShardName(size_t index, size_t count) {
  char name[64];
  std::snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", index, count);
  return name;
}

}  // namespace

std::unique_ptr<WeightSource> WeightSource::FromFile(std::unique_ptr<SafetensorsFile> file) {
  std::unique_ptr<WeightSource> source(new WeightSource());
  source->source_ = file->source();
  for (const std::string& name : file->Names()) source->by_name_[name] = file.get();
  source->files_.push_back(std::move(file));
  return source;
}

absl::Status WeightSource::Add(std::unique_ptr<SafetensorsFile> file) {
  for (const std::string& name : file->Names()) {
    auto [it, inserted] = by_name_.emplace(name, file.get());
    if (!inserted) {
      return absl::InvalidArgumentError(absl::StrCat(source_, ": tensor '", name, "' is in both ",
                                                     it->second->source(), " and ", file->source()));
    }
  }
  files_.push_back(std::move(file));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<WeightSource>> WeightSource::OpenCheckpoint(const std::string& dir) {
  std::unique_ptr<WeightSource> source(new WeightSource());
  source->source_ = dir;
  const std::string single = absl::StrCat(dir, "/", kSingleFile);
  auto file = SafetensorsFile::Open(single);
  if (file.ok()) {
    RETURN_IF_ERROR(source->Add(*std::move(file)));
    return source;
  }
  if (file.status().code() != absl::StatusCode::kNotFound) return file.status();
  const std::string index_path = absl::StrCat(dir, "/", kIndexFile);
  auto index_text = util::ReadFile(index_path);
  if (!index_text.ok()) {
    if (index_text.status().code() == absl::StatusCode::kNotFound) {
      return absl::NotFoundError(absl::StrCat(dir, ": no ", kSingleFile, " and no ", kIndexFile));
    }
    return index_text.status();
  }
  Json index;
  try {
    index = Json::parse(*index_text);
  } catch (const Json::exception& e) {
    return Bad(index_path, absl::StrCat("bad JSON: ", util::JsonErrorText(e.what())));
  }
  auto map_it = index.is_object() ? index.find("weight_map") : index.end();
  if (!index.is_object() || map_it == index.end() || !map_it->is_object() || map_it->empty()) {
    return Bad(index_path, "field 'weight_map' must be a non-empty object {tensor: file}");
  }
  std::map<std::string, std::vector<std::string>> by_file;  // shard -> tensors the map puts there
  for (auto it = map_it->begin(); it != map_it->end(); ++it) {
    if (!it.value().is_string()) {
      return Bad(index_path, absl::StrCat("weight_map['", it.key(), "'] must be a file name"));
    }
    const std::string shard = it.value().get<std::string>();
    if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..") {
      return Bad(index_path, absl::StrCat("weight_map['", it.key(), "']='", shard,
                                          "' is not a file name in the checkpoint folder"));
    }
    by_file[shard].push_back(it.key());
  }
  for (const auto& [shard, names] : by_file) {
    ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> shard_file,
                     SafetensorsFile::Open(absl::StrCat(dir, "/", shard)));
    for (const std::string& name : names) {
      if (!shard_file->Contains(name)) {
        return Bad(index_path, absl::StrCat("weight_map puts tensor '", name, "' in ", shard, ", which lacks it"));
      }
    }
    if (shard_file->Names().size() != names.size()) {
      return Bad(index_path, absl::StrCat(shard, " holds ", shard_file->Names().size(),
                                          " tensors but weight_map names ", names.size(), " for it"));
    }
    RETURN_IF_ERROR(source->Add(std::move(shard_file)));
  }
  return source;
}

const std::map<std::string, std::string>& WeightSource::metadata() const {
  static const auto* empty = new std::map<std::string, std::string>();
  return files_.empty() ? *empty : files_.front()->metadata();
}

std::vector<std::string> WeightSource::Names() const {
  std::vector<std::string> names;
  names.reserve(by_name_.size());
  for (const auto& [name, file] : by_name_) names.push_back(name);
  return names;
}

absl::StatusOr<const SafetensorsFile*> WeightSource::File(const std::string& name) const {
  auto it = by_name_.find(name);
  if (it == by_name_.end()) return absl::NotFoundError(absl::StrCat(source_, ": tensor '", name, "' not found"));
  return it->second;
}

absl::StatusOr<SafetensorsEntry> WeightSource::Entry(const std::string& name) const {
  ASSIGN_OR_RETURN(const SafetensorsFile* file, File(name));
  return file->Entry(name);
}

absl::StatusOr<at::Tensor> WeightSource::Get(const std::string& name, const SafetensorsGetOptions& options) const {
  ASSIGN_OR_RETURN(const SafetensorsFile* file, File(name));
  return file->Get(name, options);
}

absl::Status WeightSource::ReadInto(const std::string& name, at::Tensor& dst) const {
  ASSIGN_OR_RETURN(const SafetensorsFile* file, File(name));
  return file->ReadInto(name, dst);
}

absl::Status WeightSource::CheckFinite(const std::string& name) const {
  ASSIGN_OR_RETURN(const SafetensorsFile* file, File(name));
  return file->CheckFinite(name);
}

uint64_t WeightSource::DataBytes() const {
  uint64_t total = 0;
  for (const auto& file : files_) total += file->DataBytes();
  return total;
}

absl::Status WriteSafetensorsCheckpoint(const std::string& dir, const std::map<std::string, at::Tensor>& tensors,
                                        const std::map<std::string, std::string>& metadata,
                                        int64_t max_shard_bytes) {
  if (max_shard_bytes <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("max_shard_bytes must be positive, got ", max_shard_bytes));
  }
  RETURN_IF_ERROR(util::MakeDirectories(dir));
  // Cut in name order (std::map), as the tensors' bytes add up.
  std::vector<std::map<std::string, at::Tensor>> shards(1);
  int64_t in_shard = 0, total = 0;
  for (const auto& [name, tensor] : tensors) {
    const int64_t nbytes = tensor.defined() ? static_cast<int64_t>(tensor.numel() * tensor.element_size()) : 0;
    if (in_shard > 0 && in_shard + nbytes > max_shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back()[name] = tensor;
    in_shard += nbytes;
    total += nbytes;
  }
  const std::string single = absl::StrCat(dir, "/", kSingleFile);
  const std::string index_path = absl::StrCat(dir, "/", kIndexFile);
  if (shards.size() == 1) {
    RETURN_IF_ERROR(WriteSafetensors(single, tensors, metadata));
    if (util::PathExists(index_path)) RETURN_IF_ERROR(util::RemoveFile(index_path));
    return absl::OkStatus();
  }
  Json weight_map = Json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string name = ShardName(i + 1, shards.size());
    RETURN_IF_ERROR(WriteSafetensors(absl::StrCat(dir, "/", name), shards[i], metadata));
    for (const auto& entry : shards[i]) weight_map[entry.first] = name;
  }
  Json index = {{"metadata", {{"total_size", total}}}, {"weight_map", std::move(weight_map)}};
  RETURN_IF_ERROR(util::WriteFileAtomically(index_path, index.dump(2) + "\n"));
  if (util::PathExists(single)) RETURN_IF_ERROR(util::RemoveFile(single));
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
  RETURN_IF_ERROR(TorchBoundary("cannot serialise tensors", [&]() -> absl::Status {
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
    return absl::OkStatus();
  }));
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
