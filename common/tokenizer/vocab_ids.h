// Token ids against a tokenizer's vocabulary, shared by the tokenizers' Decode. Internal to common/tokenizer.
#ifndef RLHF_COMMON_TOKENIZER_VOCAB_IDS_H_
#define RLHF_COMMON_TOKENIZER_VOCAB_IDS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace rlhf::tokenizer::internal {

// OK, or InvalidArgument naming the first id outside [0, vocab_size): "ids[3]=70000 is outside the vocabulary
// [0, 50257)".
absl::Status CheckIdsInVocabulary(absl::Span<const int32_t> ids, int32_t vocab_size);

// id_to_bytes[id] for each of `ids` (all inside id_to_bytes), concatenated.
std::string ConcatTokenBytes(absl::Span<const int32_t> ids, const std::vector<std::string>& id_to_bytes);

}  // namespace rlhf::tokenizer::internal

#endif  // RLHF_COMMON_TOKENIZER_VOCAB_IDS_H_
