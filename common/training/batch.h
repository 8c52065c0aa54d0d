// Internal to common/training: token sequences to padded tensors, and seeded shuffles.
#ifndef RLHF_COMMON_TRAINING_BATCH_H_
#define RLHF_COMMON_TRAINING_BATCH_H_

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "absl/status/status.h"
#include "common/model/model_config.h"

namespace rlhf::training {

// A prompt and its response, as token ids (the response's stop token included when it has one).
struct PromptResponse {
  std::vector<int64_t> prompt;    // non-empty
  std::vector<int64_t> response;  // may be empty only where a caller says so
};

struct PackedBatch {
  at::Tensor ids;            // [B, T] int64, right-padded with 0
  at::Tensor mask;           // [B, T] int64 0/1
  at::Tensor response_mask;  // [B, T - 1] float: 1 where target ids[:, t + 1] is a response token
  std::vector<int64_t> prompt_lengths;
  std::vector<int64_t> lengths;  // prompt + response
};

// InvalidArgument naming "<field>[i]" for an example with an empty prompt (or response, unless allowed), a token id
// outside the vocabulary, or more than max_position_embeddings tokens.
absl::Status ValidateExamples(const model::ModelConfig& config, const std::vector<PromptResponse>& examples,
                              const std::string& field, bool allow_empty_response = false);

// Packs prompt + response rows, right-padded to the longest row.
PackedBatch PackPromptResponses(const std::vector<const PromptResponse*>& rows, c10::Device device);

// Indices 0..n-1 in an order fixed by `seed` (std::mt19937_64; the same on every platform).
std::vector<int64_t> SeededPermutation(int64_t n, uint64_t seed);

}  // namespace rlhf::training

#endif  // RLHF_COMMON_TRAINING_BATCH_H_
