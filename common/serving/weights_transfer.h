// Weights over gRPC: a model's safetensors payload cut into a stream of WeightsChunk messages (header with a tensor
// manifest and a SHA-256 digest, then ordered data slices), and put back together with every check the receiver
// needs before it swaps weights. LibTorch-free.
#ifndef RLHF_COMMON_SERVING_WEIGHTS_TRANSFER_H_
#define RLHF_COMMON_SERVING_WEIGHTS_TRANSFER_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "rlhf/v1/common.pb.h"
#include "rlhf/v1/generation.grpc.pb.h"

namespace rlhf::serving {

// SHA-256 of `bytes`, 32 raw bytes.
std::string Sha256(absl::string_view bytes);

// Splits a safetensors file (as SerializeSafetensors writes it) into a header message and data slices of at most
// `chunk_bytes`, calling `emit` for each in order; stops at the first error `emit` returns. InvalidArgument when
// `safetensors` is malformed or holds a dtype the API lacks.
absl::Status ChunkSafetensors(absl::string_view safetensors, const v1::WeightsHeader& header_fields,
                              int64_t chunk_bytes, const std::function<absl::Status(v1::WeightsChunk)>& emit);

// Receives a weights stream message by message and rebuilds the safetensors file. Limits guard memory: a header
// announcing more than `max_total_bytes` is refused at once.
class WeightsAssembler {
 public:
  explicit WeightsAssembler(int64_t max_total_bytes) : max_total_bytes_(max_total_bytes) {}

  // InvalidArgument for a stream out of order (no header first, a second header, a gap or overlap in offsets,
  // more bytes than announced) or a malformed manifest, naming the message index and field.
  absl::Status Add(const v1::WeightsChunk& chunk);

  // After the last message: checks that every byte arrived and the SHA-256 matches (DATA_LOSS otherwise), and
  // returns the payload as a safetensors file.
  absl::StatusOr<std::string> Finish();

  bool has_header() const { return has_header_; }
  const v1::WeightsHeader& header() const { return header_; }
  int64_t received_bytes() const { return static_cast<int64_t>(payload_.size()); }

 private:
  int64_t max_total_bytes_;
  bool has_header_ = false;
  int64_t messages_ = 0;
  v1::WeightsHeader header_;
  std::string payload_;
};

// Client side: streams a safetensors file to a generation service's UpdateWeights and returns its answer.
// `header_fields` supplies model_id, target_version, config and metadata (the manifest and digest are computed).
absl::StatusOr<v1::UpdateWeightsResponse> PushWeights(v1::PolicyGenerationService::StubInterface& stub,
                                                      absl::string_view safetensors,
                                                      const v1::WeightsHeader& header_fields, int64_t chunk_bytes,
                                                      absl::Duration timeout);

}  // namespace rlhf::serving

#endif  // RLHF_COMMON_SERVING_WEIGHTS_TRANSFER_H_
