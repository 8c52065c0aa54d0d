#include "common/training/batch.h"

#include <algorithm>
#include <numeric>
#include <random>

#include <ATen/ops/from_blob.h>

#include "absl/strings/str_cat.h"
#include "common/model/token_ids.h"
#include "common/util/status_macros.h"

namespace rlhf::training {

absl::Status ValidateExamples(const model::ModelConfig& config, const std::vector<PromptResponse>& examples,
                              const std::string& field, bool allow_empty_response) {
  for (size_t i = 0; i < examples.size(); ++i) {
    const PromptResponse& e = examples[i];
    if (e.prompt.empty()) return absl::InvalidArgumentError(absl::StrCat(field, "[", i, "].prompt is empty"));
    if (e.response.empty() && !allow_empty_response) {
      return absl::InvalidArgumentError(absl::StrCat(field, "[", i, "].response is empty"));
    }
    const int64_t n = static_cast<int64_t>(e.prompt.size() + e.response.size());
    RETURN_IF_ERROR(model::CheckSequenceLength(n, config.max_position_embeddings, absl::StrCat(field, "[", i, "]")));
    RETURN_IF_ERROR(model::CheckTokenIds(e.prompt, config.vocab_size, absl::StrCat(field, "[", i, "].prompt")));
    RETURN_IF_ERROR(model::CheckTokenIds(e.response, config.vocab_size, absl::StrCat(field, "[", i, "].response")));
  }
  return absl::OkStatus();
}

PackedBatch PackPromptResponses(const std::vector<const PromptResponse*>& rows, c10::Device device) {
  PackedBatch out;
  const int64_t b = static_cast<int64_t>(rows.size());
  int64_t t = 1;
  for (const PromptResponse* row : rows) {
    out.prompt_lengths.push_back(static_cast<int64_t>(row->prompt.size()));
    out.lengths.push_back(static_cast<int64_t>(row->prompt.size() + row->response.size()));
    t = std::max(t, out.lengths.back());
  }
  std::vector<int64_t> ids(b * t, 0), mask(b * t, 0);
  std::vector<float> response_mask(b * std::max<int64_t>(t - 1, 1), 0.0f);
  for (int64_t i = 0; i < b; ++i) {
    int64_t j = 0;
    for (int64_t id : rows[i]->prompt) ids[i * t + j] = id, mask[i * t + j] = 1, ++j;
    for (int64_t id : rows[i]->response) {
      ids[i * t + j] = id;
      mask[i * t + j] = 1;
      if (j >= 1) response_mask[i * (t - 1) + (j - 1)] = 1.0f;  // target position j - 1 predicts token j
      ++j;
    }
  }
  const auto i64 = at::TensorOptions().dtype(at::kLong);
  out.ids = at::from_blob(ids.data(), {b, t}, i64).clone().to(device);
  out.mask = at::from_blob(mask.data(), {b, t}, i64).clone().to(device);
  out.response_mask =
      at::from_blob(response_mask.data(), {b, std::max<int64_t>(t - 1, 1)}, at::TensorOptions().dtype(at::kFloat))
          .clone()
          .to(device);
  return out;
}

std::vector<int64_t> SeededPermutation(int64_t n, uint64_t seed) {
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(seed);
  // Fisher-Yates with rng() directly: std::shuffle's use of the engine differs between standard libraries.
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = static_cast<int64_t>(rng() % static_cast<uint64_t>(i + 1));
    std::swap(order[i], order[j]);
  }
  return order;
}

}  // namespace rlhf::training
