#include "common/tokenizer/vocab_ids.h"

#include "absl/strings/str_cat.h"

namespace rlhf::tokenizer::internal {

absl::Status CheckIdsInVocabulary(absl::Span<const int32_t> ids, int32_t vocab_size) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("ids[", i, "]=", ids[i], " is outside the vocabulary [0, ", vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

std::string ConcatTokenBytes(absl::Span<const int32_t> ids, const std::vector<std::string>& id_to_bytes) {
  size_t size = 0;
  for (const int32_t id : ids) size += id_to_bytes[static_cast<size_t>(id)].size();
  std::string text;
  text.reserve(size);
  for (const int32_t id : ids) text += id_to_bytes[static_cast<size_t>(id)];
  return text;
}

}  // namespace rlhf::tokenizer::internal
