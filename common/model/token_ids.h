// The one check of token ids against a vocabulary, and of sequence lengths against a model's context, used by the
// model core, the trainer and the services' request validation. LibTorch-free.
#ifndef RLHF_COMMON_MODEL_TOKEN_IDS_H_
#define RLHF_COMMON_MODEL_TOKEN_IDS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace rlhf::model {

// OK when every id is in [0, vocab_size); else InvalidArgument naming the first bad one:
// "<field>[17]=70000 is outside the vocabulary [0, 50257)".
absl::Status CheckTokenIds(absl::Span<const int64_t> ids, int64_t vocab_size, absl::string_view field);
absl::Status CheckTokenIds(absl::Span<const int32_t> ids, int64_t vocab_size, absl::string_view field);

// OK when `tokens` <= max_positions; else InvalidArgument "<field> has <tokens> tokens, more than the model's
// max_position_embeddings=<max_positions>" (`what` may add context, e.g. " with max_new_tokens=32").
absl::Status CheckSequenceLength(int64_t tokens, int64_t max_positions, absl::string_view field,
                                 absl::string_view what = "");

}  // namespace rlhf::model

#endif  // RLHF_COMMON_MODEL_TOKEN_IDS_H_
