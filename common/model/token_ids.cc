#include "common/model/token_ids.h"

#include "absl/strings/str_cat.h"

namespace rlhf::model {
namespace {

template <typename T>
absl::Status Check(absl::Span<const T> ids, int64_t vocab_size, absl::string_view field) {
  for (size_t j = 0; j < ids.size(); ++j) {
    const int64_t id = ids[j];
    if (id < 0 || id >= vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, "[", j, "]=", id, " is outside the vocabulary [0, ", vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckTokenIds(absl::Span<const int64_t> ids, int64_t vocab_size, absl::string_view field) {
  return Check(ids, vocab_size, field);
}

absl::Status CheckTokenIds(absl::Span<const int32_t> ids, int64_t vocab_size, absl::string_view field) {
  return Check(ids, vocab_size, field);
}

absl::Status CheckSequenceLength(int64_t tokens, int64_t max_positions, absl::string_view field,
                                 absl::string_view what) {
  if (tokens <= max_positions) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(field, " has ", tokens, " tokens", what,
                                                 ", more than the model's max_position_embeddings=", max_positions));
}

}  // namespace rlhf::model
