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

// A parsed, validated safetensors file held in memory. Immutable after creation; thread-safe for reads.
class SafetensorsFile {
 public:
  // Reads and validates `path`. NotFound if the file does not exist.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
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
  // contiguous CPU tensor. In-place on dst: run it under NoGradGuard for parameters.
  absl::Status ReadInto(const std::string& name, at::Tensor& dst) const;

 private:
  SafetensorsFile(std::string bytes, std::string source) : bytes_(std::move(bytes)), source_(std::move(source)) {}
  absl::Status ParseHeader();

  std::string bytes_;
  std::string source_;
  uint64_t data_start_ = 0;  // offset of the data buffer in bytes_
  std::map<std::string, SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

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
