// Reader and writer of the safetensors format (https://github.com/huggingface/safetensors):
//   8 bytes   little-endian uint64 N, the length of the header
//   N bytes   JSON object {name: {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...} with an optional
//             "__metadata__": {string: string}; offsets are relative to the start of the data buffer
//   rest      the data buffer: raw little-endian tensor bytes, fully covered by the tensors, no holes, no overlaps.
//
// Validation is strict and every error names the source (file path or the name given to Parse) and the tensor.
// Format errors are InvalidArgument, a missing file or tensor is NotFound.
#ifndef RLHF_COMMON_MODEL_SAFETENSORS_H_
#define RLHF_COMMON_MODEL_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace rlhf::model {

// Element types of the format. Reading supports all of them; writing supports what at::Tensor can hold.
enum class SafetensorsDtype { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

// "F32" etc. as spelled in the header.
absl::string_view SafetensorsDtypeName(SafetensorsDtype dtype);

// One entry of the header.
struct SafetensorsEntry {
  SafetensorsDtype dtype = SafetensorsDtype::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data buffer, [begin, end)
  uint64_t end = 0;
};

// How SafetensorsFile::Get converts a tensor.
enum class SafetensorsConversion {
  kAsStored,  // the stored dtype
  kFloat32,   // any floating dtype -> float32; integer or bool dtypes are an error
  kInt64,     // any integer or bool dtype -> int64; floating dtypes are an error
};

struct SafetensorsGetOptions {
  SafetensorsConversion conversion = SafetensorsConversion::kAsStored;
  // When set, the stored shape must equal it (InvalidArgument naming both shapes otherwise).
  std::optional<std::vector<int64_t>> expected_shape;
  c10::Device device = c10::kCPU;
};

// A parsed, validated safetensors file: memory-mapped (Open) or held in memory (Parse). Immutable after creation;
// thread-safe for reads.
class SafetensorsFile {
 public:
  // Maps and validates `path` (read-only, so loading a model never holds a second full copy of the weights).
  // NotFound if the file does not exist.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  // Validates `bytes`; `source` names it in error messages (e.g. a path or "UpdateWeights chunk 3").
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Parse(std::string bytes, std::string source);

  const std::string& source() const { return source_; }
  // The "__metadata__" map (empty when absent).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Tensor names in sorted order.
  std::vector<std::string> Names() const;
  bool Contains(const std::string& name) const { return entries_.count(name) > 0; }
  // NotFound naming the tensor and the source when absent.
  absl::StatusOr<SafetensorsEntry> Entry(const std::string& name) const;
  // A new tensor (owning its memory) with the bytes of `name`, converted as requested, on options.device.
  absl::StatusOr<at::Tensor> Get(const std::string& name, const SafetensorsGetOptions& options = {}) const;
  // Copies `name` into the existing tensor `dst` (any device): the shapes must match and the dtypes must both be
  // floating or both integer/bool (converted to dst's). Without a temporary when the dtypes match and dst is a
  // contiguous CPU tensor. In-place on dst: run it under NoGradGuard for parameters. A mapped file then drops the
  // tensor's pages from memory, so loading a model holds one copy of the weights, not two.
  absl::Status ReadInto(const std::string& name, at::Tensor& dst) const;
  // OK when every element of the floating tensor `name` is finite (checked on the stored bits, without
  // converting); InvalidArgument naming the tensor and the first bad element's index otherwise. Integer tensors
  // are always OK.
  absl::Status CheckFinite(const std::string& name) const;
  // Bytes of the data buffer (all tensors).
  uint64_t DataBytes() const { return size_ - data_start_; }

 private:
  SafetensorsFile(std::string bytes, std::string source);
  SafetensorsFile(const char* mapped, uint64_t size, std::string source);
  absl::Status ParseHeader();
  const char* TensorData(const SafetensorsEntry& entry) const { return data_ + data_start_ + entry.begin; }
  // Drops the pages of a tensor's bytes from a mapped file (they are read again if needed).
  void Release(const SafetensorsEntry& entry) const;

  std::string owned_;              // Parse: the bytes
  const char* data_ = nullptr;     // owned_.data() or the mapping
  uint64_t size_ = 0;
  bool mapped_ = false;
  std::string source_;
  uint64_t data_start_ = 0;  // offset of the data buffer in data_
  std::map<std::string, SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

// The tensors of a checkpoint: one safetensors file, or the shards a `model.safetensors.index.json` names
// (`{"metadata": {...}, "weight_map": {tensor: file}}`). Immutable; thread-safe for reads. Errors name the file.
class WeightSource {
 public:
  // `dir`/model.safetensors when present (as transformers prefers it), else the shards of
  // `dir`/model.safetensors.index.json, each memory-mapped. Shard names must be plain file names in `dir`; every
  // tensor of the map must be in its shard, every shard's tensors in the map, and no name in two shards.
  // NotFound when neither file is there.
  static absl::StatusOr<std::unique_ptr<WeightSource>> OpenCheckpoint(const std::string& dir);
  // One file (e.g. an UpdateWeights payload parsed in memory).
  static std::unique_ptr<WeightSource> FromFile(std::unique_ptr<SafetensorsFile> file);

  // The folder (or the single file's source) for messages.
  const std::string& source() const { return source_; }
  // The first file's "__metadata__".
  const std::map<std::string, std::string>& metadata() const;
  std::vector<std::string> Names() const;  // sorted
  bool Contains(const std::string& name) const { return by_name_.count(name) > 0; }
  // The file that holds `name`; NotFound naming the tensor and the source.
  absl::StatusOr<const SafetensorsFile*> File(const std::string& name) const;
  absl::StatusOr<SafetensorsEntry> Entry(const std::string& name) const;
  absl::StatusOr<at::Tensor> Get(const std::string& name, const SafetensorsGetOptions& options = {}) const;
  absl::Status ReadInto(const std::string& name, at::Tensor& dst) const;
  absl::Status CheckFinite(const std::string& name) const;
  uint64_t DataBytes() const;

 private:
  WeightSource() = default;
  absl::Status Add(std::unique_ptr<SafetensorsFile> file);

  std::string source_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const SafetensorsFile*> by_name_;
};

// Writes `tensors` into `dir` as transformers does: one `model.safetensors` when the data fits in
// `max_shard_bytes`, else `model-0000N-of-0000M.safetensors` shards (cut in name order, each at most
// max_shard_bytes unless one tensor alone is larger) and `model.safetensors.index.json`. Each file atomically; the
// index last, then a stale single file is removed (and a stale index when one file is written), so a reader sees
// one complete layout. `metadata` goes into every file's header.
absl::Status WriteSafetensorsCheckpoint(const std::string& dir, const std::map<std::string, at::Tensor>& tensors,
                                        const std::map<std::string, std::string>& metadata,
                                        int64_t max_shard_bytes);

// Serialises `tensors` (any device, any layout; written contiguous, little-endian) with names in sorted order and
// the metadata map. InvalidArgument for an empty name, a name "__metadata__", or a dtype the format lacks.
absl::StatusOr<std::string> SerializeSafetensors(const std::map<std::string, at::Tensor>& tensors,
                                                 const std::map<std::string, std::string>& metadata = {});

// SerializeSafetensors, then util::WriteFileAtomically (temp file, fsync, rename): readers see the old file or the
// whole new one.
absl::Status WriteSafetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace rlhf::model

#endif  // RLHF_COMMON_MODEL_SAFETENSORS_H_
